"""Stage 1b of the DICOM chain: walk a folder, read headers, group files into studies and series.

:func:`scan_folder` walks a folder (any nesting, any file names, no extension needed; DICOMDIR
files are skipped and the files they list are scanned as files), reads headers only and groups
the image instances into series by ``(StudyInstanceUID, SeriesInstanceUID)`` and the series into
studies by ``(PatientID, StudyInstanceUID)`` (:meth:`ScanResult.studies`). Each series is a
:class:`SeriesInfo` (modality, SOP class, orientation, slice positions, phases per position,
matrix, pixel spacing, Enhanced MR or not). Files that are not DICOM, unreadable or truncated
headers and duplicate SOPInstanceUIDs become :class:`~cardiolora.errors.Problem` entries;
instances without pixels (reports, SEG, SR) are listed as skipped. Nothing stops the scan.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.uid import UID, EnhancedMRImageStorage

from cardiolora.dicom.geometry import analyse
from cardiolora.dicom.headers import (
    HEADER_KEYWORDS,
    FrameRef,
    HeaderError,
    WarningLog,
    attr_number,
    frames_from_header,
    is_dicomdir,
    read_header,
    text,
)
from cardiolora.errors import InputError, Problem

__all__ = [
    "ScanResult",
    "SeriesInfo",
    "StudyScan",
    "describe",
    "image_type",
    "plural",
    "scan_files",
    "scan_folder",
    "walk",
]


def plural(n: int, word: str) -> str:
    """``"1 file"``, ``"2 files"``."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def image_type(ds: Dataset) -> tuple[str, ...]:
    """ImageType values of `ds`, upper case (empty when absent)."""
    raw = ds.get("ImageType") or []
    values = [raw] if isinstance(raw, str) else list(raw)
    return tuple(str(v).strip().upper() for v in values)


@dataclass
class SeriesInfo:
    """Description of one image series, from its headers only.

    Attributes:
        study_uid: StudyInstanceUID.
        series_uid: SeriesInstanceUID.
        series_number: SeriesNumber, or ``None``.
        description: SeriesDescription (``""`` when absent).
        protocol_name: ProtocolName (``""`` when absent).
        modality: Modality (``""`` when absent).
        sop_class_uid: SOPClassUID of the (first) instance.
        is_enhanced_mr: True for an Enhanced MR Image Storage (multi-frame) series.
        multiframe: True when the frames come from functional-group multi-frame files.
        is_localizer: True when ImageType of an instance contains ``LOCALIZER``.
        rows: Rows of the first frame.
        columns: Columns of the first frame.
        pixel_spacing: PixelSpacing of the first frame with one, or ``None``.
        orientation: ImageOrientationPatient of the first frame with one, or ``None``.
        orientation_consistent: True when every frame's orientation matches (within
            :data:`ORIENTATION_TOL_DEG`).
        slice_positions_mm: the distinct slice positions, ``ImagePositionPatient · normal``, in
            increasing order (the read slice order).
        phases_per_position: number of distinct phases at each slice position, same order.
        phase_order: attribute that orders the phases (``"TriggerTime"``,
            ``"TemporalPositionIdentifier"`` or ``"InstanceNumber"``).
        frames: every frame of the series (duplicate SOPInstanceUIDs removed).
        header: a few patient / study / equipment attributes of the first instance, as text.
        patient_id: PatientID (``""`` when absent): with the StudyInstanceUID, the study key.
        image_type: ImageType values of the first instance, upper case.
        source_series: SeriesInstanceUIDs of the series the frames come from (one, or several for
            a stack assembled from one series per slice position).
        assembled_by: for an assembled stack, the rule that grouped the series (else ``""``).
        notes: what assembly or reading decided that a report should say (re-acquired slices).
        problems: scan problems that concern this series (duplicate SOPInstanceUIDs).
        geometry_issues: frames with missing or malformed geometry tags.
        orientation_issues: frames whose plane is tilted or rotated relative to the first one.
        issues: everything that stops :func:`read_cine` (geometry, matrix, spacing, orientation,
            phase counts, slice gaps ...), each naming files or positions.
        duplicate_issue: frames that repeat another frame's phase at one position, named
            (``""`` when none).
    """

    study_uid: str
    series_uid: str
    series_number: int | None
    description: str
    protocol_name: str
    modality: str
    sop_class_uid: str
    is_enhanced_mr: bool
    multiframe: bool
    is_localizer: bool
    rows: int
    columns: int
    pixel_spacing: tuple[float, float] | None
    orientation: tuple[float, ...] | None
    orientation_consistent: bool
    slice_positions_mm: tuple[float, ...]
    phases_per_position: tuple[int, ...]
    phase_order: str
    frames: tuple[FrameRef, ...]
    header: dict[str, str] = field(default_factory=dict)
    patient_id: str = ""
    image_type: tuple[str, ...] = ()
    source_series: tuple[str, ...] = ()
    assembled_by: str = ""
    notes: tuple[str, ...] = ()
    problems: tuple[Problem, ...] = ()
    geometry_issues: tuple[str, ...] = ()
    orientation_issues: tuple[str, ...] = ()
    issues: tuple[str, ...] = ()
    duplicate_issue: str = ""

    @property
    def label(self) -> str:
        """How messages name the series, e.g. ``series 5 'SA cine'``."""
        number = "?" if self.series_number is None else str(self.series_number)
        if self.assembled_by:
            numbers = self.header.get("StackSeriesNumbers", "")
            return f"stack '{self.description}' of {len(self.source_series)} series ({numbers})"
        return f"series {number} '{self.description}'"

    @property
    def trigger_times_vary(self) -> bool:
        """True when the frames carry trigger times that differ (cine evidence)."""
        return len({f.trigger_time for f in self.frames if f.trigger_time is not None}) > 1

    @property
    def n_positions(self) -> int:
        """Number of distinct slice positions."""
        return len(self.slice_positions_mm)

    @property
    def n_phases(self) -> int:
        """Smallest number of phases at a slice position (0 without positions)."""
        return min(self.phases_per_position, default=0)

    @property
    def files(self) -> tuple[Path, ...]:
        """The distinct files of the series, sorted."""
        return tuple(sorted({f.path for f in self.frames}))

    def summary(self) -> str:
        """One line: label, modality, positions × phases, matrix and pixel spacing."""
        spacing = "?" if self.pixel_spacing is None else f"{self.pixel_spacing[0]:.4g}x{self.pixel_spacing[1]:.4g} mm"
        phases = sorted(set(self.phases_per_position))
        phase_text = "/".join(str(p) for p in phases) if phases else "0"
        kind = " Enhanced MR" if self.is_enhanced_mr else (" multi-frame" if self.multiframe else "")
        if self.assembled_by:
            kind += f", stack of {len(self.source_series)} series"
        return (
            f"{self.label} ({self.modality or 'no modality'}{kind}, {plural(len(self.frames), 'frame')}): "
            f"{plural(self.n_positions, 'slice position')} x {phase_text} phases, "
            f"{self.rows}x{self.columns}, {spacing}"
        )


@dataclass
class ScanResult:
    """What :func:`scan_folder` found.

    Attributes:
        root: the scanned folder (or file).
        series: the image series, sorted by (StudyInstanceUID, SeriesNumber, SeriesInstanceUID).
        problems: files left out because they are not DICOM, unreadable, truncated, incomplete or
            duplicate instances.
        skipped: files left out on purpose (DICOMDIR, instances without pixels such as reports).
        n_files: number of files looked at.
        warnings: pydicom's warnings while scanning, one line per kind (:class:`WarningLog`).
    """

    root: Path
    series: list[SeriesInfo]
    problems: list[Problem]
    skipped: list[Problem]
    n_files: int
    warnings: list[str] = field(default_factory=list)

    def studies(self) -> list[StudyScan]:
        """The series grouped into studies by (PatientID, StudyInstanceUID), in scan order."""
        groups: dict[tuple[str, str], list[SeriesInfo]] = {}
        for s in self.series:
            groups.setdefault((s.patient_id, s.study_uid), []).append(s)
        return [StudyScan(pid, uid, found) for (pid, uid), found in groups.items()]


@dataclass
class StudyScan:
    """The series of one study (PatientID + StudyInstanceUID) found by a scan.

    Attributes:
        patient_id: PatientID (``""`` when absent).
        study_uid: StudyInstanceUID.
        series: its image series.
    """

    patient_id: str
    study_uid: str
    series: list[SeriesInfo]

    @property
    def label(self) -> str:
        """How messages name the study."""
        return f"patient '{self.patient_id}' study {self.study_uid}"

    @property
    def files(self) -> list[Path]:
        """Every file of the study's series."""
        return sorted({p for s in self.series for p in s.files})


def describe(frames: list[FrameRef], first: Dataset, problems: list[Problem], localizer: bool) -> SeriesInfo:
    """A :class:`SeriesInfo` from the frames of one series and its first header.

    Args:
        frames: every frame of the series.
        first: the header of its first file.
        problems: scan problems of the series (duplicate SOPInstanceUIDs).
        localizer: whether an instance is a localiser.

    Returns:
        The description (never raises: inconsistencies are in ``issues``).
    """
    number = attr_number(first, "SeriesNumber")
    sop = text(first, "SOPClassUID")
    return SeriesInfo(
        study_uid=text(first, "StudyInstanceUID"),
        series_uid=text(first, "SeriesInstanceUID"),
        series_number=None if number is None else int(number),
        description=text(first, "SeriesDescription"),
        protocol_name=text(first, "ProtocolName"),
        modality=text(first, "Modality"),
        sop_class_uid=sop,
        is_enhanced_mr=sop == EnhancedMRImageStorage,
        is_localizer=localizer,
        header={k: text(first, k) for k in HEADER_KEYWORDS if text(first, k)},
        patient_id=text(first, "PatientID"),
        image_type=image_type(first),
        source_series=(text(first, "SeriesInstanceUID"),),
        problems=tuple(problems),
        **frame_fields(frames),
    )


def frame_fields(frames: Sequence[FrameRef]) -> dict[str, object]:
    """The :class:`SeriesInfo` fields that come from the frames' geometry (:func:`analyse`).

    Args:
        frames: the frames of a series or of an assembled stack (at least one).

    Returns:
        ``rows``, ``columns``, ``pixel_spacing``, ``orientation``, ``orientation_consistent``,
        ``multiframe``, ``slice_positions_mm``, ``phases_per_position``, ``phase_order``,
        ``frames``, ``geometry_issues``, ``orientation_issues``, ``issues``, ``duplicate_issue``.
    """
    lay = analyse(frames)
    ref = next((f for f in frames if not f.geometry_errors), frames[0])
    return {
        "rows": ref.rows,
        "columns": ref.columns,
        "pixel_spacing": ref.pixel_spacing,
        "orientation": ref.orientation,
        "orientation_consistent": not lay.orientation_issues,
        "multiframe": any(f.n_frames_in_file > 1 for f in frames),
        "slice_positions_mm": tuple(lay.projections),
        "phases_per_position": tuple(len(s) for s in lay.slices),
        "phase_order": lay.phase_order,
        "frames": tuple(frames),
        "geometry_issues": tuple(lay.geometry_issues),
        "orientation_issues": tuple(lay.orientation_issues),
        "issues": tuple(lay.issues),
        "duplicate_issue": lay.duplicate_issue,
    }


# --------------------------------------------------------------------------------------------
# scanning
# --------------------------------------------------------------------------------------------


def walk(root: Path) -> list[Path]:
    """Every file under `root` (any depth, symlinked folders not followed), sorted."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        found.extend(Path(folder) / name for name in files)
    return sorted(found)


@dataclass
class _Member:
    """One readable image file of a series, as the scan found it."""

    key: tuple[str, str]
    header: Dataset
    frames: list[FrameRef]
    localizer: bool


def _scan_one(path: Path, seen: dict[str, Path]) -> _Member | tuple[str, Problem, tuple[str, str] | None]:
    """Describe one file: a :class:`_Member`, or ``("problem" | "skipped", Problem, series key)``.

    `seen` maps the SOPInstanceUIDs found so far to their files; a repeated one is a problem that
    also belongs to its series (the key is given; ``None`` for the other problems).
    """
    ds, reason = read_header(path)
    if ds is None:
        return "problem", Problem(path, reason or "unreadable"), None
    try:
        if is_dicomdir(ds):
            return (
                "skipped",
                Problem(path, "DICOMDIR (a media directory; the files it lists are scanned as files)"),
                None,
            )
        missing = [k for k in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID") if not text(ds, k)]
        if missing:
            return (
                "problem",
                Problem(path, f"DICOM header lacks {', '.join(missing)} (truncated or incomplete file)"),
                None,
            )
        if "Rows" not in ds:
            sop = UID(text(ds, "SOPClassUID"))
            if sop.name.endswith("Image Storage"):  # an image class without Rows: the header was cut
                reason = f"{sop.name} header ends before Rows (truncated or incomplete file)"
                return "problem", Problem(path, reason), None
            return "skipped", Problem(path, f"not an image (SOP class {sop.name or sop or 'unknown'}, no Rows)"), None
        sop_uid = text(ds, "SOPInstanceUID")
        key = (text(ds, "StudyInstanceUID"), text(ds, "SeriesInstanceUID"))
        if sop_uid in seen:
            reason = f"duplicate SOPInstanceUID {sop_uid} (same as {seen[sop_uid]}; that file is kept)"
            return "problem", Problem(path, reason), key
        frames = frames_from_header(path, ds)
        localizer = "LOCALIZER" in image_type(ds)
    except HeaderError as exc:
        return "problem", Problem(path, str(exc)), None
    except Exception as exc:  # noqa: BLE001 - lazily parsed values can fail on corrupt files
        return "problem", Problem(path, f"corrupt DICOM header ({type(exc).__name__}: {exc})"), None
    seen[sop_uid] = path
    return _Member(key, ds, frames, localizer)


def scan_files(files: Sequence[Path], root: Path) -> ScanResult:
    """Scan `files` (in this order: the first of two duplicate SOPInstanceUIDs is kept)."""
    problems: list[Problem] = []
    skipped: list[Problem] = []
    members: dict[tuple[str, str], list[_Member]] = defaultdict(list)
    duplicates: dict[tuple[str, str], list[Problem]] = defaultdict(list)
    seen: dict[str, Path] = {}
    log = WarningLog()
    with log:
        for path in files:
            found = _scan_one(path, seen)
            if isinstance(found, _Member):
                members[found.key].append(found)
            else:
                kind, problem, key = found
                (skipped if kind == "skipped" else problems).append(problem)
                if key is not None:
                    duplicates[key].append(problem)
        infos = []
        for key, group in members.items():
            frames = [f for m in group for f in m.frames]
            infos.append(describe(frames, group[0].header, duplicates[key], any(m.localizer for m in group)))
    infos.sort(
        key=lambda s: (s.patient_id, s.study_uid, s.series_number if s.series_number is not None else -1, s.series_uid)
    )
    return ScanResult(
        root=root, series=infos, problems=problems, skipped=skipped, n_files=len(files), warnings=log.lines()
    )


def scan_folder(path: str | os.PathLike) -> ScanResult:
    """Find the DICOM image series in a folder (any nesting, any file names), headers only.

    Every file is tried (no extension needed). Files that are not DICOM, unreadable or truncated
    headers, headers without the UIDs and duplicate SOPInstanceUIDs (the first file in path order
    is kept) are reported in ``problems``; DICOMDIR files and instances without pixels are
    reported in ``skipped``. Nothing stops the scan.

    Args:
        path: a folder (scanned recursively) or a single file.

    Returns:
        The :class:`ScanResult` with one :class:`SeriesInfo` per (StudyInstanceUID,
        SeriesInstanceUID).

    Raises:
        InputError: if `path` does not exist.

    Example:
        >>> scan = scan_folder("/data/study")  # doctest: +SKIP
        >>> [s.summary() for s in scan.series]  # doctest: +SKIP
    """
    root = Path(path)
    if not root.exists():
        raise InputError(f"{root}: no such file or folder.")
    files = [root] if root.is_file() else walk(root)
    return scan_files(files, root)


# --------------------------------------------------------------------------------------------
# selection
# --------------------------------------------------------------------------------------------
