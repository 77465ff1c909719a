"""Volume prediction, case evaluation, the pixdim fix and the checkpoint/curve handlers."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import shared_data
from ignite.engine import Engine, Events
from monai.data import MetaTensor

from cardiolora.data.dataset import load_datalist
from cardiolora.evaluation import case_dice, evaluate_to_files
from cardiolora.handlers import RENAMED_METRICS, MetricCurve, ResumableCheckpoint
from cardiolora.networks import lora_unet
from cardiolora.predict import predict_volume, predict_zyx
from cardiolora.transforms import SpacingFromPixdim, affine_with_spacing


def test_predict_keeps_the_input_grid():
    torch.manual_seed(0)
    net = lora_unet("quick")
    img = np.random.default_rng(0).random((5, 90, 70)).astype(np.float32)  # (Z, Y, X)
    lab = predict_zyx(net, img, (8.0, 1.3, 1.1), "quick")
    assert lab.shape == img.shape and lab.dtype == np.uint8
    probs = predict_volume(
        net, img.transpose(2, 1, 0), np.diag([1.1, 1.3, 8.0, 1.0]), "quick", return_probabilities=True
    )
    assert probs.shape == (4, 70, 90, 5)
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-4)  # interpolated softmax still sums to one
    np.testing.assert_array_equal(probs.argmax(0).transpose(2, 1, 0), lab)


@pytest.mark.parametrize(
    "image, affine, match",
    [
        (np.zeros((4, 4)), np.eye(4), "3D stack"),
        (np.full((4, 4, 2), np.nan), np.eye(4), "non-finite"),
        (np.zeros((4, 4, 2)), np.eye(3), "4x4"),
    ],
)
def test_predict_volume_errors(image, affine, match):
    with pytest.raises(ValueError, match=match):
        predict_volume(lora_unet("quick"), image, affine, "quick")


@pytest.mark.parametrize(
    "pred, gt, expected",
    [
        ("same", "same", 1.0),
        ("lv_only", "same", (1.0 + 0.0 + 0.0) / 3),  # MYO and RV missing in pred: Dice 0 each
        ("empty", "empty", 1.0),  # every structure absent from both counts 1
    ],
)
def test_case_dice(pred, gt, expected):
    full = np.zeros((2, 6, 6), np.uint8)
    full[:, 1:3, 1:3], full[:, 3:5, 3:5], full[:, 0, :] = 1, 2, 3
    arrays = {"same": full, "lv_only": np.where(full == 1, 1, 0).astype(np.uint8), "empty": np.zeros_like(full)}
    assert case_dice(arrays[pred], arrays[gt]) == pytest.approx(expected)


def test_evaluate_to_files_writes_the_paper_tables(tiny_sites, tmp_path):
    root, _ = tiny_sites
    records = load_datalist(root / "sites" / "site-1", "test")
    summary = evaluate_to_files(lora_unet("quick"), records, "quick", tmp_path)
    assert set(summary) == {"LV", "MYO", "RV", "mean"}
    rows = json.loads((tmp_path / "case_scores.json").read_text())
    assert [r["case_id"] for r in rows] == [r["case_id"] for r in records]
    header = (tmp_path / "case_scores.csv").read_text().splitlines()[0]
    assert "LV_dice" in header and "mean_assd" in header


def test_spacing_from_pixdim_fixes_unit_affines():
    img = MetaTensor(torch.zeros(1, 4, 4, 2), affine=torch.diag(torch.tensor([-1.0, -1.0, 1.0, 1.0])))
    img.meta["pixdim"] = np.array([1.0, 1.5625, 1.5625, 10.0, 0, 0, 0, 0])
    out = SpacingFromPixdim()(img)
    np.testing.assert_allclose(np.asarray(out.affine), np.diag([-1.5625, -1.5625, 10.0, 1.0]))
    same = MetaTensor(torch.zeros(1, 4, 4, 2), affine=torch.diag(torch.tensor([2.0, 2.0, 5.0, 1.0])))
    same.meta["pixdim"] = np.array([1.0, 2.0, 2.0, 5.0])
    np.testing.assert_array_equal(np.asarray(SpacingFromPixdim()(same).affine), np.diag([2.0, 2.0, 5.0, 1.0]))


def test_spacing_from_pixdim_on_real_acdc():
    """The published ACDC files store a unit sform; the fix recovers the header spacing."""
    from monai.transforms import LoadImage

    path = shared_data("acdc") / "patient001" / "patient001_frame01.nii.gz"
    img = SpacingFromPixdim()(LoadImage(image_only=True)(str(path)))
    zooms = nib.load(path).header.get_zooms()
    np.testing.assert_allclose(np.linalg.norm(np.asarray(img.affine)[:3, :3], axis=0), zooms, rtol=1e-6)


@pytest.mark.parametrize(
    "affine, spacing, match",
    [(np.eye(3), (1, 1, 1), "4x4"), (np.eye(4), (1, 0, 1), "positive"), (np.zeros((4, 4)), (1, 1, 1), "zero column")],
)
def test_affine_with_spacing_errors(affine, spacing, match):
    with pytest.raises(ValueError, match=match):
        affine_with_spacing(affine, spacing)


def _engine() -> Engine:
    """An engine whose step returns a loss, as SupervisedTrainer's output does."""
    return Engine(lambda engine, batch: {"loss": 0.5})


def test_resumable_checkpoint_refuses_a_corrupt_file(tmp_path):
    net = torch.nn.Linear(2, 2)
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    eng = _engine()
    ResumableCheckpoint(tmp_path, {"model": net}).attach(eng)
    with pytest.raises(RuntimeError, match="checkpoint.pt: cannot read the checkpoint"):
        eng.run([0], max_epochs=1)


def test_resumable_checkpoint_round_trip_and_curve(tmp_path):
    net = torch.nn.Linear(2, 2)
    evaluator = Engine(lambda e, b: None)
    evaluator.state.metrics = {"val_slice_dice": 0.5}
    eng = _engine()
    ResumableCheckpoint(tmp_path, {"model": net}, final_path=tmp_path / "final.pt").attach(eng)
    MetricCurve(tmp_path, "val_slice_dice", evaluator).attach(eng)
    eng.run([0, 1], max_epochs=2)
    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert saved["epoch"] == 2 and saved["iteration"] == 4
    assert (tmp_path / "final.pt").is_file() and (tmp_path / "val_curve.png").is_file()
    eng2 = _engine()
    ResumableCheckpoint(tmp_path, {"model": net}).attach(eng2)
    seen = []
    eng2.add_event_handler(Events.EPOCH_STARTED, lambda e: seen.append(e.state.epoch))
    eng2.run([0, 1], max_epochs=3)
    assert seen == [3]  # resumed after epoch 2
    assert [r["epoch"] for r in json.loads((tmp_path / "val_curve.json").read_text())] == [1, 2]


@pytest.mark.parametrize("old, new", sorted(RENAMED_METRICS.items()))
def test_metric_curve_resumes_a_run_started_under_the_old_metric_name(old, new, tmp_path):
    """A curve written as ``val_mean_dice`` / ``val_mean_dice_3d`` continues under the new name."""
    (tmp_path / "val_curve.json").write_text(json.dumps([{"epoch": 1, old: 0.25, "train_loss": 1.0}]))
    evaluator = Engine(lambda e, b: None)
    evaluator.state.metrics = {new: 0.5}
    eng = _engine()
    eng.add_event_handler(Events.STARTED, lambda e: setattr(e.state, "epoch", 1))
    MetricCurve(tmp_path, new, evaluator).attach(eng)
    eng.run([0], max_epochs=2)
    curve = json.loads((tmp_path / "val_curve.json").read_text())
    assert curve == [{"epoch": 1, new: 0.25, "train_loss": 1.0}, {"epoch": 2, new: 0.5, "train_loss": 0.5}]


@pytest.mark.parametrize("old, new", sorted(RENAMED_METRICS.items()))
def test_metric_curve_names_the_new_name_of_an_old_metric(old, new, tmp_path):
    """An override still setting `val_key_metric` to an old name fails at the first validation, naming both."""
    evaluator = Engine(lambda e, b: None)
    evaluator.state.metrics = {new: 0.5}
    eng = _engine()
    MetricCurve(tmp_path, old, evaluator).attach(eng)
    with pytest.raises(ValueError, match=rf"not `metric_name` '{old}'; '{old}' is the old name of '{new}'"):
        eng.run([0], max_epochs=1)


def test_pretrain_command_on_a_raw_acdc_folder(tmp_path, capsys):
    """One command: index the official ACDC layout, split by patient, train one epoch."""
    from cardiolora.cli import main

    src = shared_data("acdc")
    assert main(["pretrain", "--data", str(src), "--out", str(tmp_path), "--epochs", "1", "--no-progress"]) == 0
    dl = json.loads((tmp_path / "data" / "datalist.json").read_text())
    assert len({e["patient_id"] for k in ("train", "val", "test") for e in dl[k]}) == 16
    assert (tmp_path / "model.pt").is_file()
    digest = (tmp_path / "model.sha256").read_text().split()[0]
    assert digest in capsys.readouterr().out


@pytest.mark.parametrize(
    "shape", [(1, 40, 30, 5), (1, 120, 100, 90)], ids=["torch-quantile-range", "numpy-range(>1M voxels)"]
)
def test_numpy_percentile_scaling_equals_monai(shape):
    """The pipeline's percentile scaling gives MONAI's values (np.percentile vs torch.quantile)."""
    from monai.transforms import ScaleIntensityRangePercentilesd

    from cardiolora.predict import NumpyPercentileScaled

    img = MetaTensor(torch.rand(shape, generator=torch.Generator().manual_seed(0)) * 500.0, affine=torch.eye(4))
    kwargs = {"keys": "image", "lower": 1.0, "upper": 99.0, "b_min": 0.0, "b_max": 1.0, "clip": True}
    got = NumpyPercentileScaled(**kwargs)({"image": img.clone()})["image"]
    expected = ScaleIntensityRangePercentilesd(**kwargs)({"image": img.clone()})["image"]
    assert isinstance(got, MetaTensor) and got.dtype == expected.dtype
    # fp32 percentiles by two libraries: equal up to float rounding of the interpolation
    torch.testing.assert_close(got.as_tensor(), expected.as_tensor(), atol=1e-5, rtol=0)
