"""Tensor adapters (TenVOO) in the FLARE jobs: ``adapter: tensor`` from the job to the sites and back.

Fast tests: the wire keys and the site's outgoing filter, the server-side deltas of the cores
(``updates.adapter_deltas`` / ``apply_coefficients`` / ``validate_adapter`` with the bundle's
``tensor_seed``), the site runner's merge, the job's export and the site backend's overrides.
Slow test: the Rate-My-LoRA job with ``--adapter tensor`` exported by its job.py and run in the real
FLARE simulator on two tiny phantom sites, one round.
"""

from __future__ import annotations

import importlib
import json
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from nvflare.apis.dxo import DataKind
from nvflare.apis.filter import ContentBlockedException
from nvflare.apis.fl_context import FLContext
from nvflare.app_common.abstract.fl_model import FLModel, ParamsType
from nvflare.app_common.utils.fl_model_utils import FLModelUtils
from torch import nn

import cardiolora.fl.site_backend as site_backend
import cardiolora.fl.site_runner as site_runner
from cardiolora.fl import client, updates
from cardiolora.fl.filters import AdapterOnlyFilter, check_result
from cardiolora.fl.jobs import build_job, export_job, job_ranks
from cardiolora.fl.network import AdapterReference, bundle_network
from cardiolora.fl.protocol import (
    TENSOR_CORE_NAMES,
    adapter_kind,
    check_adapter_type,
    is_adapter_key,
    pack_adapters,
    payload_bytes,
    to_numpy,
    to_transport,
    unpack_adapters,
)
from cardiolora.fl.site_config import SiteConfig
from cardiolora.lora import (
    inject_tensor,
    lora_state_dict,
    merge_tensor,
    state_bytes,
    tensor_delta_state_dict,
    tensor_state_dict,
)
from cardiolora.networks import bundle_setting, plain_state_dict

SEED = 3


def _tiny_tensor_net(seed: int = SEED, perturb: float = 0.05) -> nn.Module:
    """A conv and a transposed conv with TenVOO-L adapters whose cores moved away from θ0."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.ConvTranspose2d(8, 4, 2, stride=2))
    inject_tensor(net, rank=2, seed=seed)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in net.parameters():
            if p.requires_grad:
                p.add_(perturb * torch.randn(p.shape, generator=g))
    return net


def _plain(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k.replace(".base.", "."): v.clone() for k, v in net.state_dict().items() if ".base." in k}


# ----------------------------------------------------------------------------- wire keys and the filter


@pytest.mark.parametrize(
    "key, kind",
    [
        ("model.0.conv.unit0.conv.tenvoo.hub_in", "tensor"),
        ("model.1.submodule.0.conv.tenvoo_T.out12", "tensor"),
        ("m.tenvoo.gate_k", "tensor"),
        ("m.lora_A.weight", "lora"),
        ("m.lora_B_T.weight", "lora"),
        ("m.tenvoo.theta0_hub_in", None),  # the frozen θ0 never travels
        ("m.tenvoo.frozen_full", None),
        ("m.tenvoo.weight", None),
        ("m.base.weight", None),
        ("tenvoo.hub_in", None),  # no module
        ("m.tenvoo_Q.hub_in", None),
    ],
)
def test_adapter_kind_of_keys(key, kind):
    assert adapter_kind(key) == kind
    assert is_adapter_key(key) == (kind is not None)


def test_every_core_of_every_variant_is_a_wire_key():
    for variant in ("L", "Q"):
        net = nn.Sequential(nn.Conv2d(4, 8, 3), nn.Conv3d(8, 4, 3))
        inject_tensor(net, rank=2, variant=variant)
        assert all(adapter_kind(k) == "tensor" for k in tensor_state_dict(net))
    assert {"hub_in", "hub_k", "gate_in", "in12", "out12", "k2"} <= set(TENSOR_CORE_NAMES)
    packed = pack_adapters({"site-1": tensor_state_dict(_tiny_tensor_net())})
    assert set(unpack_adapters(packed)["site-1"]) == set(tensor_state_dict(_tiny_tensor_net()))


def test_filter_passes_tensor_cores_in_half_precision():
    cores = to_numpy(to_transport(tensor_state_dict(_tiny_tensor_net()), "float16"))
    shareable = FLModelUtils.to_shareable(FLModel(params=cores, params_type=ParamsType.FULL, meta={"rank": 2}))
    assert AdapterOnlyFilter(audit_file="").process(shareable, FLContext()) is shareable
    reasons, desc = check_result(DataKind.WEIGHTS, cores, {})
    assert not reasons and desc["bytes"] == state_bytes(tensor_state_dict(_tiny_tensor_net()), torch.float16)


@pytest.mark.parametrize(
    "extra, reason",
    [
        ({"0.base.weight": np.zeros((8, 4, 3, 3), np.float16)}, "`0.base.weight` is not an adapter key"),
        ({"0.weight": np.zeros((8, 4, 3, 3), np.float16)}, "`0.weight` is not an adapter key"),
        ({"0.tenvoo.theta0_hub_in": np.zeros((2, 2, 2, 2), np.float16)}, "`0.tenvoo.theta0_hub_in` is not"),
        ({"0.tenvoo.frozen_full": np.zeros((8, 4, 3, 3), np.float16)}, "`0.tenvoo.frozen_full` is not"),
        ({"0.tenvoo.in12": np.zeros((4, 2, 2), np.int8)}, "has dtype int8"),
    ],
    ids=["base_weight", "plain_weight", "frozen_core", "frozen_full", "int_core"],
)
def test_filter_refuses_what_is_not_a_trained_core(extra, reason):
    cores = to_numpy(to_transport(tensor_state_dict(_tiny_tensor_net()), "float16"))
    shareable = FLModelUtils.to_shareable(FLModel(params={**cores, **extra}, params_type=ParamsType.FULL))
    with pytest.raises(ContentBlockedException, match=reason):
        AdapterOnlyFilter(audit_file="").process(shareable, FLContext())


# ----------------------------------------------------------------------------- the server's deltas


def test_server_delta_of_cores_equals_the_sites_model_delta():
    """ΔW = T(θ) − T(θ0) from the cores alone (θ0 from tensor_seed) = the site model's own ΔW."""
    net = _tiny_tensor_net()
    deltas = updates.adapter_deltas({"site-1": tensor_state_dict(net)}, {}, tensor_seed=SEED)["site-1"]
    expected = tensor_delta_state_dict(net)
    assert list(deltas) == list(expected) == ["0.weight", "1.weight"]
    for k in expected:
        assert deltas[k].dtype == torch.float64
        torch.testing.assert_close(deltas[k].float(), expected[k], rtol=1e-5, atol=1e-6)
        assert float(expected[k].abs().max()) > 1e-3  # the cores moved: a real update
    other = updates.adapter_deltas({"site-1": tensor_state_dict(net)}, {}, tensor_seed=SEED + 1)["site-1"]
    assert not torch.allclose(other["0.weight"], deltas["0.weight"])  # θ0 depends on the seed


def test_eq2_merge_of_cores_equals_merging_the_adapters():
    """apply_coefficients (candidate / Eq. 2) on cores: W + Σ a_c ΔW_c, the same as merge_tensor for one site."""
    a, b = _tiny_tensor_net(), _tiny_tensor_net(perturb=0.1)
    w0 = _plain(a)
    adapters = {"site-1": tensor_state_dict(a), "site-2": tensor_state_dict(b)}
    coefficients = {"site-1": 0.25, "site-2": 0.75}
    merged = updates.apply_coefficients(w0, adapters, {}, coefficients, tensor_seed=SEED)
    da, db = tensor_delta_state_dict(a), tensor_delta_state_dict(b)
    for k in ("0.weight", "1.weight"):
        torch.testing.assert_close(merged[k], w0[k] + 0.25 * da[k] + 0.75 * db[k], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(merged["0.bias"], w0["0.bias"])
    single = updates.apply_coefficients(w0, adapters, {}, {"site-1": 1.0}, tensor_seed=SEED)
    merge_tensor(a)
    for k, v in _plain(a).items():
        torch.testing.assert_close(single[k], v, rtol=1e-5, atol=1e-6)
    # server and site compute bit-identical W_t from the same inputs
    again = updates.apply_coefficients(w0, adapters, {}, coefficients, tensor_seed=SEED)
    assert updates.state_checksum(again) == updates.state_checksum(merged)


def test_cores_without_the_seed_or_lora_without_scaling_are_refused():
    cores = tensor_state_dict(_tiny_tensor_net())
    with pytest.raises(ValueError, match="`tensor_seed`"):
        updates.adapter_deltas({"site-1": cores}, {})
    with pytest.raises(ValueError, match="site-1: .*not tensor-adapter keys|site-1: .*not adapter keys"):
        updates.adapter_deltas({"site-1": {**cores, "0.weight": torch.zeros(8, 4, 3, 3)}}, {"site-1": 1.0}, SEED)
    lora = {"m.lora_A.weight": torch.ones(1, 1, 1, 1), "m.lora_B.weight": torch.ones(2, 1, 1, 1)}
    with pytest.raises(ValueError, match="`scalings` has no entry for sites site-2"):
        updates.adapter_deltas({"site-1": cores, "site-2": lora}, {}, SEED)


def test_validate_adapter_checks_cores_against_the_reference():
    net = _tiny_tensor_net()
    spec = updates.adapter_spec(net)
    assert set(spec) == set(tensor_state_dict(net))
    w0 = _plain(net)
    state = to_transport(tensor_state_dict(net), "float16")
    deltas = updates.validate_adapter(state, spec, w0, {}, site="site-1", rank=2, dtype=torch.float16, tensor_seed=SEED)
    assert set(deltas) == {"0.weight", "1.weight"}
    bad = dict(state)
    bad.pop("0.tenvoo.hub_in")
    bad["0.tenvoo.in12"] = torch.zeros(3, 3, dtype=torch.float16)
    with pytest.raises(
        ValueError, match=r"site-1: adapter rejected \(rank 2\): expected 16 .*\(the tensor cores of 2 modules\)"
    ):
        updates.validate_adapter(bad, spec, w0, {}, site="site-1", rank=2, tensor_seed=SEED)
    with pytest.raises(ValueError, match="missing keys: 0.tenvoo.hub_in"):
        updates.validate_adapter(bad, spec, w0, {}, site="site-1", rank=2, tensor_seed=SEED)
    huge = {k: v.float() * 1e3 for k, v in state.items()}
    with pytest.raises(ValueError, match=r"\|\|ΔW\|\|/\|\|W\|\| <= 1.0"):
        updates.validate_adapter(huge, spec, w0, {}, site="site-1", tensor_seed=SEED)


def test_the_servers_reference_reads_the_bundle():
    ref = AdapterReference("quick", "tensor")
    assert ref.tensor_seed == bundle_setting("quick", "tensor_seed")
    rank = bundle_setting("quick", "tensor_rank")
    assert ref.spec(rank) == {
        k: tuple(v.shape) for k, v in tensor_state_dict(bundle_network("quick", rank, "tensor")).items()
    }
    assert ref.scaling(rank) == {}
    assert AdapterReference("quick").tensor_seed is None
    with pytest.raises(ValueError, match="`adapter` must be one of"):
        AdapterReference("quick", "lokr")
    with pytest.raises(ValueError, match="`adapter` must be one of"):
        check_adapter_type("Tensor")


# ----------------------------------------------------------------------------- the site's side


class _TensorBackend:
    """Trains nothing: returns fixed moved cores of the tiny net (the task logic is what is tested)."""

    def __init__(self, net: nn.Module) -> None:
        self.cores = tensor_state_dict(net)

    def n_cases(self) -> int:
        return 4

    def train_adapter(self, weights, rank, epochs, seed):
        return dict(self.cores), 0.5

    def scalings(self, rank):
        return {}

    def score(self, weights, split):
        return 0.5

    def evaluate(self, weights, split):
        return {"n_cases": 1, "summary": {}}


def test_site_merges_tensor_cores_as_the_server_does(tmp_path):
    """validate → train with the merge: the site's W equals the server's apply_coefficients (checksum)."""
    net = _tiny_tensor_net()
    w0 = _plain(net)
    runner = site_runner.SiteRunner("site-1", _TensorBackend(net), tmp_path, 1, "quick", tensor_seed=SEED)
    runner.on_init(to_numpy(w0), {"round": 0})
    meta = {"round": 1, "ranks": {"site-1": 2}, "merge": None, "transport_dtype": "float16"}
    up = runner.handle("train", {}, meta).params
    assert set(up) == set(tensor_state_dict(net)) and all(v.dtype == torch.float16 for v in up.values())
    accepted = {"site-1": {k: v.float() for k, v in up.items()}}
    down = to_numpy(to_transport(pack_adapters(accepted), "float16"))
    runner.handle("validate", down, {"round": 1, "coefficients": {"site-1": 1.0}, "scalings": {"site-1": {}}})
    server = updates.apply_coefficients(w0, accepted, {"site-1": {}}, {"site-1": 0.5}, tensor_seed=SEED)
    merge = {"round": 1, "coefficients": {"site-1": 0.5}, "scalings": {"site-1": {}}}
    reply = runner.handle("train", {}, {**meta, "round": 2, "merge": merge})
    assert reply.meta["status"] == "merged"
    assert reply.meta["checksum"] == updates.state_checksum(server) != updates.state_checksum(w0)


def test_bundle_backend_trains_tensor_cores_through_bundle_overrides(tmp_path, monkeypatch):
    made = []

    class _Workflow:
        def __init__(self, kind, overrides):
            self.kind, self.overrides = kind, dict(overrides)
            self.trainer = type("Trainer", (), {"add_event_handler": lambda *a: None})()
            made.append(self)

        def initialize(self):
            pass

    monkeypatch.setattr(site_backend, "make_workflow", _Workflow)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "datalist.json").write_text(json.dumps({"train": [], "val": [], "test": []}))
    cfg = SiteConfig(path=tmp_path / "c.json", site="site-1", dataset_dir=tmp_path / "d")
    backend = site_backend.BundleBackend(cfg, "quick", tmp_path, adapter="tensor")
    assert backend.tensor_seed == bundle_setting("quick", "tensor_seed")
    assert backend.scalings(2) == {}
    backend._workflow("lora", 3)
    assert made[-1].kind == "lora"
    assert made[-1].overrides["adapter_type"] == "tensor" and made[-1].overrides["tensor_rank"] == 3
    assert "lora_rank" not in made[-1].overrides
    assert site_backend.BundleBackend(cfg, "quick", tmp_path).tensor_seed is None
    with pytest.raises(ValueError, match="`adapter` must be one of"):
        site_backend.BundleBackend(cfg, "quick", tmp_path, adapter="lokr")


# ----------------------------------------------------------------------------- the job


def _configs(folder: Path) -> tuple[dict, dict]:
    cfg = folder / "app" / "config"
    return json.loads((cfg / "config_fed_server.json").read_text()), json.loads(
        (cfg / "config_fed_client.json").read_text()
    )


@pytest.mark.parametrize("name", ["rate_my_lora", "fedpetuning"])
def test_job_py_adapter_option_reaches_server_and_sites(name, tmp_path):
    job_py = importlib.import_module(f"cardiolora.jobs.{name}.job")
    assert job_py.main(["--export-dir", str(tmp_path / "t"), "--adapter", "tensor"]) == 0
    assert json.loads((tmp_path / "t" / "meta.json").read_text())["name"] == name
    server, site = _configs(tmp_path / "t")
    ctl = next(c for c in server["workflows"] if c["id"] == "controller")
    rank = bundle_setting("quick", "tensor_rank")
    assert ctl["args"]["adapter"] == "tensor" and ctl["args"]["ranks"] == [rank, rank]
    argv = shlex.split(site["executors"][0]["executor"]["args"]["task_script_args"])
    assert client.build_parser().parse_args(argv).adapter == "tensor"
    assert any(f["filters"][0]["path"].endswith("AdapterOnlyFilter") for f in site["task_result_filters"])
    # the default is LoRA, unchanged
    export_job(build_job(name), tmp_path / "l")
    server, site = _configs(tmp_path / "l")
    ctl = next(c for c in server["workflows"] if c["id"] == "controller")
    assert ctl["args"]["adapter"] == "lora" and ctl["args"]["ranks"] == [16, 32]


def test_adapter_choice_errors():
    assert job_ranks("tensor", "quick", (3, 4)) == (3, 4)
    with pytest.raises(ValueError, match="fedavg_full trains the full network"):
        build_job("fedavg_full", adapter="tensor")
    with pytest.raises(ValueError, match="`adapter` must be one of"):
        build_job("rate_my_lora", adapter="lokr")
    with pytest.raises(SystemExit):
        importlib.import_module("cardiolora.jobs.fedavg_full.job").main(["--adapter", "tensor"])


# ----------------------------------------------------------------------------- the simulator


def _two_fl_sites(phantoms: Path, root: Path, sites: list[str]) -> tuple[Path, Path]:
    """Datalists of `sites` with 1 val / 1 test case each under `root`, and an untrained quick W_0."""
    from cardiolora.data.dataset import load_datalist, write_datalist

    for site in sites:
        src = phantoms / "sites" / site
        splits = {s: load_datalist(src, s)[: (None if s == "train" else 1)] for s in ("train", "val", "test")}
        write_datalist(splits, root / site / "datalist.json")
    torch.manual_seed(0)
    base = root / "base_model.pt"
    torch.save(plain_state_dict(bundle_network("quick", 0)), base)
    return root, base


@pytest.mark.slow
def test_rate_my_lora_with_tensor_adapters_in_the_simulator(tiny_sites, tmp_path):
    """job.py --adapter tensor --export-dir → nvflare simulator (2 sites, 1 round): the cores travel."""
    from cardiolora.fl.run import simulate_job, write_site_configs
    from cardiolora.networks import load_weights, lora_unet

    sites = ["site-1", "site-2"]
    root, base = _two_fl_sites(tiny_sites[0], tmp_path / "data", sites)
    job_dir = tmp_path / "exported"
    job_py = importlib.import_module("cardiolora.jobs.rate_my_lora.job")
    argv = ["--export-dir", str(job_dir), "--adapter", "tensor", "--rounds", "1", "--min-clients", "2"]
    assert job_py.main([*argv, "--task-timeout", "600", "--straggler-grace", "5"]) == 0
    server, _ = _configs(job_dir)
    assert next(c for c in server["workflows"] if c["id"] == "controller")["args"]["adapter"] == "tensor"
    cfg_dir = write_site_configs(tmp_path, root, sites, base)
    summary = simulate_job(job_dir, tmp_path, sites, cfg_dir, timeout=600)

    h = json.loads(Path(summary["results"]["rml_history.json"]).read_text())
    assert h["adapter"] == "tensor"
    rank = bundle_setting("quick", "tensor_rank")
    assert h["ranks"] == dict.fromkeys(sites, rank)
    r1 = next(r for r in h["rounds"] if r["round"] == 1 and r.get("task") is None)
    cores = tensor_state_dict(bundle_network("quick", rank, "tensor"))
    expected = state_bytes(cores, torch.float16)
    assert {s: v["bytes_up"] for s, v in r1["sites"].items()} == dict.fromkeys(sites, expected)
    assert expected == payload_bytes(to_transport(cores, "float16"))
    lora_small = state_bytes(lora_state_dict(bundle_network("quick", 16)), torch.float16)
    assert expected < lora_small  # smaller than LoRA at the default ranks (16 / 32)
    assert all(v["accepted"] and v["train_loss"] is not None for v in r1["sites"].values())
    assert {k for keys in h["received_keys"].values() for k in keys} == set(cores)
    w0 = updates.state_checksum(torch.load(base, weights_only=True))
    assert r1["checksum"] != w0  # the cores were merged into W (Eq. 2)
    for site in sites:
        folder = Path(summary["sites"][site])
        personal = torch.load(folder / "personalised_model.pt", weights_only=True)
        load_weights(lora_unet("quick"), folder / "personalised_model.pt")  # a plain U-Net
        assert updates.state_checksum(torch.load(folder / "global_model.pt", weights_only=True)) == r1["checksum"]
        assert updates.state_checksum(personal) not in (r1["checksum"], w0)
        audit = [json.loads(x) for x in (tmp_path / "simulate" / site / "simulate_job" / "outgoing_audit.jsonl").open()]
        assert all(r["decision"] == "passed" for r in audit)
        assert {k for r in audit for k in r["tensors"]} == set(cores)
    table = json.loads(Path(summary["results"]["cross_site_eval.json"]).read_text())
    assert set(table["in_client"]) == set(sites)


def test_a_saved_run_resumes_only_with_the_same_adapter(tmp_path):
    from cardiolora.fl import state
    from cardiolora.fl.controller import RateMyLoRAController

    tensor = RateMyLoRAController(adapter="tensor", ranks=(2, 2))
    lora = RateMyLoRAController(ranks=(2, 2))
    assert tensor.tensor_seed == bundle_setting("quick", "tensor_seed") and lora.tensor_seed is None
    w = {"0.weight": torch.zeros(2)}
    state.save_state(tmp_path, "running", tensor._config(), 1, w, updates.state_checksum(w), {}, {}, {}, [])
    with pytest.raises(RuntimeError, match="field `adapter` was 'tensor' in the saved run but the job says 'lora'"):
        state.load_state(tmp_path, lora._config())
    assert state.load_state(tmp_path, tensor._config())["round"] == 1
    old = {k: v for k, v in lora._config().items() if k != "adapter"}  # saved before jobs named the adapter
    state.save_state(tmp_path, "running", old, 1, w, updates.state_checksum(w), {}, {}, {}, [])
    assert state.load_state(tmp_path, lora._config())["round"] == 1
    with pytest.raises(ValueError, match="`adapter` must be one of"):
        RateMyLoRAController(adapter="lokr")
