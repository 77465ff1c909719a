"""The site-inference bundle (inference/): one declaration of the options, one pipeline for both runners.

``cardiolora segment`` builds its flags from ``inference/configs/inference.json`` and runs the
bundle's workflow; ``python -m monai.bundle run`` with the same config must segment a study with
exactly the same labels.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from cardiolora.cli import main
from cardiolora.paths import inference_bundle_dir
from cardiolora.site.command import add_segment_arguments, segment_options
from cardiolora.site.workflow import StudyWorkflow, load_workflow

CONFIG = Path(__file__).resolve().parents[1] / "inference" / "configs" / "inference.json"


def test_the_package_ships_the_checkout_bundle():
    assert (inference_bundle_dir() / "configs" / "inference.json").resolve() == CONFIG.resolve()


def test_flags_come_from_the_bundle_declaration():
    """Every declared option is a flag whose default is the config's one value (unset flags stay None)."""
    config = json.loads(CONFIG.read_text())
    declared = segment_options()
    assert set(declared) <= set(config) and declared["sw_batch_size"]["default"] == config["sw_batch_size"]
    q = argparse.ArgumentParser()
    add_segment_arguments(q)
    args = q.parse_args(["study", "--sw-batch-size", "3", "--no-postprocess", "--seg-per-phase"])
    assert (args.sw_batch_size, args.postprocess, args.seg_per_phase, args.overwrite) == (3, False, True, None)
    helps = q.format_help()
    assert f"(default {config['sw_batch_size']})" in helps


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"sw_batch_size": 0}, "sw_batch_size"),
        ({"max_gb": -1.0}, "--max-gb must be positive"),
        ({"incomplete_positions": "keep"}, "incomplete_positions"),
        ({"no_such_option": 1}, "unknown options"),
    ],
    ids=["sw-batch-size", "max-gb", "incomplete-positions", "unknown"],
)
def test_bad_options_are_refused_by_their_stage(overrides, message, tmp_path):
    from cardiolora.networks import lora_unet, plain_state_dict

    torch.save(plain_state_dict(lora_unet("quick")), tmp_path / "model.pt")
    with pytest.raises(ValueError, match=message):
        load_workflow({**overrides, "model": str(tmp_path / "model.pt")})


@pytest.mark.slow
def test_monai_bundle_run_equals_cardiolora_segment(tiny_sites, tmp_path):
    """The same phantom DICOM study through `cardiolora segment` and `python -m monai.bundle run`."""
    from cardiolora.networks import lora_unet, plain_state_dict

    study = next((tiny_sites[0] / "dicom" / "site-1").iterdir())
    torch.manual_seed(0)
    weights = tmp_path / "model.pt"
    torch.save(plain_state_dict(lora_unet("quick")), weights)
    assert isinstance(load_workflow({"model": str(weights), "progress": False}), StudyWorkflow)

    code = main(["segment", str(study), "--model", str(weights), "--out", str(tmp_path / "cli"), "--no-progress"])
    assert code in (0, 4)  # 4: partial (an untrained model's labels may not give an SR)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1] / "custom")])}
    done = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(CONFIG), "--input", str(study),
         "--out", str(tmp_path / "bundle"), "--model", str(weights), "--progress", "False"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    cli = sorted((tmp_path / "cli").rglob("labels*.nii.gz"))
    assert cli, f"no label file under {tmp_path / 'cli'}"
    for f in cli:
        other = tmp_path / "bundle" / f.relative_to(tmp_path / "cli")
        assert np.array_equal(np.asarray(nib.load(f).dataobj), np.asarray(nib.load(other).dataobj)), f
    for name in ("seg/seg.dcm", "nifti/labels.nii.gz", "report.json"):
        assert list((tmp_path / "bundle").glob(f"*/{name}")), name
