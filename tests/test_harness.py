"""The experiment harness (benchmarks/lib): tables, Markdown, bandwidth, the ACDC appearance change, pooling, reuse.

Nothing here trains: the tables are built from small hand-made score matrices.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from cardiolora.data.dataset import load_datalist, write_datalist
from lib import harness, methods, plots, runners, tables
from lib import sites as lib_sites


def _matrix(offset: float) -> dict:
    """A 2-site score matrix: diagonal dice 0.9 + offset, off-diagonal 0.5 + offset."""
    sites = ("site-1", "site-2")
    return {
        o: {e: {"dice": (0.9 if o == e else 0.5) + offset, "voe": 10.0, "hd": 5.0, "assd": 1.0} for e in sites}
        for o in sites
    }


RESULTS = {"rate_my_lora": {"0": _matrix(0.0), "1": _matrix(0.02)}, "local": {"0": _matrix(-0.1)}}


@pytest.mark.parametrize(
    "method, site, mean, std, n",
    [
        ("rate_my_lora", "site-1", 0.91, 0.01, 2),
        ("rate_my_lora", "site-2", 0.91, 0.01, 2),
        ("local", "site-1", 0.8, 0.0, 1),
    ],
)
def test_in_client_table_mean_std_over_seeds(method, site, mean, std, n):
    cell = tables.in_client_table(RESULTS)[method][site]["dice"]
    assert cell["mean"] == pytest.approx(mean, abs=1e-5)
    assert cell["std"] == pytest.approx(std, abs=1e-5)
    assert cell["n"] == n


def test_cross_client_excludes_diagonal():
    table = tables.cross_client_table(RESULTS)
    assert table["rate_my_lora"]["site-1"]["dice"]["mean"] == pytest.approx(0.51, abs=1e-5)
    assert table["local"]["site-2"]["dice"]["mean"] == pytest.approx(0.4, abs=1e-5)
    # a site evaluated only on itself has no cross-client score
    only_diag = {"m": {"0": {"site-1": {"site-1": {"dice": 0.9}}}}}
    assert tables.cross_client_table(only_diag, ("dice",))["m"]["site-1"]["dice"]["n"] == 0


def test_mean_std_skips_missing_and_nan():
    assert tables.mean_std([1.0, None, float("nan"), 3.0]) == {"mean": 2.0, "std": 1.0, "n": 2}
    empty = tables.mean_std([None])
    assert empty["n"] == 0 and math.isnan(empty["mean"])


def test_render_markdown():
    summary = {
        "command": ".venv/bin/python benchmarks/compare.py --source phantoms",
        "machine": "x86_64, 2 CPU cores",
        "source": "phantoms",
        "profile": "quick",
        "rounds": 2,
        "seeds": [0, 1],
        "in_client": tables.in_client_table(RESULTS),
        "cross_client": tables.cross_client_table(RESULTS),
        "bandwidth": {
            "rate_my_lora": tables.fedavg_bandwidth(2_000_000, ["site-1"], 2),
            "centralised": {"site-1": None},
        },
        "seconds": {"rate_my_lora": {"0": 90.0, "1": None}},
        "curves": "curves.png",
    }
    md = tables.render_markdown(summary)
    assert "| method | seed 0 | seed 1 |" in md and "| Rate-My-LoRA | 1.5 | — |" in md  # wall time, minutes
    assert md.startswith("`.venv/bin/python benchmarks/compare.py --source phantoms` (x86_64, 2 CPU cores):")
    assert "| Rate-My-LoRA | 0.910 ± 0.010 |" in md
    assert "| Local only (LoRA) | 0.800 |" in md  # one seed: no ± part
    assert "Table 2" in md and "0.510 ± 0.010" in md
    assert "| Rate-My-LoRA | site-1 | 2.00 MB | 2.00 MB | 4.00 MB | 4.00 MB |" in md
    assert "| Centralised (upper bound) | site-1 | — | — | — | — |" in md
    # local was listed before Rate-My-LoRA in the table order
    assert md.index("| Local only (LoRA) | 0.800") < md.index("| Rate-My-LoRA | 0.910")


def test_bandwidth_from_history():
    history = [
        {"round": 0, "task": "init", "sites": {"site-1": {"bytes_up": 0, "bytes_down": 100}}},
        {"round": 1, "sites": {"site-1": {"bytes_up": 10, "bytes_down": 30}, "site-2": {"bytes_up": 5}}},
        {"round": 2, "sites": {"site-1": {"bytes_up": 20, "bytes_down": 50}, "site-2": {"bytes_up": 5}}},
        {"round": 2, "task": "cross_eval", "sites": {"site-1": {"bytes_up": 1, "bytes_down": 7}}},
    ]
    bw = tables.bandwidth_from_history(history)
    assert tables.bandwidth_from_history({"method": "rate_my_lora", "rounds": history}) == bw  # the file's layout
    assert bw["site-1"] == {
        "up_per_round": 15.0,
        "down_per_round": 40.0,
        "up_total": 31,
        "down_total": 187,
        "rounds": 2,
    }
    assert bw["site-2"]["up_per_round"] == 5.0 and bw["site-2"]["down_total"] == 0


def test_fedavg_bandwidth_is_state_dict_size():
    import torch

    state = {"w": torch.zeros(10, 3), "b": torch.zeros(4, dtype=torch.float64)}
    n = tables.state_dict_bytes(state)
    assert n == 10 * 3 * 4 + 4 * 8
    bw = tables.fedavg_bandwidth(n, ["site-1", "site-2"], rounds=3)
    assert bw["site-2"]["up_per_round"] == n and bw["site-2"]["down_total"] == 3 * n


@pytest.mark.parametrize("site", sorted(lib_sites.ACDC_APPEARANCE))
def test_appearance_transform_deterministic_and_changes_intensities(site):
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 500, size=(3, 24, 20)).astype(np.float32)
    params = lib_sites.ACDC_APPEARANCE[site]
    a = lib_sites.appearance_transform(image, params, "patient001_ED")
    b = lib_sites.appearance_transform(image.copy(), params, "patient001_ED")
    np.testing.assert_array_equal(a, b)
    assert a.shape == image.shape and a.dtype == np.float32
    assert np.abs(a - image).mean() > 1.0
    assert np.all(np.isfinite(a))


def test_appearance_transform_bad_params():
    with pytest.raises(ValueError, match="gamma"):
        lib_sites.appearance_transform(np.ones((2, 4, 4)), {"gamma": 0.0}, "k")
    with pytest.raises(ValueError, match="3D"):
        lib_sites.appearance_transform(np.ones((4, 4)), {}, "k")


def test_acdc_site_copy_keeps_labels(tmp_path):
    """A transformed NIfTI copy of an HDF5 case: other intensities, the same labels (project convention)."""
    h5py = pytest.importorskip("h5py")
    from cardiolora.data.loaders import load_case
    from cardiolora.data.records import CaseRecord

    rng = np.random.default_rng(1)
    image = rng.uniform(0, 1, size=(2, 16, 12)).astype(np.float32)
    label = rng.integers(0, 4, size=(2, 16, 12)).astype(np.uint8)
    path = tmp_path / "patient001_frame01.h5"
    with h5py.File(path, "w") as fh:
        fh["image"], fh["label"] = image, label
    rec = CaseRecord("patient001_ED", "patient001", "ED", str(path), str(path), "acdc_h5", group="DCM")
    new = lib_sites._write_nifti_case(rec, tmp_path / "out", lib_sites.ACDC_APPEARANCE["site-3"], 1.5)
    orig, copy = load_case(rec), load_case(new)
    np.testing.assert_array_equal(copy.label, orig.label)
    assert np.abs(copy.image - orig.image).mean() > 1e-3
    assert copy.spacing_zyx == pytest.approx((10.0, 1.5, 1.5))


def _site(root, name: str, n: dict) -> None:
    splits = {
        k: [
            {
                "case_id": f"{name}_{k}{i}",
                "patient_id": f"{name}{k}{i}",
                "phase": "ED",
                "image": f"img/{k}{i}.nii.gz",
                "label": f"img/{k}{i}_gt.nii.gz",
                "source": "acdc",
            }
            for i in range(c)
        ]
        for k, c in n.items()
    }
    write_datalist(splits, root / name / "datalist.json")


def test_centralised_datalist_pools_train_val_keeps_tests_apart(tmp_path):
    _site(tmp_path, "site-1", {"train": 3, "val": 1, "test": 2})
    _site(tmp_path, "site-2", {"train": 2, "val": 1, "test": 1})
    path = runners.centralised_datalist(tmp_path, ["site-1", "site-2"], tmp_path / "central")
    content = json.loads(path.read_text())
    assert "test" not in content
    assert len(content["train"]) == 5 and len(content["val"]) == 2
    assert {e["meta"]["site"] for e in content["train"]} == {"site-1", "site-2"}
    assert [e["case_id"] for e in content["test_site-1"]] == ["site-1_test0", "site-1_test1"]
    assert len(content["test_site-2"]) == 1
    # paths are absolute and point at the sites' own files
    train = load_datalist(tmp_path / "central", "train")
    assert train[0]["image"] == str((tmp_path / "site-1" / "img" / "train0.nii.gz").resolve())


def test_reuse_or_run_uses_done_json(tmp_path):
    calls = []

    def run(folder):
        calls.append(folder)
        return {"matrix": {"site-1": {"site-1": {"dice": float("nan")}}}}

    first = runners.reuse_or_run(tmp_path / "m", run)
    assert (tmp_path / "m" / "done.json").is_file() and first["matrix"]["site-1"]["site-1"]["dice"] is None
    second = runners.reuse_or_run(tmp_path / "m", run)
    assert len(calls) == 1 and second == first
    # a folder without done.json (interrupted) runs again
    (tmp_path / "m" / "done.json").unlink()
    runners.reuse_or_run(tmp_path / "m", run)
    assert len(calls) == 2


def test_unknown_source_and_method(tmp_path):
    with pytest.raises(ValueError, match="method"):
        harness.run_comparison("phantoms", tmp_path, methods=["nope"])
    with pytest.raises(ValueError, match="source"):
        harness.run_comparison("nope", tmp_path)


def test_mnms2_sites_by_vendor(tiny_sites):
    out, _ = tiny_sites
    sites_root, sites = lib_sites.prepare_mnms2(out / "tmp_harness", out / "mnms2")
    assert sites == ["site-1", "site-2", "site-3"]
    vendors = {s: json.loads((sites_root / s / "datalist.json").read_text())["meta"]["vendor"] for s in sites}
    assert json.loads((sites_root / "reference" / "datalist.json").read_text())["meta"]["vendor"] == "reference"
    assert len(set(vendors.values())) == 3
    for s in sites:
        assert {e["vendor"] for e in load_datalist(sites_root / s, "train")} == {vendors[s]}


def test_run_comparison_orchestration(tmp_path, monkeypatch):
    """The whole pipeline with stub runners: files, README block, curves, and reuse of finished methods."""
    sites = ["site-1", "site-2"]
    calls = []
    history = [
        {"round": 0, "lambda": 0.2, "sites": {s: {"score": 0.5, "bytes_down": 10} for s in sites}},
        {
            "round": 1,
            "lambda": 0.1,
            "sites": {s: {"score": 0.6, "rating": 0.5, "bytes_up": 3, "bytes_down": 9} for s in sites},
        },
    ]

    def fake_run(method, folder, **kw):
        calls.append((method, kw["seed"]))
        m = _matrix(0.01 * kw["seed"])
        # per-case in-client Dice: Rate-My-LoRA 0.02 above every other method on each patient
        bonus = 0.02 if method == "rate_my_lora" else 0.0
        per_case = {
            s: [
                {
                    "case_id": f"{s}-p{i}-{ph}",
                    "patient_id": f"p{i}",
                    "phase": ph,
                    "mean": 0.8 + 0.01 * i + bonus,
                    "dice": {"LV": 0.9 + bonus, "MYO": 0.8, "RV": 0.7},
                    # the site's own model (a DP row's diagonal comes from here, not from the matrix)
                    "metrics": {"dice": 0.6 + 0.02 * i, "voe": 40.0, "hd": None, "assd": 2.0},
                }
                for i in range(3)
                for ph in ("ED", "ES")
            ]
            for s in sites
        }
        if method in ("rate_my_lora", "fedpetuning"):
            return {
                "matrix": m,
                "bandwidth": tables.bandwidth_from_history(history),
                "history": history,
                "per_case": per_case,
            }
        bw = None if method == "centralised" else tables.fedavg_bandwidth(8, sites, 2)
        return {"matrix": m, "bandwidth": bw, "per_case": per_case}

    monkeypatch.setattr(harness, "prepare_phantoms", lambda workdir: (tmp_path / "sites", sites))
    monkeypatch.setattr(harness, "pretrain_base", lambda *a, **k: tmp_path / "base.pt")
    monkeypatch.setattr(harness, "_run_method", fake_run)
    readme = tmp_path / "README.md"
    readme.write_text("# x\n<!-- compare-phantoms:start -->\nold\n<!-- compare-phantoms:end -->\ntail\n")
    summary = harness.run_comparison("phantoms", tmp_path / "w", seeds=[0, 1], command="CMD", readme=readme)
    default = methods.available_methods()  # every method whose job and job arguments exist here
    assert {"local", "rate_my_lora", "rate_my_lora_tensor", "centralised"} <= set(default)
    assert len(calls) == 2 * len(default) and [m for m, _ in calls[: len(default)]] == list(default)
    for name in ("results.json", "results.md", "curves.png", "bandwidth_dice.png"):
        assert (tmp_path / "w" / name).is_file()
    text = readme.read_text()
    assert text.startswith("# x\n<!-- compare-phantoms:start -->\n`CMD` (") and text.endswith("end -->\ntail\n")
    assert "results/compare_phantoms_curves.png" in text and "old" not in text
    assert "![upload vs Dice](results/compare_phantoms_bandwidth_dice.png)" in text
    for name in ("curves", "bandwidth_dice"):
        assert (tmp_path / "results" / f"compare_phantoms_{name}.png").is_file()
    # one point per method: centralised has no federation, the others their bytes (the stubs' records)
    points = summary["bandwidth_dice"]
    assert points["local"]["up_per_round"] == 8.0 and points["centralised"]["up_per_round"] is None
    assert points["rate_my_lora"]["up_per_round"] == 3.0
    assert points["rate_my_lora"]["dice"] == pytest.approx({"mean": 0.905, "std": 0.005, "n": 2})
    assert summary["in_client"]["local"]["site-1"]["dice"]["mean"] == pytest.approx(0.905, abs=1e-5)
    # a DP row: in-client = the site's own un-noised model (per-case metrics), cross-client = the job's matrix
    dp = summary["in_client"]["rate_my_lora_dp_low"]["site-1"]
    assert dp["dice"]["mean"] == pytest.approx(0.62) and dp["voe"]["mean"] == pytest.approx(40.0)
    assert dp["hd"]["n"] == 0  # undefined for every case: no value, not a 0
    assert summary["cross_client"]["rate_my_lora_dp_low"]["site-1"]["dice"]["mean"] == pytest.approx(0.505)
    assert summary["raw"]["rate_my_lora_dp_low"]["0"]["site-1"]["site-2"]["dice"] == pytest.approx(0.5)
    assert any(n.startswith("DP rows: Table 1") for n in summary["notes"])
    # the per-patient part: 6 patients (3 per site), Rate-My-LoRA +0.02 on each, the rating acted in round 1
    paired = summary["paired"]["rate_my_lora_vs_fedpetuning"]
    assert (paired["n"], paired["wins"], paired["losses"]) == (6, 6, 0)
    assert paired["mean_diff"] == pytest.approx(0.02)
    assert summary["structures"]["rate_my_lora"]["site-1"]["LV"]["mean"] == pytest.approx(0.92)
    assert summary["rating_events"]["0"][0] == {"round": 1, "site": "site-1", "rating": 0.5, "lambda": 0.1}
    md = (tmp_path / "w" / "results.md").read_text()
    assert "Table 3" in md and "| Rate-My-LoRA vs FedPETuning | +0.0200" in md and "round 1 site-1 w = 0.50" in md
    harness.run_comparison("phantoms", tmp_path / "w", seeds=[0, 1], command="CMD")
    assert len(calls) == 2 * len(default)  # every method folder has its done.json


def _fake_simulation(history: dict | list):
    """A stand-in for the simulator run only (the job is built and exported for real): result files."""

    def simulate(job_dir, workdir, sites, cfg_dir, *a, **k):
        job = json.loads((Path(job_dir) / "meta.json").read_text())["name"]
        results = Path(workdir) / "results" / job
        results.mkdir(parents=True)
        (results / "cross_site_eval.json").write_text("{}")
        (results / "rml_history.json").write_text(json.dumps(history))
        return {"seconds": 1.0}

    return simulate


def _two_sites(root) -> list[str]:
    for name in ("site-1", "site-2"):
        _site(root / "sites", name, {"train": 2, "val": 1, "test": 1})
    (root / "base.pt").write_bytes(b"w0")
    return ["site-1", "site-2"]


def test_run_federated_builds_the_job_with_seed_and_job_kwargs(tmp_path, monkeypatch):
    """The harness seed and the method's job arguments reach build_job; the exported job carries them."""
    sites = _two_sites(tmp_path)
    calls = []
    real_build = runners.build_job

    def recording_build(name, **kw):
        calls.append((name, kw))
        return real_build(name, **kw)

    monkeypatch.setattr(runners, "build_job", recording_build)
    monkeypatch.setattr(runners, "simulate_job", _fake_simulation({"rounds": []}))
    monkeypatch.setattr(runners, "matrix_from_cross_eval", lambda cross, sites: _matrix(0.0))
    spec = methods.METHOD_SPECS["rate_my_lora_tensor"]
    out = runners.run_federated(
        tmp_path / "f", spec.job, tmp_path / "sites", sites, tmp_path / "base.pt", "quick", 2, 3, spec.job_kwargs
    )
    assert calls == [
        (
            "rate_my_lora",
            {"num_rounds": 2, "profile": "quick", "n_clients": 2, "min_clients": 2, "seed": 3, "adapter": "tensor"},
        )
    ]
    assert out["seed"] == 3 and out["job_kwargs"] == {"adapter": "tensor"} and "seed_note" not in out
    assert "privacy" not in out  # no job summary holds an ε
    client = json.loads(
        (tmp_path / "f" / "job" / "rate_my_lora" / "app" / "config" / "config_fed_client.json").read_text()
    )
    args = client["executors"][0]["executor"]["args"]["task_script_args"]
    assert "--adapter tensor" in args and "--seed 3" in args
    cfg = json.loads((tmp_path / "f" / "site_config" / "site-1.json").read_text())
    assert cfg["dataset_dir"] == str((tmp_path / "sites" / "site-1").resolve())


@pytest.mark.parametrize("method", [m for m in tables.FEDERATED_METHODS])
def test_every_federated_method_spec_reaches_build_job(tmp_path, monkeypatch, method):
    """Dispatch by spec: each federated row builds its job with exactly its own job arguments."""
    sites = _two_sites(tmp_path)
    calls = []

    class Built(Exception):
        pass

    def recording_build(name, **kw):
        calls.append((name, kw))
        raise Built

    monkeypatch.setattr(runners, "build_job", recording_build)
    spec = methods.METHOD_SPECS[method]
    with pytest.raises(Built):
        harness._run_method(
            method,
            tmp_path / "f",
            sites_root=tmp_path / "sites",
            sites=sites,
            base=tmp_path / "base.pt",
            profile="quick",
            rounds=2,
            seed=1,
        )
    common = {"num_rounds": 2, "profile": "quick", "n_clients": 2, "min_clients": 2, "seed": 1}
    assert calls == [(spec.job, {**common, **spec.job_kwargs})]


def test_method_specs():
    specs = methods.METHOD_SPECS
    assert tables.METHODS[:4] == ("local", "fedavg_full", "fedpetuning", "rate_my_lora")
    assert tables.METHODS[-1] == "centralised"
    assert specs["rate_my_lora_tensor"].job_kwargs == {"adapter": "tensor"}
    assert (specs["dual_lora_size"].job, specs["dual_lora_rated"].job_kwargs) == ("dual_lora", {"aggregation": "rated"})
    zs = [specs[f"rate_my_lora_dp_{k}"].job_kwargs["dp_noise_multiplier"] for k in ("low", "high")]
    assert zs == list(methods.DP_NOISE_MULTIPLIERS.values()) and zs[0] < zs[1]
    for k in ("low", "high"):
        kw = specs[f"rate_my_lora_dp_{k}"].job_kwargs
        assert (kw["dp_clip"], kw["dp_delta"]) == (methods.DP_CLIP, methods.DP_DELTA)
    assert tables.METHOD_TITLES["rate_my_lora_dp_high"] == "Rate-My-LoRA + DP (z = 1.0)"
    assert set(tables.FEDERATED_METHODS) == {m for m, s in specs.items() if s.runner == "federated"}
    with pytest.raises(TypeError):
        specs["rate_my_lora"].job_kwargs["adapter"] = "tensor"  # read-only: specs are shared
    with pytest.raises(ValueError, match="runner"):
        methods.MethodSpec("x", "nope")
    with pytest.raises(ValueError, match="job"):
        methods.MethodSpec("x", "federated")
    with pytest.raises(ValueError, match="job_kwargs"):
        methods.MethodSpec("x", "local", job_kwargs={"adapter": "tensor"})
    with pytest.raises(ValueError, match="'nope' unknown"):
        methods.method_spec("nope")


def test_unavailable_reason_names_the_missing_job_or_argument():
    def build_old(name, num_rounds=3, seed=0, adapter="lora"):
        """A build_job without the DP arguments."""

    def build_open(name, **kw):
        """A build_job that passes any setting on."""

    specs = methods.METHOD_SPECS
    jobs = ("rate_my_lora", "fedpetuning", "fedavg_full")
    assert methods.unavailable_reason(specs["rate_my_lora_tensor"], jobs, build_old) is None
    assert methods.unavailable_reason(specs["local"], (), build_old) is None
    reason = methods.unavailable_reason(specs["dual_lora_rated"], jobs, build_old)
    assert "Med-DualLoRA (rated)" in reason and "no FLARE job 'dual_lora'" in reason
    reason = methods.unavailable_reason(specs["rate_my_lora_dp_low"], jobs, build_old)
    assert "takes no `dp_clip`, `dp_delta`, `dp_noise_multiplier`, `dp_reproducible_noise`" in reason
    assert methods.unavailable_reason(specs["rate_my_lora_dp_low"], jobs, build_open) is None
    assert methods.available_methods(jobs, build_old) == (
        "local",
        "fedavg_full",
        "fedpetuning",
        "rate_my_lora",
        "rate_my_lora_tensor",
        "centralised",
    )
    assert methods.available_methods((*jobs, "dual_lora"), build_open) == tables.METHODS


def test_run_comparison_refuses_an_unavailable_method_before_running(tmp_path, monkeypatch):
    monkeypatch.setattr(harness, "unavailable_reason", lambda spec: f"{spec.title}: no such job here.")
    monkeypatch.setattr(harness, "prepare_phantoms", lambda workdir: pytest.fail("prepared sites"))
    with pytest.raises(ValueError, match=r"cannot run Med-DualLoRA \(size\): no such job here."):
        harness.run_comparison("phantoms", tmp_path / "w", methods=["dual_lora_size"])


def test_dp_budget_takes_the_largest_epsilon_of_history_and_site_summaries():
    history = {"rounds": [{"round": 1, "dp": {"epsilon": 3.5, "delta": 1e-5}}, {"round": 2, "dp": {"epsilon": 5.0}}]}
    site = {"site": "site-1", "rounds": [{"round": 2, "privacy": {"epsilon": 5.25, "delta": 1e-5, "sigma": 1.0}}]}
    assert tables.dp_budget(history, site) == {"epsilon": 5.25, "delta": 1e-5, "records": 3}
    assert tables.dp_budget({"rounds": [{"round": 1, "sites": {"a": {"bytes_up": 3}}}]}, []) is None
    assert tables.dp_budget({"epsilon": True}) is None  # a flag is no budget


def _points_results() -> tuple[dict, dict]:
    results = {
        "local": {"0": _matrix(-0.1), "1": _matrix(-0.1)},
        "fedavg_full": {"0": _matrix(-0.05)},
        "rate_my_lora": {"0": _matrix(0.0), "1": _matrix(0.02)},
        "rate_my_lora_tensor": {"0": _matrix(-0.01), "1": _matrix(0.01)},
        "centralised": {"0": _matrix(0.03)},
    }
    rec = lambda up: {"up_per_round": up, "down_per_round": 0.0, "up_total": 0, "down_total": 0, "rounds": 2}  # noqa: E731
    bandwidth = {
        "local": {"site-1": rec(0.0), "site-2": rec(0.0)},
        "fedavg_full": {"site-1": rec(800_000.0), "site-2": rec(800_000.0)},
        "rate_my_lora": {"site-1": rec(200_000.0), "site-2": rec(100_000.0)},
        "rate_my_lora_tensor": {"site-1": rec(6_000.0), "site-2": rec(6_000.0)},
        "centralised": {"site-1": None, "site-2": None},
    }
    return results, bandwidth


def test_bandwidth_dice_points():
    points = tables.bandwidth_dice_points(*_points_results())
    assert list(points) == ["local", "fedavg_full", "rate_my_lora", "rate_my_lora_tensor", "centralised"]
    assert points["rate_my_lora"]["up_per_round"] == 150_000.0  # mean over sites
    assert points["rate_my_lora"]["dice"] == pytest.approx({"mean": 0.91, "std": 0.01, "n": 2})
    assert points["rate_my_lora_tensor"]["dice"]["mean"] == pytest.approx(0.9)
    assert points["local"]["up_per_round"] == 0.0 and points["centralised"]["up_per_round"] is None
    assert points["centralised"]["dice"] == pytest.approx({"mean": 0.93, "std": 0.0, "n": 1})


def test_plot_bandwidth_dice_writes_png(tmp_path):
    import matplotlib.image

    points = tables.bandwidth_dice_points(*_points_results())
    path = plots.plot_bandwidth_dice(points, tmp_path / "sub" / "bd.png", tables.METHOD_TITLES)
    image = matplotlib.image.imread(path)
    assert image.shape[0] == 450 and image.shape[1] == 700  # 7 × 4.5 in at 100 dpi
    assert image[..., :3].std() > 0.05  # something drawn
    empty = {"m": {"up_per_round": 1.0, "dice": tables.mean_std([None])}}
    assert plots.plot_bandwidth_dice(empty, tmp_path / "none.png") is None and not (tmp_path / "none.png").exists()


def test_render_markdown_new_rows_privacy_and_upload_vs_dice():
    results, bandwidth = _points_results()
    results["rate_my_lora_dp_high"] = {"0": _matrix(-0.02), "1": _matrix(-0.02)}
    bandwidth["rate_my_lora_dp_high"] = bandwidth["rate_my_lora"]
    summary = {
        "seeds": [0, 1],
        "in_client": tables.in_client_table(results),
        "cross_client": tables.cross_client_table(results),
        "bandwidth": bandwidth,
        "privacy": {"rate_my_lora_dp_high": {"0": {"epsilon": 12.345, "delta": 1e-5, "records": 2}, "1": None}},
        "bandwidth_dice": tables.bandwidth_dice_points(results, bandwidth),
        "bandwidth_dice_plot": "/w/bandwidth_dice.png",
    }
    md = tables.render_markdown(summary)
    assert "| Rate-My-LoRA (tensor) | 0.900 ± 0.010 |" in md  # Table 1
    assert "| Rate-My-LoRA (tensor) | site-2 | 0.01 MB | 0.00 MB |" in md  # bandwidth
    assert f"| Rate-My-LoRA + DP (z = 1.0) | {methods.DP_CLIP:g} | 1 | 1e-05 | 12.35 | not recorded |" in md
    assert "| Rate-My-LoRA (tensor) | 0.01 MB | 0.8 % | 0.900 ± 0.010 |" in md  # 6 kB of 800 kB
    assert "| Centralised (upper bound) | — | — | 0.930 |" in md
    assert "Upload per round against mean in-client Dice: `/w/bandwidth_dice.png`." in md
    # table order: the new rows between Rate-My-LoRA and the centralised model
    assert md.index("| Rate-My-LoRA | 0.910") < md.index("| Rate-My-LoRA (tensor) | 0.900") < md.index("| Centralised")


def test_run_comparison_refuses_unseeded_federated_results(tmp_path, monkeypatch):
    """A FLARE done.json from before the jobs took the seed is a result of seed 0 only."""
    sites = ["site-1", "site-2"]
    monkeypatch.setattr(harness, "prepare_phantoms", lambda workdir: (tmp_path / "sites", sites))
    monkeypatch.setattr(harness, "pretrain_base", lambda *a, **k: tmp_path / "base.pt")
    monkeypatch.setattr(harness, "_run_method", lambda method, folder, **kw: {"matrix": _matrix(0.0), "per_case": {}})
    old = {"matrix": _matrix(0.0), "seed_note": "site seeds are fixed by the client", "per_case": {}}
    for seed in (0, 1):
        (tmp_path / "w" / f"seed{seed}" / "fedavg_full").mkdir(parents=True)
        (tmp_path / "w" / f"seed{seed}" / "fedavg_full" / "done.json").write_text(json.dumps(old))
    summary = harness.run_comparison("phantoms", tmp_path / "w", seeds=[0], methods=["fedavg_full"])
    assert summary["raw"]["fedavg_full"]["0"] == _matrix(0.0)  # seed 0: the old result is reused
    with pytest.raises(ValueError, match=r"seed1/fedavg_full/done.json: made when the FLARE jobs ignored the seed"):
        harness.run_comparison("phantoms", tmp_path / "w", seeds=[0, 1], methods=["fedavg_full"])
    with pytest.raises(ValueError, match="`seeds` must be a non-negative int"):
        harness.run_comparison("phantoms", tmp_path / "w", seeds=[-1])


def test_run_comparison_records_the_dp_rows_epsilon(tmp_path, monkeypatch):
    """A DP row's ε (from its run) goes into results.json and the Privacy table; a run without one says so."""
    sites = ["site-1", "site-2"]
    monkeypatch.setattr(harness, "prepare_phantoms", lambda workdir: (tmp_path / "sites", sites))
    monkeypatch.setattr(harness, "pretrain_base", lambda *a, **k: tmp_path / "base.pt")
    monkeypatch.setattr(harness, "unavailable_reason", lambda spec: None)  # as once the DP job exists

    def fake_run(method, folder, **kw):
        out = {"matrix": _matrix(0.0), "per_case": {}, "bandwidth": tables.fedavg_bandwidth(4, sites, 2)}
        if kw["seed"] == 0:
            out["privacy"] = {"epsilon": 7.5, "delta": 1e-5, "records": 4}
        return out

    monkeypatch.setattr(harness, "_run_method", fake_run)
    summary = harness.run_comparison("phantoms", tmp_path / "w", seeds=[0, 1], methods=["rate_my_lora_dp_low"])
    saved = json.loads((tmp_path / "w" / "results.json").read_text())
    assert (
        saved["privacy"]
        == summary["privacy"]
        == {"rate_my_lora_dp_low": {"0": {"epsilon": 7.5, "delta": 1e-5, "records": 4}, "1": None}}
    )
    md = (tmp_path / "w" / "results.md").read_text()
    assert f"| Rate-My-LoRA + DP (z = 0.5) | {methods.DP_CLIP:g} | 0.5 | 1e-05 | 7.50 | not recorded |" in md


def test_a_failed_run_is_recorded_the_others_go_on_and_a_rerun_retries_it(tmp_path, monkeypatch, capsys):
    """One run raising costs only itself: failed.json, a 'Failed runs' row, exit 1; a rerun resumes it."""
    sites = ["site-1", "site-2"]
    calls = []
    broken = {("fedpetuning", 1)}
    no_models = {("centralised", 0)}  # finishes, but left no model to score per case

    def fake_run(method, folder, **kw):
        calls.append((method, kw["seed"]))
        (folder / "checkpoint.pt").write_bytes(b"partial work")  # what a run leaves before failing
        if (method, kw["seed"]) in broken:
            raise RuntimeError("site-2: all 3 finalize adapters rejected\n(second line of detail)")
        if (method, kw["seed"]) in no_models:
            return {"matrix": _matrix(0.0)}  # no per_case: the harness scores the run's models itself
        return {"matrix": _matrix(0.01 * kw["seed"]), "per_case": {}}

    monkeypatch.setattr(harness, "prepare_phantoms", lambda workdir: (tmp_path / "sites", sites))
    monkeypatch.setattr(harness, "pretrain_base", lambda *a, **k: tmp_path / "base.pt")
    monkeypatch.setattr(harness, "_run_method", fake_run)
    work = tmp_path / "w"
    run = dict(seeds=[0, 1], methods=["fedavg_full", "fedpetuning", "centralised"], command="CMD")
    summary = harness.run_comparison("phantoms", work, **run)
    assert len(calls) == 6  # the runs after the failure ran
    failed = work / "seed1" / "fedpetuning" / "failed.json"
    reason = "RuntimeError: site-2: all 3 finalize adapters rejected"
    assert summary["failures"]["fedpetuning"] == {"1": {"error": reason, "folder": str(failed.parent)}}
    # a run that finished but whose models cannot be scored per case is a failure too, not a crash
    (unscored,) = summary["failures"]["centralised"].values()
    assert list(summary["failures"]["centralised"]) == ["0"] and "FileNotFoundError" in unscored["error"]
    assert (work / "seed0" / "centralised" / "done.json").is_file()
    record = json.loads(failed.read_text())
    assert record["error"] == reason and "second line of detail" in record["message"] and record["traceback"]
    assert (failed.parent / "checkpoint.pt").read_bytes() == b"partial work"
    assert not (failed.parent / "done.json").exists()
    assert set(summary["raw"]["fedpetuning"]) == {"0"} and set(summary["raw"]["centralised"]) == {"1"}
    assert summary["in_client"]["fedpetuning"]["site-1"]["dice"]["n"] == 1
    md = (work / "results.md").read_text()
    assert "**Failed runs**" in md and f"| FedPETuning | 1 | {reason} |" in md
    # compare.py exits 1 and names the failed run
    import compare

    monkeypatch.setattr(compare, "run_comparison", lambda *a, **k: summary)
    argv = ["--workdir", str(work), "--no-readme"]
    assert compare.main(argv) == 1
    assert f"fedpetuning seed 1 failed: {reason}" in capsys.readouterr().err
    # the rerun retries only the failed run; success clears failed.json and the row
    broken.clear()
    calls.clear()
    (work / "seed0" / "centralised").joinpath("done.json").write_text(
        json.dumps({"matrix": _matrix(0.0), "per_case": {}})
    )  # as if its models had been scored
    summary = harness.run_comparison("phantoms", work, **run)
    assert calls == [("fedpetuning", 1)] and summary["failures"] == {} and not failed.exists()
    assert not (work / "seed0" / "centralised" / "failed.json").exists()
    assert "Failed runs" not in (work / "results.md").read_text()
    monkeypatch.setattr(compare, "run_comparison", lambda *a, **k: summary)
    assert compare.main(argv) == 0


def test_per_case_scores_again_when_a_dp_row_needs_the_metrics(tmp_path, monkeypatch):
    """Cached per-case rows are reused; rows scored before `metrics` were kept are scored again, once."""
    scored = []

    def fake_scores(models, sites_root, profile):
        scored.append(dict(models))
        return {"site-1": [{"mean": 0.7, "metrics": {"dice": 0.7}}]}

    monkeypatch.setattr(harness, "per_case_scores", fake_scores)
    monkeypatch.setattr(harness, "in_client_models", lambda method, folder, sites: {"site-1": folder / "m.pt"})
    res = {"matrix": {}, "per_case": {"site-1": [{"mean": 0.6}]}}
    args = (tmp_path, "rate_my_lora_dp_low", res, tmp_path, ["site-1"], "quick")
    assert harness._per_case(*args) == res["per_case"] and not scored  # a plain row needs no metrics
    cases = harness._per_case(*args, with_metrics=True)
    assert cases["site-1"][0]["metrics"] == {"dice": 0.7} and len(scored) == 1
    assert json.loads((tmp_path / "done.json").read_text())["per_case"] == cases  # kept for the next run
    assert harness.sends_privatised_models("rate_my_lora_dp_high")
    assert not harness.sends_privatised_models("rate_my_lora")
