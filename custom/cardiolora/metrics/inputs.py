"""The inputs of the metrics: numpy or torch masks and label maps, shapes and spacings, checked.

Masks are bool or 0/1 values, label maps hold 0..3 (0 background, 1 LV, 2 MYO, 3 RV; float
arrays are accepted when integer-valued); torch tensors are detached and copied to numpy. Every
check raises a ValueError that names the argument.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cardiolora.labels import NUM_CLASSES

__all__ = ["to_numpy", "as_mask", "as_label", "check_pair", "check_spacing"]


def to_numpy(x: Any) -> np.ndarray:
    """Return `x` as a numpy array; torch tensors are detached and moved to the CPU first."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _check_integer_valued(arr: np.ndarray, name: str) -> None:
    """Raise ValueError if `arr` is not of a bool / integer dtype or of integer-valued floats."""
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise ValueError(f"`{name}` must hold integer values, found non-integer or non-finite values.")
    elif arr.dtype.kind not in "iub":
        raise ValueError(f"`{name}` has dtype {arr.dtype}, expected a bool, integer or float type.")


def as_mask(x: Any, name: str) -> np.ndarray:
    """Convert a binary mask (bool or 0/1 values) to a bool array, else raise ValueError."""
    arr = to_numpy(x)
    if arr.dtype == bool:
        return arr
    _check_integer_valued(arr, name)
    values = np.unique(arr)
    bad = values[(values != 0) & (values != 1)]
    if bad.size:
        raise ValueError(
            f"`{name}` must be a binary mask (bool or 0/1), found values {bad[:5].tolist()}; "
            "for label maps use `segmentation_scores`."
        )
    return arr.astype(bool)


def as_label(x: Any, name: str) -> np.ndarray:
    """Convert a label map to int64 and check its values are in 0..NUM_CLASSES-1."""
    arr = to_numpy(x)
    _check_integer_valued(arr, name)
    values = np.unique(arr)
    bad = values[(values < 0) | (values >= NUM_CLASSES)]
    if bad.size:
        raise ValueError(
            f"`{name}` holds label values {bad[:5].tolist()} outside 0..{NUM_CLASSES - 1} "
            "(0 background, 1 LV, 2 MYO, 3 RV)."
        )
    return arr.astype(np.int64)


def check_pair(pred: np.ndarray, gt: np.ndarray, names: tuple[str, str] = ("pred", "gt")) -> None:
    """Raise ValueError unless `pred` and `gt` have the same 2D or 3D shape."""
    if pred.shape != gt.shape:
        raise ValueError(
            f"`{names[0]}` and `{names[1]}` must have the same shape, got {tuple(pred.shape)} and {tuple(gt.shape)}."
        )
    if pred.ndim not in (2, 3):
        raise ValueError(
            f"`{names[0]}` and `{names[1]}` must be 2D (Y, X) or 3D (Z, Y, X), got shape {tuple(pred.shape)}."
        )


def check_spacing(spacing: Any, ndim: int) -> np.ndarray:
    """Return `spacing` as a float64 vector of length `ndim` of positive finite values."""
    s = np.atleast_1d(np.asarray(to_numpy(spacing), dtype=np.float64))
    if s.ndim != 1 or s.size != ndim:
        raise ValueError(f"`spacing` must have one value per axis ({ndim} for {ndim}D arrays), got {s.tolist()}.")
    if not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise ValueError(f"`spacing` values must be positive and finite (mm), got {s.tolist()}.")
    return s
