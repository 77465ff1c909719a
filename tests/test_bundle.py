"""The LoRA U-Net MONAI bundle: metadata, workflow properties, training, resume, MonaiAlgo, inference."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow, verify_metadata

from cardiolora.bundle import config_files, make_workflow, run_workflow
from cardiolora.paths import bundle_dir

BUNDLE = bundle_dir()
SCHEMA = BUNDLE.parent / "schemas" / "meta_schema.json"


def test_metadata_verifies_against_the_schema():
    verify_metadata(meta_file=str(BUNDLE / "configs" / "metadata.json"), filepath=str(SCHEMA))


def test_metadata_declares_the_label_convention_and_intended_use():
    meta = json.loads((BUNDLE / "configs" / "metadata.json").read_text())
    channels = meta["network_data_format"]["outputs"]["pred"]["channel_def"]
    assert channels == {"0": "background", "1": "LV cavity", "2": "LV myocardium", "3": "RV cavity"}
    assert "not for clinical diagnosis" in meta["intended_use"].lower()
    assert meta["version"] in meta["changelog"]


@pytest.mark.parametrize(
    "kind, workflow_type",
    [("train", "train"), ("lora", "train"), ("evaluate", "train"), ("inference", "infer")],
)
def test_workflow_properties_pass(kind, workflow_type, tiny_sites, tmp_path):
    """MONAI's own check: every required property resolves (so MONAI Label / MonaiAlgo can use it)."""
    root, _ = tiny_sites
    data = root / "sites" / "site-1" if workflow_type == "train" else tmp_path
    wf = ConfigWorkflow(
        config_file=config_files(kind),
        meta_file=str(BUNDLE / "configs" / "metadata.json"),
        logging_file=False,
        workflow_type=workflow_type,
        dataset_dir=str(data),
        output_dir=str(tmp_path),
        **({} if workflow_type == "infer" else {"load_pretrain": False, "model_dir": str(tmp_path)}),
    )
    wf.initialize()
    assert wf.check_properties() in (None, [])


def test_workflow_properties_catch_a_missing_trainer(tmp_path, tiny_sites):
    root, _ = tiny_sites
    cfg = json.loads((BUNDLE / "configs" / "train.json").read_text())
    del cfg["train"]["trainer"]
    bad = tmp_path / "train.json"
    bad.write_text(json.dumps(cfg))
    wf = ConfigWorkflow(
        config_file=str(bad), logging_file=False, workflow_type="train", dataset_dir=str(root / "sites" / "site-1")
    )
    wf.initialize()
    with pytest.raises(KeyError, match="train::trainer"):
        wf.check_properties()


@pytest.fixture(scope="module")
def pretrained(tiny_sites, tmp_path_factory):
    """One epoch of full-weight pretraining on the tiny reference site, through the bundle."""
    root, _ = tiny_sites
    out = tmp_path_factory.mktemp("pretrain")
    run_workflow(
        "train",
        {
            "dataset_dir": str(root / "sites" / "reference"),
            "output_dir": str(out),
            "model_dir": str(out),
            "max_epochs": 1,
            "progress": False,
        },
    )
    return root, out


def test_pretraining_writes_weights_checkpoint_and_curve(pretrained):
    _, out = pretrained
    for name in ("model.pt", "model_final.pt", "checkpoint.pt", "val_curve.json", "val_curve.png"):
        assert (out / name).is_file(), name
    curve = json.loads((out / "val_curve.json").read_text())
    assert [r["epoch"] for r in curve] == [1]
    assert 0.0 <= curve[0]["val_slice_dice"] <= 1.0
    state = torch.load(out / "model.pt", weights_only=True)
    assert all(".lora_" not in k and ".base." not in k for k in state)


def test_pretraining_resumes_after_interruption(pretrained, tmp_path):
    """A second run with more epochs continues at epoch 2 from the saved state, not from scratch.

    The first run's curve is rewritten under the metric's old name (``val_mean_dice``): a run
    started before the rename resumes, its epochs read under ``val_slice_dice``.
    """
    root, out = pretrained
    run_dir = tmp_path / "resume"
    run_dir.mkdir()
    (run_dir / "checkpoint.pt").write_bytes((out / "checkpoint.pt").read_bytes())
    old_curve = [
        {("val_mean_dice" if k == "val_slice_dice" else k): v for k, v in r.items()}
        for r in json.loads((out / "val_curve.json").read_text())
    ]
    (run_dir / "val_curve.json").write_text(json.dumps(old_curve))
    before = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    wf = make_workflow(
        "train",
        {
            "dataset_dir": str(root / "sites" / "reference"),
            "output_dir": str(run_dir),
            "model_dir": str(run_dir),
            "max_epochs": 2,
            "progress": False,
        },
    )
    wf.initialize()
    wf.run()
    assert wf.trainer.state.epoch == 2
    after = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    assert before["epoch"] == 1 and after["epoch"] == 2
    assert after["iteration"] == 2 * before["iteration"]
    curve = json.loads((run_dir / "val_curve.json").read_text())
    assert [r["epoch"] for r in curve] == [1, 2]
    assert all(0.0 <= r["val_slice_dice"] <= 1.0 and "val_mean_dice" not in r for r in curve)


def test_a_resumed_run_keeps_the_best_model(pretrained, tmp_path):
    """The best score travels in checkpoint.pt: after a resume, a worse epoch does not replace model.pt."""
    root, out = pretrained
    state = torch.load(out / "checkpoint.pt", weights_only=False)
    saved = state["best_checkpoint"]["_saved"]
    assert len(saved) == 1 and 0.0 <= saved[0][0] <= 1.0  # the first run's best: (score, file)
    # a record no epoch can beat (Dice <= 1): the resumed epoch must leave model.pt alone
    state["best_checkpoint"]["_saved"] = [(2.0, saved[0][1])]
    run_dir = tmp_path / "resume_best"
    run_dir.mkdir()
    torch.save(state, run_dir / "checkpoint.pt")
    marker = {"marker": torch.zeros(1)}
    torch.save(marker, run_dir / "model.pt")
    wf = make_workflow(
        "train",
        {
            "dataset_dir": str(root / "sites" / "reference"),
            "output_dir": str(run_dir),
            "model_dir": str(run_dir),
            "max_epochs": 2,
            "progress": False,
        },
    )
    wf.initialize()
    wf.run()
    assert wf.trainer.state.epoch == 2
    assert set(torch.load(run_dir / "model.pt", weights_only=True)) == {"marker"}
    after = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    assert after["best_checkpoint"]["_saved"][0][0] == 2.0


def test_lora_override_trains_only_adapters_and_saves_a_plain_model(pretrained, tmp_path):
    root, out = pretrained
    wf = make_workflow(
        "lora",
        {
            "dataset_dir": str(root / "sites" / "site-1"),
            "output_dir": str(tmp_path),
            "model_dir": str(tmp_path),
            "pretrained_path": str(out / "model.pt"),
            "lora_rank": 4,
            "max_epochs": 1,
            "progress": False,
        },
    )
    wf.initialize()
    net = wf.parser.get_parsed_content("network")
    base_before = {k: v.clone() for k, v in net.state_dict().items() if ".lora_" not in k}
    wf.run()
    after = net.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in base_before.items()), "base weights changed"
    assert any(after[k].abs().sum() > 0 for k in after if "lora_B" in k), "adapters did not train"
    plain = torch.load(tmp_path / "model.pt", weights_only=True)
    assert set(plain) == set(torch.load(out / "model.pt", weights_only=True))


def test_tensor_adapter_override_trains_only_cores_and_saves_a_plain_model(pretrained, tmp_path):
    """`adapter_type: tensor` on the LoRA override: TenVOO-L cores train, the base stays, model.pt is plain."""
    root, out = pretrained
    wf = make_workflow(
        "lora",
        {
            "dataset_dir": str(root / "sites" / "site-1"),
            "output_dir": str(tmp_path),
            "model_dir": str(tmp_path),
            "pretrained_path": str(out / "model.pt"),
            "adapter_type": "tensor",
            "max_epochs": 1,
            "progress": False,
        },
    )
    wf.initialize()
    net = wf.parser.get_parsed_content("network")
    cores_before = {k: v.clone() for k, v in net.state_dict().items() if ".tenvoo." in k or ".tenvoo_T." in k}
    base_before = {k: v.clone() for k, v in net.state_dict().items() if k not in cores_before}
    assert cores_before and not any(".lora_" in k for k in net.state_dict())
    wf.run()
    after = net.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in base_before.items()), "base weights changed"
    assert any(not torch.equal(v, after[k]) for k, v in cores_before.items()), "cores did not train"
    plain = torch.load(tmp_path / "model.pt", weights_only=True)
    assert set(plain) == set(torch.load(out / "model.pt", weights_only=True))


def test_monai_algo_drives_a_round(pretrained, tmp_path):
    """MONAI's federated client (monai.fl.client.MonaiAlgo) can train and evaluate with the bundle."""
    from monai.fl.client import MonaiAlgo
    from monai.fl.utils.constants import ExtraItems, WeightType
    from monai.fl.utils.exchange_object import ExchangeObject

    root, out = pretrained
    algo = MonaiAlgo(
        bundle_root=str(BUNDLE),
        local_epochs=1,
        config_train_filename=["configs/train.json"],
        config_evaluate_filename=["configs/train.json", "configs/evaluate.json"],
        train_kwargs={
            "dataset_dir": str(root / "sites" / "site-1"),
            "output_dir": str(tmp_path / "t"),
            "model_dir": str(tmp_path / "t"),
            "progress": False,
            "resume": False,
        },
        eval_kwargs={
            "dataset_dir": str(root / "sites" / "site-1"),
            "output_dir": str(tmp_path / "e"),
            "model_dir": str(tmp_path / "e"),
            "progress": False,
            "eval_split": "val",
        },
    )
    algo.initialize(extra={ExtraItems.CLIENT_NAME: "site-1", ExtraItems.APP_ROOT: ""})
    global_weights = torch.load(out / "model.pt", weights_only=True)
    algo.train(ExchangeObject(weights=global_weights, weight_type=WeightType.WEIGHTS))
    update = algo.get_weights()
    assert update.weight_type == WeightType.WEIGHT_DIFF
    assert set(update.weights) == set(global_weights)
    assert any(v.abs().sum() > 0 for v in update.weights.values())
    metrics = algo.evaluate(ExchangeObject(weights=global_weights, weight_type=WeightType.WEIGHTS))
    assert 0.0 <= metrics.metrics["val_slice_dice"] <= 1.0
    algo.finalize()


def test_inference_bundle_segments_nifti_aligned_with_the_input(pretrained, tmp_path):
    """inference.json: NIfTI stack in, label map out on the input's grid, equal to predict_volume."""
    from cardiolora.networks import load_weights, lora_unet
    from cardiolora.predict import predict_volume
    from cardiolora.site.postprocess import clean_labels

    root, out = pretrained
    src = sorted((root / "mnms2" / "dataset").glob("*/*_SA_ED.nii.gz"))[0]
    images = tmp_path / "images"
    images.mkdir()
    (images / src.name).write_bytes(src.read_bytes())
    run_workflow(
        "inference",
        {"dataset_dir": str(images), "output_dir": str(tmp_path / "seg"), "model_path": str(out / "model.pt")},
    )
    seg_path = tmp_path / "seg" / src.name.replace(".nii.gz", "_seg.nii.gz")
    assert seg_path.is_file()
    img, seg = nib.load(src), nib.load(seg_path)
    assert seg.shape == img.shape
    np.testing.assert_allclose(seg.affine, img.affine, atol=1e-4)
    labels = np.asarray(seg.dataobj)
    assert set(np.unique(labels)) <= {0, 1, 2, 3}
    net = lora_unet("quick")
    load_weights(net, out / "model.pt")
    ref = predict_volume(net, np.asarray(img.dataobj, dtype=np.float32), img.affine, "quick")
    # the bundle's postprocessing ends with the anatomical clean-up of the site application
    # (largest component, myocardium between the cavities, holes filled): apply the same rules
    ref = clean_labels(ref, slice_axis=-1)
    fg = (labels > 0) | (ref > 0)
    assert (ref[fg] == labels[fg]).mean() > 0.99
    assert Path(seg_path).stat().st_size > 0
