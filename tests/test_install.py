"""A site with the package installed and no checkout: the wheel carries the bundles and runs.

`pip install .` (not editable) of a freshly built wheel into a temporary venv; the heavy
dependencies (torch, MONAI, FLARE) come from the project venv through a path entry, so the test
installs only the project itself. Everything then runs from a folder outside the checkout with the
temporary venv's interpreter and console script: ``cardiolora segment`` on a phantom DICOM study
(labels identical to the checkout's run) and a Rate-My-LoRA job in the FLARE simulator.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

import cardiolora
from cardiolora.paths import bundle_dir

REPO = Path(__file__).resolve().parents[1]


def test_package_and_bundle_carry_one_version():
    meta = json.loads((bundle_dir() / "configs" / "metadata.json").read_text())
    assert meta["version"] == cardiolora.__version__


def _clean_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARDIOLORA")}
    env.update({"HOME": str(tmp), "PYTHONNOUSERSITE": "1", "OMP_NUM_THREADS": "1"})
    env.pop("PYTHONPATH", None)
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A temporary venv with the wheel of this checkout installed (not editable)."""
    tmp = tmp_path_factory.mktemp("install")
    wheels = tmp / "wheels"
    run = dict(capture_output=True, text=True, timeout=600, check=False)
    # setuptools never clears build/lib: stale copies of removed modules would enter the wheel
    shutil.rmtree(REPO / "build", ignore_errors=True)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation", "-w", str(wheels)],
        cwd=tmp,
        **run,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    venv = tmp / "venv"
    made = subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], **run)
    assert made.returncode == 0, made.stderr
    py = venv / "bin" / "python"
    wheel = next(wheels.glob("cardiolora-*.whl"))
    inst = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index", str(wheel)], **run
    )
    assert inst.returncode == 0, inst.stdout + inst.stderr
    # the dependencies only: the project venv's site-packages as a plain path (its .pth files, among
    # them the editable install of this checkout, are not processed from there)
    purelib = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], **run
    ).stdout.strip()
    (Path(purelib) / "_project_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv


def test_installed_package_has_its_bundles_and_no_checkout(installed, tmp_path):
    code = (
        "import cardiolora, cardiolora.paths as p, json; "
        "print(json.dumps({'file': cardiolora.__file__, 'bundle': str(p.bundle_dir())}))"
    )
    out = subprocess.run(
        [str(installed / "bin" / "python"), "-c", code],
        cwd=tmp_path,
        env=_clean_env(tmp_path),
        capture_output=True,
        text=True,
        check=True,
    )
    where = json.loads(out.stdout)
    assert where["file"].startswith(str(installed)) and where["bundle"].startswith(str(installed))
    assert (Path(where["bundle"]) / "configs" / "train.json").is_file()
    assert (Path(where["bundle"]) / "configs" / "clinical.json").is_file()
    from cardiolora.paths import project_root  # the checkout has jobs/; the installed package says it has none

    assert project_root() == REPO
    no_root = subprocess.run(
        [str(installed / "bin" / "python"), "-c", "import cardiolora.paths as p; p.project_root()"],
        cwd=tmp_path,
        env=_clean_env(tmp_path),
        capture_output=True,
        text=True,
    )
    assert no_root.returncode != 0 and "installed package without a checkout" in no_root.stderr


@pytest.mark.slow
def test_installed_segment_matches_the_checkout(installed, tiny_sites, tmp_path):
    """`cardiolora segment` from the installed console script: every output, the checkout's labels."""
    from cardiolora.networks import lora_unet, plain_state_dict

    study = next((tiny_sites[0] / "dicom" / "site-1").iterdir())
    torch.manual_seed(0)
    weights = tmp_path / "model.pt"
    torch.save(plain_state_dict(lora_unet("quick")), weights)
    outs = {}
    for name, exe in (
        ("installed", installed / "bin" / "cardiolora"),
        ("checkout", Path(sys.executable).parent / "cardiolora"),
    ):
        out = tmp_path / name
        done = subprocess.run(
            [str(exe), "segment", str(study), "--model", str(weights), "--out", str(out), "--no-progress"],
            cwd=tmp_path,
            env=_clean_env(tmp_path),
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode in (0, 4), done.stdout + done.stderr  # 4: partial (an untrained model's SR)
        outs[name] = out
    seg_files = sorted(outs["installed"].rglob("labels*.nii.gz"))
    assert seg_files, f"no label file under {outs['installed']}"
    for f in seg_files:
        other = outs["checkout"] / f.relative_to(outs["installed"])
        assert np.array_equal(np.asarray(nib.load(f).dataobj), np.asarray(nib.load(other).dataobj)), f
    reports = [json.loads(p.read_text()) for p in outs["installed"].rglob("report.json")]
    assert reports and all(r.get("status") in ("done", "partial") for r in reports)
    for name in ("seg/seg.dcm", "sr/measurements.dcm", "nifti/labels.nii.gz"):
        assert list(outs["installed"].glob(f"*/{name}")), name


@pytest.mark.slow
def test_installed_runs_a_flare_simulator_job(installed, tiny_sites, tmp_path):
    """A Rate-My-LoRA round in the FLARE simulator, every process on the installed package."""
    from cardiolora.data.dataset import load_datalist, write_datalist
    from cardiolora.fl.network import bundle_network
    from cardiolora.networks import plain_state_dict

    sites = ("site-1", "site-2", "site-3")
    root = tmp_path / "sites"
    for site in sites:
        src = tiny_sites[0] / "sites" / site
        splits = {k: load_datalist(src, k)[: (None if k == "train" else 1)] for k in ("train", "val", "test")}
        write_datalist(splits, root / site / "datalist.json")
    torch.manual_seed(0)
    base = tmp_path / "base.pt"
    torch.save(plain_state_dict(bundle_network("quick", 0)), base)
    driver = (
        "import json, sys, cardiolora\n"
        "from cardiolora.fl.run import run_simulation\n"
        "s = run_simulation('rate_my_lora', sys.argv[1], sys.argv[2], sys.argv[3], rounds=1, timeout=900)\n"
        "print(json.dumps({'file': cardiolora.__file__, **s}))\n"
    )
    done = subprocess.run(
        [str(installed / "bin" / "python"), "-c", driver, str(root), str(base), str(tmp_path / "work")],
        cwd=tmp_path,
        env=_clean_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["file"].startswith(str(installed))
    assert summary["returncode"] == 0, (tmp_path / "work" / "simulator.log").read_text()[-3000:]
    history = json.loads(Path(summary["results"]["rml_history.json"]).read_text())
    trained = [r for r in history["rounds"] if r["round"] == 1 and "task" not in r]
    assert trained and set(trained[0]["sites"]) == set(sites)
    for site in sites:
        assert (Path(summary["sites"][site]) / "personalised_model.pt").is_file()
