"""NIfTI in and out for the site application: a stack or cine in, label maps and image out.

Input. A ``.nii`` / ``.nii.gz`` file is one study:

* 3D ``(X, Y, Z)`` — one short-axis stack (a single phase: segmented, volumes reported, no EF);
* 4D ``(X, Y, Z, T)`` — a cine (``Z = 1`` is a 2D+t cine of one slice).

The voxel-to-world affine is the file's (sform, else qform, as nibabel gives it) with the voxel
sizes of ``pixdim`` when the two disagree — exactly what the bundle's
:class:`~cardiolora.transforms.SpacingFromPixdim` does, so the application and
``python -m monai.bundle run`` see the same geometry. Trigger times come from ``pixdim[4]``
(converted to ms with the header's time unit) when it is positive, else they are unknown (NaN).

Output (all with the affine ``nifti_affine(affine_lps)`` of the input, so every voxel of a label
map lies where the matching input voxel lies):

* ``image.nii.gz`` — the input cine ``(X, Y, Z, T)`` float32 (``(X, Y, Z)`` for a single phase);
* ``labels.nii.gz`` — the labels ``(X, Y, Z, T)`` uint8 (0 bg, 1 LV, 2 MYO, 3 RV; 3D likewise);
* ``labels_ED.nii.gz`` / ``labels_ES.nii.gz`` — the labels of the ED / ES phase ``(X, Y, Z)``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import nibabel as nib
import numpy as np

from cardiolora.data.cine import LPS_TO_RAS, CineStudy, nifti_affine
from cardiolora.errors import InputError
from cardiolora.transforms import affine_with_spacing

__all__ = ["NIFTI_SUFFIXES", "is_nifti", "nifti_study_name", "read_nifti_cine", "write_nifti_outputs"]

NIFTI_SUFFIXES: tuple[str, ...] = (".nii", ".nii.gz")
_TIME_UNIT_MS = {"sec": 1000.0, "msec": 1.0, "usec": 0.001}


def is_nifti(path: str | os.PathLike) -> bool:
    """True when the file name ends in ``.nii`` or ``.nii.gz`` (case-insensitive)."""
    name = Path(path).name.lower()
    return any(name.endswith(s) for s in NIFTI_SUFFIXES)


def nifti_study_name(path: str | os.PathLike) -> str:
    """A NIfTI file's study name: the file name without ``.nii`` / ``.nii.gz``."""
    name = Path(path).name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def read_nifti_cine(path: str | os.PathLike, max_bytes: int) -> CineStudy:
    """Read a NIfTI stack ``(X, Y, Z)`` or cine ``(X, Y, Z, T)`` as a :class:`CineStudy`.

    Args:
        path: the ``.nii`` / ``.nii.gz`` file.
        max_bytes: the largest float32 pixel memory to allocate; checked on the header first.

    Returns:
        The study (``label=None``), ``image`` ``(T, Z, Y, X)`` float32, ``affine_lps`` from the
        file, ``meta["source"] = "nifti"``.

    Raises:
        InputError: (the application's input error) naming the file, if it cannot be read
            as NIfTI, is not 3D / 4D, is larger than `max_bytes`, holds non-finite values or has
            a degenerate affine.
    """
    p = Path(path)
    try:
        img = nib.load(str(p))
    except Exception as exc:  # noqa: BLE001 - nibabel raises many types on corrupt files
        raise InputError(f"{p}: not a readable NIfTI file ({type(exc).__name__}: {exc}).") from exc
    shape = tuple(int(n) for n in img.shape)
    if len(shape) == 5 and shape[3] == 1:
        shape = (shape[0], shape[1], shape[2], shape[4])
    if len(shape) not in (3, 4) or min(shape) < 1:
        raise InputError(f"{p}: NIfTI shape {tuple(img.shape)}; expected (X, Y, Z) or (X, Y, Z, T).")
    n_bytes = int(np.prod(shape)) * 4
    if n_bytes > max_bytes:
        raise InputError(
            f"{p}: needs {n_bytes} bytes ({n_bytes / 1024**3:.2f} GiB) of float32 memory for shape {shape}, "
            f"more than the limit {max_bytes} (--max-gb)."
        )
    try:
        data = np.asarray(img.dataobj, dtype=np.float32).reshape(shape)
    except Exception as exc:  # noqa: BLE001 - truncated gzip streams raise EOFError, zlib.error ...
        raise InputError(f"{p}: cannot read the voxel data ({type(exc).__name__}: {exc}); truncated?") from exc
    if not np.all(np.isfinite(data)):
        raise InputError(f"{p}: the image holds NaN or infinite values.")
    affine = np.asarray(img.affine, dtype=np.float64)
    pixdim = np.asarray(img.header.get_zooms(), dtype=np.float64)
    norms = np.linalg.norm(affine[:3, :3], axis=0)
    if np.any(norms <= 0) or not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise InputError(f"{p}: the affine is degenerate ({affine[:3, :3].tolist()}).")
    if pixdim.size >= 3 and np.all(pixdim[:3] > 0) and not np.allclose(norms, pixdim[:3], atol=1e-3):
        affine = affine_with_spacing(affine, pixdim[:3])
    cine = data[..., None] if data.ndim == 3 else data
    image = np.ascontiguousarray(np.transpose(cine, (3, 2, 1, 0)))  # (T, Z, Y, X)
    n_phases = image.shape[0]
    times = np.full(n_phases, np.nan)
    if len(shape) == 4 and pixdim.size >= 4 and pixdim[3] > 0:
        unit = img.header.get_xyzt_units()[1]
        times = np.arange(n_phases) * float(pixdim[3]) * _TIME_UNIT_MS.get(unit, 1.0)
    affine_lps = LPS_TO_RAS @ affine
    spacing = np.linalg.norm(affine_lps[:3, :3], axis=0)  # (x, y, z)
    return CineStudy(
        subject_id=nifti_study_name(p),
        image=image,
        label=None,
        spacing_zyx=(float(spacing[2]), float(spacing[1]), float(spacing[0])),
        affine_lps=affine_lps,
        trigger_times_ms=times,
        ed_phase=0,
        es_phase=0,
        vendor="unknown",
        meta={"source": "nifti", "source_file": str(p), "ed_es_known": False, "nifti_shape": list(img.shape)},
    )


def _save(array_xyz_t: np.ndarray, affine: np.ndarray, path: Path, dtype: type, time_step_ms: float | None) -> Path:
    img = nib.Nifti1Image(array_xyz_t.astype(dtype), affine)
    img.header.set_xyzt_units("mm", "msec")
    if array_xyz_t.ndim == 4 and time_step_ms is not None and math.isfinite(time_step_ms) and time_step_ms > 0:
        zooms = list(img.header.get_zooms())
        zooms[3] = float(time_step_ms)
        img.header.set_zooms(zooms)
    img.header.set_qform(affine, code=1)
    img.header.set_sform(affine, code=1)
    nib.save(img, str(path))
    return path


def write_nifti_outputs(
    study: CineStudy, label_tzyx: np.ndarray, out_dir: str | os.PathLike, ed: int | None, es: int | None
) -> dict[str, Path]:
    """Write the input image and the label maps as NIfTI (module docstring) into `out_dir`.

    Args:
        study: the input study (its image and affine).
        label_tzyx: uint8 labels ``(T, Z, Y, X)`` on the study's grid.
        out_dir: the folder (created).
        ed: ED phase (``None``: no ED file, e.g. a single phase).
        es: ES phase (``None``: no ES file).

    Returns:
        ``{"image": path, "labels": path, "labels_ED": path, "labels_ES": path}`` (ED/ES when given).

    Raises:
        ValueError: if `label_tzyx` does not have the image's shape.
    """
    if label_tzyx.shape != study.image.shape:
        raise ValueError(f"`label_tzyx` {label_tzyx.shape} does not match the image {study.image.shape}.")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    affine = nifti_affine(study.affine_lps)
    times = np.asarray(study.trigger_times_ms, dtype=float)
    step = float(np.median(np.diff(times))) if times.size > 1 and np.all(np.isfinite(times)) else None
    if study.n_phases == 1:  # a single phase (a 3D stack) is written 3D, like the input
        image, labels = np.transpose(study.image[0], (2, 1, 0)), np.transpose(label_tzyx[0], (2, 1, 0))
    else:
        image, labels = np.transpose(study.image, (3, 2, 1, 0)), np.transpose(label_tzyx, (3, 2, 1, 0))
    paths = {
        "image": _save(image, affine, out / "image.nii.gz", np.float32, step),
        "labels": _save(labels, affine, out / "labels.nii.gz", np.uint8, step),
    }
    for name, phase in (("labels_ED", ed), ("labels_ES", es)):
        if phase is not None:
            paths[name] = _save(
                np.transpose(label_tzyx[phase], (2, 1, 0)), affine, out / f"{name}.nii.gz", np.uint8, None
            )
    return paths
