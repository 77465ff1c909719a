"""The provisioned FLARE deployment on one machine (``make provision-demo``), end to end.

``deploy/provision_demo.py``'s :func:`run_demo` with one round on the suite's tiny phantoms: a wheel
of this checkout installed into a temporary venv, ``nvflare provision`` with free ports (root CA and
certificates: mutual TLS on loopback), the server and three sites each started from its own kit
with its own ``local/cardiolora_site.json``, the quick-profile ``rate_my_lora`` job exported from
the installed package and submitted through the admin API with the admin's kit, ``show_stats``
followed while it runs, the results downloaded, every process stopped.
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
from pathlib import Path

import pytest
import yaml

from cardiolora.fl import provision as prov

REPO = Path(__file__).resolve().parents[1]


def _demo():
    spec = importlib.util.spec_from_file_location("provision_demo", REPO / "deploy" / "provision_demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_project_file_is_write_project(tmp_path):
    """deploy/project.yml is exactly what cardiolora.fl.provision.write_project writes by default."""
    assert (REPO / "deploy" / "project.yml").read_text() == prov.write_project(tmp_path / "p.yml").read_text()


def test_project_config_checks_its_arguments():
    with pytest.raises(ValueError, match="`admin_port`"):
        prov.project_config(admin_port=70000)
    with pytest.raises(ValueError, match="must differ"):
        prov.project_config(fed_learn_port=9000, admin_port=9000)
    with pytest.raises(ValueError, match="`sites`"):
        prov.project_config(sites=("site-1", "site-1"))


def test_provision_writes_mtls_kits(tmp_path):
    """FLARE's own provisioning of the project: one kit per participant, certificates, mTLS, our ports."""
    fl_port, admin_port = prov.free_ports(2)
    project = prov.write_project(tmp_path / "project.yml", fed_learn_port=fl_port, admin_port=admin_port)
    kits = prov.provision(project, tmp_path / "ws")
    assert set(kits.sites) == set(prov.DEFAULT_SITES)
    server = json.loads((kits.server / "startup" / "fed_server.json").read_text())["servers"][0]
    assert server["service"]["target"] == f"localhost:{fl_port}" and server["admin_port"] == admin_port
    assert server["connection_security"] == "mtls"
    for site, kit in kits.sites.items():
        client = json.loads((kit / "startup" / "fed_client.json").read_text())
        assert client["client"]["connection_security"] == "mtls" and client["client"]["fqsn"] == site
        assert {"client.crt", "client.key", "rootCA.pem", "sub_start.sh"} <= {
            p.name for p in (kit / "startup").iterdir()
        }
    assert (kits.admin / "startup" / "client.crt").is_file()
    assert yaml.safe_load(project.read_text())["participants"][-1]["role"] == "project_admin"


def _git_status() -> str:
    return subprocess.run(
        ["git", "-C", str(REPO), "status", "--porcelain"], capture_output=True, text=True, check=True
    ).stdout


@pytest.mark.slow
def test_provisioned_deployment_runs_a_job(tiny_sites, tmp_path):
    demo = _demo()
    before = _git_status()
    outcome = demo.run_demo(tmp_path / "demo", rounds=1, phantoms=tiny_sites[0], timeout=1200)
    print(demo.report(outcome))
    assert outcome["status"] == "FINISHED:COMPLETED"
    # every participant ran the installed wheel's venv, not the checkout
    venv_bin = tmp_path / "demo" / "venv" / "bin"
    assert outcome["interpreters"] and all(Path(exe).parent == venv_bin for exe in outcome["interpreters"])
    # per-site Dice (cross-site evaluation) and bytes; site-2 (half the cases) has the half-rank adapter
    sites = outcome["sites"]
    assert set(sites) == set(prov.DEFAULT_SITES)
    for r in sites.values():
        assert 0 <= r["dice_global"] <= 1 and 0 <= r["dice_personalised"] <= 1
        assert math.isfinite(r["dice_global"]) and r["bytes_up"] > 0 and r["bytes_down"] > 0
    history = json.loads((Path(outcome["result"]) / "rml_history.json").read_text())
    r1 = [r for r in history["rounds"] if r["round"] == 1 and "task" not in r][0]
    assert r1["sites"]["site-1"]["bytes_up"] == 2 * r1["sites"]["site-2"]["bytes_up"]
    # the job summary names this job; the site outputs are keyed by it, with `latest` pointing at it
    summary = outcome["summary"]
    assert summary["job_id"] == outcome["job_id"] and summary["status"] == "finished" and summary["seed"] == 0
    assert summary["failed_sites"] == {}
    for r in sites.values():
        out = Path(r["output"])
        assert out.name == outcome["job_id"] and (out / "personalised_model.pt").is_file()
        assert (out.parent / "latest").resolve() == out.resolve()
    # show_stats gave the controller's progress while the job ran
    assert outcome["stats"] and all(s["job_id"] == outcome["job_id"] for s in outcome["stats"])
    assert any(s["last_round"]["sites"] for s in outcome["stats"])
    # `cat server <job id>/job_summary.json` worked while the job ran
    running = outcome["summary_while_running"]
    assert running["job_id"] == outcome["job_id"] and running["status"] == "running"
    assert outcome["progress_lines"]  # and `grep server progress <job id>/log.txt` found the round lines
    # clean stop: nothing had to be killed, nothing left running; the checkout is untouched
    assert outcome["leftovers"] == [] and outcome["killed"] == []
    assert not demo._interpreters(outcome["kits"]["root"])
    assert _git_status() == before
