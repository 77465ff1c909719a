"""More FLARE simulator runs: the FedAvg baseline, a site that drops out, a server killed and resumed.

About 4 minutes on 2 cores, beyond the FL test budget, so they run only with
``CARDIOLORA_FL_EXTENDED=1`` (the same scenarios run in the default suite against in-process sites
in tests/test_fl_controller.py). The dropping site is injected by the test: the exported job runs
``tests/fl_fault_site.py`` (the production site script with a failing runner) instead of the
production script.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_fl_sim import make_fl_sites

import cardiolora.fl.updates as updates
from cardiolora.fl.jobs import build_job, export_job
from cardiolora.fl.protocol import Task, is_adapter_key
from cardiolora.fl.run import run_simulation, simulate_job, write_site_configs

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("CARDIOLORA_FL_EXTENDED") != "1",
        reason="extended FLARE simulator runs (~4 min): set CARDIOLORA_FL_EXTENDED=1",
    ),
]

SITES = ("site-1", "site-2", "site-3")
#: The test-only site script with fault injection (run by FLARE from its absolute path).
FAULT_SITE_SCRIPT = Path(__file__).resolve().with_name("fl_fault_site.py")


@pytest.fixture(scope="module")
def fl_sites(tiny_sites, tmp_path_factory):
    return make_fl_sites(tiny_sites[0], tmp_path_factory.mktemp("fl_sites"))


def _kill_by_marker(marker: str) -> None:
    for pid_dir in Path("/proc").glob("[0-9]*"):
        try:
            cmd = (pid_dir / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmd and int(pid_dir.name) != os.getpid():
            try:
                os.kill(int(pid_dir.name), signal.SIGKILL)
            except OSError:
                pass


def test_fedavg_full_in_the_simulator(fl_sites, tmp_path):
    root, base = fl_sites
    summary = run_simulation("fedavg_full", root, base, tmp_path, rounds=1, timeout=900)
    w = torch.load(summary["results"]["global_model.pt"], weights_only=True)
    w0 = torch.load(base, weights_only=True)
    assert set(w) == set(w0) and updates.state_checksum(w) != updates.state_checksum(w0)
    for site in SITES:
        s = json.loads((Path(summary["sites"][site]) / "site_summary.json").read_text())
        assert s["rounds"] and s["rounds"][0]["train_loss"] is not None


def test_a_site_that_drops_out_in_the_simulator(fl_sites, tmp_path):
    root, base = fl_sites
    config_dir = write_site_configs(tmp_path, root, list(SITES), base)
    job = export_job(
        build_job("fedpetuning", num_rounds=1, n_clients=len(SITES), min_clients=2, task_timeout=900),
        tmp_path / "job" / "fedpetuning",
    )
    # the sites run the test's script: the production client with site-3 failing at `validate` of round 1
    client_config = job / "app" / "config" / "config_fed_client.json"
    config = json.loads(client_config.read_text())
    args = config["executors"][0]["executor"]["args"]
    args["task_script_path"] = str(FAULT_SITE_SCRIPT)
    args["task_script_args"] += f" --fail-at site-3:{Task.VALIDATE}:1"
    client_config.write_text(json.dumps(config, indent=4))
    summary = simulate_job(job, tmp_path, list(SITES), config_dir, timeout=900)
    h = json.loads(Path(summary["results"]["rml_history.json"]).read_text())
    r1 = [r for r in h["rounds"] if r["round"] == 1 and "task" not in r][0]
    assert r1["sites"]["site-3"]["dropped"] == Task.VALIDATE
    assert all(v.get("rating", 1.0) == 1.0 for v in r1["sites"].values())  # λ = 0
    fin = [r for r in h["rounds"] if r.get("task") == "finalize"][0]
    assert set(fin["sites"]) == {"site-1", "site-2"}
    assert all(is_adapter_key(k) for keys in h["received_keys"].values() for k in keys)
    for site in ("site-1", "site-2"):  # every message that left went through the filter: adapters only
        audit = tmp_path / "simulate" / site / "simulate_job" / "outgoing_audit.jsonl"
        records = [json.loads(line) for line in audit.read_text().splitlines()]
        assert len(records) == 5 and all(r["decision"] == "passed" for r in records)
        assert all(is_adapter_key(k) for r in records for k in r["tensors"])
    table = json.loads(Path(summary["results"]["cross_site_eval.json"]).read_text())
    assert set(table["global"]) == {"site-1", "site-2"}


def test_killed_server_resumes_in_the_simulator(fl_sites, tmp_path):
    root, base = fl_sites
    cmd = [
        sys.executable,
        "-m",
        "cardiolora.fl.run",
        "--job",
        "rate_my_lora",
        "--sites-root",
        str(root),
        "--pretrained",
        str(base),
        "--workdir",
        str(tmp_path),
        "--rounds",
        "2",
    ]
    state = tmp_path / "server_state" / "rate_my_lora" / "state.json"
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 600
        while time.time() < deadline and proc.poll() is None:
            if state.is_file() and json.loads(state.read_text()).get("round", 0) >= 1:
                break
            time.sleep(0.5)
        assert state.is_file(), "round 1 never completed"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        _kill_by_marker(str(tmp_path))
    killed = json.loads(state.read_text())
    assert killed["status"] == "running" and killed["round"] == 1
    summary = run_simulation("rate_my_lora", root, base, tmp_path, rounds=2, timeout=900)
    h = json.loads(Path(summary["results"]["rml_history.json"]).read_text())
    assert [r["resumed"] for r in h["rounds"] if r.get("task") == "init"] == [False, True]
    assert [r["round"] for r in h["rounds"] if r.get("task") is None] == [1, 2]
    final = json.loads(state.read_text())
    assert final["status"] == "done" and final["round"] == 2
    for site in SITES:
        w = torch.load(Path(summary["sites"][site]) / "global_model.pt", weights_only=True)
        assert updates.state_checksum(w) == final["checksum"]
