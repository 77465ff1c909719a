"""NIfTI reading and writing shared by the NIfTI layouts (ACDC, M&Ms-2).

Arrays in the project are ``(Z, Y, X)`` (``(T, Z, Y, X)`` for a cine); NIfTI stores ``(X, Y, Z[, T])``
with a RAS affine (:func:`cardiolora.data.cine.nifti_affine`). :func:`read_nifti` returns the
stored order, :func:`nifti_gz_bytes` takes the project order.

Intensity storage when writing: NIfTI images are float32 by default: lossless, read back
bit-exact. With ``"int16"`` nibabel stores scaled integers (``scl_slope`` / ``scl_inter`` chosen to
span the int16 range), and the image is recovered within half a slope step
(``|error| <= scl_slope / 2``). Labels are uint8. Geometry follows :mod:`cardiolora.data.cine`
exactly; gzip headers carry no timestamp, so a rerun writes the same bytes.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError

from cardiolora.data.cine import CineStudy, nifti_affine
from cardiolora.data.record_checks import frame_interval_ms
from cardiolora.data.records import DataError

__all__ = ["NIFTI_SUFFIXES", "find_nifti", "read_nifti", "nifti_gz_bytes"]

NIFTI_SUFFIXES = (".nii.gz", ".nii")
_READ_ERRORS = (OSError, EOFError, ValueError, zlib.error, ImageFileError)


def find_nifti(stem: Path) -> Path | None:
    """Return ``stem + .nii.gz`` or ``stem + .nii`` if one exists."""
    for suffix in NIFTI_SUFFIXES:
        candidate = stem.with_name(stem.name + suffix)
        if candidate.is_file():
            return candidate
    return None


def read_nifti(path: str | Path) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """Read a 3D NIfTI file: ``(array (X, Y, Z), affine, zooms (x, y, z))``.

    Trailing axes of length 1 (``(X, Y, Z, 1)``) are dropped.

    Raises:
        DataError: if the file is missing, unreadable (corrupt or truncated) or not 3D.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(p, "file not found")
    try:
        img = nib.load(str(p))
        data = np.asanyarray(img.dataobj)
    except _READ_ERRORS as err:
        reason = f"cannot read NIfTI file, corrupt or truncated? ({type(err).__name__}: {err})"
        raise DataError(p, reason) from err
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise DataError(p, f"expected a 3D volume (X, Y, Z), got shape {tuple(img.shape)}")
    z = img.header.get_zooms()
    zooms = (float(z[0]), float(z[1]), float(z[2]))
    return data, np.asarray(img.affine, dtype=np.float64), zooms


def nifti_gz_bytes(data_tzyx_or_zyx: np.ndarray, study: CineStudy, dtype: str) -> bytes:
    """Encode a ``(Z, Y, X)`` or ``(T, Z, Y, X)`` array as gzipped NIfTI-1 bytes (X, Y, Z[, T]).

    Args:
        data_tzyx_or_zyx: the array in project order.
        study: the study that supplies the affine, spacing and trigger times.
        dtype: ``"float32"``, ``"int16"`` (scaled integers chosen by nibabel) or ``"uint8"``.

    Returns:
        The ``.nii.gz`` file content (deterministic: the gzip header has no timestamp).
    """
    arr = np.asarray(data_tzyx_or_zyx)
    if arr.ndim not in (3, 4):
        raise ValueError(f"expected a (Z, Y, X) or (T, Z, Y, X) array, got shape {arr.shape}.")
    arr_nib = np.ascontiguousarray(arr.transpose(tuple(reversed(range(arr.ndim)))))  # -> (X, Y, Z[, T])
    affine = nifti_affine(study.affine_lps)
    payload = arr_nib.astype(np.float32) if dtype in ("float32", "int16") else arr_nib.astype(np.uint8)
    img = nib.Nifti1Image(payload, affine)
    hdr = img.header
    hdr.set_data_dtype(np.dtype(dtype))
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    hdr.set_xyzt_units("mm", "msec")
    zooms = tuple(float(s) for s in study.spacing_zyx[::-1])
    if arr.ndim == 4:
        zooms = zooms + (frame_interval_ms(study),)
    hdr.set_zooms(zooms)
    return gzip.compress(img.to_bytes(), compresslevel=1, mtime=0)
