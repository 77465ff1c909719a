"""Phantom site generation: the three on-disk forms, truth, datalists, montage, reruns, the CLI."""

from __future__ import annotations

import csv
import json

import numpy as np
import pydicom
import pytest

from cardiolora.cli import main
from cardiolora.data.acdc import index_acdc
from cardiolora.data.generate import SiteSpec, generate_sites, subject_seed
from cardiolora.data.loaders import load_case
from cardiolora.data.mnms2 import index_mnms2
from cardiolora.data.phantom import make_subject


def test_every_site_is_written_in_all_three_forms(tiny_sites):
    root, manifest = tiny_sites
    assert manifest["complete"]
    mnms = index_mnms2(root / "mnms2")
    vendors = {r.vendor for r in mnms}
    assert len(vendors) == 4  # reference + 3 vendor profiles, one VENDOR value each
    for site, info in manifest["sites"].items():
        acdc = index_acdc(root / "acdc" / site)
        assert len(acdc) == 2 * info["n_subjects"]
        dicoms = list((root / "dicom" / site).rglob("IM_*.dcm"))
        assert dicoms, f"no DICOM cine for {site}"
        assert (root / info["datalist"]).is_file()
    assert (root / "montage.png").stat().st_size > 10_000


def test_nifti_layouts_hold_the_same_subject(tiny_sites):
    """ACDC (1 RV, 3 LV on disk) and M&Ms-2 (1 LV, 3 RV) read back to the same project labels."""
    root, _ = tiny_sites
    a = load_case(index_acdc(root / "acdc" / "reference")[0])
    m = load_case(sorted(index_mnms2(root / "mnms2"), key=lambda r: r.case_id)[0])
    np.testing.assert_array_equal(a.label, m.label)
    np.testing.assert_array_equal(a.image, m.image)
    assert a.spacing_zyx == pytest.approx(m.spacing_zyx)


def test_nifti_matches_the_generator(tiny_sites):
    root, manifest = tiny_sites
    study = make_subject(subject_seed(7, 1, 0), "ge", subject_id="site-1-001", phases="ed_es")
    case = [c for c in index_acdc(root / "acdc" / "site-1") if c.phase == "ED"][0]
    loaded = load_case(case)
    np.testing.assert_array_equal(loaded.label, study.label[study.ed_phase])
    np.testing.assert_allclose(loaded.image, study.image[study.ed_phase], rtol=1e-6)


def test_dicom_geometry_equals_the_nifti_geometry(tiny_sites):
    """DICOM read back with pydicom: same voxel grid and world coordinates as the NIfTI files."""
    import nibabel as nib

    root, _ = tiny_sites
    folder = sorted((root / "dicom" / "site-2").iterdir())[0]
    files = sorted(folder.glob("IM_*_000.dcm"))  # phase 0, every slice
    nii = nib.load(sorted((root / "acdc" / "site-2").glob("patient001/patient001_frame01.nii.gz"))[0])
    ras = nii.affine
    for z, f in enumerate(files):
        ds = pydicom.dcmread(f)
        ipp_lps = np.array([float(v) for v in ds.ImagePositionPatient])
        voxel_world_ras = ras @ np.array([0, 0, z, 1.0])
        np.testing.assert_allclose(ipp_lps, voxel_world_ras[:3] * np.array([-1, -1, 1]), atol=1e-3)
        assert (ds.Rows, ds.Columns) == (nii.shape[1], nii.shape[0])
        img = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        ref = np.asarray(nii.dataobj)[:, :, z].T
        assert np.abs(img - ref).max() <= float(ds.RescaleSlope)  # 12-bit storage step


def test_truth_table_and_datalists(tiny_sites):
    root, manifest = tiny_sites
    rows = list(csv.DictReader(open(root / "truth.csv")))
    assert len(rows) == sum(i["n_subjects"] for i in manifest["sites"].values())
    for r in rows:
        assert float(r["lv_edv_ml"]) > float(r["lv_esv_ml"]) > 0
    dl = json.loads((root / "sites" / "site-2" / "datalist.json").read_text())
    sides = {k: {e["patient_id"] for e in dl[k]} for k in ("train", "val", "test")}
    assert not (sides["train"] & sides["val"]) and not (sides["train"] & sides["test"])
    assert sum(len(v) for v in sides.values()) == 3


def test_rerun_reuses_and_other_settings_are_refused(tiny_sites):
    root, manifest = tiny_sites
    before = (root / "truth.csv").stat().st_mtime_ns
    again = generate_sites(
        root, [SiteSpec(**s) for s in manifest["settings"]["sites"]], seed=7, dicom_subjects=1, progress=False
    )
    assert again == manifest
    assert (root / "truth.csv").stat().st_mtime_ns == before
    with pytest.raises(ValueError, match="manifest.json: this folder holds phantoms generated with other settings"):
        generate_sites(root, [SiteSpec("reference", "reference", 5)], seed=7, progress=False)


def test_interrupted_generation_is_redone(tmp_path):
    sites = [SiteSpec("a", "ge", 3)]
    generate_sites(tmp_path, sites, seed=1, dicom_subjects=0, progress=False)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["complete"] = False  # as if the run had stopped before the end
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    again = generate_sites(tmp_path, sites, seed=1, dicom_subjects=0, progress=False)
    assert again["complete"] and len(index_acdc(tmp_path / "acdc" / "a")) == 6


@pytest.mark.parametrize(
    "sites, match",
    [
        ([], "empty"),
        ([SiteSpec("a", "ge", 3), SiteSpec("a", "ge", 3)], "duplicate"),
        ([SiteSpec("a", "toshiba", 3)], "unknown profile 'toshiba'"),
        ([SiteSpec("a", "ge", 2)], "n_subjects"),
    ],
)
def test_bad_site_lists(tmp_path, sites, match):
    with pytest.raises(ValueError, match=match):
        generate_sites(tmp_path, sites, progress=False)


def test_cli_phantoms_and_datalist(tmp_path, capsys):
    out = tmp_path / "ph"
    assert main(["phantoms", "--out", str(out), "--site", "x:philips:3", "--dicom-subjects", "0", "--no-progress"]) == 0
    assert "montage" in capsys.readouterr().out
    assert (
        main(
            [
                "datalist",
                "--source",
                str(out / "mnms2"),
                "--out",
                str(tmp_path / "ds"),
                "--split-by",
                "VENDOR",
                "--value",
                "philips",
            ]
        )
        == 0
    )
    dl = json.loads((tmp_path / "ds" / "datalist.json").read_text())
    assert len(dl["train"]) + len(dl["val"]) + len(dl["test"]) == 6


@pytest.mark.parametrize(
    "argv, message",
    [
        (["phantoms", "--out", "{tmp}/p", "--site", "x:nobody:3"], "unknown profile"),
        (["datalist", "--source", "{tmp}/nothing", "--out", "{tmp}/d"], "nothing"),
        (["pretrain", "--data", "{tmp}", "--out", "{tmp}/r", "--lora-rank", "4"], "--pretrained"),
    ],
)
def test_cli_bad_input_exits_2_with_a_message(tmp_path, capsys, argv, message):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
