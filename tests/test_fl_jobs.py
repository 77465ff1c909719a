"""FLARE jobs: committed exports, site-local configs, the adapter-only filter, the FedAvg aggregator."""

from __future__ import annotations

import doctest
import filecmp
import importlib
import importlib.util
import json
import runpy
import shlex
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from nvflare.apis.dxo import DXO, DataKind
from nvflare.apis.filter import ContentBlockedException
from nvflare.apis.fl_context import FLContext
from nvflare.app_common.abstract.fl_model import FLModel, ParamsType
from nvflare.app_common.utils.fl_model_utils import FLModelUtils

import cardiolora.fl.site_backend as site_backend
import cardiolora.fl.site_runner as site_runner
from cardiolora.fl import client, cross_eval, protocol
from cardiolora.fl import rml as rml_math
from cardiolora.fl.aggregators import DatasetSizeAggregator
from cardiolora.fl.filters import AdapterOnlyFilter, check_result
from cardiolora.fl.jobs import CLIENT_SCRIPT, JOB_NAMES, SITE_SCRIPT, build_job, export_job
from cardiolora.fl.protocol import (
    DEFAULT_TRANSPORT_DTYPE,
    Task,
    check_transport_dtype,
    from_transport,
    is_adapter_key,
    pack_adapters,
    payload_bytes,
    to_transport,
    unpack_adapters,
)
from cardiolora.fl.run import run_simulation
from cardiolora.fl.seeds import DEFAULT_SEED, round_seed
from cardiolora.fl.site_config import SITE_CONFIG_ENV, SiteConfig, load_site_config

REPO = Path(__file__).resolve().parents[1]


#: What FLARE's submit_job writes into a submitted job folder (ignored by git: .gitignore).
SIGNATURE_FILES = (".__nvfl_sig.json", ".__nvfl_submitter.crt")


def _tree(root: Path) -> list[str]:
    """The files of a job folder, without the signature files a submission leaves there."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name not in SIGNATURE_FILES)


def _same_tree(a: Path, b: Path) -> list[str]:
    """Files that differ between two job folders (empty: identical, byte for byte)."""
    if _tree(a) != _tree(b):
        return sorted(set(_tree(a)) ^ set(_tree(b)))
    _, mismatch, errors = filecmp.cmpfiles(a, b, _tree(a), shallow=False)
    return mismatch + errors


def _job_py(name: str) -> ModuleType:
    """``jobs/<name>/job.py`` loaded from the checkout's file, as a user runs it."""
    spec = importlib.util.spec_from_file_location(f"_job_py_{name}", REPO / "jobs" / name / "job.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _job_main(name: str, argv: list[str]) -> int:
    return _job_py(name).main(argv)


@pytest.mark.parametrize("name", JOB_NAMES)
def test_committed_export_equals_a_fresh_export(name, tmp_path):
    """Nobody edits jobs/<name>/exported by hand: it is exactly what job.py --export writes."""
    committed = REPO / "jobs" / name / "exported"
    assert (committed / "meta.json").is_file(), f"{committed} missing: run python jobs/{name}/job.py --export"
    assert _job_main(name, ["--export-dir", str(tmp_path / name)]) == 0
    differ = _same_tree(tmp_path / name, committed)
    assert not differ, f"{differ} differ: run python jobs/{name}/job.py --export"


@pytest.mark.parametrize("name", JOB_NAMES)
def test_the_package_builds_the_job_of_job_py(name, tmp_path):
    """build_job (cardiolora.fl.run, installed sites) imports job.py's own build: one job, two ways in."""
    packaged = importlib.import_module(f"cardiolora.jobs.{name}.job")
    assert Path(packaged.__file__).resolve() == (REPO / "jobs" / name / "job.py").resolve()
    argv = ["--rounds", "7", "--local-epochs", "2", "--min-clients", "3", "--seed", "4"]
    settings = dict(num_rounds=7, local_epochs=2, min_clients=3, seed=4)
    if name == "fedavg_full":
        argv += ["--n-clients", "5"]
        settings["n_clients"] = 5
    else:
        argv += ["--task-timeout", "900", "--straggler-grace", "30", "--transport-dtype", "float32"]
        settings.update(task_timeout=900, straggler_grace=30, transport_dtype="float32")
    assert _job_main(name, ["--export-dir", str(tmp_path / "job_py"), *argv]) == 0
    export_job(build_job(name, **settings), tmp_path / "package")
    assert not _same_tree(tmp_path / "job_py", tmp_path / "package")
    server = json.loads((tmp_path / "package" / "app" / "config" / "config_fed_server.json").read_text())
    assert server["workflows"][0]["args"]["num_rounds"] == 7


def test_job_py_runs_as_a_script(tmp_path):
    """`python jobs/<name>/job.py --export-dir DIR` from any folder writes the committed job."""
    done = subprocess.run(
        [sys.executable, str(REPO / "jobs" / "fedavg_full" / "job.py"), "--export-dir", str(tmp_path / "job")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert not _same_tree(tmp_path / "job", REPO / "jobs" / "fedavg_full" / "exported")


@pytest.mark.parametrize("name", JOB_NAMES)
def test_exported_site_script_is_the_launcher_of_the_package_client(name):
    """The job carries a launcher of cardiolora.fl.client.main, not a copy of the site code."""
    custom = REPO / "jobs" / name / "exported" / "app" / "custom"
    assert _tree(custom) == [CLIENT_SCRIPT]
    assert (custom / CLIENT_SCRIPT).read_bytes() == SITE_SCRIPT.read_bytes()
    config = json.loads((REPO / "jobs" / name / "exported" / "app" / "config" / "config_fed_client.json").read_text())
    assert config["executors"][0]["executor"]["args"]["task_script_path"] == CLIENT_SCRIPT


def test_site_script_runs_the_package_client(monkeypatch):
    calls = []
    monkeypatch.setattr(client, "main", calls.append)
    monkeypatch.setattr(sys, "argv", [str(SITE_SCRIPT), "--method", "rml", "--seed", "3"])
    runpy.run_path(str(SITE_SCRIPT), run_name="__main__")
    assert calls == [["--method", "rml", "--seed", "3"]]


def test_site_script_without_the_package_says_so(tmp_path):
    # -I -S: no site-packages, so no cardiolora (as on a site that did not install it)
    done = subprocess.run(
        [sys.executable, "-I", "-S", str(SITE_SCRIPT)], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert done.returncode != 0 and "this site has no `cardiolora` package: install it" in done.stderr


def _client(name: str) -> dict:
    return json.loads((REPO / "jobs" / name / "exported" / "app" / "config" / "config_fed_client.json").read_text())


def _server(name: str) -> dict:
    return json.loads((REPO / "jobs" / name / "exported" / "app" / "config" / "config_fed_server.json").read_text())


def test_lora_jobs_filter_every_task_and_share_the_site_app():
    for name in ("rate_my_lora", "fedpetuning"):
        chains = _client(name)["task_result_filters"]
        assert len(chains) == 1
        # FLARE 2.9 keys result filters by exact task name: every task of the protocol is listed
        assert chains[0]["tasks"] == sorted(Task.ALL)
        assert [f["path"] for f in chains[0]["filters"]] == ["cardiolora.fl.filters.AdapterOnlyFilter"]
    rml, fedpet = _client("rate_my_lora"), _client("fedpetuning")
    args = fedpet["executors"][0]["executor"]["args"]
    args["task_script_args"] = args["task_script_args"].replace("fedpetuning", "rate_my_lora")
    assert rml == fedpet  # the sites run the very same app (and filter) in both jobs
    servers = {name: _server(name) for name in ("rate_my_lora", "fedpetuning")}
    assert servers["fedpetuning"]["workflows"][0]["args"]["lambda0"] == 0.0
    assert servers["rate_my_lora"]["workflows"][0]["args"]["lambda0"] == rml_math.DEFAULT_LAMBDA0
    for server in servers.values():  # and the same server but for λ_0 and the state's name
        del server["workflows"][0]["args"]["lambda0"], server["workflows"][0]["args"]["state_name"]
    assert servers["rate_my_lora"] == servers["fedpetuning"]


def test_fedavg_full_sends_full_weights_without_filter():
    client = _client("fedavg_full")
    assert client["task_result_filters"] == []
    assert "--method fedavg" in client["executors"][0]["executor"]["args"]["task_script_args"]
    wf = _server("fedavg_full")["workflows"][0]
    assert wf["path"] == "nvflare.app_common.workflows.fedavg.FedAvg"
    assert wf["args"]["aggregator"]["path"] == "cardiolora.fl.aggregators.DatasetSizeAggregator"


# ----------------------------------------------------------------------------- the job seed


def _script_args(job_folder: Path) -> list[str]:
    config = json.loads((job_folder / "app" / "config" / "config_fed_client.json").read_text())
    return shlex.split(config["executors"][0]["executor"]["args"]["task_script_args"])


@pytest.mark.parametrize("name", JOB_NAMES)
def test_committed_jobs_give_the_sites_the_default_seed(name):
    args = client.build_parser().parse_args(_script_args(REPO / "jobs" / name / "exported"))
    assert args.seed == DEFAULT_SEED == 0


class _RecordingBackend:
    """A site backend that trains nothing and records the seeds it is given."""

    made: list[_RecordingBackend] = []

    def __init__(
        self,
        config: SiteConfig,
        profile: str,
        output_dir: Path,
        seed: int = DEFAULT_SEED,
        adapter: str = "lora",
        local_rank: int = 0,
    ) -> None:
        self.bundle_seed = seed
        self.adapter = adapter
        self.local_rank = local_rank
        self.tensor_seed = None
        self.train_seeds: list[int] = []
        _RecordingBackend.made.append(self)

    def n_cases(self) -> int:
        return 3

    def train_adapter(self, weights, rank, epochs, seed):
        self.train_seeds.append(seed)
        return {"m.lora_A.weight": torch.zeros(rank, 1), "m.lora_B.weight": torch.zeros(1, rank)}, 0.5

    def train_dual(self, weights, rank, local, epochs, seed):  # the dual_lora job's sites
        adapter, loss = self.train_adapter(weights, rank, epochs, seed)
        return adapter, {"m.lora_A_local.weight": torch.zeros(1, 1), "m.lora_B_local.weight": torch.zeros(1, 1)}, loss

    def train_full(self, weights, epochs, seed):
        self.train_seeds.append(seed)
        return dict(weights), 0.5

    def score(self, weights, split):
        return 0.5


class _FakeFlare:
    """The Client API calls of ``client.main``, serving a fixed list of tasks to one site."""

    def __init__(self, site: str, tasks: list[tuple[str, FLModel]]) -> None:
        self.site, self.tasks, self.sent, self.task = site, list(tasks), [], None

    def install(self, monkeypatch) -> None:
        import nvflare.client as flare

        monkeypatch.setattr(flare, "init", lambda *a, **k: None)
        monkeypatch.setattr(flare, "get_site_name", lambda: self.site)
        monkeypatch.setattr(flare, "get_job_id", lambda: "job-1")
        monkeypatch.setattr(flare, "is_running", lambda: bool(self.tasks))
        monkeypatch.setattr(flare, "get_task_name", lambda: self.task)
        monkeypatch.setattr(flare, "send", self.sent.append)
        monkeypatch.setattr(flare, "receive", self.receive)

    def receive(self) -> FLModel:
        self.task, model = self.tasks.pop(0)
        return model


@pytest.mark.parametrize("name", JOB_NAMES)
def test_job_seed_reaches_the_site_training(name, tmp_path, monkeypatch):
    """job.py --seed 5 -> exported script args -> client.main -> the site's backend and per-round seeds."""
    folder = tmp_path / "job"
    assert _job_main(name, ["--export-dir", str(folder), "--seed", "5"]) == 0
    argv = _script_args(folder)
    assert argv[-2:] == ["--seed", "5"]
    site = "site-2"
    data = _datalist(tmp_path / "data")
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / f"{site}.json").write_text(json.dumps({"dataset_dir": str(data), "output_dir": "out"}))
    monkeypatch.setenv(SITE_CONFIG_ENV, str(tmp_path / "cfg"))
    monkeypatch.setattr(client, "BundleBackend", _RecordingBackend)
    monkeypatch.setattr(_RecordingBackend, "made", [])
    weights = {"m.weight": np.ones((1, 1), np.float32)}
    if name == "fedavg_full":
        tasks = [(Task.TRAIN, FLModel(params=weights, current_round=2))]
    else:
        tasks = [
            (Task.INIT, FLModel(params=weights, meta={"round": 0})),
            (Task.TRAIN, FLModel(params={}, meta={"round": 2, "ranks": {site: 2}, "merge": None})),
        ]
    flare = _FakeFlare(site, tasks)
    flare.install(monkeypatch)
    client.main(argv)
    (backend,) = _RecordingBackend.made
    assert backend.bundle_seed == 5
    assert backend.train_seeds == [round_seed(5, site, 2)]
    assert backend.train_seeds != [round_seed(0, site, 2)]
    assert len(flare.sent) == len(tasks)
    if name == "fedavg_full":
        summary = json.loads((tmp_path / "cfg" / "out" / name / "job-1" / "site_summary.json").read_text())
        assert summary["seed"] == 5 and summary["job_id"] == "job-1"


def test_bundle_backend_passes_the_job_seed_to_the_bundle(tmp_path, monkeypatch):
    class _Workflow:
        def __init__(self, overrides):
            self.overrides = dict(overrides)
            self.trainer = type("Trainer", (), {"add_event_handler": lambda *a: None})()

        def initialize(self):
            pass

    monkeypatch.setattr(site_backend, "make_workflow", lambda kind, overrides: _Workflow(overrides))
    cfg = SiteConfig(path=tmp_path / "c.json", site="site-1", dataset_dir=_datalist(tmp_path / "d"))
    assert site_backend.BundleBackend(cfg, "quick", tmp_path)._workflow("lora", 4).overrides["seed"] == 0
    wf = site_backend.BundleBackend(cfg, "quick", tmp_path, seed=7)._workflow("lora", 4)
    assert wf.overrides["seed"] == 7 and wf.overrides["lora_rank"] == 4


@pytest.mark.parametrize("bad", [-1, 2.5, "3", True])
def test_bad_seed_is_refused_everywhere(bad, tmp_path):
    with pytest.raises(ValueError, match="`seed` must be a non-negative int"):
        build_job("fedpetuning", seed=bad)
    with pytest.raises(ValueError, match="`seed` must be a non-negative int"):
        site_runner.SiteRunner("site-1", _RecordingBackend(None, "quick", tmp_path), tmp_path, 1, "quick", seed=bad)
    with pytest.raises(ValueError, match="`seed` must be a non-negative int"):
        run_simulation("fedpetuning", tmp_path / "sites", tmp_path / "none.pt", tmp_path / "w", seed=bad)
    assert not (tmp_path / "w").exists()  # refused before anything is written


@pytest.mark.parametrize("bad", ["-1", "2.5", "x"])
def test_site_script_refuses_a_bad_seed(bad, capsys):
    argv = ["--method", "rml", "--profile", "quick", "--local-epochs", "1", "--job-name", "j", "--seed", bad]
    with pytest.raises(SystemExit):
        client.build_parser().parse_args(argv)
    assert "`seed` must be a non-negative int" in capsys.readouterr().err


# ----------------------------------------------------------------------------- site-local config


def _datalist(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "datalist.json").write_text(json.dumps({"train": [], "val": [], "test": []}))
    return folder


def test_site_config_from_workspace_local(tmp_path, monkeypatch):
    monkeypatch.delenv(SITE_CONFIG_ENV, raising=False)
    data = _datalist(tmp_path / "data")
    (tmp_path / "ws" / "local").mkdir(parents=True)
    (tmp_path / "ws" / "local" / "cardiolora_site.json").write_text(
        json.dumps({"dataset_dir": "../../data", "output_dir": "/out", "num_threads": 2})
    )
    cfg = load_site_config("site-1", workspace=tmp_path / "ws")
    assert cfg.dataset_dir == data.resolve() and cfg.output_dir == Path("/out") and cfg.num_threads == 2


def test_site_config_from_env_folder(tmp_path, monkeypatch):
    data = _datalist(tmp_path / "data")
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "site-2.json").write_text(json.dumps({"dataset_dir": str(data), "output_dir": "o"}))
    monkeypatch.setenv(SITE_CONFIG_ENV, str(tmp_path / "cfg"))
    cfg = load_site_config("site-2")
    assert cfg.path == tmp_path / "cfg" / "site-2.json" and cfg.output_dir == (tmp_path / "cfg" / "o").resolve()


@pytest.mark.parametrize(
    "content, error, message",
    [
        (None, FileNotFoundError, r"cardiolora_site.json: no site config for `site-1`"),
        ("{not json", ValueError, r"cardiolora_site.json: cannot read it as JSON"),
        ({"output_dir": "/o"}, ValueError, r"cardiolora_site.json: field `dataset_dir` is required"),
        (
            {"dataset_dir": "/nowhere", "output_dir": "/o"},
            ValueError,
            r"field `dataset_dir` = /nowhere holds no datalist",
        ),
        ({"dataset_dir": 3, "output_dir": "/o"}, ValueError, r"field `dataset_dir` must be a path string"),
        ({"dataset_dir": "DATA", "output_dir": "/o", "num_threads": 0}, ValueError, r"field `num_threads`"),
    ],
    ids=["missing_file", "bad_json", "missing_field", "no_datalist", "wrong_type", "bad_threads"],
)
def test_site_config_errors_name_file_and_field(tmp_path, monkeypatch, content, error, message):
    monkeypatch.delenv(SITE_CONFIG_ENV, raising=False)
    data = _datalist(tmp_path / "data")
    local = tmp_path / "local"
    local.mkdir()
    if content is not None:
        text = content if isinstance(content, str) else json.dumps(content).replace('"DATA"', json.dumps(str(data)))
        (local / "cardiolora_site.json").write_text(text)
    with pytest.raises(error, match=message):
        load_site_config("site-1", workspace=tmp_path)


def test_site_config_reads_the_fl_section_of_the_one_site_file(tmp_path, monkeypatch):
    """The site file with `fl` and `inference` sections: the participant reads `fl` only."""
    monkeypatch.delenv(SITE_CONFIG_ENV, raising=False)
    data = _datalist(tmp_path / "data")
    (tmp_path / "local").mkdir()
    site_file = {
        "fl": {"dataset_dir": str(data), "output_dir": "out", "num_threads": 1},
        "inference": {"model": "out/personalised_model.pt", "profile": "quick"},
    }
    (tmp_path / "local" / "cardiolora_site.json").write_text(json.dumps(site_file))
    cfg = load_site_config("site-1", workspace=tmp_path)
    assert cfg.dataset_dir == data and cfg.output_dir == (tmp_path / "local" / "out").resolve()
    assert cfg.num_threads == 1 and cfg.extra == {}  # the inference section is not an unknown FL field
    (tmp_path / "local" / "cardiolora_site.json").write_text(json.dumps({**site_file, "output_dir": "/o"}))
    with pytest.raises(ValueError, match=r"cardiolora_site.json: keys \['output_dir'\] sit beside the sections"):
        load_site_config("site-1", workspace=tmp_path)
    (tmp_path / "local" / "cardiolora_site.json").write_text(json.dumps({"inference": {"profile": "quick"}}))
    with pytest.raises(ValueError, match="field `dataset_dir` is required"):
        load_site_config("site-1", workspace=tmp_path)


def test_server_config_needs_existing_pretrained(tmp_path, monkeypatch):
    monkeypatch.delenv(SITE_CONFIG_ENV, raising=False)
    (tmp_path / "local").mkdir()
    (tmp_path / "local" / "cardiolora_site.json").write_text(json.dumps({"pretrained_path": "/no/model.pt"}))
    with pytest.raises(ValueError, match="field `pretrained_path` = /no/model.pt does not exist"):
        load_site_config("server", required=("pretrained_path",), workspace=tmp_path)


# ----------------------------------------------------------------------------- protocol helpers


@pytest.mark.parametrize("module", [protocol, cross_eval], ids=["protocol", "cross_eval"])
def test_doctests(module):
    result = doctest.testmod(module, extraglobs={"torch": torch}, verbose=False)
    assert result.failed == 0 and result.attempted >= 2


def test_pack_unpack_and_bytes():
    a = {"m.conv.lora_A.weight": torch.zeros(2, 3, 3, 3), "m.conv.lora_B.weight": torch.zeros(4, 2, 1, 1)}
    packed = pack_adapters({"site-1": a})
    assert set(packed) == {"site-1/m.conv.lora_A.weight", "site-1/m.conv.lora_B.weight"}
    assert unpack_adapters(packed) == {"site-1": a}
    assert payload_bytes(packed) == (54 + 8) * 4
    assert payload_bytes({"x": np.zeros(3, dtype=np.float64)}) == 24
    with pytest.raises(ValueError, match="not an adapter key"):
        pack_adapters({"site-1": {"m.conv.weight": torch.zeros(1)}})
    with pytest.raises(ValueError, match="not packed adapters"):
        unpack_adapters({"m.conv.lora_A.weight": torch.zeros(1)})
    assert is_adapter_key("model.0.conv.unit0.conv.lora_B_T.weight")
    assert not is_adapter_key("model.0.conv.unit0.conv.lora_A_T.weight")  # the layout of earlier versions
    assert not is_adapter_key("model.0.conv.unit0.conv.weight") and not is_adapter_key("lora_A.weight")


@pytest.mark.parametrize("dtype, itemsize", [("float32", 4), ("float16", 2)])
def test_transport_round_trip_is_idempotent_and_counted(dtype, itemsize):
    g = torch.Generator().manual_seed(0)
    state = {"m.lora_A.weight": torch.randn(3, 2, 3, 3, generator=g), "m.lora_B.weight": torch.randn(4, 3, 1, 1)}
    sent = to_transport(state, dtype)
    assert {v.dtype for v in sent.values()} == {check_transport_dtype(dtype)}
    back = from_transport({k: v.numpy() for k, v in sent.items()})  # numpy on the wire
    assert {v.dtype for v in back.values()} == {torch.float32}
    again = to_transport(back, dtype)  # the server re-sending what it got changes nothing
    assert all(torch.equal(again[k], sent[k]) for k in sent)
    assert payload_bytes(sent) == itemsize * sum(v.numel() for v in state.values())
    # float16: relative rounding error at most 2^-11 (normal numbers)
    err = max(float(((back[k] - state[k]).abs() / state[k].abs().clamp_min(1e-3)).max()) for k in state)
    assert err <= (2.0**-11 if dtype == "float16" else 0.0)


def test_transport_refuses_unknown_dtype_and_overflow():
    assert DEFAULT_TRANSPORT_DTYPE == "float16"
    with pytest.raises(ValueError, match="`transport_dtype` must be one of"):
        to_transport({"m.lora_A.weight": torch.ones(1)}, "int8")
    with pytest.raises(ValueError, match=r"m\.lora_B\.weight are not finite in `transport_dtype` float16"):
        to_transport({"m.lora_A.weight": torch.ones(1), "m.lora_B.weight": torch.full((2,), 1e5)}, "float16")
    assert to_transport({"m.lora_B.weight": torch.full((2,), 1e5)}, "float32")["m.lora_B.weight"].dtype == torch.float32


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_job_transport_dtype_reaches_the_exported_server_config(dtype, tmp_path):
    assert _job_main("rate_my_lora", ["--export-dir", str(tmp_path), "--transport-dtype", dtype]) == 0
    server = json.loads((tmp_path / "app" / "config" / "config_fed_server.json").read_text())
    ctl = next(c for c in server["workflows"] if c["id"] == "controller")
    assert ctl["args"]["transport_dtype"] == dtype
    with pytest.raises(ValueError, match="`transport_dtype`"):
        build_job("rate_my_lora", transport_dtype="bfloat16")
    with pytest.raises(SystemExit):  # the baseline ships full float32 weights: no such option
        _job_main("fedavg_full", ["--export-dir", str(tmp_path / "f"), "--transport-dtype", "float16"])


# ----------------------------------------------------------------------------- the filter

ADAPTER = {"m.lora_A.weight": np.zeros((2, 1, 3, 3), np.float32), "m.lora_B.weight": np.zeros((4, 2, 1, 1), np.float32)}


@pytest.mark.parametrize(
    "model, reason",
    [
        (
            FLModel(params={**ADAPTER, "m.weight": np.zeros((4, 1, 3, 3), np.float32)}),
            "`m.weight` is not an adapter key",
        ),
        (FLModel(params={"m.lora_A.weight": np.zeros(3, np.int64)}), "has dtype int64"),
        (FLModel(params=ADAPTER, meta={"leak": np.zeros(3)}), "meta.leak: a ndarray"),
        (FLModel(params=ADAPTER, meta={"leak": torch.zeros(3)}), "meta.leak: a Tensor"),
        (FLModel(metrics={"score": 0.5, "w": np.zeros((2, 2))}), "metrics.w: a ndarray"),
        (FLModel(metrics={"score": 0.5}, meta={"note": "x" * 5000}), "a string of 5000 characters"),
    ],
    ids=["base_key", "int_tensor", "array_in_meta", "tensor_in_meta", "array_in_metrics", "long_string"],
)
def test_filter_blocks(model, reason):
    shareable = FLModelUtils.to_shareable(model)
    flt = AdapterOnlyFilter(audit_file="")
    with pytest.raises(ContentBlockedException, match=reason):
        flt.process(shareable, FLContext())


ADAPTER_FP16 = {k: v.astype(np.float16) for k, v in ADAPTER.items()}


@pytest.mark.parametrize(
    "params, reason",
    [
        ({**ADAPTER_FP16, "m.weight": np.zeros((4, 1, 3, 3), np.float16)}, "`m.weight` is not an adapter key"),
        ({**ADAPTER_FP16, "m.lora_A_T.weight": np.zeros((1, 2, 3, 3), np.float16)}, "`m.lora_A_T.weight` is not"),
        ({"m.lora_A.weight": np.zeros(3, np.int8)}, "has dtype int8"),
    ],
    ids=["base_key", "old_layout_key", "int8"],
)
def test_filter_blocks_non_adapter_half_precision_payloads(params, reason):
    shareable = FLModelUtils.to_shareable(FLModel(params=params, params_type=ParamsType.FULL))
    with pytest.raises(ContentBlockedException, match=reason):
        AdapterOnlyFilter(audit_file="").process(shareable, FLContext())


def test_filter_passes_half_precision_adapters():
    params = {**ADAPTER_FP16, "up.lora_A.weight": np.zeros((2, 4, 1, 1), np.float16)}
    params["up.lora_B_T.weight"] = np.zeros((2, 3, 2, 2), np.float16)
    shareable = FLModelUtils.to_shareable(FLModel(params=params, params_type=ParamsType.FULL, meta={"rank": 2}))
    assert AdapterOnlyFilter(audit_file="").process(shareable, FLContext()) is shareable
    reasons, desc = check_result(DataKind.WEIGHTS, params, {})
    assert not reasons and desc["bytes"] == 2 * sum(v.size for v in params.values())


def test_filter_blocks_other_dxo_kinds():
    reasons, _ = check_result(DataKind.COLLECTION, {"x": 1}, {})
    assert reasons and "COLLECTION" in reasons[0]
    shareable = DXO(DataKind.WEIGHTS, data={"m.lora_A.weight": np.zeros(2, np.float32)}, meta={}).to_shareable()
    assert AdapterOnlyFilter(audit_file="").process(shareable, FLContext()) is shareable


@pytest.mark.parametrize(
    "model",
    [
        FLModel(
            params=ADAPTER,
            params_type=ParamsType.FULL,
            metrics={"train_loss": 1.2},
            meta={"n_cases": 4, "rank": 2, "checksum": "ab" * 32, "status": "merged"},
        ),
        FLModel(metrics={"score": 0.7}, meta={"round": 1}),
        FLModel(metrics={"models": {"global": {"n_cases": 2, "summary": {"mean": {"dice": {"mean": None, "n": 0}}}}}}),
    ],
    ids=["adapter", "score", "tables"],
)
def test_filter_passes_adapters_counts_and_metrics(model):
    shareable = FLModelUtils.to_shareable(model)
    assert AdapterOnlyFilter(audit_file="").process(shareable, FLContext()) is shareable


# ----------------------------------------------------------------------------- FedAvg weighted by |D_c|


def test_dataset_size_aggregator():
    agg = DatasetSizeAggregator()
    agg.accept_model(FLModel(params={"w": np.ones(2, np.float32)}, meta={"n_cases": 1, "client_name": "a"}))
    agg.accept_model(FLModel(params={"w": np.full(2, 5.0, np.float32)}, meta={"n_cases": 3, "client_name": "b"}))
    agg.accept_model(FLModel(params={"w": np.full(2, 99.0, np.float32)}, meta={"client_name": "no_size"}))
    agg.accept_model(FLModel(params={"w": np.full(3, 99.0, np.float32)}, meta={"n_cases": 1, "client_name": "shape"}))
    agg.accept_model(
        FLModel(params={"w": np.array([np.nan, 1], np.float32)}, meta={"n_cases": 1, "client_name": "nan"})
    )
    out = agg.aggregate_model()
    np.testing.assert_allclose(out.params["w"], [4.0, 4.0])  # (1·1 + 3·5) / 4
    assert out.params["w"].dtype == np.float32 and out.meta["sites"] == ["a", "b"]
    with pytest.raises(RuntimeError, match="no valid result"):
        agg.aggregate_model()
