"""The network of the federation: the MONAI bundle's ``network_def`` for a profile and rank.

Server and sites build it from the same definition (the server for its reference models —
expected adapter keys and shapes, scalings: :class:`AdapterReference` — and for ``W_0``; the sites
for scoring and through the bundle's own workflows), so no second copy of the network class exists
for FL.
"""

from __future__ import annotations

from torch import nn

from cardiolora.fl import rml
from cardiolora.lora import lora_scalings
from cardiolora.networks import lora_unet

__all__ = ["bundle_network", "AdapterReference"]


def bundle_network(profile: str, lora_rank: int = 0) -> nn.Module:
    """The bundle's network (``network_def`` of ``train.json`` + the profile's override) with adapters.

    The one place the network of the federation comes from: the server builds its reference
    models (expected adapter keys and shapes, scalings) with it, the sites' workflows parse the
    same definition (`cardiolora.networks.lora_unet`).

    Args:
        profile: run profile (``"quick"``, ``"paper"``, ``"clinical"``).
        lora_rank: adapter rank; 0 for the plain network.

    Returns:
        The network on the CPU.
    """
    return lora_unet(profile, int(lora_rank))


class AdapterReference:
    """What a site's adapter at rank ``r`` must look like: keys and shapes, and scalings ``alpha / r``.

    Built from :func:`bundle_network` once per rank and kept (the server checks every adapter
    against it with :func:`cardiolora.fl.rml.validate_adapter`).

    Args:
        profile: run profile of the federation.
    """

    def __init__(self, profile: str) -> None:
        self.profile = profile
        self._specs: dict[int, dict[str, tuple[int, ...]]] = {}
        self._scalings: dict[int, dict[str, float]] = {}

    def spec(self, rank: int) -> dict[str, tuple[int, ...]]:
        """Expected adapter keys and shapes at `rank` (the bundle's ``network_def`` with adapters)."""
        if rank not in self._specs:
            net = bundle_network(self.profile, rank)
            self._specs[rank] = rml.adapter_spec(net)
            self._scalings[rank] = lora_scalings(net)
        return self._specs[rank]

    def scaling(self, rank: int) -> dict[str, float]:
        """``{module: alpha / r}`` at `rank`."""
        self.spec(rank)
        return self._scalings[rank]
