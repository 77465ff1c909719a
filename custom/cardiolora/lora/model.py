"""Model-level LoRA: injection into a network, adapter state dicts and the full-size deltas.

Key naming. :func:`inject_lora` replaces the convolution at dotted name ``<name>`` by a
:class:`LoRAConv` at the same name, which keeps the original module as ``<name>.base``. So in the
injected model

* ``<name>.weight`` / ``<name>.bias`` of the plain network become ``<name>.base.weight`` /
  ``<name>.base.bias`` (:func:`wrap_key` maps plain → injected, :func:`unwrap_key` back);
* the adapter adds ``<name>.lora_A.weight`` (always a regular convolution: ``[r, in, *k]`` for a
  convolution base, ``[r, in, 1, ..]`` for a transposed one) and either ``<name>.lora_B.weight``
  (convolution base, ``[out, r, 1, ..]``) or ``<name>.lora_B_T.weight`` (transposed convolution
  base, ``[r, out, *k]``).

The adapter-only state dict (:func:`lora_state_dict`) is what a site sends; the server turns it into
full-size deltas keyed by the *plain* network's weight key ``<name>.weight`` with
:func:`adapter_delta_from_state`, which needs no model. Conv vs transposed conv cannot be told from
the shapes alone (``[out, r, 1, ..]`` and ``[r, out, *k]`` coincide for a 1×1 kernel and
``out == r``), so the kind is encoded in B's key (``lora_B`` vs ``lora_B_T``) and the shapes are
checked against it. The rank is ``A.shape[0]`` in both cases.

Dual adapters (``inject_lora(..., local_rank=r_l)``, Med-DualLoRA): each module also holds a local
pair, keys ``<name>.lora_A_local.weight`` and ``<name>.lora_B_local.weight`` /
``<name>.lora_B_T_local.weight``. :func:`lora_state_dict` holds the global pairs only (what a site
sends); :func:`lora_local_state_dict` the local ones (what it keeps), so the two state dicts never
share a key; :func:`reset_lora` resets the global pairs only, :func:`reset_lora_local` the local ones.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from cardiolora.lora.adapters import (
    adapter_counts,
    base_state_dict,
    load_adapter_params,
    merge_modules,
    select_convs,
    unmerge_modules,
    unwrap_key,
    wrap_key,
)
from cardiolora.lora.layers import LOCAL_SUFFIX, LORA_A, LoRAConv, check_rank_alpha_dropout

__all__ = [
    "inject_lora",
    "lora_modules",
    "lora_scalings",
    "lora_state_dict",
    "load_lora_state_dict",
    "lora_delta_state_dict",
    "base_state_dict",
    "wrap_key",
    "unwrap_key",
    "merge_lora",
    "unmerge_lora",
    "reset_lora",
    "mark_only_lora_trainable",
    "lora_param_count",
    "lora_local_state_dict",
    "load_lora_local_state_dict",
    "lora_local_scalings",
    "reset_lora_local",
]

# base_state_dict, wrap_key and unwrap_key serve every adapter kind (cardiolora.lora.adapters);
# they stay importable from here, where the key naming scheme above describes them.


def _require_lora(model: nn.Module) -> dict[str, LoRAConv]:
    mods = lora_modules(model)
    if not mods:
        raise ValueError("`model` has no LoRAConv modules; call inject_lora first.")
    return mods


def lora_modules(model: nn.Module) -> dict[str, LoRAConv]:
    """All :class:`LoRAConv` modules of `model` by dotted name, in module order.

    Args:
        model: any module.

    Returns:
        ``{name: LoRAConv}``; empty if the model has no adapters.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3))
        >>> _ = inject_lora(net, rank=2)
        >>> list(lora_modules(net))
        ['0']
    """
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRAConv)}


def lora_scalings(model: nn.Module) -> dict[str, float]:
    """``alpha / r`` of every adapter by module name (the `scaling` of :func:`adapter_delta_from_state`).

    Args:
        model: a model with adapters.

    Returns:
        ``{name: scaling}``.

    Raises:
        ValueError: if `model` has no adapters.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3))
        >>> _ = inject_lora(net, rank=2, alpha=4.0)
        >>> lora_scalings(net)
        {'0': 2.0}
    """
    return {name: m.scaling for name, m in _require_lora(model).items()}


def mark_only_lora_trainable(model: nn.Module) -> None:
    """Set ``requires_grad`` True on adapter parameters (A and B) and False on every other one.

    Args:
        model: a model with adapters.

    Raises:
        ValueError: if `model` has no adapters.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.PReLU())
        >>> _ = inject_lora(net, rank=2)
        >>> mark_only_lora_trainable(net)
        >>> sorted(n for n, p in net.named_parameters() if p.requires_grad)
        ['0.lora_A.weight', '0.lora_B.weight']
    """
    mods = _require_lora(model)
    for p in model.parameters():
        p.requires_grad_(False)
    for m in mods.values():
        for p in _adapter_params(m):
            p.requires_grad_(True)


def _adapter_params(m: LoRAConv) -> list[torch.nn.Parameter]:
    """Parameters of both pairs of `m` (global, then local if any)."""
    pairs = [m.lora_A, m.lora_b] + ([m.lora_a_local, m.lora_b_local] if m.local_rank else [])
    return [p for module in pairs for p in module.parameters()]


def _require_local(model: nn.Module) -> dict[str, LoRAConv]:
    mods = _require_lora(model)
    without = [n for n, m in mods.items() if not m.local_rank]
    if without:
        raise ValueError(
            f"adapters {', '.join(without[:5])} have no local pair; inject with local_rank > 0 for dual adapters."
        )
    return mods


def inject_lora(
    model: nn.Module,
    rank: int,
    alpha: float | None = None,
    target_modules: Sequence[str] = ("*",),
    exclude_modules: Sequence[str] = (),
    dropout: float = 0.0,
    local_rank: int = 0,
    local_alpha: float | None = None,
) -> list[str]:
    """Replace matching convolutions of `model` in place by :class:`LoRAConv` and freeze the rest.

    A convolution (``nn.Conv*d`` / ``nn.ConvTranspose*d``) at dotted name ``n`` is adapted when
    ``fnmatch(n, p)`` holds for some pattern in `target_modules` and for none in `exclude_modules`.
    The default adapts every convolution and transposed convolution, as Rate-My-LoRA does. All is
    checked before anything is replaced, so a failure leaves `model` as it was. Afterwards only
    adapter parameters have ``requires_grad=True``.

    Args:
        model: the network, e.g. ``monai.networks.nets.UNet``; it must not already hold adapters.
        rank: adapter rank ``r``, an int ≥ 1.
        alpha: LoRA alpha > 0; ``None`` (default) means ``alpha = rank``, i.e. scaling 1.
        target_modules: fnmatch patterns on dotted module names (not a single str).
        exclude_modules: fnmatch patterns of names to leave alone.
        dropout: dropout probability in ``[0, 1)`` on the adapter input.
        local_rank: rank of the local pair of dual adapters (Med-DualLoRA); 0 (default): none.
        local_alpha: alpha of the local pair; ``None`` means ``alpha_l = local_rank``.

    Returns:
        The dotted names of the replaced modules, in module order.

    Raises:
        ValueError: bad `rank` / `alpha` / `dropout` / patterns (naming the argument); `model`
            already has adapters; no convolution matched (a few available names are listed); a
            matched module is unsupported (Conv1d, groups ≠ 1, padding_mode ≠ "zeros"; named); a
            wildcard-free pattern names a module that is not a convolution; a matched module is
            shared under several names.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ConvTranspose2d(4, 2, 2, stride=2))
        >>> inject_lora(net, rank=2)
        ['0', '1']
    """
    check_rank_alpha_dropout(rank, alpha, dropout)
    if isinstance(local_rank, bool) or not isinstance(local_rank, int) or local_rank < 0:
        raise ValueError(f"`local_rank` must be an int >= 0 (0: no local pair), got {local_rank!r}.")
    if local_rank:
        check_rank_alpha_dropout(local_rank, local_alpha, dropout)
    convs = select_convs(model, target_modules, exclude_modules, wrapper="LoRAConv")
    matched = list(convs)
    wrappers = {
        n: LoRAConv(
            convs[n], rank=rank, alpha=alpha, dropout=dropout, name=n, local_rank=local_rank, local_alpha=local_alpha
        )
        for n in matched
    }
    for n, wrapper in wrappers.items():
        parent_name, _, child = n.rpartition(".")
        setattr(model.get_submodule(parent_name), child, wrapper)
    mark_only_lora_trainable(model)
    return matched


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter-only state dict: ``<name>.lora_A.weight`` and ``<name>.lora_B.weight`` (or ``lora_B_T``).

    The global pairs only: a dual adapter's local pairs are in :func:`lora_local_state_dict`.

    Args:
        model: a model with adapters.

    Returns:
        Detached CPU clones, keyed as in ``model.state_dict()``.

    Raises:
        ValueError: if `model` has no adapters.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3))
        >>> _ = inject_lora(net, rank=2)
        >>> {k: tuple(v.shape) for k, v in lora_state_dict(net).items()}
        {'0.lora_A.weight': (2, 1, 3, 3), '0.lora_B.weight': (4, 2, 1, 1)}
    """
    out: dict[str, torch.Tensor] = {}
    for name, m in _require_lora(model).items():
        out[f"{name}.{LORA_A}.weight"] = m.lora_A.weight.detach().cpu().clone()
        out[f"{name}.{m.b_name}.weight"] = m.lora_b.weight.detach().cpu().clone()
    return out


def load_lora_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Load an adapter-only state dict, strictly: all or nothing.

    Args:
        model: a model with adapters, none of them merged.
        state: ``{key: tensor}`` with exactly the keys of ``lora_state_dict(model)``, the same
            shapes and finite values (any floating dtype; values are cast to the model's).

    Raises:
        ValueError: naming the keys that are missing, unexpected, not floating tensors, of the
            wrong shape (expected vs got) or non-finite; or if some adapter is merged. `model` is
            not modified in any of these cases.

    Example:
        >>> a, b = nn.Sequential(nn.Conv2d(1, 4, 3)), nn.Sequential(nn.Conv2d(1, 4, 3))
        >>> _, _ = inject_lora(a, rank=2), inject_lora(b, rank=2)
        >>> load_lora_state_dict(b, lora_state_dict(a))
    """
    mods = _require_lora(model)
    expected: dict[str, torch.Tensor] = {}
    for name, m in mods.items():
        expected[f"{name}.{LORA_A}.weight"] = m.lora_A.weight
        expected[f"{name}.{m.b_name}.weight"] = m.lora_b.weight
    load_adapter_params(mods, expected, state, "LoRA")


def lora_delta_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Full-size ``ΔW = (alpha / r)·B·A`` of every adapter, keyed by the plain network's weight key.

    The key is ``<name>.weight``, the key the weight has in the network without adapters (e.g.
    ``model.0.conv.unit0.conv.weight`` for MONAI's UNet); see :func:`lora_delta` for the equation.

    Args:
        model: a model with adapters.

    Returns:
        Detached CPU tensors in the base weights' layouts.

    Raises:
        ValueError: if `model` has no adapters.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3))
        >>> _ = inject_lora(net, rank=2)
        >>> float(lora_delta_state_dict(net)["0.weight"].abs().sum())
        0.0
    """
    with torch.no_grad():
        return {f"{n}.weight": m.delta_weight().detach().cpu().clone() for n, m in _require_lora(model).items()}


def merge_lora(model: nn.Module, safe: bool = True) -> None:
    """Merge every adapter into its base weight (``W0 ← W0 + ΔW``); all or nothing.

    Args:
        model: a model with adapters, none merged.
        safe: first compute every merged weight and refuse if any is not finite.

    Raises:
        ValueError: if some adapter is already merged, or (`safe`) if some merged weight is not
            finite; both name the modules, and no weight is changed.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3))
        >>> _ = inject_lora(net, rank=2)
        >>> merge_lora(net); unmerge_lora(net)
    """
    merge_modules(_require_lora(model), safe)


def unmerge_lora(model: nn.Module) -> None:
    """Take every adapter back out of its base weight (``W0 ← W0 - ΔW``); all or nothing.

    Args:
        model: a model whose adapters are all merged.

    Raises:
        ValueError: if some adapter is not merged (naming them); nothing is changed.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3))
        >>> _ = inject_lora(net, rank=2)
        >>> merge_lora(net); unmerge_lora(net)
    """
    unmerge_modules(_require_lora(model))


def reset_lora(model: nn.Module) -> None:
    """Re-initialise every adapter (A kaiming-uniform, B zero); merged adapters stay folded in ``W0``.

    Used after each federated merge so that each round's adapter holds that round's update only.
    Reproducible under ``torch.manual_seed``.

    Args:
        model: a model with adapters.

    Raises:
        ValueError: if `model` has no adapters.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3))
        >>> _ = inject_lora(net, rank=2)
        >>> reset_lora(net)
    """
    for m in _require_lora(model).values():
        m.reset_adapter()


def lora_param_count(model: nn.Module) -> dict[str, int | float]:
    """Parameter counts and fp32 bytes of the adapters vs the whole network.

    Args:
        model: a model with adapters.

    Returns:
        ``adapter_params`` (elements of A and B), ``base_params`` (parameters of the network without
        adapters), ``trainable_params`` (``requires_grad``), ``adapter_bytes`` (fp32 bytes of
        :func:`lora_state_dict`, what a site sends per round), ``model_bytes`` (fp32 bytes of
        :func:`base_state_dict`, i.e. of the full network's state dict, buffers included) and
        ``adapter_fraction`` = ``adapter_bytes / model_bytes``.

    Raises:
        ValueError: if `model` has no adapters.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3))
        >>> _ = inject_lora(net, rank=2)
        >>> lora_param_count(net)["adapter_params"]
        26
    """
    mods = _require_lora(model)
    adapter_params = [p for m in mods.values() for p in _adapter_params(m)]
    return adapter_counts(model, adapter_params, lora_state_dict(model))


def lora_local_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The local pairs of dual adapters: ``<name>.lora_A_local.weight``, ``<name>.lora_B[_T]_local.weight``.

    What a Med-DualLoRA site keeps (and never sends); no key is shared with :func:`lora_state_dict`.

    Args:
        model: a model with dual adapters (``inject_lora(..., local_rank > 0)``).

    Returns:
        Detached CPU clones, keyed as in ``model.state_dict()``.

    Raises:
        ValueError: if `model` has no adapters or some adapter has no local pair.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3))
        >>> _ = inject_lora(net, rank=2, local_rank=1)
        >>> {k: tuple(v.shape) for k, v in lora_local_state_dict(net).items()}
        {'0.lora_A_local.weight': (1, 1, 3, 3), '0.lora_B_local.weight': (4, 1, 1, 1)}
    """
    return {k: v.detach().cpu().clone() for k, v in _local_params(_require_local(model)).items()}


def _local_params(mods: Mapping[str, LoRAConv]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for name, m in mods.items():
        out[f"{name}.{LORA_A}{LOCAL_SUFFIX}.weight"] = m.lora_a_local.weight
        out[f"{name}.{m.b_name}{LOCAL_SUFFIX}.weight"] = m.lora_b_local.weight
    return out


def load_lora_local_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Load the local pairs of dual adapters, strictly: all or nothing (as :func:`load_lora_state_dict`).

    Args:
        model: a model with dual adapters, none merged.
        state: exactly the keys and shapes of ``lora_local_state_dict(model)``, finite values.

    Raises:
        ValueError: naming missing / unexpected / non-floating / misshapen / non-finite keys, an
            adapter without a local pair or a merged adapter; nothing is loaded then.
    """
    mods = _require_local(model)
    load_adapter_params(mods, _local_params(mods), state, "local LoRA")


def lora_local_scalings(model: nn.Module) -> dict[str, float]:
    """``alpha_l / r_l`` of every local pair by module name.

    Raises:
        ValueError: if `model` has no adapters or some adapter has no local pair.
    """
    return {name: m.local_scaling for name, m in _require_local(model).items()}


def reset_lora_local(model: nn.Module) -> None:
    """Re-initialise every local pair (A kaiming-uniform, B zero); reproducible under ``torch.manual_seed``.

    Raises:
        ValueError: if `model` has no adapters, some adapter has no local pair or is merged.
    """
    for m in _require_local(model).values():
        m.reset_local()
