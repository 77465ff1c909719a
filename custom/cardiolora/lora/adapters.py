"""What every adapter kind shares: choosing the convolutions, key mapping, merging, counting.

Both adapter kinds (:class:`~cardiolora.lora.layers.LoRAConv` and
:class:`~cardiolora.lora.tensor_layer.TensorConv`, subclasses of
:class:`~cardiolora.lora.layers.AdapterConv`) replace the convolution at dotted name ``<name>`` by
a wrapper that keeps it as ``<name>.base``; so the plain network's ``<name>.weight`` is
``<name>.base.weight`` in the injected one (:func:`wrap_key`, :func:`unwrap_key`), and the
adapter's own keys lie below ``<name>`` too. The kind-specific parts are in
:mod:`cardiolora.lora.model` (LoRA) and :mod:`cardiolora.lora.tensor_model` (TenVOO-L).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Collection, Mapping, Sequence

import torch
from torch import nn

from cardiolora.lora.layers import BASE, AdapterConv, LoRAConv, check_supported
from cardiolora.lora.state import preview_names, state_bytes, state_problems

__all__ = [
    "ADAPTER_TYPES",
    "adapter_modules",
    "select_convs",
    "wrap_key",
    "unwrap_key",
    "base_state_dict",
    "merge_modules",
    "unmerge_modules",
    "adapter_counts",
    "load_adapter_params",
]

#: The adapter types (the bundle's ``adapter_type``, a job's ``adapter``): LoRA or TenVOO tensor networks.
ADAPTER_TYPES = ("lora", "tensor")

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


def adapter_modules(model: nn.Module) -> dict[str, nn.Module]:
    """All adapter wrappers of `model` (:class:`~cardiolora.lora.layers.AdapterConv`: LoRA and tensor).

    Args:
        model: any module.

    Returns:
        ``{name: wrapper}`` in module order; empty if the model has no adapters.
    """
    return {name: m for name, m in model.named_modules() if isinstance(m, AdapterConv)}


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
        >>> from cardiolora.lora import inject_lora
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


def merge_modules(mods: Mapping[str, nn.Module], safe: bool = True) -> None:
    """Merge every adapter wrapper of `mods` into its base weight (``W ← W + ΔW``); all or nothing.

    Shared by :func:`cardiolora.lora.merge_lora` and :func:`~cardiolora.lora.merge_tensor`.

    Args:
        mods: ``{name: wrapper}`` with ``merged``, ``merged_weight()`` and ``merge(safe)``.
        safe: first compute every merged weight and refuse if any is not finite.

    Raises:
        ValueError: if some adapter is already merged, or (`safe`) some merged weight is not
            finite; both name the modules, and no weight is changed.
    """
    merged = [n for n, m in mods.items() if m.merged]
    if merged:
        raise ValueError(f"Adapters {preview_names(merged)} are already merged.")
    if safe:
        bad = [n for n, m in mods.items() if not torch.isfinite(m.merged_weight()).all()]
        if bad:
            raise ValueError(f"Merging {preview_names(bad)} gives non-finite weights; no weight was changed.")
    for m in mods.values():
        m.merge(safe=False)


def unmerge_modules(mods: Mapping[str, nn.Module]) -> None:
    """Take every adapter of `mods` back out of its base weight (``W ← W − ΔW``); all or nothing.

    Args:
        mods: ``{name: wrapper}`` with ``merged`` and ``unmerge()``.

    Raises:
        ValueError: if some adapter is not merged (naming them); nothing is changed.
    """
    not_merged = [n for n, m in mods.items() if not m.merged]
    if not_merged:
        raise ValueError(f"Adapters {preview_names(not_merged)} are not merged; nothing to unmerge.")
    for m in mods.values():
        m.unmerge()


def adapter_counts(
    model: nn.Module, adapter_params: Sequence[torch.Tensor], adapter_state: Mapping[str, torch.Tensor]
) -> dict[str, int | float]:
    """Parameter counts and fp32 bytes of a model's adapters vs the whole network.

    Args:
        model: a model with adapters.
        adapter_params: the adapter's trainable parameters (any order).
        adapter_state: its adapter-only state dict (what a site sends).

    Returns:
        ``adapter_params``, ``base_params``, ``trainable_params``, ``adapter_bytes``,
        ``model_bytes`` and ``adapter_fraction``, as :func:`cardiolora.lora.lora_param_count` describes.
    """
    adapter_ids = {id(p) for p in adapter_params}
    params = list(model.parameters())
    adapter_bytes = state_bytes(adapter_state, torch.float32)
    model_bytes = state_bytes(base_state_dict(model), torch.float32)
    return {
        "adapter_params": sum(p.numel() for p in params if id(p) in adapter_ids),
        "base_params": sum(p.numel() for p in params if id(p) not in adapter_ids),
        "trainable_params": sum(p.numel() for p in params if p.requires_grad),
        "adapter_bytes": adapter_bytes,
        "model_bytes": model_bytes,
        "adapter_fraction": adapter_bytes / model_bytes if model_bytes else float("nan"),
    }


def load_adapter_params(
    mods: Mapping[str, nn.Module], expected: Mapping[str, torch.Tensor], state: Mapping[str, object], kind: str
) -> None:
    """Copy `state` into the adapter parameters `expected`, strictly: all or nothing.

    Args:
        mods: the adapter wrappers (none may be merged).
        expected: ``{key: parameter}`` that `state` must fill exactly.
        state: ``{key: tensor}`` as received (any floating dtype; cast to the parameters').
        kind: what to call the state dict in messages (``"LoRA"``, ``"tensor-adapter"``).

    Raises:
        ValueError: merged adapters, a `state` that is not a mapping, or keys missing /
            unexpected / not floating / of the wrong shape / non-finite (named, see
            :func:`~cardiolora.lora.state.state_problems`); nothing is loaded then.
    """
    merged = [n for n, m in mods.items() if m.merged]
    if merged:
        raise ValueError(f"Adapters {preview_names(merged)} are merged; unmerge before loading adapter weights.")
    if not isinstance(state, Mapping):
        raise ValueError(f"`state` must be a mapping of key to tensor, got {type(state).__name__}.")
    problems = state_problems(expected, state)
    if problems:
        raise ValueError(f"Cannot load the {kind} state dict; " + "; ".join(problems) + ". Nothing was loaded.")
    with torch.no_grad():
        for k, param in expected.items():
            param.copy_(state[k])
