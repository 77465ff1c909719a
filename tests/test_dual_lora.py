"""Med-DualLoRA: dual (global + local) LoRA adapters and the ``dual_lora`` FLARE job.

The layer (merge = ``W0 + global + local``, exactly, on Conv2d and ConvTranspose2d; the state
dicts keep global and local keys apart; both pairs train), the site filter (only global keys
leave), the site's local pairs persisting across rounds in its output folder (a real
:class:`~cardiolora.fl.site_runner.SiteRunner` on a tiny network that trains), the job's wiring
(`--aggregation size|rated`, ranks from the bundle, an export FLARE's own submit validator accepts)
and the job in the FLARE simulator on two tiny phantom sites for both aggregations.
"""

from __future__ import annotations

import importlib
import json
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
from torch.nn import functional as F

from cardiolora.fl import rml, site_runner, updates
from cardiolora.fl.filters import AdapterOnlyFilter, check_result
from cardiolora.fl.jobs import JOB_NAMES, build_job, dual_settings, export_job
from cardiolora.fl.network import bundle_network
from cardiolora.fl.protocol import is_adapter_key, is_local_adapter_key, pack_adapters, to_numpy, to_transport
from cardiolora.lora import (
    LoRAConv,
    adapter_delta_from_state,
    inject_lora,
    load_lora_local_state_dict,
    local_delta_from_state,
    lora_delta_state_dict,
    lora_local_scalings,
    lora_local_state_dict,
    lora_scalings,
    lora_state_dict,
    merge_lora,
    reset_lora,
    reset_lora_local,
    state_bytes,
    unmerge_lora,
)
from cardiolora.networks import bundle_setting, load_weights, lora_unet, plain_state_dict

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- the layer


def _integer_(t: torch.Tensor, gen: torch.Generator) -> None:
    """Fill `t` with integers in [-3, 3]: every product and sum below is exact in float32."""
    with torch.no_grad():
        t.copy_(torch.randint(-3, 4, t.shape, generator=gen).to(t.dtype))


def _expected_deltas(layer: LoRAConv) -> tuple[torch.Tensor, torch.Tensor]:
    """Global and local ``ΔW`` by einsum, independently of :func:`lora_delta`."""

    def delta(a: torch.Tensor, b: torch.Tensor, s: float) -> torch.Tensor:
        if layer.transposed:  # ΔW[i, o, k] = s Σ_r A[r, i] B[r, o, k]
            return s * torch.einsum("ri,rokl->iokl", a[:, :, 0, 0], b)
        return s * torch.einsum("or,rikl->oikl", b[:, :, 0, 0], a)  # ΔW[o, i, k] = s Σ_r B[o, r] A[r, i, k]

    g = delta(layer.lora_A.weight, layer.lora_b.weight, layer.scaling)
    loc = delta(layer.lora_a_local.weight, layer.lora_b_local.weight, layer.local_scaling)
    return g.detach(), loc.detach()


@pytest.mark.parametrize(
    "base",
    [lambda: nn.Conv2d(3, 5, 3, padding=1), lambda: nn.ConvTranspose2d(6, 3, 2, stride=2)],
    ids=["Conv2d", "ConvTranspose2d"],
)
def test_merge_equals_w0_plus_global_plus_local(base):
    torch.manual_seed(0)
    layer = LoRAConv(base(), rank=2, alpha=4.0, name="c", local_rank=3, local_alpha=6.0)
    assert (layer.scaling, layer.local_scaling) == (2.0, 2.0)
    gen = torch.Generator().manual_seed(1)
    for t in (layer.base.weight, layer.lora_A.weight, layer.lora_b.weight):
        _integer_(t, gen)
    for t in (layer.lora_a_local.weight, layer.lora_b_local.weight):
        _integer_(t, gen)
    w0 = layer.base.weight.detach().clone()
    g, loc = _expected_deltas(layer)
    assert g.abs().sum() > 0 and loc.abs().sum() > 0
    expected = w0 + g + loc
    assert torch.equal(layer.global_delta().detach(), g) and torch.equal(layer.local_delta().detach(), loc)
    assert torch.equal(layer.merged_weight(), expected)

    x = torch.randint(-2, 3, (1, layer.base.in_channels, 4, 4)).float()
    conv = F.conv_transpose2d if layer.transposed else F.conv2d
    geometry = {"stride": layer.base.stride, "padding": layer.base.padding}
    direct = conv(x, expected, layer.base.bias, **geometry)
    unmerged = layer(x).detach()
    assert torch.allclose(unmerged, direct, atol=1e-3)  # base + global branch + local branch
    net = nn.Sequential(layer)
    merge_lora(net)
    assert torch.equal(layer.base.weight, expected)
    assert torch.allclose(layer(x), direct, atol=1e-3)
    unmerge_lora(net)
    assert torch.equal(layer.base.weight, w0)
    # the server's view of the two parts, from the two state dicts (no model)
    plain = {"0.weight": g}
    assert torch.equal(
        adapter_delta_from_state(lora_state_dict(net), lora_scalings(net))["0.weight"], plain["0.weight"]
    )
    assert torch.equal(local_delta_from_state(lora_local_state_dict(net), lora_local_scalings(net))["0.weight"], loc)
    assert torch.equal(lora_delta_state_dict(net)["0.weight"], g + loc)


def test_state_dicts_keep_global_and_local_apart_and_both_pairs_train():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ConvTranspose2d(4, 2, 2, stride=2))
    inject_lora(net, rank=2, local_rank=1)
    glob, loc = lora_state_dict(net), lora_local_state_dict(net)
    assert set(glob) == {"0.lora_A.weight", "0.lora_B.weight", "1.lora_A.weight", "1.lora_B_T.weight"}
    assert set(loc) == {
        "0.lora_A_local.weight",
        "0.lora_B_local.weight",
        "1.lora_A_local.weight",
        "1.lora_B_T_local.weight",
    }
    assert all(is_adapter_key(k) and not is_local_adapter_key(k) for k in glob)
    assert all(is_local_adapter_key(k) and not is_adapter_key(k) for k in loc)
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    assert trainable == set(glob) | set(loc)
    # both pairs start at ΔW = 0 and both get gradients from one loss (joint training)
    x = torch.randn(2, 1, 6, 6)
    assert torch.equal(net(x), nn.Sequential(net[0].base, net[1].base)(x))
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.1)
    for _ in range(2):
        opt.zero_grad()
        net(x).square().mean().backward()
        opt.step()
    assert all(not torch.equal(glob[k], v) for k, v in lora_state_dict(net).items() if "lora_B" in k)
    assert all(not torch.equal(loc[k], v) for k, v in lora_local_state_dict(net).items() if "lora_B" in k)
    # reset_lora resets the global pairs only; the local ones are reset on their own
    trained_local = lora_local_state_dict(net)
    reset_lora(net)
    assert all(float(v.abs().sum()) == 0 for k, v in lora_state_dict(net).items() if "lora_B" in k)
    assert all(torch.equal(trained_local[k], v) for k, v in lora_local_state_dict(net).items())
    reset_lora_local(net)
    assert all(float(v.abs().sum()) == 0 for k, v in lora_local_state_dict(net).items() if "lora_B" in k)
    load_lora_local_state_dict(net, trained_local)
    assert all(torch.equal(trained_local[k], v) for k, v in lora_local_state_dict(net).items())
    with pytest.raises(ValueError, match="unexpected keys"):
        load_lora_local_state_dict(net, {**trained_local, **glob})


def test_local_rank_zero_is_plain_lora_and_bad_ranks_are_named():
    torch.manual_seed(3)
    plain = LoRAConv(nn.Conv2d(2, 3, 3), rank=2)
    torch.manual_seed(3)
    dual0 = LoRAConv(nn.Conv2d(2, 3, 3), rank=2, local_rank=0)
    assert plain.state_dict().keys() == dual0.state_dict().keys()
    assert all(torch.equal(v, dual0.state_dict()[k]) for k, v in plain.state_dict().items())
    with pytest.raises(ValueError, match="`local_rank` must be an int >= 0"):
        LoRAConv(nn.Conv2d(2, 3, 3), rank=2, local_rank=-1)
    with pytest.raises(ValueError, match="`local_alpha`"):
        LoRAConv(nn.Conv2d(2, 3, 3), rank=2, local_rank=2, local_alpha=0.0)
    with pytest.raises(ValueError, match="no local pair"):
        lora_local_state_dict(nn.Sequential(plain))
    with pytest.raises(ValueError, match="lora_local_rank"):
        lora_unet("quick", 0, adapter="lora", local_rank=2)


def test_bundle_builds_dual_adapters_from_its_own_ranks():
    g, loc = bundle_setting("quick", "dual_global_rank"), bundle_setting("quick", "dual_local_rank")
    net = lora_unet("quick", g, local_rank=loc)
    assert {m.rank for m in net.modules() if isinstance(m, LoRAConv)} == {g}
    assert {m.local_rank for m in net.modules() if isinstance(m, LoRAConv)} == {loc}
    # what travels equals plain LoRA of the global rank: the server's reference needs no local pair
    assert {k: v.shape for k, v in lora_state_dict(net).items()} == {
        k: v.shape for k, v in lora_state_dict(bundle_network("quick", g)).items()
    }


# ----------------------------------------------------------------------------- the filter


def _dual_net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ConvTranspose2d(4, 2, 2, stride=2))
    inject_lora(net, rank=2, local_rank=2)
    return net


def test_filter_passes_global_pairs_and_refuses_a_local_key():
    net = _dual_net()
    up = to_numpy(to_transport(lora_state_dict(net), "float16"))
    shareable = FLModelUtils.to_shareable(FLModel(params=up, params_type=ParamsType.FULL, meta={"rank": 2}))
    assert AdapterOnlyFilter(audit_file="").process(shareable, FLContext()) is shareable
    reasons, desc = check_result(DataKind.WEIGHTS, up, {})
    assert not reasons and desc["bytes"] == state_bytes(lora_state_dict(net), torch.float16)

    local = to_numpy(to_transport(lora_local_state_dict(net), "float16"))
    for key in local:
        leak = FLModelUtils.to_shareable(FLModel(params={**up, key: local[key]}, params_type=ParamsType.FULL))
        with pytest.raises(ContentBlockedException, match=f"`{key}` is a local adapter"):
            AdapterOnlyFilter(audit_file="").process(leak, FLContext())
    reasons, _ = check_result(DataKind.WEIGHTS, {**up, **local}, {})
    assert len(reasons) == len(local) and all("local adapters stay at the site" in r for r in reasons)
    with pytest.raises(ValueError, match="not an adapter key"):
        pack_adapters({"site-1": {**lora_state_dict(net), **lora_local_state_dict(net)}})


# ----------------------------------------------------------------------------- the site


class _TinyDualBackend:
    """A real dual-adapter backend on a tiny network: Adam steps on fixed random data (no bundle)."""

    def __init__(self, seed: int = 0) -> None:
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.PReLU(), nn.ConvTranspose2d(4, 2, 2, stride=2))
        self.w0 = plain_state_dict(self.net)
        inject_lora(self.net, rank=2, local_rank=2)
        gen = torch.Generator().manual_seed(seed + 1)
        self.x, self.y = torch.randn(4, 1, 6, 6, generator=gen), torch.randn(4, 2, 12, 12, generator=gen)
        self.local_loaded: list[dict | None] = []

    def n_cases(self) -> int:
        return 4

    def train_dual(self, weights, rank, local, epochs, seed):
        load_weights(self.net, weights)
        torch.manual_seed(seed)
        reset_lora(self.net)
        self.local_loaded.append(None if local is None else dict(local))
        if local is None:
            reset_lora_local(self.net)
        else:
            load_lora_local_state_dict(self.net, local)
        opt = torch.optim.Adam([p for p in self.net.parameters() if p.requires_grad], lr=0.01)
        for _ in range(3 * epochs):
            opt.zero_grad()
            loss = F.mse_loss(self.net(self.x), self.y)
            loss.backward()
            opt.step()
        return lora_state_dict(self.net), lora_local_state_dict(self.net), float(loss.detach())

    def scalings(self, rank):
        return lora_scalings(self.net)

    def local_scalings(self, rank):
        return lora_local_scalings(self.net)

    def local_template(self):
        return lora_local_state_dict(self.net)

    def _plain(self, weights):
        net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.PReLU(), nn.ConvTranspose2d(4, 2, 2, stride=2))
        net.load_state_dict(weights)
        return net

    def score(self, weights, split):
        with torch.no_grad():
            return -float(F.mse_loss(self._plain(weights)(self.x), self.y))

    def evaluate(self, weights, split):
        return {"n_cases": 1, "summary": {"mean": {"dice": {"mean": self.score(weights, split)}}}}


def _train_meta(round_index: int, merge: dict | None = None) -> dict:
    return {"round": round_index, "ranks": {"site-1": 2}, "merge": merge, "transport_dtype": "float16"}


def test_local_pairs_persist_across_rounds_in_the_output_folder(tmp_path):
    """Round 2 starts from round 1's local pairs (reloaded from the file); only global keys go up."""
    backend = _TinyDualBackend()
    runner = site_runner.SiteRunner("site-1", backend, tmp_path, 1, "quick", local_rank=2)
    w0 = backend.w0
    runner.on_init(to_numpy(w0), {"round": 0})
    up1 = runner.handle("train", {}, _train_meta(1)).params
    assert set(up1) == set(lora_state_dict(backend.net))  # global pairs only
    path = tmp_path / site_runner.LOCAL_ADAPTER_FILE
    saved1 = torch.load(path, weights_only=True)
    assert set(saved1) == set(lora_local_state_dict(backend.net))
    assert float(sum(v.abs().sum() for k, v in saved1.items() if "lora_B" in k)) > 0  # trained
    accepted = {"site-1": {k: v.float() for k, v in up1.items()}}
    scal = {"site-1": lora_scalings(backend.net)}
    down = to_numpy(to_transport(pack_adapters(accepted), "float16"))
    runner.handle("validate", down, {"round": 1, "coefficients": {"site-1": 1.0}, "scalings": scal})
    merge = {"round": 1, "coefficients": {"site-1": 1.0}, "scalings": scal}

    # a restarted site process: a new runner and backend read the local pairs from the file
    backend2 = _TinyDualBackend()
    runner2 = site_runner.SiteRunner("site-1", backend2, tmp_path, 1, "quick", local_rank=2)
    runner2.weights, runner2.received, runner2.received_round = dict(runner.weights), runner.received, 1
    reply = runner2.handle("train", {}, _train_meta(2, merge))
    assert reply.meta["status"] == "merged"
    assert reply.meta["checksum"] == updates.state_checksum(
        updates.apply_coefficients(w0, accepted, scal, {"site-1": 1.0})
    )
    (loaded,) = backend2.local_loaded
    assert loaded is not None and all(torch.equal(loaded[k], saved1[k]) for k in saved1)
    r1, r2 = runner.summary["rounds"][0], runner2.summary["rounds"][0]
    assert r1["local_in"] is None and r2["local_in"] == r1["local_out"] != r2["local_out"]
    assert r2["local_out"] == updates.state_checksum(torch.load(path, weights_only=True))

    # finalize: personalised = W_T + personal global + local, and only the global pair goes up
    reply = runner2.handle(
        "finalize", {}, {"round": 2, "ranks": {"site-1": 2}, "merge": None, "transport_dtype": "float16"}
    )
    assert set(reply.params) == set(lora_state_dict(backend2.net))
    local_t = torch.load(path, weights_only=True)
    expected = updates.apply_coefficients(
        runner2.weights, {"site-1": {k: v.float() for k, v in reply.params.items()}}, scal, {"site-1": 1.0}
    )
    expected = updates.apply_delta(expected, local_delta_from_state(local_t, lora_local_scalings(backend2.net)))
    personal = torch.load(tmp_path / "personalised_model.pt", weights_only=True)
    assert updates.state_checksum(personal) == updates.state_checksum(expected)

    # cross_eval: this site's own model with its local pairs, the other's without (they never travel)
    other = {k: v.float() * 0.5 for k, v in reply.params.items()}
    pers = {"site-1": {k: v.float() for k, v in reply.params.items()}, "site-2": other}
    res = runner2.handle(
        "cross_eval",
        to_numpy(to_transport(pack_adapters(pers), "float16")),
        {"scalings": dict.fromkeys(pers, scal["site-1"])},
    )
    assert res.metrics["models"]["site-1"]["summary"]["mean"]["dice"]["mean"] == backend2.score(personal, "test")

    # a new run (init of round 0) starts the local pairs afresh
    runner2.on_init(to_numpy(w0), {"round": 0})
    assert not path.exists()


def test_a_resumed_job_carries_the_local_pairs_of_the_job_it_resumes_over(tmp_path):
    """After abort_job + resubmit (a new job id, a new folder) the site goes on with its local pairs."""
    jobs_dir = tmp_path / "site-out" / "dual_lora"
    backend = _TinyDualBackend()
    first = site_runner.SiteRunner("site-1", backend, jobs_dir / "job-a", 1, "quick", local_rank=2, job_id="job-a")
    first.on_init(to_numpy(backend.w0), {"round": 0})
    first.handle("train", {}, _train_meta(1))  # then the job is aborted: no finalize, no cross_eval
    saved = torch.load(jobs_dir / "job-a" / site_runner.LOCAL_ADAPTER_FILE, weights_only=True)

    # the resubmitted job: the server resumes after round 1 of job-a and says so in `init`
    backend2 = _TinyDualBackend()
    second = site_runner.SiteRunner("site-1", backend2, jobs_dir / "job-b", 1, "quick", local_rank=2, job_id="job-b")
    second.on_init(to_numpy(backend.w0), {"round": 1, "resumed_from": "job-a"})
    carried = second.summary["init"]["local_carried_over"]
    assert carried == {
        "job_id": "job-a",
        "file": str(jobs_dir / "job-a" / site_runner.LOCAL_ADAPTER_FILE),
        "checksum": updates.state_checksum(saved),
        "round": 1,
    }
    second.handle("train", {}, _train_meta(2))
    (loaded,) = backend2.local_loaded
    assert loaded is not None and all(torch.equal(loaded[k], saved[k]) for k in saved)
    assert second.summary["rounds"][0]["local_in"] == first.summary["rounds"][0]["local_out"]
    assert torch.load(jobs_dir / "job-a" / site_runner.LOCAL_ADAPTER_FILE, weights_only=True).keys() == saved.keys()

    # nothing (usable) to carry over: new local pairs, and the reason is recorded
    (jobs_dir / "job-w").mkdir()
    torch.save({k: torch.zeros(1) for k in saved}, jobs_dir / "job-w" / site_runner.LOCAL_ADAPTER_FILE)  # wrong shapes
    (jobs_dir / "job-z").mkdir()
    (jobs_dir / "job-z" / site_runner.LOCAL_ADAPTER_FILE).write_bytes(b"not a torch file")  # damaged
    for job_id, resumed_from, reason in (
        ("job-c", "job-x", "does not exist"),
        ("job-d", "../job-a", "must be a plain folder name"),
        ("job-e", "latest", "must be a plain folder name"),
        ("job-f", "job-w", "does not fit this job's local pairs: wrong shapes"),
        ("job-g", "job-z", "does not fit this job's local pairs: cannot be read"),
        ("job-h", "job-h", "resumes its own state"),
        (None, "job-a", "outside a job folder"),
    ):
        b = _TinyDualBackend()
        folder = jobs_dir / (job_id or "no-id")
        r = site_runner.SiteRunner("site-1", b, folder, 1, "quick", local_rank=2, job_id=job_id)
        r.on_init(to_numpy(backend.w0), {"round": 1, "resumed_from": resumed_from})
        record = r.summary["init"]["local_carried_over"]
        assert record["job_id"] == resumed_from and reason in record["reason"]
        assert not (folder / site_runner.LOCAL_ADAPTER_FILE).exists()
        r.handle("train", {}, _train_meta(2))
        assert b.local_loaded == [None]
    # a first run (no resumed_from) records nothing
    fresh = site_runner.SiteRunner("site-1", _TinyDualBackend(), jobs_dir / "job-e", 1, "quick", local_rank=2)
    fresh.on_init(to_numpy(backend.w0), {"round": 0})
    assert "local_carried_over" not in fresh.summary["init"]


# ----------------------------------------------------------------------------- the job


def _configs(folder: Path) -> tuple[dict, dict]:
    cfg = folder / "app" / "config"
    return json.loads((cfg / "config_fed_server.json").read_text()), json.loads(
        (cfg / "config_fed_client.json").read_text()
    )


def test_job_settings_reach_server_and_sites(tmp_path):
    assert "dual_lora" in JOB_NAMES
    g, loc = bundle_setting("quick", "dual_global_rank"), bundle_setting("quick", "dual_local_rank")
    assert dual_settings("quick", "size") == ((g, g), loc, 0.0)
    assert dual_settings("quick", "rated", (4, 8), 2) == ((4, 8), 2, rml.DEFAULT_LAMBDA0)
    job_py = importlib.import_module("cardiolora.jobs.dual_lora.job")
    for aggregation, lambda0 in (("size", 0.0), ("rated", rml.DEFAULT_LAMBDA0)):
        folder = tmp_path / aggregation
        argv = ["--export-dir", str(folder), "--aggregation", aggregation, "--local-rank", "4"]
        assert job_py.main(argv) == 0
        server, client = _configs(folder)
        args = next(c for c in server["workflows"] if c["id"] == "controller")["args"]
        assert (args["lambda0"], args["label"], args["ranks"]) == (lambda0, f"dual_lora_{aggregation}", [g, g])
        script = client["executors"][0]["executor"]["args"]["task_script_args"]
        assert "--local-rank 4 " in script and script.endswith("--seed 0")
        assert [f["path"] for f in client["task_result_filters"][0]["filters"]] == [
            "cardiolora.fl.filters.AdapterOnlyFilter"
        ]
        export_job(build_job("dual_lora", aggregation=aggregation, local_rank=4), tmp_path / f"pkg_{aggregation}")
        assert _configs(tmp_path / f"pkg_{aggregation}") == _configs(folder)
    with pytest.raises(ValueError, match="`aggregation` must be one of"):
        build_job("dual_lora", aggregation="mean")
    with pytest.raises(ValueError, match="only the dual_lora job"):
        build_job("rate_my_lora", aggregation="rated")
    with pytest.raises(ValueError, match="LoRA pairs"):
        build_job("dual_lora", adapter="tensor")
    with pytest.raises(ValueError, match="`local_rank` must be an int >= 1"):
        build_job("dual_lora", local_rank=0)


@pytest.mark.parametrize("aggregation", ["size", "rated"])
def test_export_is_valid_for_submit_job(aggregation, tmp_path):
    """FLARE's own submit-time validator (JobMetaValidator, as submit_job and the simulator run it)."""
    from nvflare.fuel.utils.zip_utils import zip_directory_to_bytes
    from nvflare.private.fed.server.job_meta_validator import JobMetaValidator

    folder = REPO / "jobs" / "dual_lora" / "exported"
    if aggregation == "rated":
        folder = tmp_path / "dual_lora"
        importlib.import_module("cardiolora.jobs.dual_lora.job").main(
            ["--export-dir", str(folder), "--aggregation", aggregation]
        )
    data = zip_directory_to_bytes(str(folder.parent), folder.name)  # as the admin console uploads it
    valid, error, meta = JobMetaValidator().validate(folder.name, data)
    assert valid, error
    assert meta["name"] == "dual_lora"


# ----------------------------------------------------------------------------- the simulator


@pytest.mark.slow
def test_dual_lora_in_the_simulator(tiny_sites, tmp_path):
    """job.py --aggregation rated → nvflare simulator (2 tiny sites, 1 round): global pairs travel, local stay.

    The local pairs trained in round 1 are reloaded from the site's file for the personalisation
    epoch (``finalize``); persistence over several rounds and a restarted site process is tested
    at the site-runner level (test_local_pairs_persist_across_rounds_in_the_output_folder).

    One configuration, to keep the suite short: ``rated`` is the one that exercises more (Eq. 1 on
    the global adapters); ``size`` runs the same controller with λ_0 = 0 (FedPETuning's merge,
    simulated in tests/test_fl_sim.py) and the same sites, and differs from ``rated`` in the
    exported job only by λ_0 and the label (test_job_settings_reach_server_and_sites).
    """
    aggregation, rounds = "rated", 1
    from cardiolora.data.dataset import load_datalist, write_datalist
    from cardiolora.fl.run import simulate_job, write_site_configs

    sites = ["site-1", "site-2"]
    root = tmp_path / "data"
    for site in sites:
        src = tiny_sites[0] / "sites" / site
        splits = {s: load_datalist(src, s)[: (None if s == "train" else 1)] for s in ("train", "val", "test")}
        write_datalist(splits, root / site / "datalist.json")
    torch.manual_seed(0)
    base = root / "base_model.pt"
    torch.save(plain_state_dict(bundle_network("quick", 0)), base)
    job_dir = tmp_path / "exported"
    job_py = importlib.import_module("cardiolora.jobs.dual_lora.job")
    argv = ["--export-dir", str(job_dir), "--aggregation", aggregation, "--rounds", str(rounds)]
    assert job_py.main([*argv, "--global-rank", "2", "--local-rank", "2", "--straggler-grace", "5"]) == 0
    cfg_dir = write_site_configs(tmp_path, root, sites, base)
    summary = simulate_job(job_dir, tmp_path, sites, cfg_dir, timeout=600)

    h = json.loads(Path(summary["results"]["rml_history.json"]).read_text())
    assert h["method"] == f"dual_lora_{aggregation}" and h["ranks"] == dict.fromkeys(sites, 2)
    glob = lora_state_dict(bundle_network("quick", 2))
    assert {k for keys in h["received_keys"].values() for k in keys} == set(glob)
    last = [r for r in h["rounds"] if r.get("task") is None and r["round"] >= 1]
    assert len(last) == rounds
    expected = state_bytes(glob, torch.float16)
    for r in last:
        assert all(v["accepted"] and v["bytes_up"] == expected for v in r["sites"].values())
        if aggregation == "rated":
            assert {v["rating"] for v in r["sites"].values()} <= {1.0, 1 - rml.DEFAULT_LAMBDA0}
    for site in sites:
        folder = Path(summary["sites"][site])
        s = json.loads((folder / "site_summary.json").read_text())
        rows = s["rounds"]
        assert rows[0]["local_in"] is None
        for prev, cur in zip(rows, rows[1:], strict=False):
            assert cur["local_in"] == prev["local_out"]  # reloaded from the site's file
        assert s["final"]["local_in"] == rows[-1]["local_out"]
        local = torch.load(folder / site_runner.LOCAL_ADAPTER_FILE, weights_only=True)
        assert all(is_local_adapter_key(k) for k in local) and updates.state_checksum(local) == s["final"]["local_out"]
        load_weights(lora_unet("quick"), folder / "personalised_model.pt")  # a plain U-Net
        audit = [json.loads(x) for x in (tmp_path / "simulate" / site / "simulate_job" / "outgoing_audit.jsonl").open()]
        assert all(r["decision"] == "passed" for r in audit)
        assert not any(is_local_adapter_key(k) for r in audit for k in r["tensors"])
    table = json.loads(Path(summary["results"]["cross_site_eval.json"]).read_text())
    assert set(table["in_client"]) == set(sites) and set(table["cross_client"]) == set(sites)
    assert np.isfinite(table["mean_over_structures"]["dice"]["site-1"]["site-1"])
