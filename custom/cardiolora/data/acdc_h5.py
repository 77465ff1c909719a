"""The ACDC HDF5 layout of SSL4MIS / WSL4MIS: index it and read its arrays.

::

    root/patients.csv                 patient, group, ed_frame, es_frame, n_frames, height_cm, weight_kg
    root/patientNNN_frameXX.h5        datasets ``image`` (z, y, x) float32, ``label`` (z, y, x) uint8

These files carry no voxel spacing: :attr:`~cardiolora.data.records.LoadedCase.spacing_zyx` is
``None``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from cardiolora.data.records import PHASES, CaseRecord, Collector, DataError, IndexResult, check_root, read_csv

__all__ = ["ACDC_H5_CSV", "index_acdc_h5", "is_acdc_h5", "read_h5"]

_H5_FILE_RE = re.compile(r"^(patient\d+)_frame(\d+)\.h5$")
_ACDC_PATIENT_RE = re.compile(r"^patient\d+$")
ACDC_H5_CSV = "patients.csv"


def is_acdc_h5(root: Path) -> bool:
    """Whether `root` looks like the HDF5 layout (``patients.csv`` and ``patientNNN_frameXX.h5``)."""
    return (root / ACDC_H5_CSV).is_file() and any(_H5_FILE_RE.match(p.name) for p in root.glob("*.h5"))


def index_acdc_h5(root: str | Path, on_error: str = "raise") -> IndexResult:
    """Index an ACDC folder in the HDF5 layout of SSL4MIS / WSL4MIS (no voxels are read).

    ``patients.csv`` (columns ``patient``, ``ed_frame``, ``es_frame`` required; ``group``,
    ``n_frames``, ``height_cm``, ``weight_kg`` optional) gives the phases; each record points to
    ``patientNNN_frameXX.h5`` for both `image` and `label` (datasets ``image`` and ``label``,
    checked at loading). These files carry no voxel spacing.

    Args:
        root: the folder holding ``patients.csv`` and the ``.h5`` files.
        on_error: ``"raise"`` or ``"skip"`` (see the module docstring). A bad CSV row leaves out
            the patient, a missing ``.h5`` file the case; an ``.h5`` file of a patient that is
            not in the CSV is a problem too (its phase is unknown).

    Returns:
        An :class:`IndexResult` sorted by patient then phase, with the skipped ``problems``.

    Raises:
        DataError: if `root` is not a folder, ``patients.csv`` is missing, unreadable or lacks a
            required column; with ``on_error="raise"``, for a row with a bad value or a
            duplicate patient, a listed frame without its file, or an unlisted ``.h5`` file.
        ValueError: if `on_error` is not ``"raise"`` or ``"skip"``.
    """
    collector = Collector(on_error)
    root = check_root(root)
    csv_path = root / ACDC_H5_CSV
    if not csv_path.is_file():
        raise DataError(csv_path, "not found (the HDF5 layout needs it for the ED/ES frames)")
    rows = read_csv(csv_path, ("patient", "ed_frame", "es_frame"), upper=False)
    records: list[CaseRecord] = []
    listed: set[str] = set()
    for line, row in rows:
        pid = row["patient"]
        where = f"{csv_path} (line {line})"
        if not _ACDC_PATIENT_RE.match(pid):
            collector.report(where, f"'patient' must look like 'patient001', got {pid!r}")
            continue
        if pid in listed:
            collector.report(where, f"patient {pid} listed twice")
            continue
        listed.add(pid)
        parsed: dict[str, Any] = {}
        bad = None
        for column, kind in (
            ("ed_frame", int),
            ("es_frame", int),
            ("n_frames", int),
            ("height_cm", float),
            ("weight_kg", float),
        ):
            raw = row.get(column, "")
            if not raw and column not in ("ed_frame", "es_frame"):
                parsed[column] = None
                continue
            try:
                parsed[column] = int(float(raw)) if kind is int else float(raw)
            except ValueError:
                bad = f"{column!r} of {pid} must be a number, got {raw!r}"
                break
        if bad is None and min(parsed["ed_frame"], parsed["es_frame"]) < 1:
            bad = f"frame numbers of {pid} must be >= 1, got ED {parsed['ed_frame']}, ES {parsed['es_frame']}"
        if bad is not None:
            collector.report(where, bad)
            continue
        for phase in PHASES:
            case_id = f"{pid}_{phase}"
            frame = parsed[f"{phase.lower()}_frame"]
            path = root / f"{pid}_frame{frame:02d}.h5"
            if not path.is_file():
                reason = f"{phase} file listed in {csv_path.name} (line {line}) not found"
                collector.report(path, reason, case_id)
                continue
            meta = {
                "frame": frame,
                "n_frames": parsed["n_frames"],
                "height_cm": parsed["height_cm"],
                "weight_kg": parsed["weight_kg"],
            }
            records.append(
                CaseRecord(
                    case_id,
                    pid,
                    phase,
                    str(path),
                    str(path),
                    "acdc_h5",
                    group=row.get("group") or None,
                    meta=meta,
                )
            )
    for path in sorted(root.glob("*.h5")):
        match = _H5_FILE_RE.match(path.name)
        if match is None or match.group(1) not in listed:
            collector.report(path, f"patient not listed in {csv_path.name}: its phase is unknown")
    records.sort(key=lambda r: (r.patient_id, PHASES.index(r.phase)))
    return IndexResult(records, collector.problems)


def read_h5(path: str | Path, key: str) -> np.ndarray:
    """Read dataset `key` of an HDF5 file.

    Raises:
        DataError: if the file is missing, not HDF5, or lacks the dataset.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(p, "file not found")
    try:
        with h5py.File(p, "r") as fh:
            if key not in fh:
                raise DataError(p, f"no dataset {key!r} in the HDF5 file (found {sorted(fh.keys())})")
            return np.asarray(fh[key][()])
    except (OSError, KeyError) as err:
        reason = f"cannot read HDF5 file, corrupt or not HDF5? ({type(err).__name__}: {err})"
        raise DataError(p, reason) from err
