"""The one label convention of the project and the remapping from each data source.

Inside the project every label map uses::

    0 background, 1 LV cavity, 2 LV myocardium, 3 RV cavity

(as MONAI's cardiac short-axis bundle and the M&Ms / M&Ms-2 challenges do). ACDC stores
1 RV cavity, 2 myocardium, 3 LV cavity and is remapped on loading.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "BACKGROUND",
    "LV",
    "MYO",
    "RV",
    "NUM_CLASSES",
    "STRUCTURES",
    "STRUCTURE_NAMES",
    "SOURCE_TO_PROJECT",
    "remap_labels",
    "project_to_source",
]

BACKGROUND = 0
LV = 1
MYO = 2
RV = 3
NUM_CLASSES = 4

#: Foreground labels in the order the paper reports them.
STRUCTURES: tuple[int, ...] = (LV, MYO, RV)
STRUCTURE_NAMES: dict[int, str] = {LV: "LV", MYO: "MYO", RV: "RV"}

#: Lookup tables: ``table[source_label] = project_label``.
SOURCE_TO_PROJECT: dict[str, np.ndarray] = {
    "project": np.array([0, 1, 2, 3], dtype=np.uint8),
    "mnms": np.array([0, 1, 2, 3], dtype=np.uint8),
    "acdc": np.array([0, 3, 2, 1], dtype=np.uint8),
}


def remap_labels(label: np.ndarray, source: str, name: str = "label") -> np.ndarray:
    """Map a label array of a data source onto the project convention.

    Args:
        label: integer label array of any shape.
        source: one of ``SOURCE_TO_PROJECT`` (``"acdc"``, ``"mnms"``, ``"project"``).
        name: what to call the array in error messages (usually its file path).

    Returns:
        A ``uint8`` array of the same shape with labels 0 background, 1 LV, 2 MYO, 3 RV.

    Raises:
        ValueError: if `source` is unknown, or `label` holds non-integer values or values outside
            0..3 (the message names `name` and the offending values).

    Example:
        >>> remap_labels(np.array([0, 1, 3]), "acdc").tolist()
        [0, 3, 1]
    """
    if source not in SOURCE_TO_PROJECT:
        raise ValueError(f"`source` must be one of {sorted(SOURCE_TO_PROJECT)}, got {source!r}.")
    arr = np.asarray(label)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise ValueError(f"{name}: label values must be integers, found non-integer values.")
    elif arr.dtype.kind not in "iub":
        raise ValueError(f"{name}: label array has dtype {arr.dtype}, expected an integer type.")
    values = np.unique(arr)
    bad = values[(values < 0) | (values >= NUM_CLASSES)]
    if bad.size:
        raise ValueError(
            f"{name}: label values {bad.tolist()} are out of range; expected 0..{NUM_CLASSES - 1} "
            f"({source} convention)."
        )
    return SOURCE_TO_PROJECT[source][arr.astype(np.int64)]


def project_to_source(label: np.ndarray, source: str, name: str = "label") -> np.ndarray:
    """Map a project label array (0 bg, 1 LV, 2 MYO, 3 RV) onto the convention of a data source.

    The exact inverse of :func:`cardiolora.labels.remap_labels`.

    Args:
        label: integer label array of any shape in the project convention.
        source: one of ``cardiolora.labels.SOURCE_TO_PROJECT`` (``"acdc"``, ``"mnms"``,
            ``"project"``).
        name: what to call the array in error messages (usually the file being written).

    Returns:
        A ``uint8`` array of the same shape in the `source` convention (for ACDC: 1 RV cavity,
        2 myocardium, 3 LV cavity).

    Raises:
        ValueError: if `source` is unknown or `label` holds values outside 0..3 or non-integers
            (the message names `name`).

    Example:
        >>> project_to_source(np.array([0, 1, 2, 3]), "acdc").tolist()
        [0, 3, 2, 1]
    """
    if source not in SOURCE_TO_PROJECT:
        raise ValueError(f"`source` must be one of {sorted(SOURCE_TO_PROJECT)}, got {source!r}.")
    checked = remap_labels(label, "project", name=name)
    inverse = np.argsort(SOURCE_TO_PROJECT[source]).astype(np.uint8)
    if not np.array_equal(SOURCE_TO_PROJECT[source][inverse], np.arange(NUM_CLASSES)):
        raise ValueError(f"the label table of `source` {source!r} is not a permutation; cannot invert it.")
    return inverse[checked]
