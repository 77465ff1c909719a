"""`cardiolora evaluate` scores the raw network labels and, beside them, the site app's clean-up."""

from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np
import pytest
import torch

import cardiolora.evaluation as evaluation
from cardiolora.data.records import CaseRecord
from cardiolora.metrics import METRICS, segmentation_scores
from cardiolora.site.postprocess import clean_labels

BG, LV, MYO, RV = 0, 1, 2, 3
SPACING = (10.0, 1.5, 1.5)


def _truth(n_slices: int = 4, size: int = 48) -> np.ndarray:
    """A ``(Z, Y, X)`` ground truth: LV cavity in a myocardial ring, RV crescent on the septum."""
    yy, xx = np.mgrid[0:size, 0:size]
    r = np.hypot(yy - 24, xx - 16)
    s = np.zeros((size, size), np.uint8)
    s[r <= 8.5] = MYO
    s[r <= 5.5] = LV
    s[(r > 8.5) & (r <= 14.5) & (xx >= 19)] = RV
    return np.stack([s] * n_slices)


def _with_stray_blobs(label: np.ndarray) -> np.ndarray:
    """The network's raw output: the truth plus an "RV" patch of chest wall and an LV island."""
    pred = np.array(label, dtype=np.uint8, copy=True)
    pred[:, 0:6, 34:46] = RV  # 70+ mm from the septum, 4 slices
    pred[1:3, 42:46, 2:6] = LV
    return pred


def test_cleaned_scores_beat_the_raw_ones_on_stray_blobs():
    gt = _truth()
    pred = _with_stray_blobs(gt)
    row = evaluation.score_prediction(pred, gt, SPACING, cleaned=True)
    raw, clean = row["scores"], row["cleaned"]["scores"]
    assert raw == segmentation_scores(pred, gt, SPACING)  # the raw keys are what they always were
    for name in ("LV", "RV", "mean"):
        assert clean[name]["hd95"] < raw[name]["hd95"]
        assert clean[name]["dice"] >= raw[name]["dice"]
    assert clean["MYO"]["dice"] >= raw["MYO"]["dice"]
    assert row["cleaned"]["case_dice"] >= row["case_dice"]
    assert row["cleaned"]["voxels_changed"] == int((pred != gt).sum())
    assert {n["name"] for n in row["cleaned"]["notes"]} == {"rv_components_removed"}


@pytest.mark.parametrize("distances", [True, False], ids=["with-distances", "dice-only"])
def test_score_prediction_keys(distances):
    gt = _truth()
    row = evaluation.score_prediction(gt, gt, SPACING, distances=distances, cleaned=True)
    assert set(row) == {"case_dice", "cleaned"} | ({"scores"} if distances else set())
    assert set(row["cleaned"]) == {"case_dice", "voxels_changed", "notes"} | ({"scores"} if distances else set())
    assert row["cleaned"]["voxels_changed"] == 0
    assert "cleaned" not in evaluation.score_prediction(gt, gt, SPACING)


def test_score_prediction_rejects_a_shape_mismatch():
    with pytest.raises(ValueError, match="`pred` shape"):
        evaluation.score_prediction(_truth(3), _truth(4), SPACING)


@pytest.fixture
def two_cases(tmp_path, monkeypatch):
    """Two NIfTI cases (M&Ms-2 convention) and a stand-in network whose raw output is the truth
    plus stray blobs (the image holds the truth, so the stand-in can read it back)."""
    records = []
    for i, n_slices in enumerate((4, 5)):
        gt = _truth(n_slices)
        affine = np.diag([SPACING[2], SPACING[1], SPACING[0], 1.0])
        paths = {}
        for kind, arr, dtype in (("image", gt, np.float32), ("label", gt, np.uint8)):
            paths[kind] = tmp_path / f"case{i}_{kind}.nii.gz"
            nib.save(nib.Nifti1Image(np.transpose(arr, (2, 1, 0)).astype(dtype), affine), paths[kind])
        records.append(
            CaseRecord(f"p{i}_ED", f"p{i}", "ED", str(paths["image"]), str(paths["label"]), "mnms2").to_dict()
        )

    def fake_predict(network, image_zyx, spacing_zyx, profile, device="cpu", sw_batch_size=16):
        assert tuple(spacing_zyx) == pytest.approx(SPACING)
        return _with_stray_blobs(np.rint(image_zyx).astype(np.uint8))

    monkeypatch.setattr(evaluation, "predict_zyx", fake_predict)
    return records


def test_evaluate_to_files_writes_raw_and_cleaned(two_cases, tmp_path):
    out = tmp_path / "eval"
    summary = evaluation.evaluate_to_files(torch.nn.Identity(), two_cases, "quick", out)
    assert set(summary) == {"LV", "MYO", "RV", "mean"}  # the returned (raw) summary is unchanged
    assert json.loads((out / "summary.json").read_text()) == json.loads(json.dumps(summary, default=float))
    cleaned = json.loads((out / "summary_cleaned.json").read_text())
    assert set(cleaned) == set(summary)
    assert cleaned["mean"]["hd95"]["mean"] < summary["mean"]["hd95"]["mean"]
    assert cleaned["mean"]["dice"]["mean"] >= summary["mean"]["dice"]["mean"]
    assert cleaned["mean"]["dice"]["mean"] == pytest.approx(1.0)  # the clean-up removes exactly the blobs

    rows = json.loads((out / "case_scores.json").read_text())
    assert [r["case_id"] for r in rows] == ["p0_ED", "p1_ED"]
    assert all({"case_id", "patient_id", "phase", "case_dice", "scores", "cleaned"} == set(r) for r in rows)

    with open(out / "case_scores.csv", newline="") as fh:
        table = list(csv.reader(fh))
    header = table[0]
    names = ["LV", "MYO", "RV", "mean"]
    raw_cols = ["case_id", "patient_id", "phase"] + [f"{n}_{m}" for n in names for m in METRICS]
    assert header[: len(raw_cols)] == raw_cols  # the raw columns, where they always were
    assert header[len(raw_cols) :] == [f"cleaned_{n}_{m}" for n in names for m in METRICS] + ["cleaned_voxels_changed"]
    first = dict(zip(header, table[1], strict=True))
    assert float(first["cleaned_mean_hd95"]) < float(first["mean_hd95"])
    assert int(first["cleaned_voxels_changed"]) > 0


def test_evaluate_to_files_can_skip_the_cleaned_scores(two_cases, tmp_path):
    out = tmp_path / "raw-only"
    evaluation.evaluate_to_files(torch.nn.Identity(), two_cases, "quick", out, cleaned=False)
    assert not (out / "summary_cleaned.json").exists()
    assert "cleaned" not in json.loads((out / "case_scores.json").read_text())[0]
    assert not any(c.startswith("cleaned_") for c in (out / "case_scores.csv").read_text().splitlines()[0].split(","))


def test_the_federated_score_stays_on_raw_labels(two_cases):
    rows = evaluation.evaluate_records(torch.nn.Identity(), two_cases, "quick", distances=False)
    assert all("cleaned" not in r for r in rows)
    gt = _truth(4)
    expected = evaluation.case_dice(_with_stray_blobs(gt), gt)
    assert rows[0]["case_dice"] == pytest.approx(expected)
    assert evaluation.mean_case_dice(torch.nn.Identity(), two_cases, "quick") < 1.0
    assert evaluation.case_dice(clean_labels(_with_stray_blobs(gt), slice_axis=0), gt) == pytest.approx(1.0)
