"""The SEG's source frames: the ``[t][z]`` table of references and geometry, highdicom's stand-ins.

:func:`read_sources` reads each source header once (without pixels) and describes every frame
``(t, z)`` by a :class:`Frame`: its reference (SOP instance and, for an Enhanced / Legacy
Converted Enhanced MR file, its frame number) and its geometry (from the functional groups of a
multi-frame file, else the top level). It refuses label maps that do not match the table or the
sources' Rows / Columns, unreadable sources, sources without geometry or UIDs, and repeated frames.

highdicom is given single-frame *stand-in* headers (:func:`stand_in`): the first source's
attributes (:func:`stand_in_template`) with invalid strings emptied (dates such as ``00000000`` /
``20120000``, bad times or sexes; all type 2 or 3 in the copied modules;
:func:`cardiolora.dicom.sources.empty_invalid`), each frame's geometry, one FrameOfReferenceUID
(:func:`frame_of_reference`: the caller's, else the first slice's: anonymisers often give every
file its own) and a placeholder UID, later replaced by the real source UID
(:mod:`cardiolora.dicom.seg_merge`), referenced as it is even when invalid (leading-zero
components).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import highdicom as hd
import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import MRImageStorage
from pydicom.valuerep import DSfloat

from cardiolora.dicom.sources import empty_invalid, valid_uid

__all__ = ["Frame", "frame_of_reference", "read_sources", "stand_in", "stand_in_template"]

_MR = MRImageStorage
#: Not copied into the stand-ins (multi-frame structure, pixels) or set per stand-in.
_DROP = frozenset(
    "PixelData NumberOfFrames PerFrameFunctionalGroupsSequence SharedFunctionalGroupsSequence DimensionIndexSequence "
    "DimensionOrganizationSequence SourceImageSequence ReferencedSeriesSequence SpacingBetweenSlices SOPClassUID "
    "SOPInstanceUID Modality StudyInstanceUID SeriesInstanceUID FrameOfReferenceUID Rows Columns "
    "ImagePositionPatient ImageOrientationPatient PixelSpacing SliceThickness".split()
)


@dataclass(frozen=True)
class Frame:
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


def stand_in_template(ds: Dataset) -> tuple[Dataset, list[str]]:
    """Top-level public attributes of `ds` (less `_DROP`), invalid strings emptied; what was emptied."""
    out = Dataset()
    for elem in ds:
        if not (elem.keyword in _DROP or elem.tag.is_private or elem.tag.group == 0x7FE0):
            out.add(elem)
    return out, empty_invalid(out)


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


def _read_frame(ds: Dataset, path: str, frame: int, where: str) -> Frame:
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
    return Frame(
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


def read_sources(
    label: np.ndarray, files: Sequence[Sequence[object]], numbers: Sequence[Sequence[int]]
) -> tuple[list[list[Frame]], Dataset]:
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


def stand_in(template: Dataset, fr: Frame, first: Frame, for_uid: str, thickness: float) -> Dataset:
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


def frame_of_reference(table: list[list[Frame]], given: str | None) -> tuple[str, list[str]]:
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
    return uid, [note] + ([] if valid_uid(uid) else [f"FrameOfReferenceUID {uid} is invalid; referenced as it is."])
