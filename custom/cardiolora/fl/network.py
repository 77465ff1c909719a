"""The network of the federation: the MONAI bundle's ``network_def`` for a profile, adapter type and rank.

Server and sites build it from the same definition (the server for its reference models —
expected adapter keys and shapes, scalings: :class:`AdapterReference` — and for ``W_0``; the sites
for scoring and through the bundle's own workflows), so no second copy of the network class exists
for FL. The adapter type is the job's (``"lora"`` or ``"tensor"``, the bundle's ``adapter_type``);
for tensor adapters the seed of ``θ0`` and the variant are the bundle's ``tensor_seed`` /
``tensor_variant`` (written once there, read by server and sites alike, never sent).
"""

from __future__ import annotations

from torch import nn

from cardiolora.fl import updates
from cardiolora.fl.protocol import check_adapter_type
from cardiolora.lora import lora_scalings
from cardiolora.networks import bundle_setting, lora_unet

__all__ = ["bundle_network", "bundle_tensor_seed", "AdapterReference"]


def bundle_network(profile: str, lora_rank: int = 0, adapter: str = "lora") -> nn.Module:
    """The bundle's network (``network_def`` of ``train.json`` + the profile's override) with adapters.

    The one place the network of the federation comes from: the server builds its reference
    models (expected adapter keys and shapes, scalings) with it, the sites' workflows parse the
    same definition (`cardiolora.networks.lora_unet`).

    Args:
        profile: run profile (``"quick"``, ``"paper"``, ``"clinical"``).
        lora_rank: adapter rank (LoRA's ``lora_rank`` or, for tensor adapters, ``tensor_rank``);
            0 for the plain network.
        adapter: ``"lora"`` or ``"tensor"`` (TenVOO cores; seed and variant from the bundle).

    Returns:
        The network on the CPU.

    Raises:
        ValueError: for an unknown `adapter`.
    """
    if check_adapter_type(adapter) == "tensor":
        return lora_unet(profile, adapter="tensor", tensor_rank=int(lora_rank))
    return lora_unet(profile, int(lora_rank))


def bundle_tensor_seed(profile: str, adapter: str) -> int | None:
    """The seed of the tensor adapters' ``θ0`` (the bundle's ``tensor_seed``), read alike by server and sites.

    Args:
        profile: the run profile whose bundle config is read.
        adapter: ``"lora"`` or ``"tensor"``.

    Returns:
        The seed for ``"tensor"``; ``None`` for LoRA (no ``θ0``).
    """
    return int(bundle_setting(profile, "tensor_seed")) if adapter == "tensor" else None


class AdapterReference:
    """What a site's adapter at rank ``r`` must look like: keys and shapes, and scalings ``alpha / r``.

    Built from :func:`bundle_network` once per rank and kept (the server checks every adapter
    against it with :func:`cardiolora.fl.updates.validate_adapter`). Tensor adapters have no scaling
    (``{}``); their deltas need :attr:`tensor_seed` instead.

    Args:
        profile: run profile of the federation.
        adapter: the job's adapter type, ``"lora"`` or ``"tensor"``.

    Raises:
        ValueError: for an unknown `adapter`.
    """

    def __init__(self, profile: str, adapter: str = "lora") -> None:
        self.profile = profile
        self.adapter = check_adapter_type(adapter)
        #: The bundle's ``tensor_seed`` (θ0 of the tensor adapters), None for LoRA.
        self.tensor_seed = bundle_tensor_seed(profile, self.adapter)
        self._specs: dict[int, dict[str, tuple[int, ...]]] = {}
        self._scalings: dict[int, dict[str, float]] = {}

    def spec(self, rank: int) -> dict[str, tuple[int, ...]]:
        """Expected adapter keys and shapes at `rank` (the bundle's ``network_def`` with adapters)."""
        if rank not in self._specs:
            net = bundle_network(self.profile, rank, self.adapter)
            self._specs[rank] = updates.adapter_spec(net)
            self._scalings[rank] = lora_scalings(net) if self.adapter == "lora" else {}
        return self._specs[rank]

    def scaling(self, rank: int) -> dict[str, float]:
        """``{module: alpha / r}`` at `rank` (``{}`` for tensor adapters)."""
        self.spec(rank)
        return self._scalings[rank]
