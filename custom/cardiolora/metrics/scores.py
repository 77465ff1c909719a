"""Scores of label maps: every metric of every structure of a case, and their aggregation over cases.

:func:`segmentation_scores` gives Dice, VOE, HD, HD95 and ASSD (:data:`METRICS`) of LV, MYO and
RV and their NaN-aware mean; :func:`aggregate_scores` gives the NaN-aware mean and standard
deviation of each over cases, with the number ``n`` of finite values each is taken over.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from cardiolora.labels import STRUCTURE_NAMES, STRUCTURES
from cardiolora.metrics.distances import directed_distances, distance_scores
from cardiolora.metrics.inputs import as_label, check_pair, check_spacing
from cardiolora.metrics.overlap import dice_voe

__all__ = ["METRICS", "segmentation_scores", "aggregate_scores"]

#: The metric keys of every per-structure score dict, in the order the paper reports them.
METRICS: tuple[str, ...] = ("dice", "voe", "hd", "hd95", "assd")


def _nan_mean_std(values: Sequence[float], ddof: int = 0) -> tuple[float, float, int]:
    """NaN-aware mean, standard deviation and count of the finite values (no warnings)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    n = int(v.size)
    mean = float(v.mean()) if n else float("nan")
    std = float(v.std(ddof=ddof)) if n > ddof else float("nan")
    return mean, std, n


def _check_structures(structures: Sequence[int]) -> tuple[int, ...]:
    """Return `structures` as a tuple of known foreground labels without repeats."""
    st = tuple(int(s) for s in structures)
    if not st:
        raise ValueError("`structures` must name at least one structure, got an empty sequence.")
    unknown = [s for s in st if s not in STRUCTURE_NAMES]
    if unknown or len(set(st)) != len(st):
        raise ValueError(
            f"`structures` must be distinct labels among {sorted(STRUCTURE_NAMES)} "
            f"({', '.join(STRUCTURE_NAMES.values())}), got {list(st)}."
        )
    return st


def segmentation_scores(
    pred_label: Any,
    gt_label: Any,
    spacing: Sequence[float],
    structures: Sequence[int] = STRUCTURES,
) -> dict[str, dict[str, Any]]:
    """Dice, VOE, HD, HD95 and ASSD of every structure of a label map, and their mean.

    Each structure :math:`k` is scored on the masks :math:`A = \\{\\hat y = k\\}`,
    :math:`B = \\{y = k\\}` with the definitions of :mod:`cardiolora.metrics.overlap` and
    :mod:`cardiolora.metrics.distances` (HD95 is the 95th percentile of the pooled symmetric
    surface distances). The ``"mean"`` entry is, per metric,
    the NaN-aware mean over the structures, :math:`\\bar m = \\frac{1}{n} \\sum_{k:\\, m_k
    \\text{ finite}} m_k`, with :math:`n` reported in ``"mean"]["n"]``.

    Args:
        pred_label: predicted label map, 2D ``(Y, X)`` or 3D ``(Z, Y, X)``, values 0..3
            (0 background, 1 LV, 2 MYO, 3 RV); numpy array or torch tensor.
        gt_label: ground-truth label map of the same shape.
        spacing: voxel spacing in mm in the arrays' axis order (``spacing_zyx`` for volumes).
        structures: foreground labels to score, by default ``STRUCTURES`` = (LV, MYO, RV).

    Returns:
        ``{name: {"dice", "voe", "hd", "hd95", "assd", "both_empty"}, ..., "mean": {"dice",
        "voe", "hd", "hd95", "assd", "n"}}`` keyed by ``STRUCTURE_NAMES`` (``"LV"``, ``"MYO"``,
        ``"RV"``); metric values are floats (distances in mm, VOE in %), ``both_empty`` is a bool,
        ``n`` maps each metric to the number of finite values the mean is over.

    Raises:
        ValueError: on a shape mismatch (both shapes named), arrays that are not 2D / 3D, label
            values outside 0..3, a `spacing` of the wrong length or with non-positive values, or
            unknown / repeated `structures`.

    Example:
        >>> gt = np.zeros((8, 8), dtype=np.uint8); gt[2:6, 2:6] = 1
        >>> s = segmentation_scores(gt, gt, (1.0, 1.0))
        >>> s["LV"]["dice"], s["LV"]["hd"], s["RV"]["both_empty"], s["mean"]["n"]["hd"]
        (1.0, 0.0, True, 3)
    """
    pred = as_label(pred_label, "pred_label")
    gt = as_label(gt_label, "gt_label")
    check_pair(pred, gt, ("pred_label", "gt_label"))
    s = check_spacing(spacing, pred.ndim)
    st = _check_structures(structures)

    out: dict[str, dict[str, Any]] = {}
    for k in st:
        a, b = pred == k, gt == k
        both_empty = not a.any() and not b.any()
        d, v = dice_voe(a, b)
        if a.any() and b.any():
            d_ab, d_ba = directed_distances(a, b, s)
        elif both_empty:
            d_ab = d_ba = np.zeros(0)
        else:
            d_ab, d_ba = np.full(1, np.nan), np.zeros(0)
        hd, hd95, mean_d = distance_scores(d_ab, d_ba, (100.0, 95.0))
        out[STRUCTURE_NAMES[k]] = {
            "dice": d,
            "voe": v,
            "hd": hd,
            "hd95": hd95,
            "assd": mean_d,
            "both_empty": both_empty,
        }
    mean: dict[str, Any] = {"n": {}}
    for m in METRICS:
        mean[m], _, mean["n"][m] = _nan_mean_std([out[STRUCTURE_NAMES[k]][m] for k in st])
    out["mean"] = mean
    return out


def aggregate_scores(
    scores: Sequence[Mapping[str, Mapping[str, Any]]], ddof: int = 0
) -> dict[str, dict[str, dict[str, float | int]]]:
    """NaN-aware mean and standard deviation over cases of `segmentation_scores` results.

    For every entry (structure name or ``"mean"``) and metric :math:`m` with finite values
    :math:`m_1..m_n` over the cases:

    .. math:: \\mu = \\frac{1}{n} \\sum_i m_i, \\qquad
        \\sigma = \\sqrt{\\frac{1}{n - \\mathrm{ddof}} \\sum_i (m_i - \\mu)^2}

    NaNs (metrics undefined because exactly one mask was empty) are skipped; ``n`` counts the
    finite values. The ``"mean"`` entry aggregates the per-case means over structures. A
    metric with no finite value (or ``n <= ddof`` for the std) gives NaN, without warnings.

    Args:
        scores: one `segmentation_scores` dict per case, all with the same structure keys.
        ddof: delta degrees of freedom of the standard deviation: 0 (population, default) or 1
            (sample).

    Returns:
        ``{name: {metric: {"mean": float, "std": float, "n": int}}}`` for the structure names of
        the inputs and ``"mean"``, metrics ``METRICS``.

    Raises:
        ValueError: if `scores` is empty, the cases have different keys, an entry lacks a
            metric, or `ddof` is not 0 or 1.

    Example:
        >>> gt = np.zeros((8, 8), dtype=np.uint8); gt[2:6, 2:6] = 1
        >>> agg = aggregate_scores([segmentation_scores(gt, gt, (1.0, 1.0))] * 2)
        >>> agg["LV"]["dice"]
        {'mean': 1.0, 'std': 0.0, 'n': 2}
    """
    if ddof not in (0, 1):
        raise ValueError(f"`ddof` must be 0 or 1, got {ddof}.")
    if len(scores) == 0:
        raise ValueError("`scores` must hold at least one case, got an empty sequence.")
    keys = list(scores[0].keys())
    for i, case in enumerate(scores):
        if list(case.keys()) != keys:
            raise ValueError(
                f"`scores` cases must have the same entries: case 0 has {keys}, case {i} has {list(case.keys())}."
            )
        for name in keys:
            missing = [m for m in METRICS if m not in case[name]]
            if missing:
                raise ValueError(f"`scores` case {i} entry {name!r} lacks metrics {missing}.")
    out: dict[str, dict[str, dict[str, float | int]]] = {}
    for name in keys:
        out[name] = {}
        for m in METRICS:
            mean, std, n = _nan_mean_std([case[name][m] for case in scores], ddof=ddof)
            out[name][m] = {"mean": mean, "std": std, "n": n}
    return out
