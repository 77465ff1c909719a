"""The experiment harness (benchmarks/lib): tables, Markdown, bandwidth, the ACDC appearance change, pooling, reuse.

Nothing here trains: the tables are built from small hand-made score matrices.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from cardiolora.data.dataset import load_datalist, write_datalist
from lib import harness, runners, tables
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
    assert len(calls) == 2 * len(tables.METHODS)
    for name in ("results.json", "results.md", "curves.png"):
        assert (tmp_path / "w" / name).is_file()
    text = readme.read_text()
    assert text.startswith("# x\n<!-- compare-phantoms:start -->\n`CMD` (") and text.endswith("end -->\ntail\n")
    assert "results/compare_phantoms_curves.png" in text and "old" not in text
    assert (tmp_path / "results" / "compare_phantoms_curves.png").is_file()
    assert summary["in_client"]["local"]["site-1"]["dice"]["mean"] == pytest.approx(0.905, abs=1e-5)
    # the per-patient part: 6 patients (3 per site), Rate-My-LoRA +0.02 on each, the rating acted in round 1
    paired = summary["paired"]["rate_my_lora_vs_fedpetuning"]
    assert (paired["n"], paired["wins"], paired["losses"]) == (6, 6, 0)
    assert paired["mean_diff"] == pytest.approx(0.02)
    assert summary["structures"]["rate_my_lora"]["site-1"]["LV"]["mean"] == pytest.approx(0.92)
    assert summary["rating_events"]["0"][0] == {"round": 1, "site": "site-1", "rating": 0.5, "lambda": 0.1}
    md = (tmp_path / "w" / "results.md").read_text()
    assert "Table 3" in md and "| Rate-My-LoRA vs FedPETuning | +0.0200" in md and "round 1 site-1 w = 0.50" in md
    harness.run_comparison("phantoms", tmp_path / "w", seeds=[0, 1], command="CMD")
    assert len(calls) == 2 * len(tables.METHODS)  # every method folder has its done.json


def test_run_federated_gives_the_job_the_seed(tmp_path, monkeypatch):
    """The harness seed is the FLARE job's seed (the sites' per-round seeds depend on it)."""
    calls = []

    def fake_simulation(job, sites_root, pretrained, workdir, **kw):
        calls.append((job, kw))
        results = tmp_path / "f" / "results" / job
        results.mkdir(parents=True)
        (results / "cross_site_eval.json").write_text("{}")
        (results / "rml_history.json").write_text("[]")
        return {"seconds": 1.0}

    monkeypatch.setattr(runners, "run_simulation", fake_simulation)
    monkeypatch.setattr(runners, "matrix_from_cross_eval", lambda cross, sites: _matrix(0.0))
    out = runners.run_federated(tmp_path / "f", "rate_my_lora", tmp_path, ["site-1", "site-2"], tmp_path, "quick", 2, 3)
    assert calls == [
        (
            "rate_my_lora",
            {"rounds": 2, "profile": "quick", "sites": ["site-1", "site-2"], "min_clients": 2, "seed": 3},
        )
    ]
    assert out["seed"] == 3 and "seed_note" not in out


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
