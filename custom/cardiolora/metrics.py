"""Segmentation metrics as the Rate-My-LoRA paper reports them: Dice, VOE, HD, HD95 and ASSD.

Every function works on 2D ``(Y, X)`` and 3D ``(Z, Y, X)`` arrays (the project's axis
convention, see :mod:`cardiolora.data.cine`) with the voxel spacing in mm given in the same
axis order (``spacing_zyx`` for volumes, ``(row, column)`` spacing for slices). Inputs may be
numpy arrays or torch tensors (tensors are detached and copied to numpy); the computation is pure
numpy / scipy.

Definitions, for a predicted mask :math:`A` and a ground-truth mask :math:`B`:

* Dice :math:`= 2|A \\cap B| / (|A| + |B|)`.
* VOE (volumetric overlap error, %) :math:`= 100 \\, (1 - |A \\cap B| / |A \\cup B|)`.
* Surface :math:`S(A)`: the boundary voxels of :math:`A`, i.e. :math:`A` minus its binary
  erosion with the *face-connectivity* structuring element
  (``scipy.ndimage.generate_binary_structure(ndim, 1)``: the 4-neighbourhood in 2D, the
  6-neighbourhood in 3D). Outside the array counts as background (``border_value=0``), so a mask
  that touches the array border has surface there. This is the surface MONAI's
  ``get_mask_edges`` uses (without sub-voxel mode).
* Directed surface distances :math:`d(a, S(B)) = \\min_{b \\in S(B)} \\lVert (a - b) \\odot s
  \\rVert_2` for :math:`a \\in S(A)`, with :math:`s` the spacing (anisotropic, e.g. 10 mm between
  slices), computed exactly with ``scipy.ndimage.distance_transform_edt(~S(B), sampling=s)``.
* Pooled symmetric distances :math:`D = \\{d(a, S(B))\\}_{a \\in S(A)} \\cup
  \\{d(b, S(A))\\}_{b \\in S(B)}` (a multiset of :math:`|S(A)| + |S(B)|` values).
* HD (Hausdorff distance, mm) :math:`= \\max D`.
* HD95 (mm) :math:`=` the 95th percentile of the *pooled* set :math:`D` (``numpy.percentile``,
  linear interpolation), as ``medpy.metric.hd95`` defines it. Note: MONAI's
  ``compute_hausdorff_distance(percentile=95)`` instead takes the maximum of the two *directed*
  95th percentiles; the two differ in general (MONAI's is usually the larger: one direction's
  outliers are diluted by the other direction's distances in the pooled set). With percentile
  100 both definitions equal HD.
* ASSD (mm) :math:`= \\operatorname{mean} D = (\\sum_{a} d(a, S(B)) + \\sum_{b} d(b, S(A))) /
  (|S(A)| + |S(B)|)`, as MONAI's ``compute_average_surface_distance(symmetric=True)``.

Empty-structure policy (used by every function here, tested in ``tests/test_metrics.py``):

* both masks empty: Dice 1, VOE 0, HD = HD95 = ASSD = 0, and ``segmentation_scores`` sets
  ``"both_empty": True`` for the structure (a correct "absent" call);
* exactly one mask empty: Dice 0, VOE 100, HD = HD95 = ASSD = NaN (undefined, never infinity);
* means over structures and over cases are NaN-aware (NaNs are skipped) and report the number
  ``n`` of valid (finite) values each mean is taken over; a mean over no valid value is NaN with
  ``n = 0`` (no warning is raised).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from cardiolora.labels import NUM_CLASSES, STRUCTURE_NAMES, STRUCTURES

__all__ = [
    "METRICS",
    "dice",
    "voe",
    "surface",
    "surface_distances",
    "hausdorff",
    "assd",
    "segmentation_scores",
    "aggregate_scores",
    "mean_foreground_dice",
]

#: The metric keys of every per-structure score dict, in the order the paper reports them.
METRICS: tuple[str, ...] = ("dice", "voe", "hd", "hd95", "assd")


# --------------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------------


def _to_numpy(x: Any) -> np.ndarray:
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


def _as_mask(x: Any, name: str) -> np.ndarray:
    """Convert a binary mask (bool or 0/1 values) to a bool array, else raise ValueError."""
    arr = _to_numpy(x)
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


def _as_label(x: Any, name: str) -> np.ndarray:
    """Convert a label map to int64 and check its values are in 0..NUM_CLASSES-1."""
    arr = _to_numpy(x)
    _check_integer_valued(arr, name)
    values = np.unique(arr)
    bad = values[(values < 0) | (values >= NUM_CLASSES)]
    if bad.size:
        raise ValueError(
            f"`{name}` holds label values {bad[:5].tolist()} outside 0..{NUM_CLASSES - 1} "
            "(0 background, 1 LV, 2 MYO, 3 RV)."
        )
    return arr.astype(np.int64)


def _check_pair(pred: np.ndarray, gt: np.ndarray, names: tuple[str, str] = ("pred", "gt")) -> None:
    """Raise ValueError unless `pred` and `gt` have the same 2D or 3D shape."""
    if pred.shape != gt.shape:
        raise ValueError(
            f"`{names[0]}` and `{names[1]}` must have the same shape, got {tuple(pred.shape)} and {tuple(gt.shape)}."
        )
    if pred.ndim not in (2, 3):
        raise ValueError(
            f"`{names[0]}` and `{names[1]}` must be 2D (Y, X) or 3D (Z, Y, X), got shape {tuple(pred.shape)}."
        )


def _check_spacing(spacing: Any, ndim: int) -> np.ndarray:
    """Return `spacing` as a float64 vector of length `ndim` of positive finite values."""
    s = np.atleast_1d(np.asarray(_to_numpy(spacing), dtype=np.float64))
    if s.ndim != 1 or s.size != ndim:
        raise ValueError(f"`spacing` must have one value per axis ({ndim} for {ndim}D arrays), got {s.tolist()}.")
    if not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise ValueError(f"`spacing` values must be positive and finite (mm), got {s.tolist()}.")
    return s


def _check_percentile(percentile: float) -> float:
    """Return `percentile` as float, raising ValueError unless it lies in (0, 100]."""
    p = float(percentile)
    if not 0.0 < p <= 100.0:
        raise ValueError(f"`percentile` must be in (0, 100], got {percentile}.")
    return p


# --------------------------------------------------------------------------------------------
# binary-mask metrics
# --------------------------------------------------------------------------------------------


def _dice_voe(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Dice and VOE (%) of two bool masks of the same shape (empty policy applied)."""
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
        Dice in [0, 1]; 1.0 when both masks are empty (the module's empty-structure policy).

    Raises:
        ValueError: if the shapes differ or a mask holds values other than 0 / 1.

    Example:
        >>> dice(np.array([1, 1, 0, 0]), np.array([0, 1, 1, 0]))
        0.5
    """
    a, b = _as_mask(pred, "pred"), _as_mask(gt, "gt")
    if a.shape != b.shape:
        raise ValueError(f"`pred` and `gt` must have the same shape, got {a.shape} and {b.shape}.")
    return _dice_voe(a, b)[0]


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
    a, b = _as_mask(pred, "pred"), _as_mask(gt, "gt")
    if a.shape != b.shape:
        raise ValueError(f"`pred` and `gt` must have the same shape, got {a.shape} and {b.shape}.")
    return _dice_voe(a, b)[1]


def surface(mask: Any) -> np.ndarray:
    """Boundary voxels of a binary mask: the mask minus its face-connectivity erosion.

    .. math:: S(A) = A \\setminus (A \\ominus N_1)

    with :math:`N_1` = ``generate_binary_structure(ndim, 1)`` (4-neighbourhood in 2D,
    6-neighbourhood in 3D); voxels outside the array count as background.

    Args:
        mask: binary mask (bool or 0/1) of any dimension.

    Returns:
        A bool array like `mask`, True on the surface voxels.

    Raises:
        ValueError: if `mask` holds values other than 0 / 1.

    Example:
        >>> int(surface(np.pad(np.ones((3, 3)), 1)).sum())  # a 3x3 square: 8 border pixels
        8
    """
    m = _as_mask(mask, "mask")
    if not m.any():
        return m.copy()
    structure = ndimage.generate_binary_structure(m.ndim, 1)
    return m & ~ndimage.binary_erosion(m, structure=structure, border_value=0)


def _bbox_crop(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Crop two masks to the bounding box of their union plus a one-voxel margin.

    Exact for surfaces and surface distances: the margin keeps the erosion of the crop equal to
    the crop of the erosion, and every surface voxel lies inside the box.
    """
    idx = np.argwhere(a | b)
    lo = np.maximum(idx.min(axis=0) - 1, 0)
    hi = np.minimum(idx.max(axis=0) + 2, a.shape)
    sl = tuple(slice(int(lo_i), int(hi_i)) for lo_i, hi_i in zip(lo, hi, strict=True))
    return a[sl], b[sl]


def _directed(a: np.ndarray, b: np.ndarray, spacing: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Directed surface distances of two non-empty bool masks (cropped internally)."""
    a, b = _bbox_crop(a, b)
    sa, sb = surface(a), surface(b)
    # distance of every voxel to the nearest surface voxel of the other mask
    dist_to_b = ndimage.distance_transform_edt(~sb, sampling=spacing)
    dist_to_a = ndimage.distance_transform_edt(~sa, sampling=spacing)
    return dist_to_b[sa].astype(np.float64), dist_to_a[sb].astype(np.float64)


def surface_distances(pred: Any, gt: Any, spacing: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Directed surface distances (mm) between two binary masks.

    .. math:: d_{A \\to B} = \\{\\min_{b \\in S(B)} \\lVert (a - b) \\odot s \\rVert_2\\}_{a \\in S(A)}

    with :math:`S` the face-connectivity surface (see :func:`surface`) and :math:`s` the spacing.

    Args:
        pred: predicted binary mask (bool or 0/1), 2D ``(Y, X)`` or 3D ``(Z, Y, X)``.
        gt: ground-truth binary mask of the same shape.
        spacing: voxel spacing in mm, one positive value per axis in the array's axis order.

    Returns:
        ``(d_pred_to_gt, d_gt_to_pred)``: float64 arrays with one distance per surface voxel of
        `pred` (to the surface of `gt`) and of `gt` (to the surface of `pred`), in the C order of
        the voxels. Both empty when both masks are empty; when only one mask is empty, the other
        mask's distances are NaN (no nearest surface exists) and the empty one's array is empty.

    Raises:
        ValueError: on a shape mismatch, arrays that are not 2D / 3D, masks with values other
            than 0 / 1, a `spacing` of the wrong length or with non-positive values.

    Example:
        >>> a = np.zeros((1, 5)); a[0, 0] = 1
        >>> b = np.zeros((1, 5)); b[0, 3] = 1
        >>> surface_distances(a, b, (1.0, 2.0))
        (array([6.]), array([6.]))
    """
    a, b = _as_mask(pred, "pred"), _as_mask(gt, "gt")
    _check_pair(a, b)
    s = _check_spacing(spacing, a.ndim)
    has_a, has_b = bool(a.any()), bool(b.any())
    if not has_a and not has_b:
        return np.zeros(0), np.zeros(0)
    if not (has_a and has_b):
        return (
            np.full(int(surface(a).sum()), np.nan),
            np.full(int(surface(b).sum()), np.nan),
        )
    return _directed(a, b, s)


def _distance_scores(d_ab: np.ndarray, d_ba: np.ndarray, percentiles: Sequence[float]) -> list[float]:
    """Pooled percentiles and mean of directed distances (empty policy applied); mean is last."""
    if d_ab.size == 0 and d_ba.size == 0:  # both masks empty
        return [0.0] * (len(percentiles) + 1)
    pooled = np.concatenate([d_ab, d_ba])
    if d_ab.size == 0 or d_ba.size == 0 or np.isnan(pooled).any():  # one mask empty
        return [float("nan")] * (len(percentiles) + 1)
    out = [float(pooled.max()) if p == 100.0 else float(np.percentile(pooled, p)) for p in percentiles]
    return [*out, float(pooled.mean())]


def hausdorff(pred: Any, gt: Any, spacing: Sequence[float], percentile: float = 100) -> float:
    """(Percentile) Hausdorff distance in mm between two binary masks.

    .. math:: \\mathrm{HD}_p(A, B) = P_p\\left(d_{A \\to B} \\cup d_{B \\to A}\\right)

    the `percentile` of the pooled symmetric surface distances (``numpy.percentile``, linear
    interpolation); ``percentile=100`` is the classical Hausdorff distance
    :math:`\\max(\\max d_{A \\to B}, \\max d_{B \\to A})`, ``percentile=95`` is HD95 as medpy
    defines it (MONAI's HD95 takes the max of the two directed percentiles instead).

    Args:
        pred: predicted binary mask (bool or 0/1), 2D ``(Y, X)`` or 3D ``(Z, Y, X)``.
        gt: ground-truth binary mask of the same shape.
        spacing: voxel spacing in mm, one positive value per axis.
        percentile: in (0, 100]; 100 for HD, 95 for HD95.

    Returns:
        The distance in mm; 0.0 when both masks are empty, NaN when exactly one is empty.

    Raises:
        ValueError: on a shape mismatch, non-binary masks, a bad `spacing`, or `percentile`
            outside (0, 100].

    Example:
        >>> a = np.zeros((2, 2, 2)); a[0, 0, 0] = 1
        >>> b = np.zeros((2, 2, 2)); b[1, 1, 0] = 1
        >>> round(hausdorff(a, b, (10.0, 1.0, 1.0)), 4)  # sqrt(10**2 + 1**2)
        10.0499
    """
    p = _check_percentile(percentile)
    d_ab, d_ba = surface_distances(pred, gt, spacing)
    return _distance_scores(d_ab, d_ba, (p,))[0]


def assd(pred: Any, gt: Any, spacing: Sequence[float]) -> float:
    """Average symmetric surface distance in mm between two binary masks.

    .. math:: \\mathrm{ASSD}(A, B) = \\frac{\\sum_{a \\in S(A)} d(a, S(B)) + \\sum_{b \\in S(B)}
        d(b, S(A))}{|S(A)| + |S(B)|}

    (the mean of the pooled distances, as MONAI's ``compute_average_surface_distance`` with
    ``symmetric=True``).

    Args:
        pred: predicted binary mask (bool or 0/1), 2D ``(Y, X)`` or 3D ``(Z, Y, X)``.
        gt: ground-truth binary mask of the same shape.
        spacing: voxel spacing in mm, one positive value per axis.

    Returns:
        The ASSD in mm; 0.0 when both masks are empty, NaN when exactly one is empty.

    Raises:
        ValueError: on a shape mismatch, non-binary masks or a bad `spacing`.

    Example:
        >>> a = np.zeros((1, 5)); a[0, 0] = 1
        >>> b = np.zeros((1, 5)); b[0, 3] = 1
        >>> assd(a, b, (1.0, 2.0))
        6.0
    """
    d_ab, d_ba = surface_distances(pred, gt, spacing)
    return _distance_scores(d_ab, d_ba, ())[0]


# --------------------------------------------------------------------------------------------
# label maps and aggregation
# --------------------------------------------------------------------------------------------


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
    :math:`B = \\{y = k\\}` with the definitions of the module docstring (HD95 is the 95th
    percentile of the pooled symmetric surface distances). The ``"mean"`` entry is, per metric,
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
    pred = _as_label(pred_label, "pred_label")
    gt = _as_label(gt_label, "gt_label")
    _check_pair(pred, gt, ("pred_label", "gt_label"))
    s = _check_spacing(spacing, pred.ndim)
    st = _check_structures(structures)

    out: dict[str, dict[str, Any]] = {}
    for k in st:
        a, b = pred == k, gt == k
        both_empty = not a.any() and not b.any()
        d, v = _dice_voe(a, b)
        if a.any() and b.any():
            d_ab, d_ba = _directed(a, b, s)
        elif both_empty:
            d_ab = d_ba = np.zeros(0)
        else:
            d_ab, d_ba = np.full(1, np.nan), np.zeros(0)
        hd, hd95, mean_d = _distance_scores(d_ab, d_ba, (100.0, 95.0))
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


# --------------------------------------------------------------------------------------------
# fast batched Dice for the federated server
# --------------------------------------------------------------------------------------------


def _batch_labels(x: Any, name: str) -> np.ndarray:
    """Turn ``(B, H, W)`` label maps or ``(B, C, H, W)`` / ``(B, C, D, H, W)`` channel-first
    arrays (C = 1: label map; C = NUM_CLASSES: one-hot or scores, arg-maxed) into labels."""
    arr = _to_numpy(x)
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
    return _as_label(lab, name)


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
