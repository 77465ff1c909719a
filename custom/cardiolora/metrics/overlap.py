"""Overlap metrics of binary masks: Dice and VOE; the batched mean foreground Dice.

Definitions, for a predicted mask :math:`A` and a ground-truth mask :math:`B`:

* Dice :math:`= 2|A \\cap B| / (|A| + |B|)`.
* VOE (volumetric overlap error, %) :math:`= 100 \\, (1 - |A \\cap B| / |A \\cup B|)`.

Both masks empty: Dice 1, VOE 0 (a correct "absent" call); exactly one empty: Dice 0, VOE 100
(the empty-structure policy of :mod:`cardiolora.metrics`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cardiolora.labels import NUM_CLASSES, STRUCTURES
from cardiolora.metrics.inputs import as_label, as_mask, to_numpy

__all__ = ["dice", "voe", "dice_voe", "mean_foreground_dice"]


def dice_voe(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Dice and VOE (%) of two bool masks of the same shape (the package's empty-structure policy)."""
    inter = int(np.count_nonzero(a & b))
    size_a, size_b = int(np.count_nonzero(a)), int(np.count_nonzero(b))
    union = size_a + size_b - inter
    if union == 0:  # both empty
        return 1.0, 0.0
    return 2.0 * inter / (size_a + size_b), 100.0 * (1.0 - inter / union)


def dice(pred: Any, gt: Any) -> float:
    """Dice coefficient of two binary masks.

    .. math:: \\mathrm{Dice}(A, B) = \\frac{2 |A \\cap B|}{|A| + |B|}

    Args:
        pred: predicted binary mask (bool or 0/1), numpy array or torch tensor, any shape.
        gt: ground-truth binary mask of the same shape.

    Returns:
        Dice in [0, 1]; 1.0 when both masks are empty (the package's empty-structure policy).

    Raises:
        ValueError: if the shapes differ or a mask holds values other than 0 / 1.

    Example:
        >>> dice(np.array([1, 1, 0, 0]), np.array([0, 1, 1, 0]))
        0.5
    """
    a, b = as_mask(pred, "pred"), as_mask(gt, "gt")
    if a.shape != b.shape:
        raise ValueError(f"`pred` and `gt` must have the same shape, got {a.shape} and {b.shape}.")
    return dice_voe(a, b)[0]


def voe(pred: Any, gt: Any) -> float:
    """Volumetric overlap error of two binary masks, in percent.

    .. math:: \\mathrm{VOE}(A, B) = 100 \\left(1 - \\frac{|A \\cap B|}{|A \\cup B|}\\right)

    Args:
        pred: predicted binary mask (bool or 0/1), numpy array or torch tensor, any shape.
        gt: ground-truth binary mask of the same shape.

    Returns:
        VOE in [0, 100]; 0.0 when both masks are empty.

    Raises:
        ValueError: if the shapes differ or a mask holds values other than 0 / 1.

    Example:
        >>> voe(np.array([1, 1, 0, 0]), np.array([0, 1, 1, 0]))  # doctest: +ELLIPSIS
        66.66...
    """
    a, b = as_mask(pred, "pred"), as_mask(gt, "gt")
    if a.shape != b.shape:
        raise ValueError(f"`pred` and `gt` must have the same shape, got {a.shape} and {b.shape}.")
    return dice_voe(a, b)[1]


def _batch_labels(x: Any, name: str) -> np.ndarray:
    """Turn ``(B, H, W)`` label maps or ``(B, C, H, W)`` / ``(B, C, D, H, W)`` channel-first
    arrays (C = 1: label map; C = NUM_CLASSES: one-hot or scores, arg-maxed) into labels."""
    arr = to_numpy(x)
    if arr.ndim == 3:
        lab = arr
    elif arr.ndim in (4, 5):
        c = arr.shape[1]
        if c == 1:
            lab = arr[:, 0]
        elif c == NUM_CLASSES:
            lab = np.argmax(arr, axis=1)
        else:
            raise ValueError(
                f"`{name}` of shape {tuple(arr.shape)} is read as channel-first (B, C, ...): C must be "
                f"1 (label map) or {NUM_CLASSES} (one-hot), got {c}."
            )
    else:
        raise ValueError(
            f"`{name}` must be (B, H, W) labels or (B, C, H, W) / (B, C, D, H, W) channel-first, got "
            f"shape {tuple(arr.shape)}."
        )
    return as_label(lab, name)


def mean_foreground_dice(pred_label: Any, gt_label: Any) -> float:
    """Mean Dice over LV, MYO and RV and over the batch; fast, for scoring candidates.

    .. math:: \\overline{\\mathrm{Dice}} = \\frac{1}{3B} \\sum_{b=1}^{B} \\sum_{k \\in
        \\{1,2,3\\}} \\frac{2 |\\hat Y_{b,k} \\cap Y_{b,k}|}{|\\hat Y_{b,k}| + |Y_{b,k}|}

    Each sample and structure is scored separately (no pooling over the batch) with the module's
    empty-structure policy: a structure absent from both prediction and ground truth of a
    sample counts as Dice 1, absent from exactly one as Dice 0, so the result is never NaN.

    Args:
        pred_label: predictions, numpy array or torch tensor (any device), either ``(B, H, W)``
            label maps, or channel-first ``(B, C, H, W)`` (or ``(B, C, D, H, W)``) with C = 1
            (label map) or C = 4 (one-hot or per-class scores; the arg-max over C is taken).
        gt_label: ground truth in any of the same forms, with the same batch and spatial shape.

    Returns:
        The mean Dice in [0, 1].

    Raises:
        ValueError: on an unsupported shape or channel count, label values outside 0..3,
            batch / spatial shapes that differ, or an empty batch.

    Example:
        >>> gt = np.zeros((2, 4, 4), dtype=np.int64); gt[:, 1:3, 1:3] = 1
        >>> mean_foreground_dice(gt, gt)
        1.0
    """
    p = _batch_labels(pred_label, "pred_label")
    g = _batch_labels(gt_label, "gt_label")
    if p.shape != g.shape:
        raise ValueError(
            f"`pred_label` and `gt_label` must have the same batch and spatial shape, got {p.shape} and {g.shape}."
        )
    b = p.shape[0]
    if b == 0 or p[0].size == 0:
        raise ValueError(f"`pred_label` must hold at least one non-empty sample, got shape {p.shape}.")
    p = p.reshape(b, -1)
    g = g.reshape(b, -1)
    total = 0.0
    for k in STRUCTURES:
        pk, gk = p == k, g == k
        inter = np.count_nonzero(pk & gk, axis=1)
        denom = np.count_nonzero(pk, axis=1) + np.count_nonzero(gk, axis=1)
        d = np.where(denom == 0, 1.0, 2.0 * inter / np.maximum(denom, 1))
        total += float(d.sum())
    return total / (b * len(STRUCTURES))
