"""Tests of cardiolora.dicom.sr: the TID 1500 measurement report written over a phantom SEG.

A tiny cine (3 phases x 2 slices x 32 x 32, LV shrinking from phase 0 to 2) is written as MR
Image Storage files, segmented into per-phase SEG instances by the site's SEG writer, measured
with :func:`cardiolora.clinical.cardiac_function`, and reported as an SR that is read back with
highdicom and with :func:`read_measurement_sr`, and checked with dciodvfy when installed.
"""

from __future__ import annotations

import logging
import math
import re
import shutil
import warnings
from pathlib import Path
from types import SimpleNamespace

import highdicom as hd
import numpy as np
import pydicom
import pytest
from conftest import dciodvfy
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence

from cardiolora.clinical import cardiac_function
from cardiolora.data.cine import CineStudy
from cardiolora.dicom.mr_writer import write_dicom_cine
from cardiolora.dicom.sr import SPECS, read_measurement_sr, write_measurement_sr

try:
    from cardiolora.dicom.seg import write_study_seg
except ImportError:  # older layout: per-phase instances only
    write_study_seg = None

T, Z, N = 3, 2, 32
TRIGGER = np.arange(T) * 40.0 + 5.0
VALID_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
FOREIGN = "1.2.826.0.1.3680043.99.0897"  # anonymiser root with a leading-zero component


def _unit(key: str) -> str:
    """The UCUM unit a function key is in, from its suffix."""
    for suffix, unit in (
        ("_ml_m2", "ml/m2"),
        ("_g_m2", "g/m2"),
        ("bsa_m2", "m2"),
        ("_ml", "ml"),
        ("_pct", "%"),
        ("_g", "g"),
    ):
        if key.endswith(suffix):
            return unit
    raise KeyError(key)


def _study() -> CineStudy:
    yy, xx = np.mgrid[0:N, 0:N]
    label = np.zeros((T, Z, N, N), np.uint8)
    for t in range(T):
        d = np.hypot(yy - 16, xx - 18)
        for z in range(Z):
            label[t, z][d < 8 - 1.5 * t + 2] = 2
            label[t, z][d < 8 - 1.5 * t] = 1
            label[t, z][np.hypot(yy - 16, xx - 5) < 4 - t] = 3
    affine = np.diag([1.5, 1.5, 8.0, 1.0])
    affine[:3, 3] = (-20.0, -30.0, 10.0)
    image = np.array([50.0, 600.0, 250.0, 550.0], np.float32)[label]
    return CineStudy("sr-001", image, label, (8.0, 1.5, 1.5), affine, TRIGGER.copy(), 0, T - 1)


def _write_cine(root: Path, edit=None) -> SimpleNamespace:
    """MR files ([t][z] table), per-phase SEG files and the function of a fresh phantom in `root`."""
    study = _study()
    table: list[list[str]] = [[""] * Z for _ in range(T)]
    for path in write_dicom_cine(study, root / "SA", uid_seed=root.name):
        z, t = (int(x) for x in path.stem.split("_")[1:])
        table[t][z] = str(path)
    if edit is not None:
        edit(table, before_seg=True)
    segs, single = _write_segs(study.label, table, root / "seg")
    if edit is not None:
        edit([[s] for s in segs + ([single] if single else [])] + table, before_seg=False)
    function = cardiac_function(study.label, study.spacing_zyx, height_cm=172.0, weight_kg=68.0)
    assert (function["ed_phase"], function["es_phase"]) == (0, T - 1)
    return SimpleNamespace(root=root, table=table, segs=segs, single=single, function=function)


def _write_segs(label: np.ndarray, table: list[list[str]], out: Path) -> tuple[list[str], str | None]:
    """Per-phase SEG instances and (when the project's writer makes one) one SEG for the whole cine."""
    frames = [[1] * Z for _ in range(T)]
    kwargs = {"version": "0.0-test", "trigger_times_ms": TRIGGER, "ed_phase": 0, "es_phase": T - 1}
    if write_study_seg is None:
        from cardiolora.site.dicom_seg import write_cine_seg

        return [str(p) for p in write_cine_seg(label, table, frames, out, **kwargs)], None
    per_phase = write_study_seg(label, table, frames, out / "seg.dcm", per_phase=True, **kwargs).paths
    (single,) = write_study_seg(label, table, frames, out / "cine_seg.dcm", **kwargs).paths
    return [str(p) for p in per_phase], str(single)


@pytest.fixture(scope="module")
def cine(tmp_path_factory):
    return _write_cine(tmp_path_factory.mktemp("sr_cine"))


def _evidence(c: SimpleNamespace) -> dict[int, list[str]]:
    ed, es = c.function["ed_phase"], c.function["es_phase"]
    return {ed: c.table[ed], es: c.table[es]}


@pytest.fixture(scope="module")
def report(cine):
    path = write_measurement_sr(
        cine.segs,
        _evidence(cine),
        cine.function,
        cine.root / "out" / "sr.dcm",
        version="0.0-test",
        flags=["lv_ef_out_of_range", "rv_small"],
        trigger_times_ms=TRIGGER,
    )
    return path, read_measurement_sr(path)


def _items(ds: Dataset):
    """Every content item of an SR tree, depth first."""
    for item in ds.get("ContentSequence") or []:
        yield item
        yield from _items(item)


# --------------------------------------------------------------------------------------------
# round trip
# --------------------------------------------------------------------------------------------


def test_values_units_phases_and_flags_round_trip(cine, report):
    _, back = report
    expected = {k: float(v) for k, v in cine.function.items() if k in SPECS}
    assert set(back["values"]) == set(expected) and len(expected) == 17
    for key, value in expected.items():
        assert back["values"][key] == value, key  # FloatingPointValue: bit-exact
        assert back["units"][key] == _unit(key), key
    assert back["lv_ef_defined"] and back["rv_ef_defined"]
    assert back["ed"] == {"phase": 0, "trigger_time_ms": TRIGGER[0]}
    assert back["es"] == {"phase": T - 1, "trigger_time_ms": TRIGGER[T - 1]}
    assert back["flags"] == ["lv_ef_out_of_range", "rv_small"]


def test_highdicom_reads_the_report_and_its_segment_references(cine, report):
    path, _ = report
    sr = hd.sr.srread(path)
    assert isinstance(sr, hd.sr.Comprehensive3DSR)
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"
    segs = [pydicom.dcmread(p, stop_before_pixels=True) for p in cine.segs]
    ed_seg, es_seg = segs[0].SOPInstanceUID, segs[T - 1].SOPInstanceUID
    groups = sr.content.get_volumetric_roi_measurement_groups()
    seen = {}
    for group in groups:
        ref = group.referenced_segment[0].ReferencedSOPSequence[0]
        (m,) = group.get_measurements()
        seen[group.tracking_identifier] = (
            ref.ReferencedSOPInstanceUID,
            int(ref.ReferencedSegmentNumber),
            m.value,
            m.unit.value,
        )
    f = cine.function
    assert seen == {
        "LV cavity ED": (ed_seg, 1, f["lv_edv_ml"], "ml"),
        "LV cavity ES": (es_seg, 1, f["lv_esv_ml"], "ml"),
        "LV myocardium ED": (ed_seg, 2, f["lv_mass_g"], "g"),
        "RV cavity ED": (ed_seg, 3, f["rv_edv_ml"], "ml"),
        "RV cavity ES": (es_seg, 3, f["rv_esv_ml"], "ml"),
    }
    evidence = {
        i.ReferencedSOPInstanceUID
        for s in sr.CurrentRequestedProcedureEvidenceSequence
        for r in s.ReferencedSeriesSequence
        for i in r.ReferencedSOPSequence
    }
    mr = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for t in (0, T - 1) for p in cine.table[t]}
    assert {ed_seg, es_seg} | mr == evidence  # the two SEGs used and the ED / ES sources
    names = {
        (i.ConceptNameCodeSequence[0].CodingSchemeDesignator, i.ConceptNameCodeSequence[0].CodeValue)
        for i in _items(sr)
        if i.ValueType == "NUM"
    }
    assert {
        ("LN", "8821-1"),
        ("LN", "8811-2"),
        ("LN", "8818-7"),
        ("LN", "18087-7"),
        ("SCT", "90096001"),
        ("DCM", "122666"),
    } <= names


def test_read_back_segment_references(cine, report):
    _, back = report
    seg_uid = [pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in cine.segs]
    mr_uid = [[pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in row] for row in cine.table]
    refs = {s["group"]: s for s in back["segments"]}
    for group, phase, number, key in (
        ("LV cavity ED", 0, 1, "lv_edv_ml"),
        ("LV cavity ES", T - 1, 1, "lv_esv_ml"),
        ("LV myocardium ED", 0, 2, "lv_mass_g"),
        ("RV cavity ED", 0, 3, "rv_edv_ml"),
        ("RV cavity ES", T - 1, 3, "rv_esv_ml"),
    ):
        ref = refs[group]
        assert (ref["sop_instance_uid"], ref["segment_number"], ref["key"]) == (seg_uid[phase], number, key)
        assert ref["frame_numbers"] is None  # per-phase instance: the whole segment
        assert sorted(ref["source_sop_instance_uids"]) == sorted(mr_uid[phase])


def test_new_uids_are_valid_and_fresh(cine, report, tmp_path):
    path, _ = report
    again = write_measurement_sr(cine.segs, _evidence(cine), cine.function, tmp_path / "again.dcm", version="0.0-test")
    a, b = pydicom.dcmread(path), pydicom.dcmread(again)
    for ds in (a, b):
        own = [ds.SOPInstanceUID, ds.SeriesInstanceUID, ds.file_meta.MediaStorageSOPInstanceUID]
        own += [i.UID for i in _items(ds) if i.ValueType == "UIDREF"]
        assert all(VALID_UID.match(u) and len(u) <= 64 for u in own), own
    assert a.SOPInstanceUID != b.SOPInstanceUID and a.SeriesInstanceUID != b.SeriesInstanceUID
    assert a.StudyInstanceUID == b.StudyInstanceUID == pydicom.dcmread(cine.table[0][0]).StudyInstanceUID
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_dciodvfy_reports_no_error(report):
    path, _ = report
    errors, warns = dciodvfy(path)
    print(f"dciodvfy: {len(errors)} errors, {len(warns)} warnings:", *sorted(set(warns)), sep="\n  ")
    assert errors == []


# --------------------------------------------------------------------------------------------
# NaN, flags, SEG layouts, anonymised sources
# --------------------------------------------------------------------------------------------


def test_undefined_ef_is_omitted_not_written_as_nan(cine, tmp_path):
    function = dict(cine.function, lv_ef_pct=math.nan, lv_ef_defined=False)
    path = write_measurement_sr(cine.segs, _evidence(cine), function, tmp_path / "nan.dcm", version="0.0-test")
    ds = pydicom.dcmread(path)
    nums = [i for i in _items(ds) if i.ValueType == "NUM"]
    assert all(math.isfinite(float(i.MeasuredValueSequence[0].NumericValue)) for i in nums)
    assert all(math.isfinite(i.MeasuredValueSequence[0].get("FloatingPointValue", 0.0)) for i in nums)
    assert not [i for i in nums if i.ConceptNameCodeSequence[0].CodeValue == "8811-2"]
    back = read_measurement_sr(path)
    assert math.isnan(back["values"]["lv_ef_pct"]) and back["lv_ef_defined"] is False
    assert back["rv_ef_defined"] and back["values"]["rv_ef_pct"] == cine.function["rv_ef_pct"]
    hd.sr.srread(path)  # still readable by highdicom
    if shutil.which("dciodvfy"):
        assert dciodvfy(path)[0] == []


def test_flags_empty_long_and_malformed(cine, tmp_path):
    path = write_measurement_sr(cine.segs, _evidence(cine), cine.function, tmp_path / "f.dcm", version="v")
    assert read_measurement_sr(path)["flags"] == []
    long = ["a_rather_long_plausibility_flag_name_beyond_sixteen", "x"]
    path = write_measurement_sr(cine.segs, _evidence(cine), cine.function, tmp_path / "g.dcm", version="v", flags=long)
    assert read_measurement_sr(path)["flags"] == long
    for bad in ("one string", [""], ["back\\slash"], [" padded"], ["x" * 65], [3]):
        with pytest.raises(ValueError, match="flags"):
            write_measurement_sr(cine.segs, _evidence(cine), cine.function, tmp_path / "h.dcm", version="v", flags=bad)


def _check_phase_references(back: dict, seg_uid: str, c: SimpleNamespace) -> None:
    """Each group references the one SEG's segment, with exactly its phase's MR images as sources."""
    mr_uid = [[pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in row] for row in c.table]
    assert len(back["segments"]) == 5
    for ref in back["segments"]:
        phase = 0 if ref["group"].endswith("ED") else T - 1
        assert (ref["sop_instance_uid"], ref["frame_numbers"]) == (seg_uid, None)
        assert sorted(ref["source_sop_instance_uids"]) == sorted(mr_uid[phase])


def test_project_single_object_seg(cine, tmp_path):
    """The project's one-SEG-per-cine writer: the phase is given by the source images."""
    if cine.single is None:
        pytest.skip("cardiolora.dicom.seg.write_study_seg (one SEG per cine) is not available")
    seg = pydicom.dcmread(cine.single, stop_before_pixels=True)
    path = write_measurement_sr(cine.single, _evidence(cine), cine.function, tmp_path / "s.dcm", version="0.0-test")
    back = read_measurement_sr(path)
    _check_phase_references(back, seg.SOPInstanceUID, cine)
    assert back["values"] == {k: float(v) for k, v in cine.function.items() if k in SPECS}
    hd.sr.srread(path)
    if shutil.which("dciodvfy"):
        assert dciodvfy(path)[0] == []


def test_merged_multiphase_seg(cine, tmp_path):
    """One SEG holding every phase (metadata merged from the per-phase instances), all MR as evidence."""
    parts = [pydicom.dcmread(p, stop_before_pixels=True) for p in cine.segs]
    merged = parts[0].copy()
    merged.SOPInstanceUID = hd.UID()
    merged.PerFrameFunctionalGroupsSequence = DicomSequence(
        [item for part in parts for item in part.PerFrameFunctionalGroupsSequence]
    )
    merged.NumberOfFrames = len(merged.PerFrameFunctionalGroupsSequence)
    merged.ReferencedSeriesSequence[0].ReferencedInstanceSequence = DicomSequence(
        [i for part in parts for i in part.ReferencedSeriesSequence[0].ReferencedInstanceSequence]
    )
    path = write_measurement_sr(
        merged,
        [p for row in cine.table for p in row],
        cine.function,
        tmp_path / "m.dcm",
        version="0.0-test",
        trigger_times_ms=TRIGGER,
    )
    back = read_measurement_sr(path)
    _check_phase_references(back, merged.SOPInstanceUID, cine)
    assert back["values"]["lv_edv_ml"] == cine.function["lv_edv_ml"]
    sr = hd.sr.srread(path)
    evidence = {
        i.ReferencedSOPInstanceUID
        for s in sr.CurrentRequestedProcedureEvidenceSequence
        for r in s.ReferencedSeriesSequence
        for i in r.ReferencedSOPSequence
    }
    assert len(evidence) == 1 + T * Z  # the SEG and every MR image given
    if shutil.which("dciodvfy"):
        assert dciodvfy(path)[0] == []


def _anonymise(table, before_seg):
    """Before the SEG: foreign leading-zero UIDs, empty name / sex; after it: invalid dates."""
    for row in table:
        for path in row:
            ds = pydicom.dcmread(path)
            if before_seg:
                z, t = Path(path).stem.split("_")[1:]
                ds.PatientName, ds.PatientSex = "", ""
                ds.StudyInstanceUID, ds.SeriesInstanceUID = f"{FOREIGN}.1", f"{FOREIGN}.2"
                ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"{FOREIGN}.3.{z}.0{t}"
            else:
                ds.PatientBirthDate, ds.StudyDate = "00000000", "20120000"
            ds.save_as(path)


def test_anonymised_sources(tmp_path, caplog):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fixture's own edits of invalid values
        c = _write_cine(tmp_path / "anon", edit=_anonymise)
    flat = [p for row in c.table for p in row]  # phases from TemporalPositionIdentifier
    caplog.clear()
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        path = write_measurement_sr(c.segs, flat, c.function, tmp_path / "anon.dcm", version="0.0-test", flags=["f"])
        back = read_measurement_sr(path)
    assert [str(w.message) for w in caught] == [] and caplog.records == []
    assert back["study_instance_uid"] == f"{FOREIGN}.1"  # referenced as it is
    assert back["values"]["lv_edv_ml"] == c.function["lv_edv_ml"] and back["flags"] == ["f"]
    assert back["ed"]["phase"] == 0 and back["es"]["phase"] == T - 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path)
        own = [ds.SOPInstanceUID, ds.SeriesInstanceUID] + [i.UID for i in _items(ds) if i.ValueType == "UIDREF"]
        assert all(VALID_UID.match(u) and not u.startswith(FOREIGN) for u in own), own
        assert (ds.PatientBirthDate, ds.StudyDate, str(ds.PatientName), ds.PatientSex) == ("", "", "", "")
        hd.sr.srread(path)
    if shutil.which("dciodvfy"):
        errors, _ = dciodvfy(path)  # only the foreign UIDs, referenced unchanged (+ dciodvfy's summary line)
        summary = "Error - Dicom dataset contains invalid data values for Value Representations"
        assert errors and all(("Leading zeroes" in e and FOREIGN in e) or e == summary for e in errors), errors


# --------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change, field",
    [
        (lambda f: f.pop("lv_mass_g"), "lv_mass_g"),
        (lambda f: f.pop("ed_phase"), "ed_phase"),
        (lambda f: f.update(rv_edv_ml="12"), "rv_edv_ml"),
        (lambda f: f.update(lv_esv_ml=math.inf), "lv_esv_ml"),
        (lambda f: f.update(lv_edv_ml=-1.0), "lv_edv_ml"),
        (lambda f: f.update(es_phase=1.5), "es_phase"),
        (lambda f: f.update(bsa_m2=None), "bsa_m2"),
    ],
)
def test_bad_function_raises_naming_the_field(cine, tmp_path, change, field):
    function = dict(cine.function)
    change(function)
    with pytest.raises(ValueError, match=field):
        write_measurement_sr(cine.segs, _evidence(cine), function, tmp_path / "x.dcm", version="v")
    assert not (tmp_path / "x.dcm").exists()


def test_bad_seg_evidence_and_arguments(cine, tmp_path):
    out = tmp_path / "x.dcm"
    with pytest.raises(ValueError, match="seg_dataset_or_path.*not a DICOM SEG"):
        write_measurement_sr(cine.table[0][0], _evidence(cine), cine.function, out, version="v")
    with pytest.raises(ValueError, match="seg_dataset_or_path"):
        write_measurement_sr(tmp_path / "missing.dcm", _evidence(cine), cine.function, out, version="v")
    with pytest.raises(ValueError, match="seg_dataset_or_path.*ES phase"):  # only the ED instance
        write_measurement_sr(cine.segs[0], _evidence(cine), cine.function, out, version="v")
    with pytest.raises(ValueError, match="evidence.*ES phase"):
        write_measurement_sr(cine.segs, {0: cine.table[0]}, cine.function, out, version="v")
    for bad in ([42], 42):
        with pytest.raises(ValueError, match="evidence"):
            write_measurement_sr(cine.segs, bad, cine.function, out, version="v")
    with pytest.raises(ValueError, match="seg_dataset_or_path"):
        write_measurement_sr(3.5, _evidence(cine), cine.function, out, version="v")
    with pytest.raises(ValueError, match="version"):
        write_measurement_sr(cine.segs, _evidence(cine), cine.function, out, version="")
    with pytest.raises(ValueError, match="out_path"):
        write_measurement_sr(cine.segs, _evidence(cine), cine.function, tmp_path, version="v")
    for bad in ([0.0], ["a", "b", "c"]):
        with pytest.raises(ValueError, match="trigger_times_ms"):
            write_measurement_sr(cine.segs, _evidence(cine), cine.function, out, version="v", trigger_times_ms=bad)
    with pytest.raises(ValueError, match="path"):
        read_measurement_sr(cine.segs[0])
    assert not out.exists()
