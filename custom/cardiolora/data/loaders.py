"""Indexers and loaders for real cardiac short-axis data sets (ACDC, ACDC-HDF5, M&Ms-2).

Two steps, kept apart so that a data list can be built (and split, and written as a MONAI bundle
datalist in JSON) without reading a single voxel:

1. **Indexing** scans a folder and returns one :class:`CaseRecord` per labelled frame (ED and
   ES of each patient): :func:`index_acdc`, :func:`index_acdc_h5`, :func:`index_mnms2`, or
   :func:`index_dataset` which detects the layout.
2. **Loading** reads the voxels of a record into a :class:`LoadedCase`: image ``float32``
   ``(Z, Y, X)``, label ``uint8`` ``(Z, Y, X)`` in the project convention (0 background, 1 LV,
   2 MYO, 3 RV; ACDC files are remapped), voxel spacing and the NIfTI affine
   (:func:`load_case`, :func:`load_many`).

Supported layouts:

* ``"acdc"`` -- the official ACDC download::

      root/patientNNN/Info.cfg                        ED, ES, Group, Height, NbFrame, Weight
      root/patientNNN/patientNNN_frameXX.nii.gz       image (x, y, z)
      root/patientNNN/patientNNN_frameXX_gt.nii.gz    labels, ACDC convention (1 RV, 3 LV)

  The patient folders may also sit in ``root/training`` and ``root/testing``, as in the
  official ``database`` folder.
* ``"acdc_h5"`` -- the SSL4MIS / WSL4MIS HDF5 layout::

      root/patients.csv                 patient, group, ed_frame, es_frame, n_frames, height_cm, weight_kg
      root/patientNNN_frameXX.h5        datasets ``image`` (z, y, x) float32, ``label`` (z, y, x) uint8

  These files carry no voxel spacing: :attr:`LoadedCase.spacing_zyx` is ``None``.
* ``"mnms2"`` -- the M&Ms-2 download::

      root/dataset_information.csv      SUBJECT_CODE, DISEASE, VENDOR, SCANNER, FIELD, ...
      root/dataset/NNN/NNN_SA_ED.nii.gz, NNN_SA_ED_gt.nii.gz, NNN_SA_ES.nii.gz, NNN_SA_ES_gt.nii.gz

  Tolerated variants: `root` may be the ``dataset`` folder itself (the CSV then sits in
  ``root/..``); subject folders may be zero-padded (``001``) or not (``1``) whatever the CSV says.

Error handling: every indexer and :func:`load_many` take ``on_error`` = ``"raise"`` (default) or
``"skip"``. With ``"raise"`` the first bad patient or file raises a :class:`DataError` whose
message names the file and the reason. With ``"skip"`` the bad items are left out, each one is
described by a :class:`Problem` (file, reason, case), and the function goes on: the returned
:class:`IndexResult` / :class:`LoadResult` is a plain ``list`` of the good items with the
problems in its ``problems`` attribute. Errors that make a whole folder unusable (the root is
missing, the CSV is missing or lacks a required column) always raise.

Axes follow :mod:`cardiolora.data.cine`: arrays are ``(Z, Y, X)``; NIfTI stores ``(X, Y, Z)``.
"""

from __future__ import annotations

import csv
import os
import re
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import h5py
import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError

from cardiolora.errors import InputError
from cardiolora.labels import NUM_CLASSES, remap_labels

__all__ = [
    "SOURCES",
    "PHASES",
    "ON_ERROR",
    "DataError",
    "Problem",
    "CaseRecord",
    "IndexResult",
    "LoadedCase",
    "LoadResult",
    "index_acdc",
    "index_acdc_h5",
    "index_mnms2",
    "detect_layout",
    "index_dataset",
    "load_case",
    "load_many",
]

#: Data sources a :class:`CaseRecord` may come from (also the layout names of :func:`index_dataset`).
SOURCES: tuple[str, ...] = ("acdc", "acdc_h5", "mnms2")
#: Cardiac phases that carry labels.
PHASES: tuple[str, ...] = ("ED", "ES")
#: Accepted values of every ``on_error`` argument.
ON_ERROR: tuple[str, ...] = ("raise", "skip")

#: Label convention of each source, as a key of :data:`cardiolora.labels.SOURCE_TO_PROJECT`.
_LABEL_CONVENTION: dict[str, str] = {"acdc": "acdc", "acdc_h5": "acdc", "mnms2": "mnms"}

#: Geometry tolerance between an image and its label file (mm).
_GEOMETRY_ATOL_MM = 1e-3

_NIFTI_SUFFIXES = (".nii.gz", ".nii")
_ACDC_PATIENT_RE = re.compile(r"^patient\d+$")
_ACDC_SUBSETS = ("training", "testing")
_H5_FILE_RE = re.compile(r"^(patient\d+)_frame(\d+)\.h5$")
_ACDC_CSV = "patients.csv"
_MNMS2_CSV = "dataset_information.csv"
_READ_ERRORS = (OSError, EOFError, ValueError, zlib.error, ImageFileError)


class DataError(InputError):
    """A data file or folder is missing, unreadable or inconsistent.

    Args:
        path: the file (or folder) at fault.
        reason: what is wrong with it.

    Attributes:
        path: the file at fault, as a string.
        reason: what is wrong with it.

    Example:
        >>> str(DataError("a/b.nii.gz", "file not found"))
        'a/b.nii.gz: file not found'
    """

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


@dataclass(frozen=True)
class Problem:
    """One item that was left out by ``on_error="skip"``.

    Attributes:
        path: the file (or folder) at fault.
        reason: what is wrong with it.
        case_id: the case it concerns when known (e.g. ``"patient001_ED"``), else ``None``.
    """

    path: str
    reason: str
    case_id: str | None = None

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"

    def to_dict(self) -> dict[str, Any]:
        """Return the problem as a JSON-able dict (``path``, ``reason``, ``case_id``)."""
        return asdict(self)


@dataclass(frozen=True)
class CaseRecord:
    """Where one labelled frame of one patient lives, and what is known about it (no voxels).

    Attributes:
        case_id: unique name of the case, ``f"{patient_id}_{phase}"`` (e.g. ``"patient001_ED"``).
        patient_id: the patient (``"patient001"`` for ACDC, the zero-padded subject code
            ``"001"`` for M&Ms-2). Splits are made on this key.
        phase: ``"ED"`` or ``"ES"``.
        image: path of the image file (NIfTI, or HDF5 holding an ``image`` dataset).
        label: path of the label file (for HDF5 the same file, holding a ``label`` dataset), or
            ``None`` when there is no ground truth.
        source: one of :data:`SOURCES` (``"acdc"``, ``"acdc_h5"``, ``"mnms2"``); decides how the
            files are read and which label convention they use.
        group: ACDC ``Group`` / M&Ms-2 ``DISEASE`` (e.g. ``"DCM"``), or ``None``.
        vendor: M&Ms-2 ``VENDOR`` (e.g. ``"SIEMENS"``), or ``None``.
        meta: JSON-able extra information: ``frame`` (1-based frame number, ACDC), ``n_frames``,
            ``height_cm``, ``weight_kg`` (ACDC); ``scanner``, ``field`` and the other CSV
            columns in lower case (M&Ms-2).

    Raises:
        ValueError: if `case_id` or `patient_id` is empty, or `phase` / `source` is unknown.

    Example:
        >>> r = CaseRecord("patient001_ED", "patient001", "ED", "p1.nii.gz", "p1_gt.nii.gz", "acdc")
        >>> CaseRecord.from_dict(r.to_dict()) == r
        True
    """

    case_id: str
    patient_id: str
    phase: str
    image: str
    label: str | None
    source: str
    group: str | None = None
    vendor: str | None = None
    meta: dict[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        for name in ("case_id", "patient_id", "image"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"`{name}` must be a non-empty string, got {value!r}.")
        if self.phase not in PHASES:
            raise ValueError(f"`phase` of {self.case_id} must be one of {PHASES}, got {self.phase!r}.")
        if self.source not in SOURCES:
            raise ValueError(f"`source` of {self.case_id} must be one of {SOURCES}, got {self.source!r}.")
        if self.label is not None and not isinstance(self.label, str):
            raise ValueError(f"`label` of {self.case_id} must be a path string or None, got {self.label!r}.")
        if not isinstance(self.meta, dict):
            raise ValueError(f"`meta` of {self.case_id} must be a dict, got {type(self.meta).__name__}.")

    def to_dict(self) -> dict[str, Any]:
        """Return the record as a plain JSON-able dict (one entry of a MONAI datalist).

        Returns:
            A dict with the keys ``case_id``, ``patient_id``, ``phase``, ``image``, ``label``,
            ``source``, ``group``, ``vendor``, ``meta`` (a copy).
        """
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["meta"] = dict(self.meta)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CaseRecord:
        """Build a record from the dict written by :meth:`to_dict`.

        Args:
            data: mapping with at least ``case_id``, ``patient_id``, ``phase``, ``image``,
                ``source``; ``label``, ``group``, ``vendor`` and ``meta`` are optional.

        Returns:
            The record.

        Raises:
            ValueError: if a required key is missing, an unknown key is present, or a value is
                invalid (see the class).
        """
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"CaseRecord.from_dict: unknown keys {unknown}; expected a subset of {sorted(names)}.")
        required = ("case_id", "patient_id", "phase", "image", "source")
        missing = [k for k in required if k not in data]
        if missing:
            raise ValueError(f"CaseRecord.from_dict: missing required keys {missing}.")
        kwargs = dict(data)
        kwargs.setdefault("label", None)
        kwargs["meta"] = dict(kwargs.get("meta") or {})
        return cls(**kwargs)


class IndexResult(list):
    """The records found by an indexer: a ``list`` of :class:`CaseRecord`, plus ``problems``.

    Attributes:
        problems: the :class:`Problem` of every patient or file left out with
            ``on_error="skip"`` (always empty with ``on_error="raise"``).
    """

    def __init__(self, records: Iterable[CaseRecord] = (), problems: Iterable[Problem] = ()) -> None:
        super().__init__(records)
        self.problems: list[Problem] = list(problems)

    @property
    def patient_ids(self) -> list[str]:
        """Sorted unique patient ids of the records."""
        return sorted({r.patient_id for r in self})


@dataclass
class LoadedCase:
    """The voxels of one :class:`CaseRecord`.

    Attributes:
        record: the record that was loaded.
        image: ``float32`` array ``(Z, Y, X)``.
        label: ``uint8`` array ``(Z, Y, X)`` in the project convention (0 bg, 1 LV, 2 MYO, 3 RV),
            or ``None`` when the record has no label.
        spacing_zyx: voxel spacing ``(slice, row, column)`` in mm from the NIfTI header
            (``pixdim``), or ``None`` for HDF5 files, which carry no spacing.
        affine: the 4×4 NIfTI affine of the image as stored (maps ``(x, y, z)`` voxel indices to
            RAS mm), or ``None`` for HDF5. Note that some re-saved ACDC files store an affine
            without the voxel size (``diag(-1, -1, 1, 1)``) while ``pixdim`` holds the real
            spacing: use `spacing_zyx` for sizes and volumes.
    """

    record: CaseRecord
    image: np.ndarray
    label: np.ndarray | None
    spacing_zyx: tuple[float, float, float] | None
    affine: np.ndarray | None

    @property
    def case_id(self) -> str:
        """The record's case id."""
        return self.record.case_id

    @property
    def voxel_volume_ml(self) -> float | None:
        """Volume of one voxel in millilitres, or ``None`` without spacing."""
        if self.spacing_zyx is None:
            return None
        return float(np.prod(self.spacing_zyx)) / 1000.0


class LoadResult(list):
    """The cases loaded by :func:`load_many`: a ``list`` of :class:`LoadedCase`, plus ``problems``.

    Attributes:
        problems: the :class:`Problem` of every record left out with ``on_error="skip"``.
    """

    def __init__(self, cases: Iterable[LoadedCase] = (), problems: Iterable[Problem] = ()) -> None:
        super().__init__(cases)
        self.problems: list[Problem] = list(problems)


# --------------------------------------------------------------------------------------------
# helpers


class _Collector:
    """Raise at the first problem (``"raise"``) or collect problems (``"skip"``)."""

    def __init__(self, on_error: str) -> None:
        if on_error not in ON_ERROR:
            raise ValueError(f"`on_error` must be one of {ON_ERROR}, got {on_error!r}.")
        self.on_error = on_error
        self.problems: list[Problem] = []

    def report(self, path: str | Path, reason: str, case_id: str | None = None) -> None:
        if self.on_error == "raise":
            raise DataError(path, reason)
        self.problems.append(Problem(str(path), reason, case_id))


def _check_root(root: str | Path) -> Path:
    path = Path(os.path.abspath(root))
    if not path.is_dir():
        raise DataError(path, "data folder not found (or not a directory)")
    return path


def _find_nifti(stem: Path) -> Path | None:
    """Return ``stem + .nii.gz`` or ``stem + .nii`` if one exists."""
    for suffix in _NIFTI_SUFFIXES:
        candidate = stem.with_name(stem.name + suffix)
        if candidate.is_file():
            return candidate
    return None


def _parse_number(text: str) -> int | float | str | None:
    """Parse a CSV/cfg cell: ``""`` -> None, integer, float, or the stripped string."""
    text = text.strip()
    if not text:
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _read_csv(path: Path, required: tuple[str, ...], upper: bool) -> list[tuple[int, dict[str, str]]]:
    """Read a CSV into ``(line number, row)`` pairs with stripped (optionally upper-cased) headers.

    Raises:
        DataError: if the file cannot be read or lacks a required column.
    """
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None:
                raise DataError(path, "CSV file is empty")
            names = [h.strip().upper() if upper else h.strip() for h in header]
            missing = [c for c in required if c not in names]
            if missing:
                raise DataError(path, f"CSV lacks the column(s) {missing}; found {names}")
            rows = []
            for row in reader:
                if not any(cell.strip() for cell in row):
                    continue
                cells = (row + [""] * len(names))[: len(names)]
                values = {n: c.strip() for n, c in zip(names, cells, strict=True)}
                rows.append((reader.line_num, values))
            return rows
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(path, f"cannot read CSV ({type(err).__name__}: {err})") from err


# --------------------------------------------------------------------------------------------
# ACDC, official layout


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
    collector = _Collector(on_error)
    root = _check_root(root)
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
            image = _find_nifti(stem)
            if image is None:
                collector.report(f"{stem}.nii.gz", f"image of {phase} (frame {frame}) not found", case_id)
                continue
            label = _find_nifti(stem.with_name(stem.name + "_gt"))
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
# ACDC, HDF5 layout


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
    collector = _Collector(on_error)
    root = _check_root(root)
    csv_path = root / _ACDC_CSV
    if not csv_path.is_file():
        raise DataError(csv_path, "not found (the HDF5 layout needs it for the ED/ES frames)")
    rows = _read_csv(csv_path, ("patient", "ed_frame", "es_frame"), upper=False)
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


# --------------------------------------------------------------------------------------------
# M&Ms-2


def _mnms2_paths(root: Path) -> tuple[Path, Path]:
    """Return ``(dataset_information.csv, folder of the subject folders)`` of an M&Ms-2 root.

    Raises:
        DataError: if the CSV is neither in `root` nor in its parent.
    """
    for candidate in (root / _MNMS2_CSV, root.parent / _MNMS2_CSV):
        if candidate.is_file():
            csv_path = candidate
            break
    else:
        raise DataError(root, f"no {_MNMS2_CSV} in {root} or {root.parent}")
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
    collector = _Collector(on_error)
    root = _check_root(root)
    csv_path, dataset_dir = _mnms2_paths(root)
    rows = _read_csv(csv_path, ("SUBJECT_CODE",), upper=True)
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
                meta[column.lower()] = _parse_number(value)
        for phase in PHASES:
            case_id = f"{pid}_{phase}"
            stem = subject_dir / f"{subject_dir.name}_SA_{phase}"
            image = _find_nifti(stem)
            if image is None:
                collector.report(f"{stem}.nii.gz", f"short-axis {phase} image not found", case_id)
                continue
            label = _find_nifti(stem.with_name(stem.name + "_gt"))
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
# layout detection


def _looks_like(root: Path) -> list[str]:
    """Names of the layouts whose signature files are present in `root`."""
    found = []
    if any((p / "Info.cfg").is_file() for p in _acdc_patient_dirs(root)):
        found.append("acdc")
    if (root / _ACDC_CSV).is_file() and any(_H5_FILE_RE.match(p.name) for p in root.glob("*.h5")):
        found.append("acdc_h5")
    if (root / _MNMS2_CSV).is_file() or (root.parent / _MNMS2_CSV).is_file():
        dataset_dir = root / "dataset" if (root / "dataset").is_dir() else root
        if any(p.is_dir() and p.name.isdigit() for p in dataset_dir.iterdir()):
            found.append("mnms2")
    return found


def detect_layout(root: str | Path) -> str:
    """Tell which layout a data folder has.

    Args:
        root: the data folder.

    Returns:
        ``"acdc"`` (``patientNNN/Info.cfg``), ``"acdc_h5"`` (``patients.csv`` +
        ``patientNNN_frameXX.h5``) or ``"mnms2"`` (``dataset_information.csv`` + numbered subject
        folders, in `root` or ``root/dataset``).

    Raises:
        DataError: if `root` is not a folder, matches no layout (the message lists what the
            folder holds) or matches several.
    """
    root = _check_root(root)
    found = _looks_like(root)
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        raise DataError(root, f"folder matches several layouts {found}; pass `layout` explicitly")
    entries = sorted(root.iterdir())
    dirs = [p.name for p in entries if p.is_dir()]
    files = [p.name for p in entries if p.is_file()]

    def _show(names: list[str]) -> str:
        return ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")

    raise DataError(
        root,
        f"cannot detect the data layout: found {len(dirs)} folder(s) [{_show(dirs)}] and {len(files)} "
        f"file(s) [{_show(files)}]; expected ACDC (patientNNN/Info.cfg), ACDC-HDF5 "
        f"({_ACDC_CSV} + patientNNN_frameXX.h5) or M&Ms-2 ({_MNMS2_CSV} + dataset/NNN/NNN_SA_ED.nii.gz)",
    )


def index_dataset(root: str | Path, layout: str = "auto", on_error: str = "raise") -> IndexResult:
    """Index a data folder of any supported layout.

    Args:
        root: the data folder.
        layout: ``"auto"`` (detect with :func:`detect_layout`) or one of :data:`SOURCES`.
        on_error: ``"raise"`` or ``"skip"``, passed to the indexer.

    Returns:
        The :class:`IndexResult` of :func:`index_acdc`, :func:`index_acdc_h5` or :func:`index_mnms2`.

    Raises:
        ValueError: if `layout` or `on_error` is not an accepted value.
        DataError: if the layout cannot be detected, or from the indexer.
    """
    indexers = {"acdc": index_acdc, "acdc_h5": index_acdc_h5, "mnms2": index_mnms2}
    if layout not in ("auto", *indexers):
        raise ValueError(f"`layout` must be 'auto' or one of {tuple(indexers)}, got {layout!r}.")
    if on_error not in ON_ERROR:
        raise ValueError(f"`on_error` must be one of {ON_ERROR}, got {on_error!r}.")
    if layout == "auto":
        layout = detect_layout(root)
    return indexers[layout](root, on_error=on_error)


# --------------------------------------------------------------------------------------------
# loading voxels


def _read_nifti(path: str | Path) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
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


def _read_h5(path: str | Path, key: str) -> np.ndarray:
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


def _to_project_labels(label: np.ndarray, source: str, path: str) -> np.ndarray:
    """Check the label values and map them onto the project convention.

    Raises:
        DataError: for a non-numeric dtype, non-integer values or values outside 0..3.
    """
    convention = _LABEL_CONVENTION[source]
    if label.dtype.kind not in "iubf":
        raise DataError(path, f"label array has dtype {label.dtype}, expected integers")
    values = np.unique(label)
    fractional = values[values != np.round(values)]
    bad = fractional if fractional.size else values[(values < 0) | (values >= NUM_CLASSES)]
    if bad.size:
        shown = f"{bad[:10].tolist()}{' ...' if bad.size > 10 else ''}"
        what = "are not integers" if fractional.size else "are out of range"
        raise DataError(
            path,
            f"label values {shown} {what}; expected integers 0..{NUM_CLASSES - 1} ({convention} convention); "
            f"values present: {values[:20].tolist()}",
        )
    return remap_labels(label, convention, name=path)


def load_case(record: CaseRecord, check: bool = True) -> LoadedCase:
    """Read the voxels of one record.

    Args:
        record: the record to load (from an indexer or :meth:`CaseRecord.from_dict`).
        check: run the consistency checks: image values finite, image and label of the same
            shape and (NIfTI) the same geometry (affines within 1e-3 mm, same ``pixdim``).
            Label values are always checked (remapping needs them in 0..3).

    Returns:
        A :class:`LoadedCase`: image ``float32`` ``(Z, Y, X)``, label ``uint8`` ``(Z, Y, X)`` in
        the project convention (ACDC's 1 RV / 3 LV swapped), `spacing_zyx` from the NIfTI
        header (``None`` for HDF5), the NIfTI affine (``None`` for HDF5).

    Raises:
        DataError: naming the file, if a file is missing, unreadable (corrupt, truncated, not
            HDF5), not 3D, lacks an ``image``/``label`` dataset, has non-finite image values,
            label values outside 0..3 (listed), or if image and label differ in shape (both
            shapes given) or geometry.

    Example:
        >>> case = load_case(index_acdc("../shared/data/acdc")[0])  # doctest: +SKIP
        >>> case.image.shape, case.spacing_zyx  # doctest: +SKIP
        ((10, 256, 216), (10.0, 1.5625, 1.5625))
    """
    if record.source == "acdc_h5":
        image = _read_h5(record.image, "image")
        if image.ndim != 3:
            raise DataError(record.image, f"dataset 'image' must be 3D (Z, Y, X), got shape {image.shape}")
        spacing = None
        affine = None
    else:
        image_xyz, affine, zooms = _read_nifti(record.image)
        image = image_xyz.transpose(2, 1, 0)
        spacing = (zooms[2], zooms[1], zooms[0])
    image = np.ascontiguousarray(image, dtype=np.float32)
    if check:
        n_bad = int(image.size - np.count_nonzero(np.isfinite(image)))
        if n_bad:
            raise DataError(record.image, f"{n_bad} non-finite image value(s) (NaN or inf)")
    if record.label is None:
        return LoadedCase(record=record, image=image, label=None, spacing_zyx=spacing, affine=affine)

    label_path = record.label
    if record.source == "acdc_h5":
        label_raw = _read_h5(label_path, "label")
    else:
        label_xyz, label_affine, label_zooms = _read_nifti(label_path)
        label_raw = label_xyz.transpose(2, 1, 0)
        if check and label_raw.shape == image.shape and affine is not None:
            diff = float(np.max(np.abs(label_affine - affine)))
            if diff > _GEOMETRY_ATOL_MM:
                raise DataError(
                    label_path,
                    f"label affine differs from the image affine of {record.image} by up to {diff:.4g} mm "
                    f"(tolerance {_GEOMETRY_ATOL_MM} mm): label {label_affine.round(4).tolist()}, "
                    f"image {affine.round(4).tolist()}",
                )
            zdiff = float(np.max(np.abs(np.subtract(label_zooms, zooms))))
            if zdiff > _GEOMETRY_ATOL_MM:
                raise DataError(
                    label_path,
                    f"label voxel size (pixdim x, y, z) {label_zooms} differs from the image's {zooms} "
                    f"of {record.image}",
                )
    if check and label_raw.shape != image.shape:
        raise DataError(
            label_path,
            f"label shape {tuple(label_raw.shape)} (Z, Y, X) differs from image shape {tuple(image.shape)} "
            f"of {record.image}",
        )
    label = np.ascontiguousarray(_to_project_labels(label_raw, record.source, label_path), dtype=np.uint8)
    return LoadedCase(record=record, image=image, label=label, spacing_zyx=spacing, affine=affine)


def load_many(records: Iterable[CaseRecord], on_error: str = "raise", check: bool = True) -> LoadResult:
    """Load several records, stopping at the first bad one or skipping the bad ones.

    Args:
        records: the records to load, in order.
        on_error: ``"raise"`` to re-raise the first :class:`DataError`; ``"skip"`` to leave the
            case out, record a :class:`Problem` and go on.
        check: passed to :func:`load_case`.

    Returns:
        A :class:`LoadResult`: the loaded cases in input order, with ``problems`` for the skipped.

    Raises:
        DataError: with ``on_error="raise"``, the first error of :func:`load_case`.
        ValueError: if `on_error` is not ``"raise"`` or ``"skip"``.
    """
    collector = _Collector(on_error)
    cases: list[LoadedCase] = []
    for record in records:
        try:
            cases.append(load_case(record, check=check))
        except DataError as err:
            collector.report(err.path, err.reason, record.case_id)
    return LoadResult(cases, collector.problems)
