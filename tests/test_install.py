"""A site with the package installed and no checkout: the wheel carries the bundles and runs.

`pip install .` (not editable) of a freshly built wheel into a temporary venv; the heavy
dependencies (torch, MONAI, FLARE) come from the project venv through a path entry, so the test
installs only the project itself. Everything then runs from a folder outside the checkout with the
temporary venv's interpreter and console script: ``cardiolora segment`` on a phantom DICOM study
(labels identical to the checkout's run), a Rate-My-LoRA job in the FLARE simulator, and the same
job exported from the installed package and submitted to a FLARE POC deployment on loopback
(server, sites and admin all on the temporary venv; nothing written into the checkout).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from test_fl_sim import _kill_leftovers, _port_taken, make_fl_sites

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


#: What the wheel is built from (custom/cardiolora links to bundles/, inference/ and jobs/).
WHEEL_SOURCES = ("pyproject.toml", "README.md", "custom", "bundles", "inference", "jobs")


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A temporary venv with the wheel of this checkout installed (not editable)."""
    tmp = tmp_path_factory.mktemp("install")
    wheels = tmp / "wheels"
    # without PYTHONPATH: a checkout on it (as in `PYTHONPATH=custom pytest`) would make pip see
    # cardiolora as "already satisfied" in the new venv and install nothing
    run = dict(env=_clean_env(tmp), capture_output=True, text=True, timeout=600, check=False)
    # built from a copy of the sources: setuptools writes build/ and *.egg-info next to them (and
    # never clears build/lib, whose stale copies of removed modules would enter the wheel)
    src = tmp / "src"
    src.mkdir()
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in WHEEL_SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, symlinks=True, ignore=skip)
        else:
            shutil.copy2(REPO / name, src / name)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-w", str(wheels)],
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


#: The admin's side of a POC run, on the installed interpreter: submit the job folder, wait, download.
_ADMIN = """
import json, sys
from nvflare.fuel.flare_api.flare_api import new_secure_session
kit, job, dest = sys.argv[1:4]
session = new_secure_session("admin@nvidia.com", kit, timeout=60)
try:
    job_id = session.submit_job(job)
    meta = session.wait_for_job(job_id, timeout=900)
    result = session.download_job_result(job_id, destination=dest) if meta["status"].startswith("FINISHED") else None
    print(json.dumps({"job_id": job_id, "status": meta["status"], "result": result}))
finally:
    session.close()
"""


def _processes_naming(marker: str) -> dict[int, tuple[str, str, str]]:
    """Python processes whose command line names `marker`: pid -> (interpreter, PYTHONPATH, command line).

    The interpreter is the command's first word as the process's own PATH resolves it (the POC
    startup kits run a bare ``python3``).
    """
    found = {}
    for pid_dir in Path("/proc").glob("[0-9]*"):
        try:
            argv = (pid_dir / "cmdline").read_bytes().decode(errors="replace").split("\0")
            environ = (pid_dir / "environ").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        cmd = " ".join(argv)
        if marker not in cmd or "python" not in Path(argv[0]).name:
            continue
        penv = dict(kv.split("=", 1) for kv in environ if "=" in kv)
        exe = argv[0] if os.sep in argv[0] else shutil.which(argv[0], path=penv.get("PATH", "")) or argv[0]
        found[int(pid_dir.name)] = (exe, penv.get("PYTHONPATH", ""), cmd)
    return found


def _checkout_state() -> str:
    """Everything git sees in the checkout, ignored files included (build/ and caches too)."""
    return subprocess.run(
        ["git", "-C", str(REPO), "status", "--porcelain", "--ignored", "--untracked-files=all"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


@pytest.mark.slow
def test_installed_runs_a_poc_job(installed, tiny_sites, tmp_path):
    """Rate-My-LoRA in FLARE POC mode (server + 3 sites on loopback), every process on the installed wheel.

    The job is exported by the installed package's own ``cardiolora.jobs.rate_my_lora.job`` and
    submitted through the admin API; `nvflare poc start` runs from the temporary venv, so the
    startup kits' ``python3`` is its interpreter. No PYTHONPATH, no CARDIOLORA_* variable, cwd
    outside the checkout.
    """
    for port in (8002, 8003):
        if _port_taken(port):
            pytest.skip(f"port {port} is in use: the POC server cannot start here")
    sites = ("site-1", "site-2", "site-3")
    root, base = make_fl_sites(tiny_sites[0], tmp_path / "sites")
    poc, work = tmp_path / "poc", tmp_path / "work"
    work.mkdir()
    py = str(installed / "bin" / "python")
    env = {
        **_clean_env(tmp_path),
        "NVFLARE_POC_WORKSPACE": str(poc),
        "PATH": str(installed / "bin") + os.pathsep + os.environ.get("PATH", ""),
        "MKL_NUM_THREADS": "1",
    }
    run = dict(cwd=work, env=env, capture_output=True, text=True, check=False)

    def nvflare(*args: str, timeout: int = 180) -> subprocess.CompletedProcess:
        # the venv's nvflare (its console script is not installed here: the dependencies come by a path entry)
        return subprocess.run([py, "-m", "nvflare.cli", *args], timeout=timeout, **run)

    before = _checkout_state()
    exported = subprocess.run(
        [py, "-m", "cardiolora.jobs.rate_my_lora.job", "--export-dir", str(work / "rml"), "--rounds", "1"],
        timeout=300,
        **run,
    )
    assert exported.returncode == 0, exported.stdout + exported.stderr
    assert (work / "rml" / "app" / "custom" / "client.py").is_file() and (work / "rml" / "meta.json").is_file()

    done = nvflare("poc", "prepare", "-n", str(len(sites)), "--force")
    assert done.returncode == 0, done.stdout + done.stderr
    prod = poc / "example_project" / "prod_00"
    (prod / "server" / "local" / "cardiolora_site.json").write_text(json.dumps({"pretrained_path": str(base)}))
    for site in sites:
        cfg = {"dataset_dir": str(root / site), "output_dir": str(tmp_path / "out" / site), "num_threads": 1}
        (prod / site / "local" / "cardiolora_site.json").write_text(json.dumps(cfg))

    start, admin = time.monotonic(), None
    try:
        started = nvflare("poc", "start")
        assert started.returncode == 0, started.stdout + started.stderr
        admin = subprocess.Popen(
            [py, "-c", _ADMIN, str(prod / "admin@nvidia.com"), str(work / "rml"), str(tmp_path / "download")],
            cwd=work,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        seen: dict[int, tuple[str, str, str]] = {}  # every POC process, sampled while the job runs
        deadline = time.monotonic() + 1200
        while admin.poll() is None and time.monotonic() < deadline:
            seen.update(_processes_naming(str(poc)))
            time.sleep(0.5)
        if admin.poll() is None:
            admin.kill()
        out, err = admin.communicate()
        assert admin.returncode == 0, out[-3000:] + err[-3000:]
        outcome = json.loads(out.strip().splitlines()[-1])
        assert outcome["status"] == "FINISHED:COMPLETED", (outcome, (prod / "server" / "log.txt").read_text()[-3000:])
    finally:
        if admin is not None and admin.poll() is None:
            admin.kill()
            admin.wait()
        try:
            nvflare("poc", "stop", timeout=90)
        finally:
            _kill_leftovers(str(poc))
    print(f"POC job from the installed wheel: {time.monotonic() - start:.0f} s (start -> stop)")
    assert not _processes_naming(str(poc)), "POC processes left running"

    # server, sites and their job processes: the venv's interpreter, with no checkout on the path
    kinds = ("server_train", "client_train", "runner_process", "worker_process")
    assert all(any(k in cmd for _, _, cmd in seen.values()) for k in kinds), sorted(seen.values())
    for exe, pythonpath, cmd in seen.values():
        assert Path(exe).parent == installed / "bin", cmd
        # the dependencies come from the project venv's site-packages (the fixture's .pth); the
        # checkout's sources must not be on the path
        entries = [Path(e) for e in pythonpath.split(os.pathsep) if e]
        assert not any(e == REPO or e == REPO / "custom" or REPO / "custom" in e.parents for e in entries), cmd
    result = Path(outcome["result"]) / "workspace"
    history = json.loads((result / "rml_history.json").read_text())
    final = [r for r in history["rounds"] if r["round"] == 1 and "task" not in r]
    assert final and set(final[0]["sites"]) == set(sites) and all(v["accepted"] for v in final[0]["sites"].values())
    assert set(json.loads((result / "cross_site_eval.json").read_text())["in_client"]) == set(sites)
    for name in ("global_model.pt", "rml_curves.png"):
        assert (result / name).is_file(), result / name
    assert list((result / "tb_events").rglob("events.out.tfevents*"))
    for site in sites:
        out = tmp_path / "out" / site / "rate_my_lora" / outcome["job_id"]
        for name in ("global_model.pt", "personalised_model.pt", "site_summary.json"):
            assert (out / name).is_file(), out / name
    assert _checkout_state() == before, "the POC run wrote into the source checkout"
