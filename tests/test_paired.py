"""Per-patient scores and paired statistics of the federated comparison (`benchmarks/lib/paired.py`)."""

from __future__ import annotations

import pytest
import torch

from lib import paired


def _rows(patients: dict[str, float]) -> list[dict]:
    """ED and ES rows of each patient with the given mean (ES 0.1 below ED, mean as given)."""
    return [
        {
            "case_id": f"{p}_{ph}",
            "patient_id": p,
            "phase": ph,
            "mean": m + d,
            "dice": {"LV": m + d, "MYO": None, "RV": 0.5},
        }
        for p, m in patients.items()
        for ph, d in (("ED", 0.05), ("ES", -0.05))
    ]


def test_patient_scores_average_cases_then_seeds():
    seed0 = {"site-1": _rows({"a": 0.8, "b": 0.6})}
    seed1 = {"site-1": _rows({"a": 0.7})}  # b not scored in seed 1
    assert paired.patient_scores([seed0, seed1]) == pytest.approx({"site-1/a": 0.75, "site-1/b": 0.6})


def test_paired_comparison_all_wins_exact_p():
    a = {f"p{i}": 0.8 + 0.01 * i for i in range(10)}
    b = {k: v - 0.02 - 0.001 * i for i, (k, v) in enumerate(a.items())}
    c = paired.paired_comparison(a, b)
    assert (c["n"], c["wins"], c["losses"], c["ties"]) == (10, 10, 0, 0)
    assert c["mean_diff"] == pytest.approx(0.0245)
    # every difference positive: exact Wilcoxon and sign test both give 2 / 2^10
    assert c["wilcoxon_p"] == pytest.approx(2 / 1024)
    assert c["sign_p"] == pytest.approx(2 / 1024)


def test_paired_comparison_ties_mixed_and_unpaired():
    a = {"p1": 0.9, "p2": 0.5, "p3": 0.7, "only_a": 1.0}
    b = {"p1": 0.8, "p2": 0.6, "p3": 0.7, "only_b": 0.0}
    c = paired.paired_comparison(a, b)
    assert (c["n"], c["wins"], c["losses"], c["ties"]) == (3, 1, 1, 1)
    assert c["sign_p"] == pytest.approx(1.0)
    assert set(c["patients"]) == {"p1", "p2", "p3"}
    same = paired.paired_comparison({"p": 0.5, "q": 0.4}, {"p": 0.5, "q": 0.4})
    assert same["wilcoxon_p"] is None and same["ties"] == 2
    with pytest.raises(ValueError, match="share no patient"):
        paired.paired_comparison({"x": 1.0}, {"y": 1.0})


def test_structure_table_skips_absent_structures():
    per_case = {"m": {"0": {"s": _rows({"a": 0.8})}, "1": {"s": _rows({"a": 0.6})}}}
    t = paired.structure_table(per_case)["m"]["s"]
    assert t["LV"] == pytest.approx({"mean": 0.7, "std": 0.1, "n": 2})
    assert t["MYO"]["n"] == 0 and t["RV"]["mean"] == pytest.approx(0.5)


def test_rating_events_only_training_rounds_below_one():
    history = {
        "rounds": [
            {"round": 0, "task": "init", "sites": {"a": {"score": 0.5}}},
            {"round": 1, "lambda": 0.2, "sites": {"a": {"rating": 1.0}, "b": {"rating": 0.8}}},
            {"round": 2, "lambda": 0.1, "sites": {"a": {"rating": 0.95}, "b": {"rating": 1.0}}},
            {"round": 2, "task": "finalize", "sites": {"a": {"rating": 0.1}}},
        ]
    }
    assert paired.rating_events(history) == [
        {"round": 1, "site": "b", "rating": 0.8, "lambda": 0.2},
        {"round": 2, "site": "a", "rating": 0.95, "lambda": 0.1},
    ]
    assert paired.rating_events([]) == []


def test_in_client_models_names_missing_file(tmp_path):
    with pytest.raises(
        FileNotFoundError, match=r"sites/site-1/rate_my_lora/latest/personalised_model.pt: the rate_my_lora model"
    ):
        paired.in_client_models("rate_my_lora", tmp_path, ["site-1"])
    # a row that varies a job setting finds its models under its job's name
    with pytest.raises(
        FileNotFoundError, match=r"sites/site-1/dual_lora/latest/personalised_model.pt: the dual_lora_rated"
    ):
        paired.in_client_models("dual_lora_rated", tmp_path, ["site-1"])
    # a run made before site outputs were kept per job id: the model in the job folder itself
    model = tmp_path / "sites" / "site-1" / "rate_my_lora" / "personalised_model.pt"
    model.parent.mkdir(parents=True)
    model.write_bytes(b"")
    assert paired.in_client_models("rate_my_lora_tensor", tmp_path, ["site-1"]) == {"site-1": model}
    # the newest finished job (`latest`) wins over it
    newest = model.parent / "latest" / "personalised_model.pt"
    newest.parent.mkdir()
    newest.write_bytes(b"")
    assert paired.in_client_models("rate_my_lora", tmp_path, ["site-1"]) == {"site-1": newest}
    with pytest.raises(ValueError, match="`method` 'nope' unknown"):
        paired.in_client_models("nope", tmp_path, ["site-1"])


def test_per_case_scores_real_model_on_a_phantom_site(tiny_sites, tmp_path):
    """Real weights, real test split: one row per test case with Dice of each structure in [0, 1]."""
    from cardiolora.data.dataset import load_datalist
    from cardiolora.networks import lora_unet, plain_state_dict

    sites_root = tiny_sites[0] / "sites"
    torch.manual_seed(0)
    weights = tmp_path / "w.pt"
    torch.save(plain_state_dict(lora_unet("quick")), weights)
    out = paired.per_case_scores({"site-1": weights}, sites_root, "quick")
    test = load_datalist(sites_root / "site-1", "test")
    assert [r["case_id"] for r in out["site-1"]] == [r["case_id"] for r in test]
    for row in out["site-1"]:
        assert set(row["dice"]) == {"LV", "MYO", "RV"}
        assert all(v is None or 0.0 <= v <= 1.0 for v in row["dice"].values())


def test_render_paired_markdown():
    summary = paired.paired_summary(
        {
            "rate_my_lora": {"0": {"s": _rows({"a": 0.8, "b": 0.7})}},
            "fedpetuning": {"0": {"s": _rows({"a": 0.7, "b": 0.7})}},
        },
        {"0": [{"round": 3, "site": "s", "rating": 0.9, "lambda": 0.1}], "1": []},
    )
    md = paired.render_paired_markdown(summary, {"rate_my_lora": "RML", "fedpetuning": "FedPETuning"})
    assert "| RML | 0.750 | — | 0.500 |" in md  # one seed: no ± std; MYO absent everywhere
    assert "| RML vs FedPETuning | +0.0500 ± 0.0500 | 1 / 0 / 1 |" in md
    assert "- seed 0: round 3 s w = 0.90" in md and "- seed 1: never" in md
    assert paired.render_paired_markdown({}) == ""


def test_own_model_entries_refuses_rows_scored_without_metrics():
    with pytest.raises(ValueError, match="site 'site-2'.*without `metrics`"):
        paired.own_model_entries({"site-2": [{"mean": 0.5, "dice": {}}]})
