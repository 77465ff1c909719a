"""Write :class:`~cardiolora.data.cine.CineStudy` records to disk in three real-world forms.

* :func:`write_mnms2` — the M&Ms-2 download layout (NIfTI, labels 1 LV, 2 MYO, 3 RV)::

      root/dataset_information.csv          SUBJECT_CODE,DISEASE,VENDOR,SCANNER,FIELD
      root/dataset/NNN/NNN_SA_ED.nii.gz     (X, Y, Z) image at end-diastole
      root/dataset/NNN/NNN_SA_ED_gt.nii.gz  (X, Y, Z) uint8 labels at end-diastole
      root/dataset/NNN/NNN_SA_ES.nii.gz     ... and _gt at end-systole
      root/dataset/NNN/NNN_SA_CINE.nii.gz   (X, Y, Z, T) image, only when T > 2

* :func:`write_acdc` — the official ACDC layout (NIfTI, labels 1 RV, 2 MYO, 3 LV)::

      root/patientNNN/Info.cfg                        ED, ES, Group, Height, NbFrame, Weight
      root/patientNNN/patientNNN_frameXX.nii.gz       XX = 1-based frame (phase index + 1)
      root/patientNNN/patientNNN_frameXX_gt.nii.gz    for the ED and the ES frame
      root/patientNNN/patientNNN_4d.nii.gz            (X, Y, Z, T) image, only when T > 2

* :func:`write_dicom_cine` — one classic single-frame MR Image Storage file per (slice, phase),
  named ``<file_prefix>_<slice:03d>_<phase:03d>.dcm`` (``IM_000_000.dcm`` ...), and
  :func:`write_dicom_localizers`, which adds a long-axis cine series and a single-image localiser
  to the same study folder (``LAX_000_<phase:03d>.dcm``, ``LOC_000_000.dcm``) so that DICOM
  ingestion can be tested on picking the short-axis series.

* :func:`write_truth` — one row per study (subject, vendor, ED/ES phase, spacing, every
  ``truth`` key) as CSV or JSON.

Intensity storage:

* NIfTI images are float32 by default: lossless, read back bit-exact. With
  ``image_dtype="int16"`` nibabel stores scaled integers (``scl_slope`` / ``scl_inter`` chosen to
  span the int16 range), and the image is recovered within half a slope step
  (``|error| <= scl_slope / 2``). Labels are uint8.
* DICOM pixels are unsigned 12-bit integers (``BitsAllocated`` 16, ``BitsStored`` 12) with one
  ``RescaleSlope`` / ``RescaleIntercept`` per series: intercept = min(0, series minimum) (0 for
  the usual non-negative images), slope = (series maximum - intercept) / 4095 (written as a
  decimal string, and the stored integers are computed with that written slope).
  ``stored * slope + intercept`` recovers the image within ``slope / 2`` (+ float rounding), i.e.
  within 1/8190 of the series range.

Geometry follows :mod:`cardiolora.data.cine` exactly: the affine's columns must have the lengths
``spacing_zyx`` reversed and be mutually orthogonal (checked; a ``ValueError`` names the study).

Study ``meta`` keys read (all optional unless stated): ``group`` (ACDC Group / M&Ms-2 DISEASE,
default ``"NOR"``), ``height_cm`` and ``weight_kg`` (required by ACDC's Info.cfg), ``sex``
(``"M"``, ``"F"``, ``"O"``), ``age_years``, ``manufacturer``, ``scanner`` (model name),
``field_strength_t`` (tesla), ``study_date`` (``YYYYMMDD``, default ``20240101`` so reruns are
byte-identical).

Every file is written through a hidden temporary name in the same folder and renamed, so a crash
never leaves a half-written file under its final name; gzip headers carry no timestamp.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import format_number_as_ds

from cardiolora.data.cine import CineStudy, nifti_affine
from cardiolora.labels import NUM_CLASSES, SOURCE_TO_PROJECT, remap_labels

__all__ = [
    "MNMS2_CSV_COLUMNS",
    "MR_IMAGE_STORAGE",
    "DICOM_STORED_MAX",
    "project_to_source",
    "write_mnms2",
    "write_acdc",
    "write_dicom_cine",
    "write_dicom_localizers",
    "write_truth",
]

#: Columns of the M&Ms-2 ``dataset_information.csv``, in order.
MNMS2_CSV_COLUMNS: tuple[str, ...] = ("SUBJECT_CODE", "DISEASE", "VENDOR", "SCANNER", "FIELD")
#: SOP Class UID of classic (single-frame) MR Image Storage.
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
#: Largest stored pixel value (12 bits stored in 16 allocated).
DICOM_STORED_MAX = 4095
_BITS_STORED = 12

#: Plausible manufacturer and model strings by (lower-case) vendor / profile name.
_VENDOR_DEFAULTS: dict[str, tuple[str, str]] = {
    "siemens": ("SIEMENS", "Avanto"),
    "ge": ("GE MEDICAL SYSTEMS", "Signa HDxt"),
    "philips": ("Philips Medical Systems", "Achieva"),
}
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
_TRUTH_FIXED_COLUMNS: tuple[str, ...] = (
    "subject_id",
    "vendor",
    "group",
    "n_phases",
    "n_slices",
    "ed_phase",
    "es_phase",
    "spacing_z_mm",
    "spacing_y_mm",
    "spacing_x_mm",
)


# --------------------------------------------------------------------------------------------
# small shared helpers
# --------------------------------------------------------------------------------------------


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a hidden temporary file in the same folder, then rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _prepare_dir(path: str | os.PathLike, arg: str) -> Path:
    """Create folder `path` (and parents) and return it; a ValueError if it is a file."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ValueError(f"`{arg}` {p} exists and is not a directory.")
    p.mkdir(parents=True, exist_ok=True)
    return p


def _is_positive_int(value: object) -> bool:
    """True for an integer (not bool) >= 1."""
    return not isinstance(value, bool) and isinstance(value, (int, np.integer)) and value >= 1


def _text_field(value: object, field: str, study: CineStudy) -> str:
    """Return `value` as a one-line string free of separators, or raise naming the field.

    `field` is how the message names the value, e.g. ``"meta['group']"`` or ``"vendor"``.
    """
    text = "" if value is None else str(value).strip()
    if not text or any(c in text for c in "\r\n,\\"):
        raise ValueError(
            f"`{field}` of {study.subject_id} must be a non-empty single-line text without commas or "
            f"backslashes, got {value!r}."
        )
    return text


def _meta_float(study: CineStudy, key: str) -> float | None:
    """Return ``study.meta[key]`` as a positive finite float, or ``None`` if absent."""
    raw = study.meta.get(key)
    if raw is None:
        return None
    try:
        value = float(str(raw))
    except ValueError:
        raise ValueError(f"`meta['{key}']` of {study.subject_id} must be a number, got {raw!r}.") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"`meta['{key}']` of {study.subject_id} must be positive and finite, got {value}.")
    return value


def _require_meta_float(study: CineStudy, key: str, purpose: str) -> float:
    """Like :func:`_meta_float`, but a ValueError naming `purpose` when the key is absent."""
    value = _meta_float(study, key)
    if value is None:
        raise ValueError(f"`meta['{key}']` of {study.subject_id} is required for {purpose}.")
    return value


def _group(study: CineStudy) -> str:
    """Diagnostic group of a study (``meta['group']``, default ``"NOR"``)."""
    return _text_field(study.meta.get("group", "NOR"), "meta['group']", study)


def _manufacturer_and_model(study: CineStudy) -> tuple[str, str]:
    """Manufacturer and model strings: from meta, else the vendor table, else the vendor name."""
    default = _VENDOR_DEFAULTS.get(study.vendor.lower(), (study.vendor, "unknown"))
    manufacturer = _text_field(study.meta.get("manufacturer", default[0]), "meta['manufacturer']", study)
    model = _text_field(study.meta.get("scanner", default[1]), "meta['scanner']", study)
    return manufacturer, model


def _field_strength(study: CineStudy) -> float:
    """Magnetic field strength in tesla (``meta['field_strength_t']``, default 1.5)."""
    value = _meta_float(study, "field_strength_t")
    return 1.5 if value is None else value


def _geometry(study: CineStudy) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit row cosine, unit column cosine and unit slice direction of a study.

    Args:
        study: the study; its ``affine_lps`` must follow the convention of
            :mod:`cardiolora.data.cine` (columns = unit vectors × (column, row, slice) spacing).

    Returns:
        ``(row_cos, col_cos, slice_dir)``, each a unit 3-vector in LPS; ``slice_dir`` is the
        direction of increasing slice index (± the normal ``row_cos × col_cos``).

    Raises:
        ValueError: if the affine is not finite, its last row is not ``(0, 0, 0, 1)``, its column
            lengths differ from ``spacing_zyx`` by more than 1e-4 mm, or its columns are not
            mutually orthogonal (|cos| > 1e-6).
    """
    a = study.affine_lps
    sid = study.subject_id
    if not np.all(np.isfinite(a)) or not np.allclose(a[3], (0, 0, 0, 1)):
        raise ValueError(f"`affine_lps` of {sid} must be finite with last row (0, 0, 0, 1), got\n{a}.")
    cols = a[:3, :3]
    norms = np.linalg.norm(cols, axis=0)
    expected = np.asarray(study.spacing_zyx, dtype=np.float64)[::-1]
    if not np.allclose(norms, expected, rtol=0, atol=1e-4):
        raise ValueError(
            f"`affine_lps` of {sid} has column lengths {norms.round(6).tolist()} mm, but "
            f"`spacing_zyx` reversed (x, y, z) is {expected.tolist()}."
        )
    units = cols / norms
    gram = units.T @ units
    if np.max(np.abs(gram - np.eye(3))) > 1e-6:
        raise ValueError(f"`affine_lps` of {sid} must have orthogonal columns (no shear), got\n{a}.")
    return units[:, 0], units[:, 1], units[:, 2]


def _checked_image(study: CineStudy) -> np.ndarray:
    """The study image as float32, after checking it is finite."""
    image = np.asarray(study.image)
    if image.dtype.kind not in "fiu" or not np.all(np.isfinite(image)):
        raise ValueError(f"`image` of {study.subject_id} must hold finite numbers.")
    return image.astype(np.float32, copy=False)


def _checked_label(study: CineStudy, phase: int, name: str) -> np.ndarray:
    """Label frame `phase` of a study in the project convention, checked.

    Raises:
        ValueError: if the study has no labels or the frame holds values outside 0..3; the
            message names `name` (the file the frame is written to) and the study.
    """
    if study.label is None:
        raise ValueError(f"{name}: `label` of {study.subject_id} is None; ground-truth labels are needed.")
    where = f"{name} (label of {study.subject_id}, phase {phase})"
    return remap_labels(study.label[phase], "project", name=where)


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


# --------------------------------------------------------------------------------------------
# NIfTI
# --------------------------------------------------------------------------------------------


def _frame_interval_ms(study: CineStudy) -> float:
    """Median interval between successive trigger times (1.0 when there is a single phase)."""
    times = np.asarray(study.trigger_times_ms, dtype=np.float64)
    if times.size < 2:
        return 1.0
    step = float(np.median(np.diff(times)))
    return step if math.isfinite(step) and step > 0 else 1.0


def _nifti_gz_bytes(data_tzyx_or_zyx: np.ndarray, study: CineStudy, dtype: str) -> bytes:
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
        zooms = zooms + (_frame_interval_ms(study),)
    hdr.set_zooms(zooms)
    return gzip.compress(img.to_bytes(), compresslevel=1, mtime=0)


def _check_image_dtype(image_dtype: str) -> None:
    if image_dtype not in ("float32", "int16"):
        raise ValueError(f"`image_dtype` must be 'float32' or 'int16', got {image_dtype!r}.")


def _check_studies(studies: Sequence[CineStudy]) -> list[CineStudy]:
    items = list(studies)
    if not items:
        raise ValueError("`studies` is empty; nothing to write.")
    for i, s in enumerate(items):
        if not isinstance(s, CineStudy):
            raise ValueError(f"`studies[{i}]` must be a CineStudy, got {type(s).__name__}.")
    return items


# --------------------------------------------------------------------------------------------
# M&Ms-2
# --------------------------------------------------------------------------------------------


def _read_mnms2_csv(path: Path) -> list[dict[str, str]]:
    """Rows of an existing ``dataset_information.csv`` (checked header), ``[]`` if absent."""
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        if tuple(reader.fieldnames or ()) != MNMS2_CSV_COLUMNS:
            raise ValueError(
                f"{path}: header is {reader.fieldnames}, expected {list(MNMS2_CSV_COLUMNS)}; "
                "refusing to append to a file of another layout."
            )
        return list(reader)


def _csv_bytes(columns: Sequence[str], rows: Sequence[Mapping[str, object]]) -> bytes:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: ("" if row.get(c) is None else row.get(c)) for c in columns})
    return buf.getvalue().encode("utf-8")


def write_mnms2(
    studies: Sequence[CineStudy],
    root: str | os.PathLike,
    start_code: int = 1,
    *,
    image_dtype: str = "float32",
) -> Path:
    """Write studies in the M&Ms-2 download layout under `root` (appending to an existing one).

    Subject ``k`` of `studies` gets ``SUBJECT_CODE = start_code + k`` and the folder
    ``root/dataset/NNN`` (3-digit zero padded) with ``NNN_SA_ED.nii.gz``, ``NNN_SA_ED_gt.nii.gz``,
    ``NNN_SA_ES.nii.gz``, ``NNN_SA_ES_gt.nii.gz`` and, when the study has more than 2 phases,
    ``NNN_SA_CINE.nii.gz`` (X, Y, Z, T). Images are ``(X, Y, Z)`` arrays with the RAS affine
    ``nifti_affine(affine_lps)`` (qform and sform code 1), pixdim = spacing (and the median frame
    interval in ms for the cine), units mm / ms. Labels are uint8 in the M&Ms convention (1 LV,
    2 MYO, 3 RV, same as the project). ``root/dataset_information.csv`` gets one row per subject
    (``SUBJECT_CODE,DISEASE,VENDOR,SCANNER,FIELD``: ``meta['group']`` or ``NOR``,
    ``study.vendor``, ``meta['scanner']`` or a vendor default, ``meta['field_strength_t']`` or
    1.5); existing rows are kept, and the CSV is rewritten after each subject so an interrupted
    run keeps what it finished.

    Args:
        studies: the studies to write; each needs labels.
        root: the layout root; created if absent.
        start_code: SUBJECT_CODE of the first study (>= 1).
        image_dtype: ``"float32"`` (lossless, default) or ``"int16"`` (scaled integers, error
            at most half the NIfTI ``scl_slope``).

    Returns:
        `root` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: if `root` is a file, `start_code` < 1, `image_dtype` is unknown, a study has
            no labels or labels outside 0..3 (naming the ``_gt`` file), a bad geometry, a
            SUBJECT_CODE already present in the CSV or as a folder (naming both), or the existing
            CSV has another header. All studies are checked before anything is written.

    Example:
        >>> write_mnms2([study], "/tmp/mnms2")  # doctest: +SKIP
        PosixPath('/tmp/mnms2')
    """
    items = _check_studies(studies)
    _check_image_dtype(image_dtype)
    if not _is_positive_int(start_code):
        raise ValueError(f"`start_code` must be an integer >= 1, got {start_code!r}.")
    root_p = _prepare_dir(root, "root")
    csv_path = root_p / "dataset_information.csv"
    rows = _read_mnms2_csv(csv_path)
    existing = {str(r["SUBJECT_CODE"]).strip() for r in rows}

    plans = []
    for k, study in enumerate(items):
        code = int(start_code) + k
        folder = root_p / "dataset" / f"{code:03d}"
        if str(code) in existing or f"{code:03d}" in existing:
            raise ValueError(
                f"{csv_path}: SUBJECT_CODE {code} already exists (for study {study.subject_id}); "
                "choose another `start_code`. Nothing was written."
            )
        if folder.exists():
            raise ValueError(
                f"{folder} already exists (SUBJECT_CODE {code}, study {study.subject_id}); "
                "choose another `start_code`. Nothing was written."
            )
        _geometry(study)
        _checked_image(study)
        for tag, phase in (("ED", study.ed_phase), ("ES", study.es_phase)):
            _checked_label(study, phase, str(folder / f"{code:03d}_SA_{tag}_gt.nii.gz"))
        manufacturer_model = _manufacturer_and_model(study)
        row = {
            "SUBJECT_CODE": code,
            "DISEASE": _group(study),
            "VENDOR": _text_field(study.vendor, "vendor", study),
            "SCANNER": manufacturer_model[1],
            "FIELD": f"{_field_strength(study):g}",
        }
        plans.append((study, code, folder, row))

    for study, code, folder, row in plans:
        folder.mkdir(parents=True, exist_ok=False)
        image = _checked_image(study)
        for tag, phase in (("ED", study.ed_phase), ("ES", study.es_phase)):
            stem = f"{code:03d}_SA_{tag}"
            label = _checked_label(study, phase, str(folder / f"{stem}_gt.nii.gz"))
            _atomic_write_bytes(folder / f"{stem}.nii.gz", _nifti_gz_bytes(image[phase], study, image_dtype))
            _atomic_write_bytes(folder / f"{stem}_gt.nii.gz", _nifti_gz_bytes(label, study, "uint8"))
        if study.n_phases > 2:
            cine = _nifti_gz_bytes(image, study, image_dtype)
            _atomic_write_bytes(folder / f"{code:03d}_SA_CINE.nii.gz", cine)
        rows.append(row)
        _atomic_write_bytes(csv_path, _csv_bytes(MNMS2_CSV_COLUMNS, rows))
    return root_p


# --------------------------------------------------------------------------------------------
# ACDC
# --------------------------------------------------------------------------------------------


def _number_text(value: float) -> str:
    """ACDC-style number: ``184.0``, ``172.5`` (at most 2 decimals)."""
    return str(float(round(value, 2)))


def _acdc_info_cfg(study: CineStudy) -> str:
    """The text of an ACDC ``Info.cfg`` for `study` (1-based ED/ES frame numbers)."""
    height = _require_meta_float(study, "height_cm", "the ACDC Info.cfg")
    weight = _require_meta_float(study, "weight_kg", "the ACDC Info.cfg")
    return (
        f"ED: {study.ed_phase + 1}\n"
        f"ES: {study.es_phase + 1}\n"
        f"Group: {_group(study)}\n"
        f"Height: {_number_text(height)}\n"
        f"NbFrame: {study.n_phases}\n"
        f"Weight: {_number_text(weight)}\n"
    )


def write_acdc(
    studies: Sequence[CineStudy],
    root: str | os.PathLike,
    start_index: int = 1,
    *,
    image_dtype: str = "float32",
) -> Path:
    """Write studies in the official ACDC layout under `root`.

    Study ``k`` becomes ``root/patientNNN`` with ``NNN = start_index + k`` (3 digits) holding
    ``patientNNN_frameXX.nii.gz`` and ``patientNNN_frameXX_gt.nii.gz`` for the ED and ES frames
    (``XX`` = phase index + 1, 2 digits), ``patientNNN_4d.nii.gz`` (X, Y, Z, T) when the study has
    more than 2 phases, and ``Info.cfg``::

        ED: 1
        ES: 12
        Group: NOR
        Height: 184.0
        NbFrame: 30
        Weight: 95.0

    Labels are uint8 in the ACDC convention (1 RV cavity, 2 myocardium, 3 LV cavity), see
    :func:`project_to_source`. NIfTI geometry and intensity storage as in :func:`write_mnms2`.

    Args:
        studies: the studies; each needs labels and ``meta['height_cm']``, ``meta['weight_kg']``.
        root: the layout root; created if absent.
        start_index: patient number of the first study (>= 1).
        image_dtype: ``"float32"`` (lossless, default) or ``"int16"`` (scaled integers).

    Returns:
        `root` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: if `root` is a file, `start_index` < 1, a ``patientNNN`` folder exists, a
            study lacks labels / height / weight, has labels outside 0..3 (naming the file) or a
            bad geometry. All studies are checked before anything is written.
    """
    items = _check_studies(studies)
    _check_image_dtype(image_dtype)
    if not _is_positive_int(start_index):
        raise ValueError(f"`start_index` must be an integer >= 1, got {start_index!r}.")
    root_p = _prepare_dir(root, "root")
    plans = []
    for k, study in enumerate(items):
        name = f"patient{int(start_index) + k:03d}"
        folder = root_p / name
        if folder.exists():
            raise ValueError(
                f"{folder} already exists (study {study.subject_id}); choose another `start_index`. "
                "Nothing was written."
            )
        _geometry(study)
        _checked_image(study)
        for phase in (study.ed_phase, study.es_phase):
            _checked_label(study, phase, str(folder / f"{name}_frame{phase + 1:02d}_gt.nii.gz"))
        plans.append((study, name, folder, _acdc_info_cfg(study)))

    for study, name, folder, info in plans:
        folder.mkdir(parents=True, exist_ok=False)
        image = _checked_image(study)
        for phase in sorted({study.ed_phase, study.es_phase}):
            stem = f"{name}_frame{phase + 1:02d}"
            gt_name = str(folder / f"{stem}_gt.nii.gz")
            label = project_to_source(_checked_label(study, phase, gt_name), "acdc", name=gt_name)
            _atomic_write_bytes(folder / f"{stem}.nii.gz", _nifti_gz_bytes(image[phase], study, image_dtype))
            _atomic_write_bytes(folder / f"{stem}_gt.nii.gz", _nifti_gz_bytes(label, study, "uint8"))
        if study.n_phases > 2:
            _atomic_write_bytes(folder / f"{name}_4d.nii.gz", _nifti_gz_bytes(image, study, image_dtype))
        _atomic_write_bytes(folder / "Info.cfg", info.encode("ascii"))
    return root_p


# --------------------------------------------------------------------------------------------
# DICOM
# --------------------------------------------------------------------------------------------


def _ds(value: float) -> str:
    """A DICOM DS string (at most 16 characters) for `value`."""
    return format_number_as_ds(float(value))


def _uid(uid_seed: str | None, *parts: object) -> str:
    """A deterministic UID from `uid_seed` and `parts`, or a random one when `uid_seed` is None."""
    if uid_seed is None:
        return generate_uid()
    return generate_uid(entropy_srcs=[str(uid_seed), *(str(p) for p in parts)])


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
    return float(times.max()) + _frame_interval_ms(study)


def _patient_study_attrs(study: CineStudy, patient_id: str, study_uid: str, for_uid: str) -> dict[str, object]:
    """Patient, study, frame-of-reference and equipment attributes of `study`."""
    manufacturer, model = _manufacturer_and_model(study)
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
        "MagneticFieldStrength": _ds(_field_strength(study)),
        "PatientPosition": "HFS",
        "InstitutionName": "cardiolora phantom",
    }
    if attrs["PatientSex"] not in ("M", "F", "O"):
        raise ValueError(f"`meta['sex']` of {study.subject_id} must be M, F or O, got {study.meta['sex']!r}.")
    age = _meta_float(study, "age_years")
    if age is not None:
        attrs["PatientAge"] = f"{min(int(age), 999):03d}Y"
    height = _meta_float(study, "height_cm")
    if height is not None:
        attrs["PatientSize"] = _ds(round(height / 100.0, 4))
    weight = _meta_float(study, "weight_kg")
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
    ds.SOPClassUID = MR_IMAGE_STORAGE
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
    meta.MediaStorageSOPClassUID = MR_IMAGE_STORAGE
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
    if not _is_positive_int(series_number):
        raise ValueError(f"`series_number` must be an integer >= 1, got {series_number!r}.")
    if not series_description or len(series_description) > 64 or "\\" in series_description:
        raise ValueError(f"`series_description` must be 1-64 characters without backslash, got {series_description!r}.")
    if not file_prefix or not all(c.isalnum() or c in "-_" for c in file_prefix):
        raise ValueError(f"`file_prefix` must be letters, digits, '-' or '_', got {file_prefix!r}.")
    if study_uid is not None and (len(study_uid) > 64 or not pydicom.uid.RE_VALID_UID.match(study_uid)):
        raise ValueError(f"`study_uid` {study_uid!r} is not a valid DICOM UID.")
    row_cos, col_cos, _ = _geometry(study)
    image = _checked_image(study)
    out = _prepare_dir(out_dir, "out_dir")

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
            _atomic_write_bytes(path, data)
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
    if not _is_positive_int(n_lax_phases) or n_lax_phases > study.n_phases:
        raise ValueError(f"`n_lax_phases` must be an integer in [1, {study.n_phases}], got {n_lax_phases!r}.")
    numbers = tuple(series_numbers)
    if len(numbers) != 2 or len(set(numbers)) != 2 or not all(_is_positive_int(n) for n in numbers):
        raise ValueError(f"`series_numbers` must be two distinct integers >= 1, got {series_numbers!r}.")
    ref_path = Path(reference_file)
    if not ref_path.is_file():
        raise ValueError(f"`reference_file` {ref_path} does not exist or is not a file.")
    ref = pydicom.dcmread(ref_path, stop_before_pixels=True)
    for keyword in ("StudyInstanceUID", "FrameOfReferenceUID", "PatientID", "MagneticFieldStrength"):
        if keyword not in ref:
            raise ValueError(f"{ref_path}: `{keyword}` is missing; not a file written by write_dicom_cine.")
    row_cos, col_cos, slice_dir = _geometry(study)
    image = _checked_image(study)
    out = _prepare_dir(out_dir, "out_dir")
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
    _atomic_write_bytes(path, data)
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
        _atomic_write_bytes(path, data)
        paths.append(path)
    return paths


# --------------------------------------------------------------------------------------------
# ground truth table
# --------------------------------------------------------------------------------------------


def _truth_rows(items: Sequence[CineStudy]) -> tuple[list[str], list[dict[str, object]]]:
    """Columns and rows of the truth table (fixed columns, then the union of truth keys, sorted)."""
    truth_keys: set[str] = set()
    seen: set[str] = set()
    for study in items:
        if study.subject_id in seen:
            raise ValueError(f"`studies` holds subject_id {study.subject_id!r} twice; one row per study.")
        seen.add(study.subject_id)
        clash = set(study.truth) & set(_TRUTH_FIXED_COLUMNS)
        if clash:
            raise ValueError(f"`truth` of {study.subject_id} uses reserved column names {sorted(clash)}.")
        truth_keys.update(str(k) for k in study.truth)
    columns = [*_TRUTH_FIXED_COLUMNS, *sorted(truth_keys)]
    rows = []
    for study in items:
        row: dict[str, object] = {
            "subject_id": study.subject_id,
            "vendor": study.vendor,
            "group": _group(study),
            "n_phases": study.n_phases,
            "n_slices": study.n_slices,
            "ed_phase": int(study.ed_phase),
            "es_phase": int(study.es_phase),
            "spacing_z_mm": float(study.spacing_zyx[0]),
            "spacing_y_mm": float(study.spacing_zyx[1]),
            "spacing_x_mm": float(study.spacing_zyx[2]),
        }
        for key in sorted(truth_keys):
            value = study.truth.get(key)
            if value is None:
                row[key] = None
                continue
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"`truth['{key}']` of {study.subject_id} must be a number, got {value!r}.") from None
            if not math.isfinite(number):
                raise ValueError(f"`truth['{key}']` of {study.subject_id} must be finite, got {number}.")
            row[key] = number
        rows.append(row)
    return columns, rows


def write_truth(studies: Sequence[CineStudy], path: str | os.PathLike) -> Path:
    """Write one row per study with its identity, phases, spacing and every ``truth`` value.

    Columns: ``subject_id, vendor, group, n_phases, n_slices, ed_phase, es_phase (0-based),
    spacing_z_mm, spacing_y_mm, spacing_x_mm`` and then the union of all ``truth`` keys, sorted
    (empty in CSV / ``null`` in JSON where a study lacks one). Truth values are written as floats
    (JSON keeps full precision; CSV uses Python's ``repr``, which round-trips exactly).

    Args:
        studies: the studies (distinct ``subject_id``).
        path: ``.csv`` or ``.json`` file; its folder is created; an existing file is replaced.

    Returns:
        `path` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: if the suffix is neither ``.csv`` nor ``.json``, `path` is a folder, a subject
            id repeats, or a truth key clashes with a fixed column or holds a non-number.
    """
    items = _check_studies(studies)
    out = Path(path)
    suffix = out.suffix.lower()
    if suffix not in (".csv", ".json"):
        raise ValueError(f"`path` {out} must end in .csv or .json.")
    if out.is_dir():
        raise ValueError(f"`path` {out} is a directory.")
    columns, rows = _truth_rows(items)
    _prepare_dir(out.parent, "path (its folder)")
    if suffix == ".csv":
        data = _csv_bytes(columns, rows)
    else:
        data = (json.dumps(rows, indent=2) + "\n").encode("utf-8")
    _atomic_write_bytes(out, data)
    return out
