"""Adapter state dicts without a model: the server's side of LoRA.

The server of a federation never builds the network to merge adapters: it turns a site's
adapter-only state dict into full-size weight deltas (:func:`adapter_delta_from_state`) and
counts the bytes a state dict takes on the wire (:func:`state_bytes`). The key naming scheme is
:mod:`cardiolora.lora.model`'s.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import torch

from cardiolora.lora.layers import LOCAL_SUFFIX, LORA_A, LORA_B, LORA_B_TRANSPOSED, lora_delta

__all__ = [
    "adapter_delta_from_state",
    "local_delta_from_state",
    "state_bytes",
    "state_problems",
    "key_problems",
    "preview_names",
    "ADAPTER_SUFFIXES",
    "LOCAL_ADAPTER_SUFFIXES",
]

#: State-dict key suffix of each adapter factor → the factor's name.
ADAPTER_SUFFIXES: dict[str, str] = {
    f".{LORA_A}.weight": LORA_A,
    f".{LORA_B}.weight": LORA_B,
    f".{LORA_B_TRANSPOSED}.weight": LORA_B_TRANSPOSED,
}

#: State-dict key suffix of each factor of a dual adapter's *local* pair → the global factor's suffix.
LOCAL_ADAPTER_SUFFIXES: dict[str, str] = {
    f".{part}{LOCAL_SUFFIX}.weight": f".{part}.weight" for part in (LORA_A, LORA_B, LORA_B_TRANSPOSED)
}


def preview_names(names: Iterable[str], limit: int = 8) -> str:
    """Comma-separated names, the first `limit` of them, with a count of the rest."""
    names = list(names)
    shown = ", ".join(names[:limit])
    return shown + (f", ... (+{len(names) - limit} more)" if len(names) > limit else "")


def key_problems(expected: Iterable[str], state: Mapping[str, object]) -> list[str]:
    """The key-set problems of `state` against the keys `expected`: missing and unexpected keys, named.

    Example:
        >>> key_problems(["a", "b"], {"b": 0, "c": 0})
        ['missing keys: a', 'unexpected keys: c']
    """
    expected = list(expected)
    known = set(expected)
    missing = [k for k in expected if k not in state]
    unexpected = [str(k) for k in state if k not in known]
    return ([f"missing keys: {preview_names(missing)}"] if missing else []) + (
        [f"unexpected keys: {preview_names(unexpected)}"] if unexpected else []
    )


def state_problems(expected: Mapping[str, torch.Tensor], state: Mapping[str, object]) -> list[str]:
    """What keeps `state` from loading into the tensors `expected` (empty if nothing does).

    Checks the key sets (missing, unexpected), that values are floating-point tensors, their
    shapes (expected vs got) and that they are finite.

    Args:
        expected: ``{key: tensor}`` the state must fill.
        state: ``{key: tensor}`` as received.

    Returns:
        One message per kind of problem, naming the keys.

    Example:
        >>> state_problems({"w": torch.zeros(2)}, {"w": torch.zeros(3)})
        ['wrong shapes: w (expected (2,), got (3,))']
    """
    problems = key_problems(expected, state)
    present = [k for k in expected if k in state]
    not_tensor = [k for k in present if not isinstance(state[k], torch.Tensor) or not state[k].is_floating_point()]
    if not_tensor:
        problems.append(f"not floating-point tensors: {preview_names(not_tensor)}")
    tensors = [k for k in present if k not in not_tensor]
    wrong_shape = [
        f"{k} (expected {tuple(expected[k].shape)}, got {tuple(state[k].shape)})"
        for k in tensors
        if state[k].shape != expected[k].shape
    ]
    if wrong_shape:
        problems.append(f"wrong shapes: {preview_names(wrong_shape)}")
    non_finite = [k for k in tensors if not torch.isfinite(state[k]).all()]
    if non_finite:
        problems.append(f"non-finite values: {preview_names(non_finite)}")
    return problems


def _check_scaling(value: object, arg: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"`{arg}` must be a finite number > 0, got {value!r}.")
    return float(value)


def adapter_delta_from_state(
    state: Mapping[str, torch.Tensor], scaling: float | Mapping[str, float]
) -> dict[str, torch.Tensor]:
    """Full-size deltas from an adapter-only state dict, without a model (the server's side).

    For each module ``<name>`` with ``<name>.lora_A.weight`` and either ``<name>.lora_B.weight``
    (regular conv: A ``[r, in, *k]``, B ``[out, r, 1, ..]``) or ``<name>.lora_B_T.weight``
    (transposed conv: A ``[r, in, 1, ..]``, B ``[r, out, *k]``)::

        conv:        ΔW[o, i, k] = s · Σ_r B[o, r] · A[r, i, k]
        transposed:  ΔW[i, o, k] = s · Σ_r A[r, i] · B[r, o, k]

    with ``s = alpha / r`` (Rate-My-LoRA: the server aggregates these full-size deltas, since the
    ranks differ across sites). The kind comes from the key, not the shapes: the two B layouts
    coincide in shape for a 1×1 kernel and ``out == r``. The same :func:`lora_delta` as in
    :meth:`LoRAConv.delta_weight` is used, so the result equals :func:`lora_delta_state_dict`.

    Args:
        state: adapter-only state dict as made by :func:`lora_state_dict`.
        scaling: ``alpha / r`` for every module, or ``{module name: alpha / r}`` covering exactly
            the modules in `state` (see :func:`lora_scalings`).

    Returns:
        ``{"<name>.weight": ΔW}`` in the order the modules first appear in `state`, on the inputs'
        device and dtype.

    Raises:
        ValueError: naming the keys for: keys that are not adapter keys, a module without exactly
            one A and one B, values that are not floating tensors or not finite, shapes that do not
            form an adapter (with the shapes), a bad `scaling` or a `scaling` mapping whose modules
            differ from those of `state`.

    Example:
        >>> state = {"up.lora_A.weight": torch.ones(2, 3, 1, 1), "up.lora_B_T.weight": torch.ones(2, 5, 2, 2)}
        >>> adapter_delta_from_state(state, 1.0)["up.weight"].shape
        torch.Size([3, 5, 2, 2])
    """
    if not isinstance(state, Mapping):
        raise ValueError(f"`state` must be a mapping of key to tensor, got {type(state).__name__}.")
    parts: dict[str, dict[str, torch.Tensor]] = {}
    unknown: list[str] = []
    for key, value in state.items():
        for suffix, part in ADAPTER_SUFFIXES.items():
            if isinstance(key, str) and key.endswith(suffix) and len(key) > len(suffix):
                parts.setdefault(key[: -len(suffix)], {})[part] = value
                break
        else:
            unknown.append(str(key))
    if unknown:
        raise ValueError(
            f"`state` has keys that are not adapter keys (<name>.lora_A.weight, <name>.lora_B.weight, "
            f"<name>.lora_B_T.weight): {preview_names(unknown)}."
        )
    if not parts:
        raise ValueError("`state` holds no adapter.")
    incomplete = [n for n, p in parts.items() if LORA_A not in p or (LORA_B in p) == (LORA_B_TRANSPOSED in p)]
    if incomplete:
        raise ValueError(f"`state`: modules without exactly one A and one B: {preview_names(incomplete)}.")
    bad_values = [
        k
        for k, v in state.items()
        if not isinstance(v, torch.Tensor) or not v.is_floating_point() or not torch.isfinite(v).all()
    ]
    if bad_values:
        raise ValueError(f"`state`: not finite floating-point tensors: {preview_names(bad_values)}.")

    if isinstance(scaling, Mapping):
        extra = [str(n) for n in scaling if n not in parts]
        absent = [n for n in parts if n not in scaling]
        if extra or absent:
            raise ValueError(
                f"`scaling` must name exactly the modules of `state`; missing: {preview_names(absent) or 'none'}; "
                f"unexpected: {preview_names(extra) or 'none'}."
            )
        scales = {n: _check_scaling(scaling[n], f"scaling[{n!r}]") for n in parts}
    else:
        s = _check_scaling(scaling, "scaling")
        scales = dict.fromkeys(parts, s)

    out: dict[str, torch.Tensor] = {}
    for name, p in parts.items():
        transposed = LORA_B_TRANSPOSED in p
        b_part = LORA_B_TRANSPOSED if transposed else LORA_B
        try:
            delta = lora_delta(p[LORA_A], p[b_part], scales[name], transposed)
        except ValueError as err:
            raise ValueError(f"`state`: `{name}.{LORA_A}.weight` and `{name}.{b_part}.weight`: {err}") from err
        out[f"{name}.weight"] = delta
    return out


def state_bytes(state: Mapping[str, torch.Tensor], dtype: torch.dtype | None = None) -> int:
    """Bytes of the tensors of a state dict: ``Σ numel · itemsize``.

    Args:
        state: ``{key: tensor}``.
        dtype: if given, floating-point tensors are counted at this dtype's size (e.g.
            ``torch.float32`` for "fp32 bytes"); other tensors at their own size.

    Returns:
        The number of bytes of the raw tensor data (no container overhead).

    Raises:
        ValueError: naming the keys whose values are not tensors.

    Example:
        >>> state_bytes({"w": torch.zeros(2, 3, dtype=torch.float16)}, dtype=torch.float32)
        24
    """
    not_tensor = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if not_tensor:
        raise ValueError(f"`state`: values are not tensors for keys {preview_names(not_tensor)}.")
    size = torch.tensor([], dtype=dtype).element_size() if dtype is not None else None
    return sum(
        v.numel() * (size if size is not None and v.is_floating_point() else v.element_size()) for v in state.values()
    )


def local_delta_from_state(
    state: Mapping[str, torch.Tensor], scaling: float | Mapping[str, float]
) -> dict[str, torch.Tensor]:
    """Full-size deltas of a dual adapter's local pairs: ``ΔW_local = s_l · B_l A_l``, keyed ``<name>.weight``.

    The local pair has the global pair's layout, so this is :func:`adapter_delta_from_state` on the
    keys with ``_local`` taken off (``<name>.lora_A_local.weight`` → ``<name>.lora_A.weight``).

    Args:
        state: the local pairs (:func:`cardiolora.lora.lora_local_state_dict`).
        scaling: ``alpha_l / r_l`` for every module, or ``{module: alpha_l / r_l}``.

    Returns:
        ``{"<name>.weight": ΔW_local}``.

    Raises:
        ValueError: naming keys that are not local adapter keys, or as :func:`adapter_delta_from_state`.

    Example:
        >>> s = {"c.lora_A_local.weight": torch.ones(1, 2, 1, 1), "c.lora_B_local.weight": torch.ones(3, 1, 1, 1)}
        >>> local_delta_from_state(s, 1.0)["c.weight"].shape
        torch.Size([3, 2, 1, 1])
    """
    renamed: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for key, value in state.items():
        suffix = next((s for s in LOCAL_ADAPTER_SUFFIXES if isinstance(key, str) and key.endswith(s)), None)
        if suffix is None or len(key) == len(suffix):
            unknown.append(str(key))
            continue
        renamed[key[: -len(suffix)] + LOCAL_ADAPTER_SUFFIXES[suffix]] = value
    if unknown:
        raise ValueError(
            f"`state` has keys that are not local adapter keys (<name>.lora_A_local.weight, "
            f"<name>.lora_B_local.weight, <name>.lora_B_T_local.weight): {preview_names(unknown)}."
        )
    return adapter_delta_from_state(renamed, scaling)
