"""The segmentation network: the bundle's 2D ``UNet`` with optional adapters in every convolution.

The network is written in the MONAI bundle (``configs/train.json`` ``network_def``: MONAI ``UNet``
with its channels, strides and residual units inline; a profile's override file changes them);
the bundle's ``network`` wraps it with adapters in one line (:func:`with_lora`): LoRA (default,
``adapter_type: "lora"``) or TenVOO-L tensor-network adapters (``adapter_type: "tensor"``). Python
builds the same definition by parsing the bundle (:func:`lora_unet`), so pretraining, every FLARE
job and the site application use one network written once.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import torch
from monai.bundle import ConfigParser

from cardiolora.lora import (
    ADAPTER_TYPES,
    adapter_modules,
    base_state_dict,
    inject_lora,
    inject_tensor,
    unwrap_key,
    wrap_key,
)
from cardiolora.paths import bundle_dir
from cardiolora.profiles import BASE_CONFIG, Profile, get_profile

__all__ = [
    "ADAPTER_TYPES",
    "lora_unet",
    "with_lora",
    "bundle_network_def",
    "bundle_setting",
    "rank_for_dataset_size",
    "load_weights",
    "plain_state_dict",
    "read_state_dict",
    "ExportView",
]


#: Values of the bundle's ``adapter_type``: LoRA (Rate-My-LoRA) or TenVOO-L tensor networks.


def _bundle_parser(profile: str | Profile) -> ConfigParser:
    prof = get_profile(profile)
    configs = bundle_dir() / "configs"
    files = [configs / BASE_CONFIG] + ([configs / prof.train_override] if prof.train_override else [])
    parser = ConfigParser()
    parser.read_config([str(f) for f in files])
    return parser


def bundle_setting(profile: str | Profile, key: str) -> object:
    """One value of the bundle's ``train.json`` (+ the profile's override file), e.g. ``tensor_seed``.

    Args:
        profile: run profile name or `Profile`.
        key: a config id of ``train.json``.

    Returns:
        The parsed value.

    Raises:
        ValueError: if the profile is unknown or the bundle has no `key` (named).
    """
    parser = _bundle_parser(profile)
    if key not in parser:
        raise ValueError(f"the bundle's {BASE_CONFIG} has no `{key}`.")
    return parser.get_parsed_content(key)


def bundle_network_def(profile: str | Profile = "quick") -> torch.nn.Module:
    """Instantiate the bundle's ``network_def`` for a run profile (``train.json`` + its override file).

    Args:
        profile: run profile name or `Profile`.

    Returns:
        The plain network (no adapters) on the CPU.

    Raises:
        ValueError: if the profile is unknown.
    """
    return _bundle_parser(profile).get_parsed_content("network_def", instantiate=True, lazy=False)


def with_lora(
    network: torch.nn.Module,
    rank: int = 0,
    alpha: float | None = None,
    dropout: float = 0.0,
    target_modules: Sequence[str] = ("*",),
    adapter: str = "lora",
    tensor_rank: int | None = None,
    tensor_seed: int | None = None,
    tensor_variant: str | None = None,
    local_rank: int = 0,
    local_alpha: float | None = None,
) -> torch.nn.Module:
    """The network with adapters injected (in place), of the type `adapter`; or unchanged.

    * ``adapter="lora"`` (default): when ``rank > 0`` every convolution and transposed convolution
      matching `target_modules` gets ``W = W0 + (alpha / r) B A`` (A kaiming, B zero);
      ``rank == 0`` leaves the network as it is (full-weight training). `tensor_rank` and
      `tensor_seed` are not used. With ``local_rank > 0`` every adapter is a dual adapter
      (Med-DualLoRA): a global pair of rank `rank` and a local pair of rank `local_rank`,
      ``W = W0 + (alpha / r) B A + (local_alpha / r_l) B_l A_l`` (:mod:`cardiolora.lora.layers`).
    * ``adapter="tensor"``: when ``tensor_rank > 0`` the same convolutions get TenVOO
      ``W = W0 + T(θ) − T(θ0)`` (:mod:`cardiolora.lora.tensor`; network `tensor_variant`, "L" or
      "Q"), ``θ0`` drawn from `tensor_seed`; `rank`, `alpha` and `dropout` are LoRA's and not used.

    Either way the network starts equal to the base, the base weights are frozen and only the
    adapters train. The bundle's ``network`` is ``with_lora(@network_def, @lora_rank, @lora_alpha,
    adapter=@adapter_type, tensor_rank=@tensor_rank, tensor_seed=@tensor_seed,
    tensor_variant=@tensor_variant, local_rank=@lora_local_rank, local_alpha=@lora_local_alpha)``.

    Args:
        network: the plain network.
        rank: LoRA rank r ≥ 0.
        alpha: LoRA alpha (scaling alpha / r); ``None`` means alpha = r.
        dropout: dropout on the LoRA adapter input, in [0, 1).
        target_modules: fnmatch patterns of module names to adapt (default: every convolution).
        adapter: ``"lora"`` or ``"tensor"`` (the bundle's ``adapter_type``).
        tensor_rank: tensor-network rank ≥ 0; required for ``adapter="tensor"``.
        tensor_seed: seed ≥ 0 of the frozen initial cores; required for ``adapter="tensor"``.
        tensor_variant: ``"L"`` (TenVOO-L) or ``"Q"`` (TenVOO-Q); ``None`` means ``"L"``.
        local_rank: rank of the local pair of dual LoRA adapters (0: plain LoRA); LoRA only.
        local_alpha: alpha of the local pair (``None``: ``local_rank``, scaling 1).

    Returns:
        `network` itself.

    Raises:
        ValueError: if `rank` is not an integer >= 0, `adapter` is unknown, or for
            ``adapter="tensor"`` `tensor_rank` / `tensor_seed` are missing or not integers >= 0
            or `tensor_variant` is unknown.
    """
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 0:
        raise ValueError(f"`lora_rank` must be an integer >= 0, got {rank!r}.")
    if adapter not in ADAPTER_TYPES:
        raise ValueError(f"`adapter_type` must be one of {list(ADAPTER_TYPES)}, got {adapter!r}.")
    if not isinstance(local_rank, int) or isinstance(local_rank, bool) or local_rank < 0:
        raise ValueError(f"`lora_local_rank` must be an integer >= 0, got {local_rank!r}.")
    if local_rank and (adapter != "lora" or rank == 0):
        raise ValueError(
            f"`lora_local_rank` {local_rank} needs LoRA adapters with lora_rank > 0 (dual adapters), "
            f"got adapter_type {adapter!r}, lora_rank {rank}."
        )
    if adapter == "lora":
        if rank > 0:
            inject_lora(
                network,
                rank=rank,
                alpha=alpha,
                target_modules=target_modules,
                dropout=dropout,
                local_rank=local_rank,
                local_alpha=local_alpha,
            )
        return network
    for arg, value in (("tensor_rank", tensor_rank), ("tensor_seed", tensor_seed)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"`{arg}` must be an integer >= 0 for adapter_type 'tensor', got {value!r}.")
    if tensor_rank > 0:
        variant = "L" if tensor_variant is None else tensor_variant
        inject_tensor(network, rank=tensor_rank, seed=tensor_seed, target_modules=target_modules, variant=variant)
    return network


def lora_unet(
    profile: str | Profile = "quick",
    lora_rank: int = 0,
    lora_alpha: float | None = None,
    lora_dropout: float = 0.0,
    target_modules: Sequence[str] = ("*",),
    adapter: str = "lora",
    tensor_rank: int | None = None,
    tensor_seed: int | None = None,
    tensor_variant: str | None = None,
    local_rank: int = 0,
) -> torch.nn.Module:
    """The bundle's network of a run profile, with adapters of type `adapter` (LoRA by default).

    ``with_lora(bundle_network_def(profile), lora_rank, lora_alpha, …)``: the same network as the
    bundle's ``network`` for that profile. For ``adapter="tensor"``, `tensor_rank`, `tensor_seed`
    and `tensor_variant` default to the bundle's values of those names (written once there).

    Args:
        profile: run profile name (``"quick"``, ``"paper"``, ``"clinical"``) or a `Profile`.
        lora_rank: LoRA rank r; 0 builds the plain network (full-weight training).
        lora_alpha: LoRA alpha (scaling alpha / r); ``None`` means alpha = r.
        lora_dropout: dropout on the adapter input, in [0, 1).
        target_modules: fnmatch patterns of module names to adapt (default: every convolution).
        adapter: ``"lora"`` or ``"tensor"``.
        tensor_rank: tensor-network rank (0: plain network); ``None``: the bundle's.
        tensor_seed: seed of the frozen initial cores; ``None``: the bundle's.
        tensor_variant: ``"L"`` or ``"Q"``; ``None``: the bundle's.
        local_rank: rank of the local pair of dual LoRA adapters (0: none; alpha: the rank).

    Returns:
        The network (``torch.nn.Module``) on the CPU.

    Raises:
        ValueError: if `lora_rank` is negative, `adapter` unknown or the profile is unknown.

    Example:
        >>> net = lora_unet("quick", lora_rank=4)
        >>> net(torch.zeros(1, 1, 112, 112)).shape
        torch.Size([1, 4, 112, 112])
    """
    if not isinstance(lora_rank, int) or isinstance(lora_rank, bool) or lora_rank < 0:
        raise ValueError(f"`lora_rank` must be an integer >= 0, got {lora_rank!r}.")
    if adapter == "tensor" and None in (tensor_rank, tensor_seed, tensor_variant):
        parser = _bundle_parser(profile)
        tensor_rank = parser.get_parsed_content("tensor_rank") if tensor_rank is None else tensor_rank
        tensor_seed = parser.get_parsed_content("tensor_seed") if tensor_seed is None else tensor_seed
        tensor_variant = parser.get_parsed_content("tensor_variant") if tensor_variant is None else tensor_variant
    return with_lora(
        bundle_network_def(profile),
        lora_rank,
        lora_alpha,
        lora_dropout,
        target_modules,
        adapter=adapter,
        tensor_rank=tensor_rank,
        tensor_seed=tensor_seed,
        tensor_variant=tensor_variant,
        local_rank=local_rank,
    )


def rank_for_dataset_size(
    n_cases: int, largest: int, ranks: tuple[int, int] = (16, 32), threshold: float = 0.75
) -> int:
    """Choose a site's LoRA rank from its dataset size, as Rate-My-LoRA does.

    The paper gives rank 16 to the site holding about half the data of the others and 32 to the
    rest: ``r_c = ranks[0] if |D_c| < threshold * max_c' |D_c'| else ranks[1]``.

    Args:
        n_cases: training cases |D_c| of the site (> 0).
        largest: training cases of the largest site (>= `n_cases`).
        ranks: (small-site rank, large-site rank).
        threshold: fraction of the largest site under which the small rank is used, in (0, 1].

    Returns:
        The rank r_c.

    Raises:
        ValueError: if a count is not positive, `n_cases` > `largest`, or `threshold` is out of range.
    """
    if n_cases <= 0 or largest <= 0:
        raise ValueError(f"`n_cases` and `largest` must be positive, got {n_cases} and {largest}.")
    if n_cases > largest:
        raise ValueError(f"`n_cases` ({n_cases}) cannot exceed `largest` ({largest}).")
    if not 0 < threshold <= 1:
        raise ValueError(f"`threshold` must be in (0, 1], got {threshold}.")
    return ranks[0] if n_cases < threshold * largest else ranks[1]


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a network state dict from a checkpoint file (plain or ``{"model": state_dict}``).

    Args:
        path: a ``.pt`` file written by the bundle (``CheckpointSaver``) or `plain_state_dict`.

    Returns:
        The state dict.

    Raises:
        FileNotFoundError: if `path` does not exist (the message says how weights are made).
        ValueError: if the file cannot be read or holds no tensor state dict.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{path}: no weights here. Weights are never shipped; make them with `cardiolora pretrain`."
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"{path}: cannot read the checkpoint ({err}).") from err
    if isinstance(state, Mapping) and "model" in state and isinstance(state["model"], Mapping):
        state = state["model"]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected a state dict of tensors (or {{'model': state_dict}}).")
    return dict(state)


def load_weights(network: torch.nn.Module, path_or_state: str | os.PathLike | Mapping[str, torch.Tensor]) -> None:
    """Load plain U-Net weights into `network`, with or without adapters (LoRA or tensor) injected.

    Plain keys (``<name>.weight``) are mapped to the wrapped base keys (``<name>.base.weight``)
    of adapted modules; adapters keep their state (identity right after injection). A state
    dict that holds adapter keys as well (an adapter training checkpoint) is loaded as it is.

    Args:
        network: the network built by `lora_unet`.
        path_or_state: a checkpoint path or a state dict.

    Raises:
        ValueError: if base keys are missing or unexpected or shapes differ (the keys are named,
            with the file when a path was given).
    """
    where = str(path_or_state) if isinstance(path_or_state, (str, os.PathLike)) else "state dict"
    state = read_state_dict(path_or_state) if isinstance(path_or_state, (str, os.PathLike)) else dict(path_or_state)
    names = set(adapter_modules(network))
    own = network.state_dict()
    mapped = {k if k in own else wrap_key(k, names): v for k, v in state.items()}
    unexpected = sorted(k for k in mapped if k not in own)
    required = [k for k in own if unwrap_key(k, names) is not None]  # adapter keys unwrap to None
    missing = sorted(k for k in required if k not in mapped)
    wrong = sorted(
        f"{k} (expected {tuple(own[k].shape)}, got {tuple(v.shape)})"
        for k, v in mapped.items()
        if k in own and own[k].shape != v.shape
    )
    if unexpected or missing or wrong:
        raise ValueError(
            f"{where}: weights do not fit the network (is the profile the same?): "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}, wrong shape {wrong[:5]}."
        )
    network.load_state_dict(mapped, strict=False)


def plain_state_dict(network: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The network's weights under the plain U-Net keys (adapters stripped; merge first to keep them).

    Args:
        network: a network built by `lora_unet`.

    Returns:
        Detached CPU tensors keyed as in the plain MONAI ``UNet``.
    """
    if adapter_modules(network):
        return base_state_dict(network)
    return {k: v.detach().cpu().clone() for k, v in network.state_dict().items()}


class ExportView:
    """A view of a network whose ``state_dict()`` is the deployable plain U-Net.

    For a network with adapters (LoRA or tensor) it returns ``W0 + ΔW`` under the plain keys (computed on the
    fly; the network itself is not merged), so a checkpoint saved through the view loads into the
    plain network and costs at inference exactly what the base costs. For a plain network it is
    the network's own state dict. The bundle's ``CheckpointSaver`` saves through it, so full-weight
    and LoRA runs write the same kind of ``model.pt``.

    Args:
        network: a network built by `lora_unet`.
    """

    def __init__(self, network: torch.nn.Module) -> None:
        self.network = network

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Plain-keyed weights with adapters folded in."""
        state = plain_state_dict(self.network)
        mods = adapter_modules(self.network)
        if mods and not any(m.merged for m in mods.values()):
            with torch.no_grad():
                for name, m in mods.items():
                    key = f"{name}.weight"
                    state[key] = state[key] + m.delta_weight().detach().cpu().to(state[key].dtype)
        return state

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Load plain weights into the network's base (adapters untouched)."""
        load_weights(self.network, state)
