"""The site application end to end: a model pretrained through the bundle, phantom DICOM studies.

One session fixture pretrains the quick profile through the bundle (``run_workflow("train")``) on a
small phantom reference site; one batch run (through ``cardiolora segment``) then segments a
folder holding one good phantom DICOM study, a NIfTI stack and every kind of bad input, and the
tests read what it wrote: DICOM SEG (highdicom and pydicom), NIfTI geometry, the report, the CSV,
the PNGs, and the accuracy against the phantom's truth.

Speed: the machine has 2 cores shared with other jobs; with two intra-op threads a busy core
stalls PyTorch's OpenMP barriers (measured: 32 vs 5.5 ms per 112x112 slice), so the heavy fixtures
run with one thread (restored afterwards).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import json
import shutil
import time
from pathlib import Path

import highdicom as hd
import matplotlib.image as mpimg
import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch

from cardiolora.bundle import run_workflow
from cardiolora.cli import main
from cardiolora.clinical import mosteller_bsa
from cardiolora.data.cine import LPS_TO_RAS, nifti_affine
from cardiolora.data.generate import SiteSpec, generate_sites
from cardiolora.data.phantom import make_subject
from cardiolora.dicom import read_short_axis_cine
from cardiolora.dicom.mr_writer import write_dicom_cine, write_dicom_localizers
from cardiolora.metrics import dice
from cardiolora.networks import lora_unet, plain_state_dict
from cardiolora.site import outputs as site_outputs
from cardiolora.site.app import find_studies, run_study
from cardiolora.site.workflow import load_workflow

#: The pretraining of the fixture: subjects of the phantom reference site, epochs, learning rate.
#: Augmentation is reduced to a random crop (the test studies come from the same scanner profile)
#: and validation runs every VAL_INTERVAL epochs, to fit the CI budget (see the module docstring).
PRETRAIN_SUBJECTS = 16
PRETRAIN_EPOCHS = 20
PRETRAIN_LR = 3e-3
PRETRAIN_BATCH = 8
VAL_INTERVAL = 4
#: The good test study of the batch (DICOM) and a second subject segmented in memory: phantom
#: subjects that are not in the training site (its seeds come from SeedSequence), 12 phases.
TEST_SEED = 1005
SECOND_SEED = 1001
TEST_PHASES = 12
SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"


@contextlib.contextmanager
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """Pretrain the quick profile through the bundle on a small phantom reference site."""
    root = tmp_path_factory.mktemp("site-pretrain")
    start = time.time()
    with one_thread():
        generate_sites(root / "phantoms", (SiteSpec("reference", "reference", PRETRAIN_SUBJECTS),), seed=11,
                       dicom_subjects=0, progress=False)  # fmt: skip
        run_workflow(
            "train",
            {
                "dataset_dir": str(root / "phantoms" / "sites" / "reference"),
                "output_dir": str(root / "run"),
                "model_dir": str(root / "run"),
                "max_epochs": PRETRAIN_EPOCHS,
                "learning_rate": PRETRAIN_LR,
                "val_interval": VAL_INTERVAL,
                "train#dataloader#batch_size": PRETRAIN_BATCH,
                "train#random_transforms": "$[monai.transforms.RandSpatialCropd(keys=['image', 'label'], "
                "roi_size=@spatial_size, random_size=False), "
                "monai.transforms.EnsureTyped(keys=['image', 'label'], track_meta=False)]",
                "progress": False,
                "resume": False,
            },
        )
    curve = json.loads((root / "run" / "val_curve.json").read_text())
    dice_per_epoch = [r["val_slice_dice"] for r in curve if r["val_slice_dice"] is not None]
    print(f"\npretraining: {time.time() - start:.0f} s; validation slice Dice {dice_per_epoch}")
    return root / "run" / "model.pt"


# --------------------------------------------------------------------------------------------
# the batch: one good DICOM study, a NIfTI stack, and bad input of every kind
# --------------------------------------------------------------------------------------------


def _edit(path: Path, change) -> None:
    ds = pydicom.dcmread(path)
    change(ds)
    ds.save_as(path, enforce_file_format=True)


def _copy_sa(src: Path, dst: Path, keep=lambda p: True) -> Path:
    dst.mkdir(parents=True)
    for p in sorted(src.glob("IM_*.dcm")):
        if keep(p):
            shutil.copy(p, dst / p.name)
    return dst


def _duplicate_with_other_pixels(folder: Path) -> None:
    ds = pydicom.dcmread(folder / "IM_002_003.dcm")
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    pixels = ds.pixel_array.copy()
    pixels[0, 0] += 1
    ds.PixelData = pixels.tobytes()
    ds.save_as(folder / "copy_of_IM_002_003", enforce_file_format=True)


#: id -> (how the study folder is made from the good one, part of the reason the CSV must give)
BAD_STUDIES = {
    "not-dicom": (None, "no DICOM image series found"),
    "truncated": ("truncated", "IM_001_002.dcm: PixelData holds"),
    "no-geometry": ("no-geometry", "IM_000_001.dcm lacks ImagePositionPatient"),
    "no-short-axis": ("no-short-axis", "no short-axis cine series found among 2 series"),
    "single-phase": ("single-phase", "1 phase per slice position"),
    "spacing-differs": ("spacing-differs", "PixelSpacing differs within the series"),
    "duplicate-instance": ("duplicate", "two different images at the same slice position"),
    "corrupt": ("corrupt-nifti", "corrupt.nii.gz: not a readable NIfTI file"),
    "notes.txt": ("loose-file", "not a study"),
}


def _make_bad(kind: str | None, good: Path, batch: Path, name: str) -> None:
    folder = batch / name
    if kind is None:
        folder.mkdir()
        (folder / "readme.txt").write_text("not an image")
        (folder / "scan.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    elif kind == "truncated":
        _copy_sa(good, folder)
        data = (folder / "IM_001_002.dcm").read_bytes()
        (folder / "IM_001_002.dcm").write_bytes(data[: int(len(data) * 0.6)])
    elif kind == "no-geometry":
        _copy_sa(good, folder)
        _edit(folder / "IM_000_001.dcm", lambda ds: delattr(ds, "ImagePositionPatient"))
    elif kind == "no-short-axis":
        folder.mkdir()
        for p in list(good.glob("LOC_*.dcm")) + list(good.glob("LAX_*.dcm")):
            shutil.copy(p, folder / p.name)
    elif kind == "single-phase":
        _copy_sa(good, folder, keep=lambda p: p.stem.endswith("_000"))
    elif kind == "spacing-differs":
        _copy_sa(good, folder)
        _edit(folder / "IM_003_004.dcm", lambda ds: setattr(ds, "PixelSpacing", ["1.1", "1.1"]))
    elif kind == "duplicate":
        _copy_sa(good, folder)
        _duplicate_with_other_pixels(folder)
    elif kind == "corrupt-nifti":
        (batch / "corrupt.nii.gz").write_bytes(b"\x1f\x8b" + bytes(200))
    elif kind == "loose-file":
        (batch / "notes.txt").write_text("a loose file")


@pytest.fixture(scope="module")
def subject():
    return make_subject(TEST_SEED, "reference", subject_id=f"test-{TEST_SEED}", n_phases=TEST_PHASES)


@pytest.fixture(scope="module")
def batch(trained, subject, tmp_path_factory):
    """Run ``cardiolora segment BATCH --out OUT`` once; return (batch folder, out folder, exit code)."""
    root = tmp_path_factory.mktemp("site-batch")
    batch = root / "studies"
    good = batch / "good"
    files = write_dicom_cine(subject, good / "SA", uid_seed="good")
    write_dicom_localizers(subject, good / "other", files[0], uid_seed="good")
    for p in list((good / "SA").iterdir()) + list((good / "other").iterdir()):
        shutil.move(p, good / p.name)  # flat: the helpers copy IM_/LOC_/LAX_ files by name
    (good / "SA").rmdir(), (good / "other").rmdir()
    for name, (kind, _) in BAD_STUDIES.items():
        _make_bad(kind, good, batch, name)
    stack = subject.image[0].transpose(2, 1, 0)  # ED phase (X, Y, Z)
    nib.save(nib.Nifti1Image(stack, nifti_affine(subject.affine_lps)), batch / "stack.nii.gz")
    out = root / "out"
    with one_thread():
        code = main(["segment", str(batch), "--out", str(out), "--model", str(trained), "--no-progress"])
    return batch, out, code


def _csv_rows(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "studies.csv", newline="") as fh:
        return {r["study"]: r for r in csv.DictReader(fh)}


def test_batch_exit_code_and_csv_list_every_study(batch):
    _, out, code = batch
    assert code == 3
    rows = _csv_rows(out)
    assert set(rows) == {"good", "stack", *BAD_STUDIES}
    assert rows["good"]["status"] == "done" and rows["stack"]["status"] == "done"
    for name, (_, reason) in BAD_STUDIES.items():
        assert rows[name]["status"] == "skipped", name
        assert reason in rows[name]["reason"], (name, rows[name]["reason"])
        assert not (out / name).exists()
    run = json.loads((out / "run.json").read_text())
    assert run["counts"] == {"done": 2, "skipped": len(BAD_STUDIES)} and run["exit_code"] == 3
    assert not list(out.glob(".*")), "temporary folders left behind"


def test_good_study_outputs_are_complete(batch):
    _, out, _ = batch
    study = out / "good"
    names = {p.relative_to(study).as_posix() for p in study.rglob("*") if p.is_file()}
    expected = {"report.json", "report.csv", "overlay_ed_es.png", "volume_curve.png"}
    expected |= {f"nifti/{n}.nii.gz" for n in ("image", "labels", "labels_ED", "labels_ES")}
    expected |= {"seg/seg.dcm", "sr/measurements.dcm"}
    assert names == expected
    for png in ("overlay_ed_es.png", "volume_curve.png"):
        assert mpimg.imread(study / png).shape[0] > 300


def _labels_tzyx(study: Path) -> np.ndarray:
    return np.asarray(nib.load(study / "nifti" / "labels.nii.gz").dataobj).transpose(3, 2, 1, 0)


def test_accuracy_against_the_phantom_truth(batch, subject):
    """Dice > 0.85 per structure; EF within 5 points, EDV within 10 %; ED / ES phases right."""
    _, out, _ = batch
    labels = _labels_tzyx(out / "good")
    scores = {k: dice(labels == k, subject.label == k) for k in (1, 2, 3)}
    assert min(scores.values()) > 0.85, scores
    report = json.loads((out / "good" / "report.json").read_text())
    f, truth = report["function"], subject.truth
    assert (f["ed_phase"], f["es_phase"]) == (subject.ed_phase, subject.es_phase)
    assert abs(f["lv_ef_pct"] - truth["lv_ef_pct"]) < 5.0, (f["lv_ef_pct"], truth["lv_ef_pct"])
    assert abs(f["lv_edv_ml"] - truth["lv_edv_ml"]) < 0.10 * truth["lv_edv_ml"]
    assert abs(f["rv_edv_ml"] - truth["rv_edv_ml"]) < 0.10 * truth["rv_edv_ml"]


def test_accuracy_on_a_second_subject(trained, subject):
    """The application's segmentation step on another held-out subject, in memory (no DICOM)."""
    from cardiolora.clinical import cardiac_function

    other = make_subject(SECOND_SEED, "reference", n_phases=TEST_PHASES)
    workflow = load_workflow({"model": str(trained), "progress": False})
    with one_thread():
        labels, _ = workflow.postprocessing(workflow.inferer(other))
    scores = {k: dice(labels == k, other.label == k) for k in (1, 2, 3)}
    assert min(scores.values()) > 0.85, scores
    f, truth = cardiac_function(labels, other.spacing_zyx), other.truth
    assert abs(f["lv_ef_pct"] - truth["lv_ef_pct"]) < 5.0, (f["lv_ef_pct"], truth["lv_ef_pct"])
    assert abs(f["lv_edv_ml"] - truth["lv_edv_ml"]) < 0.10 * truth["lv_edv_ml"]
    assert abs(f["rv_edv_ml"] - truth["rv_edv_ml"]) < 0.10 * truth["rv_edv_ml"]


def test_report_fields(batch, subject, trained):
    batch_dir, out, _ = batch
    report = json.loads((out / "good" / "report.json").read_text())
    assert report["series"]["series_description"] == "SA cine" and report["series"]["series_number"] == 5
    f = report["function"]
    bsa = mosteller_bsa(subject.meta["height_cm"], subject.meta["weight_kg"])
    assert f["bsa_m2"] == pytest.approx(bsa, rel=1e-3)  # PatientSize is stored in m with 4 decimals
    assert f["lv_edv_i_ml_m2"] == pytest.approx(f["lv_edv_ml"] / f["bsa_m2"])
    assert f["lv_mass_g"] == pytest.approx(1.05 * report["volume_curve_ml"]["MYO"][f["ed_phase"]])
    assert f["lv_sv_ml"] == pytest.approx(f["lv_edv_ml"] - f["lv_esv_ml"])
    assert len(report["volume_curve_ml"]["LV"]) == TEST_PHASES
    assert report["volume_curve_ml"]["LV"][f["ed_phase"]] == max(report["volume_curve_ml"]["LV"])
    assert report["model"]["model_sha256"] == hashlib.sha256(trained.read_bytes()).hexdigest()
    assert {"cardiolora", "torch", "monai", "pydicom", "highdicom"} <= set(report["versions"])
    assert report["phases"]["trigger_times_ms"] == pytest.approx(list(subject.trigger_times_ms), abs=1e-3)
    row = _csv_rows(out)["good"]
    assert float(row["lv_ef_pct"]) == pytest.approx(f["lv_ef_pct"], rel=1e-5)
    assert row["model_sha256"] == report["model"]["model_sha256"]
    with open(out / "good" / "report.csv", newline="") as fh:
        [own] = list(csv.DictReader(fh))
    assert own["lv_edv_ml"] == row["lv_edv_ml"]


def test_dicom_seg_round_trip(batch):
    """One SEG object for the study reads back (highdicom) as the label map of every phase and slice."""
    batch_dir, out, _ = batch
    cine = read_short_axis_cine(batch_dir / "good")
    labels = _labels_tzyx(out / "good")
    path = out / "good" / "seg" / "seg.dcm"
    seg = hd.seg.segread(path)
    for t in range(TEST_PHASES):
        sources = cine.meta["source_sop_instance_uids"][t]
        pixels = seg.get_pixels_by_source_instance(source_sop_instance_uids=sources, combine_segments=True)
        np.testing.assert_array_equal(pixels, labels[t])
    ds = pydicom.dcmread(path)
    assert ds.SOPClassUID == SEG_STORAGE and ds.Modality == "SEG" and ds.SegmentationType == "BINARY"
    assert int(ds.NumberOfFrames) == TEST_PHASES * labels.shape[1] * 3
    assert ds.StudyInstanceUID == cine.meta["study_instance_uid"]
    assert ds.FrameOfReferenceUID == cine.meta["frame_of_reference_uid"]
    referenced = {
        item.ReferencedSOPInstanceUID
        for frame in ds.PerFrameFunctionalGroupsSequence
        for deriv in frame.DerivationImageSequence
        for item in deriv.SourceImageSequence
    }
    listed = {i.ReferencedSOPInstanceUID for i in ds.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    every_source = {uid for row in cine.meta["source_sop_instance_uids"] for uid in row}
    assert referenced == listed == every_source
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == cine.meta["series_instance_uid"]
    segments = {s.SegmentNumber: s for s in ds.SegmentSequence}
    expected = {1: ("LV cavity", "87878005"), 2: ("LV myocardium", "49848007"), 3: ("RV cavity", "53085002")}
    for number, (label, code) in expected.items():
        s = segments[number]
        assert s.SegmentLabel == label and s.SegmentedPropertyTypeCodeSequence[0].CodeValue == code
        assert s.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "91723000"
        assert s.SegmentAlgorithmType == "AUTOMATIC"
        alg = s.SegmentationAlgorithmIdentificationSequence[0]
        assert alg.AlgorithmName == "cardiolora" and alg.AlgorithmFamilyCodeSequence[0].CodeValue == "123110"


def test_nifti_outputs_lie_where_the_dicom_voxels_lie(batch, subject):
    batch_dir, out, _ = batch
    cine = read_short_axis_cine(batch_dir / "good")
    image = nib.load(out / "good" / "nifti" / "image.nii.gz")
    labels = nib.load(out / "good" / "nifti" / "labels.nii.gz")
    ed = nib.load(out / "good" / "nifti" / "labels_ED.nii.gz")
    assert image.shape == labels.shape == (*cine.image.shape[:0:-1], TEST_PHASES)
    for img in (labels, ed):
        np.testing.assert_allclose(img.affine, image.affine, atol=1e-6)
    # voxel (x, y, z) of the NIfTI is pixel (row y, column x) of the slice-z file, in RAS
    for t, z, y, x in ((0, 0, 0, 0), (3, 2, 10, 20), (TEST_PHASES - 1, subject.n_slices - 1, 100, 50)):
        ds = pydicom.dcmread(cine.meta["source_files"][t][z])
        o = np.asarray(ds.ImageOrientationPatient, dtype=float)
        row_mm, col_mm = (float(v) for v in ds.PixelSpacing)
        lps = np.asarray(ds.ImagePositionPatient, dtype=float) + x * col_mm * o[:3] + y * row_mm * o[3:]
        np.testing.assert_allclose(image.affine @ [x, y, z, 1], LPS_TO_RAS @ [*lps, 1], atol=1e-3)
        stored = ds.pixel_array[y, x] * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        assert np.asarray(image.dataobj)[x, y, z, t] == pytest.approx(stored, rel=1e-5)
    report = json.loads((out / "good" / "report.json").read_text())
    np.testing.assert_array_equal(np.asarray(ed.dataobj), np.asarray(labels.dataobj)[..., report["phases"]["ed_phase"]])


def test_nifti_stack_input_keeps_its_grid(batch):
    """A 3D NIfTI stack: one phase, labels with the input's shape and affine, no EF."""
    batch_dir, out, _ = batch
    src = nib.load(batch_dir / "stack.nii.gz")
    labels = nib.load(out / "stack" / "nifti" / "labels.nii.gz")
    assert labels.shape == src.shape
    np.testing.assert_allclose(labels.affine, src.affine, atol=1e-6)
    report = json.loads((out / "stack" / "report.json").read_text())
    assert report["function"] is None and any("single phase" in w for w in report["warnings"])
    assert report["volume_curve_ml"]["LV"][0] > 0
    assert not (out / "stack" / "seg").exists()


# --------------------------------------------------------------------------------------------
# single studies, arguments, overwrite (a random quick network on a tiny stack: fast)
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 4-phase 2D+t NIfTI (48 x 40 x 2 x 4) and random quick weights."""
    root = tmp_path_factory.mktemp("tiny")
    s = make_subject(7, "philips", n_phases=4)
    cine = s.image[:, 3:5, 80:120, 60:108]  # (T, Z, Y, X), cropped around nothing in particular
    img = nib.Nifti1Image(cine.transpose(3, 2, 1, 0), np.diag([1.5, 1.5, 8.0, 1.0]))
    img.header.set_xyzt_units("mm", "msec")
    zooms = list(img.header.get_zooms())
    zooms[3] = 40.0
    img.header.set_zooms(zooms)
    nib.save(img, root / "tiny.nii.gz")
    torch.manual_seed(0)
    torch.save(plain_state_dict(lora_unet("quick")), root / "model.pt")
    return root


def _segment(tiny: Path, *extra: str) -> int:
    return main(["segment", str(tiny / "tiny.nii.gz"), "--out", str(tiny / "out"), "--model", str(tiny / "model.pt"),
                 "--no-progress", *extra])  # fmt: skip


def test_existing_output_is_refused_then_replaced_atomically(tiny, capsys):
    shutil.rmtree(tiny / "out", ignore_errors=True)
    assert _segment(tiny) == 0
    report = tiny / "out" / "tiny" / "report.json"
    first = report.read_bytes()
    (tiny / "out" / "tiny" / "marker").write_text("from the first run")
    assert _segment(tiny) == 2
    assert "exists; a finished output is never overwritten" in capsys.readouterr().err
    assert report.read_bytes() == first and (tiny / "out" / "tiny" / "marker").exists()
    assert _segment(tiny, "--overwrite") == 0
    assert not (tiny / "out" / "tiny" / "marker").exists(), "the old output was not replaced"
    assert json.loads(report.read_text())["phases"]["trigger_times_ms"] == [0.0, 40.0, 80.0, 120.0]
    assert sorted(p.name for p in (tiny / "out").iterdir()) == ["tiny"]


def test_a_failure_while_writing_keeps_the_old_output(tiny, monkeypatch):
    shutil.rmtree(tiny / "out", ignore_errors=True)
    assert _segment(tiny) == 0
    before = (tiny / "out" / "tiny" / "report.json").read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(site_outputs, "write_nifti_outputs", broken)
    assert _segment(tiny, "--overwrite") == 1
    assert (tiny / "out" / "tiny" / "report.json").read_bytes() == before
    assert sorted(p.name for p in (tiny / "out").iterdir()) == ["tiny"], "temporary folder left behind"


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["--max-gb", "0.00001"], 2, r"GiB\) of float32 memory"),
        (["--model", "absent.pt"], 2, r"absent\.pt: no such file"),
        (["--profile", "paper"], 2, "does not fit the 'paper' profile"),
        (["--series", "5"], 2, "--series applies to DICOM input"),
        (["--device", "cuda:3"], 2, "CUDA is not available|not a torch device"),
        (["--max-gb", "-1"], 2, "--max-gb must be positive"),
    ],
    ids=["too-large", "missing-model", "incompatible-model", "series-on-nifti", "absent-gpu", "bad-max-gb"],
)
def test_bad_single_study_or_arguments_exit_2(tiny, capsys, args, code, message):
    if torch.cuda.is_available() and "cuda:3" in args:
        pytest.skip("a GPU is present")
    shutil.rmtree(tiny / "out", ignore_errors=True)
    args = [str(tiny / a) if a.endswith(".pt") else a for a in args]
    assert _segment(tiny, *args) == code
    import re

    assert re.search(message, capsys.readouterr().err)


def test_missing_input_exits_2(tiny, capsys):
    assert main(["segment", str(tiny / "absent"), "--out", str(tiny / "o"), "--model", str(tiny / "model.pt")]) == 2
    assert "absent: no such file or folder" in capsys.readouterr().err


def test_site_config_file(tiny):
    """--config: a JSON file with the site's settings; relative paths are relative to it."""
    shutil.rmtree(tiny / "cfg-out", ignore_errors=True)
    (tiny / "site.json").write_text(json.dumps({"model": "model.pt", "out": "cfg-out", "profile": "quick"}))
    assert main(["segment", str(tiny / "tiny.nii.gz"), "--config", str(tiny / "site.json"), "--no-progress"]) == 0
    assert (tiny / "cfg-out" / "tiny" / "report.json").is_file()
    (tiny / "bad.json").write_text(json.dumps({"modle": "model.pt"}))
    assert main(["segment", str(tiny / "tiny.nii.gz"), "--config", str(tiny / "bad.json")]) == 2


def test_segment_reads_the_inference_section_of_the_one_site_file(tiny, capsys):
    """The site file FLARE participants read (`fl` section) also holds the segment options (`inference`)."""
    shutil.rmtree(tiny / "sec-out", ignore_errors=True)
    site_file = {
        "fl": {"dataset_dir": "data", "output_dir": "fl-out"},
        "inference": {"model": "model.pt", "out": "sec-out", "profile": "quick", "progress": False},
    }
    (tiny / "cardiolora_site.json").write_text(json.dumps(site_file))
    assert main(["segment", str(tiny / "tiny.nii.gz"), "--config", str(tiny / "cardiolora_site.json")]) == 0
    assert (tiny / "sec-out" / "tiny" / "report.json").is_file() and not (tiny / "fl-out").exists()
    site_file["inference"]["sw_batch"] = 4
    (tiny / "cardiolora_site.json").write_text(json.dumps(site_file))
    assert main(["segment", str(tiny / "tiny.nii.gz"), "--config", str(tiny / "cardiolora_site.json")]) == 2
    assert "unknown keys ['sw_batch']" in capsys.readouterr().err


def test_segment_backend_flag(tiny):
    """--backend onnx: ONNX Runtime when the optional extra is installed, else PyTorch; the report says which."""
    import importlib.util

    installed = all(importlib.util.find_spec(m) for m in ("onnxruntime", "onnx", "onnxscript"))
    args = ["segment", str(tiny / "tiny.nii.gz"), "--model", str(tiny / "model.pt"), "--no-progress", "--overwrite"]
    args += ["--out", str(tiny / "onnx-out"), "--backend", "onnx", "--onnx-cache", str(tiny / "onnx-cache")]
    assert main(args) == 0
    model = json.loads((tiny / "onnx-out" / "tiny" / "report.json").read_text())["model"]
    assert model["backend"] == ("onnx" if installed else "torch")
    assert model["backend_info"]["requested"] == "onnx" and ("fallback" in model["backend_info"]) != installed


def test_run_study_without_postprocessing_reports_no_change(tiny):
    overrides = {"model": str(tiny / "model.pt"), "progress": False, "postprocess": False, "overwrite": True}
    [study], batch = find_studies(tiny / "tiny.nii.gz")
    assert not batch and study.kind == "nifti"
    outcome = run_study(study, load_workflow(overrides), tiny / "raw-out")
    assert outcome.status == "done"
    report = json.loads((tiny / "raw-out" / "tiny" / "report.json").read_text())
    assert report["postprocessing"] == {**report["postprocessing"], "applied": False, "voxels_changed": 0}


# --------------------------------------------------------------------------------------------
# what is a study, what is a batch
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_studies(tmp_path_factory):
    """Two tiny DICOM studies (different StudyInstanceUIDs), the second split in series folders."""
    root = tmp_path_factory.mktemp("layouts")
    s = make_subject(9, "siemens", n_phases=2)
    s = dataclasses.replace(s, image=np.ascontiguousarray(s.image[:, :2, :16, :16]), label=None)
    write_dicom_cine(s, root / "batch" / "a", uid_seed="a")
    files = write_dicom_cine(s, root / "batch" / "b" / "sa", uid_seed="b")
    write_dicom_localizers(s, root / "batch" / "b" / "loc", files[0], uid_seed="b", n_lax_phases=2)
    write_dicom_cine(s, root / "export" / "DICOM", uid_seed="c")
    return root / "batch"


@pytest.mark.parametrize(
    "where, names, is_batch",
    [
        ("batch", ["a", "b"], True),  # subfolders of different studies
        ("batch/b", ["b"], False),  # series subfolders of one study
        ("batch/a", ["a"], False),  # DICOM files at the top
        ("batch/a/IM_000_000.dcm", ["IM_000_000"], False),  # a single file
        ("export", ["export"], False),  # a single subfolder: STUDY/DICOM/...
    ],
    ids=["folder-of-studies", "series-subfolders", "flat-study", "single-file", "single-subfolder"],
)
def test_find_studies(two_studies, where, names, is_batch):
    studies, batch = find_studies(two_studies.parent / where)
    assert [s.name for s in studies] == names and batch == is_batch


# --------------------------------------------------------------------------------------------
# the real RVSC patient folder (DICOM series, contour folder, loose text files)
# --------------------------------------------------------------------------------------------


def test_rvsc_patient_folder_needs_and_obeys_drop(tiny, capsys):
    """One study (its contour folder is not a study); refused by default, read with drop."""
    from conftest import shared_data

    folder = shared_data("rvsc_dicom/patient09")
    assert [s.name for s in find_studies(folder)[0]] == ["patient09"]
    out = tiny / "rvsc"
    shutil.rmtree(out, ignore_errors=True)
    args = ["segment", str(folder), "--out", str(out), "--model", str(tiny / "model.pt"), "--no-progress"]
    assert main(args) == 2
    assert "2 at -39.25 mm (P09-0022.dcm), 2 at -30.85 mm (P09-0020.dcm), 20 at -22.45 mm" in capsys.readouterr().err
    assert main([*args, "--incomplete-positions", "drop"]) == 0
    report = json.loads((out / "patient09" / "report.json").read_text())
    assert report["geometry"]["shape_tzyx"] == [20, 1, 256, 216]
    assert sum("slice position dropped" in w for w in report["warnings"]) == 2
    assert report["status"] == "done" and report["outputs"]["dicom_seg"] == ["seg/seg.dcm"]
    seg = pydicom.dcmread(out / "patient09" / "seg" / "seg.dcm")
    assert int(seg.NumberOfFrames) == 20 * 1 * 3  # every phase of the kept position, three segments
    source = pydicom.dcmread(folder / "P09dicom" / "P09-0000.dcm", stop_before_pixels=True)
    refs = {r.ReferencedSOPInstanceUID for r in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert source.SOPInstanceUID in refs and len(refs) == 20  # the kept position's 20 files
