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
  :func:`cardiolora.fl.updates.apply_coefficients`);
* λ schedule:       ``λ ← 0.95 λ`` after every round, ``λ_0 = 0.2``  (:func:`lambda_at_round`).

With ``λ = 0`` every ``w_t(c) = 1`` and Eq. 2 is FedPETuning's size-weighted LoRA averaging.

Tensor adapters (a job with ``adapter: tensor``): site ``c`` sends its trained TenVOO cores ``θ_c``
instead of ``(B_c, A_c)``, and ``ΔW_c = T(θ_c) − T(θ0)`` (TenVOO Eq. 8;
:func:`cardiolora.lora.tensor_delta_from_state`), ``θ0`` redrawn from the bundle's ``tensor_seed``
(shared by server and sites, never sent). From there on everything above is unchanged: the
candidate, Eq. 1, Eq. 2 and the checksums work on the full-size ``ΔW_c`` (:func:`cardiolora.fl.updates.adapter_deltas`
tells the two kinds apart by the keys).

Here are the rating and the coefficients; applying them to the weights — the full-size deltas,
``W_t``, the checksums server and sites compare, the checks an adapter passes before it is merged —
is :mod:`cardiolora.fl.updates`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from cardiolora.lora.state import preview_names

__all__ = [
    "DEFAULT_LAMBDA0",
    "DEFAULT_DECAY",
    "size_coefficients",
    "candidate_coefficients",
    "degraded_sites",
    "rate_sites",
    "merge_coefficients",
    "lambda_at_round",
    "next_lambda",
]

#: λ_0 of the paper.
DEFAULT_LAMBDA0 = 0.2
#: λ ← 0.95 λ after every round.
DEFAULT_DECAY = 0.95


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
