"""Transforms the bundle needs beyond MONAI's own (array / dictionary pairs)."""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform

__all__ = ["SpacingFromPixdim", "SpacingFromPixdimd", "affine_with_spacing"]

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
