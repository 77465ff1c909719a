"""One DICOM Segmentation (SEG) object per segmented short-axis cine: every phase, every slice.

:func:`write_study_seg` writes one BINARY Segmentation with one frame per (segment, phase, slice),
empty frames kept. highdicom 0.28 refuses two frames of one segment at one ImagePositionPatient
and has no temporal index, so it builds one SEG per phase and pydicom merges them:
``DimensionIndexSequence`` = ReferencedSegmentNumber, **TemporalPositionIndex** (Frame Content),
ImagePositionPatient (one DimensionOrganizationUID); frames sorted by (segment, phase, slice);
per frame ``DimensionIndexValues`` = (segment, phase + 1, slice rank along the plane normal),
``TemporalPositionIndex`` = phase + 1, ``FrameLabel`` = the phase description, and a
``DerivationImageSequence`` naming its source instance (plus ``ReferencedFrameNumber`` for an
Enhanced / Legacy Converted Enhanced MR source); ``ReferencedSeriesSequence`` and
``SourceImageSequence`` name every source. ``per_phase=True`` writes the per-phase instances
instead (one series, InstanceNumber and ContentLabel ``PHASE_<t>`` per phase).

Sources. highdicom is given single-frame *stand-in* headers: the first source's attributes with
invalid strings emptied (dates such as ``00000000`` / ``20120000``, bad times or sexes; all
type 2 or 3 in the copied modules), each frame's geometry, one FrameOfReferenceUID (the caller's,
else the first slice's: anonymisers often give every file its own) and a placeholder UID, later
replaced by the real source UID, referenced as it is even when invalid (leading-zero components).
The UIDs the SEG creates for itself are fresh. pydicom's warnings become one note per kind.

Segments (SNOMED CT via ``pydicom.sr.codedict.codes.SCT``; category 91723000 "Anatomical
Structure", anatomic region Heart 80891009, algorithm AUTOMATIC ``cardiolora``, family DCM 123110
"Artificial Intelligence", version = package version, parameters = profile and model hash):
1 "LV cavity" 87878005 Left ventricle; 2 "LV myocardium" 49848007 Left Ventricle Myocardium;
3 "RV cavity" 53085002 Right ventricle. No dictionary codes a ventricle *cavity*, so the chamber
codes are used (as TotalSegmentator's SEG export does) and the SegmentLabel says "cavity".
"""

from __future__ import annotations

import datetime
import logging
import os
import re
import warnings
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels import pack_bits
from pydicom.sr.codedict import codes
from pydicom.valuerep import DSfloat, validate_value

from cardiolora.labels import LV, MYO, RV

__all__ = [
    "SEGMENTS",
    "SegResult",
    "algorithm_identification",
    "phase_description",
    "read_study_seg",
    "segment_descriptions",
    "write_study_seg",
]

#: (segment number = project label, SegmentLabel, SCT property type, display colour as RGB).
SEGMENTS: tuple[tuple[int, str, object, tuple[int, int, int]], ...] = (
    (LV, "LV cavity", codes.SCT.LeftVentricle, (220, 40, 40)),
    (MYO, "LV myocardium", codes.SCT.LeftVentricleMyocardium, (40, 200, 60)),
    (RV, "RV cavity", codes.SCT.RightVentricle, (40, 120, 230)),
)
_MR = "1.2.840.10008.5.1.4.1.1.4"
_STRING_VRS = frozenset("AE AS CS DA DS DT IS LO LT PN SH ST TM UC UR UT".split())
_TM = re.compile(r"([01]\d|2[0-3])([0-5]\d([0-5]\d(\.\d{1,6})?)?)?")
_DT = re.compile(r"(\d{8})(\d{2,6}(?:\.\d{1,6})?)?([+-]\d{4})?")
#: Not copied into the stand-ins (multi-frame structure, pixels) or set per stand-in.
_DROP = frozenset(
    "PixelData NumberOfFrames PerFrameFunctionalGroupsSequence SharedFunctionalGroupsSequence DimensionIndexSequence "
    "DimensionOrganizationSequence SourceImageSequence ReferencedSeriesSequence SpacingBetweenSlices SOPClassUID "
    "SOPInstanceUID Modality StudyInstanceUID SeriesInstanceUID FrameOfReferenceUID Rows Columns "
    "ImagePositionPatient ImageOrientationPatient PixelSpacing SliceThickness".split()
)


@dataclass(frozen=True)
class SegResult:
    """What :func:`write_study_seg` wrote.

    Attributes:
        paths: the written files (one; one per phase with ``per_phase=True``).
        notes: report lines: the FrameOfReferenceUID used and why, attributes left empty,
            pydicom warnings (one line per kind with a count).
    """

    paths: tuple[Path, ...]
    notes: tuple[str, ...]


@dataclass(frozen=True)
class _Frame:
    """One source frame ``(t, z)``: its reference (``frame`` 0 = single-frame file) and geometry."""

    path: str
    frame: int
    sop_uid: str
    class_uid: str
    study_uid: str
    series_uid: str
    for_uid: str | None
    shape: tuple[int, int]
    position: tuple[float, ...]
    orientation: tuple[float, ...]
    spacing: tuple[float, ...]
    thickness: float | None


def algorithm_identification(
    version: str, parameters: Mapping[str, str] | None = None
) -> hd.AlgorithmIdentificationSequence:
    """The SEG's algorithm identification: name cardiolora, family Artificial Intelligence.

    Args:
        version: the software version.
        parameters: extra name → value pairs (profile, model hash).

    Returns:
        The highdicom sequence.
    """
    return hd.AlgorithmIdentificationSequence(
        name="cardiolora",
        family=codes.cid7162.ArtificialIntelligence,
        version=str(version),
        parameters={str(k): str(v)[:64] for k, v in (parameters or {}).items()} or None,
    )


def segment_descriptions(algorithm: hd.AlgorithmIdentificationSequence) -> list[hd.seg.SegmentDescription]:
    """The three segment descriptions of the module docstring, numbered as the project labels.

    Args:
        algorithm: from :func:`algorithm_identification`.

    Returns:
        Descriptions for segments 1 (LV cavity), 2 (LV myocardium), 3 (RV cavity).
    """
    return [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=label,
            segmented_property_category=codes.SCT.AnatomicalStructure,
            segmented_property_type=prop_type,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            anatomic_regions=[codes.SCT.Heart],
            display_color=hd.color.CIELabColor.from_rgb(*rgb),
        )
        for number, label, prop_type, rgb in SEGMENTS
    ]


def phase_description(t: int, n_phases: int, trigger_ms: float, ed: int | None, es: int | None) -> str:
    """Description of phase `t` (<= 64 characters): per-phase ContentDescription, FrameLabel.

    Args:
        t: phase index.
        n_phases: number of phases.
        trigger_ms: trigger time (NaN when unknown).
        ed: ED phase index (or None).
        es: ES phase index (or None).

    Returns:
        e.g. ``"cardiolora phase 1/25, 0 ms, ED"``.
    """
    text = f"cardiolora phase {t + 1}/{n_phases}"
    if np.isfinite(trigger_ms):
        text += f", {trigger_ms:.0f} ms"
    tags = [name for name, p in (("ED", ed), ("ES", es)) if p == t]
    return (text + (", " + "/".join(tags) if tags else ""))[:64]


@contextmanager
def _quiet() -> Iterator[list[warnings.WarningMessage]]:
    """Record every warning and drop pydicom's log records (they become notes instead)."""
    logger = logging.getLogger("pydicom")
    logger.addFilter(_drop)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield caught
    finally:
        logger.removeFilter(_drop)


def _drop(record: logging.LogRecord) -> bool:
    """Logging filter that drops the record."""
    return False


def _warning_notes(caught: Sequence[warnings.WarningMessage]) -> list[str]:
    """One line per kind of warning (quoted values and numbers masked): count and first message."""
    kinds: dict[str, list] = {}
    for w in caught:
        msg = str(w.message).strip().splitlines()[0] if str(w.message).strip() else "(empty warning)"
        kinds.setdefault(re.sub(r"'[^']*'|\"[^\"]*\"|\d+(\.\d+)*", "#", msg), [0, msg])[0] += 1
    return [f"{n} warning{'s' if n != 1 else ''}: {msg[:240]}" for n, msg in kinds.values()]


def _valid_uid(uid: str) -> bool:
    """Whether `uid` is a valid DICOM UID (without pydicom's warning)."""
    return len(uid) <= 64 and bool(pydicom.uid.RE_VALID_UID.match(uid))


def _valid_text(vr: str, value: object) -> bool:
    """Whether a string value is valid for `vr`; dates are checked on the calendar."""
    text = str(value).strip()
    if vr in ("DA", "DT"):
        m = _DT.fullmatch(text)
        if not m or (vr == "DA" and len(text) != 8) or (m.group(2) and not _TM.fullmatch(m.group(2))):
            return False
        try:
            return bool(datetime.date(int(text[:4]), int(text[4:6]), int(text[6:8])))
        except ValueError:
            return False
    if vr == "TM":
        return bool(_TM.fullmatch(text))
    try:
        validate_value(vr, text, pydicom.config.RAISE)
    except ValueError:
        return False
    return True


def _clean_header(ds: Dataset) -> tuple[Dataset, list[str]]:
    """Top-level public attributes of `ds` (less `_DROP`), invalid strings emptied; what was emptied."""
    out, fixed = Dataset(), []
    for elem in ds:
        if elem.keyword in _DROP or elem.tag.is_private or elem.tag.group == 0x7FE0:
            continue
        value = elem.value
        if elem.VR in _STRING_VRS and value not in (None, ""):
            values = list(value) if isinstance(value, MultiValue) else [value]
            if not all(_valid_text(elem.VR, v) for v in values) or (
                elem.keyword == "PatientSex" and str(value) not in ("M", "F", "O")
            ):
                fixed.append(f"{elem.keyword} {str(value)!r}")
                elem = DataElement(elem.tag, elem.VR, "")
        out.add(elem)
    return out, fixed


def _floats(value: object, n: int, where: str, field: str) -> tuple[float, ...]:
    """`n` finite numbers from a DICOM value, or ValueError naming `field`."""
    try:
        out = tuple(float(v) for v in (value if isinstance(value, (list, tuple, MultiValue)) else [value]))
    except (TypeError, ValueError):
        out = ()
    if len(out) != n or not np.all(np.isfinite(out)):
        raise ValueError(f"{where}: the source lacks a valid {field} (got {value!r}).")
    return out


def _frame_attr(ds: Dataset, frame: int, seq: str, attr: str) -> object:
    """`attr` of frame `frame`: functional groups first in a multi-frame file, else the top level."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    groups = [per_frame[frame - 1]] if len(per_frame) >= frame else []
    found = [
        g[seq][0][attr].value
        for g in [*groups, *(ds.get("SharedFunctionalGroupsSequence") or [])]
        if g.get(seq) and attr in g[seq][0]
    ]
    top = [ds[attr].value] if attr in ds and ds[attr].value not in (None, "") else []
    order = found + top if int(ds.get("NumberOfFrames") or 1) > 1 else top + found
    return order[0] if order else None


def _read_frame(ds: Dataset, path: str, frame: int, where: str) -> _Frame:
    """Reference and geometry of frame `frame` of the source header `ds`."""
    n = int(ds.get("NumberOfFrames") or 1)
    if not 1 <= frame <= n:
        raise ValueError(f"{where}: `source_frame_numbers` {frame} is not in 1..{n}.")
    for field in ("SOPInstanceUID", "SOPClassUID", "StudyInstanceUID", "SeriesInstanceUID", "Rows", "Columns"):
        if not ds.get(field):
            raise ValueError(f"{where}: the source lacks {field}.")
    geometry = [
        _floats(_frame_attr(ds, frame, seq, attr), n_values, where, attr)
        for seq, attr, n_values in (
            ("PlanePositionSequence", "ImagePositionPatient", 3),
            ("PlaneOrientationSequence", "ImageOrientationPatient", 6),
            ("PixelMeasuresSequence", "PixelSpacing", 2),
        )
    ]
    thick = _frame_attr(ds, frame, "PixelMeasuresSequence", "SliceThickness")
    multi = "NumberOfFrames" in ds and ds.SOPClassUID != _MR
    return _Frame(
        path,
        frame if multi else 0,
        str(ds.SOPInstanceUID),
        str(ds.SOPClassUID),
        str(ds.StudyInstanceUID),
        str(ds.SeriesInstanceUID),
        str(ds.get("FrameOfReferenceUID") or "") or None,
        (int(ds.Rows), int(ds.Columns)),
        *geometry,
        _floats(thick, 1, where, "SliceThickness")[0] if thick not in (None, "") else None,
    )


def _read_sources(
    label: np.ndarray, files: Sequence[Sequence[object]], numbers: Sequence[Sequence[int]]
) -> tuple[list[list[_Frame]], Dataset]:
    """The ``[t][z]`` frame table and the first source's header; checks shapes and repeats."""
    n_t, n_z = label.shape[:2]
    for name, table in (("source_files", files), ("source_frame_numbers", numbers)):
        if len(table) != n_t or any(len(row) != n_z for row in table):
            raise ValueError(
                f"`{name}` must be {n_t} phases x {n_z} slices like `label_tzyx` {label.shape}, "
                f"got {len(table)} phases x {sorted({len(r) for r in table})} slices."
            )
    headers: dict[str, Dataset] = {}
    seen: dict[tuple[str, int], str] = {}  # (SOPInstanceUID, frame) -> where
    out = []
    for t in range(n_t):
        out.append([])
        for z in range(n_z):
            path, frame = str(files[t][z]), int(numbers[t][z])
            where = f"phase {t}, slice {z} ({path})"
            if path not in headers:
                try:
                    headers[path] = pydicom.dcmread(path, stop_before_pixels=True)
                except (OSError, pydicom.errors.InvalidDicomError) as err:
                    raise ValueError(f"{where}: cannot read the source: {err}") from err
            fr = _read_frame(headers[path], path, frame, where)
            key = (fr.sop_uid, fr.frame)
            if key in seen:
                raise ValueError(
                    f"{where}: the same source frame (SOPInstanceUID {fr.sop_uid}, frame "
                    f"{fr.frame or 1}) as {seen[key]}."
                )
            seen[key] = where
            if fr.shape != label.shape[2:]:
                raise ValueError(
                    f"{where}: label slices are {label.shape[2:]}, the source is {fr.shape} (Rows, Columns)."
                )
            out[t].append(fr)
    return out, headers[str(files[0][0])]


def _stand_in(template: Dataset, fr: _Frame, first: _Frame, for_uid: str, thickness: float) -> Dataset:
    """A single-frame MR header for highdicom: `template`, `fr`'s geometry, a placeholder UID."""
    ds = Dataset()
    ds.update(template)
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = _MR, hd.UID(), "MR"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = first.study_uid, first.series_uid, for_uid
    ds.Rows, ds.Columns = fr.shape
    ds.ImagePositionPatient = [DSfloat(v, auto_format=True) for v in fr.position]
    ds.ImageOrientationPatient = [DSfloat(v, auto_format=True) for v in fr.orientation]
    ds.PixelSpacing = [DSfloat(v, auto_format=True) for v in fr.spacing]
    ds.SliceThickness = DSfloat(fr.thickness or thickness, auto_format=True)
    return ds


def _ref(cls: str, sop: str, **more: object) -> Dataset:
    """A reference item (ReferencedSOPClassUID, ReferencedSOPInstanceUID and `more`)."""
    item = Dataset()
    item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = cls, sop
    for keyword, value in more.items():
        setattr(item, keyword, value)
    return item


def _reference(seg: Dataset, frames: Sequence[_Frame], placeholders: Mapping[str, _Frame]) -> None:
    """Replace the placeholder references of `seg` by the real sources `frames`."""
    for item in seg.PerFrameFunctionalGroupsSequence:
        for src in (s for d in item.get("DerivationImageSequence", []) for s in d.SourceImageSequence):
            fr = placeholders.get(src.ReferencedSOPInstanceUID)
            if fr is not None:  # else already replaced: the frames of one plane share the item
                src.ReferencedSOPClassUID, src.ReferencedSOPInstanceUID = fr.class_uid, fr.sop_uid
                if fr.frame:
                    src.ReferencedFrameNumber = fr.frame
    studies: dict[str, dict[str, dict[str, str]]] = defaultdict(lambda: defaultdict(dict))
    for fr in frames:
        studies[fr.study_uid][fr.series_uid][fr.sop_uid] = fr.class_uid

    def series_items(series: Mapping[str, Mapping[str, str]]) -> list[Dataset]:
        items = [Dataset() for _ in series]
        for item, (uid, instances) in zip(items, series.items(), strict=True):
            item.SeriesInstanceUID = uid
            item.ReferencedInstanceSequence = [_ref(c, s) for s, c in instances.items()]
        return items

    seg.SourceImageSequence = [_ref(c, s) for se in studies.values() for i in se.values() for s, c in i.items()]
    seg.ReferencedSeriesSequence = series_items(studies.pop(str(seg.StudyInstanceUID)))
    if studies:  # sources of other studies (Common Instance Reference module)
        seg.StudiesContainingOtherReferencedInstancesSequence = others = [Dataset() for _ in studies]
        for item, (uid, series) in zip(others, studies.items(), strict=True):
            item.StudyInstanceUID, item.ReferencedSeriesSequence = uid, series_items(series)


def _merge(
    segs: Sequence[Dataset],
    label: np.ndarray,
    where: Mapping[str, tuple[int, int]],
    slice_rank: Sequence[Sequence[int]],
    frame_labels: Sequence[str],
) -> Dataset:
    """Merge per-phase SEGs (placeholder references) into ``segs[0]``, adding the temporal index."""
    base = segs[0]
    dims = list(base.DimensionIndexSequence)
    if [int(d.DimensionIndexPointer) for d in dims] != [0x0062000B, 0x00200032]:
        raise RuntimeError(f"unexpected highdicom DimensionIndexSequence {[d.DimensionIndexPointer for d in dims]}")
    entries = []
    for item in (item for seg in segs for item in seg.PerFrameFunctionalGroupsSequence):
        t, z = where[item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID]
        segment = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        entries.append((segment, t, slice_rank[t][z], z, item))
    entries.sort(key=lambda e: e[:4])
    for s, t, rank, _, item in entries:
        content = item.FrameContentSequence[0]
        content.DimensionIndexValues = [s, t + 1, rank]
        content.TemporalPositionIndex = t + 1
        content.FrameLabel = frame_labels[t]
    temporal = Dataset()
    temporal.DimensionOrganizationUID = dims[0].DimensionOrganizationUID
    temporal.DimensionIndexPointer = 0x00209128  # TemporalPositionIndex
    temporal.FunctionalGroupPointer = 0x00209111  # FrameContentSequence
    temporal.DimensionDescriptionLabel = "Temporal Position Index"
    base.DimensionIndexSequence = [dims[0], temporal, dims[1]]
    if base.get("DimensionOrganizationType") == "3D":
        base.DimensionOrganizationType = "3D_TEMPORAL"
    base.PerFrameFunctionalGroupsSequence = [e[-1] for e in entries]
    base.NumberOfFrames = len(entries)
    base.PixelData = pack_bits(np.stack([label[t, z] == s for s, t, _, z, _ in entries]).astype(np.uint8))
    return base


def _save(ds: Dataset, path: Path) -> None:
    """Write `ds` to `path` atomically (temporary file beside it, then os.replace)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        ds.save_as(tmp, enforce_file_format=True)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _frame_of_reference(table: list[list[_Frame]], given: str | None) -> tuple[str, list[str]]:
    """The SEG's FrameOfReferenceUID and notes saying which one and why."""
    first = table[0][0]
    fors = {fr.for_uid for row in table for fr in row if fr.for_uid}
    if given:
        uid, note = given, f"FrameOfReferenceUID {given} as given by the caller (the sources carry {len(fors)})."
    elif first.for_uid:
        uid, why = (
            first.for_uid,
            "all sources share it"
            if len(fors) == 1
            else (
                f"the sources carry {len(fors)} different FrameOfReferenceUIDs (e.g. one per file after "
                "anonymisation), so the first slice's is used"
            ),
        )
        note = f"FrameOfReferenceUID {uid} from the first source slice ({first.path}): {why}."
    else:
        raise ValueError(
            f"phase 0, slice 0 ({first.path}): the source lacks FrameOfReferenceUID; pass `frame_of_reference_uid`."
        )
    return uid, [note] + ([] if _valid_uid(uid) else [f"FrameOfReferenceUID {uid} is invalid; referenced as it is."])


def write_study_seg(
    label_tzyx: np.ndarray,
    source_files: Sequence[Sequence[str | os.PathLike]],
    source_frame_numbers: Sequence[Sequence[int]],
    out_path: str | os.PathLike,
    *,
    version: str,
    parameters: Mapping[str, str] | None = None,
    trigger_times_ms: Sequence[float] | None = None,
    ed_phase: int | None = None,
    es_phase: int | None = None,
    series_number: int = 9901,
    series_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    per_phase: bool = False,
) -> SegResult:
    """Write the cine's labels as one DICOM SEG object (module docstring), or one per phase.

    Args:
        label_tzyx: integer labels ``(T, Z, Y, X)`` in 0..3 on the source grid: ``label[t, z]``
            segments frame ``source_frame_numbers[t][z]`` of ``source_files[t][z]``.
        source_files: ``[t][z]`` source paths (classic MR, Enhanced / Legacy Converted MR).
        source_frame_numbers: ``[t][z]`` 1-based frame numbers (1 for single-frame files).
        out_path: the SEG file (folder created); with `per_phase` the files are
            ``<stem>_phase<ttt><suffix>`` beside it.
        version: software version for the algorithm identification.
        parameters: algorithm parameters (profile, model hash).
        trigger_times_ms: ``(T,)`` trigger times for the phase descriptions.
        ed_phase: ED phase index, named in the descriptions.
        es_phase: ES phase index, named in the descriptions.
        series_number: SeriesNumber of the SEG series.
        series_uid: SeriesInstanceUID (default: a new UID).
        frame_of_reference_uid: FrameOfReferenceUID of the SEG (default: the first slice's).
        per_phase: write one instance per phase instead of one for the whole cine.

    Returns:
        The written paths and notes for a report.

    Raises:
        ValueError: naming the phase, slice, file or field: the label map does not match the
            source table or the sources' Rows / Columns, holds values outside 0..3; a source is
            unreadable or lacks geometry (ImagePositionPatient, ImageOrientationPatient,
            PixelSpacing, FrameOfReferenceUID) or UIDs; a frame number is out of range or
            repeated; an argument is malformed; highdicom rejects a phase.
    """
    label = np.asarray(label_tzyx)
    if label.ndim != 4 or not np.issubdtype(label.dtype, np.integer):
        raise ValueError(f"`label_tzyx` must be an integer (T, Z, Y, X) array, got {label.dtype} {label.shape}.")
    if label.size and (label.min() < 0 or label.max() > RV):
        raise ValueError(f"`label_tzyx` values must be in 0..{RV}, got {label.min()}..{label.max()}.")
    n_t, n_z = label.shape[:2]
    times = np.full(n_t, np.nan) if trigger_times_ms is None else np.asarray(trigger_times_ms, dtype=float)
    if times.shape != (n_t,):
        raise ValueError(f"`trigger_times_ms` must have {n_t} values, got shape {times.shape}.")
    for name, p in (("ed_phase", ed_phase), ("es_phase", es_phase)):
        if p is not None and not 0 <= p < n_t:
            raise ValueError(f"`{name}` must be in [0, {n_t}), got {p}.")
    if series_uid is not None and not _valid_uid(series_uid):
        raise ValueError(f"`series_uid` {series_uid!r} is not a valid DICOM UID.")
    out, series, merged_uid = Path(out_path), series_uid or hd.UID(), hd.UID()
    descriptions = segment_descriptions(algorithm_identification(version, parameters))
    labels = [phase_description(t, n_t, float(times[t]), ed_phase, es_phase) for t in range(n_t)]
    cine_text = f"cardiolora cine, {n_t} phases" + "".join(
        f", {k} {p + 1}" for k, p in (("ED", ed_phase), ("ES", es_phase)) if p is not None
    )
    with _quiet() as caught:
        table, first_header = _read_sources(label, source_files, source_frame_numbers)
        first, frames = table[0][0], [fr for row in table for fr in row]
        for_uid, notes = _frame_of_reference(table, frame_of_reference_uid)
        template, fixed = _clean_header(first_header)
        notes += ["left empty (invalid in the sources): " + ", ".join(fixed)] if fixed else []
        if len({(fr.study_uid, fr.series_uid) for fr in frames}) > 1:
            notes.append(
                f"the sources span {len({fr.series_uid for fr in frames})} series of "
                f"{len({fr.study_uid for fr in frames})} study(ies); every one is referenced."
            )
        normal = np.cross(first.orientation[:3], first.orientation[3:])
        dist = np.round([[float(np.dot(fr.position, normal)) for fr in row] for row in table], 3)
        rank = (np.searchsorted(np.unique(dist), dist) + 1).tolist()
        thickness = first.thickness or (float(np.median(np.abs(np.diff(dist[0])))) if n_z > 1 else 0.0)
        if thickness <= 0:
            raise ValueError(f"phase 0, slice 0 ({first.path}): the source lacks SliceThickness.")
        notes += [] if first.thickness else [f"SliceThickness missing: the slice spacing {thickness:g} mm is used."]
        placeholders: dict[str, _Frame] = {}
        where: dict[str, tuple[int, int]] = {}
        segs = []
        for t in range(n_t):
            stand_ins = [_stand_in(template, fr, first, for_uid, thickness) for fr in table[t]]
            for z, ds in enumerate(stand_ins):
                placeholders[ds.SOPInstanceUID], where[ds.SOPInstanceUID] = table[t][z], (t, z)
            try:
                segs.append(
                    hd.seg.Segmentation(
                        source_images=stand_ins,
                        pixel_array=np.ascontiguousarray(label[t], dtype=np.uint8),
                        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
                        segment_descriptions=descriptions,
                        series_instance_uid=series,
                        series_number=int(series_number),
                        sop_instance_uid=hd.UID() if per_phase else merged_uid,
                        instance_number=t + 1 if per_phase else 1,
                        manufacturer="cardiolora",
                        manufacturer_model_name="cardiolora site application",
                        software_versions=str(version),
                        device_serial_number="none",
                        omit_empty_frames=False,
                        content_label=f"PHASE_{t:03d}" if per_phase else "CINE",
                        content_description=labels[t] if per_phase else cine_text,
                        series_description="cardiolora LV/MYO/RV",
                    )
                )
            except (ValueError, TypeError, AttributeError) as err:
                raise ValueError(f"DICOM SEG of phase {t} ({table[t][0].path}): {err}") from err
        out.parent.mkdir(parents=True, exist_ok=True)
        if per_phase:
            paths = [out.with_name(f"{out.stem}_phase{t:03d}{out.suffix}") for t in range(n_t)]
            for t, (seg, path) in enumerate(zip(segs, paths, strict=True)):
                _reference(seg, table[t], placeholders)
                _save(seg, path)
        else:
            paths = [out]
            seg = _merge(segs, label, where, rank, labels)
            _reference(seg, frames, placeholders)
            _save(seg, out)
    return SegResult(paths=tuple(paths), notes=tuple(notes + _warning_notes(caught)))


def read_study_seg(
    path: str | os.PathLike | Sequence[str | os.PathLike],
    source_sop_instance_uids: Sequence[Sequence[str]],
    source_frame_numbers: Sequence[Sequence[int]] | None = None,
) -> np.ndarray:
    """Read the ``(T, Z, Y, X)`` labels back from one SEG object or the per-phase files, via highdicom.

    Args:
        path: the SEG written by :func:`write_study_seg`, or the per-phase files in phase order.
        source_sop_instance_uids: ``[t][z]`` SOPInstanceUID of each source frame's instance.
        source_frame_numbers: ``[t][z]`` frame numbers for multi-frame sources (None: single-frame).

    Returns:
        uint8 ``(T, Z, Y, X)`` labels (segment numbers = project labels, 0 where no segment).

    Raises:
        ValueError: if the file list does not match the phases or a SEG lacks the source frames.
    """
    uids = [[str(u) for u in row] for row in source_sop_instance_uids]
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    if len(paths) not in (1, len(uids)):
        raise ValueError(f"`path` lists {len(paths)} files for {len(uids)} phases.")
    phases = []
    with _quiet():  # the sources' invalid UIDs are referenced as they are: no warning flood
        segs = [hd.seg.segread(p) for p in paths]
        for t, row in enumerate(uids):
            seg, name = (segs[t], paths[t]) if len(segs) > 1 else (segs[0], paths[0])
            try:
                if source_frame_numbers is None:
                    arr = seg.get_pixels_by_source_instance(source_sop_instance_uids=row, combine_segments=True)
                else:
                    arr = np.stack(
                        [
                            seg.get_pixels_by_source_frame(
                                source_sop_instance_uid=u, source_frame_numbers=[int(f)], combine_segments=True
                            )[0]
                            for u, f in zip(row, source_frame_numbers[t], strict=True)
                        ]
                    )
            except (KeyError, ValueError, RuntimeError) as err:
                raise ValueError(f"phase {t}: the SEG {name} lacks the source frames: {err}") from err
            phases.append(np.asarray(arr, dtype=np.uint8))
    return np.stack(phases)
