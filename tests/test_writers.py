"""Tests of the data writers (cardiolora.data.acdc, .mnms2, .truth and cardiolora.dicom.mr_writer):
what is written is read back with nibabel, pydicom, highdicom."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.uid import MRImageStorage as MR_IMAGE_STORAGE

from cardiolora.data.acdc import write_acdc
from cardiolora.data.cine import CineStudy, nifti_affine
from cardiolora.data.mnms2 import MNMS2_CSV_COLUMNS, write_mnms2
from cardiolora.data.truth import write_truth
from cardiolora.dicom import mr_writer
from cardiolora.dicom.mr_writer import write_dicom_cine, write_dicom_localizers
from cardiolora.labels import SOURCE_TO_PROJECT, project_to_source, remap_labels

# --------------------------------------------------------------------------------------------
# fixture studies: oblique, anisotropic (row spacing != column spacing), Y != X, few phases
# --------------------------------------------------------------------------------------------


def _rotation(axis: tuple[float, float, float], degrees: float) -> np.ndarray:
    a = np.asarray(axis, dtype=np.float64)
    a /= np.linalg.norm(a)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    th = np.deg2rad(degrees)
    return np.eye(3) + np.sin(th) * k + (1 - np.cos(th)) * k @ k


def make_study(
    subject_id: str = "philips-001",
    *,
    n_phases: int = 5,
    n_slices: int = 3,
    shape_yx: tuple[int, int] = (20, 24),
    spacing_zyx: tuple[float, float, float] = (8.0, 1.25, 1.5),
    flip_slices: bool = False,
    ed_phase: int = 0,
    es_phase: int | None = None,
    seed: int = 0,
    meta: dict[str, object] | None = None,
) -> CineStudy:
    """A tiny oblique cine with LV / MYO / RV discs whose LV shrinks towards ES (default phase 2)."""
    es_phase = min(2, n_phases - 1) if es_phase is None else es_phase
    rot = _rotation((1.0, 2.0, 3.0), 40.0)
    affine = np.eye(4)
    affine[:3, 0] = rot[:, 0] * spacing_zyx[2]
    affine[:3, 1] = rot[:, 1] * spacing_zyx[1]
    affine[:3, 2] = rot[:, 2] * spacing_zyx[0] * (-1.0 if flip_slices else 1.0)
    affine[:3, 3] = (-50.3, 20.1, 33.7)
    ny, nx = shape_yx
    yy, xx = np.mgrid[0:ny, 0:nx]
    label = np.zeros((n_phases, n_slices, ny, nx), dtype=np.uint8)
    for t in range(n_phases):
        r_lv = 5.0 - 2.0 * np.sin(np.pi * t / max(n_phases - 1, 1))
        for z in range(n_slices):
            d_lv = np.hypot(yy - 10, xx - 14)
            label[t, z][d_lv < r_lv + 2.0] = 2
            label[t, z][d_lv < r_lv] = 1
            label[t, z][np.hypot(yy - 10, xx - 4) < 3.0] = 3
    rng = np.random.default_rng(seed)
    intensities = np.array([60.0, 700.0, 250.0, 650.0])
    image = (intensities[label] + rng.normal(0, 20, label.shape)).clip(0).astype(np.float32)
    default_meta: dict[str, object] = {
        "group": "HCM",
        "height_cm": 172.5,
        "weight_kg": 68.0,
        "sex": "F",
        "age_years": 54,
        "field_strength_t": 3.0,
        "scanner": "Ingenia",
    }
    return CineStudy(
        subject_id=subject_id,
        image=image,
        label=label,
        spacing_zyx=spacing_zyx,
        affine_lps=affine,
        trigger_times_ms=np.arange(n_phases) * 161.5 + 12.25,
        ed_phase=ed_phase,
        es_phase=es_phase,
        vendor="philips",
        slice_thickness_mm=7.0,
        truth={"lv_edv_ml": 120.25, "lv_ef_pct": 58.5},
        meta=default_meta if meta is None else meta,
    )


def _nib_to_tzyx(arr: np.ndarray) -> np.ndarray:
    """Undo the (X, Y, Z[, T]) NIfTI order."""
    return np.asarray(arr).transpose(tuple(reversed(range(arr.ndim))))


def _no_partials(folder: Path) -> None:
    left = [p for p in folder.rglob("*") if p.name.endswith(".tmp")]
    assert not left, f"temporary files left behind: {left}"


# --------------------------------------------------------------------------------------------
# labels
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source, expected",
    [("acdc", [0, 3, 2, 1]), ("mnms", [0, 1, 2, 3]), ("project", [0, 1, 2, 3])],
)
def test_project_to_source_inverts_remap(source: str, expected: list[int]) -> None:
    project = np.array([0, 1, 2, 3], dtype=np.uint8)
    out = project_to_source(project, source)
    assert out.dtype == np.uint8
    assert out.tolist() == expected
    assert np.array_equal(remap_labels(out, source), project)
    assert np.array_equal(SOURCE_TO_PROJECT[source][out], project)


def test_project_to_source_rejects_bad_values_and_source() -> None:
    with pytest.raises(ValueError, match=r"my_gt\.nii\.gz.*\[7\]"):
        project_to_source(np.array([0, 7]), "acdc", name="my_gt.nii.gz")
    with pytest.raises(ValueError, match="`source`"):
        project_to_source(np.array([0, 1]), "kaggle")


# --------------------------------------------------------------------------------------------
# M&Ms-2
# --------------------------------------------------------------------------------------------


def _check_nifti(path: Path, study: CineStudy, expected_tzyx: np.ndarray, dtype: str) -> nib.Nifti1Image:
    img = nib.load(path)
    np.testing.assert_allclose(img.affine, nifti_affine(study.affine_lps), atol=1e-5)
    hdr = img.header
    assert hdr["qform_code"] == 1 and hdr["sform_code"] == 1
    np.testing.assert_allclose(img.get_qform(), nifti_affine(study.affine_lps), atol=1e-5)
    assert hdr.get_xyzt_units() == ("mm", "msec")
    assert hdr.get_data_dtype() == np.dtype(dtype)
    np.testing.assert_allclose(hdr.get_zooms()[:3], study.spacing_zyx[::-1], rtol=1e-6)
    back = _nib_to_tzyx(np.asarray(img.dataobj))
    assert back.shape == expected_tzyx.shape
    if dtype == "uint8":
        assert np.array_equal(back, expected_tzyx)
    elif dtype == "float32":
        assert np.array_equal(back, expected_tzyx)  # lossless
    else:  # int16 scaled integers: at most half a scale step
        slope = float(img.dataobj.slope)
        np.testing.assert_allclose(back, expected_tzyx, rtol=0, atol=slope / 2 + 1e-3)
    return img


@pytest.mark.parametrize(
    "n_phases, image_dtype, has_cine",
    [(5, "float32", True), (2, "float32", False), (4, "int16", True)],
)
def test_mnms2_layout_reads_back(tmp_path: Path, n_phases: int, image_dtype: str, has_cine: bool) -> None:
    es = 1 if n_phases == 2 else 2
    studies = [
        make_study("philips-001", n_phases=n_phases, es_phase=es),
        make_study("ge-002", n_phases=n_phases, es_phase=es, seed=1),
    ]
    studies[1].vendor = "ge"
    root = write_mnms2(studies, tmp_path / "mnms2", start_code=7, image_dtype=image_dtype)
    assert root == tmp_path / "mnms2"
    for code, study in zip((7, 8), studies, strict=True):
        folder = root / "dataset" / f"{code:03d}"
        names = sorted(p.name for p in folder.iterdir())
        expected = [f"{code:03d}_SA_{tag}{gt}.nii.gz" for tag in ("ED", "ES") for gt in ("", "_gt")]
        if has_cine:
            expected.append(f"{code:03d}_SA_CINE.nii.gz")
        assert names == sorted(expected)
        for tag, phase in (("ED", study.ed_phase), ("ES", study.es_phase)):
            _check_nifti(folder / f"{code:03d}_SA_{tag}.nii.gz", study, study.image[phase], image_dtype)
            _check_nifti(folder / f"{code:03d}_SA_{tag}_gt.nii.gz", study, study.label[phase], "uint8")
        if has_cine:
            cine = _check_nifti(folder / f"{code:03d}_SA_CINE.nii.gz", study, study.image, image_dtype)
            assert cine.shape == (24, 20, 3, n_phases)
            assert cine.header.get_zooms()[3] == pytest.approx(161.5)
    with open(root / "dataset_information.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames or ()) == MNMS2_CSV_COLUMNS
        rows = list(reader)
    assert rows == [
        {"SUBJECT_CODE": "7", "DISEASE": "HCM", "VENDOR": "philips", "SCANNER": "Ingenia", "FIELD": "3"},
        {"SUBJECT_CODE": "8", "DISEASE": "HCM", "VENDOR": "ge", "SCANNER": "Ingenia", "FIELD": "3"},
    ]
    _no_partials(root)


def test_mnms2_defaults_for_missing_meta(tmp_path: Path) -> None:
    study = make_study(meta={})
    study.vendor = "siemens"
    root = write_mnms2([study], tmp_path)
    with open(root / "dataset_information.csv", newline="") as fh:
        row = next(csv.DictReader(fh))
    assert row == {
        "SUBJECT_CODE": "1",
        "DISEASE": "NOR",
        "VENDOR": "siemens",
        "SCANNER": "Avanto",
        "FIELD": "1.5",
    }


def test_mnms2_append_keeps_rows_and_refuses_collision(tmp_path: Path) -> None:
    write_mnms2([make_study("a")], tmp_path, start_code=1)
    write_mnms2([make_study("b")], tmp_path, start_code=2)
    csv_path = tmp_path / "dataset_information.csv"
    before = csv_path.read_bytes()
    assert [r["SUBJECT_CODE"] for r in csv.DictReader(before.decode().splitlines())] == ["1", "2"]
    with pytest.raises(ValueError, match=r"dataset_information\.csv: SUBJECT_CODE 2 already exists"):
        write_mnms2([make_study("c"), make_study("d")], tmp_path, start_code=2)
    assert csv_path.read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "dataset").iterdir()) == ["001", "002"]  # nothing new
    write_mnms2([make_study("c")], tmp_path, start_code=3)
    assert [r["SUBJECT_CODE"] for r in csv.DictReader(csv_path.read_text().splitlines())] == ["1", "2", "3"]


def test_nifti_files_are_deterministic(tmp_path: Path) -> None:
    study = make_study()
    first = write_acdc([study], tmp_path / "a")
    again = write_acdc([study], tmp_path / "b")
    names = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert len(names) == 6
    assert all((first / n).read_bytes() == (again / n).read_bytes() for n in names)


def test_bad_meta_names_the_field(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"`meta\['group'\]` of philips-001"):
        write_mnms2([make_study(meta={"group": "A,B"})], tmp_path)
    with pytest.raises(ValueError, match=r"`meta\['weight_kg'\]` of philips-001 must be a number"):
        write_acdc([make_study(meta={"height_cm": 170, "weight_kg": "heavy"})], tmp_path)
    with pytest.raises(ValueError, match=r"`meta\['sex'\]`"):
        write_dicom_cine(make_study(meta={"sex": "X"}), tmp_path / "d")


def test_mnms2_refuses_existing_folder_and_foreign_csv(tmp_path: Path) -> None:
    (tmp_path / "dataset" / "005").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"005 already exists"):
        write_mnms2([make_study()], tmp_path, start_code=5)
    (tmp_path / "dataset_information.csv").write_text("ID,VENDOR\n1,GE\n")
    with pytest.raises(ValueError, match=r"dataset_information\.csv: header"):
        write_mnms2([make_study()], tmp_path, start_code=9)


def test_mnms2_bad_label_names_file_and_writes_nothing(tmp_path: Path) -> None:
    good = make_study("good")
    bad = make_study("bad")
    bad.label[bad.es_phase, 1, 0, 0] = 7
    with pytest.raises(ValueError, match=r"002_SA_ES_gt\.nii\.gz.*bad.*\[7\]"):
        write_mnms2([good, bad], tmp_path, start_code=1)
    assert not (tmp_path / "dataset").exists()
    assert not (tmp_path / "dataset_information.csv").exists()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"start_code": 0}, "`start_code`"),
        ({"image_dtype": "float64"}, "`image_dtype`"),
    ],
)
def test_mnms2_bad_arguments(tmp_path: Path, kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        write_mnms2([make_study()], tmp_path, **kwargs)


def test_writers_reject_root_that_is_a_file(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(ValueError, match=r"`root`.*afile.*not a directory"):
        write_mnms2([make_study()], afile)
    with pytest.raises(ValueError, match=r"`root`.*afile.*not a directory"):
        write_acdc([make_study()], afile)


def test_unlabelled_study_is_refused_for_nifti_layouts(tmp_path: Path) -> None:
    study = make_study()
    study.label = None
    with pytest.raises(ValueError, match=r"001_SA_ED_gt\.nii\.gz.*None"):
        write_mnms2([study], tmp_path / "m")


def test_bad_geometry_is_refused(tmp_path: Path) -> None:
    study = make_study()
    study.spacing_zyx = (8.0, 1.5, 1.25)  # swapped in-plane spacing: inconsistent with the affine
    with pytest.raises(ValueError, match=r"`affine_lps` of philips-001 has column lengths"):
        write_mnms2([study], tmp_path / "m")
    with pytest.raises(ValueError, match=r"`affine_lps` of philips-001 has column lengths"):
        write_dicom_cine(study, tmp_path / "d")
    sheared = make_study()
    sheared.affine_lps[:3, 2] += sheared.affine_lps[:3, 0] * 0.5
    sheared.spacing_zyx = (float(np.linalg.norm(sheared.affine_lps[:3, 2])), 1.25, 1.5)
    with pytest.raises(ValueError, match="orthogonal"):
        write_dicom_cine(sheared, tmp_path / "d")


# --------------------------------------------------------------------------------------------
# ACDC
# --------------------------------------------------------------------------------------------


def _parse_info_cfg(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        key, value = line.split(": ")
        out[key] = value
    return out


@pytest.mark.parametrize("n_phases, ed, es", [(5, 0, 2), (12, 1, 10), (2, 1, 0)])
def test_acdc_layout_reads_back(tmp_path: Path, n_phases: int, ed: int, es: int) -> None:
    study = make_study(n_phases=n_phases, ed_phase=ed, es_phase=es)
    root = write_acdc([study], tmp_path / "acdc", start_index=3)
    folder = root / "patient003"
    names = sorted(p.name for p in folder.iterdir())
    expected = ["Info.cfg"] + [f"patient003_frame{p + 1:02d}{gt}.nii.gz" for p in (ed, es) for gt in ("", "_gt")]
    if n_phases > 2:
        expected.append("patient003_4d.nii.gz")
    assert names == sorted(expected)
    for phase in (ed, es):
        stem = folder / f"patient003_frame{phase + 1:02d}"
        _check_nifti(Path(f"{stem}.nii.gz"), study, study.image[phase], "float32")
        gt = _check_nifti(Path(f"{stem}_gt.nii.gz"), study, project_to_source(study.label[phase], "acdc"), "uint8")
        gt_tzyx = _nib_to_tzyx(np.asarray(gt.dataobj))
        # ACDC convention: 3 is the LV cavity, 1 the RV cavity.
        assert np.array_equal(gt_tzyx == 3, study.label[phase] == 1)
        assert np.array_equal(gt_tzyx == 1, study.label[phase] == 3)
        assert np.array_equal(remap_labels(gt_tzyx, "acdc"), study.label[phase])
    if n_phases > 2:
        _check_nifti(folder / "patient003_4d.nii.gz", study, study.image, "float32")
    assert (folder / "Info.cfg").read_text() == (
        f"ED: {ed + 1}\nES: {es + 1}\nGroup: HCM\nHeight: 172.5\nNbFrame: {n_phases}\nWeight: 68.0\n"
    )
    info = _parse_info_cfg(folder / "Info.cfg")
    assert int(info["ED"]) - 1 == ed and int(info["ES"]) - 1 == es and int(info["NbFrame"]) == n_phases
    _no_partials(root)


def test_acdc_info_cfg_matches_real_acdc_format(tmp_path: Path) -> None:
    """Same keys, order and number format as patient001/Info.cfg of the ACDC download."""
    study = make_study(meta={"group": "DCM", "height_cm": 184, "weight_kg": 95})
    write_acdc([study], tmp_path)
    text = (tmp_path / "patient001" / "Info.cfg").read_text()
    assert text == "ED: 1\nES: 3\nGroup: DCM\nHeight: 184.0\nNbFrame: 5\nWeight: 95.0\n"
    real = Path(__file__).resolve().parents[2] / "shared" / "data" / "acdc" / "patient001" / "Info.cfg"
    if real.exists():
        assert [line.split(":")[0] for line in real.read_text().splitlines()] == [
            line.split(":")[0] for line in text.splitlines()
        ]


def test_acdc_refuses_missing_height_bad_label_and_existing_patient(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"`meta\['height_cm'\]` of philips-001 is required"):
        write_acdc([make_study(meta={"weight_kg": 70})], tmp_path)
    bad = make_study()
    bad.label[bad.ed_phase, 0, 0, 0] = 7
    with pytest.raises(ValueError, match=r"patient001_frame01_gt\.nii\.gz.*\[7\]"):
        write_acdc([bad], tmp_path)
    assert not any(tmp_path.iterdir())
    write_acdc([make_study()], tmp_path)
    with pytest.raises(ValueError, match=r"patient001 already exists"):
        write_acdc([make_study("other")], tmp_path)


# --------------------------------------------------------------------------------------------
# DICOM cine
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dicom_case(tmp_path_factory: pytest.TempPathFactory) -> tuple[CineStudy, list[Path]]:
    study = make_study()
    out = tmp_path_factory.mktemp("dicom") / "sa"
    return study, write_dicom_cine(study, out, uid_seed="seed-1", series_number=7)


def test_dicom_files_and_headers(dicom_case: tuple[CineStudy, list[Path]]) -> None:
    study, paths = dicom_case
    t_n, z_n = study.n_phases, study.n_slices
    assert len(paths) == t_n * z_n == len(set(paths))
    assert [p.name for p in paths] == [f"IM_{z:03d}_{t:03d}.dcm" for z in range(z_n) for t in range(t_n)]
    assert sorted(p.name for p in paths[0].parent.iterdir()) == sorted(p.name for p in paths)
    height, weight = study.meta["height_cm"], study.meta["weight_kg"]
    for i, path in enumerate(paths):
        z, t = divmod(i, t_n)
        ds = pydicom.dcmread(path)
        assert path.read_bytes()[128:132] == b"DICM"
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert ds.SOPClassUID == MR_IMAGE_STORAGE == ds.file_meta.MediaStorageSOPClassUID
        assert ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID
        assert ds.Modality == "MR"
        assert (ds.Rows, ds.Columns) == (20, 24)
        assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation) == (16, 12, 11, 0)
        assert ds.PhotometricInterpretation == "MONOCHROME2" and ds.SamplesPerPixel == 1
        assert ds.InstanceNumber == i + 1 and ds.AcquisitionNumber == z + 1
        assert ds.TemporalPositionIdentifier == t + 1
        assert ds.NumberOfTemporalPositions == ds.CardiacNumberOfImages == t_n
        assert float(ds.TriggerTime) == pytest.approx(study.trigger_times_ms[t], abs=1e-6)
        assert float(ds.SliceThickness) == 7.0 and float(ds.SpacingBetweenSlices) == 8.0
        assert [float(v) for v in ds.PixelSpacing] == [1.25, 1.5]
        assert ds.ScanningSequence == "GR" and list(ds.SequenceVariant) == ["SK", "SS"]
        assert ds.Manufacturer == "Philips Medical Systems" and ds.ManufacturerModelName == "Ingenia"
        assert float(ds.MagneticFieldStrength) == 3.0
        assert ds.PatientID == "philips-001" and str(ds.PatientName) == "philips-001"
        assert ds.PatientSex == "F" and ds.PatientAge == "054Y"
        assert float(ds.PatientSize) == pytest.approx(float(height) / 100)
        assert float(ds.PatientWeight) == pytest.approx(float(weight))
        assert ds.SeriesNumber == 7 and ds.SeriesDescription == "SA cine"
        assert float(ds.WindowWidth) > 0
        position = study.affine_lps @ np.array([0.0, 0.0, z, 1.0])
        np.testing.assert_allclose([float(v) for v in ds.ImagePositionPatient], position[:3], atol=1e-4)
        normal = np.cross(
            [float(v) for v in ds.ImageOrientationPatient[:3]],
            [float(v) for v in ds.ImageOrientationPatient[3:]],
        )
        assert float(ds.SliceLocation) == pytest.approx(float(np.dot(position[:3], normal)), abs=1e-4)


def test_dicom_pixels_recover_image(dicom_case: tuple[CineStudy, list[Path]]) -> None:
    """stored * slope + intercept equals the image within slope / 2 (the documented tolerance)."""
    study, paths = dicom_case
    slope = None
    for i, path in enumerate(paths):
        z, t = divmod(i, study.n_phases)
        ds = pydicom.dcmread(path)
        stored = ds.pixel_array
        assert stored.dtype == np.uint16 and stored.max() <= mr_writer.DICOM_STORED_MAX
        slope = float(ds.RescaleSlope) if slope is None else slope
        assert float(ds.RescaleSlope) == slope  # one slope for the series
        value = stored.astype(np.float64) * slope + float(ds.RescaleIntercept)
        np.testing.assert_allclose(value, study.image[t, z], rtol=0, atol=slope / 2 * (1 + 1e-9) + 1e-9)
    assert slope == pytest.approx(float(study.image.max()) / mr_writer.DICOM_STORED_MAX, rel=1e-9)


def test_dicom_geometry_reconstructs_affine(dicom_case: tuple[CineStudy, list[Path]]) -> None:
    study, paths = dicom_case
    first = {}
    for path in paths:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        first.setdefault(int(ds.AcquisitionNumber) - 1, ds)
    ds0, ds1 = first[0], first[1]
    iop = np.array([float(v) for v in ds0.ImageOrientationPatient])
    row_spacing, col_spacing = (float(v) for v in ds0.PixelSpacing)
    ipp0 = np.array([float(v) for v in ds0.ImagePositionPatient])
    ipp1 = np.array([float(v) for v in ds1.ImagePositionPatient])
    normal = np.cross(iop[:3], iop[3:])
    step = float(np.dot(ipp1 - ipp0, normal))  # signed distance between successive slices
    assert abs(step) == pytest.approx(float(ds0.SpacingBetweenSlices), abs=1e-4)
    rebuilt = np.eye(4)
    rebuilt[:3, 0] = iop[:3] * col_spacing
    rebuilt[:3, 1] = iop[3:] * row_spacing
    rebuilt[:3, 2] = normal * step
    rebuilt[:3, 3] = ipp0
    np.testing.assert_allclose(rebuilt, study.affine_lps, rtol=0, atol=1e-4)


def _expected_highdicom_affine(study: CineStudy, reversed_slices: bool) -> np.ndarray:
    """Our affine with the axes in highdicom's (slice, row, column) order."""
    permuted = study.affine_lps[:, [2, 1, 0, 3]].copy()
    if reversed_slices:
        permuted[:3, 3] = permuted[:3, 3] + permuted[:3, 0] * (study.n_slices - 1)
        permuted[:3, 0] *= -1
    return permuted


@pytest.mark.parametrize("flip_slices", [False, True])
def test_dicom_read_by_highdicom(tmp_path: Path, flip_slices: bool) -> None:
    """highdicom reads each file and rebuilds each phase volume with our geometry and intensities."""
    study = make_study(flip_slices=flip_slices, n_phases=3)
    paths = write_dicom_cine(study, tmp_path, uid_seed="hd")
    image = hd.imread(paths[0])
    assert isinstance(image, hd.Image) and image.SOPClassUID == MR_IMAGE_STORAGE
    slope = float(pydicom.dcmread(paths[0], stop_before_pixels=True).RescaleSlope)
    for t in range(study.n_phases):
        datasets = [pydicom.dcmread(p) for p in paths[t :: study.n_phases]]
        volume = hd.get_volume_from_series(datasets)
        assert volume.array.shape == (study.n_slices, 20, 24)
        reversed_slices = float(np.dot(volume.affine[:3, 0], study.affine_lps[:3, 2])) < 0
        np.testing.assert_allclose(volume.affine, _expected_highdicom_affine(study, reversed_slices), atol=1e-4)
        array = volume.array[::-1] if reversed_slices else volume.array
        np.testing.assert_allclose(array, study.image[t], rtol=0, atol=slope / 2 * (1 + 1e-9) + 1e-9)
        assert volume.frame_of_reference_uid == datasets[0].FrameOfReferenceUID


def test_dicom_uids_consistent_and_deterministic(tmp_path: Path) -> None:
    study = make_study(n_phases=2, n_slices=2)
    first = write_dicom_cine(study, tmp_path / "a", uid_seed="seed-1")
    again = write_dicom_cine(study, tmp_path / "b", uid_seed="seed-1")
    other = write_dicom_cine(study, tmp_path / "c", uid_seed="seed-2")
    rand1 = write_dicom_cine(study, tmp_path / "d")
    rand2 = write_dicom_cine(study, tmp_path / "e")
    for p, q in zip(first, again, strict=True):
        assert p.read_bytes() == q.read_bytes()

    def uids(paths: list[Path]) -> tuple[set[str], set[str], set[str], set[str]]:
        dss = [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]
        return (
            {d.StudyInstanceUID for d in dss},
            {d.SeriesInstanceUID for d in dss},
            {d.FrameOfReferenceUID for d in dss},
            {d.SOPInstanceUID for d in dss},
        )

    study_uids, series_uids, for_uids, sop_uids = uids(first)
    assert len(study_uids) == len(series_uids) == len(for_uids) == 1
    assert len(sop_uids) == len(first)
    all_uids = study_uids | series_uids | for_uids | sop_uids
    assert len(all_uids) == len(first) + 3
    assert all(pydicom.uid.UID(u).is_valid for u in all_uids)
    assert uids(other)[0].isdisjoint(study_uids) and uids(other)[3].isdisjoint(sop_uids)
    assert uids(rand1)[0] != uids(rand2)[0] and uids(rand1)[3].isdisjoint(uids(rand2)[3])


def test_dicom_given_ids_and_missing_meta(tmp_path: Path) -> None:
    study = make_study(n_phases=2, n_slices=2, meta={})
    study.vendor = "ge"
    study.slice_thickness_mm = None
    given = pydicom.uid.generate_uid()
    paths = write_dicom_cine(study, tmp_path, patient_id="ANON01", study_uid=given, file_prefix="SA")
    ds = pydicom.dcmread(paths[0])
    assert paths[0].name == "SA_000_000.dcm"
    assert ds.StudyInstanceUID == given and ds.PatientID == "ANON01"
    assert ds.Manufacturer == "GE MEDICAL SYSTEMS" and float(ds.MagneticFieldStrength) == 1.5
    assert float(ds.SliceThickness) == 8.0 and ds.PatientSex == "O"
    assert "PatientSize" not in ds and "PatientWeight" not in ds and "PatientAge" not in ds


def test_dicom_negative_intensities_use_the_intercept(tmp_path: Path) -> None:
    study = make_study(n_phases=2, n_slices=1)
    study.image -= 100.0
    ds = pydicom.dcmread(write_dicom_cine(study, tmp_path)[0])
    slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
    assert intercept == pytest.approx(float(study.image.min()))
    value = ds.pixel_array * slope + intercept
    np.testing.assert_allclose(value, study.image[0, 0], rtol=0, atol=slope / 2 * (1 + 1e-9) + 1e-9)


def test_dicom_manufacturer_from_meta(tmp_path: Path) -> None:
    study = make_study(n_phases=2, n_slices=1, meta={"manufacturer": "Toshiba", "scanner": "Vantage"})
    study.vendor = "reference"
    ds = pydicom.dcmread(write_dicom_cine(study, tmp_path)[0])
    assert (ds.Manufacturer, ds.ManufacturerModelName) == ("Toshiba", "Vantage")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"series_number": 0}, "`series_number`"),
        ({"series_description": ""}, "`series_description`"),
        ({"file_prefix": "a/b"}, "`file_prefix`"),
        ({"study_uid": "1.2.abc"}, "`study_uid`"),
        ({"patient_id": "x" * 65}, "`patient_id`"),
    ],
)
def test_dicom_bad_arguments(tmp_path: Path, kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        write_dicom_cine(make_study(n_phases=2, n_slices=1), tmp_path / "d", **kwargs)


def test_dicom_out_dir_is_a_file_and_bad_image(tmp_path: Path) -> None:
    afile = tmp_path / "not_a_dir.dcm"
    afile.write_text("x")
    with pytest.raises(ValueError, match=r"`out_dir`.*not_a_dir\.dcm.*not a directory"):
        write_dicom_cine(make_study(), afile)
    study = make_study()
    study.image[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"`image` of philips-001 must hold finite"):
        write_dicom_cine(study, tmp_path / "d")


def test_localizer_and_long_axis_series_share_the_study(tmp_path: Path) -> None:
    study = make_study()
    sa = write_dicom_cine(study, tmp_path, uid_seed="s")
    extra = write_dicom_localizers(study, tmp_path, sa[0], uid_seed="s", n_lax_phases=3)
    assert [p.name for p in extra] == [
        "LOC_000_000.dcm",
        "LAX_000_000.dcm",
        "LAX_000_001.dcm",
        "LAX_000_002.dcm",
    ]
    ref = pydicom.dcmread(sa[0])
    sa_normal = np.cross(*np.reshape([float(v) for v in ref.ImageOrientationPatient], (2, 3)))
    by_series: dict[str, list[pydicom.Dataset]] = {}
    for path in extra:
        ds = pydicom.dcmread(path)
        hd.imread(path)
        by_series.setdefault(ds.SeriesInstanceUID, []).append(ds)
        assert ds.StudyInstanceUID == ref.StudyInstanceUID
        assert ds.FrameOfReferenceUID == ref.FrameOfReferenceUID
        assert ds.PatientID == ref.PatientID and ds.SOPClassUID == MR_IMAGE_STORAGE
        normal = np.cross(*np.reshape([float(v) for v in ds.ImageOrientationPatient], (2, 3)))
        assert abs(float(np.dot(normal, sa_normal))) < 0.9  # not a short-axis plane
    assert len(by_series) == 2 and ref.SeriesInstanceUID not in by_series
    loc, lax = sorted(by_series.values(), key=len)
    assert len(loc) == 1 and "LOCALIZER" in loc[0].ImageType and loc[0].SeriesNumber == 1
    assert len(lax) == 3 and {d.SeriesNumber for d in lax} == {2}
    assert [float(d.TriggerTime) for d in lax] == pytest.approx(list(study.trigger_times_ms[[0, 2, 4]]))
    lax_normal = np.cross(*np.reshape([float(v) for v in lax[0].ImageOrientationPatient], (2, 3)))
    assert abs(float(np.dot(lax_normal, sa_normal))) < 1e-6  # long axis: perpendicular to short axis
    assert all(d.pixel_array.max() > 0 for d in lax + loc)  # cuts through the heart, not empty
    again = write_dicom_localizers(study, tmp_path / "again", sa[0], uid_seed="s", n_lax_phases=3)
    assert [p.read_bytes() for p in again] == [p.read_bytes() for p in extra]


def test_localizers_bad_input(tmp_path: Path) -> None:
    study = make_study(n_phases=2, n_slices=1)
    with pytest.raises(ValueError, match=r"`reference_file`.*missing\.dcm"):
        write_dicom_localizers(study, tmp_path, tmp_path / "missing.dcm", n_lax_phases=2)
    sa = write_dicom_cine(study, tmp_path)
    with pytest.raises(ValueError, match=r"`n_lax_phases`"):
        write_dicom_localizers(study, tmp_path, sa[0], n_lax_phases=3)
    with pytest.raises(ValueError, match=r"`series_numbers`"):
        write_dicom_localizers(study, tmp_path, sa[0], n_lax_phases=2, series_numbers=(2, 2))


# --------------------------------------------------------------------------------------------
# truth table, atomic writes
# --------------------------------------------------------------------------------------------


def _truth_studies() -> list[CineStudy]:
    a = make_study("a", n_phases=2, es_phase=1)
    b = make_study("b", n_phases=2, es_phase=1, meta={})
    b.truth = {"lv_edv_ml": 99.125, "rv_edv_ml": 101.0}
    return [a, b]


def test_write_truth_csv_and_json(tmp_path: Path) -> None:
    studies = _truth_studies()
    columns = [
        "subject_id", "vendor", "group", "n_phases", "n_slices", "ed_phase", "es_phase",
        "spacing_z_mm", "spacing_y_mm", "spacing_x_mm", "lv_edv_ml", "lv_ef_pct", "rv_edv_ml",
    ]  # fmt: skip
    csv_path = write_truth(studies, tmp_path / "sub" / "truth.csv")
    with open(csv_path, newline="") as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == columns
        rows = list(reader)
    assert rows[0]["subject_id"] == "a" and rows[0]["group"] == "HCM" and rows[1]["group"] == "NOR"
    assert float(rows[0]["lv_edv_ml"]) == 120.25 and rows[0]["rv_edv_ml"] == ""
    assert float(rows[1]["lv_edv_ml"]) == 99.125 and rows[1]["lv_ef_pct"] == ""
    assert (rows[0]["ed_phase"], rows[0]["es_phase"], rows[0]["spacing_y_mm"]) == ("0", "1", "1.25")
    rows_json = json.loads(write_truth(studies, tmp_path / "truth.json").read_text())
    assert [list(r) for r in rows_json] == [columns, columns]
    assert rows_json[1]["lv_ef_pct"] is None and rows_json[1]["rv_edv_ml"] == 101.0
    assert rows_json[0]["spacing_z_mm"] == 8.0 and rows_json[0]["vendor"] == "philips"


@pytest.mark.parametrize(
    "name, change, match",
    [
        ("truth.txt", None, r"\.csv or \.json"),
        ("t.csv", "duplicate", "twice"),
        ("t.csv", "reserved", "reserved column"),
        ("t.json", "nan", "finite"),
    ],
)
def test_write_truth_bad_input(tmp_path: Path, name: str, change: str | None, match: str) -> None:
    studies = _truth_studies()
    if change == "duplicate":
        studies[1].subject_id = "a"
    elif change == "reserved":
        studies[0].truth["vendor"] = 1.0
    elif change == "nan":
        studies[0].truth["lv_edv_ml"] = float("nan")
    with pytest.raises(ValueError, match=match):
        write_truth(studies, tmp_path / name)


def test_interrupted_write_keeps_the_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_truth(_truth_studies(), tmp_path / "truth.csv")
    before = path.read_bytes()

    def crash(src: object, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        write_truth(_truth_studies()[:1], path)
    assert path.read_bytes() == before
    _no_partials(tmp_path)
    with pytest.raises(OSError, match="disk full"):
        write_dicom_cine(make_study(n_phases=2, n_slices=1), tmp_path / "d")
    assert list((tmp_path / "d").iterdir()) == []


def test_seeded_uids_do_not_collide_across_slice_and_phase(tmp_path):
    """(slice 11, phase 0) and (slice 1, phase 10) once shared a SOPInstanceUID (concatenated seeds)."""
    study = make_study(n_phases=11, n_slices=12)
    paths = write_dicom_cine(study, tmp_path, uid_seed="collide")
    uids = [pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in paths]
    assert len(set(uids)) == len(uids)
