"""Write :class:`~cardiolora.data.cine.CineStudy` records to disk as NIfTI layouts and truth tables.

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

* :func:`write_truth` — one row per study (subject, vendor, ED/ES phase, spacing, every
  ``truth`` key) as CSV or JSON.

The DICOM form (classic MR Image Storage cine series and localisers) is written by
:mod:`cardiolora.dicom.mr_writer`, beside the reader whose conventions it mirrors; the checks and
helpers both writers share are in :mod:`cardiolora.data.record_checks`.

Intensity storage: NIfTI images are float32 by default: lossless, read back bit-exact. With
``image_dtype="int16"`` nibabel stores scaled integers (``scl_slope`` / ``scl_inter`` chosen to
span the int16 range), and the image is recovered within half a slope step
(``|error| <= scl_slope / 2``). Labels are uint8.

Geometry follows :mod:`cardiolora.data.cine` exactly: the affine's columns must have the lengths
``spacing_zyx`` reversed and be mutually orthogonal (checked; a ``ValueError`` names the study).

Study ``meta`` keys read (all optional unless stated): ``group`` (ACDC Group / M&Ms-2 DISEASE,
default ``"NOR"``), ``height_cm`` and ``weight_kg`` (required by ACDC's Info.cfg),
``manufacturer`` and ``scanner`` (model name; M&Ms-2 SCANNER), ``field_strength_t`` (tesla;
M&Ms-2 FIELD).

Every file is written through a hidden temporary name in the same folder and renamed, so a crash
never leaves a half-written file under its final name; gzip headers carry no timestamp.
"""

from __future__ import annotations

import csv
import gzip
import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from cardiolora.atomic import atomic_write_bytes, write_json
from cardiolora.data.cine import CineStudy, nifti_affine
from cardiolora.data.record_checks import (
    checked_image,
    field_strength,
    frame_interval_ms,
    is_positive_int,
    manufacturer_and_model,
    meta_float,
    prepare_dir,
    study_geometry,
    text_field,
)
from cardiolora.labels import NUM_CLASSES, SOURCE_TO_PROJECT, remap_labels

__all__ = [
    "MNMS2_CSV_COLUMNS",
    "project_to_source",
    "write_mnms2",
    "write_acdc",
    "write_truth",
]

#: Columns of the M&Ms-2 ``dataset_information.csv``, in order.
MNMS2_CSV_COLUMNS: tuple[str, ...] = ("SUBJECT_CODE", "DISEASE", "VENDOR", "SCANNER", "FIELD")
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
# study checks used only by the NIfTI writers and the truth table
# --------------------------------------------------------------------------------------------


def _require_meta_float(study: CineStudy, key: str, purpose: str) -> float:
    """Like :func:`meta_float`, but a ValueError naming `purpose` when the key is absent."""
    value = meta_float(study, key)
    if value is None:
        raise ValueError(f"`meta['{key}']` of {study.subject_id} is required for {purpose}.")
    return value


def _group(study: CineStudy) -> str:
    """Diagnostic group of a study (``meta['group']``, default ``"NOR"``)."""
    return text_field(study.meta.get("group", "NOR"), "meta['group']", study)


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
        zooms = zooms + (frame_interval_ms(study),)
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
    if not is_positive_int(start_code):
        raise ValueError(f"`start_code` must be an integer >= 1, got {start_code!r}.")
    root_p = prepare_dir(root, "root")
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
        study_geometry(study)
        checked_image(study)
        for tag, phase in (("ED", study.ed_phase), ("ES", study.es_phase)):
            _checked_label(study, phase, str(folder / f"{code:03d}_SA_{tag}_gt.nii.gz"))
        manufacturer_model = manufacturer_and_model(study)
        row = {
            "SUBJECT_CODE": code,
            "DISEASE": _group(study),
            "VENDOR": text_field(study.vendor, "vendor", study),
            "SCANNER": manufacturer_model[1],
            "FIELD": f"{field_strength(study):g}",
        }
        plans.append((study, code, folder, row))

    for study, code, folder, row in plans:
        folder.mkdir(parents=True, exist_ok=False)
        image = checked_image(study)
        for tag, phase in (("ED", study.ed_phase), ("ES", study.es_phase)):
            stem = f"{code:03d}_SA_{tag}"
            label = _checked_label(study, phase, str(folder / f"{stem}_gt.nii.gz"))
            atomic_write_bytes(_nifti_gz_bytes(image[phase], study, image_dtype), folder / f"{stem}.nii.gz")
            atomic_write_bytes(_nifti_gz_bytes(label, study, "uint8"), folder / f"{stem}_gt.nii.gz")
        if study.n_phases > 2:
            cine = _nifti_gz_bytes(image, study, image_dtype)
            atomic_write_bytes(cine, folder / f"{code:03d}_SA_CINE.nii.gz")
        rows.append(row)
        atomic_write_bytes(_csv_bytes(MNMS2_CSV_COLUMNS, rows), csv_path)
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
    if not is_positive_int(start_index):
        raise ValueError(f"`start_index` must be an integer >= 1, got {start_index!r}.")
    root_p = prepare_dir(root, "root")
    plans = []
    for k, study in enumerate(items):
        name = f"patient{int(start_index) + k:03d}"
        folder = root_p / name
        if folder.exists():
            raise ValueError(
                f"{folder} already exists (study {study.subject_id}); choose another `start_index`. "
                "Nothing was written."
            )
        study_geometry(study)
        checked_image(study)
        for phase in (study.ed_phase, study.es_phase):
            _checked_label(study, phase, str(folder / f"{name}_frame{phase + 1:02d}_gt.nii.gz"))
        plans.append((study, name, folder, _acdc_info_cfg(study)))

    for study, name, folder, info in plans:
        folder.mkdir(parents=True, exist_ok=False)
        image = checked_image(study)
        for phase in sorted({study.ed_phase, study.es_phase}):
            stem = f"{name}_frame{phase + 1:02d}"
            gt_name = str(folder / f"{stem}_gt.nii.gz")
            label = project_to_source(_checked_label(study, phase, gt_name), "acdc", name=gt_name)
            atomic_write_bytes(_nifti_gz_bytes(image[phase], study, image_dtype), folder / f"{stem}.nii.gz")
            atomic_write_bytes(_nifti_gz_bytes(label, study, "uint8"), folder / f"{stem}_gt.nii.gz")
        if study.n_phases > 2:
            atomic_write_bytes(_nifti_gz_bytes(image, study, image_dtype), folder / f"{name}_4d.nii.gz")
        atomic_write_bytes(info.encode("ascii"), folder / "Info.cfg")
    return root_p


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
    prepare_dir(out.parent, "path (its folder)")
    if suffix == ".csv":
        atomic_write_bytes(_csv_bytes(columns, rows), out)
    else:
        write_json(rows, out, indent=2, trailing_newline=True)
    return out
