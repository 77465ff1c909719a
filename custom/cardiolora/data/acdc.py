"""The official ACDC layout: index it, write it, read and write its ``Info.cfg``.

::

    root/patientNNN/Info.cfg                        ED, ES, Group, Height, NbFrame, Weight
    root/patientNNN/patientNNN_frameXX.nii.gz       image (x, y, z), XX = 1-based frame
    root/patientNNN/patientNNN_frameXX_gt.nii.gz    labels, ACDC convention (1 RV, 2 MYO, 3 LV)
    root/patientNNN/patientNNN_4d.nii.gz            (X, Y, Z, T) image (written when T > 2)

The patient folders may also sit in ``root/training`` and ``root/testing``, as in the official
``database`` folder. :func:`index_acdc` reads the layout (no voxels; loading is
:func:`cardiolora.data.loaders.load_case`), :func:`write_acdc` writes phantom studies in it.

Study ``meta`` keys read by the writer: ``group`` (default ``"NOR"``), ``height_cm`` and
``weight_kg`` (required by ``Info.cfg``).
"""

from __future__ import annotations

import os
import re
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
    group_of,
    is_positive_int,
    prepare_dir,
    require_meta_float,
    study_geometry,
)
from cardiolora.data.records import PHASES, CaseRecord, Collector, DataError, IndexResult, check_root
from cardiolora.labels import project_to_source

__all__ = ["index_acdc", "is_acdc", "write_acdc"]

_ACDC_PATIENT_RE = re.compile(r"^patient\d+$")
_ACDC_SUBSETS = ("training", "testing")


def _parse_info_cfg(path: Path) -> dict[str, Any]:
    """Parse an ACDC ``Info.cfg`` into ``ed``, ``es``, ``group``, ``n_frames``, ``height_cm``, ``weight_kg``.

    Raises:
        DataError: if the file is missing, unreadable, or ED/ES are missing or not positive integers.
    """
    if not path.is_file():
        raise DataError(path, "Info.cfg not found (needed for the ED/ES frame numbers)")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(path, f"cannot read Info.cfg ({type(err).__name__}: {err})") from err
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if ":" not in line:
            raise DataError(path, f"line {number} is not 'Key: value': {line.strip()!r}")
        key, value = line.split(":", 1)
        values[key.strip()] = value.strip()
    info: dict[str, Any] = {}
    for key in ("ED", "ES"):
        if key not in values:
            raise DataError(path, f"no '{key}' entry (found keys {sorted(values)})")
        try:
            frame = int(values[key])
        except ValueError:
            raise DataError(path, f"'{key}' must be an integer frame number, got {values[key]!r}") from None
        if frame < 1:
            raise DataError(path, f"'{key}' must be a frame number >= 1, got {frame}")
        info[key.lower()] = frame
    info["group"] = values.get("Group") or None
    optional = (("NbFrame", "n_frames", int), ("Height", "height_cm", float), ("Weight", "weight_kg", float))
    for key, name, kind in optional:
        raw = values.get(key, "")
        if not raw:
            info[name] = None
            continue
        try:
            info[name] = kind(float(raw)) if kind is int else kind(raw)
        except ValueError:
            raise DataError(path, f"'{key}' must be a number, got {raw!r}") from None
    return info


def _acdc_patient_dirs(root: Path) -> list[Path]:
    """Patient folders in `root`, else in its ``training/`` and ``testing/`` folders."""
    found = [p for p in root.iterdir() if p.is_dir() and _ACDC_PATIENT_RE.match(p.name)]
    if not found:
        for sub in sorted(p for p in root.iterdir() if p.is_dir() and p.name.lower() in _ACDC_SUBSETS):
            found.extend(p for p in sub.iterdir() if p.is_dir() and _ACDC_PATIENT_RE.match(p.name))
    return sorted(found, key=lambda p: (p.name, str(p)))


def is_acdc(root: Path) -> bool:
    """Whether `root` looks like the ACDC layout (a ``patientNNN/Info.cfg``)."""
    return any((p / "Info.cfg").is_file() for p in _acdc_patient_dirs(root))


def index_acdc(root: str | Path, on_error: str = "raise", require_labels: bool = True) -> IndexResult:
    """Index an ACDC folder in the official layout (no voxels are read).

    For each ``patientNNN`` folder, ``Info.cfg`` gives the ED and ES frame numbers, the group,
    height and weight; one record per phase points to ``patientNNN_frameXX.nii.gz`` (XX the
    zero-padded frame number) and its ``_gt`` label file. Patient folders are looked for in
    `root`, else in ``root/training`` and ``root/testing`` (the official ``database`` folder).

    Args:
        root: the folder holding the ``patientNNN`` folders.
        on_error: ``"raise"`` to stop at the first bad patient or file with a :class:`DataError`,
            ``"skip"`` to leave it out and list it in ``problems`` of the result. A bad
            ``Info.cfg`` leaves out the patient, a missing image or label file the case.
        require_labels: if ``False``, a case without its ``_gt`` file is kept with
            ``label=None`` instead of being a problem.

    Returns:
        An :class:`IndexResult` (a list of records sorted by patient then phase, ED first) whose
        ``problems`` lists what was skipped.

    Raises:
        DataError: if `root` is not a folder or holds no patient folder; with
            ``on_error="raise"``, for a missing/unparseable ``Info.cfg``, a missing image or
            label file, or the same patient found twice. The message names the file.
        ValueError: if `on_error` is not ``"raise"`` or ``"skip"``.

    Example:
        >>> records = index_acdc("../shared/data/acdc")  # doctest: +SKIP
        >>> records[0].case_id, records[0].group  # doctest: +SKIP
        ('patient001_ED', 'DCM')
    """
    collector = Collector(on_error)
    root = check_root(root)
    patient_dirs = _acdc_patient_dirs(root)
    if not patient_dirs:
        raise DataError(root, "no patientNNN folder found (ACDC layout: patientNNN/Info.cfg)")
    records: list[CaseRecord] = []
    seen: dict[str, Path] = {}
    for pdir in patient_dirs:
        pid = pdir.name
        if pid in seen:
            collector.report(pdir, f"patient {pid} found twice (also in {seen[pid]})")
            continue
        seen[pid] = pdir
        try:
            info = _parse_info_cfg(pdir / "Info.cfg")
        except DataError as err:
            collector.report(err.path, err.reason)
            continue
        for phase in PHASES:
            case_id = f"{pid}_{phase}"
            frame = info[phase.lower()]
            if info["n_frames"] is not None and frame > info["n_frames"]:
                reason = f"{phase} frame {frame} > NbFrame {info['n_frames']}"
                collector.report(pdir / "Info.cfg", reason, case_id)
                continue
            stem = pdir / f"{pid}_frame{frame:02d}"
            image = find_nifti(stem)
            if image is None:
                collector.report(f"{stem}.nii.gz", f"image of {phase} (frame {frame}) not found", case_id)
                continue
            label = find_nifti(stem.with_name(stem.name + "_gt"))
            if label is None and require_labels:
                reason = f"label file of {phase} (frame {frame}) not found"
                collector.report(f"{stem}_gt.nii.gz", reason, case_id)
                continue
            meta = {
                "frame": frame,
                "n_frames": info["n_frames"],
                "height_cm": info["height_cm"],
                "weight_kg": info["weight_kg"],
            }
            if pdir.parent != root:
                meta["subset"] = pdir.parent.name
            records.append(
                CaseRecord(
                    case_id,
                    pid,
                    phase,
                    str(image),
                    None if label is None else str(label),
                    "acdc",
                    group=info["group"],
                    meta=meta,
                )
            )
    return IndexResult(records, collector.problems)


# --------------------------------------------------------------------------------------------
# writing


def _number_text(value: float) -> str:
    """ACDC-style number: ``184.0``, ``172.5`` (at most 2 decimals)."""
    return str(float(round(value, 2)))


def _acdc_info_cfg(study: CineStudy) -> str:
    """The text of an ACDC ``Info.cfg`` for `study` (1-based ED/ES frame numbers)."""
    height = require_meta_float(study, "height_cm", "the ACDC Info.cfg")
    weight = require_meta_float(study, "weight_kg", "the ACDC Info.cfg")
    return (
        f"ED: {study.ed_phase + 1}\n"
        f"ES: {study.es_phase + 1}\n"
        f"Group: {group_of(study)}\n"
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
    :func:`cardiolora.labels.project_to_source`. NIfTI geometry and intensity storage as in
    :func:`cardiolora.data.mnms2.write_mnms2`.

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
    items = check_studies(studies)
    check_image_dtype(image_dtype)
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
            checked_label(study, phase, str(folder / f"{name}_frame{phase + 1:02d}_gt.nii.gz"))
        plans.append((study, name, folder, _acdc_info_cfg(study)))

    for study, name, folder, info in plans:
        folder.mkdir(parents=True, exist_ok=False)
        image = checked_image(study)
        for phase in sorted({study.ed_phase, study.es_phase}):
            stem = f"{name}_frame{phase + 1:02d}"
            gt_name = str(folder / f"{stem}_gt.nii.gz")
            label = project_to_source(checked_label(study, phase, gt_name), "acdc", name=gt_name)
            atomic_write_bytes(nifti_gz_bytes(image[phase], study, image_dtype), folder / f"{stem}.nii.gz")
            atomic_write_bytes(nifti_gz_bytes(label, study, "uint8"), folder / f"{stem}_gt.nii.gz")
        if study.n_phases > 2:
            atomic_write_bytes(nifti_gz_bytes(image, study, image_dtype), folder / f"{name}_4d.nii.gz")
        atomic_write_bytes(info.encode("ascii"), folder / "Info.cfg")
    return root_p
