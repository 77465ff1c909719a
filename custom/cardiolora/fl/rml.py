"""The mathematics of Rate-My-LoRA as small pure functions (He et al., arXiv 2501.03223, Alg. 1).

Notation (as in the paper): sites ``c ∈ C`` with ``|D_c|`` training cases; in round ``t`` site ``c``
trains a LoRA adapter ``(B_c, A_c)`` of rank ``r_c`` on top of the global weights ``W_{t-1}``, whose
full-size update is ``ΔW_c = s_c · B_c A_c`` (``s_c = alpha / r_c``;
:func:`cardiolora.lora.adapter_delta_from_state`). Ranks differ across sites, so everything is
aggregated on the full-size deltas, never on ``A`` and ``B`` separately.

* candidate with equal rating: ``W_{t-1} + Σ_c |D_c| ΔW_c / Σ_c |D_c|``  (:func:`candidate_coefficients`);
* Eq. 1 (rating):   ``w_t(c) = 1 − λ`` if ``∃ i: P_t^i < P_{t−1}^i`` and ``P_t^c > P_{t−1}^c``,
  else ``w_t(c) = 1``  (:func:`rate_sites`);
* Eq. 2 (update):   ``W_t = W_{t−1} + Σ_c w_t(c) |D_c| ΔW_c / Σ_c |D_c|``  (:func:`merge_coefficients`,
  :func:`apply_coefficients`);
* λ schedule:       ``λ ← 0.95 λ`` after every round, ``λ_0 = 0.2``  (:func:`lambda_at_round`).

With ``λ = 0`` every ``w_t(c) = 1`` and Eq. 2 is FedPETuning's size-weighted LoRA averaging.

Tensor adapters (a job with ``adapter: tensor``): site ``c`` sends its trained TenVOO cores ``θ_c``
instead of ``(B_c, A_c)``, and ``ΔW_c = T(θ_c) − T(θ0)`` (TenVOO Eq. 8;
:func:`cardiolora.lora.tensor_delta_from_state`), ``θ0`` redrawn from the bundle's ``tensor_seed``
(shared by server and sites, never sent). From there on everything above is unchanged: the
candidate, Eq. 1, Eq. 2 and the checksums work on the full-size ``ΔW_c`` (:func:`adapter_deltas`
tells the two kinds apart by the keys).

Server and sites call the same :func:`apply_coefficients` on the same inputs (deltas accumulated in
float64 in sorted site order, then cast once to the weights' dtype), so both hold bit-identical
``W_t``; :func:`state_checksum` lets the server verify it.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping

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
from cardiolora.lora.state import preview_names

__all__ = [
    "DEFAULT_LAMBDA0",
    "DEFAULT_DECAY",
    "DEFAULT_MAX_DELTA_RATIO",
    "size_coefficients",
    "candidate_coefficients",
    "degraded_sites",
    "rate_sites",
    "merge_coefficients",
    "lambda_at_round",
    "next_lambda",
    "adapter_deltas",
    "combine_deltas",
    "apply_delta",
    "apply_coefficients",
    "state_checksum",
    "adapter_spec",
    "validate_adapter",
]

#: λ_0 of the paper.
DEFAULT_LAMBDA0 = 0.2
#: λ ← 0.95 λ after every round.
DEFAULT_DECAY = 0.95
#: Largest accepted ``||ΔW_k|| / ||W_k||`` of one adapted module (an update larger than the weight
#: it updates is not a fine-tuning step; it is a bug or an attack).
DEFAULT_MAX_DELTA_RATIO = 1.0


def _check_sizes(sizes: Mapping[str, int]) -> None:
    if not isinstance(sizes, Mapping) or not sizes:
        raise ValueError(f"`sizes` must be a non-empty mapping site → |D_c|, got {sizes!r}.")
    bad = [f"{k}={v!r}" for k, v in sizes.items() if isinstance(v, bool) or not isinstance(v, int) or v <= 0]
    if bad:
        raise ValueError(f"`sizes` must hold positive integer case counts; bad: {preview_names(bad)}.")


def size_coefficients(sizes: Mapping[str, int]) -> dict[str, float]:
    """Size weights ``|D_c| / Σ_c' |D_c'|`` of the sites taking part in a round.

    Args:
        sizes: ``{site: |D_c|}``, positive integers, at least one site.

    Returns:
        ``{site: |D_c| / Σ|D|}`` (sums to 1).

    Raises:
        ValueError: if `sizes` is empty or holds a count that is not a positive int.

    Example:
        >>> size_coefficients({"a": 1, "b": 3})
        {'a': 0.25, 'b': 0.75}
    """
    _check_sizes(sizes)
    total = sum(sizes.values())
    return {site: n / total for site, n in sizes.items()}


def candidate_coefficients(sizes: Mapping[str, int]) -> dict[str, float]:
    """Coefficients of the candidate with equal rating (Alg. 1, step 2): ``|D_c| / Σ|D|``.

    The candidate ``W_{t-1} + Σ_c |D_c| ΔW_c / Σ_c |D_c|`` is what every site scores to give
    ``P_t^c``; it is Eq. 2 with all ``w_t(c) = 1``.

    Args:
        sizes: ``{site: |D_c|}`` of the sites whose adapters were accepted this round.

    Returns:
        ``{site: coefficient}``.

    Raises:
        ValueError: as :func:`size_coefficients`.

    Example:
        >>> candidate_coefficients({"a": 2, "b": 2})
        {'a': 0.5, 'b': 0.5}
    """
    return size_coefficients(sizes)


def _check_scores(scores: Mapping[str, float], arg: str) -> None:
    if not isinstance(scores, Mapping):
        raise ValueError(f"`{arg}` must be a mapping site → score, got {type(scores).__name__}.")
    bad = [
        f"{k}={v!r}"
        for k, v in scores.items()
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
    ]
    if bad:
        raise ValueError(f"`{arg}` must hold finite numbers; bad: {preview_names(bad)}.")


def degraded_sites(previous: Mapping[str, float], current: Mapping[str, float]) -> list[str]:
    """Sites whose score dropped: ``{i : P_t^i < P_{t-1}^i}`` (over sites with both scores).

    Args:
        previous: ``{site: P_{t-1}^c}``.
        current: ``{site: P_t^c}``; sites missing from either mapping are left out.

    Returns:
        The degraded sites, sorted.

    Raises:
        ValueError: if a score is not a finite number.

    Example:
        >>> degraded_sites({"a": 0.5, "b": 0.5}, {"a": 0.4, "b": 0.6})
        ['a']
    """
    _check_scores(previous, "previous")
    _check_scores(current, "current")
    return sorted(s for s in current if s in previous and current[s] < previous[s])


def rate_sites(
    previous: Mapping[str, float], current: Mapping[str, float], lam: float, sites: Iterable[str] | None = None
) -> dict[str, float]:
    """Eq. 1 of Rate-My-LoRA: the rating ``w_t(c)`` of every site's adapter.

    .. math::
        w_t(c) = \\begin{cases} 1 - \\lambda & \\text{if } \\exists i: P_t^i < P_{t-1}^i
        \\text{ and } P_t^c > P_{t-1}^c \\\\ 1 & \\text{otherwise} \\end{cases}

    The branches: (a) no site degraded → every ``w = 1``; (b) some site degraded and ``c``
    improved → ``w = 1 − λ`` (a site that gains while another loses is damped); (c) some site
    degraded and ``c`` did not improve (equal or lower) → ``w = 1``. A site without a current or a
    previous score (it did not answer) is neither counted as degraded nor as improved, so it gets 1.

    Args:
        previous: ``{site: P_{t-1}^c}`` (``P_0^c`` is the base model's score).
        current: ``{site: P_t^c}``, the candidate's scores this round.
        lam: ``λ`` in ``[0, 1]``.
        sites: the sites to rate (default: those of `current`).

    Returns:
        ``{site: w_t(c)}``.

    Raises:
        ValueError: if `lam` is not in ``[0, 1]`` or a score is not finite.

    Example:
        >>> rate_sites({"a": 0.5, "b": 0.5}, {"a": 0.4, "b": 0.6}, lam=0.2)
        {'a': 1.0, 'b': 0.8}
    """
    if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not 0.0 <= lam <= 1.0:
        raise ValueError(f"`lam` must be a number in [0, 1], got {lam!r}.")
    some_degraded = bool(degraded_sites(previous, current))
    names = list(current) if sites is None else list(sites)
    out: dict[str, float] = {}
    for c in names:
        improved = c in current and c in previous and current[c] > previous[c]
        out[c] = 1.0 - float(lam) if some_degraded and improved else 1.0
    return out


def merge_coefficients(sizes: Mapping[str, int], ratings: Mapping[str, float]) -> dict[str, float]:
    """Coefficients of Eq. 2: ``w_t(c) |D_c| / Σ_c' |D_c'|`` (the denominator is not re-weighted).

    Args:
        sizes: ``{site: |D_c|}`` of the sites whose adapters were accepted this round.
        ratings: ``{site: w_t(c)}`` for exactly those sites, each in ``[0, 1]``.

    Returns:
        ``{site: coefficient}``.

    Raises:
        ValueError: if `sizes` is invalid, the sites of `ratings` differ from those of `sizes`,
            or a rating is outside ``[0, 1]``.

    Example:
        >>> merge_coefficients({"a": 1, "b": 3}, {"a": 1.0, "b": 0.8})
        {'a': 0.25, 'b': 0.6000000000000001}
    """
    _check_sizes(sizes)
    if set(ratings) != set(sizes):
        raise ValueError(
            f"`ratings` must rate exactly the sites of `sizes`; sizes: {sorted(sizes)}, ratings: {sorted(ratings)}."
        )
    bad = [
        f"{k}={v!r}"
        for k, v in ratings.items()
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0
    ]
    if bad:
        raise ValueError(f"`ratings` must be numbers in [0, 1]; bad: {preview_names(bad)}.")
    base = size_coefficients(sizes)
    return {site: float(ratings[site]) * base[site] for site in sizes}


def lambda_at_round(lambda0: float, round_index: int, decay: float = DEFAULT_DECAY) -> float:
    """``λ`` used in round ``t`` (1-based): ``λ_0 · decay^(t-1)``, i.e. ``λ ← decay · λ`` per round.

    Args:
        lambda0: ``λ_0`` in ``[0, 1]`` (0.2 in the paper; 0 gives FedPETuning).
        round_index: the round ``t ≥ 1``.
        decay: the factor in ``(0, 1]`` (0.95 in the paper).

    Returns:
        ``λ_t``.

    Raises:
        ValueError: for `lambda0` outside ``[0, 1]``, `round_index` < 1 or `decay` outside ``(0, 1]``.

    Example:
        >>> round(lambda_at_round(0.2, 3), 6)
        0.1805
    """
    if isinstance(lambda0, bool) or not isinstance(lambda0, (int, float)) or not 0.0 <= lambda0 <= 1.0:
        raise ValueError(f"`lambda0` must be a number in [0, 1], got {lambda0!r}.")
    if isinstance(round_index, bool) or not isinstance(round_index, int) or round_index < 1:
        raise ValueError(f"`round_index` must be an int >= 1, got {round_index!r}.")
    if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0.0 < decay <= 1.0:
        raise ValueError(f"`decay` must be a number in (0, 1], got {decay!r}.")
    return float(lambda0) * float(decay) ** (round_index - 1)


def next_lambda(lam: float, decay: float = DEFAULT_DECAY) -> float:
    """One step of the schedule: ``λ ← decay · λ``.

    Args:
        lam: the current ``λ`` in ``[0, 1]``.
        decay: the factor in ``(0, 1]``.

    Returns:
        ``decay · λ``.

    Raises:
        ValueError: for values out of range.

    Example:
        >>> next_lambda(0.2)
        0.19
    """
    if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not 0.0 <= lam <= 1.0:
        raise ValueError(f"`lam` must be a number in [0, 1], got {lam!r}.")
    if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0.0 < decay <= 1.0:
        raise ValueError(f"`decay` must be a number in (0, 1], got {decay!r}.")
    return float(decay) * float(lam)


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
    problems: list[str] = []
    missing = [k for k in spec if k not in state]
    unexpected = [str(k) for k in state if k not in spec]
    if missing:
        problems.append(f"missing keys: {preview_names(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {preview_names(unexpected)}")
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
