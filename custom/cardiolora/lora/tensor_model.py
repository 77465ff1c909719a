"""Model-level TenVOO adapters (L and Q): injection, adapter-only state dicts, full-size deltas, counts.

The counterpart of :mod:`cardiolora.lora.model` for :class:`~cardiolora.lora.tensor_layer.TensorConv`.
Key naming: the convolution at dotted name ``<name>`` becomes a ``TensorConv`` that keeps it as
``<name>.base`` (so :func:`cardiolora.lora.wrap_key` / :func:`~cardiolora.lora.unwrap_key` and
:func:`~cardiolora.lora.base_state_dict` apply unchanged) and adds the trainable cores
``<name>.tenvoo.<core>`` (``<name>.tenvoo_T.<core>`` for a transposed convolution), the cores in
contraction order (TenVOO-L: ``in12, in3, hub_in, k0, k1[, hub_k, k2], hub_out, out3, out12``;
TenVOO-Q: ``in12, in3, gate_in, k0, k1, gate_k, k2, gate_out, out3, out12`` in 3-D and
``in12, in3, gate_in, k0, gate_k, k1, gate_out, out3, out12`` in 2-D). The core names tell the
network apart, so a server needs no flag for the variant.

Only the trainable cores ``θ`` travel (:func:`tensor_state_dict`). The frozen copy ``θ0`` is not in
any state dict: whoever needs ``ΔW = T(θ) − T(θ0)`` redraws ``θ0`` from the bundle's
``tensor_seed`` and the module's name (:func:`tensor_delta_from_state`, the server's side), which
gives full-size deltas keyed ``<name>.weight``, as LoRA's
:func:`~cardiolora.lora.adapter_delta_from_state` does, so the Rate-My-LoRA / FedPETuning
aggregation of full-size deltas works unchanged on them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from cardiolora.lora.adapters import (
    adapter_counts,
    load_adapter_params,
    merge_modules,
    select_convs,
    unmerge_modules,
)
from cardiolora.lora.state import preview_names
from cardiolora.lora.tensor import (
    TENSOR_CORES,
    TENSOR_CORES_TRANSPOSED,
    check_tensor_rank_seed,
    check_tensor_variant,
    core_shapes,
    initial_cores,
    network_labels,
    network_of,
    tensor_delta,
)
from cardiolora.lora.tensor_layer import TensorConv

__all__ = [
    "tensor_modules",
    "inject_tensor",
    "mark_only_tensor_trainable",
    "tensor_state_dict",
    "load_tensor_state_dict",
    "tensor_delta_state_dict",
    "tensor_delta_from_state",
    "merge_tensor",
    "unmerge_tensor",
    "reset_tensor",
    "tensor_param_count",
]


def tensor_modules(model: nn.Module) -> dict[str, TensorConv]:
    """All :class:`TensorConv` modules of `model` by dotted name, in module order.

    Args:
        model: any module.

    Returns:
        ``{name: TensorConv}``; empty if there are none.
    """
    return {name: m for name, m in model.named_modules() if isinstance(m, TensorConv)}


def _require_tensor(model: nn.Module) -> dict[str, TensorConv]:
    mods = tensor_modules(model)
    if not mods:
        raise ValueError("`model` has no TensorConv modules; call inject_tensor first.")
    return mods


def mark_only_tensor_trainable(model: nn.Module) -> None:
    """``requires_grad`` True on the trainable cores, False on every other parameter.

    Args:
        model: a model with tensor adapters.

    Raises:
        ValueError: if `model` has none.
    """
    mods = _require_tensor(model)
    for p in model.parameters():
        p.requires_grad_(False)
    for m in mods.values():
        for p in m.cores.parameters():
            p.requires_grad_(True)


def inject_tensor(
    model: nn.Module,
    rank: int,
    seed: int = 0,
    target_modules: Sequence[str] = ("*",),
    exclude_modules: Sequence[str] = (),
    variant: str = "L",
) -> list[str]:
    """Replace matching convolutions in place by :class:`TensorConv` (TenVOO-L or -Q) and freeze the rest.

    Selection and checks as :func:`cardiolora.lora.inject_lora` (all checked before anything is
    replaced); module ``<name>`` draws its ``θ0`` from ``(seed, <name>)``.

    Args:
        model: the network (2-D or 3-D convolutions); it must not hold adapters yet.
        rank: tensor rank ``r`` ≥ 1 (the paper uses 4).
        seed: ``tensor_seed`` ≥ 0 of the frozen initial cores.
        target_modules: fnmatch patterns on dotted module names.
        exclude_modules: fnmatch patterns of names to leave alone.
        variant: ``"L"`` (TenVOO-L, default) or ``"Q"`` (TenVOO-Q).

    Returns:
        The dotted names of the replaced modules, in module order.

    Raises:
        ValueError: bad `rank` / `seed` / `variant` / patterns, adapters already present, nothing matched, or
            an unsupported module (named).

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ConvTranspose2d(4, 2, 2, stride=2))
        >>> inject_tensor(net, rank=2)
        ['0', '1']
    """
    check_tensor_rank_seed(rank, seed)
    check_tensor_variant(variant)
    convs = select_convs(model, target_modules, exclude_modules, wrapper="TensorConv")
    for n, conv in convs.items():
        parent_name, _, child = n.rpartition(".")
        wrapper = TensorConv(conv, rank=rank, seed=seed, name=n, variant=variant)
        setattr(model.get_submodule(parent_name), child, wrapper)
    mark_only_tensor_trainable(model)
    return list(convs)


def _core_params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {
        f"{name}.{m.cores_name}.{core}": p for name, m in _require_tensor(model).items() for core, p in m.cores.items()
    }


def tensor_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter-only state dict: the trainable cores ``<name>.tenvoo[_T].<core>``, nothing else.

    Args:
        model: a model with tensor adapters.

    Returns:
        Detached CPU clones, keyed as in ``model.state_dict()``.

    Raises:
        ValueError: if `model` has none.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(4, 8, 3))
        >>> _ = inject_tensor(net, rank=2)
        >>> list(tensor_state_dict(net))[:3]
        ['0.tenvoo.in12', '0.tenvoo.in3', '0.tenvoo.hub_in']
    """
    return {k: p.detach().cpu().clone() for k, p in _core_params(model).items()}


def load_tensor_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Load trainable cores, strictly: all or nothing.

    Args:
        model: a model with tensor adapters, none merged.
        state: exactly the keys of ``tensor_state_dict(model)``, same shapes, finite floats.

    Raises:
        ValueError: merged adapters, or keys missing / unexpected / not floating / wrong shape /
            non-finite (named); nothing is loaded then.
    """
    load_adapter_params(_require_tensor(model), _core_params(model), state, "tensor-adapter")


def tensor_delta_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Full-size ``ΔW = T(θ) − T(θ0)`` of every tensor adapter, keyed ``<name>.weight``.

    Args:
        model: a model with tensor adapters.

    Returns:
        Detached CPU tensors in the base weights' layouts.

    Raises:
        ValueError: if `model` has none.
    """
    with torch.no_grad():
        return {f"{n}.weight": m.delta_weight().detach().cpu().clone() for n, m in _require_tensor(model).items()}


def _group_cores(state: Mapping[str, torch.Tensor]) -> dict[tuple[str, str], dict[str, torch.Tensor]]:
    groups: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    unknown: list[str] = []
    for key, value in state.items():
        parts = key.rsplit(".", 2) if isinstance(key, str) else []
        if len(parts) != 3 or parts[1] not in (TENSOR_CORES, TENSOR_CORES_TRANSPOSED) or not parts[0]:
            unknown.append(str(key))
            continue
        groups.setdefault((parts[0], parts[1]), {})[parts[2]] = value
    if unknown:
        raise ValueError(
            f"`state` has keys that are not tensor-adapter keys (<name>.tenvoo.<core>, <name>.tenvoo_T.<core>): "
            f"{preview_names(unknown)}."
        )
    if not groups:
        raise ValueError("`state` holds no tensor adapter.")
    names = [n for n, _ in groups]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"`state`: modules with both tenvoo and tenvoo_T cores: {preview_names(twice)}.")
    return groups


def _expected_shapes(name: str, cores: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    """Core shapes implied by the channel, kernel and rank sizes the cores carry; checks the core set."""
    try:
        variant, spatial_dims = network_of(cores)
    except ValueError as err:
        raise ValueError(f"`state`: module `{name}`: {err}") from err
    labels, _ = network_labels(spatial_dims, variant)
    if any(cores[c].dim() != len(labels[c]) for c in labels):
        raise ValueError(f"`state`: module `{name}` has cores of the wrong number of dimensions.")
    in_ch = cores["in12"].shape[0] * cores["in3"].shape[0]
    out_ch = cores["out12"].shape[0] * cores["out3"].shape[0]
    kernel = [cores[f"k{d}"].shape[0] for d in range(spatial_dims)]
    return core_shapes(in_ch, out_ch, kernel, int(cores["in12"].shape[1]), variant)


def tensor_delta_from_state(state: Mapping[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """Full-size deltas from trainable cores alone, without a model (the server's side).

    For every module ``<name>``: the channel counts, kernel and rank are read from its cores and
    the expected shapes rebuilt (:func:`~cardiolora.lora.tensor.core_shapes`); ``θ0`` is redrawn
    with :func:`~cardiolora.lora.tensor.initial_cores` from `seed` and ``<name>``; then
    ``ΔW = T(θ) − T(θ0)`` (paper Eq. 8) in the base layout, ``[C_out, C_in, *K]`` for ``tenvoo``
    and ``[C_in, C_out, *K]`` for ``tenvoo_T``. Equals :func:`tensor_delta_state_dict` of the
    model the cores came from (to float rounding).

    Args:
        state: as made by :func:`tensor_state_dict` (any floating dtype; e.g. float64 on a server).
        seed: the bundle's ``tensor_seed``, the same as the sites'.

    Returns:
        ``{"<name>.weight": ΔW}`` in the modules' first-appearance order, in the cores' dtype.

    Raises:
        ValueError: keys that are not core keys, an incomplete or inconsistent core set (names the
            module and the shapes), non-finite or non-floating values, a bad `seed`.
    """
    check_tensor_rank_seed(1, seed)
    if not isinstance(state, Mapping):
        raise ValueError(f"`state` must be a mapping of key to tensor, got {type(state).__name__}.")
    bad = [
        str(k)
        for k, v in state.items()
        if not isinstance(v, torch.Tensor) or not v.is_floating_point() or not torch.isfinite(v).all()
    ]
    if bad:
        raise ValueError(f"`state`: not finite floating-point tensors: {preview_names(bad)}.")
    out: dict[str, torch.Tensor] = {}
    for (name, kind), cores in _group_cores(state).items():
        shapes = _expected_shapes(name, cores)
        wrong = [
            f"{c} (expected {shapes[c]}, got {tuple(cores[c].shape)})"
            for c in shapes
            if tuple(cores[c].shape) != shapes[c]
        ]
        if wrong:
            raise ValueError(f"`state`: module `{name}`: cores do not form a TenVOO network: {preview_names(wrong)}.")
        transposed = kind == TENSOR_CORES_TRANSPOSED
        in_ch = shapes["in12"][0] * shapes["in3"][0]
        out_ch = shapes["out12"][0] * shapes["out3"][0]
        kernel = [shapes[c][0] for c in ("k0", "k1", "k2") if c in shapes]
        fan_in = (out_ch if transposed else in_ch) * math.prod(kernel)
        ref = cores["in12"]
        frozen = {
            c: t.to(device=ref.device, dtype=ref.dtype)
            for c, t in initial_cores(shapes, seed, name, fan_in, shapes["in12"][1]).items()
        }
        out[f"{name}.weight"] = tensor_delta({c: cores[c] for c in shapes}, frozen, transposed)
    return out


def merge_tensor(model: nn.Module, safe: bool = True) -> None:
    """Merge every tensor adapter into its base weight (``W ← W + ΔW``); all or nothing.

    Args:
        model: a model with tensor adapters, none merged.
        safe: first compute every merged weight and refuse if any is not finite.

    Raises:
        ValueError: already merged, or (`safe`) non-finite results (modules named); nothing changed.
    """
    merge_modules(_require_tensor(model), safe)


def unmerge_tensor(model: nn.Module) -> None:
    """Take every tensor adapter back out of its base weight (``W ← W − ΔW``); all or nothing.

    Args:
        model: a model whose tensor adapters are all merged.

    Raises:
        ValueError: if some adapter is not merged (named); nothing changed.
    """
    unmerge_modules(_require_tensor(model))


def reset_tensor(model: nn.Module, seed: int | None = None) -> None:
    """Set every adapter back to ``θ = θ0`` (``ΔW = 0``); merged updates stay folded in ``W``.

    Used after a federated merge, as :func:`cardiolora.lora.reset_lora`.

    Args:
        model: a model with tensor adapters.
        seed: a new ``tensor_seed`` for ``θ0`` (e.g. one per round); ``None`` keeps each module's.

    Raises:
        ValueError: if `model` has none or `seed` is bad.
    """
    for m in _require_tensor(model).values():
        m.reset_adapter(seed)


def tensor_param_count(model: nn.Module) -> dict[str, int | float]:
    """Parameter counts and fp32 bytes of the tensor adapters vs the whole network.

    The same keys as :func:`cardiolora.lora.lora_param_count`, so the two adapters compare
    directly (the fraction is the same at any common dtype, e.g. fp16 on the wire).

    Args:
        model: a model with tensor adapters.

    Returns:
        ``adapter_params`` (trainable core elements; ``θ0`` is not counted: it is never trained
        nor sent), ``base_params``, ``trainable_params``, ``adapter_bytes`` (fp32 bytes of
        :func:`tensor_state_dict`, what a site uploads per round), ``model_bytes`` (fp32 bytes of
        the plain network's state dict) and ``adapter_fraction`` = their ratio.

    Raises:
        ValueError: if `model` has none.
    """
    return adapter_counts(model, list(_core_params(model).values()), tensor_state_dict(model))
