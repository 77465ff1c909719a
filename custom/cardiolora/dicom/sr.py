"""DICOM SR measurement report (TID 1500) of the cardiac function, referencing the DICOM SEG.

Comprehensive 3D SR (highdicom), root TID 1500 "Imaging Measurement Report", procedure reported
SCT 241620005 "Cardiac MRI", device observer ``cardiolora``. Under "Imaging Measurements":

* TID 1411 volumetric ROI groups, one per (structure, phase): LV cavity ED (LVEDV), LV cavity ES
  (LVESV), LV myocardium ED (LV mass), RV cavity ED (RVEDV), RV cavity ES (RVESV). Each has a
  Referenced Segment (DCM 121191: SEG instance + segment number, 1 LV cavity, 2 LV myocardium,
  3 RV cavity) and, as Source image for segmentation (DCM 121233), the phase's MR images: with
  per-phase SEG instances that phase's instance, with one multi-phase SEG that SEG, the phase
  given by the source images (Referenced Frame Numbers would need the segment number dropped:
  the image reference macro forbids both together). Finding = the segment's property type.
* TID 1501 groups "LV function" / "RV function" (SV, EF, BSA-indexed values), "Body surface area"
  (with BSA only), "Cardiac phases" (ED / ES phase index and trigger time, each NUM referencing
  the phase's MR images) and "Plausibility flags".

Concepts (CID 3835 "Cardiac Volume Measurement" and CID 3833 "Cardiac Ejection Fraction" for
CT/MR; else the echo context groups) and UCUM units:

* EDV / ESV: LN 8821-1 / 8823-7 "Left Ventricular ED / ES Volume", LN 8822-9 / 8824-5 (right); ml.
* SV: SCT 90096001 "Stroke Volume" (finding site LV), SCT 429483009 "RV Stroke Volume"; ml.
* EF: LN 8811-2 "Left ventricular ejection fraction by MR", LN 8818-7 (right ...); %.
* LV mass: LN 18087-7 "Left Ventricle Mass" (CID 12203); g. Myocardial volume at ED x 1.05 g/ml;
  CID 12232's mass methods are echo-specific (truncated ellipse, area-length), so none is named.
* Indexed: the same concepts in ml/m2 and g/m2; SV index as SCT 277381004 "Stroke Index" /
  429619008 "RV Stroke Index". BSA: LN 8277-6 in m2, method DCM 122244 "BSA = (HT*WT/36)^0.5"
  (Mosteller, height in m).
* Phase: trigger time DCM 122666 "Time relative to R-wave peak" (ms); phase index (0-based) has no
  standard code: private 99CARDIOLORA PHASE_INDEX, unit "1".

Modifiers, as in DICOM's adult echo post-coordinated measurements (PS3.17): HAS CONCEPT MOD (SCT
272518008 "Cardiac Cycle Point") = SCT 416190007 "End diastole" / 416430001 "End Systole" (CID
12233 "Cardiac Phase") on every phase-bound NUM (EDV, ESV, mass, indexed ones, phase index and
trigger time); (DCM 125306 "Measurement Type") = DCM 125316 "Directly measured" (volumes, which
also carry Measurement Method DCM 126030 "Sum of segmented voxel method for volume", CID 7474),
125315 "Calculated" (SV, EF, mass, BSA) or 125313 "Indexed" (CID 12303) plus (DCM 125308
"Measurement Divisor") = LN 8277-6 BSA. (DCM 109070 is "End of systole" of hemodynamic waveforms,
CID 3337, and 109071 "Indicator mean transit time": not cardiac phases.)

Flags: per flag one CODE qualitative evaluation, concept 99CARDIOLORA FLAG "Plausibility flag",
value 99CARDIOLORA <flag> (Long Code Value beyond 16 characters); the private scheme is declared in
the Coding Scheme Identification Sequence.

NaN: an undefined EF (EDV 0) is omitted, never written as a number. An empty Measured Value with
Numeric Value Qualifier DCM 114003 "Divide by zero" would be allowed, but highdicom 0.28's
``srread`` fails on it; :func:`read_measurement_sr` gives NaN and ``*_ef_defined`` False.

Anonymised sources: invalid dates (``00000000``, ``20120000``) and sex become empty (Type 2);
foreign UIDs (e.g. a leading-zero component) are referenced unchanged; UIDs made here are new
and valid (the device observer UID derives from name and version: one version, one device).
pydicom / highdicom warnings and log records are collected and logged once at DEBUG level.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import math
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from copy import deepcopy
from pathlib import Path
from typing import Any, NamedTuple

import highdicom as hd
import pydicom
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from cardiolora.labels import LV, MYO, RV

__all__ = ["FUNCTION_REQUIRED", "INDEXED_KEYS", "SCHEME", "SPECS", "read_measurement_sr", "write_measurement_sr"]

_LOG = logging.getLogger(__name__)
#: Private coding scheme of the phase index and the flags.
SCHEME = "99CARDIOLORA"
_SEG_CLASSES = {"1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.66.7"}  # SEG, label-map SEG
#: Keys `function` must have.
FUNCTION_REQUIRED = (
    "ed_phase",
    "es_phase",
    "lv_edv_ml",
    "lv_esv_ml",
    "lv_sv_ml",
    "lv_ef_pct",
    "rv_edv_ml",
    "rv_esv_ml",
    "rv_sv_ml",
    "rv_ef_pct",
    "lv_mass_g",
)
#: Optional BSA-indexed keys (written when present, with ``bsa_m2``).
INDEXED_KEYS = (
    "lv_edv_i_ml_m2",
    "lv_esv_i_ml_m2",
    "lv_sv_i_ml_m2",
    "rv_edv_i_ml_m2",
    "rv_esv_i_ml_m2",
    "rv_sv_i_ml_m2",
    "lv_mass_i_g_m2",
)
_UNITS = {
    u: Code(u, "UCUM", m)
    for u, m in (
        ("ml", "milliliter"),
        ("%", "percent"),
        ("g", "gram"),
        ("ml/m2", "milliliter per square meter"),
        ("g/m2", "gram per square meter"),
        ("ms", "millisecond"),
        ("m2", "square meter"),
        ("1", "no units"),
    )
}
_CYCLE_POINT = Code("272518008", "SCT", "Cardiac Cycle Point")
_PHASE_CODE = {"ed": codes.SCT.EndDiastole, "es": codes.SCT.EndSystole}
_BSA = Code("8277-6", "LN", "Body Surface Area")
_PHASE_INDEX = Code("PHASE_INDEX", SCHEME, "Cardiac phase index (0-based)")
_FLAG = Code("FLAG", SCHEME, "Plausibility flag")
_MEASURED, _CALC, _INDEXED = codes.DCM.DirectlyMeasured, codes.DCM.Calculated, codes.DCM.Indexed


class _Spec(NamedTuple):
    """One measurement: concept, UCUM unit, measurement type, cardiac phase (or None), finding site."""

    name: Code
    unit: str
    kind: Code
    phase: str | None = None
    site: Code | None = None


_LN, _SCT = codes.LN, codes.SCT
#: Measurement key -> coded concept, unit, measurement type, phase modifier, finding site.
SPECS: dict[str, _Spec] = {
    "lv_edv_ml": _Spec(_LN.LeftVentricularEDVolume, "ml", _MEASURED, "ed"),
    "lv_esv_ml": _Spec(_LN.LeftVentricularESVolume, "ml", _MEASURED, "es"),
    "lv_mass_g": _Spec(_LN.LeftVentricleMass, "g", _CALC, "ed"),
    "rv_edv_ml": _Spec(_LN.RightVentricularEDVolume, "ml", _MEASURED, "ed"),
    "rv_esv_ml": _Spec(_LN.RightVentricularESVolume, "ml", _MEASURED, "es"),
    "lv_sv_ml": _Spec(_SCT.StrokeVolume, "ml", _CALC, None, _SCT.LeftVentricle),
    "lv_ef_pct": _Spec(_LN.LeftVentricularEjectionFractionByMR, "%", _CALC),
    "rv_sv_ml": _Spec(_SCT.RVStrokeVolume, "ml", _CALC),
    "rv_ef_pct": _Spec(_LN.RightVentricularEjectionFractionByMR, "%", _CALC),
    "lv_edv_i_ml_m2": _Spec(_LN.LeftVentricularEDVolume, "ml/m2", _INDEXED, "ed"),
    "lv_esv_i_ml_m2": _Spec(_LN.LeftVentricularESVolume, "ml/m2", _INDEXED, "es"),
    "lv_sv_i_ml_m2": _Spec(_SCT.StrokeIndex, "ml/m2", _INDEXED, None, _SCT.LeftVentricle),
    "lv_mass_i_g_m2": _Spec(_LN.LeftVentricleMass, "g/m2", _INDEXED, "ed"),
    "rv_edv_i_ml_m2": _Spec(_LN.RightVentricularEDVolume, "ml/m2", _INDEXED, "ed"),
    "rv_esv_i_ml_m2": _Spec(_LN.RightVentricularESVolume, "ml/m2", _INDEXED, "es"),
    "rv_sv_i_ml_m2": _Spec(_SCT.RVStrokeIndex, "ml/m2", _INDEXED),
    "bsa_m2": _Spec(_BSA, "m2", _CALC),
}
#: Volumetric groups: (tracking identifier, segment number, phase, measurement key).
_VOLUMETRIC = (
    ("LV cavity ED", LV, "ed", "lv_edv_ml"),
    ("LV cavity ES", LV, "es", "lv_esv_ml"),
    ("LV myocardium ED", MYO, "ed", "lv_mass_g"),
    ("RV cavity ED", RV, "ed", "rv_edv_ml"),
    ("RV cavity ES", RV, "es", "rv_esv_ml"),
)
_FUNCTION_GROUPS = (
    (
        "LV function",
        _SCT.LeftVentricle,
        ("lv_sv_ml", "lv_ef_pct", "lv_edv_i_ml_m2", "lv_esv_i_ml_m2", "lv_sv_i_ml_m2", "lv_mass_i_g_m2"),
    ),
    (
        "RV function",
        _SCT.RightVentricle,
        ("rv_sv_ml", "rv_ef_pct", "rv_edv_i_ml_m2", "rv_esv_i_ml_m2", "rv_sv_i_ml_m2"),
    ),
    ("Body surface area", None, ("bsa_m2",)),
)


@contextlib.contextmanager
def _quiet(what: str) -> Iterator[None]:
    """Collect pydicom / highdicom warnings and log records; one DEBUG summary afterwards."""
    records: list[logging.LogRecord] = []

    def drop(record: logging.LogRecord) -> bool:
        records.append(record)
        return False

    names = ["pydicom", *(n for n in logging.root.manager.loggerDict if n.split(".")[0] in ("pydicom", "highdicom"))]
    loggers = [logging.getLogger(n) for n in dict.fromkeys(names)]
    for logger in loggers:
        logger.addFilter(drop)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
    finally:
        for logger in loggers:
            logger.removeFilter(drop)
    messages = [str(w.message) for w in caught] + [r.getMessage() for r in records]
    if messages:
        _LOG.debug("%s: %d pydicom/highdicom warnings suppressed, e.g. %s", what, len(messages), messages[0])


def _load(obj: object, field: str) -> Dataset:
    """A Dataset from a dataset or a path (header only); ValueError naming `field` otherwise."""
    if isinstance(obj, Dataset):
        return obj
    if isinstance(obj, (str, os.PathLike)):
        try:
            return pydicom.dcmread(obj, stop_before_pixels=True)
        except (OSError, pydicom.errors.InvalidDicomError) as err:
            raise ValueError(f"`{field}`: cannot read {obj} as DICOM: {err}") from err
    raise ValueError(f"`{field}` items must be pydicom Datasets or paths, got {type(obj).__name__}.")


def _items(obj: Any) -> list[Any]:
    """A single dataset / path (or anything not iterable) as a one-item list, a sequence as a list."""
    return [obj] if isinstance(obj, (Dataset, str, os.PathLike)) or not hasattr(obj, "__iter__") else list(obj)


def _check_function(function: Mapping[str, Any]) -> dict[str, float]:
    """The measurement values and phases as floats (undefined EFs NaN); ValueError naming the key."""
    if not isinstance(function, Mapping):
        raise ValueError(f"`function` must be a mapping, got {type(function).__name__}.")
    out: dict[str, float] = {}
    for key in FUNCTION_REQUIRED + tuple(k for k in (*INDEXED_KEYS, "bsa_m2") if k in function):
        if key not in function:
            raise ValueError(f"`function` lacks the key {key!r}.")
        value = function[key]
        if isinstance(value, (bool, str, bytes)) or not hasattr(value, "__float__"):
            raise ValueError(f"`function[{key!r}]` must be a number, got {value!r}.")
        out[key] = float(value)
        if not math.isfinite(out[key]) and not key.endswith("_ef_pct"):
            raise ValueError(f"`function[{key!r}]` must be finite, got {value!r}.")
        if out[key] < 0 and key.endswith(("_edv_ml", "_esv_ml", "_mass_g", "bsa_m2", "_phase")):
            raise ValueError(f"`function[{key!r}]` must be >= 0, got {value!r}.")
    for key in ("ed_phase", "es_phase"):
        if not out[key].is_integer():
            raise ValueError(f"`function[{key!r}]` must be an integer phase index, got {function[key]!r}.")
    for side in ("lv", "rv"):
        if f"{side}_ef_defined" in function and not function[f"{side}_ef_defined"]:
            out[f"{side}_ef_pct"] = math.nan
    return out


def _check_flags(flags: Sequence[str]) -> list[str]:
    """The flags as a list of 1-64 printable characters without backslash or outer spaces."""
    if isinstance(flags, str):
        raise ValueError("`flags` must be a sequence of strings, not one string.")
    for flag in flags:
        if (
            not isinstance(flag, str)
            or not 0 < len(flag) <= 64
            or flag != flag.strip()
            or any(c == "\\" or not c.isprintable() for c in flag)
        ):
            raise ValueError(f"`flags` items must be 1-64 printable characters without backslash, got {flag!r}.")
    return list(flags)


def _valid_date(text: str) -> bool:
    with contextlib.suppress(ValueError):
        return len(text) == 8 and text.isdigit() and bool(datetime.datetime.strptime(text, "%Y%m%d"))
    return False


def _header(source: Dataset) -> Dataset:
    """Copy of `source` whose patient / study attributes are valid in the SR (module docstring)."""
    ds = deepcopy(source)
    for kw in (
        "PatientID",
        "PatientName",
        "PatientBirthDate",
        "PatientSex",
        "AccessionNumber",
        "StudyID",
        "StudyDate",
        "StudyTime",
        "ReferringPhysicianName",
    ):
        text = str(ds.get(kw) or "")
        hms = text.split(".")[0]
        if (
            ds.get(kw) is None
            or (kw in ("PatientBirthDate", "StudyDate") and text and not _valid_date(text))
            or (kw == "PatientSex" and text not in ("M", "F", "O", ""))
            or (kw == "StudyTime" and hms and not (hms.isdigit() and len(hms) in (2, 4, 6)))
        ):
            setattr(ds, kw, "")
    return ds


def _phase_of(ds: Dataset, trigger: list[float] | None) -> int:
    """Phase of an MR instance: nearest of `trigger` to its TriggerTime, else TemporalPositionIdentifier - 1."""
    if trigger and ds.get("TriggerTime") not in (None, "") and any(math.isfinite(t) for t in trigger):
        tt = float(ds.TriggerTime)
        return min(range(len(trigger)), key=lambda t: abs(trigger[t] - tt) if math.isfinite(trigger[t]) else math.inf)
    if ds.get("TemporalPositionIdentifier") not in (None, ""):
        return int(ds.TemporalPositionIdentifier) - 1
    raise ValueError(
        f"`evidence`: cannot tell the phase of {ds.get('SOPInstanceUID')} (no TriggerTime with "
        "`trigger_times_ms`, no TemporalPositionIdentifier); pass a mapping {phase: datasets}."
    )


def _evidence_by_phase(evidence: Any, trigger: list[float] | None) -> dict[int, list[Dataset]]:
    """The MR evidence grouped by phase index."""
    out: dict[int, list[Dataset]] = {}
    if isinstance(evidence, Mapping):
        for phase, items in evidence.items():
            out.setdefault(int(phase), []).extend(_load(x, "evidence") for x in _items(items))
    else:
        for ds in (_load(x, "evidence") for x in _items(evidence)):
            out.setdefault(_phase_of(ds, trigger), []).append(ds)
    if any(
        kw not in ds
        for items in out.values()
        for ds in items
        for kw in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
    ):
        raise ValueError("`evidence` items must be DICOM instances with SOP class, instance, study and series UIDs.")
    return out


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
    method = codes.DCM.SumOfSegmentedVoxelMethodForVolume if spec.kind == _MEASURED else None
    m = hd.sr.Measurement(
        name=spec.name,
        value=float(value),
        unit=_UNITS[spec.unit],
        method=codes.DCM.BSAEqualsHTWT360Point5 if key == "bsa_m2" else method,
        finding_sites=None if spec.site is None else [hd.sr.FindingSite(spec.site)],
    )
    mods = [(codes.DCM.MeasurementType, spec.kind)]
    if spec.kind == _INDEXED:
        mods.append((codes.DCM.MeasurementDivisor, _BSA))
    if spec.phase:
        mods.append((_CYCLE_POINT, _PHASE_CODE[spec.phase]))
    return _modified(m, mods)


def _tracking(label: str) -> hd.sr.TrackingIdentifier:
    return hd.sr.TrackingIdentifier(identifier=label, uid=hd.UID())


def write_measurement_sr(
    seg_dataset_or_path: Dataset | str | os.PathLike | Sequence[Dataset | str | os.PathLike],
    evidence: Sequence[Dataset | str | os.PathLike] | Mapping[int, Sequence[Dataset | str | os.PathLike]],
    function: Mapping[str, Any],
    out_path: str | os.PathLike,
    *,
    version: str,
    series_number: int = 9902,
    flags: Sequence[str] = (),
    trigger_times_ms: Sequence[float] | None = None,
) -> Path:
    """Write the TID 1500 measurement report of the module docstring to `out_path` (atomically).

    Args:
        seg_dataset_or_path: the SEG: a dataset / path or a sequence of them (per-phase SEG
            instances or one multi-phase SEG); the SEGs referenced become evidence.
        evidence: source MR datasets / paths of (at least) the ED and ES phases, all recorded as
            evidence: a mapping ``{phase index: datasets}``, or a sequence (phase = the
            `trigger_times_ms` entry nearest to TriggerTime, else TemporalPositionIdentifier - 1).
        function: :func:`cardiolora.clinical.cardiac_function` output (:data:`FUNCTION_REQUIRED`,
            optional ``bsa_m2`` and :data:`INDEXED_KEYS`, ``*_ef_defined``).
        out_path: the SR file (parent folders created; replaced if present).
        version: software version (SoftwareVersions, algorithm version).
        series_number: SeriesNumber of the new SR series.
        flags: plausibility flags, e.g. ``"lv_ef_out_of_range"`` (may be empty).
        trigger_times_ms: ``(T,)`` trigger times of the phases; default: the median TriggerTime
            of the phase's sources (none: no trigger time is written).

    Returns:
        `out_path` as a Path.

    Raises:
        ValueError: naming the field: a `function` key missing / not a number / not finite
            (NaN allowed for EF only), an item that is not a SEG or not DICOM, no evidence or
            SEG for the ED / ES phase, a SEG of another study, malformed `flags`, `version`,
            `series_number`, `trigger_times_ms` or `out_path`.
    """
    values = _check_function(function)
    flag_list = _check_flags(flags)
    if not isinstance(version, str) or not version.strip() or len(version) > 64 or "\\" in version:
        raise ValueError(f"`version` must be 1-64 characters without backslash, got {version!r}.")
    if isinstance(series_number, bool) or not isinstance(series_number, int) or not 1 <= series_number < 2**31:
        raise ValueError(f"`series_number` must be an integer in [1, 2**31), got {series_number!r}.")
    out = Path(out_path)
    if out.is_dir():
        raise ValueError(f"`out_path` {out} is a directory.")
    phases = {"ed": int(values["ed_phase"]), "es": int(values["es_phase"])}
    try:
        trigger = None if trigger_times_ms is None else [float(t) for t in trigger_times_ms]
    except (TypeError, ValueError) as err:
        raise ValueError(f"`trigger_times_ms` must be a sequence of numbers: {err}") from err
    if trigger is not None and max(phases.values()) >= len(trigger):
        raise ValueError(f"`trigger_times_ms` has {len(trigger)} phases, ED / ES are {phases['ed']} / {phases['es']}.")
    with _quiet(f"DICOM SR {out}"):
        segs = [_load(x, "seg_dataset_or_path") for x in _items(seg_dataset_or_path)]
        if not segs:
            raise ValueError("`seg_dataset_or_path` is empty.")
        for seg in segs:
            if str(seg.get("SOPClassUID", "")) not in _SEG_CLASSES:
                raise ValueError(
                    f"`seg_dataset_or_path`: {seg.get('SOPInstanceUID')} is not a DICOM SEG "
                    f"(SOPClassUID {seg.get('SOPClassUID')!r})."
                )
        by_phase = _evidence_by_phase(evidence, trigger)
        for name, t in phases.items():
            if not by_phase.get(t):
                raise ValueError(f"`evidence` holds no source image of the {name.upper()} phase {t}.")
        study = str(by_phase[phases["ed"]][0].StudyInstanceUID)
        for seg in segs:
            if str(seg.get("StudyInstanceUID")) != study:
                raise ValueError(
                    f"`seg_dataset_or_path`: SEG {seg.get('SOPInstanceUID')} belongs to study "
                    f"{seg.get('StudyInstanceUID')}, the evidence to {study}."
                )
        sr = _build(segs, by_phase, values, flag_list, phases, trigger, version, series_number)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.{os.getpid()}.partial")
        try:
            sr.save_as(tmp, enforce_file_format=True)
            os.replace(tmp, out)
        finally:
            tmp.unlink(missing_ok=True)
    return out


def _build(
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
    for label, number, phase, key in _VOLUMETRIC:
        seg, ref = _segment_reference(segs, number, phases[phase], by_phase[phases[phase]], phase.upper())
        used.setdefault(str(seg.SOPInstanceUID), seg)
        prop = {int(s.SegmentNumber): s for s in seg.SegmentSequence}[number].SegmentedPropertyTypeCodeSequence[0]
        groups.append(
            hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=_tracking(label),
                referenced_segment=ref,
                algorithm_id=algorithm,
                finding_type=hd.sr.CodedConcept.from_dataset(prop),
                finding_category=_SCT.AnatomicalStructure,
                finding_sites=[hd.sr.FindingSite(_SCT.Heart)],
                measurements=[_measurement(key, values[key])],
            )
        )
    for label, site, keys in _FUNCTION_GROUPS:
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
        cycle = [(_CYCLE_POINT, _PHASE_CODE[name])]
        phase_ms.append(
            _modified(hd.sr.Measurement(_PHASE_INDEX, float(t), _UNITS["1"], referenced_images=images), cycle)
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
                        _UNITS["ms"],
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
                hd.sr.QualitativeEvaluation(_FLAG, hd.sr.CodedConcept(f, SCHEME, f)) for f in flags
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
        procedure_reported=_SCT.CardiacMRI,
        imaging_measurements=groups,
        referenced_images=[ds for t in dict.fromkeys(phases.values()) for ds in by_phase[t]],
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


def _code(item: Dataset) -> tuple[str, str]:
    """(scheme, value) of a code item (Code Value, Long Code Value or URN Code Value)."""
    value = item.get("CodeValue") or item.get("LongCodeValue") or item.get("URNCodeValue")
    return str(item.CodingSchemeDesignator), str(value)


def read_measurement_sr(path: str | os.PathLike) -> dict[str, Any]:
    """Read a report written by :func:`write_measurement_sr` back.

    Args:
        path: the SR file.

    Returns:
        ``values`` (key of :data:`SPECS` -> float; an omitted EF is NaN), ``units`` (key -> UCUM
        code), ``lv_ef_defined`` / ``rv_ef_defined``, ``ed`` / ``es`` (``{"phase": int,
        "trigger_time_ms": float or None}``), ``flags`` (list of str), ``segments`` (per
        volumetric group: ``group``, ``key``, ``sop_instance_uid``, ``segment_number``,
        ``frame_numbers`` (None = whole segment), ``source_sop_instance_uids``), and the SR's
        ``sop_instance_uid``, ``series_instance_uid``, ``study_instance_uid``.

    Raises:
        ValueError: if `path` is not DICOM or not a TID 1500 SR with "Imaging Measurements".
    """
    with _quiet(f"reading {path}"):
        ds = _load(path, "path")
        root = [
            i
            for i in ds.get("ContentSequence") or []
            if i.get("ValueType") == "CONTAINER" and _code(i.ConceptNameCodeSequence[0]) == ("DCM", "126010")
        ]
        if str(ds.get("Modality")) != "SR" or not root:
            raise ValueError(f"`path` {path} is not a TID 1500 SR with 'Imaging Measurements'.")
        lookup = {((s.name.scheme_designator, s.name.value), s.unit): k for k, s in SPECS.items()}
        cycles = {("SCT", "416190007"): "ed", ("SCT", "416430001"): "es"}
        out: dict[str, Any] = {
            "values": {},
            "units": {},
            "flags": [],
            "segments": [],
            "ed": {"phase": None, "trigger_time_ms": None},
            "es": {"phase": None, "trigger_time_ms": None},
        }
        for kw in ("SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID"):
            out[kw.replace("InstanceUID", "").lower() + "_instance_uid"] = str(ds[kw].value)
        for group in root[0].get("ContentSequence") or []:
            label, keys, ref = None, [], None
            for item in group.get("ContentSequence") or []:
                name, vt = _code(item.ConceptNameCodeSequence[0]), item.ValueType
                if vt == "TEXT" and name == ("DCM", "112039"):
                    label = str(item.TextValue)
                elif vt == "CODE" and name == (SCHEME, "FLAG"):
                    out["flags"].append(_code(item.ConceptCodeSequence[0])[1])
                elif vt == "IMAGE" and name == ("DCM", "121191"):
                    sop = item.ReferencedSOPSequence[0]
                    frames = sop.get("ReferencedFrameNumber")
                    frames = [frames] if isinstance(frames, int) else frames
                    ref = {
                        "sop_instance_uid": str(sop.ReferencedSOPInstanceUID),
                        "segment_number": int(sop.ReferencedSegmentNumber),
                        "frame_numbers": None if frames is None else [int(f) for f in frames],
                        "source_sop_instance_uids": [],
                    }
                elif vt == "IMAGE" and name == ("DCM", "121233") and ref is not None:
                    ref["source_sop_instance_uids"].append(str(item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID))
                elif vt == "NUM" and item.get("MeasuredValueSequence"):
                    mv = item.MeasuredValueSequence[0]
                    value = float(mv.get("FloatingPointValue", mv.NumericValue))
                    unit = _code(mv.MeasurementUnitsCodeSequence[0])[1]
                    cycle = next(
                        (
                            cycles.get(_code(c.ConceptCodeSequence[0]))
                            for c in item.get("ContentSequence") or []
                            if _code(c.ConceptNameCodeSequence[0]) == ("SCT", "272518008")
                        ),
                        None,
                    )
                    if name == (SCHEME, "PHASE_INDEX") and cycle:
                        out[cycle]["phase"] = int(round(value))
                    elif name == ("DCM", "122666") and cycle:
                        out[cycle]["trigger_time_ms"] = value
                    elif (key := lookup.get((name, unit))) is not None:
                        out["values"][key], out["units"][key] = value, unit
                        keys.append(key)
            if ref is not None:
                out["segments"].append({"group": label, "key": keys[0] if keys else None, **ref})
    for side in ("lv", "rv"):
        out[f"{side}_ef_defined"] = f"{side}_ef_pct" in out["values"]
        if not out[f"{side}_ef_defined"]:
            out["values"][f"{side}_ef_pct"], out["units"][f"{side}_ef_pct"] = math.nan, "%"
    return out
