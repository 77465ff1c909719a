"""Site-level differential privacy of the adapter updates (``cardiolora.fl.privacy``, ``AdapterDPFilter``).

Fast tests: clipping, the noise's std, the accountant against Opacus itself, the filter on real
FLARE shareables of the bundle network, the start adapter against the real bundle workflow, the
job options (export, off = the job of today). Slow test: rate_my_lora with DP exported by its job.py
and run in the FLARE simulator on two tiny phantom sites, one round.
"""

from __future__ import annotations

import importlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from nvflare.apis.dxo import from_shareable
from nvflare.apis.filter import ContentBlockedException
from nvflare.apis.fl_constant import FLContextKey, ReservedKey
from nvflare.apis.fl_context import FLContext
from nvflare.app_common.abstract.fl_model import FLModel, ParamsType
from nvflare.app_common.utils.fl_model_utils import FLModelUtils
from opacus.accountants import RDPAccountant
from opacus.accountants.analysis import rdp as opacus_rdp

from cardiolora.fl import privacy, updates
from cardiolora.fl.controller import RateMyLoRAController
from cardiolora.fl.filters import AdapterDPFilter, AdapterOnlyFilter, round_start_adapter
from cardiolora.fl.jobs import build_job, export_job
from cardiolora.fl.network import bundle_network
from cardiolora.fl.protocol import Meta, to_numpy, to_transport
from cardiolora.fl.seeds import round_seed
from cardiolora.lora import lora_state_dict
from cardiolora.networks import plain_state_dict

REPO = Path(__file__).resolve().parents[1]
RANK = 2


# ----------------------------------------------------------------------------- clipping and noise


def test_an_update_above_c_is_clipped_to_norm_c_and_one_below_is_untouched():
    g = torch.Generator().manual_seed(0)
    update = {"a": torch.randn(40, 3, generator=g), "b": torch.randn(7, generator=g)}
    norm = math.sqrt(sum(float((v.double() ** 2).sum()) for v in update.values()))
    clipped, got, factor = privacy.clip_update(update, norm / 4)
    assert got == pytest.approx(norm) and factor == pytest.approx(0.25)
    assert privacy.update_norm(clipped) == pytest.approx(norm / 4, rel=1e-12)
    for k in update:  # one factor for the whole vector: the direction is kept
        assert torch.allclose(clipped[k], update[k].double() * 0.25)
    same, _, factor = privacy.clip_update(update, norm * 2)
    assert factor == 1.0 and all(torch.equal(same[k], update[k].double()) for k in update)
    with pytest.raises(ValueError, match="`clip` must be > 0"):
        privacy.clip_update(update, 0)
    with pytest.raises(ValueError, match="non-finite values in \\['a'\\]"):
        privacy.clip_update({"a": torch.tensor([float("nan")])}, 1.0)


def test_noise_std_is_z_times_c_and_reproducible_per_seed():
    settings = privacy.dp_settings(clip=0.2, noise_multiplier=1.5)
    zeros = {"a": torch.zeros(300, 400), "b": torch.zeros(50_000)}
    noisy = privacy.add_gaussian_noise(zeros, settings.noise_std, privacy.noise_generator(11))
    values = torch.cat([v.flatten() for v in noisy.values()])
    assert settings.noise_std == pytest.approx(0.3)
    assert float(values.std()) == pytest.approx(0.3, rel=0.01)  # 170 000 draws: std error ≈ 0.17 %
    assert abs(float(values.mean())) < 0.005
    again = privacy.add_gaussian_noise(zeros, settings.noise_std, privacy.noise_generator(11))
    assert all(torch.equal(noisy[k], again[k]) for k in zeros)
    other = privacy.add_gaussian_noise(zeros, settings.noise_std, privacy.noise_generator(12))
    assert not torch.equal(noisy["b"], other["b"])
    # the noise seed differs per site, round and task (train and finalize of round T)
    seeds = {
        privacy.noise_seed(0, s, t, k) for s in ("site-1", "site-2") for t in (1, 2) for k in ("train", "finalize")
    }
    assert len(seeds) == 8 and privacy.noise_seed(0, "site-1", 1, "train") != privacy.noise_seed(
        1, "site-1", 1, "train"
    )


def test_privatize_clips_the_update_relative_to_the_reference_and_keeps_dtypes():
    g = torch.Generator().manual_seed(1)
    ref = {"m.lora_A.weight": torch.randn(2, 6, generator=g), "m.lora_B.weight": torch.zeros(4, 2)}
    state = {k: (v + 3.0 * torch.randn(v.shape, generator=g)).to(torch.float16) for k, v in ref.items()}
    tiny = privacy.DPSettings(clip=0.5, noise_multiplier=1e-9)  # noise far below float16's resolution here
    out, info = privacy.privatize(state, ref, tiny, privacy.noise_generator(0))
    assert {k: v.dtype for k, v in out.items()} == dict.fromkeys(state, torch.float16)
    assert info["clip_factor"] < 1 and info["norm"] > 0.5
    sent = privacy.update_norm({k: out[k].double() - ref[k].double() for k in ref})
    assert sent == pytest.approx(0.5, abs=0.01)  # clipped to C (float16 rounding of the sent values)
    loose = privacy.DPSettings(clip=1e3, noise_multiplier=1e-9)
    out, info = privacy.privatize(state, ref, loose, privacy.noise_generator(0))
    assert info["clip_factor"] == 1.0 and all(torch.equal(out[k], state[k]) for k in state)
    with pytest.raises(ValueError, match="differ in keys"):
        privacy.privatize(state, {"m.lora_A.weight": ref["m.lora_A.weight"]}, tiny, privacy.noise_generator(0))
    with pytest.raises(ValueError, match="does not fit in torch.float16"):
        privacy.privatize(state, ref, privacy.DPSettings(clip=1.0, noise_multiplier=1e6), privacy.noise_generator(0))


# ----------------------------------------------------------------------------- the accountant


def test_epsilon_is_opacus_rdp_accountant_and_grows_with_rounds():
    z, delta = 1.1, 1e-5
    acc = RDPAccountant()
    direct = []
    for _ in range(6):
        acc.step(noise_multiplier=z, sample_rate=1.0)
        direct.append(acc.get_epsilon(delta=delta))
    ours = privacy.epsilon_per_step(privacy.dp_settings(0.1, z, delta), 6)
    assert ours == pytest.approx(direct, rel=1e-12)
    assert all(b > a for a, b in zip(ours, ours[1:], strict=False))  # monotone in the rounds
    assert privacy.epsilon_after(0, z) == 0.0
    # q = 1: one step's RDP at order α is α / (2 z²) (the Gaussian mechanism, no amplification)
    orders = [2.0, 8.0, 32.0]
    assert list(opacus_rdp.compute_rdp(q=1.0, noise_multiplier=z, steps=3, orders=orders)) == pytest.approx(
        [3 * a / (2 * z * z) for a in orders]
    )
    # more noise, less ε; replace adjacency (sensitivity 2C) is the accountant at z / 2
    assert privacy.epsilon_after(5, 2.0) < privacy.epsilon_after(5, 1.0) < privacy.epsilon_after(5, 0.7)
    assert privacy.epsilon_after(5, 1.0, replace=True) == pytest.approx(privacy.epsilon_after(5, 0.5))
    # a sampling rate below 1 is passed to the accountant as it is
    acc = RDPAccountant()
    for _ in range(4):
        acc.step(noise_multiplier=z, sample_rate=0.5)
    assert privacy.epsilon_after(4, z, delta, 0.5) == pytest.approx(acc.get_epsilon(delta=delta))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"clip": 1.0, "noise_multiplier": None}, "`dp_noise_multiplier` is missing"),
        ({"clip": None, "noise_multiplier": 1.0}, "`dp_clip` is missing"),
        ({"clip": -1.0, "noise_multiplier": 1.0}, "`dp_clip` must be > 0"),
        ({"clip": 1.0, "noise_multiplier": 0.0}, "`dp_noise_multiplier` must be > 0"),
        ({"clip": 1.0, "noise_multiplier": 1.0, "delta": 1.0}, "`dp_delta` must be in \\(0, 1\\)"),
        ({"clip": 1.0, "noise_multiplier": float("inf")}, "`dp_noise_multiplier` must be a finite number"),
    ],
)
def test_dp_settings_name_the_bad_option(kwargs, match):
    with pytest.raises(ValueError, match=match):
        privacy.dp_settings(**kwargs)


def test_dp_off_is_none():
    assert privacy.dp_settings(None, None) is None


# ----------------------------------------------------------------------------- the filter


def _ctx(task: str, site: str = "site-1") -> FLContext:
    ctx = FLContext()
    ctx.set_prop(FLContextKey.TASK_NAME, task, private=True, sticky=False)
    ctx.set_prop(ReservedKey.IDENTITY_NAME, site, private=False, sticky=False)
    return ctx


def _trained(site: str, round_index: int, step: float = 0.02) -> dict[str, np.ndarray]:
    """The quick network's rank-2 LoRA after a 'round' that moved it from the round's start."""
    start = round_start_adapter(bundle_network("quick", RANK), "lora", round_seed(0, site, round_index))
    g = torch.Generator().manual_seed(5)
    moved = {k: v + step * torch.randn(v.shape, generator=g) for k, v in start.items()}
    return to_numpy(to_transport(moved, "float16"))


def _result(params: dict, round_index: int | None, rank: int = RANK):
    model = FLModel(params=params, params_type=ParamsType.FULL, meta={Meta.RANK: rank}, current_round=round_index)
    return FLModelUtils.to_shareable(model)


def test_filter_privatises_train_and_finalize_results_reproducibly():
    """With noise from the job seed (``secure_rng=False``, the benchmarks' choice) a rerun sends the same bytes."""
    dp = AdapterDPFilter(profile="quick", seed=0, clip=0.05, noise_multiplier=0.8, secure_rng=False, audit_file="")
    params = _trained("site-1", 1)
    out = dp.process(_result(params, 1), _ctx("train"))
    dxo = from_shareable(out)
    assert {k: (v.shape, v.dtype) for k, v in dxo.data.items()} == {k: (v.shape, v.dtype) for k, v in params.items()}
    record = dxo.meta[Meta.DP]
    assert record["steps"] == 1 and record["epsilon"] == pytest.approx(privacy.epsilon_after(1, 0.8))
    assert record["epsilon_replace"] == pytest.approx(privacy.epsilon_after(1, 0.4))
    assert (record["clip"], record["noise_multiplier"], record["delta"]) == (0.05, 0.8, 1e-5)
    assert record["noise"] == privacy.NOISE_JOB_SEED == "job-seed"
    assert "norm" not in record  # the data-dependent norm stays at the site
    start = round_start_adapter(bundle_network("quick", RANK), "lora", round_seed(0, "site-1", 1))
    sent = {k: torch.as_tensor(v).double() - start[k].double() for k, v in dxo.data.items()}
    n = sum(v.numel() for v in sent.values())
    # ‖ũ‖² ≈ C² + n (zC)²: the clipped update plus n noise draws (float16 rounding adds < 1 %)
    assert privacy.update_norm(sent) == pytest.approx(math.sqrt(0.05**2 + n * 0.04**2), rel=0.03)
    # the adapter filter passes what the DP filter made (meta of numbers only)
    assert AdapterOnlyFilter(audit_file="").process(out, _ctx("train")) is out
    # the same job seed, site, round and task give the same bytes (a fresh filter, as in a rerun)
    again = AdapterDPFilter(profile="quick", seed=0, clip=0.05, noise_multiplier=0.8, secure_rng=False, audit_file="")
    same = from_shareable(again.process(_result(params, 1), _ctx("train"))).data
    assert all(np.array_equal(same[k], dxo.data[k]) for k in params)
    other_site = from_shareable(again.process(_result(_trained("site-2", 1), 1), _ctx("train", "site-2"))).data
    key_b = next(k for k in params if ".lora_B" in k)
    assert not np.array_equal(other_site[key_b], dxo.data[key_b])  # another site, other noise
    # finalize of round T = 3 is the (T + 1)-th release, whatever this filter counted
    fin = from_shareable(dp.process(_result(_trained("site-1", 3), 3), _ctx("finalize"))).meta[Meta.DP]
    assert fin["steps"] == 4 and fin["epsilon"] == pytest.approx(privacy.epsilon_after(4, 0.8))


def test_filter_noise_comes_from_os_entropy_by_default():
    """The default (what job.py exports for a deployment): two runs with the same job seed send other noise."""
    params = _trained("site-1", 1)
    sent = []
    for _ in range(2):
        dp = AdapterDPFilter(profile="quick", seed=0, clip=0.05, noise_multiplier=0.8, audit_file="")
        assert dp.secure_rng is True
        dxo = from_shareable(dp.process(_result(params, 1), _ctx("train")))
        assert dxo.meta[Meta.DP]["noise"] == privacy.NOISE_OS_ENTROPY == "os-entropy"
        sent.append(dxo.data)
    key_b = next(k for k in params if ".lora_B" in k)
    assert not np.array_equal(sent[0][key_b], sent[1][key_b])
    with pytest.raises(ValueError, match="`secure_rng` must be true or false"):
        AdapterDPFilter(secure_rng="yes")


def test_filter_privatises_tensor_cores_relative_to_theta0_and_secure_rng_is_not_reproducible():
    from cardiolora.lora import tensor_state_dict
    from cardiolora.networks import bundle_setting

    rank = int(bundle_setting("quick", "tensor_rank"))
    net = bundle_network("quick", rank, "tensor")
    theta0 = round_start_adapter(net, "tensor", round_seed(0, "site-1", 1))
    assert all(torch.equal(theta0[k], v.float()) for k, v in tensor_state_dict(net).items())  # the start is θ0
    assert all(torch.equal(theta0[k], v) for k, v in round_start_adapter(net, "tensor", 99).items())  # any round
    g = torch.Generator().manual_seed(2)
    cores = to_numpy(
        to_transport({k: v + 0.5 * torch.randn(v.shape, generator=g) for k, v in theta0.items()}, "float16")
    )
    dp = AdapterDPFilter(profile="quick", adapter="tensor", clip=0.1, noise_multiplier=1e-6, audit_file="")
    out = from_shareable(dp.process(_result(cores, 2, rank=rank), _ctx("train"))).data
    sent = {k: torch.as_tensor(v).double() - theta0[k].double() for k, v in out.items()}
    assert privacy.update_norm(sent) == pytest.approx(0.1, abs=0.005)  # clipped to C (float16 rounding)
    secure = [
        AdapterDPFilter(
            profile="quick", adapter="tensor", clip=0.1, noise_multiplier=1.0, secure_rng=True, audit_file=""
        )
        for _ in range(2)
    ]
    a, b = (from_shareable(f.process(_result(cores, 2, rank=rank), _ctx("train"))).data for f in secure)
    assert any(not np.array_equal(a[k], b[k]) for k in a)  # OS entropy: two runs differ


def test_filter_passes_other_tasks_and_blocks_what_it_cannot_privatise():
    dp = AdapterDPFilter(profile="quick", seed=0, clip=0.05, noise_multiplier=0.8, audit_file="")
    scores = FLModelUtils.to_shareable(FLModel(metrics={Meta.SCORE: 0.7}, meta={}))
    assert dp.process(scores, _ctx("validate")) is scores
    params = _trained("site-1", 1)
    with pytest.raises(ContentBlockedException, match="no `current_round` header"):
        dp.process(_result(params, None), _ctx("train"))
    with pytest.raises(ContentBlockedException, match="meta `rank` is None"):
        dp.process(FLModelUtils.to_shareable(FLModel(params=params, current_round=1)), _ctx("train"))
    with pytest.raises(ContentBlockedException, match="differ in shape"):
        dp.process(_result(params, 1, rank=3), _ctx("train"))  # not the rank-3 network's adapter
    with pytest.raises(ValueError, match="`dp_clip` must be > 0"):
        AdapterDPFilter(clip=0.0)


@pytest.mark.slow
@pytest.mark.parametrize("local_rank", [0, 2], ids=["lora", "dual"])
def test_round_start_adapter_is_what_the_bundle_workflow_resets_to(tiny_sites, tmp_path, local_rank):
    """The real BundleBackend's adapter when its trainer starts (after the reset) is ``x_0``.

    Also for dual adapters (``dual_lora``): the global pairs start from the plain rank-r network's
    draw, the local pairs (drawn after them) do not shift it, so the filter's ``x_0`` holds there too.
    """
    from ignite.engine import Events

    from cardiolora.fl.site_config import SiteConfig
    from cardiolora.fl.site_runner import BundleBackend
    from cardiolora.networks import plain_state_dict

    site = tiny_sites[0] / "sites" / "site-1"
    cfg = SiteConfig(path=tmp_path / "c.json", site="site-1", dataset_dir=site)
    backend = BundleBackend(cfg, "quick", tmp_path / "out", local_rank=local_rank)
    wf = backend._workflow("lora", RANK)
    net = wf.parser.get_parsed_content("network")
    started = {}
    wf.trainer.add_event_handler(Events.STARTED, lambda _: started.update(lora_state_dict(net)))
    torch.manual_seed(0)
    weights = plain_state_dict(bundle_network("quick", 0))
    seed = round_seed(0, "site-1", 2)
    if local_rank:
        trained, local, _ = backend.train_dual(weights, RANK, None, 1, seed)
        assert local and not set(local) & set(trained)  # the local pairs exist and are not sent
        template = backend.local_template()  # what a carried-over set is checked against
        assert {k: v.shape for k, v in template.items()} == {k: v.shape for k, v in local.items()}
    else:
        trained, _ = backend.train_adapter(weights, RANK, 1, seed)
    expected = round_start_adapter(bundle_network("quick", RANK), "lora", seed)
    assert set(started) == set(expected) == set(trained)
    assert all(torch.equal(started[k].detach().cpu().float(), expected[k]) for k in expected)
    assert any(float(v.abs().sum()) > 0 for k, v in expected.items() if "lora_A" in k)  # A_0 is not zero
    assert not all(torch.equal(trained[k].float(), expected[k]) for k in expected)  # and the epoch moved it


# ----------------------------------------------------------------------------- the jobs


def _configs(folder: Path) -> tuple[dict, dict]:
    cfg = folder / "app" / "config"
    server = json.loads((cfg / "config_fed_server.json").read_text())
    return server, json.loads((cfg / "config_fed_client.json").read_text())


@pytest.mark.parametrize("name", ["rate_my_lora", "fedpetuning", "dual_lora"])
def test_dp_off_exports_the_committed_job_byte_for_byte(name, tmp_path):
    export_job(build_job(name, dp_clip=None, dp_noise_multiplier=None), tmp_path / "off")
    committed = REPO / "jobs" / name / "exported"
    files = sorted(p.relative_to(committed) for p in committed.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "off") for p in (tmp_path / "off").rglob("*") if p.is_file())
    for rel in files:
        assert (tmp_path / "off" / rel).read_bytes() == (committed / rel).read_bytes(), rel
    ctl = RateMyLoRAController()
    assert ctl.dp is None and ctl.dp_summary() is None
    assert "dp" not in ctl._config() and "dp_clip" not in ctl._always_serialize_args


@pytest.mark.parametrize("name", ["rate_my_lora", "fedpetuning"])
def test_job_py_dp_options_reach_server_and_sites(name, tmp_path):
    job_py = importlib.import_module(f"cardiolora.jobs.{name}.job")
    argv = ["--export-dir", str(tmp_path / "dp"), "--dp-clip", "0.1", "--dp-noise-multiplier", "1.0"]
    assert job_py.main([*argv, "--seed", "4", "--adapter", "tensor"]) == 0
    server, site = _configs(tmp_path / "dp")
    ctl = next(c for c in server["workflows"] if c["id"] == "controller")["args"]
    assert (ctl["dp_clip"], ctl["dp_noise_multiplier"], ctl["dp_delta"]) == (0.1, 1.0, 1e-5)
    assert ctl["dp_reproducible_noise"] is False  # the export states it: noise from OS entropy
    (chain,) = site["task_result_filters"]
    assert [f["path"].rsplit(".", 1)[1] for f in chain["filters"]] == ["AdapterDPFilter", "AdapterOnlyFilter"]
    assert chain["filters"][0]["args"] == {
        "profile": "quick",
        "adapter": "tensor",
        "seed": 4,
        "clip": 0.1,
        "noise_multiplier": 1.0,
        "delta": 1e-5,
        "secure_rng": True,
    }
    assert set(chain["tasks"]) >= {"train", "finalize"}
    # reproducible noise is an explicit choice, stated on both sides
    assert job_py.main([*argv, "--export-dir", str(tmp_path / "rep"), "--dp-reproducible-noise"]) == 0
    server, site = _configs(tmp_path / "rep")
    assert next(c for c in server["workflows"] if c["id"] == "controller")["args"]["dp_reproducible_noise"] is True
    assert site["task_result_filters"][0]["filters"][0]["args"]["secure_rng"] is False
    with pytest.raises(ValueError, match="`dp_noise_multiplier` is missing"):
        build_job(name, dp_clip=0.1)
    with pytest.raises(ValueError, match="`dp_reproducible_noise` is an option of DP"):
        build_job(name, dp_reproducible_noise=True)
    with pytest.raises(ValueError, match="`dp_reproducible_noise` must be true or false"):
        build_job(name, dp_clip=0.1, dp_noise_multiplier=1.0, dp_reproducible_noise="no")


def test_fedavg_full_has_no_dp_option():
    with pytest.raises(ValueError, match="fedavg_full has no DP option"):
        build_job("fedavg_full", dp_clip=0.1, dp_noise_multiplier=1.0)


def test_the_controller_records_the_accountants_epsilon():
    ctl = RateMyLoRAController(num_rounds=3, dp_clip=0.1, dp_noise_multiplier=1.2, dp_delta=1e-6)
    assert ctl.dp == privacy.DPSettings(0.1, 1.2, 1e-6)
    summary = ctl.dp_summary()
    assert summary["epsilon_per_round"] == pytest.approx([privacy.epsilon_after(t, 1.2, 1e-6) for t in (1, 2, 3)])
    assert summary["epsilon_final"] == pytest.approx(privacy.epsilon_after(4, 1.2, 1e-6))
    assert summary["level"] == "site" and summary["accountant"] == privacy.ACCOUNTANT
    assert any("validation scores" in u for u in summary["unprotected"])
    assert summary["noise"] == "os-entropy"
    assert RateMyLoRAController(dp_clip=0.1, dp_noise_multiplier=1.2, dp_reproducible_noise=True).dp_summary()[
        "noise"
    ] == ("job-seed")
    assert ctl._config()["dp"]["clip"] == 0.1  # a saved run resumes only with the same DP settings


def test_the_server_rejects_an_adapter_without_the_jobs_dp_record():
    ctl = RateMyLoRAController(num_rounds=2, ranks=(RANK, RANK), dp_clip=0.05, dp_noise_multiplier=0.8)
    ctl.round, ctl.site_ranks = 1, {s: RANK for s in ("site-1", "site-2", "site-3", "site-4")}
    ctl.weights = plain_state_dict(bundle_network("quick", 0))  # W, so a good adapter is accepted
    ctl.ledger.open({"round": 1, "lambda": 0.2, "sites": {}})
    params = _trained("site-1", 1)
    record = {"epsilon": 1.0, "clip": 0.05, "noise_multiplier": 0.8, "noise": "os-entropy"}
    results = {
        "site-1": FLModel(params=params, meta={Meta.DP: {**record, "noise_multiplier": 0.1}}),
        "site-2": FLModel(params=params, meta={}),
        "site-3": FLModel(params=params, meta={Meta.DP: {**record, "noise": "job-seed"}}),  # seeded noise
        "site-4": FLModel(params=params, meta={Meta.DP: record}),
    }
    assert set(ctl._validated_adapters(results, "train")) == {"site-4"}
    sites = ctl.ledger.current["sites"]
    assert "z = 0.8, noise from os-entropy, but its result's `dp` record is {" in sites["site-1"]["reason"]
    assert "record is None (a site without the job's AdapterDPFilter?)" in sites["site-2"]["reason"]
    assert "'noise': 'job-seed'" in sites["site-3"]["reason"]
    assert ctl.ledger.current["dp"]["epsilon"] == pytest.approx(privacy.epsilon_after(1, 0.8))


# ----------------------------------------------------------------------------- the simulator


SIM_SITES = ["site-1", "site-2"]


def _simulate_with_dp(job: str, tiny_sites, tmp_path, z: float, clip: float, extra: list[str]) -> tuple:
    """Export `job` with DP through its job.py (2 sites, 1 round), run it in the nvflare simulator.

    Returns:
        (run summary, ``rml_history.json``, the history's round-1 record, base model path, exported job folder);
        the ε of round 1 and of ``finalize`` are checked against the accountant here.
    """
    from test_fl_tensor import _two_fl_sites

    from cardiolora.fl.run import simulate_job, write_site_configs

    root, base = _two_fl_sites(tiny_sites[0], tmp_path / "data", SIM_SITES)
    job_dir = tmp_path / "exported"
    argv = ["--export-dir", str(job_dir), "--rounds", "1", "--min-clients", "2", "--straggler-grace", "5"]
    argv += ["--dp-clip", str(clip), "--dp-noise-multiplier", str(z), *extra]
    assert importlib.import_module(f"cardiolora.jobs.{job}.job").main(argv) == 0
    cfg_dir = write_site_configs(tmp_path, root, SIM_SITES, base)
    summary = simulate_job(job_dir, tmp_path, SIM_SITES, cfg_dir, timeout=600)
    eps1, eps2 = privacy.epsilon_after(1, z), privacy.epsilon_after(2, z)
    assert summary["dp"]["epsilon_per_round"] == pytest.approx([eps1])
    assert summary["dp"]["epsilon_final"] == pytest.approx(eps2)
    h = json.loads(Path(summary["results"]["rml_history.json"]).read_text())
    assert h["dp"] == summary["dp"] and h["dp"]["clip"] == clip and h["dp"]["noise_multiplier"] == z
    r1 = next(r for r in h["rounds"] if r["round"] == 1 and r.get("task") is None)
    assert r1["dp"]["epsilon"] == pytest.approx(eps1) and r1["dp"]["steps"] == 1
    for site, rec in r1["sites"].items():
        assert rec["accepted"], rec.get("reason")
        assert rec["dp"]["epsilon"] == pytest.approx(eps1) and rec["dp"]["steps"] == 1, site
    fin = next(r for r in h["rounds"] if r.get("task") == "finalize")
    assert fin["dp"]["epsilon"] == pytest.approx(eps2)
    assert all(rec["dp"]["steps"] == 2 for rec in fin["sites"].values())
    assert r1["checksum"] != updates.state_checksum(torch.load(base, weights_only=True))  # merged (Eq. 2)
    return summary, h, r1, base, job_dir


def _site_audits(tmp_path, site: str) -> tuple[list[dict], list[dict]]:
    """The site's DP audit (train and finalize of round 1, each update measured from its real start) and
    its outgoing audit (every result passed)."""
    run = tmp_path / "simulate" / site / "simulate_job"
    audit = [json.loads(x) for x in (run / "dp_audit.jsonl").open()]
    assert [(a["task"], a["round"]) for a in audit] == [("train", 1), ("finalize", 1)]
    # the update is measured from the adapter the site really started from: far smaller than A_0
    assert all(a["norm"] < 0.5 * a["reference_norm"] for a in audit)
    out = [json.loads(x) for x in (run / "outgoing_audit.jsonl").open()]
    assert all(r["decision"] == "passed" for r in out)
    return audit, out


@pytest.mark.slow
def test_rate_my_lora_with_dp_in_the_simulator(tiny_sites, tmp_path):
    """job.py --dp-clip/--dp-noise-multiplier → nvflare simulator (2 sites, 1 round): ε in the records."""
    _, h, _, _, _ = _simulate_with_dp("rate_my_lora", tiny_sites, tmp_path, 0.5, 0.05, ["--task-timeout", "600"])
    assert h["dp"]["noise"] == "os-entropy"
    for site in SIM_SITES:
        _site_audits(tmp_path, site)


@pytest.mark.slow
def test_dual_lora_with_dp_in_the_simulator(tiny_sites, tmp_path):
    """dual_lora job.py with DP → nvflare simulator (2 sites, 1 round): global adapters privatised, ε recorded.

    The filter measures each global update from the pair's real round start (the audit norm is far
    below the norm of ``A_0``); no local key leaves; the sites keep their local pairs.
    """
    from cardiolora.fl.protocol import is_local_adapter_key
    from cardiolora.fl.site_runner import LOCAL_ADAPTER_FILE

    extra = ["--global-rank", str(RANK), "--local-rank", "2"]
    summary, h, _, _, job_dir = _simulate_with_dp("dual_lora", tiny_sites, tmp_path, 1.0, 0.05, extra)
    assert [f["path"] for f in _configs(job_dir)[1]["task_result_filters"][0]["filters"]] == [
        "cardiolora.fl.filters.AdapterDPFilter",
        "cardiolora.fl.filters.AdapterOnlyFilter",
    ]
    assert h["method"] == "dual_lora_size"
    for site in SIM_SITES:
        _, out = _site_audits(tmp_path, site)
        assert not any(is_local_adapter_key(k) for r in out for k in r["tensors"])
        folder = Path(summary["sites"][site])
        local = torch.load(folder / LOCAL_ADAPTER_FILE, weights_only=True)
        assert local and all(is_local_adapter_key(k) for k in local)
        assert (folder / "personalised_model.pt").is_file()


def test_doctests():
    import doctest

    result = doctest.testmod(privacy, extraglobs={"torch": torch}, verbose=False)
    assert result.failed == 0 and result.attempted >= 2
