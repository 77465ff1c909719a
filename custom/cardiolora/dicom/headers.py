"""Stage 1 of the DICOM chain: one file's header → its 2D frames (classic and enhanced MR).

A file is read without its pixels (``pydicom.dcmread(stop_before_pixels=True)``). The unit of
work downstream is the 2D *frame*, described by a :class:`FrameRef`:

* **classic** single-frame files (MR Image Storage and any other single-frame image) take
  ImagePositionPatient, ImageOrientationPatient, PixelSpacing, SliceThickness, TriggerTime,
  TemporalPositionIdentifier and the rescale from the top level. Real exports (OsiriX, some PACS
  anonymisers) add an *empty or partial* Per-Frame Functional Groups Sequence (5200,9230) to such
  files; it does not make them multi-frame: the classic attributes are used, and an attribute
  missing at the top level is taken from the functional groups when they hold it.
* **multi-frame** files with functional groups (Enhanced MR Image Storage and Legacy Converted
  Enhanced MR Image Storage) take each frame's geometry from its per-frame item, else the shared
  one; the trigger delay from the Cardiac Synchronization Sequence (nominal, else actual), else
  the TriggerTime kept in Unassigned Per-Frame Converted Attributes (legacy conversion); the
  temporal index from the Frame Content Sequence.

Malformed values never raise here: a frame records what is missing in ``geometry_errors`` and
later stages refuse the series naming every such file.

pydicom warns once per malformed value (invalid UIDs with leading-zero components, impossible
anonymised dates, over-long strings). :class:`WarningLog` collects those warnings while a study is
read so that the report shows one line per kind with a count instead of a flood.
"""

from __future__ import annotations

import logging
import math
import re
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.uid import MediaStorageDirectoryStorage

__all__ = [
    "FrameRef",
    "HEADER_KEYWORDS",
    "HeaderError",
    "WarningLog",
    "attr_number",
    "first_item",
    "frames_from_header",
    "is_dicomdir",
    "number",
    "read_header",
    "text",
    "vector",
]

#: Patient, study and equipment attributes kept as text from a series' first header.
HEADER_KEYWORDS: tuple[str, ...] = (
    "PatientID",
    "PatientName",
    "PatientSize",
    "PatientWeight",
    "PatientSex",
    "PatientAge",
    "StudyInstanceUID",
    "FrameOfReferenceUID",
    "Manufacturer",
    "ManufacturerModelName",
    "MagneticFieldStrength",
    "StudyDate",
)


class HeaderError(Exception):
    """A header that cannot be described as image frames (becomes a scan Problem)."""


@dataclass(frozen=True)
class FrameRef:
    """Header information of one 2D frame (a classic file, or one frame of a multi-frame file).

    Attributes:
        path: the file holding the frame.
        frame_index: 0-based index of the frame in its file (0 for single-frame files).
        n_frames_in_file: NumberOfFrames of the file (1 for single-frame files).
        sop_instance_uid: SOPInstanceUID of the file.
        instance_number: InstanceNumber of the file, or ``None``.
        rows: Rows of the file.
        columns: Columns of the file.
        position: ImagePositionPatient (mm, LPS) of the frame, or ``None`` when missing.
        orientation: ImageOrientationPatient (row cosine, column cosine), or ``None``.
        pixel_spacing: PixelSpacing ``(row spacing, column spacing)`` in mm, or ``None``.
        slice_thickness: SliceThickness in mm, or ``None``.
        trigger_time: trigger time in ms after the R wave, or ``None``.
        temporal_index: TemporalPositionIdentifier / TemporalPositionIndex, or ``None``.
        rescale: ``(RescaleSlope, RescaleIntercept)`` of the frame.
        geometry_errors: what is missing or malformed in the frame's geometry, e.g.
            ``"lacks ImagePositionPatient"``; empty when the geometry is complete.
        series_uid: SeriesInstanceUID of the file (frames of several series can form one stack).
        frame_of_reference_uid: FrameOfReferenceUID of the file (``""`` when absent).
        acquisition_time: AcquisitionTime / ContentTime as text (orders re-acquired slices).
    """

    path: Path
    frame_index: int
    n_frames_in_file: int
    sop_instance_uid: str
    instance_number: int | None
    rows: int
    columns: int
    position: tuple[float, float, float] | None
    orientation: tuple[float, float, float, float, float, float] | None
    pixel_spacing: tuple[float, float] | None
    slice_thickness: float | None
    trigger_time: float | None
    temporal_index: int | None
    rescale: tuple[float, float] = (1.0, 0.0)
    geometry_errors: tuple[str, ...] = ()
    series_uid: str = ""
    frame_of_reference_uid: str = ""
    acquisition_time: str = ""

    @property
    def name(self) -> str:
        """The file path, with the 1-based frame number for multi-frame files."""
        if self.n_frames_in_file > 1:
            return f"{self.path} (frame {self.frame_index + 1})"
        return str(self.path)


class WarningLog:
    """Collect Python warnings (pydicom's) while reading, reported as one line per kind.

    Use as a context manager; nested uses each keep their own records. A *kind* is the warning
    message with quoted values and numbers replaced, so 240 "Invalid value for VR UI:
    '1.2.0897...'" warnings make one line.

    Args:
        loggers: names of loggers (e.g. ``"pydicom"``) whose records, and those of their
            descendants, are held back while the log is active and kept in :attr:`records`
            instead of being emitted (pydicom logs what it warns about; they are not counted
            again in :meth:`lines`). Default: none, log records pass as usual.

    Example:
        >>> log = WarningLog()
        >>> with log:
        ...     warnings.warn("Invalid value for VR UI: '1.2.03'")
        >>> log.lines()
        ["1 warning: Invalid value for VR UI: '1.2.03'"]
    """

    def __init__(self, loggers: Sequence[str] = ()) -> None:
        self._counts: Counter[str] = Counter()
        self._example: dict[str, str] = {}
        self._ctx: warnings.catch_warnings | None = None
        self._records: list[warnings.WarningMessage] | None = None
        self._logger_names = tuple(loggers)
        self._held: list[logging.Logger] = []
        #: Log records held back from `loggers` (in order).
        self.records: list[logging.LogRecord] = []

    def __enter__(self) -> WarningLog:
        names = [
            name
            for name in dict.fromkeys([*self._logger_names, *logging.root.manager.loggerDict])
            if any(name == root or name.startswith(root + ".") for root in self._logger_names)
        ]
        self._held = [logging.getLogger(name) for name in names]
        for logger in self._held:
            logger.addFilter(self._hold)
        self._ctx = warnings.catch_warnings(record=True)
        self._records = self._ctx.__enter__()
        warnings.simplefilter("always")
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for record in self._records or []:
            self.add(str(record.message))
        assert self._ctx is not None
        self._ctx.__exit__(exc_type, exc, tb)
        self._ctx = self._records = None
        for logger in self._held:
            logger.removeFilter(self._hold)
        self._held = []

    def _hold(self, record: logging.LogRecord) -> bool:
        """Logging filter: keep `record` in :attr:`records` and do not emit it."""
        self.records.append(record)
        return False

    def add(self, message: str) -> None:
        """Count one warning message under its kind."""
        first = message.strip().splitlines()[0] if message.strip() else "(empty warning)"
        kind = re.sub(r"'[^']*'|\"[^\"]*\"|\d+(\.\d+)*", "#", first)
        self._counts[kind] += 1
        self._example.setdefault(kind, first)

    def lines(self, width: int | None = None) -> list[str]:
        """One line per kind: count and the first message of that kind (cut to `width` characters)."""
        return [
            f"{n} warning{'s' if n != 1 else ''}: {self._example[kind][:width]}"
            for kind, n in self._counts.most_common()
        ]


# --------------------------------------------------------------------------------------------
# attribute helpers
# --------------------------------------------------------------------------------------------


def text(ds: Dataset | None, keyword: str) -> str:
    """A top-level attribute as stripped text (``""`` when absent, empty or unreadable)."""
    if ds is None:
        return ""
    try:
        value = ds.get(keyword)
    except Exception:  # noqa: BLE001 - a malformed value of a lazily parsed element
        return ""
    return "" if value is None else str(value).strip()


def number(value: object) -> float | None:
    """A finite float from a DS / IS / str value, else ``None``."""
    try:
        result = float(str(value))
    except (TypeError, ValueError):
        return None
    return result if math.isfinite(result) else None


def attr_number(ds: Dataset | None, keyword: str) -> float | None:
    """Attribute `keyword` of `ds` as a finite float, or ``None`` when absent / empty / malformed."""
    if ds is None or keyword not in ds:
        return None
    try:
        value = ds[keyword].value
    except Exception:  # noqa: BLE001 - a malformed value of a lazily parsed element
        return None
    if value is None or value == "":
        return None
    return number(value)


def vector(ds: Dataset | None, keyword: str, n: int, where: str = "") -> tuple[tuple[float, ...] | None, str | None]:
    """Attribute `keyword` of `ds` as `n` finite floats, or ``(None, reason)``."""
    try:
        raw = None if ds is None or keyword not in ds else ds[keyword].value
    except Exception:  # noqa: BLE001 - a malformed value of a lazily parsed element
        return None, f"has a malformed {keyword}{where}"
    if raw is None or raw == "":
        return None, f"lacks {keyword}{where}"
    values = list(raw) if isinstance(raw, (list, tuple, MultiValue)) else [raw]
    numbers = [number(v) for v in values]
    if len(numbers) != n or any(v is None for v in numbers):
        return None, f"has a malformed {keyword}{where} ({raw!r}; need {n} numbers)"
    return tuple(float(v) for v in numbers if v is not None), None


def first_item(container: Dataset | None, keyword: str) -> Dataset | None:
    """First item of sequence `keyword` in `container`, or ``None``."""
    if container is None or keyword not in container:
        return None
    seq = container[keyword].value
    return seq[0] if seq else None


# --------------------------------------------------------------------------------------------
# headers
# --------------------------------------------------------------------------------------------


def read_header(path: Path) -> tuple[Dataset | None, str | None]:
    """Read the header of `path` without pixels: ``(dataset, None)`` or ``(None, reason)``.

    Files without the 128-byte preamble and ``DICM`` marker are accepted only when they start
    like a raw little-endian dataset (group 0002 or 0008), so text and images are not forced.
    """
    try:
        return pydicom.dcmread(path, stop_before_pixels=True), None
    except InvalidDicomError:
        try:
            with open(path, "rb") as fh:
                head = fh.read(2)
        except OSError as exc:
            return None, f"cannot be opened ({exc.strerror or exc})"
        if head not in (b"\x02\x00", b"\x08\x00"):
            return None, "not a DICOM file (no 'DICM' marker and no raw DICOM dataset)"
        try:
            return pydicom.dcmread(path, stop_before_pixels=True, force=True), None
        except Exception as exc:  # noqa: BLE001 - pydicom raises many types on corrupt input
            return None, f"unreadable DICOM header ({type(exc).__name__}: {exc})"
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on corrupt input
        return None, f"unreadable or truncated DICOM header ({type(exc).__name__}: {exc})"


def is_dicomdir(ds: Dataset) -> bool:
    """True for a DICOMDIR (Media Storage Directory Storage) dataset."""
    meta = getattr(ds, "file_meta", None)
    sop = text(meta, "MediaStorageSOPClassUID") if meta is not None else ""
    return sop == MediaStorageDirectoryStorage or "DirectoryRecordSequence" in ds


def _trigger_and_index(cardiac: Dataset | None, content: Dataset | None, unassigned: Dataset | None) -> tuple:
    """Trigger delay (ms) and temporal index from an enhanced frame's functional groups."""
    trigger = attr_number(cardiac, "NominalCardiacTriggerDelayTime")
    if trigger is None:
        trigger = attr_number(cardiac, "ActualCardiacTriggerDelayTime")
    if trigger is None:
        trigger = attr_number(unassigned, "TriggerTime")
    temporal = attr_number(content, "TemporalPositionIndex")
    if temporal is None:
        temporal = attr_number(unassigned, "TemporalPositionIdentifier")
    return trigger, temporal


class _Groups:
    """Functional-group lookup of one frame: its per-frame item first, then the shared item."""

    def __init__(self, ds: Dataset, item: Dataset | None) -> None:
        self.item = item
        self.shared = first_item(ds, "SharedFunctionalGroupsSequence")

    def __call__(self, keyword: str) -> Dataset | None:
        found = first_item(self.item, keyword)
        return found if found is not None else first_item(self.shared, keyword)


def _first_vector(sources: list[Dataset | None], keyword: str, n: int, where: str) -> tuple:
    """The first source holding `keyword` as `n` numbers; else the first source's reason."""
    reason = None
    for source in sources:
        value, error = vector(source, keyword, n, where)
        if value is not None:
            return value, None
        reason = reason or error
    return None, reason


def _frame(
    path: Path, index: int, n_frames: int, ds: Dataset, groups: _Groups, classic: bool, common: dict
) -> FrameRef:
    """One frame; `classic` reads the top-level attributes first, the functional groups second."""
    where = "" if classic else f" (frame {index + 1})"
    plane_pos, plane_ori = groups("PlanePositionSequence"), groups("PlaneOrientationSequence")
    measures = groups("PixelMeasuresSequence")
    top = [ds] if classic else []
    position, e1 = _first_vector([*top, plane_pos], "ImagePositionPatient", 3, where)
    orientation, e2 = _first_vector([*top, plane_ori], "ImageOrientationPatient", 6, where)
    spacing, e3 = _first_vector([*top, measures], "PixelSpacing", 2, where)
    unassigned = first_item(groups.item, "UnassignedPerFrameConvertedAttributesSequence")
    g_trigger, g_temporal = _trigger_and_index(
        groups("CardiacSynchronizationSequence"), groups("FrameContentSequence"), unassigned
    )
    transform = groups("PixelValueTransformationSequence")
    thickness = attr_number(measures, "SliceThickness")
    top_thickness = attr_number(ds, "SliceThickness")
    if classic:
        trigger = attr_number(ds, "TriggerTime")
        trigger = g_trigger if trigger is None else trigger
        temporal = attr_number(ds, "TemporalPositionIdentifier")
        temporal = g_temporal if temporal is None else temporal
        thickness = top_thickness if top_thickness is not None else thickness
        slope, intercept = attr_number(ds, "RescaleSlope"), attr_number(ds, "RescaleIntercept")
        slope = attr_number(transform, "RescaleSlope") if slope is None else slope
        intercept = attr_number(transform, "RescaleIntercept") if intercept is None else intercept
    else:
        trigger, temporal = g_trigger, g_temporal
        thickness = top_thickness if thickness is None else thickness
        slope, intercept = attr_number(transform, "RescaleSlope"), attr_number(transform, "RescaleIntercept")
        slope = attr_number(ds, "RescaleSlope") if slope is None else slope
        intercept = attr_number(ds, "RescaleIntercept") if intercept is None else intercept
    return FrameRef(
        path=path,
        frame_index=index,
        n_frames_in_file=n_frames,
        position=position,  # type: ignore[arg-type]
        orientation=orientation,  # type: ignore[arg-type]
        pixel_spacing=spacing,  # type: ignore[arg-type]
        slice_thickness=thickness,
        trigger_time=trigger,
        temporal_index=None if temporal is None else int(temporal),
        rescale=(1.0 if slope is None else slope, 0.0 if intercept is None else intercept),
        geometry_errors=tuple(e for e in (e1, e2, e3) if e),
        **common,
    )


def frames_from_header(path: Path, ds: Dataset) -> list[FrameRef]:
    """Every frame of an image file, from its header (module docstring for the rules).

    Args:
        path: the file.
        ds: its header.

    Returns:
        One :class:`FrameRef` per frame.

    Raises:
        HeaderError: if Rows / Columns are malformed, a multi-frame file's functional groups do
            not match NumberOfFrames, or a multi-frame file has no functional groups.
    """
    rows, columns = attr_number(ds, "Rows"), attr_number(ds, "Columns")
    if not rows or not columns or rows < 1 or columns < 1:
        raise HeaderError(f"has invalid Rows / Columns ({ds.get('Rows')!r} x {ds.get('Columns')!r})")
    instance = attr_number(ds, "InstanceNumber")
    common: dict[str, object] = {
        "sop_instance_uid": text(ds, "SOPInstanceUID"),
        "instance_number": None if instance is None else int(instance),
        "rows": int(rows),
        "columns": int(columns),
        "series_uid": text(ds, "SeriesInstanceUID"),
        "frame_of_reference_uid": text(ds, "FrameOfReferenceUID"),
        "acquisition_time": text(ds, "AcquisitionTime") or text(ds, "ContentTime"),
    }
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    n_frames = attr_number(ds, "NumberOfFrames")
    if n_frames is None or n_frames <= 1:
        # A single-frame file: classic attributes first, even with (empty) functional groups.
        item = per_frame[0] if len(per_frame) >= 1 else None
        return [_frame(path, 0, 1, ds, _Groups(ds, item), True, common)]
    n = int(n_frames)
    if not per_frame:
        raise HeaderError(f"is a multi-frame file ({n} frames) without per-frame functional groups; not supported")
    if len(per_frame) != n:
        raise HeaderError(f"NumberOfFrames is {n} but PerFrameFunctionalGroupsSequence has {len(per_frame)} items")
    return [_frame(path, i, n, ds, _Groups(ds, item), False, common) for i, item in enumerate(per_frame)]
