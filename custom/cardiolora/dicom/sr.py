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

Concepts, units and modifiers: :mod:`cardiolora.dicom.sr_codes`; the content tree:
:mod:`cardiolora.dicom.sr_content`.

NaN: an undefined EF (EDV 0) is omitted, never written as a number. An empty Measured Value with
Numeric Value Qualifier DCM 114003 "Divide by zero" would be allowed, but highdicom 0.28's
``srread`` fails on it; :func:`read_measurement_sr` gives NaN and ``*_ef_defined`` False.

Anonymised sources: invalid dates (``00000000``, ``20120000``) and sex become empty (Type 2);
foreign UIDs (e.g. a leading-zero component) are referenced unchanged; UIDs made here are new
and valid (the device observer UID derives from name and version: one version, one device).
pydicom / highdicom warnings and log records are collected (:class:`cardiolora.dicom.headers.WarningLog`)
and logged once at DEBUG level.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import SegmentationStorage

from cardiolora.atomic import save_dataset_atomic
from cardiolora.dicom.headers import WarningLog
from cardiolora.dicom.sr_codes import FUNCTION_REQUIRED, INDEXED_KEYS, SCHEME, SPECS
from cardiolora.dicom.sr_content import build_report

__all__ = ["FUNCTION_REQUIRED", "INDEXED_KEYS", "SCHEME", "SPECS", "read_measurement_sr", "write_measurement_sr"]

_LOG = logging.getLogger(__name__)
_SEG_CLASSES = {SegmentationStorage, "1.2.840.10008.5.1.4.1.1.66.7"}  # SEG; label-map SEG (not in pydicom 3.0)


@contextlib.contextmanager
def _quiet(what: str) -> Iterator[None]:
    """Hold back pydicom / highdicom warnings and log records; one DEBUG summary afterwards."""
    with WarningLog(loggers=("pydicom", "highdicom")) as log:
        yield
    if log.records or log.lines():
        _LOG.debug(
            "%s: pydicom/highdicom warnings suppressed (%d log records): %s",
            what,
            len(log.records),
            "; ".join(log.lines(width=240)) or log.records[0].getMessage(),
        )


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
        sr = build_report(segs, by_phase, values, flag_list, phases, trigger, version, series_number)
        out.parent.mkdir(parents=True, exist_ok=True)
        save_dataset_atomic(sr, out)
    return out


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
