"""MONAI Label's own bundle tasks on the LoRA U-Net bundle (run by ``make test-monailabel``).

Runs in the separate environment that ``make test-monailabel`` builds (.venv-monailabel:
monailabel 0.8.5 with numpy < 2 and pydicom < 3, the project installed with ``--no-deps``); the
main suite does not collect this folder (tests/conftest.py ``collect_ignore``).

1. Four phantom subjects (the project's generator, ``cardiolora.data.phantom.make_subject``) are
   written in the M&Ms-2 layout; the ED frames of three go into a MONAI Label ``LocalDatastore``
   (image + ``labels/final`` label, the project label convention).
2. ``BundleTrainTask`` trains the bundle (a copy in the app's ``model/`` folder, as the
   ``monaibundle`` sample app holds it) for one epoch on them (val_split 0.2: two train, one
   validation case), which writes ``models/model.pt``.
3. ``BundleInferTask`` segments the fourth subject's ED volume, and ``monai.bundle run`` of
   inference.json segments the same file; the two label maps must be equal voxel for voxel.

The measured summary goes to ``runs/monailabel-env/result.json`` (or ``$MONAILABEL_RESULT``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import monai
import monailabel
import nibabel as nib
import numpy as np
import pytest
import torch
from monailabel.datastore.local import LocalDatastore
from monailabel.tasks.infer.bundle import BundleInferTask
from monailabel.tasks.train.bundle import BundleTrainTask

from cardiolora.data.mnms2 import write_mnms2
from cardiolora.data.phantom import make_subject
from cardiolora.paths import bundle_dir

REPO = Path(__file__).resolve().parents[2]
RESULT = Path(os.environ.get("MONAILABEL_RESULT", REPO / "runs" / "monailabel-env" / "result.json"))
MODEL = "cardiac_lora_unet"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Phantom NIfTI files, a LocalDatastore of three labelled cases, and the app's bundle copy."""
    tmp = tmp_path_factory.mktemp("monailabel")
    studies = [make_subject(100 + k, "ge", subject_id=f"ml-{k:03d}", phases="ed_es") for k in range(4)]
    write_mnms2(studies, tmp / "mnms2")
    cases = sorted((tmp / "mnms2" / "dataset").iterdir())
    store = tmp / "datastore"
    (store / "labels" / "final").mkdir(parents=True)
    for case in cases[:3]:
        code = case.name
        shutil.copy(case / f"{code}_SA_ED.nii.gz", store / f"case_{code}.nii.gz")
        shutil.copy(case / f"{code}_SA_ED_gt.nii.gz", store / "labels" / "final" / f"case_{code}.nii.gz")
    held_out = cases[3] / f"{cases[3].name}_SA_ED.nii.gz"
    app_bundle = tmp / "apps" / "monaibundle" / "model" / MODEL
    shutil.copytree(bundle_dir() / "configs", app_bundle / "configs")
    (app_bundle / "models").mkdir()
    return {"tmp": tmp, "store": store, "bundle": app_bundle, "held_out": held_out}


def test_bundle_train_task_then_infer_task_match_monai_bundle_run(setup):
    bundle, store, tmp = setup["bundle"], setup["store"], setup["tmp"]
    datastore = LocalDatastore(str(store), extensions=("*.nii.gz",), auto_reload=False)
    items = datastore.datalist()
    assert len(items) == 3 and all(set(i) == {"image", "label"} for i in items)

    trainer = BundleTrainTask(str(bundle), {})
    assert trainer.is_valid()
    start = time.perf_counter()
    trainer(
        {"model": MODEL, "max_epochs": 1, "val_split": 0.2, "device": "cpu", "multi_gpu": False, "pretrained": True},
        datastore,
    )
    train_s = time.perf_counter() - start
    model_pt = bundle / "models" / "model.pt"
    assert model_pt.is_file(), "BundleTrainTask did not leave models/model.pt"
    assert (bundle / "runs" / "train" / "model_final.pt").is_file()

    infer = BundleInferTask(str(bundle), {})
    assert infer.is_valid()
    assert infer.labels == {"lv cavity": 1, "lv myocardium": 2, "rv cavity": 3}
    image = setup["held_out"]
    start = time.perf_counter()
    result_file, result_json = infer({"model": MODEL, "image": str(image), "device": "cpu"})
    infer_s = time.perf_counter() - start
    ml_label = np.asarray(nib.load(result_file).dataobj)

    images = tmp / "images"
    images.mkdir()
    shutil.copy(image, images / image.name)
    out = tmp / "bundle_run"
    cmd = [
        sys.executable, "-m", "monai.bundle", "run",
        "--config_file", str(bundle / "configs" / "inference.json"),
        "--meta_file", str(bundle / "configs" / "metadata.json"),
        "--bundle_root", str(bundle),
        "--dataset_dir", str(images),
        "--output_dir", str(out),
        "--device", "$torch.device('cpu')",
    ]  # fmt: skip
    subprocess.run(cmd, check=True, timeout=600)
    (saved,) = out.glob("*_seg.nii.gz")
    bundle_label = np.asarray(nib.load(saved).dataobj)

    reference = nib.load(image)
    assert ml_label.shape == bundle_label.shape == reference.shape
    assert set(np.unique(bundle_label).tolist()) <= {0, 1, 2, 3}
    np.testing.assert_allclose(nib.load(result_file).affine, nib.load(saved).affine, atol=1e-4)
    differing = int(np.count_nonzero(ml_label.astype(np.int64) != bundle_label.astype(np.int64)))
    summary = {
        "command": "make test-monailabel",
        "monailabel": monailabel.__version__,
        "monai": monai.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "train_cases": 2,
        "val_cases": 1,
        "max_epochs": 1,
        "train_seconds": round(train_s, 1),
        "infer_seconds": round(infer_s, 1),
        "volume_shape": list(reference.shape),
        "labels_found": sorted(int(v) for v in np.unique(ml_label)),
        "voxels_differing_from_monai_bundle_run": differing,
        "infer_result_keys": sorted(result_json),
    }
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(summary, indent=2) + "\n")
    assert differing == 0, summary
