"""What the FL admin sees and does: signed submissions, the job summary, show_stats, failed sites,
fresh starts and resuming, per-job site folders with a ``latest`` pointer.

The controller runs against in-process :class:`~cardiolora.fl.site_runner.SiteRunner` sites (the
harness of tests/test_fl_controller.py); the same behaviour in FLARE itself is checked by
tests/test_fl_sim.py (simulator, a site without data) and tests/test_provision.py (provisioned
deployment, ``show_stats`` through the admin API).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from nvflare.apis.fl_context import FLContext
from nvflare.app_common.abstract.fl_model import FLModel
from nvflare.lighter.utils import sign_folders
from nvflare.widgets.info_collector import GroupInfoCollector, InfoCollector
from test_fl_controller import Harness, make_sites
from test_fl_jobs import SIGNATURE_FILES, _same_tree

import cardiolora
from cardiolora.fl import job_info
from cardiolora.fl.jobs import JOB_NAMES
from cardiolora.fl.protocol import Meta, Task
from cardiolora.fl.site_runner import SiteRunner

REPO = Path(__file__).resolve().parents[1]


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout


@pytest.mark.parametrize("name", JOB_NAMES)
def test_submitting_a_committed_job_folder_leaves_git_clean(name, tmp_path):
    """submit_job signs the folder in place with FLARE's own sign_folders; git ignores what it writes."""
    repo = tmp_path / "repo"
    folder = repo / "jobs" / name / "exported"
    shutil.copytree(REPO / "jobs" / name / "exported", folder)
    shutil.copy2(REPO / ".gitignore", repo / ".gitignore")
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "jobs")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (tmp_path / "admin.crt").write_text("certificate")
    sign_folders(str(folder), key, str(tmp_path / "admin.crt"))  # what Session.submit_job does
    written = {p.name for p in folder.rglob(".__nvfl_*")}
    assert written == set(SIGNATURE_FILES)
    assert _git(repo, "status", "--porcelain") == ""
    assert _same_tree(folder, REPO / "jobs" / name / "exported") == []  # the export comparison ignores them


class FailingHarness(Harness):
    """The harness with one site answering every task with ``Meta.ERROR``, as ``client.main`` does
    for a site that cannot start, and a fixed FLARE job id."""

    def __init__(self, *args, failing=None, job="job-a", **kwargs):
        super().__init__(*args, **kwargs)
        self.failing = failing or {}
        self.job = job

    def current_job_id(self):
        return self.job

    def dispatch(self, task, model, targets):
        results = super().dispatch(task, model, [t for t in targets if t not in self.failing])
        for site in targets:
            if site in self.failing:
                results.append(FLModel(metrics={}, meta={Meta.ERROR: self.failing[site], "client_name": site}))
        return results


def _summary(root: Path) -> dict:
    return json.loads((root / "run" / job_info.SUMMARY_FILE).read_text())


def test_failed_site_reason_reaches_the_log_and_the_summary(tmp_path, caplog):
    caplog.set_level("ERROR")
    reason = (
        "site-3: cannot start job job-a: ValueError: .../cardiolora_site.json: field `dataset_dir` holds no datalist"
    )
    ctl = FailingHarness(make_sites(tmp_path), tmp_path, failing={"site-3": reason}, num_rounds=1, min_clients=2)
    ctl.run()
    assert ctl.active == ["site-1", "site-2"]
    assert any(reason in r.getMessage() and "site-3 failed at `init`" in r.getMessage() for r in caplog.records)
    summary = _summary(tmp_path)
    assert summary["status"] == "finished"
    assert summary["failed_sites"] == {"site-3": {"task": Task.INIT, "round": 0, "reason": reason}}
    init = json.loads((tmp_path / "run" / "rml_history.json").read_text())["rounds"][0]
    assert init["sites"]["site-3"]["error"] == reason and init["sites"]["site-3"]["dropped"] == Task.INIT


def test_job_summary_names_job_seed_versions_and_bytes(tmp_path):
    sites = make_sites(tmp_path)
    ctl = FailingHarness(sites, tmp_path, num_rounds=2, job="job-7")
    ctl.run()
    summary = _summary(tmp_path)
    history = json.loads((tmp_path / "run" / "rml_history.json").read_text())
    assert summary["job_id"] == "job-7" and summary["job_name"] == "rate_my_lora"
    assert summary["status"] == "finished" and summary["rounds_completed"] == 2
    assert summary["seed"] == 0 and summary["method"] == "rate_my_lora"
    assert summary["versions"]["server"]["cardiolora"] == cardiolora.__version__
    assert summary["versions"]["server"]["bundle"] == cardiolora.__version__  # one version for both
    assert set(summary["versions"]["sites"]) == set(sites)
    assert all(v["cardiolora"] == cardiolora.__version__ for v in summary["versions"]["sites"].values())
    up = sum(s.get("bytes_up", 0) for r in history["rounds"] for s in r["sites"].values())
    down = sum(s.get("bytes_down", 0) for r in history["rounds"] for s in r["sites"].values())
    assert summary["bytes"]["all"] == {"up": up, "down": down} and up > 0 and down > 0
    r2 = [r for r in history["rounds"] if r["round"] == 2 and "task" not in r][0]
    assert summary["dice"] == {s: v["score"] for s, v in r2["sites"].items()}


def test_summary_of_a_failed_job_says_why(tmp_path):
    ctl = FailingHarness(make_sites(tmp_path), tmp_path, num_rounds=2, crash_at=(Task.VALIDATE, 2))
    with pytest.raises(RuntimeError, match="server crash"):
        ctl.run()
    summary = _summary(tmp_path)
    assert summary["status"].startswith("failed: RuntimeError: server crash") and summary["rounds_completed"] == 1


def test_show_stats_returns_the_round_in_progress(tmp_path):
    """FLARE's show_stats fires EVENT_TYPE_GET_STATS with a GroupInfoCollector; the controller fills it."""
    ctl = FailingHarness(make_sites(tmp_path), tmp_path, num_rounds=2, job="job-s")
    ctl.run()
    fl_ctx = FLContext()
    collector = GroupInfoCollector()
    fl_ctx.set_prop(InfoCollector.CTX_KEY_STATS_COLLECTOR, collector, private=True, sticky=False)
    ctl.handle_event(InfoCollector.EVENT_TYPE_GET_STATS, fl_ctx)
    stats = collector.info["cardiolora"]
    history = json.loads((tmp_path / "run" / "rml_history.json").read_text())
    r2 = [r for r in history["rounds"] if r["round"] == 2 and "task" not in r][0]
    assert stats["job_id"] == "job-s" and stats["round"] == 2 and stats["num_rounds"] == 2
    assert stats["lambda"] == pytest.approx(r2["lambda"])
    assert stats["last_round"]["round"] == 2
    for site, rec in r2["sites"].items():
        got = stats["last_round"]["sites"][site]
        assert got["score"] == rec["score"] and got["rating"] == rec["rating"]
        assert got["bytes_up"] == rec["bytes_up"] > 0
    json.dumps(stats)  # it travels to the admin as JSON


def test_fresh_job_never_resumes_an_aborted_state(tmp_path):
    with pytest.raises(RuntimeError, match="server crash"):
        FailingHarness(make_sites(tmp_path), tmp_path, num_rounds=2, job="job-1", crash_at=(Task.VALIDATE, 2)).run()
    state_dir = tmp_path / "cardiolora_state" / "rate_my_lora"
    assert json.loads((state_dir / "state.json").read_text())["job_id"] == "job-1"
    # fresh: the aborted state is archived, the run starts at W_0 (round 1 again)
    ctl = FailingHarness(make_sites(tmp_path), tmp_path, num_rounds=2, job="job-2", fresh=True, cross_eval=False)
    ctl.run()
    assert list(state_dir.glob("state.replaced-by-job-2-*.pt"))
    history = json.loads((tmp_path / "run" / "rml_history.json").read_text())
    assert [r["resumed"] for r in history["rounds"] if r.get("task") == "init"] == [False]
    assert _summary(tmp_path)["resumed_from"] is None


def test_resumed_job_names_the_job_it_continues(tmp_path, caplog):
    caplog.set_level("WARNING")
    first = FailingHarness(make_sites(tmp_path), tmp_path, num_rounds=2, job="job-1", crash_at=(Task.VALIDATE, 2))
    with pytest.raises(RuntimeError, match="server crash"):
        first.run()
    second = FailingHarness(make_sites(tmp_path), tmp_path, num_rounds=2, job="job-2", cross_eval=False)
    second.run()
    assert _summary(tmp_path)["resumed_from"] == {"job_id": "job-1", "round": 1}
    assert any("resuming after round 1 of job job-1" in r.getMessage() for r in caplog.records)
    # the sites hear it in `init` (dual sites take the local pairs of job-1's folder over from it)
    init_meta = {run: [m for task, _, m in run.sent_meta if task == Task.INIT] for run in (first, second)}
    assert all(Meta.RESUMED_FROM not in m for m in init_meta[first]) and init_meta[first]
    assert [m[Meta.RESUMED_FROM] for m in init_meta[second]] == ["job-1"] * 3


def test_fresh_must_be_a_bool():
    with pytest.raises(ValueError, match="`fresh`"):
        Harness({}, Path("."), fresh="yes")


def test_site_outputs_are_per_job_with_a_latest_pointer(tmp_path):
    out = tmp_path / "out"

    def sites_of(job: str) -> dict[str, SiteRunner]:
        base = make_sites(tmp_path)
        return {
            name: SiteRunner(
                name, r.backend, job_info.job_output_dir(out / name, "rate_my_lora", job), 1, "quick", job_id=job
            )
            for name, r in base.items()
        }

    for job in ("job-1", "job-2"):
        FailingHarness(sites_of(job), tmp_path, num_rounds=1, job=job, fresh=True, cross_eval=False).run()
    for site in ("site-1", "site-2", "site-3"):
        root = out / site / "rate_my_lora"
        assert sorted(p.name for p in root.iterdir() if p.is_dir() and not p.is_symlink()) == ["job-1", "job-2"]
        assert (root / "latest").is_symlink() and (root / "latest").resolve() == (root / "job-2").resolve()
        assert job_info.latest_dir(root) == root / "job-2"
        for job in ("job-1", "job-2"):
            summary = json.loads((root / job / "site_summary.json").read_text())
            assert summary["job_id"] == job and (root / job / "personalised_model.pt").is_file()


def test_latest_is_only_moved_by_a_finished_job(tmp_path):
    root = tmp_path / "rate_my_lora"
    (root / "job-1").mkdir(parents=True)
    job_info.mark_latest(root / "job-1")
    (root / "job-2").mkdir()  # a job that was aborted before `finalize`: latest stays
    assert job_info.latest_dir(root) == root / "job-1" and (root / "latest").resolve() == (root / "job-1").resolve()
    with pytest.raises(FileNotFoundError, match="no finished job"):
        job_info.latest_dir(tmp_path / "none")
    with pytest.raises(ValueError, match="`job_id`"):
        job_info.job_output_dir(tmp_path, "rate_my_lora", "latest")


@pytest.mark.parametrize("name", ["rate_my_lora", "fedpetuning"])
def test_fresh_option_reaches_the_exported_controller(name, tmp_path):
    from test_fl_jobs import _job_main

    assert _job_main(name, ["--export-dir", str(tmp_path / "f"), "--fresh"]) == 0
    config = json.loads((tmp_path / "f" / "app" / "config" / "config_fed_server.json").read_text())
    assert config["workflows"][0]["args"]["fresh"] is True
    committed = json.loads(
        (REPO / "jobs" / name / "exported" / "app" / "config" / "config_fed_server.json").read_text()
    )
    assert "fresh" not in committed["workflows"][0]["args"]  # default: resume an unfinished run


def test_job_info_doctests():
    import doctest

    result = doctest.testmod(job_info, verbose=False)
    assert result.failed == 0 and result.attempted >= 2
