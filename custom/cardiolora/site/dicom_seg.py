"""DICOM Segmentation (SEG) objects for a segmented short-axis cine, written with highdicom.

Layout. One SEG **series** per study, one SEG **instance per cardiac phase**: instance ``t + 1``
holds the label map of phase ``t`` as a BINARY segmentation with one frame per (slice, segment)
(``omit_empty_frames=False``: every slice has its three frames, so the layout is regular) and
references the source MR instances of that phase (one DerivationImage / SourceImage item per
frame, ``ReferencedSeriesSequence`` naming every one). A single instance for the whole cine is
not possible with highdicom (0.28 refuses two frames of one segment at the same
ImagePositionPatient, and the SEG writers in use, highdicom and dcmqi, have no temporal dimension
index), and one instance per phase is what viewers overlay on the matching cine frame. The
ContentLabel is ``PHASE_<t>`` and the ContentDescription names the phase, its trigger time and
whether it is ED or ES.

Segments and codes (SNOMED CT, from ``pydicom.sr.codedict.codes.SCT``):

====  ============  ===================================  ====================================
 No.  Label         Segmented property type               Category
====  ============  ===================================  ====================================
 1    LV cavity     87878005 "Left ventricle"              91723000 "Anatomical Structure"
 2    LV myocardium 49848007 "Left Ventricle Myocardium"   91723000 "Anatomical Structure"
 3    RV cavity     53085002 "Right ventricle"             91723000 "Anatomical Structure"
====  ============  ===================================  ====================================

Neither pydicom's nor highdicom's code dictionaries hold a code for the *cavity* (blood pool) of
a ventricle, so the chamber codes are the closest standard ones (as e.g. TotalSegmentator's SEG
export does); the SegmentLabel says "cavity". Every segment has anatomic region Heart
(80891009), algorithm type AUTOMATIC and the algorithm identification name ``cardiolora``, family
DCM 123110 "Artificial Intelligence", version = the package version, parameters = profile and
model hash.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes

from cardiolora.labels import LV, MYO, RV

__all__ = [
    "SEGMENTS",
    "algorithm_identification",
    "phase_description",
    "read_seg_labels",
    "segment_descriptions",
    "write_cine_seg",
]

#: (segment number = project label, SegmentLabel, SCT property type, display colour as RGB).
SEGMENTS: tuple[tuple[int, str, object, tuple[int, int, int]], ...] = (
    (LV, "LV cavity", codes.SCT.LeftVentricle, (220, 40, 40)),
    (MYO, "LV myocardium", codes.SCT.LeftVentricleMyocardium, (40, 200, 60)),
    (RV, "RV cavity", codes.SCT.RightVentricle, (40, 120, 230)),
)


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
    out = []
    for number, label, prop_type, rgb in SEGMENTS:
        out.append(
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
        )
    return out


def phase_description(t: int, n_phases: int, trigger_ms: float, ed: int | None, es: int | None) -> str:
    """ContentDescription of phase `t`'s SEG instance (at most 64 characters).

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
    if tags:
        text += ", " + "/".join(tags)
    return text[:64]


def _check_frame_refs(files: Sequence[Sequence[str]], frames: Sequence[Sequence[int]]) -> None:
    """The writer handles classic single-frame sources (one file per frame)."""
    if any(n != 1 for row in frames for n in row):
        raise ValueError(
            "the source series is multi-frame (Enhanced MR); the DICOM SEG writer supports single-frame "
            "MR Image Storage sources only"
        )
    if len({f for row in files for f in row}) != sum(len(row) for row in files):
        raise ValueError("two frames of the source series share a file; cannot reference one instance per frame")


def write_cine_seg(
    label_tzyx: np.ndarray,
    source_files: Sequence[Sequence[str | os.PathLike]],
    source_frame_numbers: Sequence[Sequence[int]],
    out_dir: str | os.PathLike,
    *,
    version: str,
    parameters: Mapping[str, str] | None = None,
    trigger_times_ms: Sequence[float] | None = None,
    ed_phase: int | None = None,
    es_phase: int | None = None,
    series_number: int = 9901,
    series_uid: str | None = None,
) -> list[Path]:
    """Write one SEG instance per phase (module docstring) into `out_dir`.

    Args:
        label_tzyx: uint8 labels ``(T, Z, Y, X)`` (0..3) on the source grid: ``label[t, z]`` is
            the segmentation of ``source_files[t][z]`` (rows, columns as stored).
        source_files: ``[t][z]`` source file paths (``CineStudy.meta["source_files"]``).
        source_frame_numbers: ``[t][z]`` 1-based frame numbers (must all be 1: single-frame).
        out_dir: folder for ``phase_<t>.dcm`` files (created).
        version: software version for the algorithm identification.
        parameters: algorithm parameters (profile, model hash).
        trigger_times_ms: ``(T,)`` trigger times for the descriptions.
        ed_phase: ED phase index, named in the description.
        es_phase: ES phase index, named in the description.
        series_number: SeriesNumber of the SEG series.
        series_uid: SeriesInstanceUID (default: a new UID).

    Returns:
        The written files, phase order.

    Raises:
        ValueError: if the label map does not match the source table, holds values outside
            0..3, or the sources are multi-frame / share files; highdicom's own ValueError (e.g.
            a source file lacking geometry) is re-raised naming the phase.
    """
    label = np.asarray(label_tzyx)
    n_phases = label.shape[0] if label.ndim == 4 else -1
    if label.ndim != 4 or len(source_files) != n_phases or any(len(r) != label.shape[1] for r in source_files):
        raise ValueError(
            f"`label_tzyx` {label.shape} does not match the source table "
            f"({len(source_files)} phases x {len(source_files[0]) if source_files else 0} slices)."
        )
    if label.size and (label.min() < 0 or label.max() > RV):
        raise ValueError(f"`label_tzyx` values must be in 0..{RV}, got {label.min()}..{label.max()}.")
    _check_frame_refs([[str(f) for f in row] for row in source_files], source_frame_numbers)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    descriptions = segment_descriptions(algorithm_identification(version, parameters))
    series = series_uid or hd.UID()
    times = np.full(n_phases, np.nan) if trigger_times_ms is None else np.asarray(trigger_times_ms, dtype=float)
    paths = []
    for t in range(n_phases):
        sources = [pydicom.dcmread(f, stop_before_pixels=True) for f in source_files[t]]
        rows, cols = int(sources[0].Rows), int(sources[0].Columns)
        if label.shape[2:] != (rows, cols):
            raise ValueError(f"phase {t}: label slices are {label.shape[2:]}, source images are {(rows, cols)}.")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # single-component PatientName etc. copied from the source
                seg = hd.seg.Segmentation(
                    source_images=sources,
                    pixel_array=np.ascontiguousarray(label[t].astype(np.uint8)),
                    segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
                    segment_descriptions=descriptions,
                    series_instance_uid=series,
                    series_number=int(series_number),
                    sop_instance_uid=hd.UID(),
                    instance_number=t + 1,
                    manufacturer="cardiolora",
                    manufacturer_model_name="cardiolora site application",
                    software_versions=str(version),
                    device_serial_number="none",
                    omit_empty_frames=False,
                    content_label=f"PHASE_{t:03d}",
                    content_description=phase_description(t, n_phases, float(times[t]), ed_phase, es_phase),
                    series_description="cardiolora LV/MYO/RV",
                )
        except ValueError as err:
            raise ValueError(f"DICOM SEG of phase {t} ({source_files[t][0]}): {err}") from err
        path = out / f"phase_{t:03d}.dcm"
        tmp = path.with_name(path.name + ".tmp")
        seg.save_as(tmp, enforce_file_format=True)
        os.replace(tmp, path)
        paths.append(path)
    return paths


def read_seg_labels(path: str | os.PathLike, source_sop_instance_uids: Sequence[str]) -> np.ndarray:
    """Read one SEG instance back as a label map over the given source instances.

    Args:
        path: a SEG file written by :func:`write_cine_seg`.
        source_sop_instance_uids: the source instances, in the slice order wanted.

    Returns:
        uint8 ``(Z, Y, X)`` labels (segment numbers combined: 0 where no segment).

    Raises:
        ValueError: if the file is not a SEG or does not reference the instances.
    """
    seg = hd.seg.segread(path)
    return np.asarray(
        seg.get_pixels_by_source_instance(
            source_sop_instance_uids=list(source_sop_instance_uids), combine_segments=True
        ),
        dtype=np.uint8,
    )
