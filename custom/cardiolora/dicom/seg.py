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

Sources (:mod:`cardiolora.dicom.seg_frames`): highdicom is given single-frame *stand-in*
headers, the first source's attributes with invalid strings emptied, each frame's geometry and a
placeholder UID, later replaced by the real source UID (:mod:`cardiolora.dicom.seg_merge`),
referenced as it is even when invalid. The UIDs the SEG creates for itself are fresh. pydicom's
warnings become one note per kind (:class:`cardiolora.dicom.headers.WarningLog`).

Segments (SNOMED CT via ``pydicom.sr.codedict.codes.SCT``; category 91723000 "Anatomical
Structure", anatomic region Heart 80891009, algorithm AUTOMATIC ``cardiolora``, family DCM 123110
"Artificial Intelligence", version = package version, parameters = profile and model hash):
1 "LV cavity" 87878005 Left ventricle; 2 "LV myocardium" 49848007 Left Ventricle Myocardium;
3 "RV cavity" 53085002 Right ventricle. No dictionary codes a ventricle *cavity*, so the chamber
codes are used (as TotalSegmentator's SEG export does) and the SegmentLabel says "cavity".
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom.sr.codedict import codes

from cardiolora.atomic import save_dataset_atomic
from cardiolora.dicom.headers import WarningLog
from cardiolora.dicom.seg_frames import Frame, frame_of_reference, read_sources, stand_in, stand_in_template
from cardiolora.dicom.seg_merge import merge_phases, reference_sources
from cardiolora.dicom.sources import valid_uid
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
    if series_uid is not None and not valid_uid(series_uid):
        raise ValueError(f"`series_uid` {series_uid!r} is not a valid DICOM UID.")
    out, series, merged_uid = Path(out_path), series_uid or hd.UID(), hd.UID()
    descriptions = segment_descriptions(algorithm_identification(version, parameters))
    labels = [phase_description(t, n_t, float(times[t]), ed_phase, es_phase) for t in range(n_t)]
    cine_text = f"cardiolora cine, {n_t} phases" + "".join(
        f", {k} {p + 1}" for k, p in (("ED", ed_phase), ("ES", es_phase)) if p is not None
    )
    with WarningLog(loggers=("pydicom",)) as log:
        table, first_header = read_sources(label, source_files, source_frame_numbers)
        first, frames = table[0][0], [fr for row in table for fr in row]
        for_uid, notes = frame_of_reference(table, frame_of_reference_uid)
        template, fixed = stand_in_template(first_header)
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
        placeholders: dict[str, Frame] = {}
        where: dict[str, tuple[int, int]] = {}
        segs = []
        for t in range(n_t):
            stand_ins = [stand_in(template, fr, first, for_uid, thickness) for fr in table[t]]
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
                reference_sources(seg, table[t], placeholders)
                save_dataset_atomic(seg, path)
        else:
            paths = [out]
            seg = merge_phases(segs, label, where, rank, labels)
            reference_sources(seg, frames, placeholders)
            save_dataset_atomic(seg, out)
    return SegResult(paths=tuple(paths), notes=tuple(notes + log.lines(width=240)))


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
    with WarningLog(loggers=("pydicom",)):  # the sources' invalid UIDs are referenced as they are: no warning flood
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
