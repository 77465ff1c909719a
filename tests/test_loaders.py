"""Tests of cardiolora.data.loaders and the format modules (acdc, acdc_h5, mnms2): indexers,
layout detection, voxel loading and bad input.

Two kinds of tests:

* always run: tiny files written here in `tmp_path` in each layout (ACDC official NIfTI, ACDC
  HDF5 + patients.csv, M&Ms-2 with dataset_information.csv and two vendors), and every bad
  input the loaders must report;
* real data (marker ``realdata``): the ACDC data in ``../shared/data`` read in place, skipped
  with a reason when the folder is absent (a fresh clone has no ``../shared``).
"""

from __future__ import annotations

import gzip
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from cardiolora.data.acdc import index_acdc
from cardiolora.data.acdc_h5 import index_acdc_h5
from cardiolora.data.loaders import detect_layout, index_dataset, load_case, load_many
from cardiolora.data.mnms2 import index_mnms2
from cardiolora.data.records import CaseRecord, DataError, IndexResult, LoadResult, Problem
from cardiolora.labels import LV, MYO, RV

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# Tiny phantom geometry: distinct sizes on every axis so that a wrong transpose fails.
NZ, NY, NX = 3, 16, 20
SPACING_ZYX = (8.0, 1.5, 1.25)


def phantom_label(nz: int = NZ, shift: int = 0) -> np.ndarray:
    """(Z, Y, X) label in the PROJECT convention: LV disc in a MYO ring, RV crescent beside it."""
    yy, xx = np.mgrid[0:NY, 0:NX]
    r = np.hypot(yy - 8, xx - 7)
    sl = np.zeros((NY, NX), np.uint8)
    sl[(r > 3 - shift) & (r <= 5)] = MYO
    sl[r <= 3 - shift] = LV
    sl[(np.hypot(yy - 8, xx - 9) <= 8) & (r > 5) & (xx >= 12) & (xx <= 17)] = RV
    return np.repeat(sl[None], nz, axis=0)


def to_acdc(label: np.ndarray) -> np.ndarray:
    """Project convention -> ACDC convention (1 RV, 2 MYO, 3 LV)."""
    return np.array([0, 3, 2, 1], np.uint8)[label]


def phantom_image(label: np.ndarray) -> np.ndarray:
    """Integer intensities that encode the position, so that the orientation can be checked."""
    z, y, x = np.indices(label.shape)
    return (label.astype(np.int16) * 100 + z * 7 + y * 3 + x).astype(np.int16)


def save_nifti(
    path: Path,
    arr_zyx: np.ndarray,
    spacing_zyx: tuple[float, float, float] = SPACING_ZYX,
    affine: np.ndarray | None = None,
    gz: bool = True,
) -> Path:
    """Write a (Z, Y, X) array as NIfTI (X, Y, Z). Without `affine`, an RAS affine with the spacing."""
    sz, sy, sx = spacing_zyx
    if affine is None:
        affine = np.diag([-sx, -sy, sz, 1.0])
    img = nib.Nifti1Image(np.asarray(arr_zyx).transpose(2, 1, 0), affine)
    img.header.set_zooms((sx, sy, sz) + tuple(img.header.get_zooms()[3:]))
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    return path


def make_acdc(root: Path, n: int = 2) -> Path:
    """Official ACDC layout. Like the real files: affine diag(-1, -1, 1) and spacing in pixdim."""
    for i in range(1, n + 1):
        pid = f"patient{i:03d}"
        pdir = root / pid
        pdir.mkdir(parents=True)
        es = 9 + i
        group = "DCM" if i % 2 else "NOR"
        (pdir / "Info.cfg").write_text(f"ED: 1\nES: {es}\nGroup: {group}\nHeight: 17{i}.0\nNbFrame: 30\nWeight: 7{i}\n")
        for frame, shift in ((1, 0), (es, 1)):
            label = to_acdc(phantom_label(shift=shift))
            affine = np.diag([-1.0, -1.0, 1.0, 1.0])
            save_nifti(pdir / f"{pid}_frame{frame:02d}.nii.gz", phantom_image(label), affine=affine)
            save_nifti(pdir / f"{pid}_frame{frame:02d}_gt.nii.gz", label, affine=affine)
    return root


def make_acdc_h5(root: Path, n: int = 2) -> Path:
    """ACDC HDF5 layout: patients.csv + patientNNN_frameXX.h5 with image/label/scribble."""
    root.mkdir(parents=True, exist_ok=True)
    lines = ["patient,group,ed_frame,es_frame,n_frames,height_cm,weight_kg"]
    for i in range(1, n + 1):
        pid = f"patient{i:03d}"
        es = 9 + i
        lines.append(f"{pid},{'DCM' if i % 2 else 'NOR'},1,{es},30,17{i}.0,7{i}")
        for frame, shift in ((1, 0), (es, 1)):
            label = to_acdc(phantom_label(shift=shift))
            with h5py.File(root / f"{pid}_frame{frame:02d}.h5", "w") as fh:
                fh["image"] = phantom_image(label).astype(np.float32) / 400.0
                fh["label"] = label
                fh["scribble"] = np.zeros(label.shape, np.uint16)
    (root / "patients.csv").write_text("\n".join(lines) + "\n")
    return root


def make_mnms2(root: Path, n: int = 2, csv_in_parent: bool = False, padded: bool = True) -> Path:
    """M&Ms-2 layout with two vendors; returns the folder to index (root, or root/dataset)."""
    vendors = [("SIEMENS", "Avanto", 1.5), ("GE", "Signa", 3.0)]
    lines = ["SUBJECT_CODE,DISEASE,SEX,AGE,VENDOR,SCANNER,FIELD"]
    for i in range(1, n + 1):
        vendor, scanner, field_t = vendors[(i - 1) % 2]
        lines.append(f"{i},{'NOR' if i % 2 else 'LV'},M,{40 + i},{vendor},{scanner},{field_t}")
        name = f"{i:03d}" if padded else str(i)
        sdir = root / "dataset" / name
        for phase, shift in (("ED", 0), ("ES", 1)):
            label = phantom_label(shift=shift)
            save_nifti(sdir / f"{name}_SA_{phase}.nii.gz", phantom_image(label))
            save_nifti(sdir / f"{name}_SA_{phase}_gt.nii.gz", label)
        save_nifti(sdir / f"{name}_LA_ED.nii.gz", phantom_image(phantom_label(nz=1)))
    (root / "dataset_information.csv").write_text("\n".join(lines) + "\n")
    return root / "dataset" if csv_in_parent else root


MAKERS: dict[str, Callable[..., Path]] = {"acdc": make_acdc, "acdc_h5": make_acdc_h5, "mnms2": make_mnms2}
INDEXERS = {"acdc": index_acdc, "acdc_h5": index_acdc_h5, "mnms2": index_mnms2}


def enclosure(label: np.ndarray, value: int) -> float:
    """Fraction of the in-plane outer boundary of `label == value` that is myocardium."""
    structure = np.zeros((3, 3, 3), bool)
    structure[1] = ndimage.generate_binary_structure(2, 1)
    mask = label == value
    ring = ndimage.binary_dilation(mask, structure) & ~mask
    return float((label[ring] == MYO).mean())


# --------------------------------------------------------------------------------------------
# CaseRecord


RECORDS = {
    "acdc": CaseRecord(
        "patient001_ED",
        "patient001",
        "ED",
        "/d/p1_frame01.nii.gz",
        "/d/p1_frame01_gt.nii.gz",
        "acdc",
        group="DCM",
        meta={"frame": 1, "height_cm": 184.0, "weight_kg": None},
    ),
    "no_label": CaseRecord("patient001_ES", "patient001", "ES", "/d/p1_frame12.nii.gz", None, "acdc"),
    "mnms2": CaseRecord(
        "001_ES",
        "001",
        "ES",
        "/d/001_SA_ES.nii.gz",
        "/d/001_SA_ES_gt.nii.gz",
        "mnms2",
        group="NOR",
        vendor="GE",
        meta={"scanner": "Signa", "field": 3.0},
    ),
}


@pytest.mark.parametrize("name", sorted(RECORDS))
def test_record_json_roundtrip(name: str) -> None:
    record = RECORDS[name]
    data = json.loads(json.dumps(record.to_dict()))
    assert CaseRecord.from_dict(data) == record
    assert {record, CaseRecord.from_dict(data)} == {record}  # hashable despite the meta dict
    data["meta"]["extra"] = 1  # to_dict copies meta
    assert "extra" not in record.meta


RECORD_ILL = [
    ("missing_key", lambda d: d.pop("image"), "missing required keys"),
    ("unknown_key", lambda d: d.update(spacing=1.0), "unknown keys"),
    ("bad_phase", lambda d: d.update(phase="MID"), "`phase`"),
    ("bad_source", lambda d: d.update(source="kaggle"), "`source`"),
    ("empty_case_id", lambda d: d.update(case_id=""), "`case_id`"),
    ("label_not_str", lambda d: d.update(label=3), "`label`"),
    ("meta_not_dict", lambda d: d.update(meta=[1]), "`meta`"),
]


@pytest.mark.parametrize("name,mutate,match", RECORD_ILL, ids=[c[0] for c in RECORD_ILL])
def test_record_ill(name: str, mutate: Callable[[dict], object], match: str) -> None:
    data = RECORDS["acdc"].to_dict()
    mutate(data)
    if name == "meta_not_dict":
        with pytest.raises(ValueError, match=match):
            CaseRecord(**data)
        return
    with pytest.raises(ValueError, match=match):
        CaseRecord.from_dict(data)


# --------------------------------------------------------------------------------------------
# indexing the three layouts


INDEX_CASES = [
    # layout, expected patients, groups, vendors
    ("acdc", ["patient001", "patient002"], {"DCM", "NOR"}, {None}),
    ("acdc_h5", ["patient001", "patient002"], {"DCM", "NOR"}, {None}),
    ("mnms2", ["001", "002"], {"NOR", "LV"}, {"SIEMENS", "GE"}),
]


@pytest.mark.parametrize("layout,patients,groups,vendors", INDEX_CASES, ids=[c[0] for c in INDEX_CASES])
def test_index_layouts(tmp_path: Path, layout: str, patients: list[str], groups: set, vendors: set) -> None:
    root = MAKERS[layout](tmp_path / layout)
    records = INDEXERS[layout](root)
    assert isinstance(records, IndexResult) and records.problems == []
    assert records.patient_ids == patients
    assert [r.case_id for r in records] == [f"{p}_{ph}" for p in patients for ph in ("ED", "ES")]
    assert {r.source for r in records} == {layout}
    assert {r.group for r in records} == groups
    assert {r.vendor for r in records} == vendors
    assert all(Path(r.image).is_file() and r.label is not None and Path(r.label).is_file() for r in records)
    assert detect_layout(root) == layout
    assert index_dataset(root) == records
    assert index_dataset(root, layout=layout) == records
    json.dumps([r.to_dict() for r in records])  # a MONAI datalist


@pytest.mark.parametrize("layout", ["acdc", "acdc_h5"])
def test_index_acdc_meta(tmp_path: Path, layout: str) -> None:
    records = INDEXERS[layout](MAKERS[layout](tmp_path / layout))
    by_id = {r.case_id: r for r in records}
    assert by_id["patient002_ED"].meta == {"frame": 1, "n_frames": 30, "height_cm": 172.0, "weight_kg": 72.0}
    assert by_id["patient002_ES"].meta["frame"] == 11
    assert by_id["patient002_ES"].image.endswith("patient002_frame11" + (".h5" if layout == "acdc_h5" else ".nii.gz"))


def test_index_mnms2_meta(tmp_path: Path) -> None:
    records = index_mnms2(make_mnms2(tmp_path / "mnms2"))
    r = records[2]
    assert (r.case_id, r.group, r.vendor) == ("002_ED", "LV", "GE")
    assert r.meta == {"subject_code": 2, "sex": "M", "age": 42, "scanner": "Signa", "field": 3.0}
    assert r.image.endswith("002_SA_ED.nii.gz") and r.label is not None and r.label.endswith("002_SA_ED_gt.nii.gz")


MNMS2_VARIANTS = [
    # csv_in_parent, padded
    (False, True),
    (True, True),
    (False, False),
    (True, False),
]


@pytest.mark.parametrize("csv_in_parent,padded", MNMS2_VARIANTS)
def test_index_mnms2_variants(tmp_path: Path, csv_in_parent: bool, padded: bool) -> None:
    root = make_mnms2(tmp_path / "MnM2", csv_in_parent=csv_in_parent, padded=padded)
    records = index_mnms2(root)
    assert records.patient_ids == ["001", "002"] and records.problems == []
    assert {r.vendor for r in records} == {"SIEMENS", "GE"}
    assert detect_layout(root) == "mnms2"


def test_index_acdc_official_subfolders(tmp_path: Path) -> None:
    make_acdc(tmp_path / "database" / "training", n=2)
    make_acdc(tmp_path / "database" / "testing_tmp", n=1)
    (tmp_path / "database" / "testing_tmp").rename(tmp_path / "database" / "testing")
    shutil.move(tmp_path / "database" / "testing" / "patient001", tmp_path / "database" / "testing" / "patient101")
    for f in sorted((tmp_path / "database" / "testing" / "patient101").iterdir()):
        f.rename(f.with_name(f.name.replace("patient001", "patient101")))
    records = index_acdc(tmp_path / "database")
    assert records.patient_ids == ["patient001", "patient002", "patient101"]
    assert {r.meta["subset"] for r in records} == {"training", "testing"}


@pytest.mark.parametrize("layout", ["acdc", "mnms2"])
def test_index_without_labels(tmp_path: Path, layout: str) -> None:
    root = MAKERS[layout](tmp_path / layout)
    for gt in root.rglob("*_gt.nii.gz"):
        gt.unlink()
    records = INDEXERS[layout](root, require_labels=False)
    assert len(records) == 4 and all(r.label is None for r in records)
    case = load_case(records[0])
    assert case.label is None and case.image.shape == (NZ, NY, NX)


# Each bad input: (name, layout, breaker(root) -> None, fragment of the path at fault,
#                  fragment of the reason, number of records left with on_error="skip").
def _rm(rel: str) -> Callable[[Path], None]:
    return lambda root: (root / rel).unlink()


def _write(rel: str, text: str) -> Callable[[Path], None]:
    return lambda root: (root / rel).write_text(text)


def _append(rel: str, text: str) -> Callable[[Path], None]:
    return lambda root: (root / rel).write_text((root / rel).read_text() + text)


INDEX_ILL = [
    (
        "acdc_missing_label",
        "acdc",
        _rm("patient002/patient002_frame11_gt.nii.gz"),
        "patient002_frame11_gt.nii.gz",
        "label file of ES",
        3,
    ),
    (
        "acdc_missing_image",
        "acdc",
        _rm("patient001/patient001_frame01.nii.gz"),
        "patient001_frame01.nii.gz",
        "image of ED",
        3,
    ),
    ("acdc_missing_info", "acdc", _rm("patient001/Info.cfg"), "patient001/Info.cfg", "Info.cfg not found", 2),
    (
        "acdc_info_not_int",
        "acdc",
        _write("patient001/Info.cfg", "ED: one\nES: 10\n"),
        "patient001/Info.cfg",
        "'ED' must be an integer",
        2,
    ),
    (
        "acdc_info_no_es",
        "acdc",
        _write("patient002/Info.cfg", "ED: 1\nGroup: NOR\n"),
        "patient002/Info.cfg",
        "no 'ES' entry",
        2,
    ),
    (
        "acdc_info_garbage",
        "acdc",
        _write("patient002/Info.cfg", "this is not a config\n"),
        "patient002/Info.cfg",
        "is not 'Key: value'",
        2,
    ),
    (
        "acdc_info_bad_weight",
        "acdc",
        _write("patient002/Info.cfg", "ED: 1\nES: 11\nWeight: heavy\n"),
        "patient002/Info.cfg",
        "'Weight' must be a number",
        2,
    ),
    (
        "h5_row_without_file",
        "acdc_h5",
        _rm("patient002_frame11.h5"),
        "patient002_frame11.h5",
        "ES file listed in patients.csv (line 3) not found",
        3,
    ),
    (
        "h5_row_bad_value",
        "acdc_h5",
        _append("patients.csv", "patient003,RV,one,9,20,170,70\n"),
        "patients.csv (line 4)",
        "'ed_frame' of patient003 must be a number",
        4,
    ),
    (
        "h5_duplicate_row",
        "acdc_h5",
        _append("patients.csv", "patient002,NOR,1,11,30,172,72\n"),
        "patients.csv (line 4)",
        "listed twice",
        4,
    ),
    (
        "h5_unlisted_file",
        "acdc_h5",
        lambda root: shutil.copy(root / "patient001_frame01.h5", root / "patient009_frame01.h5"),
        "patient009_frame01.h5",
        "not listed in patients.csv",
        4,
    ),
    (
        "mnms2_row_without_folder",
        "mnms2",
        _append("dataset_information.csv", "3,NOR,F,50,GE,Signa,3.0\n"),
        "dataset/003",
        "subject folder of SUBJECT_CODE 3",
        4,
    ),
    (
        "mnms2_missing_label",
        "mnms2",
        _rm("dataset/001/001_SA_ED_gt.nii.gz"),
        "001_SA_ED_gt.nii.gz",
        "short-axis ED label file not found",
        3,
    ),
    (
        "mnms2_missing_image",
        "mnms2",
        _rm("dataset/002/002_SA_ES.nii.gz"),
        "002_SA_ES.nii.gz",
        "short-axis ES image not found",
        3,
    ),
    (
        "mnms2_bad_code",
        "mnms2",
        _append("dataset_information.csv", "x7,NOR,F,50,GE,Signa,3.0\n"),
        "dataset_information.csv (line 4)",
        "SUBJECT_CODE must be an integer",
        4,
    ),
    (
        "mnms2_unlisted_folder",
        "mnms2",
        lambda root: shutil.copytree(root / "dataset/001", root / "dataset/005"),
        "dataset/005",
        "not listed in",
        4,
    ),
]


@pytest.mark.parametrize("name,layout,breaker,path_part,reason_part,n_left", INDEX_ILL, ids=[c[0] for c in INDEX_ILL])
def test_index_ill(
    tmp_path: Path,
    name: str,
    layout: str,
    breaker: Callable[[Path], None],
    path_part: str,
    reason_part: str,
    n_left: int,
) -> None:
    root = MAKERS[layout](tmp_path / layout)
    breaker(root)
    with pytest.raises(DataError) as info:
        INDEXERS[layout](root)
    assert path_part in info.value.path and path_part in str(info.value)
    assert reason_part in info.value.reason
    # on_error="skip": the bad item is reported, the others are indexed.
    records = INDEXERS[layout](root, on_error="skip")
    assert len(records) == n_left
    assert len(records.problems) == 1
    problem = records.problems[0]
    assert isinstance(problem, Problem) and path_part in problem.path and reason_part in problem.reason
    json.dumps([p.to_dict() for p in records.problems])
    assert index_dataset(root, on_error="skip") == records


FOLDER_ILL = [
    ("root_missing", "acdc", lambda root: shutil.rmtree(root), "data folder not found"),
    (
        "acdc_no_patient",
        "acdc",
        lambda root: [shutil.rmtree(p) for p in list(root.iterdir())],
        "no patientNNN folder",
    ),
    ("h5_no_csv", "acdc_h5", _rm("patients.csv"), "patients.csv: not found"),
    (
        "h5_csv_missing_column",
        "acdc_h5",
        _write("patients.csv", "patient,group,ed_frame\npatient001,DCM,1\n"),
        "lacks the column(s) ['es_frame']",
    ),
    ("h5_csv_empty", "acdc_h5", _write("patients.csv", ""), "CSV file is empty"),
    ("mnms2_no_csv", "mnms2", _rm("dataset_information.csv"), "no dataset_information.csv"),
    (
        "mnms2_csv_no_code",
        "mnms2",
        _write("dataset_information.csv", "CODE,VENDOR\n1,GE\n"),
        "lacks the column(s) ['SUBJECT_CODE']",
    ),
]


@pytest.mark.parametrize("name,layout,breaker,match", FOLDER_ILL, ids=[c[0] for c in FOLDER_ILL])
@pytest.mark.parametrize("on_error", ["raise", "skip"])
def test_index_folder_ill(
    tmp_path: Path, name: str, layout: str, breaker: Callable[[Path], object], match: str, on_error: str
) -> None:
    """What makes the whole folder unusable raises even with on_error='skip'."""
    root = MAKERS[layout](tmp_path / layout)
    breaker(root)
    with pytest.raises(DataError, match=match.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        INDEXERS[layout](root, on_error=on_error)


def test_detect_layout_fails_clearly(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "images").mkdir()
    with pytest.raises(DataError) as info:
        detect_layout(tmp_path)
    message = str(info.value)
    assert str(tmp_path) in message and "cannot detect" in message
    assert "notes.txt" in message and "images" in message and "Info.cfg" in message
    with pytest.raises(DataError, match="cannot detect"):
        index_dataset(tmp_path)


def test_detect_layout_several(tmp_path: Path) -> None:
    make_acdc(tmp_path)
    make_acdc_h5(tmp_path)
    with pytest.raises(DataError, match="several layouts"):
        detect_layout(tmp_path)
    assert len(index_dataset(tmp_path, layout="acdc")) == 4


@pytest.mark.parametrize("kwargs,match", [({"layout": "nifti"}, "`layout`"), ({"on_error": "ignore"}, "`on_error`")])
def test_index_dataset_ill_arguments(tmp_path: Path, kwargs: dict, match: str) -> None:
    make_acdc(tmp_path)
    with pytest.raises(ValueError, match=match):
        index_dataset(tmp_path, **kwargs)


@pytest.mark.parametrize("indexer", [index_acdc, index_acdc_h5, index_mnms2])
def test_indexer_ill_on_error(tmp_path: Path, indexer: Callable[..., IndexResult]) -> None:
    with pytest.raises(ValueError, match="`on_error`"):
        indexer(tmp_path, on_error="warn")


# --------------------------------------------------------------------------------------------
# loading voxels


@pytest.mark.parametrize("layout", ["acdc", "acdc_h5", "mnms2"])
def test_load_case_layouts(tmp_path: Path, layout: str) -> None:
    records = INDEXERS[layout](MAKERS[layout](tmp_path / layout))
    for record, shift in zip(records, (0, 1, 0, 1), strict=True):
        case = load_case(record)
        expected = phantom_label(shift=shift)  # the project convention, whatever the source
        assert case.record == record and case.case_id == record.case_id
        assert case.image.dtype == np.float32 and case.image.shape == (NZ, NY, NX)
        assert case.label is not None and case.label.dtype == np.uint8
        np.testing.assert_array_equal(case.label, expected)
        image = phantom_image(to_acdc(expected) if layout != "mnms2" else expected).astype(np.float32)
        if layout == "acdc_h5":
            image = image / 400.0
            assert case.spacing_zyx is None and case.affine is None and case.voxel_volume_ml is None
        else:
            assert case.spacing_zyx == pytest.approx(SPACING_ZYX, abs=1e-6)
            assert case.voxel_volume_ml == pytest.approx(np.prod(SPACING_ZYX) / 1000.0)
            assert case.affine is not None and case.affine.shape == (4, 4)
        np.testing.assert_allclose(case.image, image, atol=1e-5)
        assert enclosure(case.label, LV) == 1.0 and enclosure(case.label, RV) < 0.6


def test_load_nifti_trailing_singleton_axis(tmp_path: Path) -> None:
    """An (X, Y, Z, 1) file is a 3D volume."""
    label = phantom_label()
    image_xyz1 = phantom_image(label).transpose(2, 1, 0)[..., None]
    nib.save(nib.Nifti1Image(image_xyz1, np.diag([-1.25, -1.5, 8.0, 1.0])), str(tmp_path / "im.nii.gz"))
    save_nifti(tmp_path / "gt.nii.gz", label)
    record = CaseRecord("x_ED", "x", "ED", str(tmp_path / "im.nii.gz"), str(tmp_path / "gt.nii.gz"), "mnms2")
    case = load_case(record)
    assert case.image.shape == (NZ, NY, NX)
    np.testing.assert_array_equal(case.image, phantom_image(label))


def _nifti_record(
    tmp_path: Path,
    image: np.ndarray,
    label: np.ndarray,
    source: str = "mnms2",
    image_kwargs: dict | None = None,
    label_kwargs: dict | None = None,
) -> CaseRecord:
    im = save_nifti(tmp_path / "case_SA_ED.nii.gz", image, **(image_kwargs or {}))
    gt = save_nifti(tmp_path / "case_SA_ED_gt.nii.gz", label, **(label_kwargs or {}))
    return CaseRecord("case_ED", "case", "ED", str(im), str(gt), source)


def _truncate(path: str, keep: float) -> None:
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: int(len(data) * keep)])


def _bad_label_value(tmp_path: Path) -> tuple[CaseRecord, str, str]:
    label = phantom_label()
    label[0, 0, 0] = 7
    return (
        _nifti_record(tmp_path, phantom_image(label), label),
        "_gt.nii.gz",
        "label values [7] are out of range",
    )


def _shape_mismatch(tmp_path: Path) -> tuple[CaseRecord, str, str]:
    label = phantom_label()
    record = _nifti_record(tmp_path, phantom_image(label), label[:, :, :-2])
    return record, "_gt.nii.gz", "label shape (3, 16, 18) (Z, Y, X) differs from image shape (3, 16, 20)"


def _affine_mismatch(tmp_path: Path) -> tuple[CaseRecord, str, str]:
    label = phantom_label()
    shifted = np.diag([-1.25, -1.5, 8.0, 1.0])
    shifted[0, 3] = 2.0
    record = _nifti_record(tmp_path, phantom_image(label), label, label_kwargs={"affine": shifted})
    return record, "_gt.nii.gz", "label affine differs from the image affine"


def _spacing_mismatch(tmp_path: Path) -> tuple[CaseRecord, str, str]:
    label = phantom_label()
    same_affine = np.diag([-1.0, -1.0, 1.0, 1.0])  # like the real ACDC files: spacing only in pixdim
    record = _nifti_record(
        tmp_path,
        phantom_image(label),
        label,
        image_kwargs={"affine": same_affine},
        label_kwargs={"affine": same_affine, "spacing_zyx": (10.0, 1.5, 1.25)},
    )
    return record, "_gt.nii.gz", "label voxel size (pixdim x, y, z)"


def _truncated_image(tmp_path: Path) -> tuple[CaseRecord, str, str]:
    label = phantom_label()
    record = _nifti_record(tmp_path, phantom_image(label), label)
    _truncate(record.image, 0.8)
    return record, "case_SA_ED.nii.gz", "cannot read NIfTI file"


def _truncated_label_header(tmp_path: Path) -> tuple[CaseRecord, str, str]:
    label = phantom_label()
    record = _nifti_record(tmp_path, phantom_image(label), label)
    assert record.label is not None
    _truncate(record.label, 0.1)
    return record, "_gt.nii.gz", "cannot read NIfTI file"


def _not_gzip(tmp_path: Path) -> tuple[CaseRecord, str, str]:
    label = phantom_label()
    record = _nifti_record(tmp_path, phantom_image(label), label)
    Path(record.image).write_bytes(b"this is not a NIfTI file")
    return record, "case_SA_ED.nii.gz", "cannot read NIfTI file"


def _gzip_of_garbage(tmp_path: Path) -> tuple[CaseRecord, str, str]:
    label = phantom_label()
    record = _nifti_record(tmp_path, phantom_image(label), label)
    Path(record.image).write_bytes(gzip.compress(b"\0" * 400))
    return record, "case_SA_ED.nii.gz", "cannot read NIfTI file"


def _missing_label_file(tmp_path: Path) -> tuple[CaseRecord, str, str]:
    label = phantom_label()
    record = _nifti_record(tmp_path, phantom_image(label), label)
    assert record.label is not None
    Path(record.label).unlink()
    return record, "_gt.nii.gz", "file not found"


def _image_4d(tmp_path: Path) -> tuple[CaseRecord, str, str]:
    label = phantom_label()
    record = _nifti_record(tmp_path, phantom_image(label), label)
    nib.save(nib.Nifti1Image(np.zeros((NX, NY, NZ, 5), np.int16), np.eye(4)), record.image)
    return record, "case_SA_ED.nii.gz", "expected a 3D volume (X, Y, Z), got shape (20, 16, 3, 5)"


def _image_2d(tmp_path: Path) -> tuple[CaseRecord, str, str]:
    label = phantom_label()
    record = _nifti_record(tmp_path, phantom_image(label), label)
    nib.save(nib.Nifti1Image(np.zeros((NX, NY), np.int16), np.eye(4)), record.image)
    return record, "case_SA_ED.nii.gz", "expected a 3D volume (X, Y, Z), got shape (20, 16)"


def _non_finite(tmp_path: Path) -> tuple[CaseRecord, str, str]:
    label = phantom_label()
    image = phantom_image(label).astype(np.float32)
    image[1, 2, 3] = np.nan
    image[0, 0, 0] = np.inf
    return _nifti_record(tmp_path, image, label), "case_SA_ED.nii.gz", "2 non-finite image value(s)"


def _float_label(tmp_path: Path) -> tuple[CaseRecord, str, str]:
    label = phantom_label().astype(np.float32)
    label[0, 0, 0] = 1.5
    return (
        _nifti_record(tmp_path, phantom_image(phantom_label()), label),
        "_gt.nii.gz",
        "label values [1.5] are not integers",
    )


def _h5_record(tmp_path: Path, **datasets: np.ndarray) -> CaseRecord:
    path = tmp_path / "patient001_frame01.h5"
    with h5py.File(path, "w") as fh:
        for key, value in datasets.items():
            fh[key] = value
    return CaseRecord("patient001_ED", "patient001", "ED", str(path), str(path), "acdc_h5")


def _not_hdf5(tmp_path: Path) -> tuple[CaseRecord, str, str]:
    record = _h5_record(tmp_path, image=np.zeros((NZ, NY, NX), np.float32))
    Path(record.image).write_bytes(b"not an HDF5 file at all")
    return record, "patient001_frame01.h5", "cannot read HDF5 file"


def _h5_truncated(tmp_path: Path) -> tuple[CaseRecord, str, str]:
    label = to_acdc(phantom_label())
    record = _h5_record(tmp_path, image=np.zeros(label.shape, np.float32), label=label)
    _truncate(record.image, 0.5)
    return record, "patient001_frame01.h5", "cannot read HDF5 file"


def _h5_no_label(tmp_path: Path) -> tuple[CaseRecord, str, str]:
    record = _h5_record(tmp_path, image=np.zeros((NZ, NY, NX), np.float32), scribble=np.zeros((NZ, NY, NX)))
    return (
        record,
        "patient001_frame01.h5",
        "no dataset 'label' in the HDF5 file (found ['image', 'scribble'])",
    )


def _h5_image_2d(tmp_path: Path) -> tuple[CaseRecord, str, str]:
    record = _h5_record(tmp_path, image=np.zeros((NY, NX), np.float32), label=np.zeros((NY, NX), np.uint8))
    return record, "patient001_frame01.h5", "dataset 'image' must be 3D"


def _h5_label_out_of_range(tmp_path: Path) -> tuple[CaseRecord, str, str]:
    label = to_acdc(phantom_label())
    label[0, :2, :2] = 4
    label[1, 0, 0] = 9
    record = _h5_record(tmp_path, image=np.zeros(label.shape, np.float32), label=label)
    return record, "patient001_frame01.h5", "label values [4, 9] are out of range"


def _h5_shape_mismatch(tmp_path: Path) -> tuple[CaseRecord, str, str]:
    label = to_acdc(phantom_label())
    record = _h5_record(tmp_path, image=np.zeros((NZ + 1, NY, NX), np.float32), label=label)
    return (
        record,
        "patient001_frame01.h5",
        "label shape (3, 16, 20) (Z, Y, X) differs from image shape (4, 16, 20)",
    )


LOAD_ILL = {
    "label_value_7": _bad_label_value,
    "label_not_integer": _float_label,
    "shape_mismatch": _shape_mismatch,
    "affine_mismatch": _affine_mismatch,
    "spacing_mismatch": _spacing_mismatch,
    "truncated_gz_image": _truncated_image,
    "truncated_gz_label_header": _truncated_label_header,
    "not_gzip": _not_gzip,
    "gzip_of_garbage": _gzip_of_garbage,
    "missing_label_file": _missing_label_file,
    "image_4d": _image_4d,
    "image_2d": _image_2d,
    "non_finite_image": _non_finite,
    "not_hdf5": _not_hdf5,
    "h5_truncated": _h5_truncated,
    "h5_no_label_dataset": _h5_no_label,
    "h5_image_2d": _h5_image_2d,
    "h5_label_out_of_range": _h5_label_out_of_range,
    "h5_shape_mismatch": _h5_shape_mismatch,
}


@pytest.mark.parametrize("name", list(LOAD_ILL))
def test_load_case_ill(tmp_path: Path, name: str) -> None:
    record, file_part, reason_part = LOAD_ILL[name](tmp_path)
    with pytest.raises(DataError) as info:
        load_case(record)
    assert isinstance(info.value, ValueError)
    assert file_part in info.value.path and info.value.path in str(info.value)
    assert reason_part in info.value.reason, info.value.reason


@pytest.mark.parametrize("name", ["shape_mismatch", "affine_mismatch", "spacing_mismatch", "non_finite_image"])
def test_load_case_check_false(tmp_path: Path, name: str) -> None:
    """check=False skips the consistency checks (not the label values, which remapping needs)."""
    record, _, _ = LOAD_ILL[name](tmp_path)
    case = load_case(record, check=False)
    assert case.label is not None and case.label.max() <= 3


def test_load_many(tmp_path: Path) -> None:
    records = list(index_mnms2(make_mnms2(tmp_path / "mnms2")))
    assert records[1].label is not None
    Path(records[1].label).write_bytes(b"broken")
    _truncate(records[2].image, 0.7)
    with pytest.raises(DataError, match="001_SA_ES_gt.nii.gz"):
        load_many(records)
    result = load_many(records, on_error="skip")
    assert isinstance(result, LoadResult)
    assert [c.case_id for c in result] == ["001_ED", "002_ES"]
    assert [(p.case_id, Path(p.path).name) for p in result.problems] == [
        ("001_ES", "001_SA_ES_gt.nii.gz"),
        ("002_ED", "002_SA_ED.nii.gz"),
    ]
    assert all("cannot read NIfTI file" in p.reason for p in result.problems)
    with pytest.raises(ValueError, match="`on_error`"):
        load_many(records, on_error="continue")


# --------------------------------------------------------------------------------------------
# real data (../shared/data), read in place


def _real(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"real data folder {path} absent (only CI and development machines have ../shared/data)")
    return path


REAL_INDEX = [
    # folder, indexer, patients, records, patients per group
    ("acdc", index_acdc, 16, 32, {"DCM": 16}),
    ("acdc_h5", index_acdc_h5, 80, 160, {"DCM": 16, "HCM": 16, "MINF": 16, "NOR": 16, "RV": 16}),
]


@pytest.mark.realdata
@pytest.mark.parametrize("folder,indexer,n_patients,n_records,groups", REAL_INDEX, ids=[c[0] for c in REAL_INDEX])
def test_real_index(
    folder: str, indexer: Callable[..., IndexResult], n_patients: int, n_records: int, groups: dict[str, int]
) -> None:
    root = _real(folder)
    records = indexer(root)
    assert records.problems == []
    assert len(records.patient_ids) == n_patients and len(records) == n_records
    per_group: dict[str, set[str]] = {}
    for r in records:
        per_group.setdefault(str(r.group), set()).add(r.patient_id)
    assert {g: len(p) for g, p in per_group.items()} == groups
    assert detect_layout(root) == folder
    for r in records:
        assert r.meta["frame"] >= 1 and r.meta["n_frames"] >= r.meta["frame"]
        assert 100 < r.meta["height_cm"] < 220 and 30 < r.meta["weight_kg"] < 200
    ed = {r.patient_id: r.meta["frame"] for r in records if r.phase == "ED"}
    es = {r.patient_id: r.meta["frame"] for r in records if r.phase == "ES"}
    assert ed.keys() == es.keys() and all(ed[p] != es[p] for p in ed)


@pytest.mark.realdata
def test_real_acdc_load_all() -> None:
    """All 16 official-layout patients: labels, anatomy of the remapped labels, spacing, volumes."""
    records = index_acdc(_real("acdc"))
    cases = load_many(records)
    assert len(cases) == len(records) and cases.problems == []
    volumes: dict[str, dict[str, float]] = {}
    for case in cases:
        assert case.label is not None and case.spacing_zyx is not None
        assert case.image.dtype == np.float32 and np.isfinite(case.image).all()
        assert set(np.unique(case.label).tolist()) == {0, 1, 2, 3}, case.case_id
        # After remapping, label 1 (LV cavity) is enclosed by myocardium all around on nearly all
        # of its boundary; label 3 (RV cavity) touches myocardium only along the septum.
        assert enclosure(case.label, LV) > 0.95, case.case_id
        assert enclosure(case.label, RV) < 0.6, case.case_id
        sz, sy, sx = case.spacing_zyx
        assert 1.3 <= sy <= 2.0 and 1.3 <= sx <= 2.0 and 5.0 <= sz <= 10.0, case.spacing_zyx
        volumes.setdefault(case.record.patient_id, {})[case.record.phase] = (
            float((case.label == LV).sum()) * case.voxel_volume_ml
        )
    edv = np.array([v["ED"] for v in volumes.values()])
    esv = np.array([v["ES"] for v in volumes.values()])
    assert np.mean(edv > esv) >= 0.9
    assert np.all((edv > 50) & (edv < 600)), edv  # ml; this group is DCM (dilated ventricles)


@pytest.mark.realdata
def test_real_acdc_h5_matches_nifti() -> None:
    """The same patient in the two ACDC layouts gives the same labels (orientation and remap agree)."""
    nifti = {r.case_id: r for r in index_acdc(_real("acdc"))}
    h5 = {r.case_id: r for r in index_acdc_h5(_real("acdc_h5"))}
    for case_id in ("patient001_ED", "patient009_ES", "patient014_ES"):
        a, b = load_case(nifti[case_id]), load_case(h5[case_id])
        assert nifti[case_id].meta["frame"] == h5[case_id].meta["frame"]
        assert a.image.shape == b.image.shape
        np.testing.assert_array_equal(a.label, b.label)
        assert np.corrcoef(a.image.ravel(), b.image.ravel())[0, 1] > 0.99


@pytest.mark.realdata
def test_real_acdc_h5_load_each_group() -> None:
    records = index_acdc_h5(_real("acdc_h5"))
    first_of_group: dict[str, str] = {}
    for r in records:
        first_of_group.setdefault(str(r.group), r.patient_id)
    chosen = [r for r in records if r.patient_id in first_of_group.values()]
    cases = load_many(chosen)
    assert len(cases) == 2 * len(first_of_group) == 10
    for case in cases:
        assert case.spacing_zyx is None and case.affine is None
        assert 0.0 <= case.image.min() and case.image.max() <= 1.0
        assert case.label is not None and set(np.unique(case.label).tolist()) <= {0, 1, 2, 3}
        assert enclosure(case.label, LV) > 0.95 and enclosure(case.label, RV) < 0.6, case.case_id
