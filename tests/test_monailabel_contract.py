"""The bundle under MONAI Label's contract, with plain MONAI (no monailabel install).

MONAI Label 0.8.5 uses a bundle through ``BundleTrainTask`` (monailabel/tasks/train/bundle.py) and
``BundleInferTask`` (monailabel/tasks/infer/bundle.py + basic_infer.py). These tests apply the
same overrides and steps:

* training: ``monai.bundle.run(run_id="run", init_id=None, final_id=None, meta_file=...,
  config_file=<bundle>/configs/train.json, **overrides)`` with the overrides ``bundle_root``,
  ``train#trainer#max_epochs``, ``train#dataset#data`` and ``validate#dataset#data`` (plain
  ``{"image": path, "label": path}`` items, 80/20 split), ``device`` (the string MONAI Label's
  ``name_to_device`` returns) and ``train#handlers`` (the bundle's own list, with a
  ``CheckpointLoader`` of ``models/model.pt`` put first, ``strict=False``, when that file exists
  and the request asks for ``pretrained``);
* inference: ``bundle_root`` and ``device`` set in the parsed ``inference.json``; ``network_def``
  instantiated and ``models/model.pt`` loaded (``checkpoint.get("model", checkpoint)``);
  ``preprocessing`` run transform by transform on ``{"image": path, "image_path": path, ...}``
  (the request's entries plus ``image_path``), ``inferer`` on the batched image,
  ``postprocessing`` without ``SaveImaged``.

The real MONAI Label classes run in their own environment: ``make test-monailabel``
(tests/monailabel_env/test_monailabel_tasks.py).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import monai
import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigItem, ConfigParser
from monai.data import MetaTensor
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, SaveImaged, Spacingd

from cardiolora.bundle import run_workflow
from cardiolora.data.dataset import CardiacSliceDataset, case_record, expand_slices
from cardiolora.data.records import CaseRecord
from cardiolora.paths import bundle_dir
from cardiolora.transforms import PathSafeSpacingd, non_meta_entries


@pytest.fixture
def keep_root_logging():
    """``monai.bundle.run`` applies the bundle's logging.conf to the root logger, as under MONAI Label."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _mnms2_items(root: Path, codes: list[int]) -> list[dict]:
    """Plain MONAI Label items (ED frames) of the phantom M&Ms-2 layout: project label convention."""
    out = []
    for code in codes:
        d = root / "mnms2" / "dataset" / f"{code:03d}"
        out.append({"image": str(d / f"{code:03d}_SA_ED.nii.gz"), "label": str(d / f"{code:03d}_SA_ED_gt.nii.gz")})
    return out


def _acdc_items(root: Path, site: str, patients: list[int]) -> list[dict]:
    """Plain items of the phantom ACDC layout (frame01 = ED): ACDC label convention."""
    out = []
    for p in patients:
        d = root / "acdc" / site / f"patient{p:03d}"
        out.append(
            {"image": str(d / f"patient{p:03d}_frame01.nii.gz"), "label": str(d / f"patient{p:03d}_frame01_gt.nii.gz")}
        )
    return out


def _site1_codes(manifest: dict) -> list[int]:
    """M&Ms-2 codes of site-1's subjects (codes run over the sites in order, from 1)."""
    start = 1
    for name, info in manifest["sites"].items():
        if name == "site-1":
            return list(range(start, start + info["n_subjects"]))
        start += info["n_subjects"]
    raise AssertionError("no site-1 in the phantom manifest")


# ------------------------------------------------------------------------------------------------
# plain items and the label convention


def test_a_plain_item_becomes_a_record_named_after_its_file():
    rec = case_record({"image": "/ds/case_7.nii.gz", "label": "/ds/labels/final/case_7.nii.gz"})
    assert (rec.case_id, rec.patient_id, rec.phase, rec.source) == ("case_7", "case_7", None, "nifti")
    assert case_record({"image": "/ds/p1.nii", "label": "/ds/p1_gt.nii"}, "acdc").source == "acdc"
    assert case_record({"image": "/ds/p1.h5", "label": "/ds/p1.h5"}, "acdc").source == "acdc_h5"
    full = CaseRecord("p1_ED", "p1", "ED", "/ds/p1.nii.gz", "/ds/p1_gt.nii.gz", "mnms2")
    assert case_record(full.to_dict(), "acdc") == full  # a full record keeps its own source


@pytest.mark.parametrize(
    "item, convention, message",
    [
        ({"label": "/ds/a.nii.gz"}, "project", "no `image` path"),
        ({"image": "/ds/a.nii.gz"}, "lv-first", "`label_convention` must be one of"),
        ({"image": "/ds/a.h5"}, "project", "HDF5 items are the ACDC-HDF5 layout"),
    ],
)
def test_bad_plain_items_are_named(item, convention, message):
    with pytest.raises(ValueError, match=message):
        case_record(item, convention)


def test_label_convention_reads_acdc_files_as_the_project_labels(tiny_sites):
    """The same phantom subject in both layouts: ACDC files with ``acdc`` equal M&Ms-2 files with ``project``."""
    root, manifest = tiny_sites
    mnms = expand_slices(_mnms2_items(root, _site1_codes(manifest)[:1])[0])
    acdc_item = _acdc_items(root, "site-1", [1])[0]
    acdc = expand_slices(acdc_item, label_convention="acdc")
    wrong = expand_slices(acdc_item, label_convention="project")
    assert len(mnms) == len(acdc) > 0
    for m, a in zip(mnms, acdc, strict=True):
        torch.testing.assert_close(a["image"].as_tensor(), m["image"].as_tensor(), rtol=0, atol=1e-6)
        assert torch.equal(a["label"].as_tensor(), m["label"].as_tensor())
    labels = torch.cat([m["label"].as_tensor().flatten() for m in mnms])
    wrong_labels = torch.cat([w["label"].as_tensor().flatten() for w in wrong])
    assert set(labels.unique().tolist()) == {0, 1, 2, 3}
    assert not torch.equal(labels, wrong_labels)  # LV and RV swapped without the override
    with pytest.raises(ValueError, match="`label_convention`"):
        CardiacSliceDataset([acdc_item], label_convention="ACDC")


# ------------------------------------------------------------------------------------------------
# the MONAI 1.6 Spacingd x image_path clash


def _loaded_nifti(tmp_path: Path) -> tuple[dict, str]:
    path = str(tmp_path / "img.nii.gz")
    rng = np.random.default_rng(0)
    nib.save(nib.Nifti1Image(rng.random((20, 18, 4)).astype(np.float32), np.diag([1.5, 1.5, 8.0, 1.0])), path)
    load = Compose([LoadImaged("image", image_only=False), EnsureChannelFirstd("image")])
    return load({"image": path}), path


def test_path_safe_spacingd_equals_spacingd_and_keeps_image_path(tmp_path):
    data, path = _loaded_nifti(tmp_path)
    pixdim = (2.0, 2.0, -1.0)
    stock = Spacingd("image", pixdim=pixdim)(dict(data))  # no image_path: stock MONAI works
    transform = PathSafeSpacingd("image", pixdim=pixdim)
    safe = transform({**data, "image_path": path})
    assert safe["image_path"] == path
    assert isinstance(safe["image"], MetaTensor) and safe["image"].shape == stock["image"].shape == (1, 15, 14, 4)
    assert torch.equal(safe["image"].as_tensor(), stock["image"].as_tensor())
    torch.testing.assert_close(safe["image"].affine, stock["image"].affine)
    back = transform.inverse(safe)
    assert back["image"].shape == data["image"].shape
    assert non_meta_entries({"image": 0, "image_path": "x", "image_meta_dict": {}, "label_path": "y"}, ["image"]) == [
        "image_path"
    ]


@pytest.mark.skipif(
    tuple(int(x) for x in monai.__version__.split(".")[:2]) < (1, 6), reason="the clash came with MONAI 1.6's Spacingd"
)
def test_stock_spacingd_still_fails_on_image_path(tmp_path):
    """The upstream bug the work-around is for (docs/README.md, MONAI Label): when this fails, MONAI fixed it."""
    data, path = _loaded_nifti(tmp_path)
    with pytest.raises(RuntimeError) as err:
        Compose([Spacingd("image", pixdim=(2.0, 2.0, -1.0))])({**data, "image_path": path})
    assert isinstance(err.value.__cause__, AttributeError)
    assert "'str' object has no attribute 'update'" in str(err.value.__cause__)


# ------------------------------------------------------------------------------------------------
# BundleTrainTask's and BundleInferTask's overrides


def _bundle_copy(tmp_path: Path) -> Path:
    """The bundle as MONAI Label's monaibundle app holds it: a folder in the app's model dir."""
    dest = tmp_path / "model" / "cardiac_lora_unet"
    shutil.copytree(bundle_dir() / "configs", dest / "configs")
    (dest / "models").mkdir()
    return dest


def _train_like_monailabel(bundle: Path, items: list[dict], max_epochs: int, pretrained: bool, **extra) -> dict:
    """``BundleTrainTask.__call__`` + ``run_single_gpu`` with ``val_split`` 0.2 (no shuffle)."""
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "train.json"))
    parser.config.update({"bundle_root": str(bundle)})
    n_train = int(len(items) * 0.8)  # monai.data.partition_dataset(ratios=[0.8, 0.2], shuffle=False)
    train_ds, val_ds = items[:n_train], items[n_train:]
    handlers = parser.get("train#handlers", [])
    model_pt = bundle / "models" / "model.pt"
    if pretrained and model_pt.exists():
        if not [h for h in handlers if h.get("_target_") == "CheckpointLoader"]:
            handlers.insert(
                0,
                {
                    "_target_": "CheckpointLoader",
                    "load_path": str(model_pt),
                    "load_dict": {"model": "$@network"},
                    "strict": False,
                },
            )
    overrides = {
        "bundle_root": str(bundle),
        "train#trainer#max_epochs": max_epochs,
        "train#dataset#data": train_ds,
        "device": "cpu",
        "train#handlers": handlers,
        "validate#dataset#data": val_ds,
        **extra,
    }
    monai.bundle.run(
        run_id="run",
        init_id=None,
        final_id=None,
        meta_file=str(bundle / "configs" / "metadata.json"),
        config_file=str(bundle / "configs" / "train.json"),
        **overrides,
    )
    return overrides


def _infer_like_monailabel(bundle: Path, image: str) -> torch.Tensor:
    """``BundleInferTask`` + ``BasicInferTask.__call__`` up to the writer; returns the label map."""
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser.config.update({"bundle_root": str(bundle)})
    parser.config["use_click"] = False
    network = parser.get_parsed_content("network_def", instantiate=True)
    checkpoint = torch.load(bundle / "models" / "model.pt", map_location="cpu", weights_only=True)
    state = checkpoint.get("model", checkpoint)
    assert set(state) == set(network.state_dict()), "MONAI Label loads with strict=False: keys must match"
    network.load_state_dict(state, strict=False)
    network.eval()
    parser.config.update({"device": "cpu"})  # _update_device
    if parser.ref_resolver.items.get("device"):
        parser.ref_resolver.items["device"] = ConfigItem(config="cpu", id="device")
    pre = list(parser.get_parsed_content("preprocessing", instantiate=True).transforms)
    for t in pre:
        if isinstance(t, LoadImaged):
            t._loader.image_only = False
    data = {"model": "cardiac_lora_unet", "image": image, "device": "cpu", "model_filename": ["model.pt"]}
    data["image_path"] = image  # BasicInferTask: data.update({"image_path": req.get("image")})
    for t in pre:
        data = t(data)
    inferer = parser.get_parsed_content("inferer", instantiate=True)
    with torch.no_grad():
        data["pred"] = inferer(data["image"][None].to("cpu"), network)[0]
    post = [
        t
        for t in parser.get_parsed_content("postprocessing", instantiate=True).transforms
        if not isinstance(t, SaveImaged)
    ]
    for t in post:
        data = t(data)
    assert data["image_path"] == image
    return torch.as_tensor(data["pred"])


@pytest.mark.slow
def test_monailabel_overrides_train_then_infer_as_the_bundle_runs(tiny_sites, tmp_path, keep_root_logging):
    """One epoch on three plain items, again from the saved model on ACDC-style labels, then inference
    the MONAI Label way equals ``monai.bundle run`` of inference.json voxel for voxel."""
    root, manifest = tiny_sites
    bundle = _bundle_copy(tmp_path)
    items = _mnms2_items(root, _site1_codes(manifest)[:3])

    overrides = _train_like_monailabel(bundle, items, max_epochs=1, pretrained=True)
    assert len(overrides["train#dataset#data"]) == 2 and len(overrides["validate#dataset#data"]) == 1
    model_pt = bundle / "models" / "model.pt"
    assert model_pt.is_file(), "the validation's best checkpoint (models/model.pt) was not written"
    assert (bundle / "runs" / "train" / "model_final.pt").is_file()
    first = torch.load(model_pt, map_location="cpu", weights_only=True)

    # second request: models/model.pt exists, so MONAI Label puts a CheckpointLoader first; ACDC labels
    acdc = _acdc_items(root, "site-1", [1, 2, 3])
    shutil.rmtree(bundle / "runs")  # a fresh run, not a resume of the first one
    overrides = _train_like_monailabel(bundle, acdc, max_epochs=1, pretrained=True, label_convention="acdc")
    assert overrides["train#handlers"][0]["_target_"] == "CheckpointLoader"
    second = torch.load(model_pt, map_location="cpu", weights_only=True)
    assert set(first) == set(second)

    image = items[2]["image"]
    pred = _infer_like_monailabel(bundle, image)
    reference = nib.load(image)
    assert tuple(pred.shape) == (1, *reference.shape)
    assert set(pred.unique().tolist()) <= {0, 1, 2, 3}

    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(image, images / Path(image).name)
    out = tmp_path / "bundle_run"
    run_workflow("inference", {"dataset_dir": str(images), "output_dir": str(out)}, bundle=bundle)
    (saved,) = out.glob("*_seg.nii.gz")
    expected = np.asarray(nib.load(saved).dataobj)
    np.testing.assert_array_equal(pred[0].numpy().astype(np.uint8), expected)
