"""Read a DICOM study (any folder) into the short-axis cine :class:`~cardiolora.data.cine.CineStudy`.

Three steps, each usable on its own:

1. :func:`scan_folder` walks a folder (any nesting, any file names, no extension needed), reads
   headers only (``pydicom.dcmread(stop_before_pixels=True)``) and groups the image instances into
   series by ``(StudyInstanceUID, SeriesInstanceUID)``. Each series is described by a
   :class:`SeriesInfo` (modality, SOP class, orientation, slice positions, phases per position,
   matrix, pixel spacing, Enhanced MR or not). Files that are not DICOM, unreadable or truncated
   headers and duplicate SOPInstanceUIDs become :class:`Problem` entries; DICOMDIR files and
   non-image instances are listed as skipped. Nothing stops the scan.
2. :func:`select_short_axis_cine` picks the short-axis cine among the series (or the one the user
   names by SeriesInstanceUID, SeriesNumber or SeriesDescription) and, when none qualifies, raises
   a :class:`DicomInputError` that lists every series with the reasons it was rejected.
3. :func:`read_cine` reads the pixels of the chosen series into a ``(T, Z, Y, X)`` float32
   :class:`CineStudy` (``label=None``). :func:`read_short_axis_cine` does all three.

Both classic single-frame MR Image Storage files and multi-frame files with functional groups
(Enhanced MR Image Storage ``1.2.840.10008.5.1.4.1.1.4.1`` and Legacy Converted Enhanced MR
``1.2.840.10008.5.1.4.1.1.4.4``) are read; the unit of work is the 2D *frame*.

Conventions (the phantom writers of :mod:`cardiolora.data.writers` follow the same ones, so a
phantom written by :func:`~cardiolora.data.writers.write_dicom_cine` reads back with the same
array, affine and trigger times):

* **Slice order.** ``n = row cosine × column cosine`` (from ImageOrientationPatient) is the slice
  normal. Slice positions are the projections ``ImagePositionPatient · n``, grouped with the
  tolerance :data:`POSITION_TOL_MM`, and slice ``z = 0`` is the position with the *smallest*
  projection: the slice index increases along ``n``. The affine's third column is therefore
  ``+n × slice spacing`` (a right-handed voxel grid) and its translation is the
  ImagePositionPatient of slice 0. The project's phantoms put slice 0 at the base with the third
  column ``+n × spacing``, so they read back unflipped; a series written with the third column
  ``-n × spacing`` reads back with the slice axis reversed, in the image and the affine alike
  (the geometry of every voxel is unchanged).
* **Phase order.** Within each slice position the frames are ordered by TriggerTime (classic) or
  NominalCardiacTriggerDelayTime (Enhanced; Legacy Converted files keep TriggerTime in their
  unassigned per-frame attributes). If any frame of the series lacks a trigger time, the whole
  series is ordered by TemporalPositionIdentifier (Enhanced: TemporalPositionIndex) instead, and
  if that is missing too, by InstanceNumber (then frame number). Phase ``t`` of the study is the
  ``t``-th frame of every slice position; ``trigger_times_ms[t]`` is the mean trigger time of
  phase ``t`` over the slice positions (per-slice values in ``meta``; NaN when unknown).
* **Intensities.** ``stored * RescaleSlope + RescaleIntercept`` per frame (slope 1, intercept 0
  when absent), as float32. The phantom writer stores 12-bit integers with one slope per series,
  so a round trip recovers the phantom within ``slope / 2`` plus float32 rounding.
* **Incomplete slice positions.** A series whose slice positions hold different numbers of
  phases (the RVSC 2012 series hold 2, 2 and 20) is refused by default
  (``incomplete_positions="raise"``). With ``incomplete_positions="drop"`` only the positions
  that hold the *full* phase set (the largest count) are kept; the others are listed in
  ``meta["positions_dropped"]``. This is the clinically sensible choice of the two: a phase must
  be the same cardiac time at every slice for a volume to mean anything, and the partial
  positions of such series are not the same cardiac times (RVSC patient 09: the second frame of
  the three positions is at 48.75, 48.75 and 322 ms), so truncating every position to the
  phases "common" to all would mix systole and diastole in one volume; dropping positions keeps
  true cine data and the report says that the volumes cover only the kept slices. The kept
  positions must still form an evenly spaced stack (a dropped middle slice is refused), and a
  single kept position is read as a 2D+t cine whose slice spacing is its SliceThickness.
* **ED / ES.** DICOM does not say which phase is end-systole. ``ed_phase = 0`` (the first trigger
  time: end-diastole by the ECG-gating convention) and ``es_phase = 0`` as a placeholder;
  ``meta["ed_es_known"]`` is ``False`` until a segmentation decides.

``CineStudy.meta`` keys: ``source_files``, ``source_sop_instance_uids`` and
``source_frame_numbers`` (each ``[t][z]``: the file, SOPInstanceUID and 1-based frame number of
phase ``t``, slice ``z``, to reference source instances from a DICOM SEG);
``study_instance_uid``, ``series_instance_uid``, ``frame_of_reference_uid``, ``series_number``,
``series_description``, ``sop_class_uid``, ``patient_id``, ``manufacturer``, ``scanner``,
``field_strength_t``, ``height_cm`` (PatientSize × 100), ``weight_kg`` (PatientWeight), ``sex``,
``age_years`` (when present), ``phase_order`` (which attribute ordered the phases),
``slice_order``, ``trigger_times_ms_per_slice`` (``[t][z]``), ``trigger_time_spread_ms``,
``ed_es_known``, ``problems`` (scan problems of this series) and ``duplicates_dropped``.

Errors: everything that makes a series unreadable raises :class:`DicomInputError` (a
``ValueError``) naming the file or the series and the reason.

Example:
    >>> study = read_short_axis_cine("/data/study_folder")  # doctest: +SKIP
    >>> study.image.shape  # (T, Z, Y, X)  # doctest: +SKIP
    (25, 10, 256, 216)
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from cardiolora.data.cine import CineStudy

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DicomInputError",
    "INCOMPLETE_POSITION_POLICIES",
    "ENHANCED_MR_IMAGE_STORAGE",
    "FrameRef",
    "LEGACY_ENHANCED_MR_IMAGE_STORAGE",
    "MR_IMAGE_STORAGE",
    "NON_SHORT_AXIS_HINTS",
    "ORIENTATION_TOL_DEG",
    "POSITION_TOL_MM",
    "Problem",
    "SHORT_AXIS_HINTS",
    "ScanResult",
    "SeriesInfo",
    "read_cine",
    "read_short_axis_cine",
    "rejection_reasons",
    "scan_folder",
    "select_short_axis_cine",
]

#: SOP Class UID of classic (single-frame) MR Image Storage.
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
#: SOP Class UID of Enhanced MR Image Storage (multi-frame, functional groups).
ENHANCED_MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4.1"
#: SOP Class UID of Legacy Converted Enhanced MR Image Storage (multi-frame, functional groups).
LEGACY_ENHANCED_MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4.4"
#: SOP Class UID of a DICOMDIR (Media Storage Directory Storage).
_MEDIA_DIRECTORY_STORAGE = "1.2.840.10008.1.3.10"
#: What :func:`read_cine` does with slice positions that lack phases (module docstring).
INCOMPLETE_POSITION_POLICIES: tuple[str, ...] = ("raise", "drop")
#: Default pixel-memory limit of :func:`read_cine` (2 GiB of float32 voxels).
DEFAULT_MAX_BYTES = 2 * 1024**3
#: Two frames whose positions differ by less than this (mm) are at the same place.
POSITION_TOL_MM = 0.1
#: Two orientations whose row or column cosines differ by less than this angle are the same.
ORIENTATION_TOL_DEG = 0.5
#: Relative tolerance on PixelSpacing within a series.
_SPACING_RTOL = 1e-4
#: Words in SeriesDescription / ProtocolName that hint at a short-axis cine (lower case). Short
#: ones must be whole words; longer ones may be part of a word (``"sa_cine"``, ``"TrueFISP"``).
SHORT_AXIS_HINTS: tuple[str, ...] = (
    "sa",
    "sax",
    "short",
    "cine",
    "btfe",
    "truefisp",
    "trufi",
    "fiesta",
    "ssfp",
)
#: Words that hint at something else (long-axis views, localisers).
NON_SHORT_AXIS_HINTS: tuple[str, ...] = (
    "2ch", "3ch", "4ch", "lax", "lvot", "rvot", "loc", "localizer", "localiser", "scout", "survey",
)  # fmt: skip
_WHOLE_WORD_MAX = 3
_PHASE_COUNT_ISSUE = "inconsistent number of phases"
_MAX_NAMES = 3  # files named in one message before "…"


class DicomInputError(ValueError):
    """A DICOM study, series or file cannot be read as a short-axis cine; the message says why."""


@dataclass(frozen=True)
class Problem:
    """A file that was left out of the scan, and why.

    Attributes:
        path: the file.
        reason: why it was left out (not DICOM, truncated header, duplicate SOPInstanceUID ...).
    """

    path: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


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

    @property
    def name(self) -> str:
        """The file path, with the 1-based frame number for multi-frame files."""
        if self.n_frames_in_file > 1:
            return f"{self.path} (frame {self.frame_index + 1})"
        return str(self.path)


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
        problems: scan problems that concern this series (duplicate SOPInstanceUIDs).
        geometry_issues: frames with missing or malformed geometry tags.
        orientation_issues: frames whose plane is tilted or rotated relative to the first one.
        issues: everything that stops :func:`read_cine` (geometry, matrix, spacing, orientation,
            phase counts, slice gaps ...), each naming files or positions.
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
    problems: tuple[Problem, ...] = ()
    geometry_issues: tuple[str, ...] = ()
    orientation_issues: tuple[str, ...] = ()
    issues: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """How messages name the series, e.g. ``series 5 'SA cine'``."""
        number = "?" if self.series_number is None else str(self.series_number)
        return f"series {number} '{self.description}'"

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
        return (
            f"{self.label} ({self.modality or 'no modality'}{kind}, {_plural(len(self.frames), 'frame')}): "
            f"{_plural(self.n_positions, 'slice position')} x {phase_text} phases, "
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
    """

    root: Path
    series: list[SeriesInfo]
    problems: list[Problem]
    skipped: list[Problem]
    n_files: int


class _HeaderError(Exception):
    """Internal: a header that cannot be described (becomes a Problem)."""


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------


def _names(items: Sequence[str]) -> str:
    """At most :data:`_MAX_NAMES` items joined by ", ", then "… (N in all)"."""
    shown = ", ".join(items[:_MAX_NAMES])
    return shown if len(items) <= _MAX_NAMES else f"{shown}, ... ({len(items)} in all)"


def _text(ds: Dataset | None, keyword: str) -> str:
    """A top-level attribute as stripped text (``""`` when absent or empty)."""
    if ds is None:
        return ""
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()


def _number(value: object) -> float | None:
    """A finite float from a DS / IS / str value, else ``None``."""
    try:
        number = float(str(value))
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _attr_number(ds: Dataset | None, keyword: str) -> float | None:
    """Attribute `keyword` of `ds` as a finite float, or ``None`` when absent / empty / malformed."""
    if ds is None or keyword not in ds:
        return None
    value = ds[keyword].value
    if value is None or value == "":
        return None
    return _number(value)


def _vector(ds: Dataset | None, keyword: str, n: int, where: str = "") -> tuple[tuple[float, ...] | None, str | None]:
    """Attribute `keyword` of `ds` as `n` finite floats, or ``(None, reason)``."""
    if ds is None or keyword not in ds or ds[keyword].value in (None, ""):
        return None, f"lacks {keyword}{where}"
    raw = ds[keyword].value
    values = list(raw) if isinstance(raw, (list, tuple, pydicom.multival.MultiValue)) else [raw]
    numbers = [_number(v) for v in values]
    if len(numbers) != n or any(v is None for v in numbers):
        return None, f"has a malformed {keyword}{where} ({raw!r}; need {n} numbers)"
    return tuple(float(v) for v in numbers), None  # type: ignore[arg-type]


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    """Angle between two unit vectors in degrees."""
    return math.degrees(math.acos(max(-1.0, min(1.0, float(np.dot(a, b))))))


def _first_item(container: Dataset | None, keyword: str) -> Dataset | None:
    """First item of sequence `keyword` in `container`, or ``None``."""
    if container is None or keyword not in container:
        return None
    seq = container[keyword].value
    return seq[0] if seq else None


# --------------------------------------------------------------------------------------------
# headers
# --------------------------------------------------------------------------------------------


def _read_header(path: Path) -> tuple[Dataset | None, str | None]:
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


def _is_dicomdir(ds: Dataset) -> bool:
    meta = getattr(ds, "file_meta", None)
    sop = _text(meta, "MediaStorageSOPClassUID") if meta is not None else ""
    return sop == _MEDIA_DIRECTORY_STORAGE or "DirectoryRecordSequence" in ds


def _classic_frame(path: Path, ds: Dataset, common: dict[str, object]) -> FrameRef:
    """The single frame of a classic image file."""
    position, e1 = _vector(ds, "ImagePositionPatient", 3)
    orientation, e2 = _vector(ds, "ImageOrientationPatient", 6)
    spacing, e3 = _vector(ds, "PixelSpacing", 2)
    temporal = _attr_number(ds, "TemporalPositionIdentifier")
    slope = _attr_number(ds, "RescaleSlope")
    intercept = _attr_number(ds, "RescaleIntercept")
    return FrameRef(
        path=path,
        frame_index=0,
        n_frames_in_file=1,
        position=position,  # type: ignore[arg-type]
        orientation=orientation,  # type: ignore[arg-type]
        pixel_spacing=spacing,  # type: ignore[arg-type]
        slice_thickness=_attr_number(ds, "SliceThickness"),
        trigger_time=_attr_number(ds, "TriggerTime"),
        temporal_index=None if temporal is None else int(temporal),
        rescale=(1.0 if slope is None else slope, 0.0 if intercept is None else intercept),
        geometry_errors=tuple(e for e in (e1, e2, e3) if e),
        **common,  # type: ignore[arg-type]
    )


def _functional_frames(path: Path, ds: Dataset, common: dict[str, object]) -> list[FrameRef]:
    """The frames of a multi-frame file with (per-frame and shared) functional groups."""
    per_frame = ds.PerFrameFunctionalGroupsSequence
    shared = _first_item(ds, "SharedFunctionalGroupsSequence")
    n_frames = int(_attr_number(ds, "NumberOfFrames") or len(per_frame))
    if len(per_frame) != n_frames:
        raise _HeaderError(
            f"NumberOfFrames is {n_frames} but PerFrameFunctionalGroupsSequence has {len(per_frame)} items"
        )
    top_slope, top_intercept = _attr_number(ds, "RescaleSlope"), _attr_number(ds, "RescaleIntercept")
    frames = []
    for i, item in enumerate(per_frame):

        def group(keyword: str, item: Dataset = item) -> Dataset | None:
            found = _first_item(item, keyword)
            return found if found is not None else _first_item(shared, keyword)

        where = f" (frame {i + 1})"
        position, e1 = _vector(group("PlanePositionSequence"), "ImagePositionPatient", 3, where)
        orientation, e2 = _vector(group("PlaneOrientationSequence"), "ImageOrientationPatient", 6, where)
        measures = group("PixelMeasuresSequence")
        spacing, e3 = _vector(measures, "PixelSpacing", 2, where)
        cardiac = group("CardiacSynchronizationSequence")
        unassigned = _first_item(item, "UnassignedPerFrameConvertedAttributesSequence")
        trigger = _attr_number(cardiac, "NominalCardiacTriggerDelayTime")
        if trigger is None:
            trigger = _attr_number(cardiac, "ActualCardiacTriggerDelayTime")
        if trigger is None:
            trigger = _attr_number(unassigned, "TriggerTime")
        temporal = _attr_number(group("FrameContentSequence"), "TemporalPositionIndex")
        if temporal is None:
            temporal = _attr_number(unassigned, "TemporalPositionIdentifier")
        transform = group("PixelValueTransformationSequence")
        slope = _attr_number(transform, "RescaleSlope")
        intercept = _attr_number(transform, "RescaleIntercept")
        slope = top_slope if slope is None else slope
        intercept = top_intercept if intercept is None else intercept
        thickness = _attr_number(measures, "SliceThickness")
        frames.append(
            FrameRef(
                path=path,
                frame_index=i,
                n_frames_in_file=n_frames,
                position=position,  # type: ignore[arg-type]
                orientation=orientation,  # type: ignore[arg-type]
                pixel_spacing=spacing,  # type: ignore[arg-type]
                slice_thickness=thickness if thickness is not None else _attr_number(ds, "SliceThickness"),
                trigger_time=trigger,
                temporal_index=None if temporal is None else int(temporal),
                rescale=(1.0 if slope is None else slope, 0.0 if intercept is None else intercept),
                geometry_errors=tuple(e for e in (e1, e2, e3) if e),
                **common,  # type: ignore[arg-type]
            )
        )
    return frames


def _frames_from_header(path: Path, ds: Dataset) -> list[FrameRef]:
    """Every frame of an image file, from its header.

    Raises:
        _HeaderError: if Rows / Columns are malformed or a multi-frame file has no functional
            groups (not supported).
    """
    rows, columns = _attr_number(ds, "Rows"), _attr_number(ds, "Columns")
    if not rows or not columns or rows < 1 or columns < 1:
        raise _HeaderError(f"has invalid Rows / Columns ({ds.get('Rows')!r} x {ds.get('Columns')!r})")
    instance = _attr_number(ds, "InstanceNumber")
    common: dict[str, object] = {
        "sop_instance_uid": _text(ds, "SOPInstanceUID"),
        "instance_number": None if instance is None else int(instance),
        "rows": int(rows),
        "columns": int(columns),
    }
    if "PerFrameFunctionalGroupsSequence" in ds:
        return _functional_frames(path, ds, common)
    n_frames = _attr_number(ds, "NumberOfFrames")
    if n_frames is not None and n_frames > 1:
        raise _HeaderError(
            f"is a multi-frame file ({int(n_frames)} frames) without per-frame functional groups; not supported"
        )
    return [_classic_frame(path, ds, common)]


_HEADER_KEYWORDS: tuple[str, ...] = (
    "PatientID",
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


# --------------------------------------------------------------------------------------------
# layout: slice positions, phases, consistency
# --------------------------------------------------------------------------------------------


@dataclass
class _Layout:
    """Geometry and order of the frames of a series (see :func:`_analyse`)."""

    row_cos: np.ndarray | None = None
    col_cos: np.ndarray | None = None
    normal: np.ndarray | None = None
    slices: list[list[FrameRef]] = field(default_factory=list)
    projections: list[float] = field(default_factory=list)
    phase_order: str = "InstanceNumber"
    duplicates: list[tuple[FrameRef, FrameRef]] = field(default_factory=list)
    geometry_issues: list[str] = field(default_factory=list)
    orientation_issues: list[str] = field(default_factory=list)
    issues: list[str] = field(default_factory=list)


def _phase_order(frames: Sequence[FrameRef]) -> str:
    """Which attribute orders the phases of `frames` (see the module docstring)."""
    if frames and all(f.trigger_time is not None for f in frames):
        return "TriggerTime"
    if frames and all(f.temporal_index is not None for f in frames):
        return "TemporalPositionIdentifier"
    return "InstanceNumber"


def _phase_key(frame: FrameRef, order: str) -> tuple[float, ...]:
    """The value that orders `frame` in time (equal keys at one position are duplicates)."""
    if order == "TriggerTime":
        return (round(float(frame.trigger_time), 3),)  # type: ignore[arg-type]
    if order == "TemporalPositionIdentifier":
        return (float(frame.temporal_index),)  # type: ignore[arg-type]
    return (float(frame.instance_number or 0), float(frame.frame_index))


def _geometry_issues(frames: Sequence[FrameRef]) -> list[str]:
    """One message per kind of missing / malformed geometry tag, naming the frames."""
    by_reason: dict[str, list[str]] = defaultdict(list)
    for f in frames:
        for reason in f.geometry_errors:
            by_reason[re.sub(r" \(frame \d+\)", "", reason)].append(f.name)
    return [f"{_names(names)} {reason}" for reason, names in by_reason.items()]


def _consistency_issues(frames: Sequence[FrameRef]) -> list[str]:
    """Rows / Columns and PixelSpacing that differ within the series, naming the odd files."""
    issues = []
    matrices = Counter((f.rows, f.columns) for f in frames)
    if len(matrices) > 1:
        common = matrices.most_common(1)[0][0]
        odd = [f"{f.name} ({f.rows}x{f.columns})" for f in frames if (f.rows, f.columns) != common]
        issues.append(
            f"Rows x Columns differ within the series: {common[0]}x{common[1]} in most frames, but {_names(odd)}"
        )
    spacings = [f.pixel_spacing for f in frames if f.pixel_spacing is not None]
    if spacings:
        ref = Counter(spacings).most_common(1)[0][0]
        odd = [
            f"{f.name} ({f.pixel_spacing[0]:g}, {f.pixel_spacing[1]:g})"
            for f in frames
            if f.pixel_spacing is not None and not np.allclose(f.pixel_spacing, ref, rtol=_SPACING_RTOL, atol=0)
        ]
        if odd:
            issues.append(
                f"PixelSpacing differs within the series: ({ref[0]:g}, {ref[1]:g}) mm in most frames, but {_names(odd)}"
            )
    return issues


def _orientation_issues(frames: Sequence[FrameRef], row0: np.ndarray, col0: np.ndarray, ref: FrameRef) -> list[str]:
    """Frames whose plane is not parallel to, or is rotated within, the reference frame's plane."""
    normal0 = _unit(np.cross(row0, col0))
    tilted, rotated = [], []
    for f in frames:
        o = np.asarray(f.orientation, dtype=np.float64)
        row, col = _unit(o[:3]), _unit(o[3:])
        tilt = _angle_deg(normal0, _unit(np.cross(row, col)))
        if tilt > ORIENTATION_TOL_DEG:
            tilted.append(f"{f.name} ({tilt:.1f} deg)")
        elif max(_angle_deg(row0, row), _angle_deg(col0, col)) > ORIENTATION_TOL_DEG:
            rotated.append(f"{f.name} ({_angle_deg(row0, row):.1f} deg)")
    issues = []
    if tilted:
        issues.append(f"ImageOrientationPatient is not parallel to that of {ref.name}: {_names(tilted)}")
    if rotated:
        issues.append(f"ImageOrientationPatient is rotated in-plane relative to {ref.name}: {_names(rotated)}")
    return issues


def _group_positions(frames: Sequence[FrameRef], normal: np.ndarray) -> tuple[list[list[FrameRef]], list[float]]:
    """Group frames by their projection on `normal` (gap > POSITION_TOL_MM starts a new group)."""
    proj = sorted(((float(np.dot(f.position, normal)), f) for f in frames), key=lambda pf: (pf[0], pf[1].name))
    groups: list[list[tuple[float, FrameRef]]] = []
    for p, f in proj:
        if groups and p - groups[-1][-1][0] <= POSITION_TOL_MM:
            groups[-1].append((p, f))
        else:
            groups.append([(p, f)])
    return [[f for _, f in g] for g in groups], [float(np.mean([p for p, _ in g])) for g in groups]


def _analyse(frames: Sequence[FrameRef]) -> _Layout:
    """Slice positions, phase order, duplicates and every inconsistency of a series' frames.

    Never raises: problems are collected in ``issues`` (and ``geometry_issues``).
    """
    lay = _Layout()
    lay.issues.extend(_consistency_issues(frames))
    lay.geometry_issues = _geometry_issues(frames)
    lay.issues.extend(lay.geometry_issues)
    good = [f for f in frames if not f.geometry_errors]
    if not good:
        return lay
    ref = good[0]
    o = np.asarray(ref.orientation, dtype=np.float64)
    lay.row_cos, lay.col_cos = _unit(o[:3]), _unit(o[3:])
    lay.normal = _unit(np.cross(lay.row_cos, lay.col_cos))
    lay.orientation_issues = _orientation_issues(good, lay.row_cos, lay.col_cos, ref)
    lay.issues.extend(lay.orientation_issues)

    groups, lay.projections = _group_positions(good, lay.normal)
    lay.phase_order = _phase_order(good)
    for pos, group in zip(lay.projections, groups, strict=True):
        origin = np.asarray(group[0].position)
        shifted = [f.name for f in group if np.linalg.norm(np.asarray(f.position) - origin) > POSITION_TOL_MM]
        if shifted:
            lay.issues.append(
                f"frames at slice position {pos:.2f} mm have different ImagePositionPatient "
                f"(in-plane offset) from {group[0].name}: {_names(shifted)}"
            )
        ordered = sorted(group, key=lambda f: (_phase_key(f, lay.phase_order), f.instance_number or 0, f.name))
        kept: list[FrameRef] = []
        for f in ordered:
            if kept and _phase_key(f, lay.phase_order) == _phase_key(kept[-1], lay.phase_order):
                lay.duplicates.append((f, kept[-1]))
            else:
                kept.append(f)
        lay.slices.append(kept)

    counts = [len(s) for s in lay.slices]
    if len(set(counts)) > 1:
        parts = [
            f"{n} at {p:.2f} mm ({s[0].path.name})" for n, p, s in zip(counts, lay.projections, lay.slices, strict=True)
        ]
        lay.issues.append(
            f"{_PHASE_COUNT_ISSUE} across slice positions (position along the normal, first file): " + ", ".join(parts)
        )
    if len(lay.projections) >= 2:
        gaps = np.diff(lay.projections)
        median = float(np.median(gaps))
        if np.max(np.abs(gaps - median)) > max(POSITION_TOL_MM, 0.01 * median):
            lay.issues.append(
                "slice positions are not evenly spaced (a slice missing?): gaps "
                + ", ".join(f"{g:.2f}" for g in gaps)
                + " mm between positions "
                + ", ".join(f"{p:.2f}" for p in lay.projections)
                + " mm"
            )
        origin0 = np.asarray(lay.slices[0][0].position)
        for pos, s in zip(lay.projections[1:], lay.slices[1:], strict=True):
            d = np.asarray(s[0].position) - origin0
            offset = float(np.linalg.norm(d - np.dot(d, lay.normal) * lay.normal))
            if offset > POSITION_TOL_MM:
                lay.issues.append(
                    f"slice position {pos:.2f} mm ({s[0].name}) is shifted in-plane by {offset:.2f} mm "
                    f"relative to slice 0 ({lay.slices[0][0].name}): not a stack along the normal"
                )
                break
    return lay


def _describe(frames: list[FrameRef], first: Dataset, problems: list[Problem], localizer: bool) -> SeriesInfo:
    """A :class:`SeriesInfo` from the frames of one series and its first header."""
    lay = _analyse(frames)
    ref = next((f for f in frames if not f.geometry_errors), frames[0])
    number = _attr_number(first, "SeriesNumber")
    sop = _text(first, "SOPClassUID")
    return SeriesInfo(
        study_uid=_text(first, "StudyInstanceUID"),
        series_uid=_text(first, "SeriesInstanceUID"),
        series_number=None if number is None else int(number),
        description=_text(first, "SeriesDescription"),
        protocol_name=_text(first, "ProtocolName"),
        modality=_text(first, "Modality"),
        sop_class_uid=sop,
        is_enhanced_mr=sop == ENHANCED_MR_IMAGE_STORAGE,
        multiframe="PerFrameFunctionalGroupsSequence" in first,
        is_localizer=localizer,
        rows=ref.rows,
        columns=ref.columns,
        pixel_spacing=ref.pixel_spacing,
        orientation=ref.orientation,
        orientation_consistent=not lay.orientation_issues,
        slice_positions_mm=tuple(lay.projections),
        phases_per_position=tuple(len(s) for s in lay.slices),
        phase_order=lay.phase_order,
        frames=tuple(frames),
        header={k: _text(first, k) for k in _HEADER_KEYWORDS if _text(first, k)},
        problems=tuple(problems),
        geometry_issues=tuple(lay.geometry_issues),
        orientation_issues=tuple(lay.orientation_issues),
        issues=tuple(lay.issues),
    )


# --------------------------------------------------------------------------------------------
# scanning
# --------------------------------------------------------------------------------------------


def _walk(root: Path) -> list[Path]:
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
    ds, reason = _read_header(path)
    if ds is None:
        return "problem", Problem(path, reason or "unreadable"), None
    try:
        if _is_dicomdir(ds):
            return (
                "skipped",
                Problem(path, "DICOMDIR (a media directory; the files it lists are scanned as files)"),
                None,
            )
        missing = [k for k in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID") if not _text(ds, k)]
        if missing:
            return (
                "problem",
                Problem(path, f"DICOM header lacks {', '.join(missing)} (truncated or incomplete file)"),
                None,
            )
        if "Rows" not in ds:
            sop = _text(ds, "SOPClassUID") or "unknown SOP class"
            return "skipped", Problem(path, f"not an image (SOP class {sop}, no Rows)"), None
        sop_uid = _text(ds, "SOPInstanceUID")
        key = (_text(ds, "StudyInstanceUID"), _text(ds, "SeriesInstanceUID"))
        if sop_uid in seen:
            reason = f"duplicate SOPInstanceUID {sop_uid} (same as {seen[sop_uid]}; that file is kept)"
            return "problem", Problem(path, reason), key
        frames = _frames_from_header(path, ds)
        localizer = any("LOCALIZER" in str(v).upper() for v in (ds.get("ImageType") or []))
    except _HeaderError as exc:
        return "problem", Problem(path, str(exc)), None
    except Exception as exc:  # noqa: BLE001 - lazily parsed values can fail on corrupt files
        return "problem", Problem(path, f"corrupt DICOM header ({type(exc).__name__}: {exc})"), None
    seen[sop_uid] = path
    return _Member(key, ds, frames, localizer)


def _scan_files(files: Sequence[Path], root: Path) -> ScanResult:
    """Scan `files` (in this order: the first of two duplicate SOPInstanceUIDs is kept)."""
    problems: list[Problem] = []
    skipped: list[Problem] = []
    members: dict[tuple[str, str], list[_Member]] = defaultdict(list)
    duplicates: dict[tuple[str, str], list[Problem]] = defaultdict(list)
    seen: dict[str, Path] = {}
    with warnings.catch_warnings():
        # pydicom warns about malformed values in corrupt files; the scan reports them as Problems.
        warnings.simplefilter("ignore")
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
            infos.append(_describe(frames, group[0].header, duplicates[key], any(m.localizer for m in group)))
    infos.sort(key=lambda s: (s.study_uid, s.series_number if s.series_number is not None else -1, s.series_uid))
    return ScanResult(root=root, series=infos, problems=problems, skipped=skipped, n_files=len(files))


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
        DicomInputError: if `path` does not exist.

    Example:
        >>> scan = scan_folder("/data/study")  # doctest: +SKIP
        >>> [s.summary() for s in scan.series]  # doctest: +SKIP
    """
    root = Path(path)
    if not root.exists():
        raise DicomInputError(f"{root}: no such file or folder.")
    files = [root] if root.is_file() else _walk(root)
    return _scan_files(files, root)


# --------------------------------------------------------------------------------------------
# selection
# --------------------------------------------------------------------------------------------


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def rejection_reasons(info: SeriesInfo, incomplete_positions: str = "raise") -> list[str]:
    """Why `info` is not a short-axis cine (empty when it qualifies).

    A short-axis cine is an MR series (not a localiser) with complete geometry, one orientation
    (parallel planes), at least 2 slice positions and at least 2 phases at every position. With
    ``incomplete_positions="drop"`` only the positions holding the full phase set count (at
    least 1 of them, with at least 2 phases).

    Args:
        info: a series from :func:`scan_folder`.
        incomplete_positions: ``"raise"`` or ``"drop"`` (see :func:`read_cine`).

    Returns:
        The reasons, e.g. ``["1 slice position (need >= 2)"]``.

    Raises:
        DicomInputError: if `incomplete_positions` is not one of
            :data:`INCOMPLETE_POSITION_POLICIES`.
    """
    _check_policy(incomplete_positions)
    reasons = []
    if info.modality and info.modality.upper() != "MR":
        reasons.append(f"modality {info.modality} (need MR)")
    if info.is_localizer:
        reasons.append("a localizer (ImageType LOCALIZER)")
    reasons.extend(f"missing geometry: {g}" for g in info.geometry_issues)
    reasons.extend(info.orientation_issues)
    if not info.orientation_consistent and not info.orientation_issues:
        reasons.append("orientations are not all parallel")
    if incomplete_positions == "drop" and info.phases_per_position:
        full = max(info.phases_per_position)
        n_full = sum(1 for n in info.phases_per_position if n == full)
        return reasons + _count_reasons(n_full, full, min_positions=1)
    return reasons + _count_reasons(info.n_positions, info.n_phases)


def _check_policy(incomplete_positions: str) -> None:
    if incomplete_positions not in INCOMPLETE_POSITION_POLICIES:
        raise DicomInputError(
            f"`incomplete_positions` must be one of {list(INCOMPLETE_POSITION_POLICIES)}, got {incomplete_positions!r}."
        )


def _count_reasons(n_positions: int, n_phases: int, min_positions: int = 2) -> list[str]:
    """Reasons about too few slice positions or phases (a cine stack needs >= 2 of each)."""
    reasons = []
    if n_positions < min_positions:
        reasons.append(f"{_plural(n_positions, 'slice position')} (need >= {min_positions})")
    if n_phases < 2:
        reasons.append(f"{_plural(n_phases, 'phase')} per slice position (need >= 2 for a cine)")
    return reasons


def _hint_score(info: SeriesInfo) -> int:
    """+1 if SeriesDescription / ProtocolName hint at a short-axis cine, -1 if at something else."""
    text = f"{info.description} {info.protocol_name}".lower()
    words = set(re.split(r"[^a-z0-9]+", text)) - {""}

    def hit(hints: Iterable[str]) -> bool:
        return any(h in words if len(h) <= _WHOLE_WORD_MAX else h in text for h in hints)

    if hit(NON_SHORT_AXIS_HINTS):
        return -1
    return 1 if hit(SHORT_AXIS_HINTS) else 0


def _trigger_times_vary(info: SeriesInfo) -> bool:
    """True when the frames carry trigger times that differ (cine evidence)."""
    times = {f.trigger_time for f in info.frames if f.trigger_time is not None}
    return len(times) > 1


def _rank_key(info: SeriesInfo) -> tuple[int, int, int, int]:
    return (
        _hint_score(info) + int(_trigger_times_vary(info)),
        info.n_positions * info.n_phases,
        info.n_positions,
        info.series_number if info.series_number is not None else -1,
    )


def _named(infos: Sequence[SeriesInfo], name: str | int) -> SeriesInfo:
    """The one series named by SeriesInstanceUID, SeriesNumber or SeriesDescription."""
    text = str(name).strip()
    for test in (
        lambda s: s.series_uid == text,
        lambda s: s.series_number is not None and str(s.series_number) == text,
        lambda s: s.description.casefold() == text.casefold(),
    ):
        matches = [s for s in infos if test(s)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            listed = "; ".join(f"{s.label} (SeriesInstanceUID {s.series_uid})" for s in matches)
            raise DicomInputError(
                f"`series` {name!r} names {len(matches)} series: {listed}. Name one by its SeriesInstanceUID."
            )
    available = "; ".join(s.summary() for s in infos) or "none"
    raise DicomInputError(
        f"`series` {name!r} matches no SeriesInstanceUID, SeriesNumber or SeriesDescription. Available: {available}."
    )


def select_short_axis_cine(
    series_list: ScanResult | Sequence[SeriesInfo],
    series: str | int | None = None,
    incomplete_positions: str = "raise",
) -> SeriesInfo:
    """Pick the short-axis cine series (or check the one the user names).

    Qualifying series pass :func:`rejection_reasons` (MR, not a localiser, complete geometry,
    parallel planes, >= 2 slice positions, >= 2 phases per position). Among them the choice
    ranks by, in order: a SeriesDescription / ProtocolName hint (:data:`SHORT_AXIS_HINTS` such as
    "sa", "sax", "short", "cine", "bTFE", "TrueFISP", "FIESTA" count +1, long-axis and localiser
    words :data:`NON_SHORT_AXIS_HINTS` -1) plus 1 when the trigger times vary; then positions ×
    phases; then the number of positions; then the higher SeriesNumber (the later, repeated
    acquisition).

    Args:
        series_list: a :class:`ScanResult` or its series.
        series: ``None`` to choose automatically, or the SeriesInstanceUID, the SeriesNumber or
            the SeriesDescription (case-insensitive) of the series to use.
        incomplete_positions: ``"raise"`` or ``"drop"``: with ``"drop"`` a series qualifies by
            the positions that hold the full phase set (see :func:`read_cine`).

    Returns:
        The chosen :class:`SeriesInfo`.

    Raises:
        DicomInputError: if there is no image series (listing the problem files), `series` names
            none or several series, the named series does not qualify (with the reasons, e.g.
            ``series 2 '4CH cine': 1 slice position (need >= 2)``), or no series qualifies (every
            series listed with its reasons).
    """
    _check_policy(incomplete_positions)
    scan = series_list if isinstance(series_list, ScanResult) else None
    infos = list(scan.series if scan is not None else series_list)
    if not infos:
        where = f" in {scan.root} ({scan.n_files} files)" if scan is not None else ""
        detail = ""
        if scan is not None and (scan.problems or scan.skipped):
            detail = " Files left out: " + "; ".join(str(p) for p in [*scan.problems, *scan.skipped][:10])
        raise DicomInputError(f"no DICOM image series found{where}.{detail}")
    if series is not None:
        chosen = _named(infos, series)
        reasons = rejection_reasons(chosen, incomplete_positions)
        if reasons:
            raise DicomInputError(f"{chosen.label} is not a short-axis cine: {'; '.join(reasons)}.")
        return chosen
    candidates = [s for s in infos if not rejection_reasons(s, incomplete_positions)]
    if not candidates:
        listed = "; ".join(f"{s.label}: {', '.join(rejection_reasons(s, incomplete_positions))}" for s in infos)
        raise DicomInputError(f"no short-axis cine series found among {len(infos)} series: {listed}.")
    return max(candidates, key=_rank_key)


# --------------------------------------------------------------------------------------------
# reading pixels
# --------------------------------------------------------------------------------------------


def _series_from_files(files: Iterable[str | os.PathLike]) -> SeriesInfo:
    """The one series made by an explicit list of files (problems kept in ``info.problems``)."""
    paths = sorted(Path(p) for p in files)
    if not paths:
        raise DicomInputError("`series_info_or_files` is an empty list of files.")
    folders = [p for p in paths if p.is_dir()]
    if folders:
        raise DicomInputError(
            f"{folders[0]} is a folder; pass files, a SeriesInfo, or use read_short_axis_cine(folder)."
        )
    absent = [str(p) for p in paths if not p.exists()]
    if absent:
        raise DicomInputError(f"files do not exist: {_names(absent)}.")
    scan = _scan_files(paths, paths[0].parent)
    if not scan.series:
        listed = "; ".join(str(p) for p in scan.problems[:10]) or "no image files"
        raise DicomInputError(f"none of the {len(paths)} files is a DICOM image: {listed}.")
    if len(scan.series) > 1:
        listed = "; ".join(s.summary() for s in scan.series)
        raise DicomInputError(f"the files hold {len(scan.series)} series, expected one: {listed}.")
    info = scan.series[0]
    info.problems = tuple(scan.problems)
    return info


def _pixels(path: Path, ds: Dataset, frames: int, rows: int, columns: int) -> np.ndarray:
    """Stored pixel values of file `path` as ``(frames, rows, columns)``, checked.

    Raises:
        DicomInputError: naming the file, if pixels are missing, not monochrome, shorter than
            ``Rows × Columns × frames × BitsAllocated / 8``, undecodable, or of another shape.
    """
    if "PixelData" not in ds:
        raise DicomInputError(f"{path}: no PixelData (FloatPixelData / compressed variants are not supported).")
    samples = int(_attr_number(ds, "SamplesPerPixel") or 1)
    photometric = _text(ds, "PhotometricInterpretation") or "MONOCHROME2"
    if samples != 1 or photometric != "MONOCHROME2":
        raise DicomInputError(
            f"{path}: PhotometricInterpretation {photometric} with {samples} samples per pixel; "
            "a cine must be MONOCHROME2 grey levels."
        )
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    bits = int(_attr_number(ds, "BitsAllocated") or 16)
    if syntax is None or not syntax.is_compressed:
        expected = rows * columns * frames * bits // 8
        got = len(ds.PixelData)
        if got < expected:
            raise DicomInputError(
                f"{path}: PixelData holds {got} bytes but Rows x Columns x frames x BitsAllocated/8 = "
                f"{rows} x {columns} x {frames} x {bits}/8 = {expected}; the file is truncated or corrupt."
            )
    try:
        arr = np.asarray(ds.pixel_array)
    except Exception as exc:  # noqa: BLE001 - decoders raise many types
        name = getattr(syntax, "name", "unknown transfer syntax")
        raise DicomInputError(f"{path}: cannot decode the pixel data ({name}): {exc}") from exc
    arr = arr.reshape((1, *arr.shape)) if arr.ndim == 2 else arr
    if arr.shape != (frames, rows, columns):
        raise DicomInputError(
            f"{path}: pixel data has shape {arr.shape}, the header scanned before said "
            f"{(frames, rows, columns)}; "
            "was the file changed?"
        )
    return arr


def _read_file(path: Path) -> Dataset:
    try:
        return pydicom.dcmread(path)
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on corrupt input
        raise DicomInputError(f"{path}: unreadable or truncated DICOM file ({type(exc).__name__}: {exc}).") from exc


def _patient_meta(header: dict[str, str]) -> dict[str, object]:
    """Writer-compatible patient / equipment keys of ``CineStudy.meta`` from a series header."""
    meta: dict[str, object] = {}
    size = _number(header.get("PatientSize"))
    if size is not None and size > 0:
        meta["height_cm"] = round(size * 100.0, 2)
    weight = _number(header.get("PatientWeight"))
    if weight is not None and weight > 0:
        meta["weight_kg"] = weight
    sex = header.get("PatientSex", "").upper()
    if sex in ("M", "F", "O"):
        meta["sex"] = sex
    age = header.get("PatientAge", "")
    if re.fullmatch(r"\d{3}Y", age):
        meta["age_years"] = int(age[:3])
    if header.get("Manufacturer"):
        meta["manufacturer"] = header["Manufacturer"]
    if header.get("ManufacturerModelName"):
        meta["scanner"] = header["ManufacturerModelName"]
    field_t = _number(header.get("MagneticFieldStrength"))
    if field_t is not None and field_t > 0:
        meta["field_strength_t"] = field_t
    if header.get("StudyDate"):
        meta["study_date"] = header["StudyDate"]
    return meta


def _trigger_times(
    slices: Sequence[Sequence[FrameRef]], n_phases: int
) -> tuple[np.ndarray, list[list[float | None]], float]:
    """Mean trigger time per phase (NaN when no slice has one), the per-slice table ``[t][z]``, spread."""
    table = [[s[t].trigger_time for s in slices] for t in range(n_phases)]
    means, spread = [], 0.0
    for row in table:
        known = [v for v in row if v is not None]
        means.append(float(np.mean(known)) if known else math.nan)
        if len(known) > 1:
            spread = max(spread, max(known) - min(known))
    return np.asarray(means, dtype=np.float64), table, spread


def _drop_incomplete_positions(lay: _Layout) -> tuple[_Layout, list[str]]:
    """Keep the slice positions that hold the full (largest) phase set; re-analyse their frames.

    Returns:
        The layout of the kept frames and one note per dropped position (``"2 phases at
        -39.25 mm (P09-0022.dcm)"``); ``(lay, [])`` unchanged when every position is complete.
    """
    counts = [len(s) for s in lay.slices]
    if len(set(counts)) <= 1:
        return lay, []
    full = max(counts)
    kept_ids = {id(f) for s in lay.slices if len(s) == full for f in s}
    kept = [f for s in lay.slices if len(s) == full for f in s]
    kept += [d for d, twin in lay.duplicates if id(twin) in kept_ids]
    notes = [
        f"{_plural(n, 'phase')} at {p:.2f} mm ({s[0].path.name})"
        for n, p, s in zip(counts, lay.projections, lay.slices, strict=True)
        if n != full
    ]
    new = _analyse(kept)
    before = [i for i in lay.issues if not i.startswith(_PHASE_COUNT_ISSUE)]
    new.issues = before + [
        f"{issue} (after dropping the incomplete positions: {', '.join(notes)})"
        for issue in new.issues
        if issue not in before
    ]
    return new, notes


def _single_slice_spacing(info: SeriesInfo, lay: _Layout) -> float:
    """Slice spacing of a one-position cine: its SliceThickness (there is no second position).

    Raises:
        DicomInputError: if the frames carry no positive SliceThickness.
    """
    thickness = lay.slices[0][0].slice_thickness
    if thickness is None or thickness <= 0:
        raise DicomInputError(
            f"{info.label}: the one slice position left ({lay.slices[0][0].name}) has no SliceThickness; "
            "a single-slice cine needs it for its voxel size."
        )
    return float(thickness)


def read_cine(
    series_info_or_files: SeriesInfo | Sequence[str | os.PathLike],
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    incomplete_positions: str = "raise",
) -> CineStudy:
    """Read a short-axis cine series into a ``(T, Z, Y, X)`` :class:`CineStudy` (``label=None``).

    Slices are ordered along ``n = row cosine × column cosine`` (slice 0 has the smallest
    ``ImagePositionPatient · n``; the affine's third column is ``+n × spacing``), phases by
    TriggerTime, else TemporalPositionIdentifier / TemporalPositionIndex, else InstanceNumber
    (module docstring). Intensities are ``stored * RescaleSlope + RescaleIntercept`` as float32.
    Frames at the same slice position and phase with different SOPInstanceUIDs are kept once
    when their pixels are identical (reported in ``meta["duplicates_dropped"]``).

    Args:
        series_info_or_files: a :class:`SeriesInfo` (from :func:`scan_folder` /
            :func:`select_short_axis_cine`) or the files of one series (classic or multi-frame).
        max_bytes: the largest pixel memory (float32 ``T × Z × Y × X × 4`` bytes) to allocate;
            checked before any pixel is read. Must be >= 1.
        incomplete_positions: ``"raise"`` (default) refuses a series whose slice positions hold
            different numbers of phases; ``"drop"`` keeps only the positions holding the full
            phase set (module docstring: why this and not the phases common to all), lists the
            others in ``meta["positions_dropped"]``, and accepts a single kept position as a
            2D+t cine (slice spacing = SliceThickness).

    Returns:
        The study: ``image`` float32, ``spacing_zyx`` = (slice spacing from the positions, row
        spacing, column spacing), ``affine_lps``, ``trigger_times_ms``, ``ed_phase = es_phase =
        0`` with ``meta["ed_es_known"] = False``, ``vendor`` = Manufacturer, ``subject_id`` =
        PatientID (else the SeriesInstanceUID), and the ``meta`` keys of the module docstring.

    Raises:
        DicomInputError: naming the file or series, if the files hold no or several series, a
            geometry tag (ImagePositionPatient, ImageOrientationPatient, PixelSpacing) is missing,
            Rows / Columns / PixelSpacing differ, the planes are not parallel, there are fewer than
            2 slice positions or 2 phases, the phase count differs between positions (naming
            them), slices are unevenly spaced or sheared, two different images share a position
            and phase, the pixel memory exceeds `max_bytes` (naming the size), a file is
            truncated, corrupt or undecodable, or `incomplete_positions` is unknown.
    """
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, (int, np.integer)) or max_bytes < 1:
        raise DicomInputError(f"`max_bytes` must be a positive integer, got {max_bytes!r}.")
    _check_policy(incomplete_positions)
    if isinstance(series_info_or_files, SeriesInfo):
        info = series_info_or_files
    elif isinstance(series_info_or_files, (str, os.PathLike)):
        info = _series_from_files([series_info_or_files])
    else:
        info = _series_from_files(series_info_or_files)

    lay = _analyse(info.frames)
    positions_dropped: list[str] = []
    if incomplete_positions == "drop":
        lay, positions_dropped = _drop_incomplete_positions(lay)
    issues = lay.issues + _count_reasons(
        len(lay.slices), min((len(s) for s in lay.slices), default=0), min_positions=1 if positions_dropped else 2
    )
    if issues or lay.row_cos is None or lay.col_cos is None or lay.normal is None:
        raise DicomInputError(f"{info.label} cannot be read as a short-axis cine: {'; '.join(issues)}.")

    n_slices, n_phases = len(lay.slices), len(lay.slices[0])
    rows, columns = lay.slices[0][0].rows, lay.slices[0][0].columns
    n_bytes = n_phases * n_slices * rows * columns * 4
    if n_bytes > max_bytes:
        raise DicomInputError(
            f"{info.label} needs {n_bytes} bytes ({n_bytes / 1024**3:.2f} GiB) of float32 pixel memory "
            f"({n_phases} phases x {n_slices} slices x {rows} x {columns}), "
            f"more than `max_bytes` = {max_bytes}."
        )

    # Which frames of which file go where: (t, z) for kept frames, the kept twin for duplicates.
    wanted: dict[Path, list[tuple[FrameRef, tuple[int, int] | FrameRef]]] = defaultdict(list)
    where: dict[FrameRef, tuple[int, int]] = {}
    for z, frames in enumerate(lay.slices):
        for t, f in enumerate(frames):
            wanted[f.path].append((f, (t, z)))
            where[f] = (t, z)
    for dropped, kept in lay.duplicates:
        wanted[dropped.path].append((dropped, kept))

    image = np.empty((n_phases, n_slices, rows, columns), dtype=np.float32)
    twins: list[tuple[FrameRef, FrameRef, np.ndarray]] = []
    for path in sorted(wanted):
        entries = wanted[path]
        first = entries[0][0]
        stored = _pixels(path, _read_file(path), first.n_frames_in_file, first.rows, first.columns)
        for f, target in entries:
            slope, intercept = f.rescale
            values = (stored[f.frame_index].astype(np.float64) * slope + intercept).astype(np.float32)
            if isinstance(target, FrameRef):
                twins.append((f, target, values))
            else:
                image[target] = values
    dropped_notes = []
    for dropped, kept, values in twins:
        if not np.array_equal(values, image[where[kept]]):
            pos = lay.projections[where[kept][1]]
            raise DicomInputError(
                f"{info.label}: {dropped.name} and {kept.name} are two different images at the same slice "
                f"position ({pos:.2f} mm) and phase "
                f"({lay.phase_order} {_phase_key(kept, lay.phase_order)[0]:g}); "
                "remove one of them or pass the files to read."
            )
        dropped_notes.append(f"{dropped.name} (same position, phase and pixels as {kept.name})")

    spacing_y, spacing_x = lay.slices[0][0].pixel_spacing  # type: ignore[misc]
    if n_slices > 1:
        spacing_z = (lay.projections[-1] - lay.projections[0]) / (n_slices - 1)
    else:
        spacing_z = _single_slice_spacing(info, lay)
    affine = np.eye(4)
    affine[:3, 0] = lay.row_cos * spacing_x
    affine[:3, 1] = lay.col_cos * spacing_y
    affine[:3, 2] = lay.normal * spacing_z
    affine[:3, 3] = lay.slices[0][0].position  # type: ignore[assignment]
    times, per_slice, spread = _trigger_times(lay.slices, n_phases)

    header = info.header
    meta: dict[str, object] = {
        "source": "dicom",
        "study_instance_uid": info.study_uid,
        "series_instance_uid": info.series_uid,
        "frame_of_reference_uid": header.get("FrameOfReferenceUID", ""),
        "series_number": info.series_number,
        "series_description": info.description,
        "sop_class_uid": info.sop_class_uid,
        "patient_id": header.get("PatientID", ""),
        **_patient_meta(header),
        "source_files": [[str(lay.slices[z][t].path) for z in range(n_slices)] for t in range(n_phases)],
        "source_sop_instance_uids": [
            [lay.slices[z][t].sop_instance_uid for z in range(n_slices)] for t in range(n_phases)
        ],
        "source_frame_numbers": [[lay.slices[z][t].frame_index + 1 for z in range(n_slices)] for t in range(n_phases)],
        "phase_order": lay.phase_order,
        "slice_order": "ascending along row_cos x col_cos (ImagePositionPatient . normal)",
        "slice_positions_mm": list(lay.projections),
        "trigger_times_ms_per_slice": per_slice,
        "trigger_time_spread_ms": spread,
        "ed_es_known": False,
        "problems": [str(p) for p in info.problems],
        "duplicates_dropped": dropped_notes,
        "positions_dropped": positions_dropped,
        "incomplete_positions": incomplete_positions,
    }
    return CineStudy(
        subject_id=header.get("PatientID") or info.series_uid,
        image=image,
        label=None,
        spacing_zyx=(float(spacing_z), float(spacing_y), float(spacing_x)),
        affine_lps=affine,
        trigger_times_ms=times,
        ed_phase=0,
        es_phase=0,
        vendor=header.get("Manufacturer") or "unknown",
        slice_thickness_mm=lay.slices[0][0].slice_thickness,
        meta=meta,
    )


def read_short_axis_cine(
    path: str | os.PathLike,
    series: str | int | None = None,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    incomplete_positions: str = "raise",
) -> CineStudy:
    """Scan a folder, pick its short-axis cine and read it: the three steps in one call.

    Args:
        path: the study folder (any nesting) or a single file.
        series: as in :func:`select_short_axis_cine` (``None`` chooses automatically).
        max_bytes: as in :func:`read_cine`.
        incomplete_positions: as in :func:`read_cine` (``"raise"`` or ``"drop"``).

    Returns:
        The :class:`CineStudy`; ``meta["problems"]`` lists every file the scan left out.

    Raises:
        DicomInputError: as :func:`scan_folder`, :func:`select_short_axis_cine` and
            :func:`read_cine`; when the scan left files out, the message ends with them (a
            truncated header explains a missing phase).
    """
    scan = scan_folder(path)
    try:
        info = select_short_axis_cine(scan, series, incomplete_positions)
        study = read_cine(info, max_bytes=max_bytes, incomplete_positions=incomplete_positions)
    except DicomInputError as exc:
        if not scan.problems or not scan.series:
            raise
        left_out = "; ".join(str(p) for p in scan.problems[:_MAX_NAMES])
        more = f" ... ({len(scan.problems)} in all)" if len(scan.problems) > _MAX_NAMES else ""
        raise DicomInputError(f"{exc} The scan of {scan.root} left out: {left_out}{more}") from exc
    study.meta["problems"] = [str(p) for p in scan.problems]
    study.meta["skipped"] = [str(p) for p in scan.skipped]
    return study
