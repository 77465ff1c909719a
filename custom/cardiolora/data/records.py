"""What the data indexers and loaders return and raise: :class:`CaseRecord` (where a labelled
frame lives, no voxels), :class:`LoadedCase` (its voxels), :class:`DataError` and the ``on_error``
machinery shared by every format module.

Error handling: every indexer and :func:`cardiolora.data.loaders.load_many` take ``on_error`` =
``"raise"`` (default) or ``"skip"``. With ``"raise"`` the first bad patient or file raises a
:class:`DataError` whose message names the file and the reason. With ``"skip"`` the bad items are
left out, each one is described by a :class:`Problem` (file, reason, case), and the function goes
on: the returned :class:`IndexResult` / :class:`LoadResult` is a plain ``list`` of the good items
with the problems in its ``problems`` attribute. Errors that make a whole folder unusable (the
root is missing, the CSV is missing or lacks a required column) always raise.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from cardiolora.errors import InputError

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
    "Collector",
    "check_root",
    "parse_number",
    "read_csv",
]

#: Data sources a :class:`CaseRecord` may come from: the layout names of :func:`index_dataset`
#: (``"acdc"``, ``"acdc_h5"``, ``"mnms2"``) and ``"nifti"``, a plain NIfTI image/label pair in the
#: project label convention (a MONAI Label datastore item, :func:`cardiolora.data.dataset.case_record`).
SOURCES: tuple[str, ...] = ("acdc", "acdc_h5", "mnms2", "nifti")
#: Cardiac phases that carry labels.
PHASES: tuple[str, ...] = ("ED", "ES")
#: Accepted values of every ``on_error`` argument.
ON_ERROR: tuple[str, ...] = ("raise", "skip")


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
        phase: ``"ED"`` or ``"ES"``, or ``None`` when unknown (a plain ``{"image", "label"}`` item
            such as MONAI Label sends carries no phase).
        image: path of the image file (NIfTI, or HDF5 holding an ``image`` dataset).
        label: path of the label file (for HDF5 the same file, holding a ``label`` dataset), or
            ``None`` when there is no ground truth.
        source: one of :data:`SOURCES` (``"acdc"``, ``"acdc_h5"``, ``"mnms2"``, ``"nifti"``); decides
            how the files are read and which label convention they use (``"nifti"``: NIfTI in the
            project convention).
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
    phase: str | None
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
        if self.phase is not None and self.phase not in PHASES:
            raise ValueError(f"`phase` of {self.case_id} must be one of {PHASES} or None, got {self.phase!r}.")
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
# helpers shared by the indexers


class Collector:
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


def check_root(root: str | Path) -> Path:
    path = Path(os.path.abspath(root))
    if not path.is_dir():
        raise DataError(path, "data folder not found (or not a directory)")
    return path


def parse_number(text: str) -> int | float | str | None:
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


def read_csv(path: Path, required: tuple[str, ...], upper: bool) -> list[tuple[int, dict[str, str]]]:
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
