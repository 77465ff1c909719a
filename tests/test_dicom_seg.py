"""Tests of cardiolora.dicom.seg: one DICOM SEG per cine, read back with highdicom, checked by dciodvfy."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from conftest import dciodvfy
from pydicom.uid import UID

from cardiolora.data.cine import CineStudy
from cardiolora.dicom.mr_writer import write_dicom_cine
from cardiolora.dicom.seg import SegResult, read_study_seg, write_study_seg

T, Z, Y, X = 3, 3, 32, 28
SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
#: Anonymised-looking UIDs with a leading zero in a component (invalid, but common).
BAD_ROOT = "1.2.826.0.1.3680043.99.0897"
#: The tests themselves read and write such UIDs with pydicom, which warns each time.
pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR:UserWarning")


def _labels() -> np.ndarray:
    """LV / MYO / RV discs, different in every phase and slice (so a mix-up shows)."""
    yy, xx = np.mgrid[0:Y, 0:X]
    label = np.zeros((T, Z, Y, X), dtype=np.uint8)
    for t in range(T):
        for z in range(Z):
            d = np.hypot(yy - 15, xx - 17)
            label[t, z][d < 7 - t + z * 0.5] = 2
            label[t, z][d < 4.5 - t * 0.7 + z * 0.3] = 1
            label[t, z][np.hypot(yy - 14, xx - 5) < 2.5 + z] = 3
    label[-1, -1] = 0  # one empty slice: its frames must still be there
    return label


def _oblique_affine() -> np.ndarray:
    th = np.deg2rad(25.0)
    rot = np.array([[np.cos(th), 0, np.sin(th)], [0, 1, 0], [-np.sin(th), 0, np.cos(th)]])
    affine = np.eye(4)
    affine[:3, :3] = rot * np.array([1.4, 1.25, 8.0])
    affine[:3, 3] = (-40.5, 12.25, 30.0)
    return affine


@pytest.fixture(scope="module")
def cine(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, list[list[Path]], Path]:
    """The labels, the ``[t][z]`` classic MR files of a tiny oblique cine, and a work folder."""
    root = tmp_path_factory.mktemp("seg")
    label = _labels()
    study = CineStudy(
        subject_id="seg-test",
        image=(label * 150.0 + 40.0).astype(np.float32),
        label=label,
        spacing_zyx=(8.0, 1.25, 1.4),
        affine_lps=_oblique_affine(),
        trigger_times_ms=np.arange(T) * 45.0 + 10.0,
        ed_phase=0,
        es_phase=1,
        slice_thickness_mm=7.0,
    )
    write_dicom_cine(study, root / "src", uid_seed="seg")
    files = [[root / "src" / f"IM_{z:03d}_{t:03d}.dcm" for z in range(Z)] for t in range(T)]
    return label, files, root


def _uids(files: list[list[Path]]) -> list[list[str]]:
    return [[str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in row] for row in files]


def _ones() -> list[list[int]]:
    return [[1] * Z for _ in range(T)]


def _write(label: np.ndarray, files: list[list[Path]], out: Path, **kwargs: object) -> SegResult:
    kwargs.setdefault("version", "0.0-test")
    return write_study_seg(
        label,
        files,
        _ones(),
        out,
        trigger_times_ms=[10, 55, 100],
        ed_phase=0,
        es_phase=1,
        parameters={"profile": "quick", "model": "abc123"},
        **kwargs,
    )


# --------------------------------------------------------------------------------------------
# round trips
# --------------------------------------------------------------------------------------------


def test_single_object_round_trip(cine: tuple[np.ndarray, list[list[Path]], Path]) -> None:
    label, files, root = cine
    result = _write(label, files, root / "one" / "seg.dcm")
    assert result.paths == (root / "one" / "seg.dcm",)
    assert [p.name for p in (root / "one").iterdir()] == ["seg.dcm"]  # no temporary file left
    uids = _uids(files)
    assert np.array_equal(read_study_seg(result.paths[0], uids), label)

    ds = pydicom.dcmread(result.paths[0])
    assert ds.SOPClassUID == SEG_STORAGE and ds.SegmentationType == "BINARY"
    assert int(ds.NumberOfFrames) == 3 * T * Z
    assert [int(d.DimensionIndexPointer) for d in ds.DimensionIndexSequence] == [0x0062000B, 0x00209128, 0x00200032]
    contents = [item.FrameContentSequence[0] for item in ds.PerFrameFunctionalGroupsSequence]
    assert sorted({int(c.TemporalPositionIndex) for c in contents}) == list(range(1, T + 1))
    assert all(int(c.DimensionIndexValues[1]) == int(c.TemporalPositionIndex) for c in contents)
    assert len({tuple(c.DimensionIndexValues) for c in contents}) == len(contents)
    assert "ED" in contents[0].FrameLabel
    referenced = {r.ReferencedSOPInstanceUID for s in ds.ReferencedSeriesSequence for r in s.ReferencedInstanceSequence}
    assert referenced == {u for row in uids for u in row}
    assert [s.SegmentLabel for s in ds.SegmentSequence] == ["LV cavity", "LV myocardium", "RV cavity"]
    assert UID(ds.SOPInstanceUID).is_valid and UID(ds.SeriesInstanceUID).is_valid
    assert any("FrameOfReferenceUID" in n and "share" in n for n in result.notes)

    # highdicom reads every phase directly, too
    seg = hd.seg.segread(result.paths[0])
    got = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids[2], combine_segments=True)
    assert np.array_equal(got, label[2])


def test_per_phase_round_trip(cine: tuple[np.ndarray, list[list[Path]], Path]) -> None:
    label, files, root = cine
    series = hd.UID()
    result = _write(label, files, root / "pp" / "seg.dcm", per_phase=True, series_uid=series, series_number=77)
    assert [p.name for p in result.paths] == [f"seg_phase{t:03d}.dcm" for t in range(T)]
    assert np.array_equal(read_study_seg(list(result.paths), _uids(files)), label)
    for t, path in enumerate(result.paths):
        ds = pydicom.dcmread(path)
        assert (ds.SeriesInstanceUID, int(ds.InstanceNumber), int(ds.SeriesNumber)) == (series, t + 1, 77)
        assert ds.ContentLabel == f"PHASE_{t:03d}" and int(ds.NumberOfFrames) == 3 * Z
    assert len({pydicom.dcmread(p).SOPInstanceUID for p in result.paths}) == T


@pytest.fixture(scope="module")
def enhanced(cine: tuple[np.ndarray, list[list[Path]], Path]) -> tuple[Path, list[list[int]]]:
    """The cine as one Legacy Converted Enhanced MR file (highdicom) and its ``[t][z]`` frame numbers."""
    label, files, root = cine
    path = root / "enhanced.dcm"
    classic = [pydicom.dcmread(f) for row in files for f in row]  # frame t * Z + z + 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lce = hd.legacy.LegacyConvertedEnhancedMRImage(
            classic,
            series_instance_uid=hd.UID(),
            series_number=6,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            include_dimension_index=False,
        )
        lce.save_as(path, enforce_file_format=True)
    numbers = [[t * Z + z + 1 for z in range(Z)] for t in range(T)]
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    assert int(ds.NumberOfFrames) == T * Z
    for t, z in ((0, 0), (2, 1)):  # the conversion keeps the order passed
        pos = ds.PerFrameFunctionalGroupsSequence[numbers[t][z] - 1].PlanePositionSequence[0].ImagePositionPatient
        assert np.allclose(pos, pydicom.dcmread(files[t][z]).ImagePositionPatient)
    return path, numbers


@pytest.mark.parametrize("per_phase", [False, True])
def test_enhanced_mr_source_round_trip(
    cine: tuple[np.ndarray, list[list[Path]], Path], enhanced: tuple[Path, list[list[int]]], per_phase: bool
) -> None:
    label, _, root = cine
    path, numbers = enhanced
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    out = root / f"enh{int(per_phase)}" / "seg.dcm"
    result = write_study_seg(
        label, [[path] * Z for _ in range(T)], numbers, out, version="0.0-test", per_phase=per_phase
    )
    uids = [[str(ds.SOPInstanceUID)] * Z for _ in range(T)]
    back = read_study_seg(list(result.paths) if per_phase else result.paths[0], uids, numbers)
    assert np.array_equal(back, label)
    seg = pydicom.dcmread(result.paths[0])
    src = seg.PerFrameFunctionalGroupsSequence[0].DerivationImageSequence[0].SourceImageSequence[0]
    assert src.ReferencedSOPInstanceUID == ds.SOPInstanceUID and int(src.ReferencedFrameNumber) >= 1
    assert src.ReferencedSOPClassUID == ds.SOPClassUID
    assert len(seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence) == 1


# --------------------------------------------------------------------------------------------
# anonymised real-world sources
# --------------------------------------------------------------------------------------------


def _anonymise(files: list[list[Path]], out: Path) -> list[list[Path]]:
    """Copies with impossible dates, empty name / sex, per-file FoR UIDs, leading-zero UIDs."""
    out.mkdir(parents=True, exist_ok=True)
    table = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the invalid UIDs we write on purpose
        for t, row in enumerate(files):
            new_row = []
            for z, path in enumerate(row):
                ds = pydicom.dcmread(path)
                ds.PatientBirthDate, ds.StudyDate, ds.SeriesDate, ds.ContentDate = "00000000", "20120000", "", ""
                ds.PatientName, ds.PatientSex, ds.StudyTime = "", "", "25:99"
                ds.StudyInstanceUID = f"{BAD_ROOT}.1"
                ds.SeriesInstanceUID = f"{BAD_ROOT}.2"
                ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"{BAD_ROOT}.3.0{t}.{z + 1}"
                ds.FrameOfReferenceUID = f"{BAD_ROOT}.4.{t * Z + z + 1}"
                new_row.append(out / path.name)
                ds.save_as(new_row[-1])
            table.append(new_row)
    return table


def test_anonymised_sources(cine: tuple[np.ndarray, list[list[Path]], Path], caplog: pytest.LogCaptureFixture) -> None:
    label, files, root = cine
    anon = _anonymise(files, root / "anon")
    uids = _uids(anon)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pydicom"), warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing may escape: warnings are summarised in the notes
        result = _write(label, anon, root / "anon-seg" / "seg.dcm")
        assert np.array_equal(read_study_seg(result.paths[0], uids), label)
    assert not [r for r in caplog.records if r.name.startswith("pydicom")], "pydicom flooded the log"

    ds = pydicom.dcmread(result.paths[0])
    assert UID(ds.SOPInstanceUID).is_valid and UID(ds.SeriesInstanceUID).is_valid
    assert UID(ds.file_meta.MediaStorageSOPInstanceUID).is_valid
    assert ds.StudyInstanceUID == f"{BAD_ROOT}.1"  # the study's own UID, referenced as it is
    assert ds.FrameOfReferenceUID == f"{BAD_ROOT}.4.1"  # the first slice's
    assert ds.PatientBirthDate == "" and ds.StudyDate == "" and ds.PatientSex == "" and ds.StudyTime == ""
    notes = "\n".join(result.notes)
    assert "FrameOfReferenceUID" in notes and f"{T * Z} different" in notes and "anon/IM_000_000.dcm" in notes
    assert "PatientBirthDate '00000000'" in notes and "StudyDate '20120000'" in notes
    assert len(result.notes) < 12, result.notes  # one line per kind, not per value

    given = hd.UID()
    result = _write(label, anon, root / "anon-seg" / "given.dcm", frame_of_reference_uid=given)
    assert pydicom.dcmread(result.paths[0]).FrameOfReferenceUID == given
    assert any(given in n and "given" in n for n in result.notes)


def test_one_series_per_slice_and_another_study(cine: tuple[np.ndarray, list[list[Path]], Path]) -> None:
    """Scanners that store each slice as its own series; one slice even filed in another study."""
    label, files, root = cine
    other_study = hd.UID()
    table = [[root / "multi" / f"{t}_{z}.dcm" for z in range(Z)] for t in range(T)]
    table[0][0].parent.mkdir()
    for t, z in np.ndindex(T, Z):
        ds = pydicom.dcmread(files[t][z])
        ds.SeriesInstanceUID = f"1.2.826.0.1.3680043.99.5.{z + 1}"
        if z == Z - 1:
            ds.StudyInstanceUID = other_study
        ds.save_as(table[t][z])
    result = _write(label, table, root / "multi-seg" / "seg.dcm")
    assert np.array_equal(read_study_seg(result.paths[0], _uids(table)), label)
    ds = pydicom.dcmread(result.paths[0])
    assert len(ds.ReferencedSeriesSequence) == Z - 1
    (other,) = ds.StudiesContainingOtherReferencedInstancesSequence
    assert other.StudyInstanceUID == other_study
    assert len(other.ReferencedSeriesSequence[0].ReferencedInstanceSequence) == T
    assert any(f"{Z} series of 2 study" in n for n in result.notes)


# --------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------


def test_bad_inputs_name_the_field(cine: tuple[np.ndarray, list[list[Path]], Path]) -> None:
    label, files, root = cine
    out = root / "bad" / "seg.dcm"
    with pytest.raises(ValueError, match="`source_files` must be 2 phases x 3 slices"):
        write_study_seg(label[:2], files, _ones(), out, version="x")
    with pytest.raises(ValueError, match=r"0\.\.3"):
        _write(np.where(label == 3, 4, label).astype(np.uint8), files, out)
    with pytest.raises(ValueError, match="integer"):
        _write(label.astype(np.float32), files, out)
    with pytest.raises(ValueError, match=r"phase 0, slice 0 .*IM_000_000\.dcm.*Rows, Columns"):
        _write(label[..., :-1], files, out)
    numbers = _ones()
    numbers[1][2] = 2
    with pytest.raises(ValueError, match=r"phase 1, slice 2 .*`source_frame_numbers` 2"):
        write_study_seg(label, files, numbers, out, version="x")
    with pytest.raises(ValueError, match="`es_phase`"):
        write_study_seg(label, files, _ones(), out, version="x", es_phase=T)
    with pytest.raises(ValueError, match="`series_uid`"):
        _write(label, files, out, series_uid=f"{BAD_ROOT}.9")
    with pytest.raises(ValueError, match="`trigger_times_ms`"):
        write_study_seg(label, files, _ones(), out, version="x", trigger_times_ms=[1.0])
    dup = [list(row) for row in files]
    dup[2][0] = files[0][0]
    with pytest.raises(ValueError, match=r"phase 2, slice 0 .*same source frame .* as phase 0, slice 0"):
        write_study_seg(label, dup, _ones(), out, version="x")

    copy = root / "bad" / "copy_of_IM_000_000.dcm"  # another file, the same SOPInstanceUID
    copy.parent.mkdir(exist_ok=True)
    copy.write_bytes(files[0][0].read_bytes())
    dup[2][0] = copy
    with pytest.raises(ValueError, match=r"phase 2, slice 0 \(.*copy_of_IM_000_000\.dcm\): the same source frame"):
        write_study_seg(label, dup, _ones(), out, version="x")

    no_geometry = [list(row) for row in files]
    ds = pydicom.dcmread(files[1][1])
    del ds.ImagePositionPatient
    no_geometry[1][1] = root / "bad" / "no_ipp.dcm"
    ds.save_as(no_geometry[1][1])
    with pytest.raises(ValueError, match=r"phase 1, slice 1 .*no_ipp\.dcm.*ImagePositionPatient"):
        write_study_seg(label, no_geometry, _ones(), out, version="x")
    assert not out.exists()


# --------------------------------------------------------------------------------------------
# the IOD, checked by dicom3tools
# --------------------------------------------------------------------------------------------


def test_dciodvfy_reports_no_errors(
    cine: tuple[np.ndarray, list[list[Path]], Path], enhanced: tuple[Path, list[list[int]]]
) -> None:
    label, files, root = cine
    path, numbers = enhanced
    written = {
        "single": _write(label, files, root / "iod" / "seg.dcm").paths[0],
        "per-phase": _write(label, files, root / "iod" / "pp.dcm", per_phase=True).paths[1],
        "enhanced source": write_study_seg(
            label, [[path] * Z] * T, numbers, root / "iod" / "enh.dcm", version="0.0-test"
        ).paths[0],
    }
    for name, seg_path in written.items():
        errors, warns = dciodvfy(seg_path)
        print(f"dciodvfy {name}: {len(errors)} error(s), warnings: {warns}")
        assert errors == [], f"{name}: {errors}"


def test_dciodvfy_on_anonymised_sources_flags_only_their_uids(cine: tuple[np.ndarray, list[list[Path]], Path]) -> None:
    """The only errors are the sources' own leading-zero UIDs, which the SEG must reference as they are."""
    label, files, root = cine
    anon = _anonymise(files, root / "anon-iod")
    errors, warns = dciodvfy(_write(label, anon, root / "iod" / "anon.dcm").paths[0])
    print(f"dciodvfy anonymised: {len(errors)} error(s), warnings: {sorted(set(warns))}")
    other = [e for e in errors if BAD_ROOT not in e and "invalid data values for Value Representations" not in e]
    assert other == []
    assert any("Referenced SOP Instance UID" in e for e in errors)
