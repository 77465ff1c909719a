"""Phantom DICOM writer: a :class:`~cardiolora.data.cine.CineStudy` as classic MR Image Storage.

The writer mirrors the reader of this package: what it writes reads back through
:func:`cardiolora.dicom.read_short_axis_cine` with the same array, affine and trigger times
(the slice-order, phase-order and geometry conventions are in :mod:`cardiolora.dicom.geometry`).

* :func:`write_dicom_cine` — one classic single-frame MR Image Storage file
  (:data:`pydicom.uid.MRImageStorage`) per (slice, phase), named
  ``<file_prefix>_<slice:03d>_<phase:03d>.dcm`` (``IM_000_000.dcm`` ...).
* :func:`write_dicom_localizers` — adds a long-axis cine series and a single-image localiser to
  the same study folder (``LAX_000_<phase:03d>.dcm``, ``LOC_000_000.dcm``) so that DICOM
  ingestion can be tested on picking the short-axis series.

Intensity storage: pixels are unsigned 12-bit integers (``BitsAllocated`` 16, ``BitsStored`` 12)
with one ``RescaleSlope`` / ``RescaleIntercept`` per series: intercept = min(0, series minimum)
(0 for the usual non-negative images), slope = (series maximum - intercept) / 4095 (written as a
decimal string, and the stored integers are computed with that written slope).
``stored * slope + intercept`` recovers the image within ``slope / 2`` (+ float rounding), i.e.
within 1/8190 of the series range.

Geometry follows :mod:`cardiolora.data.cine` exactly: the affine's columns must have the lengths
``spacing_zyx`` reversed and be mutually orthogonal (checked; a ``ValueError`` names the study).
ImagePositionPatient of slice ``z`` is ``affine_lps @ (0, 0, z, 1)``, ImageOrientationPatient the
unit columns 0 and 1 of ``affine_lps``. The reader orders slices along row cosine × column
cosine (:mod:`cardiolora.dicom.geometry`), so a study whose slice axis points that way reads back
unchanged, and one written with the slice axis reversed reads back reversed (image and affine
together, every voxel at the same LPS point).

Study ``meta`` keys read (all optional): ``sex`` (``"M"``, ``"F"``, ``"O"``), ``age_years``,
``height_cm``, ``weight_kg``, ``manufacturer``, ``scanner`` (model name), ``field_strength_t``
(tesla), ``study_date`` (``YYYYMMDD``, default ``20240101`` so reruns are byte-identical).

Every file is written through a hidden temporary name in the same folder and renamed
(:func:`cardiolora.atomic.atomic_write_bytes`).
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid
from pydicom.valuerep import format_number_as_ds

from cardiolora.atomic import atomic_write_bytes
from cardiolora.data.cine import CineStudy
from cardiolora.data.record_checks import (
    checked_image,
    field_strength,
    frame_interval_ms,
    is_positive_int,
    manufacturer_and_model,
    meta_float,
    prepare_dir,
    study_geometry,
)

__all__ = [
    "DICOM_STORED_MAX",
    "write_dicom_cine",
    "write_dicom_localizers",
]

#: Largest stored pixel value (12 bits stored in 16 allocated).
DICOM_STORED_MAX = 4095
_BITS_STORED = 12
#: Attributes a series added by :func:`write_dicom_localizers` copies from the short-axis file.
_SHARED_KEYWORDS: tuple[str, ...] = (
    "SpecificCharacterSet",
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "PatientAge",
    "PatientSize",
    "PatientWeight",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
    "StudyDescription",
    "FrameOfReferenceUID",
    "PositionReferenceIndicator",
    "Manufacturer",
    "ManufacturerModelName",
    "MagneticFieldStrength",
    "PatientPosition",
    "InstitutionName",
)


def _ds(value: float) -> str:
    """A DICOM DS string (at most 16 characters) for `value`."""
    return format_number_as_ds(float(value))


def _uid(uid_seed: str | None, *parts: object) -> str:
    """A deterministic UID from `uid_seed` and `parts`, or a random one when `uid_seed` is None.

    The parts are joined with a separator before hashing: pydicom concatenates its entropy
    sources as they are, so (slice 11, phase 0) and (slice 1, phase 10) would collide.
    """
    if uid_seed is None:
        return generate_uid()
    return generate_uid(entropy_srcs=["\x1f".join([str(uid_seed), *(str(p) for p in parts)])])


def _rescale(values: np.ndarray) -> tuple[str, str]:
    """RescaleSlope and RescaleIntercept (DS strings) mapping 0..DICOM_STORED_MAX onto `values`."""
    lo = float(values.min())
    hi = float(values.max())
    intercept = _ds(min(lo, 0.0))
    span = hi - float(intercept)
    slope = _ds(span / DICOM_STORED_MAX if span > 0 else 1.0)
    return slope, intercept


def _to_stored(frame: np.ndarray, slope: str, intercept: str) -> np.ndarray:
    """Integers ``round((frame - intercept) / slope)`` clipped to 0..DICOM_STORED_MAX as uint16."""
    stored = np.rint((frame.astype(np.float64) - float(intercept)) / float(slope))
    return np.clip(stored, 0, DICOM_STORED_MAX).astype("<u2")


def _window(values: np.ndarray) -> tuple[str, str]:
    """WindowCenter and WindowWidth (DS strings) from the 1st and 99.5th percentiles."""
    lo, hi = np.percentile(values, [1.0, 99.5])
    width = max(float(hi - lo), 1e-3)
    return _ds((float(hi) + float(lo)) / 2), _ds(width)


def _rr_interval_ms(study: CineStudy) -> float:
    """Nominal RR interval: last trigger time plus one frame interval."""
    times = np.asarray(study.trigger_times_ms, dtype=np.float64)
    return float(times.max()) + frame_interval_ms(study)


def _patient_study_attrs(study: CineStudy, patient_id: str, study_uid: str, for_uid: str) -> dict[str, object]:
    """Patient, study, frame-of-reference and equipment attributes of `study`."""
    manufacturer, model = manufacturer_and_model(study)
    date = str(study.meta.get("study_date", "20240101"))
    if len(date) != 8 or not date.isdigit():
        raise ValueError(f"`meta['study_date']` of {study.subject_id} must be YYYYMMDD, got {date!r}.")
    attrs: dict[str, object] = {
        "SpecificCharacterSet": "ISO_IR 100",
        "PatientName": patient_id,
        "PatientID": patient_id,
        "PatientBirthDate": "",
        "PatientSex": str(study.meta.get("sex") or "O").strip().upper()[:1] or "O",
        "StudyInstanceUID": study_uid,
        "StudyDate": date,
        "StudyTime": "090000",
        "StudyID": "1",
        "AccessionNumber": "",
        "ReferringPhysicianName": "",
        "StudyDescription": "CARDIAC CINE",
        "FrameOfReferenceUID": for_uid,
        "PositionReferenceIndicator": "",
        "Manufacturer": manufacturer,
        "ManufacturerModelName": model,
        "MagneticFieldStrength": _ds(field_strength(study)),
        "PatientPosition": "HFS",
        "InstitutionName": "cardiolora phantom",
    }
    if attrs["PatientSex"] not in ("M", "F", "O"):
        raise ValueError(f"`meta['sex']` of {study.subject_id} must be M, F or O, got {study.meta['sex']!r}.")
    age = meta_float(study, "age_years")
    if age is not None:
        attrs["PatientAge"] = f"{min(int(age), 999):03d}Y"
    height = meta_float(study, "height_cm")
    if height is not None:
        attrs["PatientSize"] = _ds(round(height / 100.0, 4))
    weight = meta_float(study, "weight_kg")
    if weight is not None:
        attrs["PatientWeight"] = _ds(round(weight, 3))
    return attrs


def _mr_instance(
    shared: Mapping[str, object],
    *,
    series_uid: str,
    series_number: int,
    series_description: str,
    sop_uid: str,
    instance_number: int,
    image_type: Sequence[str],
    stored: np.ndarray,
    slope: str,
    intercept: str,
    window: tuple[str, str],
    position: np.ndarray,
    row_cos: np.ndarray,
    col_cos: np.ndarray,
    pixel_spacing_rc: tuple[float, float],
    slice_thickness: float,
    extra: Mapping[str, object],
) -> bytes:
    """Encode one classic single-frame MR Image Storage instance as DICOM Part 10 bytes."""
    ds = Dataset()
    for keyword, value in shared.items():
        setattr(ds, keyword, value)
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.ImageType = list(image_type)
    ds.Modality = "MR"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = str(int(series_number))
    ds.SeriesDescription = series_description
    ds.ProtocolName = series_description
    ds.SeriesDate = ds.StudyDate
    ds.SeriesTime = "091500"
    ds.ContentDate = ds.StudyDate
    ds.ContentTime = "091500"
    ds.InstanceNumber = str(int(instance_number))
    # MR image module, plausible for a 2D balanced SSFP cine.
    ds.ScanningSequence = "GR"
    ds.SequenceVariant = ["SK", "SS"]
    ds.ScanOptions = ""
    ds.MRAcquisitionType = "2D"
    ds.SequenceName = "*tfi2d1"
    ds.AngioFlag = "N"
    ds.RepetitionTime = "3.0"
    ds.EchoTime = "1.5"
    ds.EchoTrainLength = "1"
    ds.FlipAngle = "55"
    ds.ImagingFrequency = _ds(42.577478518 * float(str(shared["MagneticFieldStrength"])))
    ds.ImagedNucleus = "1H"
    ds.NumberOfAverages = "1"
    # Plane geometry.
    ds.ImagePositionPatient = [_ds(v) for v in position]
    ds.ImageOrientationPatient = [_ds(v) for v in (*row_cos, *col_cos)]
    ds.PixelSpacing = [_ds(pixel_spacing_rc[0]), _ds(pixel_spacing_rc[1])]
    ds.SliceThickness = _ds(slice_thickness)
    normal = np.cross(row_cos, col_cos)
    ds.SliceLocation = _ds(float(np.dot(position, normal)))
    for keyword, value in extra.items():
        setattr(ds, keyword, value)
    # Image pixel module.
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = (int(n) for n in stored.shape)
    ds.BitsAllocated = 16
    ds.BitsStored = _BITS_STORED
    ds.HighBit = _BITS_STORED - 1
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = intercept
    ds.RescaleSlope = slope
    ds.RescaleType = "US"
    ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = np.ascontiguousarray(stored, dtype="<u2").tobytes()

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def write_dicom_cine(
    study: CineStudy,
    out_dir: str | os.PathLike,
    *,
    patient_id: str | None = None,
    study_uid: str | None = None,
    series_number: int = 5,
    series_description: str = "SA cine",
    uid_seed: str | None = None,
    file_prefix: str = "IM",
) -> list[Path]:
    """Write a short-axis cine as classic single-frame MR Image Storage files (one per slice, phase).

    File ``<file_prefix>_<slice:03d>_<phase:03d>.dcm`` holds slice ``z``, phase ``t`` (explicit VR
    little endian, Part 10 with preamble). Per instance: ``ImagePositionPatient = affine_lps @
    (0, 0, z, 1)``, ``ImageOrientationPatient`` = row cosine then column cosine (unit columns 0
    and 1 of ``affine_lps``), ``PixelSpacing = [row spacing, column spacing]``,
    ``SliceThickness`` (``study.slice_thickness_mm`` or the slice spacing),
    ``SpacingBetweenSlices``, ``SliceLocation`` (position projected on row × column cosine),
    ``TriggerTime``, ``CardiacNumberOfImages`` = ``NumberOfTemporalPositions`` = T,
    ``TemporalPositionIdentifier = t + 1``, ``InstanceNumber = z * T + t + 1`` (slice-major),
    ``AcquisitionNumber = z + 1`` (one breath-hold per slice). Pixels: 12-bit unsigned integers
    with one series-wide RescaleSlope / RescaleIntercept (module docstring: error <= slope / 2).
    One StudyInstanceUID, SeriesInstanceUID and FrameOfReferenceUID; unique SOPInstanceUIDs.
    With `uid_seed` every UID derives from (`uid_seed`, subject id, role), dates are fixed, so a
    rerun writes byte-identical files.

    Args:
        study: the study (labels are not written).
        out_dir: output folder, created if absent; existing files of the same names are replaced.
        patient_id: PatientID and PatientName; default ``study.subject_id``.
        study_uid: StudyInstanceUID; default derived from `uid_seed` (random without it).
        series_number: SeriesNumber (>= 1).
        series_description: SeriesDescription and ProtocolName (non-empty, <= 64 characters).
        uid_seed: seed text for deterministic UIDs; ``None`` for random UIDs.
        file_prefix: file name prefix (letters, digits, ``-`` and ``_``).

    Returns:
        The written paths in InstanceNumber order (slice-major: all phases of slice 0 first).

    Raises:
        ValueError: if `out_dir` is a file, `series_number` < 1, `series_description` or
            `file_prefix` is malformed, `study_uid` is not a valid UID, the image is not finite,
            or the geometry does not follow the convention.
    """
    if not isinstance(study, CineStudy):
        raise ValueError(f"`study` must be a CineStudy, got {type(study).__name__}.")
    if not is_positive_int(series_number):
        raise ValueError(f"`series_number` must be an integer >= 1, got {series_number!r}.")
    if not series_description or len(series_description) > 64 or "\\" in series_description:
        raise ValueError(f"`series_description` must be 1-64 characters without backslash, got {series_description!r}.")
    if not file_prefix or not all(c.isalnum() or c in "-_" for c in file_prefix):
        raise ValueError(f"`file_prefix` must be letters, digits, '-' or '_', got {file_prefix!r}.")
    if study_uid is not None and (len(study_uid) > 64 or not pydicom.uid.RE_VALID_UID.match(study_uid)):
        raise ValueError(f"`study_uid` {study_uid!r} is not a valid DICOM UID.")
    row_cos, col_cos, _ = study_geometry(study)
    image = checked_image(study)
    out = prepare_dir(out_dir, "out_dir")

    pid = study.subject_id if patient_id is None else str(patient_id)
    if not pid or len(pid) > 64 or "\\" in pid:
        raise ValueError(f"`patient_id` must be 1-64 characters without backslash, got {pid!r}.")
    suid = study_uid if study_uid is not None else _uid(uid_seed, study.subject_id, "study")
    for_uid = _uid(uid_seed, study.subject_id, suid, "frame-of-reference")
    shared = _patient_study_attrs(study, pid, suid, for_uid)
    series_uid = _uid(uid_seed, study.subject_id, suid, "series", series_number)

    slope, intercept = _rescale(image)
    window = _window(image)
    t_count, z_count = study.n_phases, study.n_slices
    spacing_z, spacing_y, spacing_x = (float(s) for s in study.spacing_zyx)
    thickness = float(study.slice_thickness_mm) if study.slice_thickness_mm else spacing_z
    rr = _rr_interval_ms(study)
    paths: list[Path] = []
    for z in range(z_count):
        position = (study.affine_lps @ np.array([0.0, 0.0, float(z), 1.0]))[:3]
        for t in range(t_count):
            extra = {
                "SpacingBetweenSlices": _ds(spacing_z),
                "TriggerTime": _ds(float(study.trigger_times_ms[t])),
                "NominalInterval": str(int(round(rr))),
                "HeartRate": str(int(round(60000.0 / rr))) if rr > 0 else "0",
                "CardiacNumberOfImages": str(t_count),
                "TemporalPositionIdentifier": str(t + 1),
                "NumberOfTemporalPositions": str(t_count),
                "AcquisitionNumber": str(z + 1),
                "ImagesInAcquisition": str(t_count),
            }
            data = _mr_instance(
                shared,
                series_uid=series_uid,
                series_number=int(series_number),
                series_description=series_description,
                sop_uid=_uid(uid_seed, study.subject_id, series_uid, "instance", z, t),
                instance_number=z * t_count + t + 1,
                image_type=["ORIGINAL", "PRIMARY", "M", "ND"],
                stored=_to_stored(image[t, z], slope, intercept),
                slope=slope,
                intercept=intercept,
                window=window,
                position=position,
                row_cos=row_cos,
                col_cos=col_cos,
                pixel_spacing_rc=(spacing_y, spacing_x),
                slice_thickness=thickness,
                extra=extra,
            )
            path = out / f"{file_prefix}_{z:03d}_{t:03d}.dcm"
            atomic_write_bytes(data, path)
            paths.append(path)
    return paths


def _sample_plane(
    volume_zyx: np.ndarray,
    affine_lps: np.ndarray,
    origin: np.ndarray,
    row_cos: np.ndarray,
    col_cos: np.ndarray,
    shape_rc: tuple[int, int],
    spacing: float,
) -> np.ndarray:
    """Nearest-neighbour cut of a ``(Z, Y, X)`` volume along a plane (0 outside the volume).

    Pixel ``(r, c)`` of the plane sits at ``origin + c * spacing * row_cos + r * spacing * col_cos``
    (DICOM's pixel geometry).
    """
    rows, cols = shape_rc
    r = np.arange(rows, dtype=np.float64)[:, None, None]
    c = np.arange(cols, dtype=np.float64)[None, :, None]
    points = origin + c * spacing * row_cos + r * spacing * col_cos
    inverse = np.linalg.inv(affine_lps)
    xyz = np.rint(points @ inverse[:3, :3].T + inverse[:3, 3]).astype(np.int64)
    z_n, y_n, x_n = volume_zyx.shape
    inside = (
        (xyz[..., 0] >= 0)
        & (xyz[..., 0] < x_n)
        & (xyz[..., 1] >= 0)
        & (xyz[..., 1] < y_n)
        & (xyz[..., 2] >= 0)
        & (xyz[..., 2] < z_n)
    )
    out = np.zeros((rows, cols), dtype=np.float32)
    idx = xyz[inside]
    out[inside] = volume_zyx[idx[:, 2], idx[:, 1], idx[:, 0]]
    return out


def write_dicom_localizers(
    study: CineStudy,
    out_dir: str | os.PathLike,
    reference_file: str | os.PathLike,
    *,
    uid_seed: str | None = None,
    n_lax_phases: int = 3,
    series_numbers: tuple[int, int] = (1, 2),
) -> list[Path]:
    """Add a localiser and a long-axis cine series to the study of an already written SA series.

    Both series share the StudyInstanceUID, FrameOfReferenceUID, patient and equipment attributes
    of `reference_file` (one file written by :func:`write_dicom_cine`) and get their own
    SeriesInstanceUIDs, so a DICOM-ingestion stage can be tested on picking the short-axis cine:

    * ``LOC_000_000.dcm`` — series ``series_numbers[0]``, "localizer", one 64×64 image
      (ImageType ``ORIGINAL\\PRIMARY\\LOCALIZER``) in the standard plane (axial, coronal or
      sagittal) least parallel to the short-axis planes, through the volume centre.
    * ``LAX_000_<phase:03d>.dcm`` — series ``series_numbers[1]``, "4CH cine", `n_lax_phases`
      phases (evenly chosen) of a plane that contains the short-axis row direction and the slice
      direction (perpendicular to the short-axis planes), with trigger times.

    Pixels are nearest-neighbour cuts of the study volume (0 outside it), stored as in
    :func:`write_dicom_cine`.

    Args:
        study: the study the short-axis series was written from.
        out_dir: output folder (usually the folder of the short-axis series).
        reference_file: a DICOM file of the short-axis series.
        uid_seed: seed text for deterministic series / instance UIDs; ``None`` for random ones.
        n_lax_phases: number of long-axis phases, 1..T.
        series_numbers: SeriesNumber of the localiser and of the long-axis cine (distinct, >= 1).

    Returns:
        The written paths: the localiser first, then the long-axis phases in order.

    Raises:
        ValueError: if `out_dir` is a file, `reference_file` is missing or lacks
            StudyInstanceUID / FrameOfReferenceUID (naming the file), `n_lax_phases` is out of
            range, `series_numbers` is malformed, or the study geometry is invalid.
    """
    if not isinstance(study, CineStudy):
        raise ValueError(f"`study` must be a CineStudy, got {type(study).__name__}.")
    if not is_positive_int(n_lax_phases) or n_lax_phases > study.n_phases:
        raise ValueError(f"`n_lax_phases` must be an integer in [1, {study.n_phases}], got {n_lax_phases!r}.")
    numbers = tuple(series_numbers)
    if len(numbers) != 2 or len(set(numbers)) != 2 or not all(is_positive_int(n) for n in numbers):
        raise ValueError(f"`series_numbers` must be two distinct integers >= 1, got {series_numbers!r}.")
    ref_path = Path(reference_file)
    if not ref_path.is_file():
        raise ValueError(f"`reference_file` {ref_path} does not exist or is not a file.")
    ref = pydicom.dcmread(ref_path, stop_before_pixels=True)
    for keyword in ("StudyInstanceUID", "FrameOfReferenceUID", "PatientID", "MagneticFieldStrength"):
        if keyword not in ref:
            raise ValueError(f"{ref_path}: `{keyword}` is missing; not a file written by write_dicom_cine.")
    row_cos, col_cos, slice_dir = study_geometry(study)
    image = checked_image(study)
    out = prepare_dir(out_dir, "out_dir")
    shared = {k: ref[k].value for k in _SHARED_KEYWORDS if k in ref}
    suid = str(ref.StudyInstanceUID)

    centre = (
        study.affine_lps
        @ np.array([(study.image.shape[3] - 1) / 2, (study.image.shape[2] - 1) / 2, (study.n_slices - 1) / 2, 1.0])
    )[:3]
    extent = np.array(study.image.shape[:0:-1], dtype=np.float64) * np.asarray(study.spacing_zyx[::-1])
    paths: list[Path] = []

    # Localiser: the standard plane whose normal is least parallel to the short-axis normal.
    normal = np.cross(row_cos, col_cos)
    planes = {
        "axial": (np.array([1.0, 0, 0]), np.array([0, 1.0, 0])),
        "coronal": (np.array([1.0, 0, 0]), np.array([0, 0, -1.0])),
        "sagittal": (np.array([0, 1.0, 0]), np.array([0, 0, -1.0])),
    }
    loc_row, loc_col = min(planes.values(), key=lambda rc: abs(float(np.dot(np.cross(*rc), normal))))
    loc_n = 64
    loc_spacing = round(1.5 * float(np.linalg.norm(extent)) / loc_n, 3)
    loc_origin = centre - (loc_n - 1) / 2 * loc_spacing * (loc_row + loc_col)
    loc_pixels = _sample_plane(
        image[study.ed_phase], study.affine_lps, loc_origin, loc_row, loc_col, (loc_n, loc_n), loc_spacing
    )
    loc_series = _uid(uid_seed, study.subject_id, suid, "series", numbers[0], "localizer")
    slope, intercept = _rescale(loc_pixels)
    data = _mr_instance(
        shared,
        series_uid=loc_series,
        series_number=int(numbers[0]),
        series_description="localizer",
        sop_uid=_uid(uid_seed, study.subject_id, loc_series, "instance", 0, 0),
        instance_number=1,
        image_type=["ORIGINAL", "PRIMARY", "LOCALIZER"],
        stored=_to_stored(loc_pixels, slope, intercept),
        slope=slope,
        intercept=intercept,
        window=_window(loc_pixels),
        position=loc_origin,
        row_cos=loc_row,
        col_cos=loc_col,
        pixel_spacing_rc=(loc_spacing, loc_spacing),
        slice_thickness=8.0,
        extra={"AcquisitionNumber": "1"},
    )
    path = out / "LOC_000_000.dcm"
    atomic_write_bytes(data, path)
    paths.append(path)

    # Long-axis cine: the plane spanned by the SA row direction and the slice direction.
    lax_spacing = float(min(study.spacing_zyx[1:]))
    lax_cols = min(256, int(math.ceil(extent[0] / lax_spacing)))
    lax_rows = min(256, int(math.ceil(1.5 * extent[2] / lax_spacing)))
    lax_origin = centre - lax_spacing * ((lax_cols - 1) / 2 * row_cos + (lax_rows - 1) / 2 * slice_dir)
    phases = np.unique(np.linspace(0, study.n_phases - 1, int(n_lax_phases)).round().astype(int))
    lax_shape = (lax_rows, lax_cols)
    cuts = np.stack(
        [
            _sample_plane(image[t], study.affine_lps, lax_origin, row_cos, slice_dir, lax_shape, lax_spacing)
            for t in phases
        ]
    )
    lax_series = _uid(uid_seed, study.subject_id, suid, "series", numbers[1], "lax")
    slope, intercept = _rescale(cuts)
    window = _window(cuts)
    for k, t in enumerate(phases):
        data = _mr_instance(
            shared,
            series_uid=lax_series,
            series_number=int(numbers[1]),
            series_description="4CH cine",
            sop_uid=_uid(uid_seed, study.subject_id, lax_series, "instance", 0, k),
            instance_number=k + 1,
            image_type=["ORIGINAL", "PRIMARY", "M", "ND"],
            stored=_to_stored(cuts[k], slope, intercept),
            slope=slope,
            intercept=intercept,
            window=window,
            position=lax_origin,
            row_cos=row_cos,
            col_cos=slice_dir,
            pixel_spacing_rc=(lax_spacing, lax_spacing),
            slice_thickness=float(study.slice_thickness_mm or study.spacing_zyx[0]),
            extra={
                "TriggerTime": _ds(float(study.trigger_times_ms[t])),
                "CardiacNumberOfImages": str(len(phases)),
                "TemporalPositionIdentifier": str(k + 1),
                "NumberOfTemporalPositions": str(len(phases)),
                "AcquisitionNumber": "1",
            },
        )
        path = out / f"LAX_000_{k:03d}.dcm"
        atomic_write_bytes(data, path)
        paths.append(path)
    return paths
