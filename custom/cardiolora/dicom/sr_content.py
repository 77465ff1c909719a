"""The content of the cardiac function SR: TID 1500 with its TID 1411 / 1501 groups (highdicom).

:func:`build_report` makes the Comprehensive 3D SR of :mod:`cardiolora.dicom.sr` from the checked
inputs: one volumetric group per (structure, phase) referencing its segment
(:func:`_segment_reference` picks the SEG instance and source images), the function, BSA,
cardiac phase and flag groups, each NUM post-coordinated with the modifiers of
:mod:`cardiolora.dicom.sr_codes`. The first MR evidence header has its invalid patient / study
dates, time and sex emptied (:func:`cardiolora.dicom.sources.empty_invalid`).
"""

from __future__ import annotations

import math
from copy import deepcopy
from typing import Any

import highdicom as hd
import pydicom
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from cardiolora.dicom.sources import empty_invalid
from cardiolora.dicom.sr_codes import (
    BSA,
    CYCLE_POINT,
    FLAG,
    FUNCTION_GROUPS,
    INDEXED,
    MEASURED,
    PHASE_CODE,
    PHASE_INDEX,
    SCHEME,
    SPECS,
    UNITS,
    VOLUMETRIC,
)

__all__ = ["build_report"]

#: Patient / study attributes of the first MR evidence header, set empty when absent (type 2).
_TYPE2 = (
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
)


def _header(source: Dataset) -> Dataset:
    """Copy of `source` whose patient / study attributes are present and their dates, time and sex valid."""
    ds = deepcopy(source)
    for kw in _TYPE2:
        if ds.get(kw) is None:
            setattr(ds, kw, "")
    empty_invalid(ds, ("PatientBirthDate", "PatientSex", "StudyDate", "StudyTime"))
    return ds


def _seg_frames(seg: Dataset) -> list[tuple[int | None, set[str]]]:
    """(segment number or None, source SOP instance UIDs) of every SEG frame."""
    frames = []
    for item in seg.get("PerFrameFunctionalGroupsSequence") or []:
        ident = item.get("SegmentIdentificationSequence")
        sources = {
            str(s.ReferencedSOPInstanceUID)
            for d in item.get("DerivationImageSequence") or []
            for s in d.get("SourceImageSequence") or []
        }
        frames.append((int(ident[0].ReferencedSegmentNumber) if ident else None, sources))
    return frames


def _segment_reference(
    segs: list[Dataset], number: int, phase: int, sources: list[Dataset], what: str
) -> tuple[Dataset, hd.sr.ReferencedSegment]:
    """The SEG and the Referenced Segment of segment `number` at `phase` (module docstring).

    The SEG whose frames of the segment reference most source images of the phase wins, with
    those images as sources; without such frames (an omitted empty segment), the first SEG
    naming the phase's images at all, with all of them.
    """
    uids = {str(ds.SOPInstanceUID) for ds in sources}
    best: tuple[int, Dataset, set[str]] | None = None
    for seg in segs:
        if number not in {int(s.SegmentNumber) for s in seg.get("SegmentSequence") or []}:
            continue
        frames = _seg_frames(seg)
        hits = [src & uids for n, src in frames if n in (number, None) and src & uids]
        refs = {
            str(i.ReferencedSOPInstanceUID)
            for s in seg.get("ReferencedSeriesSequence") or []
            for i in s.get("ReferencedInstanceSequence") or []
        }
        if hits and (best is None or len(hits) > best[0]):
            best = (len(hits), seg, set().union(*hits))
        elif best is None and (any(src & uids for _, src in frames) or refs & uids):
            best = (0, seg, uids)
    if best is None:
        raise ValueError(
            f"`seg_dataset_or_path`: no SEG instance holds segment {number} for the {what} phase "
            f"{phase} (none references its source images)."
        )
    _, seg, used = best
    images = [
        hd.sr.SourceImageForSegmentation.from_source_image(ds) for ds in sources if str(ds.SOPInstanceUID) in used
    ]
    return seg, hd.sr.ReferencedSegment(
        sop_class_uid=seg.SOPClassUID, sop_instance_uid=seg.SOPInstanceUID, segment_number=number, source_images=images
    )


def _modified(measurement: hd.sr.Measurement, mods: list[tuple[Code, Code]]) -> hd.sr.Measurement:
    """`measurement` with HAS CONCEPT MOD CODE items (TID 300 row 2, post-coordination) first."""
    num = measurement[0]
    items = [
        hd.sr.CodeContentItem(name=n, value=v, relationship_type=hd.sr.RelationshipTypeValues.HAS_CONCEPT_MOD)
        for n, v in mods
    ]
    num.ContentSequence = hd.sr.ContentSequence(items + list(num.get("ContentSequence") or []))
    return measurement


def _measurement(key: str, value: float) -> hd.sr.Measurement:
    """The NUM of measurement `key` with the modifiers of the module docstring."""
    spec = SPECS[key]
    method = codes.DCM.SumOfSegmentedVoxelMethodForVolume if spec.kind == MEASURED else None
    m = hd.sr.Measurement(
        name=spec.name,
        value=float(value),
        unit=UNITS[spec.unit],
        method=codes.DCM.BSAEqualsHTWT360Point5 if key == "bsa_m2" else method,
        finding_sites=None if spec.site is None else [hd.sr.FindingSite(spec.site)],
    )
    mods = [(codes.DCM.MeasurementType, spec.kind)]
    if spec.kind == INDEXED:
        mods.append((codes.DCM.MeasurementDivisor, BSA))
    if spec.phase:
        mods.append((CYCLE_POINT, PHASE_CODE[spec.phase]))
    return _modified(m, mods)


def _tracking(label: str) -> hd.sr.TrackingIdentifier:
    return hd.sr.TrackingIdentifier(identifier=label, uid=hd.UID())


def build_report(
    segs: list[Dataset],
    by_phase: dict[int, list[Dataset]],
    values: dict[str, float],
    flags: list[str],
    phases: dict[str, int],
    trigger: list[float] | None,
    version: str,
    series_number: int,
) -> hd.sr.Comprehensive3DSR:
    """The SR document (see :func:`write_measurement_sr`)."""
    algorithm = hd.sr.AlgorithmIdentification(name="cardiolora", version=version)
    groups: list[Any] = []
    used: dict[str, Dataset] = {}
    for label, number, phase, key in VOLUMETRIC:
        seg, ref = _segment_reference(segs, number, phases[phase], by_phase[phases[phase]], phase.upper())
        used.setdefault(str(seg.SOPInstanceUID), seg)
        prop = {int(s.SegmentNumber): s for s in seg.SegmentSequence}[number].SegmentedPropertyTypeCodeSequence[0]
        groups.append(
            hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=_tracking(label),
                referenced_segment=ref,
                algorithm_id=algorithm,
                finding_type=hd.sr.CodedConcept.from_dataset(prop),
                finding_category=codes.SCT.AnatomicalStructure,
                finding_sites=[hd.sr.FindingSite(codes.SCT.Heart)],
                measurements=[_measurement(key, values[key])],
            )
        )
    for label, site, keys in FUNCTION_GROUPS:
        if ms := [_measurement(k, values[k]) for k in keys if k in values and math.isfinite(values[k])]:
            groups.append(
                hd.sr.MeasurementsAndQualitativeEvaluations(
                    tracking_identifier=_tracking(label),
                    algorithm_id=algorithm,
                    measurements=ms,
                    finding_sites=None if site is None else [hd.sr.FindingSite(site)],
                )
            )
    phase_ms = []
    for name, t in phases.items():
        images = [hd.sr.SourceImageForMeasurement.from_source_image(ds) for ds in by_phase[t]]
        cycle = [(CYCLE_POINT, PHASE_CODE[name])]
        phase_ms.append(
            _modified(hd.sr.Measurement(PHASE_INDEX, float(t), UNITS["1"], referenced_images=images), cycle)
        )
        times = (
            [trigger[t]]
            if trigger is not None
            else [float(ds.TriggerTime) for ds in by_phase[t] if ds.get("TriggerTime") not in (None, "")]
        )
        if times := sorted(x for x in times if math.isfinite(x)):
            phase_ms.append(
                _modified(
                    hd.sr.Measurement(
                        codes.DCM.TimeRelativeToRWavePeak,
                        times[len(times) // 2],
                        UNITS["ms"],
                        referenced_images=images,
                    ),
                    cycle,
                )
            )
    groups.append(
        hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=_tracking("Cardiac phases"), algorithm_id=algorithm, measurements=phase_ms
        )
    )
    groups.append(
        hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=_tracking("Plausibility flags"),
            algorithm_id=algorithm,
            qualitative_evaluations=[
                hd.sr.QualitativeEvaluation(FLAG, hd.sr.CodedConcept(f, SCHEME, f)) for f in flags
            ],
        )
    )
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=pydicom.uid.generate_uid(entropy_srcs=["cardiolora device", version]),
        name="cardiolora",
        manufacturer_name="cardiolora",
        model_name="cardiolora site application",
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(
            observer_device_context=hd.sr.ObserverContext(
                observer_type=codes.DCM.Device, observer_identifying_attributes=device
            )
        ),
        procedure_reported=codes.SCT.CardiacMRI,
        imaging_measurements=groups,
        # The image library (TID 1600) describes single-frame images by their top-level geometry;
        # highdicom cannot describe a multi-frame (Enhanced MR) source there, so it is left out for
        # those: the groups and the evidence still reference them.
        referenced_images=[ds for t in dict.fromkeys(phases.values()) for ds in by_phase[t] if "PixelSpacing" in ds]
        or None,
    )
    mr = [ds for t in (phases["ed"], *sorted(set(by_phase) - {phases["ed"]})) for ds in by_phase[t]]
    return hd.sr.Comprehensive3DSR(
        evidence=[_header(mr[0]), *mr[1:], *used.values()],
        content=report,
        series_instance_uid=hd.UID(),
        series_number=series_number,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="cardiolora",
        is_complete=True,
        series_description="cardiolora cardiac function",
        software_versions=version,
        manufacturer_model_name="cardiolora site application",
        device_serial_number="none",
        coding_schemes=[
            hd.coding_schemes.CodingSchemeIdentificationItem(
                SCHEME, name="cardiolora local codes", responsible_organization="cardiolora"
            )
        ],
    )
