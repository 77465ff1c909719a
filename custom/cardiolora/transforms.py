"""Transforms the bundle needs beyond MONAI's own (array / dictionary pairs)."""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, MutableMapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Spacingd, Transform

__all__ = ["PathSafeSpacingd", "SpacingFromPixdim", "SpacingFromPixdimd", "affine_with_spacing", "non_meta_entries"]

logger = logging.getLogger(__name__)


def affine_with_spacing(affine: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Rescale the first three columns of a 4×4 affine to the given voxel sizes.

    ``A'[:, j] = A[:, j] · spacing_j / ||A[:3, j]||`` for j = 0, 1, 2 (direction kept, length set).

    Args:
        affine: 4×4 voxel-to-world affine.
        spacing: three positive voxel sizes (mm) along the array axes.

    Returns:
        The corrected affine (a new array).

    Raises:
        ValueError: if `affine` is not 4×4, a column is zero, or `spacing` is not three positive values.
    """
    a = np.array(affine, dtype=np.float64)
    sp = np.asarray(spacing, dtype=np.float64)
    if a.shape != (4, 4):
        raise ValueError(f"`affine` must be 4x4, got {a.shape}.")
    if sp.shape != (3,) or np.any(sp <= 0):
        raise ValueError(f"`spacing` must be three positive values, got {spacing}.")
    norms = np.linalg.norm(a[:3, :3], axis=0)
    if np.any(norms == 0):
        raise ValueError("`affine` has a zero column: no direction to rescale.")
    a[:3, :3] = a[:3, :3] / norms * sp
    return a


class SpacingFromPixdim(Transform):
    """Make a loaded NIfTI image's affine carry the voxel sizes of its header (``pixdim``).

    Some re-saved files (the published ACDC volumes among them) store an sform whose columns have
    unit length while ``pixdim`` holds the real voxel size; MONAI takes the spacing from the
    affine and would resample such a stack as if it had 1 mm voxels. When the affine's column
    norms differ from ``pixdim[1:4]`` by more than `tol` mm, the columns are rescaled to
    ``pixdim`` (directions kept) and a warning is logged; consistent files pass unchanged.

    Args:
        tol: tolerance in mm.
    """

    def __init__(self, tol: float = 1e-3) -> None:
        if tol <= 0:
            raise ValueError(f"`tol` must be positive, got {tol}.")
        self.tol = tol

    def __call__(self, img: MetaTensor) -> MetaTensor:
        if not isinstance(img, MetaTensor) or "pixdim" not in img.meta:
            return img
        pixdim = np.asarray(img.meta["pixdim"], dtype=np.float64).ravel()
        if pixdim.size < 4 or np.any(pixdim[1:4] <= 0):
            return img
        affine = np.asarray(img.affine, dtype=np.float64)
        if affine.shape != (4, 4):
            return img
        norms = np.linalg.norm(affine[:3, :3], axis=0)
        if np.allclose(norms, pixdim[1:4], atol=self.tol):
            return img
        fixed = affine_with_spacing(affine, pixdim[1:4])
        logger.warning(
            "%s: affine voxel sizes %s differ from the header pixdim %s; using pixdim",
            img.meta.get("filename_or_obj", "image"),
            np.round(norms, 4).tolist(),
            pixdim[1:4].tolist(),
        )
        img.affine = torch.as_tensor(fixed, dtype=img.affine.dtype)
        return img


class SpacingFromPixdimd(MapTransform):
    """Dictionary version of `SpacingFromPixdim`.

    Args:
        keys: keys of the images to fix.
        tol: tolerance in mm.
        allow_missing_keys: do not raise for absent keys.
    """

    def __init__(self, keys: KeysCollection, tol: float = 1e-3, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.fixer = SpacingFromPixdim(tol)

    def __call__(self, data: Mapping[Hashable, MetaTensor]) -> dict[Hashable, MetaTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.fixer(d[key])
        return d


def non_meta_entries(data: Mapping[Hashable, object], keys: Sequence[Hashable]) -> list[Hashable]:
    """The entries named ``f"{key}_..."`` for a `key` in `keys` that are not metadata dicts.

    MONAI 1.6's ``Spacingd`` takes every entry whose name starts with ``f"{key}_"`` for a
    metadata dict of `key` and calls ``.update`` on it; MONAI Label's ``BasicInferTask`` puts the
    string ``image_path`` there.

    Args:
        data: the data dictionary.
        keys: the image keys a transform works on.

    Returns:
        The names of such entries whose value is not a mutable mapping, in the dict's order.
    """
    prefixes = tuple(f"{k}_" for k in keys if isinstance(k, str))
    return [
        name
        for name, value in data.items()
        if isinstance(name, str) and name.startswith(prefixes) and not isinstance(value, MutableMapping)
    ]


class PathSafeSpacingd(Spacingd):
    """MONAI's ``Spacingd`` that leaves ``f"{key}_*"`` entries which are not dicts alone.

    MONAI 1.6 ``Spacingd`` updates every entry starting with ``f"{key}_"`` with the image's
    metadata (for NIfTI inputs). MONAI Label 0.8.5's ``BasicInferTask`` adds the request's image
    path as the string ``data["image_path"]``, so the bundle's inference failed under MONAI Label
    with ``AttributeError: 'str' object has no attribute 'update'`` (docs/README.md, "MONAI Label",
    has the minimal reproduction). This subclass sets those entries aside (`non_meta_entries`),
    runs ``Spacingd`` unchanged, and puts them back: same resampling, same inverse, same results
    as ``Spacingd`` on data without such entries (tests/test_monailabel_contract.py).

    Args:
        keys, pixdim, ...: as ``monai.transforms.Spacingd``.

    Example:
        >>> t = PathSafeSpacingd("image", pixdim=(2.0, 2.0, -1.0))  # doctest: +SKIP
        >>> t({"image": loaded_nifti, "image_path": "/data/case.nii.gz"})["image_path"]  # doctest: +SKIP
        '/data/case.nii.gz'
    """

    def __call__(self, data: Mapping[Hashable, torch.Tensor], lazy: bool | None = None) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        held = {name: d.pop(name) for name in non_meta_entries(d, self.keys)}
        out = super().__call__(d, lazy=lazy)
        out.update(held)
        return out
