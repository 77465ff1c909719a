"""The M&Ms-2 download layout: index it, write it, read and write ``dataset_information.csv``.

::

    root/dataset_information.csv          SUBJECT_CODE, DISEASE, VENDOR, SCANNER, FIELD, ...
    root/dataset/NNN/NNN_SA_ED.nii.gz     (X, Y, Z) image at end-diastole
    root/dataset/NNN/NNN_SA_ED_gt.nii.gz  (X, Y, Z) uint8 labels (1 LV, 2 MYO, 3 RV)
    root/dataset/NNN/NNN_SA_ES.nii.gz     ... and _gt at end-systole
    root/dataset/NNN/NNN_SA_CINE.nii.gz   (X, Y, Z, T) image (written when T > 2)

Tolerated variants when indexing: `root` may be the ``dataset`` folder itself (the CSV then sits
in ``root/..``); subject folders may be zero-padded (``001``) or not (``1``) whatever the CSV
says. :func:`index_mnms2` reads the layout (no voxels; loading is
:func:`cardiolora.data.loaders.load_case`), :func:`write_mnms2` writes phantom studies in it.

Study ``meta`` keys read by the writer (all optional): ``group`` (DISEASE, default ``"NOR"``),
``manufacturer`` and ``scanner`` (model name; SCANNER), ``field_strength_t`` (tesla; FIELD).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cardiolora.atomic import atomic_write_bytes
from cardiolora.data.cine import CineStudy
from cardiolora.data.nifti_io import find_nifti, nifti_gz_bytes
from cardiolora.data.record_checks import (
    check_image_dtype,
    check_studies,
    checked_image,
    checked_label,
    csv_bytes,
    field_strength,
    group_of,
    is_positive_int,
    manufacturer_and_model,
    prepare_dir,
    study_geometry,
    text_field,
)
from cardiolora.data.records import (
    PHASES,
    CaseRecord,
    Collector,
    DataError,
    IndexResult,
    check_root,
    parse_number,
    read_csv,
)

__all__ = ["MNMS2_CSV", "MNMS2_CSV_COLUMNS", "index_mnms2", "is_mnms2", "write_mnms2"]

MNMS2_CSV = "dataset_information.csv"
#: Columns of the M&Ms-2 ``dataset_information.csv`` written by :func:`write_mnms2`, in order.
MNMS2_CSV_COLUMNS: tuple[str, ...] = ("SUBJECT_CODE", "DISEASE", "VENDOR", "SCANNER", "FIELD")


def is_mnms2(root: Path) -> bool:
    """Whether `root` looks like the M&Ms-2 layout (the CSV and numbered subject folders)."""
    if (root / MNMS2_CSV).is_file() or (root.parent / MNMS2_CSV).is_file():
        dataset_dir = root / "dataset" if (root / "dataset").is_dir() else root
        return any(p.is_dir() and p.name.isdigit() for p in dataset_dir.iterdir())
    return False


def _mnms2_paths(root: Path) -> tuple[Path, Path]:
    """Return ``(dataset_information.csv, folder of the subject folders)`` of an M&Ms-2 root.

    Raises:
        DataError: if the CSV is neither in `root` nor in its parent.
    """
    for candidate in (root / MNMS2_CSV, root.parent / MNMS2_CSV):
        if candidate.is_file():
            csv_path = candidate
            break
    else:
        raise DataError(root, f"no {MNMS2_CSV} in {root} or {root.parent}")
    dataset_dir = root / "dataset" if (root / "dataset").is_dir() else root
    return csv_path, dataset_dir


def index_mnms2(root: str | Path, on_error: str = "raise", require_labels: bool = True) -> IndexResult:
    """Index an M&Ms-2 folder (no voxels are read).

    ``dataset_information.csv`` (column ``SUBJECT_CODE`` required; ``DISEASE``, ``VENDOR``,
    ``SCANNER``, ``FIELD`` and others optional; header case and spaces ignored) lists the
    subjects; short-axis ED and ES files are ``dataset/NNN/NNN_SA_ED.nii.gz`` and
    ``NNN_SA_ED_gt.nii.gz`` (ES alike). Labels already use the project convention.

    Args:
        root: the M&Ms-2 folder (holding ``dataset_information.csv`` and ``dataset/``), or its
            ``dataset`` folder (the CSV is then looked for in the parent).
        on_error: ``"raise"`` or ``"skip"`` (see the module docstring). A bad CSV row or a row
            without a subject folder leaves out the subject, a missing file the case; a subject
            folder that is not in the CSV is a problem too.
        require_labels: if ``False``, a case without its ``_gt`` file is kept with
            ``label=None`` instead of being a problem.

    Returns:
        An :class:`IndexResult` sorted by subject then phase. ``patient_id`` is the subject code
        zero-padded to 3 digits (``"001"``), ``group`` the DISEASE, ``vendor`` the VENDOR;
        ``meta`` holds the other columns in lower case (``scanner``, ``field``, ...).

    Raises:
        DataError: if `root` is not a folder, or the CSV is missing, unreadable or lacks
            ``SUBJECT_CODE``; with ``on_error="raise"``, for a bad or duplicate subject code, a
            CSV row without files, a missing image or label file, or an unlisted subject folder.
        ValueError: if `on_error` is not ``"raise"`` or ``"skip"``.
    """
    collector = Collector(on_error)
    root = check_root(root)
    csv_path, dataset_dir = _mnms2_paths(root)
    rows = read_csv(csv_path, ("SUBJECT_CODE",), upper=True)
    records: list[CaseRecord] = []
    used_dirs: set[Path] = set()
    listed: set[int] = set()
    for line, row in rows:
        where = f"{csv_path} (line {line})"
        code_text = row["SUBJECT_CODE"]
        try:
            code = int(code_text)
        except ValueError:
            collector.report(where, f"SUBJECT_CODE must be an integer, got {code_text!r}")
            continue
        if code in listed:
            collector.report(where, f"SUBJECT_CODE {code} listed twice")
            continue
        listed.add(code)
        pid = f"{code:03d}"
        candidates = [dataset_dir / name for name in (pid, str(code))]
        subject_dir = next((d for d in candidates if d.is_dir()), None)
        if subject_dir is None:
            collector.report(dataset_dir / pid, f"subject folder of SUBJECT_CODE {code} ({where}) not found")
            continue
        used_dirs.add(subject_dir)
        meta: dict[str, Any] = {"subject_code": code}
        for column, value in row.items():
            if column not in ("SUBJECT_CODE", "DISEASE", "VENDOR"):
                meta[column.lower()] = parse_number(value)
        for phase in PHASES:
            case_id = f"{pid}_{phase}"
            stem = subject_dir / f"{subject_dir.name}_SA_{phase}"
            image = find_nifti(stem)
            if image is None:
                collector.report(f"{stem}.nii.gz", f"short-axis {phase} image not found", case_id)
                continue
            label = find_nifti(stem.with_name(stem.name + "_gt"))
            if label is None and require_labels:
                collector.report(f"{stem}_gt.nii.gz", f"short-axis {phase} label file not found", case_id)
                continue
            records.append(
                CaseRecord(
                    case_id,
                    pid,
                    phase,
                    str(image),
                    None if label is None else str(label),
                    "mnms2",
                    group=row.get("DISEASE") or None,
                    vendor=row.get("VENDOR") or None,
                    meta=dict(meta),
                )
            )
    for sub in sorted(p for p in dataset_dir.iterdir() if p.is_dir() and p.name.isdigit()):
        if sub not in used_dirs:
            collector.report(sub, f"subject folder not listed in {csv_path}")
    records.sort(key=lambda r: (r.patient_id, PHASES.index(r.phase)))
    return IndexResult(records, collector.problems)


# --------------------------------------------------------------------------------------------
# writing


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
    items = check_studies(studies)
    check_image_dtype(image_dtype)
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
            checked_label(study, phase, str(folder / f"{code:03d}_SA_{tag}_gt.nii.gz"))
        manufacturer_model = manufacturer_and_model(study)
        row = {
            "SUBJECT_CODE": code,
            "DISEASE": group_of(study),
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
            label = checked_label(study, phase, str(folder / f"{stem}_gt.nii.gz"))
            atomic_write_bytes(nifti_gz_bytes(image[phase], study, image_dtype), folder / f"{stem}.nii.gz")
            atomic_write_bytes(nifti_gz_bytes(label, study, "uint8"), folder / f"{stem}_gt.nii.gz")
        if study.n_phases > 2:
            cine = nifti_gz_bytes(image, study, image_dtype)
            atomic_write_bytes(cine, folder / f"{code:03d}_SA_CINE.nii.gz")
        rows.append(row)
        atomic_write_bytes(csv_bytes(MNMS2_CSV_COLUMNS, rows), csv_path)
    return root_p
