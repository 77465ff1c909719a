"""Anatomical clean-up of predicted cardiac label maps (array / dictionary transform pair).

The network labels every pixel on its own; a few mistakes are anatomically impossible and are
fixed by three documented rules, applied in this order to one 3D label map (one phase) in the
project convention (0 background, 1 LV cavity, 2 LV myocardium, 3 RV cavity):

1. **Largest connected component** of each structure, in 3D (full 26-connectivity, so slices that
   touch only diagonally across the 8-10 mm slice gap stay connected). Islands elsewhere in the
   field of view (stomach, aorta, liver edges) become background.
2. **Myocardium between the cavities** (per slice). Every region the myocardium encloses (a
   connected hole of the myocardium mask in the slice) is LV cavity if it holds any cavity pixel
   (LV or RV): what a closed myocardial ring holds is the LV blood pool, so RV (or background)
   pixels inside it become LV. A hole that holds only background is a pin-hole in the wall and
   becomes myocardium.
3. **Holes filled** (per slice). Pixels enclosed by the LV cavity (background, myocardium such as
   papillary muscles, or RV specks) become LV, as in the ACDC / M&Ms convention that counts the
   papillary muscles in the cavity. Pixels enclosed by the RV cavity become RV unless the hole
   holds LV pixels (the RV never swallows the LV).

Rule 1 is applied once more at the end (rules 2 and 3 only relabel enclosed pixels, but an
enclosed region turned into LV can be a new LV island). The result is idempotent: cleaning a
cleaned map changes nothing (tested).

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

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform
from scipy import ndimage

from cardiolora.labels import LV, MYO, NUM_CLASSES, RV

__all__ = [
    "CleanCardiacLabels",
    "CleanCardiacLabelsd",
    "clean_labels",
    "enclosed_regions",
    "fill_cavity_holes",
    "keep_largest_components",
    "myocardium_encloses_lv",
]

_FULL_3D = ndimage.generate_binary_structure(3, 3)
_FACE_2D = ndimage.generate_binary_structure(2, 1)


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


def keep_largest_components(label: np.ndarray) -> np.ndarray:
    """Keep the largest 3D connected component (26-connectivity) of each structure.

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
        if not mask.any():
            continue
        comp, n = ndimage.label(mask, structure=_FULL_3D)
        if n <= 1:
            continue
        sizes = np.bincount(comp.ravel())
        sizes[0] = 0
        out[mask & (comp != int(np.argmax(sizes)))] = 0
    return out


def enclosed_regions(mask_2d: np.ndarray) -> tuple[np.ndarray, int]:
    """Connected regions (4-connectivity) of pixels not in `mask_2d` that `mask_2d` encloses.

    A pixel is enclosed when it cannot reach the image border without crossing the mask
    (``scipy.ndimage.binary_fill_holes``).

    Args:
        mask_2d: 2D boolean mask.

    Returns:
        ``(regions, n)``: an int array (0 outside the holes, 1..n per hole) and the hole count.
    """
    mask = np.asarray(mask_2d, dtype=bool)
    holes = ndimage.binary_fill_holes(mask) & ~mask
    regions, n = ndimage.label(holes, structure=_FACE_2D)
    return regions, int(n)


def myocardium_encloses_lv(slice_2d: np.ndarray) -> np.ndarray:
    """Rule 2 on one slice: what the myocardium encloses is LV cavity (or wall, if empty).

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
    """Rule 3 on one slice: pixels enclosed by the LV become LV, by the RV become RV.

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


def clean_labels(label: np.ndarray, slice_axis: int = -1) -> np.ndarray:
    """Apply the three rules of the module docstring to one 3D label map (one phase).

    Args:
        label: 3D label map (values 0..3), e.g. ``(Z, Y, X)`` or ``(X, Y, Z)``.
        slice_axis: the axis across slices (0 for ``(Z, Y, X)``, -1 / 2 for ``(X, Y, Z)``).

    Returns:
        The cleaned uint8 label map, same shape.

    Raises:
        ValueError: if `label` is not a 3D map of values 0..3 or `slice_axis` is not in -3..2.
    """
    arr = _check_label_volume(label)
    if not isinstance(slice_axis, (int, np.integer)) or not -3 <= slice_axis <= 2:
        raise ValueError(f"`slice_axis` must be an axis of a 3D array (-3..2), got {slice_axis!r}.")
    out = np.zeros_like(arr)
    box = _foreground_box(arr)
    if box is None:
        return out
    # every rule only sees the labelled box plus a background margin: the same result, less work
    crop = keep_largest_components(arr[box])
    moved = np.moveaxis(crop, int(slice_axis), 0)  # a view: edits land in `crop`
    for z in range(moved.shape[0]):
        moved[z] = fill_cavity_holes(myocardium_encloses_lv(moved[z]))
    out[box] = keep_largest_components(crop)
    return out


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
