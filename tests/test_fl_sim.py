"""Rate-My-LoRA for real: the FLARE simulator (3 clients) and POC mode on loopback.

Tiny phantom sites (``tiny_sites``) with one validation and one test case each, an untrained
quick-profile base model (the protocol is tested, not accuracy), one round, one local epoch.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import cardiolora.fl.rml as rml
import cardiolora.fl.updates as updates
from cardiolora.fl.network import bundle_network
from cardiolora.fl.protocol import Task, is_adapter_key
from cardiolora.fl.run import run_simulation

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SITES = ("site-1", "site-2", "site-3")
METRICS = ("dice", "voe", "hd", "hd95", "assd")


def make_fl_sites(phantoms: Path, root: Path) -> tuple[Path, Path]:
    """Datalists of site-1..3 with 1 val / 1 test case each under `root`, and an untrained quick W_0."""
    from cardiolora.data.dataset import load_datalist, write_datalist
    from cardiolora.networks import plain_state_dict

    for site in SITES:
        src = phantoms / "sites" / site
        splits = {
            "train": load_datalist(src, "train"),
            "val": load_datalist(src, "val")[:1],
            "test": load_datalist(src, "test")[:1],
        }
        write_datalist(splits, root / site / "datalist.json")
    torch.manual_seed(0)
    base = root / "base_model.pt"
    torch.save(plain_state_dict(bundle_network("quick", 0)), base)
    return root, base


@pytest.fixture(scope="module")
def fl_sites(tiny_sites, tmp_path_factory):
    """The tiny sites with 1 val / 1 test case each, and an untrained quick base model W_0."""
    return make_fl_sites(tiny_sites[0], tmp_path_factory.mktemp("fl_sites"))


def _check_site_models(folder: Path, checksum: str) -> None:
    from cardiolora.networks import load_weights, lora_unet

    for name in ("global_model.pt", "personalised_model.pt"):
        path = folder / name
        assert path.is_file(), f"{path} missing"
        load_weights(lora_unet("quick"), path)  # plain merged U-Net weights
    assert updates.state_checksum(torch.load(folder / "global_model.pt", weights_only=True)) == checksum
    assert updates.state_checksum(torch.load(folder / "personalised_model.pt", weights_only=True)) != checksum


def _check_audit(path: Path) -> None:
    """Every message that left the site went through the filter and carried adapter tensors only."""
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert {r["task"] for r in records} == {Task.INIT, Task.TRAIN, Task.VALIDATE, Task.FINALIZE, Task.CROSS_EVAL}
    assert all(r["decision"] == "passed" for r in records)
    keys = [k for r in records for k in r["tensors"]]
    assert keys and all(is_adapter_key(k) for k in keys)


def test_rate_my_lora_in_the_simulator(fl_sites, tmp_path):
    """Three sites, plus a fourth whose data folder is missing: it fails at start and says why."""
    root, base = fl_sites
    sites_root = tmp_path / "sites_root"
    for site in SITES:
        (sites_root / site).mkdir(parents=True)
        shutil.copy2(root / site / "datalist.json", sites_root / site / "datalist.json")
    shutil.copytree(root / "site-1", sites_root / "site-4")
    missing = {"site-4": {"dataset_dir": str(tmp_path / "no_such_data")}}  # the site admin's mistake
    summary = run_simulation(
        "rate_my_lora",
        sites_root,
        base,
        tmp_path,
        rounds=1,
        timeout=900,
        sites=[*SITES, "site-4"],
        extra_site_config=missing,
    )
    res = {k: Path(v) for k, v in summary["results"].items()}
    h = json.loads(res["rml_history.json"].read_text())
    rounds = {(r["round"], r.get("task")): r for r in h["rounds"]}
    init, r1 = rounds[(0, "init")], rounds[(1, None)]
    assert h["ranks"] == {"site-1": 32, "site-2": 16, "site-3": 32}  # site-2 holds half the cases
    assert set(init["sites"]) == {*SITES, "site-4"} and all(init["sites"][s]["score"] is not None for s in SITES)
    # the failed site: its reason is in the server's log and in the job summary; the job went on
    job = json.loads(res["job_summary.json"].read_text())
    failed = job["failed_sites"]["site-4"]
    assert failed["task"] == Task.INIT and "no_such_data" in failed["reason"] and "dataset_dir" in failed["reason"]
    logs = [tmp_path / "simulator.log", *(tmp_path / "simulate" / "server").rglob("log.txt")]
    server_log = "".join(p.read_text(errors="replace") for p in logs)
    assert "site-4 failed at `init`" in server_log and "no_such_data" in server_log
    assert job["status"] == "finished" and job["job_id"] == "simulate_job" and job["seed"] == 0
    assert job["versions"]["sites"]["site-1"]["cardiolora"] == job["versions"]["server"]["cardiolora"]
    assert job["bytes"]["site-1"]["up"] == sum(r["sites"]["site-1"]["bytes_up"] for r in h["rounds"])
    for site in SITES:  # each site's job folder is what `latest` points at
        folder = Path(summary["sites"][site])
        assert (folder.parent / "latest").resolve() == folder.resolve() and folder.name == "simulate_job"
    # round 1: P_t^c, w_t(c), λ, bytes
    assert r1["lambda"] == pytest.approx(0.2)
    prev = {s: init["sites"][s]["score"] for s in SITES}
    cur = {s: v["score"] for s, v in r1["sites"].items()}
    assert set(r1["sites"]) == set(SITES)
    assert {s: v["rating"] for s, v in r1["sites"].items()} == pytest.approx(rml.rate_sites(prev, cur, 0.2))
    up = {s: v["bytes_up"] for s, v in r1["sites"].items()}
    assert up["site-1"] == up["site-3"] == 2 * up["site-2"] > 0  # adapter size ∝ rank
    w_bytes = init["sites"]["site-1"]["bytes_down"]
    assert all(v["bytes_down"] == sum(up.values()) for v in r1["sites"].values())  # all adapters, no weights
    assert max(up.values()) < 0.95 * w_bytes
    assert all(v["train_loss"] is not None and v["accepted"] for v in r1["sites"].values())
    # only adapter keys arrived at the server; every site's filter passed adapters only
    assert all(is_adapter_key(k) for keys in h["received_keys"].values() for k in keys)
    for site in SITES:
        _check_audit(tmp_path / "simulate" / site / "simulate_job" / "outgoing_audit.jsonl")
        _check_site_models(Path(summary["sites"][site]), r1["checksum"])
    assert updates.state_checksum(torch.load(res["global_model.pt"], weights_only=True)) == r1["checksum"]
    # cross-site tables, curves, TensorBoard, resumable state
    table = json.loads(res["cross_site_eval.json"].read_text())
    assert set(table["global"]) == set(table["in_client"]) == set(SITES)
    assert set(table["cross_client"]["site-2"]) == {"site-1", "site-3"}
    assert set(table["mean_over_structures"]) == set(METRICS)
    assert set(table["in_client"]["site-1"]["summary"]["LV"]) == set(METRICS)
    # the comparison's per-patient scores find the personalised models and agree with the job's table
    from lib.paired import in_client_models, own_model_entries, per_case_scores

    models = in_client_models("rate_my_lora", tmp_path, SITES)
    assert {s: p.resolve() for s, p in models.items()} == {
        s: (Path(summary["sites"][s]) / "personalised_model.pt").resolve() for s in SITES
    }
    rows = per_case_scores({"site-1": models["site-1"]}, root, "quick")["site-1"]
    assert len(rows) == 1
    job_dice = table["mean_over_structures"]["dice"]["site-1"]["site-1"]
    assert rows[0]["mean"] == pytest.approx(job_dice, abs=1e-4)
    # ... and the harness's stand-in for a diagonal entry (used for the DP rows) is the job's own number
    own = own_model_entries({"site-1": rows})["site-1"]
    for metric, value in own.items():
        assert value == pytest.approx(table["mean_over_structures"][metric]["site-1"]["site-1"], abs=1e-3), metric
    assert res["rml_curves.png"].stat().st_size > 1000
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = list(res["tb_events"].rglob("events.out.tfevents*"))
    assert events
    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    assert {"score/site-1", "rating/site-2", "bytes_up/site-3", "lambda"} <= set(acc.Tags()["scalars"])
    state = json.loads((tmp_path / "server_state" / "rate_my_lora" / "state.json").read_text())
    assert state["status"] == "done" and state["checksum"] == r1["checksum"]


# ----------------------------------------------------------------------------- POC mode


def _port_taken(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _naming(marker: str) -> list[int]:
    """Pids of the processes (not this one) whose command line names `marker`."""
    pids = []
    for pid_dir in Path("/proc").glob("[0-9]*"):
        try:
            cmd = (pid_dir / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmd and int(pid_dir.name) != os.getpid():
            pids.append(int(pid_dir.name))
    return pids


def _kill_leftovers(marker: str, timeout: float = 20.0) -> None:
    """Kill (by pid) processes whose command line names our POC workspace, nothing else, until none is left.

    Repeated until the scan finds none (or `timeout` passes): POC's ``sub_start.sh`` loop can start
    a new server between two kills, and a killed process stays in ``/proc`` until the kernel has
    torn it down, which takes a moment on a loaded machine.
    """
    deadline = time.monotonic() + timeout
    while (pids := _naming(marker)) and time.monotonic() < deadline:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.2)


def test_rate_my_lora_in_poc(fl_sites, tmp_path):
    """The committed exported job, submitted through the admin API exactly as the admin console would."""
    for port in (8002, 8003):
        if _port_taken(port):
            pytest.skip(f"port {port} is in use: the POC server cannot start here")
    root, base = fl_sites
    poc = tmp_path / "poc"
    bin_dir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "HOME": str(tmp_path / "home"),
        "NVFLARE_POC_WORKSPACE": str(poc),
        "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    env.pop("CARDIOLORA_SITE_CONFIG", None)
    (tmp_path / "home").mkdir()

    def nvflare(*args, timeout=180):
        return subprocess.run(
            [str(Path(bin_dir) / "nvflare"), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    done = nvflare("poc", "prepare", "-n", "3", "--force")
    assert done.returncode == 0, done.stdout + done.stderr
    prod = poc / "example_project" / "prod_00"
    # each participant's own local config (the job folder says nothing about data locations)
    (prod / "server" / "local" / "cardiolora_site.json").write_text(json.dumps({"pretrained_path": str(base)}))
    for site in SITES:
        cfg = {"dataset_dir": str(root / site), "output_dir": str(tmp_path / "out" / site), "num_threads": 1}
        (prod / site / "local" / "cardiolora_site.json").write_text(json.dumps(cfg))
    # the committed job, with num_rounds lowered to 1 to fit the test budget (nothing else changed)
    job = tmp_path / "job" / "rate_my_lora"
    shutil.copytree(REPO / "jobs" / "rate_my_lora" / "exported", job)
    server_cfg = job / "app" / "config" / "config_fed_server.json"
    cfg = json.loads(server_cfg.read_text())
    cfg["workflows"][0]["args"]["num_rounds"] = 1
    server_cfg.write_text(json.dumps(cfg, indent=4))

    session = None
    try:
        started = nvflare("poc", "start")
        assert started.returncode == 0, started.stdout + started.stderr
        from nvflare.fuel.flare_api.flare_api import new_secure_session

        session = new_secure_session("admin@nvidia.com", str(prod / "admin@nvidia.com"), timeout=60)
        job_id = session.submit_job(str(job))
        meta = session.wait_for_job(job_id, timeout=600)
        assert meta["status"] == "FINISHED:COMPLETED", meta
        result = Path(session.download_job_result(job_id)) / "workspace"
        h = json.loads((result / "rml_history.json").read_text())
        final = [r for r in h["rounds"] if r["round"] == 1 and "task" not in r][0]
        assert set(final["sites"]) == set(SITES) and all(v["accepted"] for v in final["sites"].values())
        assert all(is_adapter_key(k) for keys in h["received_keys"].values() for k in keys)
        assert set(json.loads((result / "cross_site_eval.json").read_text())["in_client"]) == set(SITES)
        for site in SITES:
            _check_site_models(tmp_path / "out" / site / "rate_my_lora" / job_id, final["checksum"])
            audits = list((prod / site).glob(f"{job_id}/outgoing_audit.jsonl"))
            assert audits, f"no audit file for {site}"
            _check_audit(audits[0])
    finally:
        if session is not None:
            session.close()
        try:
            nvflare("poc", "stop", timeout=90)
        finally:
            _kill_leftovers(str(poc))
