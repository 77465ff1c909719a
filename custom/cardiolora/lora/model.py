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
"""

from __future__ import annotations

import fnmatch
from collections.abc import Collection, Mapping, Sequence

import torch
from torch import nn

from cardiolora.lora.layers import (
    BASE,
    LORA_A,
    LoRAConv,
    check_rank_alpha_dropout,
    check_supported,
)
from cardiolora.lora.state import preview_names, state_bytes, state_problems
from cardiolora.lora.tensor import TensorConv

__all__ = [
    "adapter_modules",
    "select_convs",
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
]

_CONV_TYPES: tuple[type[nn.Module], ...] = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)
_WILDCARDS = "*?["


def _patterns(value: Sequence[str], arg: str) -> tuple[str, ...]:
    if isinstance(value, str) or not all(isinstance(p, str) for p in value):
        raise ValueError(f"`{arg}` must be a sequence of fnmatch patterns (not a single str), got {value!r}.")
    return tuple(value)


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
        for p in (*m.lora_A.parameters(), *m.lora_b.parameters()):
            p.requires_grad_(True)


def adapter_modules(model: nn.Module) -> dict[str, nn.Module]:
    """All adapter wrappers of `model` (:class:`LoRAConv` and :class:`~cardiolora.lora.tensor.TensorConv`).

    Args:
        model: any module.

    Returns:
        ``{name: wrapper}`` in module order; empty if the model has no adapters.
    """
    return {name: m for name, m in model.named_modules() if isinstance(m, (LoRAConv, TensorConv))}


def select_convs(
    model: nn.Module,
    target_modules: Sequence[str] = ("*",),
    exclude_modules: Sequence[str] = (),
    wrapper: str = "LoRAConv",
) -> dict[str, nn.Module]:
    """The convolutions of `model` an adapter injection would wrap, all checked first.

    A convolution (``nn.Conv*d`` / ``nn.ConvTranspose*d``) at dotted name ``n`` is selected when
    ``fnmatch(n, p)`` holds for some pattern in `target_modules` and for none in `exclude_modules`.

    Args:
        model: the network; it must hold no adapter of any kind yet.
        target_modules: fnmatch patterns on dotted module names (not a single str).
        exclude_modules: fnmatch patterns of names to leave alone.
        wrapper: the adapter class named in messages.

    Returns:
        ``{name: convolution}`` in module order.

    Raises:
        ValueError: bad patterns (naming the argument); `model` is a convolution itself or already
            has adapters; no convolution matched (a few available names are listed); a matched
            module is unsupported (named); a wildcard-free pattern names a module that is not a
            convolution; a matched module is shared under several names.
    """
    targets = _patterns(target_modules, "target_modules")
    excludes = _patterns(exclude_modules, "exclude_modules")
    if not targets:
        raise ValueError("`target_modules` is empty; give at least one pattern (default '*').")
    if isinstance(model, _CONV_TYPES):
        raise ValueError(
            f"`model` is itself a {type(model).__name__}; wrap it in {wrapper} or a container (nn.Sequential)."
        )
    existing = adapter_modules(model)
    if existing:
        kind = "LoRA" if any(isinstance(m, LoRAConv) for m in existing.values()) else "tensor"
        raise ValueError(f"`model` already has {kind} adapters ({preview_names(existing)}); inject only once.")

    all_modules = dict(model.named_modules())
    for pattern in targets:
        if not any(c in pattern for c in _WILDCARDS) and pattern in all_modules:
            if not isinstance(all_modules[pattern], _CONV_TYPES):
                kind = type(all_modules[pattern]).__name__
                raise ValueError(f"`target_modules` names `{pattern}`, a {kind}, which is not a convolution.")
    convs = {n: m for n, m in all_modules.items() if n and isinstance(m, _CONV_TYPES)}
    matched = [
        n
        for n in convs
        if any(fnmatch.fnmatchcase(n, p) for p in targets) and not any(fnmatch.fnmatchcase(n, p) for p in excludes)
    ]
    if not matched:
        raise ValueError(
            f"No convolution matched `target_modules`={list(targets)} minus `exclude_modules`="
            f"{list(excludes)}; available: {preview_names(convs) or 'none'}."
        )
    aliases: dict[int, list[str]] = {}
    for n, m in model.named_modules(remove_duplicate=False):
        aliases.setdefault(id(m), []).append(n)
    for n in matched:
        if len(aliases[id(convs[n])]) > 1:
            raise ValueError(f"`{n}` is shared under several names ({preview_names(aliases[id(convs[n])])}).")

    for n in matched:  # validate everything before the first wrapper freezes anything
        check_supported(convs[n], n, wrapper=wrapper)
    return {n: convs[n] for n in matched}


def inject_lora(
    model: nn.Module,
    rank: int,
    alpha: float | None = None,
    target_modules: Sequence[str] = ("*",),
    exclude_modules: Sequence[str] = (),
    dropout: float = 0.0,
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
    convs = select_convs(model, target_modules, exclude_modules, wrapper="LoRAConv")
    matched = list(convs)
    wrappers = {n: LoRAConv(convs[n], rank=rank, alpha=alpha, dropout=dropout, name=n) for n in matched}
    for n, wrapper in wrappers.items():
        parent_name, _, child = n.rpartition(".")
        setattr(model.get_submodule(parent_name), child, wrapper)
    mark_only_lora_trainable(model)
    return matched


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter-only state dict: ``<name>.lora_A.weight`` and ``<name>.lora_B.weight`` (or ``lora_B_T``).

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
    merged = [n for n, m in mods.items() if m.merged]
    if merged:
        raise ValueError(f"Adapters {preview_names(merged)} are merged; unmerge before loading adapter weights.")
    if not isinstance(state, Mapping):
        raise ValueError(f"`state` must be a mapping of key to tensor, got {type(state).__name__}.")
    expected: dict[str, torch.Tensor] = {}
    for name, m in mods.items():
        expected[f"{name}.{LORA_A}.weight"] = m.lora_A.weight
        expected[f"{name}.{m.b_name}.weight"] = m.lora_b.weight

    problems = state_problems(expected, state)
    if problems:
        raise ValueError("Cannot load the LoRA state dict; " + "; ".join(problems) + ". Nothing was loaded.")
    with torch.no_grad():
        for k, param in expected.items():
            param.copy_(state[k])


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


def wrap_key(key: str, lora_names: Collection[str]) -> str:
    """Map a plain network's state-dict key to the key in the injected network.

    ``<name>.<param>`` → ``<name>.base.<param>`` when ``<name>`` is an adapted module; other keys
    are unchanged.

    Args:
        key: a key of the plain network's ``state_dict()``.
        lora_names: names of the adapted modules (``lora_modules(model)``).

    Returns:
        The key in the injected network.

    Example:
        >>> wrap_key("model.0.conv.weight", {"model.0.conv"})
        'model.0.conv.base.weight'
    """
    prefix, _, param = key.rpartition(".")
    return f"{prefix}.{BASE}.{param}" if prefix in lora_names else key


def unwrap_key(key: str, lora_names: Collection[str]) -> str | None:
    """Map an injected network's state-dict key to the plain network's key (inverse of :func:`wrap_key`).

    ``<name>.base.<param>`` → ``<name>.<param>``; adapter keys (``<name>.lora_*``) → ``None``;
    other keys are unchanged.

    Args:
        key: a key of the injected network's ``state_dict()``.
        lora_names: names of the adapted modules (``lora_modules(model)``).

    Returns:
        The plain key, or ``None`` for an adapter key.

    Example:
        >>> unwrap_key("model.0.conv.base.weight", {"model.0.conv"})
        'model.0.conv.weight'
        >>> unwrap_key("model.0.conv.lora_B.weight", {"model.0.conv"}) is None
        True
    """
    parts = key.split(".")
    for i in range(1, len(parts)):
        if ".".join(parts[:i]) in lora_names:
            return ".".join(parts[:i] + parts[i + 1 :]) if parts[i] == BASE else None
    return key


def base_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict of the network with the adapters (LoRA or tensor) stripped: keys as in the plain network.

    It holds the current base weights: ``W0``, or ``W0 + ΔW`` if the adapters are merged (merge
    first to export the fine-tuned plain network). Loads into the un-injected network with
    ``strict=True``.

    Args:
        model: a model with adapters.

    Returns:
        Detached CPU clones in the plain network's key order.

    Raises:
        ValueError: if `model` has no adapters.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3))
        >>> _ = inject_lora(net, rank=2)
        >>> list(base_state_dict(net))
        ['0.weight', '0.bias']
    """
    names = set(adapter_modules(model))
    if not names:
        raise ValueError("`model` has no LoRAConv modules (nor TensorConv); call inject_lora or inject_tensor first.")
    out: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        plain = unwrap_key(key, names)
        if plain is not None:
            out[plain] = value.detach().cpu().clone()
    return out


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
    mods = _require_lora(model)
    merged = [n for n, m in mods.items() if m.merged]
    if merged:
        raise ValueError(f"Adapters {preview_names(merged)} are already merged.")
    if safe:
        bad = [n for n, m in mods.items() if not torch.isfinite(m.merged_weight()).all()]
        if bad:
            raise ValueError(f"Merging {preview_names(bad)} gives non-finite weights; no weight was changed.")
    for m in mods.values():
        m.merge(safe=False)


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
    mods = _require_lora(model)
    not_merged = [n for n, m in mods.items() if not m.merged]
    if not_merged:
        raise ValueError(f"Adapters {preview_names(not_merged)} are not merged; nothing to unmerge.")
    for m in mods.values():
        m.unmerge()


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
    adapter_ids = {id(p) for m in mods.values() for p in (*m.lora_A.parameters(), *m.lora_b.parameters())}
    params = list(model.parameters())
    adapter_bytes = state_bytes(lora_state_dict(model), torch.float32)
    model_bytes = state_bytes(base_state_dict(model), torch.float32)
    return {
        "adapter_params": sum(p.numel() for p in params if id(p) in adapter_ids),
        "base_params": sum(p.numel() for p in params if id(p) not in adapter_ids),
        "trainable_params": sum(p.numel() for p in params if p.requires_grad),
        "adapter_bytes": adapter_bytes,
        "model_bytes": model_bytes,
        "adapter_fraction": adapter_bytes / model_bytes if model_bytes else float("nan"),
    }
