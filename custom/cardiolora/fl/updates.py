"""The weight update of a federated round on full-size deltas, and the checks an adapter passes first.

A site's adapter becomes its full-size update ``ΔW_c`` (:func:`adapter_deltas`: LoRA
``ΔW_c = s_c · B_c A_c``, :func:`cardiolora.lora.adapter_delta_from_state`; TenVOO cores
``ΔW_c = T(θ_c) − T(θ0)``, :func:`cardiolora.lora.tensor_delta_from_state`, ``θ0`` from the
bundle's ``tensor_seed``). With coefficients ``a_c`` from :mod:`cardiolora.fl.rml` — the candidate's
``|D_c| / Σ|D|`` or Eq. 2's ``w_t(c) |D_c| / Σ|D|`` — the new weights are

    ``W_t = W_{t−1} + Σ_c a_c ΔW_c``  (:func:`combine_deltas`, :func:`apply_delta`, :func:`apply_coefficients`).

Server and sites call the same :func:`apply_coefficients` on the same inputs (deltas accumulated in
float64 in sorted site order, then cast once to the weights' dtype), so both hold bit-identical
``W_t``; :func:`state_checksum` lets the server verify it. Before anything is merged the server
checks each adapter against the network's (:func:`adapter_spec`, :func:`validate_adapter`: keys,
shapes, finite values, ``‖ΔW_k‖ / ‖W_k‖ ≤`` :data:`DEFAULT_MAX_DELTA_RATIO`).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping

import torch
from torch import nn

from cardiolora.fl.protocol import adapter_kind
from cardiolora.lora import (
    adapter_delta_from_state,
    lora_modules,
    lora_state_dict,
    tensor_delta_from_state,
    tensor_modules,
    tensor_state_dict,
)
from cardiolora.lora.state import key_problems, preview_names

__all__ = [
    "DEFAULT_MAX_DELTA_RATIO",
    "adapter_deltas",
    "combine_deltas",
    "apply_delta",
    "apply_coefficients",
    "state_checksum",
    "adapter_spec",
    "validate_adapter",
]

#: Largest accepted ``||ΔW_k|| / ||W_k||`` of one adapted module (an update larger than the weight
#: it updates is not a fine-tuning step; it is a bug or an attack).
DEFAULT_MAX_DELTA_RATIO = 1.0


def _state_kind(state: Mapping[str, object]) -> str:
    """``"tensor"`` if every key of `state` is a tensor-adapter key, else ``"lora"`` (its checks name other keys)."""
    return "tensor" if state and all(adapter_kind(k) == "tensor" for k in state) else "lora"


def adapter_deltas(
    adapters: Mapping[str, Mapping[str, torch.Tensor]],
    scalings: Mapping[str, float | Mapping[str, float]],
    tensor_seed: int | None = None,
) -> dict[str, dict[str, torch.Tensor]]:
    """Full-size float64 deltas ``ΔW_c`` of every site's adapter.

    LoRA (keys ``<name>.lora_A.weight``, ``<name>.lora_B[_T].weight``): ``ΔW_c = s_c · B_c A_c``
    with ``s_c = scalings[c]``. Tensor adapters (keys ``<name>.tenvoo[_T].<core>``):
    ``ΔW_c = T(θ_c) − T(θ0)`` (TenVOO Eq. 8) with ``θ0`` drawn from `tensor_seed`; no scaling.

    Args:
        adapters: ``{site: adapter-only state dict}`` (LoRA or tensor cores; one kind per site).
        scalings: ``{site: alpha / r}`` (a number, or ``{module: alpha / r}``) for every LoRA site
            of `adapters` (tensor sites need none; an entry for them is ignored).
        tensor_seed: the bundle's ``tensor_seed``; required if some site sent tensor cores.

    Returns:
        ``{site: {"<name>.weight": ΔW}}`` in float64 on the CPU.

    Raises:
        ValueError: if a LoRA site has no scaling, tensor cores come without `tensor_seed`, or an
            adapter is malformed (the message names the site).
    """
    kinds = {site: _state_kind(adapters[site]) for site in sorted(adapters)}
    missing = [s for s, k in kinds.items() if k == "lora" and s not in scalings]
    if missing:
        raise ValueError(f"`scalings` has no entry for sites {preview_names(missing)}.")
    if tensor_seed is None and "tensor" in kinds.values():
        raise ValueError("tensor-adapter cores need the bundle's `tensor_seed` (θ0); none was given.")
    out: dict[str, dict[str, torch.Tensor]] = {}
    for site, kind in kinds.items():
        state = {k: torch.as_tensor(v).detach().cpu().to(torch.float64) for k, v in adapters[site].items()}
        try:
            if kind == "tensor":
                out[site] = tensor_delta_from_state(state, tensor_seed)
            else:
                out[site] = adapter_delta_from_state(state, scalings[site])
        except ValueError as err:
            raise ValueError(f"{site}: {err}") from err
    return out


def combine_deltas(
    deltas: Mapping[str, Mapping[str, torch.Tensor]], coefficients: Mapping[str, float]
) -> dict[str, torch.Tensor]:
    """``Σ_c a_c ΔW_c`` in float64, summed in sorted site order (deterministic).

    Args:
        deltas: ``{site: {key: ΔW}}``.
        coefficients: ``{site: a_c}`` for sites of `deltas` (sites absent here are skipped;
            a coefficient for a site without deltas is an error).

    Returns:
        ``{key: Σ a_c ΔW_c}`` over the union of keys (float64); empty when no coefficient is non-zero.

    Raises:
        ValueError: if a coefficient names a site without deltas, is not finite, or two sites
            give one key different shapes.
    """
    unknown = [s for s in coefficients if s not in deltas]
    if unknown:
        raise ValueError(f"`coefficients` name sites without deltas: {preview_names(unknown)}.")
    out: dict[str, torch.Tensor] = {}
    for site in sorted(coefficients):
        a = coefficients[site]
        if isinstance(a, bool) or not isinstance(a, (int, float)) or not math.isfinite(a):
            raise ValueError(f"coefficient of {site} must be a finite number, got {a!r}.")
        if a == 0:
            continue
        for key, delta in deltas[site].items():
            d = delta.to(torch.float64)
            if key in out:
                if out[key].shape != d.shape:
                    raise ValueError(f"{site}: `{key}` has shape {tuple(d.shape)}, others {tuple(out[key].shape)}.")
                out[key] = out[key] + float(a) * d
            else:
                out[key] = float(a) * d
    return out


def apply_delta(weights: Mapping[str, torch.Tensor], delta: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``W + Δ`` for the keys of Δ (computed in float64, cast once to each weight's dtype).

    Args:
        weights: the plain network's state dict ``W``.
        delta: ``{key: Δ}`` with keys of `weights` and the same shapes.

    Returns:
        A new state dict (keys and order of `weights`); keys not in `delta` are cloned unchanged.

    Raises:
        ValueError: naming keys of `delta` that are not in `weights`, have another shape, or
            would give non-finite weights.
    """
    unknown = [k for k in delta if k not in weights]
    if unknown:
        raise ValueError(f"`delta` has keys that are not weights: {preview_names(unknown)}.")
    wrong = [
        f"{k} (weight {tuple(weights[k].shape)}, delta {tuple(v.shape)})"
        for k, v in delta.items()
        if tuple(weights[k].shape) != tuple(v.shape)
    ]
    if wrong:
        raise ValueError(f"`delta` shapes do not match the weights: {preview_names(wrong)}.")
    out: dict[str, torch.Tensor] = {}
    for key, w in weights.items():
        w = torch.as_tensor(w).detach().cpu()
        if key in delta:
            new = (w.to(torch.float64) + delta[key].to(torch.float64)).to(w.dtype)
            if not torch.isfinite(new).all():
                raise ValueError(f"`{key}`: W + Δ is not finite; the update is refused.")
            out[key] = new
        else:
            out[key] = w.clone()
    return out


def apply_coefficients(
    weights: Mapping[str, torch.Tensor],
    adapters: Mapping[str, Mapping[str, torch.Tensor]],
    scalings: Mapping[str, float | Mapping[str, float]],
    coefficients: Mapping[str, float],
    tensor_seed: int | None = None,
) -> dict[str, torch.Tensor]:
    """``W + Σ_c a_c · ΔW_c``: the candidate (``a_c = |D_c|/Σ|D|``) or Eq. 2 (``a_c = w_t(c)|D_c|/Σ|D|``).

    ``ΔW_c = s_c B_c A_c`` for LoRA, ``T(θ_c) − T(θ0)`` for tensor cores (:func:`adapter_deltas`).

    Server and sites call this same function on the same inputs, which is what keeps their
    ``W_t`` bit-identical (checked with :func:`state_checksum`). With no non-zero coefficient (all
    adapters rejected) the result equals `weights`.

    Args:
        weights: plain state dict ``W_{t-1}``.
        adapters: ``{site: adapter-only state dict}``.
        scalings: ``{site: alpha / r}`` (LoRA sites).
        coefficients: ``{site: a_c}`` over sites of `adapters`.
        tensor_seed: the bundle's ``tensor_seed`` when the adapters are tensor cores.

    Returns:
        The new plain state dict.

    Raises:
        ValueError: from :func:`adapter_deltas`, :func:`combine_deltas` or :func:`apply_delta`.

    Example:
        >>> w = {"0.weight": torch.zeros(2, 1, 1, 1)}
        >>> ad = {"a": {"0.lora_A.weight": torch.ones(1, 1, 1, 1), "0.lora_B.weight": torch.ones(2, 1, 1, 1)}}
        >>> apply_coefficients(w, ad, {"a": 1.0}, {"a": 0.5})["0.weight"].flatten().tolist()
        [0.5, 0.5]
    """
    used = {s: a for s, a in coefficients.items() if a != 0}
    if not used:
        return {k: torch.as_tensor(v).detach().cpu().clone() for k, v in weights.items()}
    deltas = adapter_deltas({s: adapters[s] for s in used if s in adapters}, scalings, tensor_seed)
    return apply_delta(weights, combine_deltas(deltas, used))


def state_checksum(state: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 of a state dict: sorted keys, each with its dtype, shape and raw bytes.

    Args:
        state: ``{key: tensor}`` (torch tensors or numpy arrays).

    Returns:
        The hex digest; equal for bit-identical state dicts whatever their key order.

    Raises:
        ValueError: if a value is not a tensor or array.

    Example:
        >>> state_checksum({"a": torch.zeros(2)}) == state_checksum({"a": torch.zeros(2)})
        True
    """
    h = hashlib.sha256()
    for key in sorted(state):
        value = state[key]
        try:
            t = torch.as_tensor(value).detach().cpu().contiguous()
        except (TypeError, RuntimeError) as err:
            raise ValueError(f"`{key}` is not a tensor ({type(value).__name__}).") from err
        if t.dtype == torch.bool:
            t = t.to(torch.uint8)
        h.update(key.encode())
        h.update(f"|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def adapter_spec(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """The expected adapter keys and shapes of a network with adapters (what a site must send).

    Args:
        model: a network with LoRA adapters (e.g. the bundle's ``network_def`` with ``lora_rank``)
            or with tensor adapters (``adapter_type: tensor``).

    Returns:
        ``{key: shape}`` of :func:`cardiolora.lora.lora_state_dict` or
        :func:`cardiolora.lora.tensor_state_dict`.

    Raises:
        ValueError: if `model` has no adapters.
    """
    if lora_modules(model):
        return {k: tuple(v.shape) for k, v in lora_state_dict(model).items()}
    if tensor_modules(model):
        return {k: tuple(v.shape) for k, v in tensor_state_dict(model).items()}
    raise ValueError(
        "`model` has no LoRA adapters (nor tensor adapters); "
        "build it with lora_rank > 0 (or adapter_type 'tensor' with tensor_rank > 0)."
    )


def validate_adapter(
    state: Mapping[str, object],
    spec: Mapping[str, tuple[int, ...]],
    weights: Mapping[str, torch.Tensor],
    scaling: float | Mapping[str, float],
    max_delta_ratio: float = DEFAULT_MAX_DELTA_RATIO,
    site: str = "site",
    rank: int | None = None,
    dtype: torch.dtype | None = None,
    tensor_seed: int | None = None,
) -> dict[str, torch.Tensor]:
    """Check an adapter that arrived from a site; return its full-size float64 deltas.

    Checks, all reported together: the key set equals `spec` (the site's rank and the known
    module list), every value is a floating tensor of the expected shape with finite values, and
    for every adapted module ``||ΔW_k||_F / ||W_k||_F ≤ max_delta_ratio``.

    Args:
        state: the adapter-only state dict as received (torch tensors or numpy arrays).
        spec: ``{key: shape}`` expected for this site's rank (:func:`adapter_spec`).
        weights: the current plain global weights ``W_{t-1}`` (for the norm check).
        scaling: ``alpha / r`` of the site's adapters (LoRA; ignored for tensor cores).
        max_delta_ratio: largest accepted ``||ΔW_k|| / ||W_k||``, > 0.
        site: the site's name for the message.
        rank: the site's rank for the message.
        dtype: if given, the dtype every tensor must arrive in (the job's transport dtype).
        tensor_seed: the bundle's ``tensor_seed`` (θ0) when `spec` is of tensor cores.

    Returns:
        ``{"<name>.weight": ΔW}`` in float64.

    Raises:
        ValueError: saying what was expected and what came: missing / unexpected keys, values
            that are not floating tensors, a dtype other than `dtype`, wrong shapes (expected vs
            got), non-finite values, modules whose update is too large (ratio vs limit).
    """
    if isinstance(max_delta_ratio, bool) or not isinstance(max_delta_ratio, (int, float)) or max_delta_ratio <= 0:
        raise ValueError(f"`max_delta_ratio` must be a number > 0, got {max_delta_ratio!r}.")
    what = f"{site}: adapter rejected" + (f" (rank {rank})" if rank is not None else "")
    n_modules = len({k.rsplit(".", 2)[0] for k in spec})
    parts = "A and B" if all(adapter_kind(k) == "lora" for k in spec) else "the tensor cores"
    expected = f"expected {len(spec)} adapter tensors ({parts} of {n_modules} modules)"
    if not isinstance(state, Mapping):
        raise ValueError(f"{what}: {expected}, got a {type(state).__name__}.")
    problems = key_problems(spec, state)
    tensors: dict[str, torch.Tensor] = {}
    not_float: list[str] = []
    for k in spec:
        if k not in state:
            continue
        try:
            t = torch.as_tensor(state[k]).detach().cpu()
        except (TypeError, RuntimeError, ValueError):
            not_float.append(f"{k} ({type(state[k]).__name__})")
            continue
        if not t.is_floating_point():
            not_float.append(f"{k} ({t.dtype})")
            continue
        tensors[k] = t
    if not_float:
        problems.append(f"not floating-point tensors: {preview_names(not_float)}")
    wrong_dtype = [f"{k} ({t.dtype})" for k, t in tensors.items() if dtype is not None and t.dtype != dtype]
    if wrong_dtype:
        problems.append(f"not in the transport dtype {dtype}: {preview_names(wrong_dtype)}")
    wrong = [
        f"{k} (expected {tuple(spec[k])}, got {tuple(t.shape)})"
        for k, t in tensors.items()
        if tuple(t.shape) != tuple(spec[k])
    ]
    if wrong:
        problems.append(f"wrong shapes: {preview_names(wrong)}")
    non_finite = [k for k, t in tensors.items() if not torch.isfinite(t).all()]
    if non_finite:
        problems.append(f"non-finite values: {preview_names(non_finite)}")
    if problems:
        raise ValueError(f"{what}: {expected}; got {len(state)} tensors; " + "; ".join(problems) + ".")

    deltas = adapter_deltas({site: tensors}, {site: scaling}, tensor_seed)[site]
    too_large = []
    for key, delta in deltas.items():
        if key not in weights:
            too_large.append(f"{key} (no such weight)")
            continue
        w_norm = float(torch.linalg.vector_norm(torch.as_tensor(weights[key]).to(torch.float64)))
        d_norm = float(torch.linalg.vector_norm(delta))
        ratio = d_norm / max(w_norm, 1e-12)
        if not ratio <= max_delta_ratio:
            too_large.append(f"{key} ({ratio:.3g})")
    if too_large:
        raise ValueError(
            f"{what}: expected ||ΔW||/||W|| <= {max_delta_ratio} for every module; got larger for "
            f"{preview_names(too_large)}."
        )
    return deltas
