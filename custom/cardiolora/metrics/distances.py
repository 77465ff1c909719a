"""Surface-distance metrics of binary masks: HD, HD95 and ASSD (mm), with the voxel spacing.

Definitions, for a predicted mask :math:`A` and a ground-truth mask :math:`B`:

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

Both masks empty: HD = HD95 = ASSD = 0; exactly one empty: NaN (undefined, never infinity).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from cardiolora.metrics.inputs import as_mask, check_pair, check_spacing

__all__ = ["surface", "surface_distances", "directed_distances", "distance_scores", "hausdorff", "assd"]


def _check_percentile(percentile: float) -> float:
    """Return `percentile` as float, raising ValueError unless it lies in (0, 100]."""
    p = float(percentile)
    if not 0.0 < p <= 100.0:
        raise ValueError(f"`percentile` must be in (0, 100], got {percentile}.")
    return p


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
    m = as_mask(mask, "mask")
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


def directed_distances(a: np.ndarray, b: np.ndarray, spacing: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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
    a, b = as_mask(pred, "pred"), as_mask(gt, "gt")
    check_pair(a, b)
    s = check_spacing(spacing, a.ndim)
    has_a, has_b = bool(a.any()), bool(b.any())
    if not has_a and not has_b:
        return np.zeros(0), np.zeros(0)
    if not (has_a and has_b):
        return (
            np.full(int(surface(a).sum()), np.nan),
            np.full(int(surface(b).sum()), np.nan),
        )
    return directed_distances(a, b, s)


def distance_scores(d_ab: np.ndarray, d_ba: np.ndarray, percentiles: Sequence[float]) -> list[float]:
    """Pooled percentiles and mean of directed distances (the package's empty-structure policy); mean is last."""
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
    return distance_scores(d_ab, d_ba, (p,))[0]


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
    return distance_scores(d_ab, d_ba, ())[0]
