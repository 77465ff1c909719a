"""Anatomical clean-up of predicted cardiac label maps (array / dictionary transform pair).

The network labels every pixel on its own; some mistakes are anatomically impossible and are
fixed by six documented rules, applied in this order to one 3D label map (one phase) in the
project convention (0 background, 1 LV cavity, 2 LV myocardium, 3 RV cavity). "Slice" is a
short-axis slice; in-plane rules look at one slice at a time.

1. **Largest connected component** of the LV, in 3D (full 26-connectivity, so slices that touch
   only diagonally across the 8-10 mm slice gap stay connected): the LV cavity keeps its largest
   component, and the myocardium is kept where it belongs to the largest component of
   cavity ∪ myocardium. (The myocardium is not required to be one piece on its own: the apical
   cap often touches the slice above only through that slice's cavity; this happens in 12 of
   the 160 ACDC ground-truth volumes of ``../shared/data/acdc_h5``.) Islands elsewhere in the
   field of view (stomach, aorta, liver edges) become background.
2. **RV next to the septum** (3D). The RV cavity lies against the interventricular septum, so an
   RV component (3D, 26-connectivity) is kept only when it reaches the contact band of the LV
   myocardium: the voxels within ``g = RV_CONTACT_PX = 2`` pixels in-plane (Chebyshev distance,
   about 2.5-4 mm at the usual 1.25-2 mm pixels) of a myocardium voxel on the same or an
   adjacent slice (3D contact):

   .. math:: N = \\{(z, y, x) : \\exists (z', y', x') \\in M,\\; |z - z'| \\le 1,\\;
       \\max(|y - y'|, |x - x'|) \\le g\\}, \\qquad
       R' = \\bigcup \\{R_i : R_i \\cap N \\neq \\emptyset\\}

   with :math:`M` the myocardium and :math:`R_i` the RV components. Every RV component next to
   the septum is kept, however small, and every other one is removed, however large: a patch of
   chest wall called "RV" is not kept because it is the biggest. If no RV component reaches the
   band, the RV is removed (note ``rv_removed``: the study then has no RV volume, which the
   plausibility checks of :mod:`cardiolora.plausibility` report); a map without any myocardium
   keeps its largest RV component (nothing to anchor the RV to).
3. **Myocardium between the cavities** (per slice). Every region the myocardium encloses (a
   connected hole of the myocardium mask in the slice) is LV cavity if it holds any cavity pixel
   (LV or RV): what a closed myocardial ring holds is the LV blood pool, so RV (or background)
   pixels inside it become LV. A hole that holds only background is a pin-hole in the wall and
   becomes myocardium.
4. **Holes filled** (per slice). Pixels enclosed by the LV cavity (background, myocardium such as
   papillary muscles, or RV specks) become LV, as in the ACDC / M&Ms convention that counts the
   papillary muscles in the cavity. Pixels enclosed by the RV cavity become RV unless the hole
   holds LV pixels (the RV never swallows the LV).
5. **LV cavity inside its ring** (per slice). On a slice where the myocardium closes a ring
   around LV cavity, LV pixels outside every hole of the myocardium (cavity leaking through or
   beside the wall) become background, provided they are fewer than the LV pixels inside
   (:math:`|C_{out}| \\le |C_{in}|`: a small closed loop of "myocardium" never deletes the real
   cavity beside it). Slices with an open ring are left alone (the LV outflow tract).
6. **Cavity trimmed beyond the base and the apex** (across slices; SCMR rule for the basal
   slice: a slice counts as LV when its blood pool is surrounded by at least 50 % myocardium,
   Schulz-Menger et al., J Cardiovasc Magn Reson 2020;22:19). The myocardial coverage of the
   cavity :math:`C_z` of slice :math:`z` is the share of its boundary pixels that touch
   myocardium (8-neighbourhood):

   .. math:: c(z) = \\frac{|\\partial C_z \\cap D_8(M_z)|}{|\\partial C_z|}, \\qquad
       \\partial C_z = C_z \\setminus E_4(C_z)

   A slice is *anchored* when its ring is closed around cavity or :math:`c(z) \\ge 0.5`
   (``MIN_MYOCARDIAL_COVERAGE``). The LV cavity is kept on the slices from the first to the last
   anchored slice and removed (to background) on slices beyond them, at either end of the stack
   (atrial blood above the base, blood below the apex). Conservative by construction: a slice
   with a closed ring is always anchored, slices between anchored slices are never touched
   (a poor mid-ventricular ring stays), the myocardium of a trimmed slice is kept (the apical
   cap is myocardium without cavity), and a stack without any anchored slice is left as it is.
   The rule is applied to every phase on its own, with the same criterion at ED and at ES, as
   SCMR asks the basal slice to be chosen at each phase (the base descends in systole).

The rules are repeated until nothing changes (at most ``MAX_PASSES`` passes; in practice two
or three: the last one confirms), so the result is idempotent: cleaning a cleaned map changes
nothing (tested, also on random noise). :func:`clean_labels_with_notes` also returns what the
rules 2, 5 and 6 did (named notes) for the report. On the 160 ACDC ground-truth volumes of
``../shared/data/acdc_h5`` the rules change no voxel (the three rules before rules 2, 5 and 6
existed removed 1994 voxels there, the apical caps and apical RV pieces). Holes are found with
one labelling pass per slice (see :func:`enclosed_regions`), which keeps the six rules about as
fast as the three were (about 45 ms per noisy 10-slice phase on one core).

``slice_axis`` says which array axis runs across slices: 0 for the project's ``(Z, Y, X)``
volumes, -1 (the default of the transforms) for the bundle's NIfTI-ordered ``(X, Y, Z)``.

Example:
    >>> lab = np.zeros((1, 7, 7), np.uint8)
    >>> lab[0, 1:6, 1:6] = 2; lab[0, 2:5, 2:5] = 3  # an "RV" inside a myocardial ring
    >>> int(clean_labels(lab, slice_axis=0)[0, 3, 3])  # is LV cavity
    1
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform
from scipy import ndimage

from cardiolora.labels import BACKGROUND, LV, MYO, NUM_CLASSES, RV

__all__ = [
    "MAX_PASSES",
    "MIN_MYOCARDIAL_COVERAGE",
    "RV_CONTACT_PX",
    "CleanCardiacLabels",
    "CleanCardiacLabelsd",
    "clean_labels",
    "clean_labels_with_notes",
    "enclosed_regions",
    "fill_cavity_holes",
    "keep_largest_components",
    "keep_rv_next_to_myocardium",
    "lv_cavity_inside_ring",
    "myocardial_coverage",
    "myocardium_encloses_lv",
    "trim_lv_cavity",
]

#: Rule 2: in-plane Chebyshev radius (pixels) of the myocardium's contact band for the RV.
RV_CONTACT_PX = 2
#: Rule 6: least share of the cavity boundary touching myocardium for a slice to count as LV.
MIN_MYOCARDIAL_COVERAGE = 0.5
#: Most passes of the rules before the result is returned (a fixed point comes in two or three).
MAX_PASSES = 5

_FULL_3D = ndimage.generate_binary_structure(3, 3)
_FACE_2D = ndimage.generate_binary_structure(2, 1)
_FULL_2D = ndimage.generate_binary_structure(2, 2)


def _check_label_volume(label: np.ndarray, name: str = "label") -> np.ndarray:
    """A 3D integer label map with values in 0..3, as uint8.

    Raises:
        ValueError: if `label` is not 3D or holds other values.
    """
    arr = np.asarray(label)
    if arr.ndim != 3:
        raise ValueError(f"`{name}` must be a 3D label map, got shape {arr.shape}.")
    if arr.dtype.kind not in "iub" and not np.all(arr == np.round(arr)):
        raise ValueError(f"`{name}` must hold integer labels, got dtype {arr.dtype} with fractions.")
    if arr.size and (arr.min() < 0 or arr.max() >= NUM_CLASSES):
        raise ValueError(f"`{name}` values must be in 0..{NUM_CLASSES - 1}, got {arr.min()}..{arr.max()}.")
    return arr.astype(np.uint8)


def _check_slice_axis(slice_axis: Any) -> int:
    """`slice_axis` as an axis 0..2 of a 3D array.

    Raises:
        ValueError: if `slice_axis` is not an integer in -3..2.
    """
    if isinstance(slice_axis, bool) or not isinstance(slice_axis, (int, np.integer)) or not -3 <= slice_axis <= 2:
        raise ValueError(f"`slice_axis` must be an axis of a 3D array (-3..2), got {slice_axis!r}.")
    return int(slice_axis) % 3


def _largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 26-connected component of a 3D bool mask (the mask itself if it has one or none)."""
    comp, n = ndimage.label(mask, structure=_FULL_3D)
    if n <= 1:
        return mask
    sizes = np.bincount(comp.ravel())
    sizes[0] = 0
    return comp == int(np.argmax(sizes))


def keep_largest_components(label: np.ndarray) -> np.ndarray:
    """Keep the largest 3D connected component (26-connectivity) of each structure.

    Each structure on its own: :func:`clean_labels` keeps the largest LV cavity component, the
    myocardium of the largest LV (cavity ∪ myocardium) component, and selects the RV by rule 2.

    Args:
        label: 3D label map (values 0..3).

    Returns:
        A new uint8 label map; removed voxels are background.

    Raises:
        ValueError: if `label` is not a 3D map of values 0..3.
    """
    out = _check_label_volume(label).copy()
    for k in (LV, MYO, RV):
        mask = out == k
        if mask.any():
            out[mask & ~_largest_component(mask)] = BACKGROUND
    return out


def enclosed_regions(mask_2d: np.ndarray) -> tuple[np.ndarray, int]:
    """Connected regions (4-connectivity) of pixels not in `mask_2d` that `mask_2d` encloses.

    A pixel is enclosed when it cannot reach the image border without crossing the mask (the
    holes of ``scipy.ndimage.binary_fill_holes``, found here in one labelling pass: the
    4-connected components of the complement that do not touch the border).

    Args:
        mask_2d: 2D boolean mask.

    Returns:
        ``(regions, n)``: an int array (0 outside the holes, 1..n per hole) and the hole count.
    """
    mask = np.asarray(mask_2d, dtype=bool)
    comp, n = ndimage.label(~mask, structure=_FACE_2D)
    if n == 0:
        return comp, 0
    border = np.concatenate([comp[0], comp[-1], comp[:, 0], comp[:, -1]])
    new_id = np.ones(n + 1, np.int64)
    new_id[0] = 0
    new_id[border] = 0
    n_holes = int(new_id.sum())
    new_id[new_id > 0] = np.arange(1, n_holes + 1)
    return new_id[comp], n_holes


def _rv_next_to_myocardium(lab: np.ndarray) -> tuple[np.ndarray, dict | None]:
    """Rule 2 on a slices-first ``(Z, H, W)`` map; returns the new map and a note (or None)."""
    rv = lab == RV
    if not rv.any():
        return lab, None
    myo = lab == MYO
    comp, n = ndimage.label(rv, structure=_FULL_3D)
    if not myo.any():
        keep = _largest_component(rv)
        reason = "no myocardium to anchor the RV to: its largest component was kept"
    else:
        side = 2 * RV_CONTACT_PX + 1
        band = ndimage.maximum_filter(myo.view(np.uint8), size=(3, side, side), mode="constant") > 0
        touching = np.unique(comp[band & rv])
        keep = np.isin(comp, touching[touching > 0])
        reason = f"not within {RV_CONTACT_PX} px of the LV myocardium (septum)"
    removed = rv & ~keep
    n_removed = int(np.count_nonzero(removed))
    if n_removed == 0:
        return lab, None
    out = lab.copy()
    out[removed] = BACKGROUND
    n_gone = n - (len(np.unique(comp[keep])) if keep.any() else 0)
    if not keep.any():
        note = {
            "name": "rv_removed",
            "message": f"RV removed: none of its {n} component(s) ({n_removed} voxels) lies within "
            f"{RV_CONTACT_PX} px of the LV myocardium (septum); the study has no RV measure",
            "value": n_removed,
        }
    else:
        note = {
            "name": "rv_components_removed",
            "message": f"{n_gone} RV component(s) ({n_removed} voxels) removed: {reason}",
            "value": n_removed,
        }
    return out, note


def keep_rv_next_to_myocardium(label: np.ndarray, slice_axis: int = -1) -> np.ndarray:
    """Rule 2: keep the RV components that reach the septal contact band of the myocardium.

    Args:
        label: 3D label map (values 0..3).
        slice_axis: the axis across slices (0 for ``(Z, Y, X)``, -1 / 2 for ``(X, Y, Z)``).

    Returns:
        A new uint8 label map: RV components (3D, 26-connectivity) with no voxel within
        ``RV_CONTACT_PX`` pixels in-plane of a myocardium voxel on the same or an adjacent slice
        become background; with no myocardium at all, only the largest RV component is kept.

    Raises:
        ValueError: if `label` is not a 3D map of values 0..3 or `slice_axis` is not in -3..2.
    """
    arr, axis = _check_label_volume(label), _check_slice_axis(slice_axis)
    out, _ = _rv_next_to_myocardium(np.moveaxis(arr, axis, 0))
    return np.ascontiguousarray(np.moveaxis(out, 0, axis))


def myocardium_encloses_lv(slice_2d: np.ndarray) -> np.ndarray:
    """Rule 3 on one slice: what the myocardium encloses is LV cavity (or wall, if empty).

    Args:
        slice_2d: 2D label map (values 0..3).

    Returns:
        A new label slice: each hole of the myocardium that holds an LV or RV pixel becomes LV,
        each hole holding only background becomes myocardium.
    """
    out = np.array(slice_2d, dtype=np.uint8, copy=True)
    regions, n = enclosed_regions(out == MYO)
    if n:
        holds_cavity = _regions_holding(regions, n, (out == LV) | (out == RV))
        new_label = np.where(holds_cavity, LV, MYO).astype(np.uint8)
        inside = regions > 0
        out[inside] = new_label[regions[inside]]
    return out


def _regions_holding(regions: np.ndarray, n: int, mask: np.ndarray) -> np.ndarray:
    """``table[r]`` = True when region `r` (1..n) holds a pixel of `mask` (index 0 unused)."""
    return np.bincount(regions[mask & (regions > 0)], minlength=n + 1) > 0


def fill_cavity_holes(slice_2d: np.ndarray) -> np.ndarray:
    """Rule 4 on one slice: pixels enclosed by the LV become LV, by the RV become RV.

    Args:
        slice_2d: 2D label map (values 0..3).

    Returns:
        A new label slice. RV holes that hold LV pixels are left alone.
    """
    out = np.array(slice_2d, dtype=np.uint8, copy=True)
    regions, n = enclosed_regions(out == LV)
    if n:
        out[regions > 0] = LV
    regions, n = enclosed_regions(out == RV)
    if n:
        fill = ~_regions_holding(regions, n, out == LV)
        fill[0] = False
        out[fill[regions]] = RV
    return out


def _inside_ring(slice_2d: np.ndarray) -> np.ndarray:
    """Pixels enclosed by the myocardium of a slice (the holes of its ring)."""
    return enclosed_regions(slice_2d == MYO)[0] > 0


def lv_cavity_inside_ring(slice_2d: np.ndarray) -> np.ndarray:
    """Rule 5 on one slice: LV cavity outside a closed myocardial ring becomes background.

    Acts only when the ring is closed around LV cavity and the cavity outside the ring is not
    larger than the cavity inside it (:math:`0 < |C_{out}| \\le |C_{in}|`).

    Args:
        slice_2d: 2D label map (values 0..3).

    Returns:
        A new label slice.
    """
    out = np.array(slice_2d, dtype=np.uint8, copy=True)
    lv = out == LV
    if not lv.any():
        return out
    inside = _inside_ring(out)
    n_in = int(np.count_nonzero(lv & inside))
    outside = lv & ~inside
    n_out = int(np.count_nonzero(outside))
    if n_in > 0 and 0 < n_out <= n_in:
        out[outside] = BACKGROUND
    return out


def myocardial_coverage(slice_2d: np.ndarray) -> float:
    """Share of the LV cavity's boundary pixels that touch myocardium (rule 6).

    .. math:: c = |\\partial C \\cap D_8(M)| \\,/\\, |\\partial C|, \\qquad \\partial C = C \\setminus E_4(C)

    with :math:`C` the cavity, :math:`M` the myocardium, :math:`E_4` the erosion with the
    4-neighbourhood (outside the image counts as background) and :math:`D_8` the dilation with
    the 8-neighbourhood.

    Args:
        slice_2d: 2D label map (values 0..3).

    Returns:
        The coverage in [0, 1]; NaN when the slice has no LV cavity.

    Raises:
        ValueError: if `slice_2d` is not 2D.

    Example:
        >>> s = np.zeros((7, 7), np.uint8); s[1:6, 1:6] = 2; s[2:5, 2:5] = 1
        >>> myocardial_coverage(s)
        1.0
    """
    arr = np.asarray(slice_2d)
    if arr.ndim != 2:
        raise ValueError(f"`slice_2d` must be a 2D label slice, got shape {arr.shape}.")
    cavity = arr == LV
    if not cavity.any():
        return float("nan")
    edge = cavity & ~ndimage.binary_erosion(cavity, structure=_FACE_2D)
    near_myo = ndimage.binary_dilation(arr == MYO, structure=_FULL_2D)
    return float(np.count_nonzero(edge & near_myo)) / float(np.count_nonzero(edge))


def _anchored(slice_2d: np.ndarray) -> bool:
    """Rule 6: a slice whose cavity has a closed ring or a coverage of at least 50 %."""
    lv = slice_2d == LV
    if (lv & _inside_ring(slice_2d)).any():
        return True
    return myocardial_coverage(slice_2d) >= MIN_MYOCARDIAL_COVERAGE


def _trim(lab: np.ndarray, z0: int) -> tuple[np.ndarray, dict | None]:
    """Rule 6 on a slices-first ``(Z, H, W)`` map; `z0` is the index of its first slice."""
    with_cavity = [z for z in range(lab.shape[0]) if (lab[z] == LV).any()]
    anchored = [z for z in with_cavity if _anchored(lab[z])]
    if not anchored:
        return lab, None
    lo, hi = anchored[0], anchored[-1]
    cut = [z for z in with_cavity if z < lo or z > hi]
    if not cut:
        return lab, None
    out = lab.copy()
    n_voxels = 0
    for z in cut:
        cavity = out[z] == LV
        n_voxels += int(np.count_nonzero(cavity))
        out[z][cavity] = BACKGROUND
    slices = [z + z0 for z in cut]
    note = {
        "name": "lv_slices_trimmed",
        "message": f"LV cavity removed on slice(s) {slices} ({n_voxels} voxels) beyond the base / apex: "
        f"less than {MIN_MYOCARDIAL_COVERAGE:.0%} of the cavity edge touches myocardium",
        "value": slices,
    }
    return out, note


def trim_lv_cavity(label: np.ndarray, slice_axis: int = -1) -> np.ndarray:
    """Rule 6: remove the LV cavity on slices beyond the first / last anchored slice.

    Args:
        label: 3D label map (values 0..3).
        slice_axis: the axis across slices (0 for ``(Z, Y, X)``, -1 / 2 for ``(X, Y, Z)``).

    Returns:
        A new uint8 label map (only LV cavity voxels may change, to background).

    Raises:
        ValueError: if `label` is not a 3D map of values 0..3 or `slice_axis` is not in -3..2.
    """
    arr, axis = _check_label_volume(label), _check_slice_axis(slice_axis)
    out, _ = _trim(np.moveaxis(arr, axis, 0), 0)
    return np.ascontiguousarray(np.moveaxis(out, 0, axis))


def _clean_pass(lab: np.ndarray, z0: int, notes: list[dict]) -> np.ndarray:
    """One pass of rules 1-6 on a slices-first ``(Z, H, W)`` map; notes are appended."""
    out = lab.copy()
    lv = out == LV
    if lv.any():
        out[lv & ~_largest_component(lv)] = BACKGROUND
    myo = out == MYO
    if myo.any():
        out[myo & ~_largest_component(myo | (out == LV))] = BACKGROUND
    out, note = _rv_next_to_myocardium(out)
    if note:
        notes.append(note)
    leaked = []
    for z in range(out.shape[0]):
        filled = fill_cavity_holes(myocardium_encloses_lv(out[z]))
        out[z] = lv_cavity_inside_ring(filled)
        n = int(np.count_nonzero((filled == LV) & (out[z] != LV)))
        if n:
            leaked.append((z + z0, n))
    if leaked:
        notes.append(
            {
                "name": "lv_cavity_outside_ring_removed",
                "message": "LV cavity outside its closed myocardial ring removed on slice(s) "
                + ", ".join(f"{z} ({n} voxels)" for z, n in leaked),
                "value": sum(n for _, n in leaked),
            }
        )
    out, note = _trim(out, z0)
    if note:
        notes.append(note)
    return out


def clean_labels_with_notes(label: np.ndarray, slice_axis: int = -1) -> tuple[np.ndarray, list[dict]]:
    """Apply the six rules of the module docstring to one 3D label map; say what rules 2, 5, 6 did.

    Args:
        label: 3D label map (values 0..3), e.g. ``(Z, Y, X)`` or ``(X, Y, Z)``.
        slice_axis: the axis across slices (0 for ``(Z, Y, X)``, -1 / 2 for ``(X, Y, Z)``).

    Returns:
        ``(cleaned, notes)``: the cleaned uint8 label map (same shape) and a list of notes, each
        ``{"name", "message", "value"}`` with a stable name: ``rv_removed`` (no RV component
        next to the septum: the RV was removed; value: voxels), ``rv_components_removed`` (RV
        components away from the septum removed; voxels), ``lv_cavity_outside_ring_removed``
        (voxels), ``lv_slices_trimmed`` (value: the slice indices along `slice_axis`). Empty
        when those rules changed nothing.

    Raises:
        ValueError: if `label` is not a 3D map of values 0..3 or `slice_axis` is not in -3..2.
    """
    arr = _check_label_volume(label)
    axis = _check_slice_axis(slice_axis)
    out = np.zeros_like(arr)
    notes: list[dict] = []
    box = _foreground_box(arr)
    if box is None:
        return out, notes
    # every rule only sees the labelled box plus a background margin: the same result, less work
    current = np.ascontiguousarray(np.moveaxis(arr[box], axis, 0))
    for _ in range(MAX_PASSES):
        cleaned = _clean_pass(current, box[axis].start, notes)
        if np.array_equal(cleaned, current):
            break
        current = cleaned
    out[box] = np.moveaxis(current, 0, axis)
    return out, notes


def clean_labels(label: np.ndarray, slice_axis: int = -1) -> np.ndarray:
    """Apply the six rules of the module docstring to one 3D label map (one phase).

    Args:
        label: 3D label map (values 0..3), e.g. ``(Z, Y, X)`` or ``(X, Y, Z)``.
        slice_axis: the axis across slices (0 for ``(Z, Y, X)``, -1 / 2 for ``(X, Y, Z)``).

    Returns:
        The cleaned uint8 label map, same shape (see :func:`clean_labels_with_notes` for what
        was changed and why).

    Raises:
        ValueError: if `label` is not a 3D map of values 0..3 or `slice_axis` is not in -3..2.
    """
    return clean_labels_with_notes(label, slice_axis)[0]


def _foreground_box(label: np.ndarray) -> tuple[slice, ...] | None:
    """Slices of the bounding box of the labelled voxels grown by one voxel (None if none)."""
    where = np.nonzero(label)
    if where[0].size == 0:
        return None
    return tuple(
        slice(max(0, int(w.min()) - 1), min(n, int(w.max()) + 2)) for w, n in zip(where, label.shape, strict=True)
    )


def _channel_first_labels(img: np.ndarray | torch.Tensor) -> tuple[np.ndarray, bool]:
    """``(1, ...)`` label data as a 3D numpy array, and whether the channel dim was there."""
    arr = img.detach().cpu().numpy() if isinstance(img, torch.Tensor) else np.asarray(img)
    if arr.ndim == 4 and arr.shape[0] == 1:
        return arr[0], True
    if arr.ndim == 3:
        return arr, False
    raise ValueError(f"expected a (1, H, W, D) or (H, W, D) label map, got shape {arr.shape}.")


class CleanCardiacLabels(Transform):
    """Array transform: the anatomical clean-up of :func:`clean_labels` on a label image.

    Accepts a channel-first ``(1, H, W, D)`` (MONAI's layout after ``AsDiscrete(argmax=True)``)
    or a plain ``(H, W, D)`` label map, numpy or torch (MetaTensor metadata is kept), and
    returns the same type, shape and dtype.

    Args:
        slice_axis: spatial axis across slices (-1: the last, as in the bundle's NIfTI order).

    Raises:
        ValueError: if `slice_axis` is not in -3..2.
    """

    def __init__(self, slice_axis: int = -1) -> None:
        if not isinstance(slice_axis, (int, np.integer)) or not -3 <= slice_axis <= 2:
            raise ValueError(f"`slice_axis` must be a spatial axis of a 3D image (-3..2), got {slice_axis!r}.")
        self.slice_axis = int(slice_axis)

    def __call__(self, img: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Clean `img` (see the class docstring)."""
        arr, has_channel = _channel_first_labels(img)
        cleaned = clean_labels(np.rint(arr).astype(np.int64), self.slice_axis)
        if has_channel:
            cleaned = cleaned[None]
        if isinstance(img, torch.Tensor):
            out = img.clone()
            out.copy_(torch.as_tensor(cleaned.astype(np.float32)).to(img.dtype))
            return out
        return cleaned.astype(np.asarray(img).dtype)


class CleanCardiacLabelsd(MapTransform):
    """Dictionary version of :class:`CleanCardiacLabels` (use it in a bundle's postprocessing).

    Args:
        keys: keys of the label images to clean (e.g. ``"pred"`` after ``AsDiscreted``).
        slice_axis: spatial axis across slices.
        allow_missing_keys: do not raise for absent keys.
    """

    def __init__(self, keys: KeysCollection, slice_axis: int = -1, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.cleaner = CleanCardiacLabels(slice_axis)

    def __call__(self, data: Mapping[Hashable, np.ndarray | torch.Tensor]) -> dict[Hashable, np.ndarray | torch.Tensor]:
        """Clean every key of `data` that is in ``keys``."""
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.cleaner(d[key])
        return d
