"""Tests of fl.rml (Eq. 1, Eq. 2, the λ schedule), fl.updates (merge, checksums, adapter checks), fl.seeds."""

from __future__ import annotations

import copy
import doctest
import zlib

import pytest
import torch
from torch import nn

import cardiolora.fl.rml as rml
import cardiolora.fl.updates as updates
from cardiolora.fl.seeds import check_seed, round_seed
from cardiolora.lora import (
    base_state_dict,
    inject_lora,
    lora_scalings,
    lora_state_dict,
    merge_lora,
)

TOL = {"atol": 1e-5, "rtol": 1e-5}  # fp32 house tolerance


def test_doctests():
    result = doctest.testmod(rml, verbose=False)
    assert result.failed == 0 and result.attempted > 5


# ----------------------------------------------------------------------------- size coefficients


@pytest.mark.parametrize(
    "sizes, expected",
    [
        ({"a": 1}, {"a": 1.0}),
        ({"a": 1, "b": 3}, {"a": 0.25, "b": 0.75}),
        ({"a": 12, "b": 6, "c": 12}, {"a": 0.4, "b": 0.2, "c": 0.4}),
    ],
    ids=["one", "one_three", "paper_like"],
)
def test_size_coefficients(sizes, expected):
    out = rml.size_coefficients(sizes)
    assert out == pytest.approx(expected)
    assert sum(out.values()) == pytest.approx(1.0)
    assert rml.candidate_coefficients(sizes) == out


@pytest.mark.parametrize("sizes", [{}, {"a": 0}, {"a": -1}, {"a": 1.5}, {"a": True}], ids=str)
def test_size_coefficients_ill(sizes):
    with pytest.raises(ValueError, match="sizes"):
        rml.size_coefficients(sizes)


# ----------------------------------------------------------------------------- Eq. 1

# name, previous, current, λ, expected ratings
RATING_CASES = [
    (  # (a) nobody degraded: everyone 1, even the improvers
        "no_site_degraded",
        {"a": 0.5, "b": 0.5, "c": 0.5},
        {"a": 0.6, "b": 0.5, "c": 0.7},
        0.2,
        {"a": 1.0, "b": 1.0, "c": 1.0},
    ),
    (  # (b) a degraded; b improved → 1 - λ; c equal → 1 (branch c); a degraded → 1
        "one_degraded_one_improved_one_equal",
        {"a": 0.5, "b": 0.5, "c": 0.5},
        {"a": 0.4, "b": 0.6, "c": 0.5},
        0.2,
        {"a": 1.0, "b": 0.8, "c": 1.0},
    ),
    (  # (b) twice: both improvers damped
        "one_degraded_two_improved",
        {"a": 0.5, "b": 0.5, "c": 0.5},
        {"a": 0.49, "b": 0.51, "c": 0.9},
        0.1805,
        {"a": 1.0, "b": 0.8195, "c": 0.8195},
    ),
    (  # (c) everyone degraded: nobody improved, everyone 1
        "all_degraded",
        {"a": 0.5, "b": 0.5},
        {"a": 0.4, "b": 0.3},
        0.2,
        {"a": 1.0, "b": 1.0},
    ),
    (  # a site with no current score (dropped) is neither degraded nor improved
        "missing_current_score",
        {"a": 0.5, "b": 0.5, "c": 0.5},
        {"a": 0.6, "b": 0.7},
        0.2,
        {"a": 1.0, "b": 1.0},
    ),
    (  # a site with no previous score (joined late) is not rated as improved
        "missing_previous_score",
        {"a": 0.5},
        {"a": 0.4, "b": 0.9},
        0.2,
        {"a": 1.0, "b": 1.0},
    ),
    (  # λ = 0: FedPETuning, always 1
        "lambda_zero",
        {"a": 0.5, "b": 0.5},
        {"a": 0.4, "b": 0.6},
        0.0,
        {"a": 1.0, "b": 1.0},
    ),
]


@pytest.mark.parametrize("name, previous, current, lam, expected", RATING_CASES, ids=[c[0] for c in RATING_CASES])
def test_rate_sites_branches(name, previous, current, lam, expected):
    assert rml.rate_sites(previous, current, lam) == pytest.approx(expected)


def test_rate_sites_explicit_site_list_rates_missing_site_one():
    out = rml.rate_sites({"a": 0.5, "b": 0.5}, {"a": 0.4, "b": 0.6}, 0.2, sites=["a", "b", "c"])
    assert out == pytest.approx({"a": 1.0, "b": 0.8, "c": 1.0})


def test_degraded_sites():
    assert rml.degraded_sites({"a": 0.5, "b": 0.5, "c": 0.1}, {"a": 0.4, "b": 0.6}) == ["a"]


@pytest.mark.parametrize("lam", [-0.1, 1.5, True, "0.2"], ids=str)
def test_rate_sites_ill_lambda(lam):
    with pytest.raises(ValueError, match="lam"):
        rml.rate_sites({"a": 0.5}, {"a": 0.4}, lam)


@pytest.mark.parametrize("scores", [{"a": float("nan")}, {"a": "x"}, {"a": None}], ids=str)
def test_rate_sites_ill_scores(scores):
    with pytest.raises(ValueError, match="current"):
        rml.rate_sites({"a": 0.5}, scores, 0.2)


# ----------------------------------------------------------------------------- λ schedule


@pytest.mark.parametrize(
    "lambda0, t, expected",
    [(0.2, 1, 0.2), (0.2, 2, 0.19), (0.2, 3, 0.1805), (0.2, 11, 0.2 * 0.95**10), (0.0, 5, 0.0)],
    ids=["t1", "t2", "t3", "t11", "fedpetuning"],
)
def test_lambda_at_round(lambda0, t, expected):
    assert rml.lambda_at_round(lambda0, t) == pytest.approx(expected, rel=1e-12)


def test_next_lambda_matches_schedule():
    lam = 0.2
    for t in range(1, 8):
        assert lam == pytest.approx(rml.lambda_at_round(0.2, t), rel=1e-12)
        lam = rml.next_lambda(lam)


@pytest.mark.parametrize(
    "kwargs, arg",
    [
        ({"lambda0": 1.2, "round_index": 1}, "lambda0"),
        ({"lambda0": 0.2, "round_index": 0}, "round_index"),
        ({"lambda0": 0.2, "round_index": 1, "decay": 0.0}, "decay"),
    ],
    ids=["lambda0", "round", "decay"],
)
def test_lambda_at_round_ill(kwargs, arg):
    with pytest.raises(ValueError, match=arg):
        rml.lambda_at_round(**kwargs)


# ----------------------------------------------------------------------------- Eq. 2


def test_eq2_by_hand_scalar():
    """1×1 conv, W = 1. Site a (rank 1): A = 2, B = 3, ΔW = 6, |D| = 1, w = 0.8.
    Site b (rank 2): A = [1, 1], B = [1, 2], ΔW = 3, |D| = 3, w = 1.
    W_t = 1 + (0.8·1·6 + 1·3·3) / 4 = 4.45."""
    w = {"0.weight": torch.ones(1, 1, 1, 1), "0.bias": torch.zeros(1)}
    adapters = {
        "a": {"0.lora_A.weight": torch.full((1, 1, 1, 1), 2.0), "0.lora_B.weight": torch.full((1, 1, 1, 1), 3.0)},
        "b": {
            "0.lora_A.weight": torch.ones(2, 1, 1, 1),
            "0.lora_B.weight": torch.tensor([1.0, 2.0]).reshape(1, 2, 1, 1),
        },
    }
    coeffs = rml.merge_coefficients({"a": 1, "b": 3}, {"a": 0.8, "b": 1.0})
    assert coeffs == pytest.approx({"a": 0.2, "b": 0.75})
    out = updates.apply_coefficients(w, adapters, {"a": 1.0, "b": 1.0}, coeffs)
    assert float(out["0.weight"]) == pytest.approx(4.45, abs=1e-6)
    assert torch.equal(out["0.bias"], w["0.bias"])


def _tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.PReLU(), nn.ConvTranspose2d(4, 2, 2, stride=2))


def _site_model(base: nn.Module, rank: int, alpha: float | None, seed: int) -> nn.Module:
    net = copy.deepcopy(base)
    inject_lora(net, rank=rank, alpha=alpha)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if ".lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return net


def _hand_delta(state: dict, name: str, scaling: float) -> torch.Tensor:
    """ΔW by explicit loops over the rank (independent of lora_delta's einsum)."""
    if f"{name}.lora_B.weight" in state:
        b = state[f"{name}.lora_B.weight"][:, :, 0, 0]  # [out, r]
        a = state[f"{name}.lora_A.weight"]  # [r, in, kh, kw]
        out = torch.zeros(b.shape[0], *a.shape[1:], dtype=torch.float64)
        for r in range(a.shape[0]):
            out += b[:, r].double().reshape(-1, 1, 1, 1) * a[r].double().unsqueeze(0)
    else:
        a = state[f"{name}.lora_A.weight"][:, :, 0, 0]  # [r, in]
        b = state[f"{name}.lora_B_T.weight"]  # [r, out, kh, kw]
        out = torch.zeros(a.shape[1], *b.shape[1:], dtype=torch.float64)
        for r in range(a.shape[0]):
            out += a[r].double().reshape(-1, 1, 1, 1) * b[r].double().unsqueeze(0)
    return out * scaling


@pytest.fixture()
def mixed_rank_sites():
    """Three sites on one tiny conv net: ranks 2, 4 and 4 (one with alpha = 8, i.e. scaling 2)."""
    base = _tiny_net()
    w0 = {k: v.detach().clone() for k, v in base.state_dict().items()}
    models = {
        "site-1": _site_model(base, 2, None, 1),
        "site-2": _site_model(base, 4, None, 2),
        "site-3": _site_model(base, 4, 8.0, 3),
    }
    adapters = {s: lora_state_dict(m) for s, m in models.items()}
    scalings = {s: lora_scalings(m) for s, m in models.items()}
    sizes = {"site-1": 12, "site-2": 6, "site-3": 12}
    return base, w0, models, adapters, scalings, sizes


def test_eq2_mixed_ranks(mixed_rank_sites):
    _, w0, _, adapters, scalings, sizes = mixed_rank_sites
    assert {tuple(v.shape) for k, v in adapters["site-1"].items() if k == "0.lora_A.weight"} == {(2, 1, 3, 3)}
    assert adapters["site-2"]["0.lora_A.weight"].shape == (4, 1, 3, 3)
    assert adapters["site-2"]["2.lora_A.weight"].shape == (4, 4, 1, 1)
    assert adapters["site-2"]["2.lora_B_T.weight"].shape == (4, 2, 2, 2)
    ratings = rml.rate_sites(
        {"site-1": 0.5, "site-2": 0.5, "site-3": 0.5}, {"site-1": 0.6, "site-2": 0.4, "site-3": 0.5}, 0.2
    )
    assert ratings == {"site-1": 0.8, "site-2": 1.0, "site-3": 1.0}
    coeffs = rml.merge_coefficients(sizes, ratings)
    out = updates.apply_coefficients(w0, adapters, scalings, coeffs)
    total = sum(sizes.values())
    for name in ("0", "2"):
        expected = w0[f"{name}.weight"].double()
        for s in sizes:
            expected = expected + ratings[s] * sizes[s] / total * _hand_delta(adapters[s], name, scalings[s][name])
        torch.testing.assert_close(out[f"{name}.weight"], expected.float(), **TOL)
    for key in ("0.bias", "1.weight", "2.bias"):
        assert torch.equal(out[key], w0[key])


def test_candidate_is_eq2_with_unit_ratings(mixed_rank_sites):
    _, w0, _, adapters, scalings, sizes = mixed_rank_sites
    cand = updates.apply_coefficients(w0, adapters, scalings, rml.candidate_coefficients(sizes))
    eq2 = updates.apply_coefficients(w0, adapters, scalings, rml.merge_coefficients(sizes, dict.fromkeys(sizes, 1.0)))
    assert updates.state_checksum(cand) == updates.state_checksum(eq2)


def test_lambda_zero_is_fedpetuning(mixed_rank_sites):
    """λ = 0 ⇔ FedPETuning: the size-weighted average of the sites' merged models W + ΔW_c."""
    _, w0, models, adapters, scalings, sizes = mixed_rank_sites
    previous = {"site-1": 0.5, "site-2": 0.5, "site-3": 0.5}
    current = {"site-1": 0.7, "site-2": 0.3, "site-3": 0.9}  # some degraded, some improved
    ratings = rml.rate_sites(previous, current, rml.lambda_at_round(0.0, 4))
    rml_w = updates.apply_coefficients(w0, adapters, scalings, rml.merge_coefficients(sizes, ratings))

    total = sum(sizes.values())
    fedpet: dict[str, torch.Tensor] = {}
    for s, model in models.items():
        merged = copy.deepcopy(model)
        merge_lora(merged)
        for k, v in base_state_dict(merged).items():
            fedpet[k] = fedpet.get(k, 0) + sizes[s] / total * v.double()
    assert set(fedpet) == set(rml_w)
    for k in rml_w:
        torch.testing.assert_close(rml_w[k], fedpet[k].float(), **TOL)
    # and with λ > 0 the same scores give a different W (the rating matters)
    rated = updates.apply_coefficients(
        w0, adapters, scalings, rml.merge_coefficients(sizes, rml.rate_sites(previous, current, 0.2))
    )
    assert not torch.allclose(rated["0.weight"], rml_w["0.weight"], **TOL)


def test_all_coefficients_zero_leaves_w_unchanged(mixed_rank_sites):
    _, w0, _, adapters, scalings, _ = mixed_rank_sites
    out = updates.apply_coefficients(w0, adapters, scalings, {})
    assert updates.state_checksum(out) == updates.state_checksum(w0)
    out = updates.apply_coefficients(w0, adapters, scalings, {"site-1": 0.0})
    assert updates.state_checksum(out) == updates.state_checksum(w0)


def test_merge_coefficients_ill():
    with pytest.raises(ValueError, match="exactly the sites"):
        rml.merge_coefficients({"a": 1}, {"b": 1.0})
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        rml.merge_coefficients({"a": 1}, {"a": 1.5})


def test_apply_delta_ill():
    w = {"x": torch.zeros(2)}
    with pytest.raises(ValueError, match="not weights"):
        updates.apply_delta(w, {"y": torch.zeros(2)})
    with pytest.raises(ValueError, match="shapes"):
        updates.apply_delta(w, {"x": torch.zeros(3)})
    with pytest.raises(ValueError, match="not finite"):
        updates.apply_delta(w, {"x": torch.tensor([float("inf"), 0.0])})


# ----------------------------------------------------------------------------- checksum


def test_checksum_identical_server_and_site(mixed_rank_sites):
    """Server and site run the same merge on their own copies (and thread counts): same bytes."""
    _, w0, _, adapters, scalings, sizes = mixed_rank_sites
    coeffs = rml.merge_coefficients(sizes, {"site-1": 0.8, "site-2": 1.0, "site-3": 1.0})
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        server = updates.apply_coefficients(copy.deepcopy(w0), copy.deepcopy(adapters), scalings, coeffs)
        torch.set_num_threads(max(2, threads))
        site = updates.apply_coefficients(
            {k: v.clone() for k, v in reversed(list(w0.items()))},  # another key order, another copy
            {s: {k: v.clone() for k, v in a.items()} for s, a in reversed(list(adapters.items()))},
            scalings,
            dict(reversed(list(coeffs.items()))),
        )
    finally:
        torch.set_num_threads(threads)
    assert updates.state_checksum(server) == updates.state_checksum(site)


def test_checksum_sensitivity():
    a = {"w": torch.zeros(3), "b": torch.ones(2)}
    assert updates.state_checksum(a) == updates.state_checksum({"b": torch.ones(2), "w": torch.zeros(3)})
    b = {"w": torch.zeros(3), "b": torch.nextafter(torch.ones(2), torch.full((2,), 2.0))}
    assert updates.state_checksum(a) != updates.state_checksum(b)
    assert updates.state_checksum(a) != updates.state_checksum(
        {"w": torch.zeros(3, dtype=torch.float64), "b": torch.ones(2)}
    )
    assert updates.state_checksum(a) != updates.state_checksum({"w": torch.zeros(1, 3), "b": torch.ones(2)})
    assert updates.state_checksum({"w": a["w"].numpy()}) == updates.state_checksum({"w": a["w"]})


# ----------------------------------------------------------------------------- adapter validation


@pytest.fixture()
def rank2_site():
    base = _tiny_net()
    w0 = {k: v.detach().clone() for k, v in base.state_dict().items()}
    model = _site_model(base, 2, None, 5)
    spec = updates.adapter_spec(model)
    return w0, model, spec


def test_validate_adapter_accepts_good_one(rank2_site):
    w0, model, spec = rank2_site
    state = {k: v.numpy() for k, v in lora_state_dict(model).items()}  # as it arrives (numpy)
    deltas = updates.validate_adapter(state, spec, w0, 1.0, site="site-1", rank=2)
    assert set(deltas) == {"0.weight", "2.weight"}
    assert deltas["0.weight"].dtype == torch.float64


def _bad(state: dict, kind: str, spec: dict, w0: dict) -> dict:
    state = {k: v.clone() for k, v in state.items()}
    if kind == "missing_key":
        del state["2.lora_B_T.weight"]
    elif kind == "base_weight_key":
        state["0.weight"] = w0["0.weight"]
    elif kind == "wrong_rank":
        other = _site_model(_tiny_net(), 4, None, 9)
        state = lora_state_dict(other)
    elif kind == "nan":
        state["0.lora_A.weight"][0, 0, 0, 0] = float("nan")
    elif kind == "absurd_norm":
        state["0.lora_B.weight"] *= 1e4
    elif kind == "not_tensor":
        state["0.lora_B.weight"] = "oops"
    elif kind == "integer":
        state["0.lora_B.weight"] = state["0.lora_B.weight"].long()
    return state


BAD_CASES = [
    ("missing_key", r"missing keys: 2\.lora_B_T\.weight"),
    ("base_weight_key", r"unexpected keys: 0\.weight"),
    ("wrong_rank", r"wrong shapes: 0\.lora_A\.weight \(expected \(2, 1, 3, 3\), got \(4, 1, 3, 3\)\)"),
    ("nan", r"non-finite values: 0\.lora_A\.weight"),
    ("absurd_norm", r"expected \|\|ΔW\|\|/\|\|W\|\| <= 1\.0 for every module; got larger for 0\.weight"),
    ("not_tensor", r"not floating-point tensors: 0\.lora_B\.weight"),
    ("integer", r"not floating-point tensors: 0\.lora_B\.weight \(torch\.int64\)"),
]


@pytest.mark.parametrize("kind, message", BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_validate_adapter_rejects(rank2_site, kind, message):
    w0, model, spec = rank2_site
    state = _bad(lora_state_dict(model), kind, spec, w0)
    with pytest.raises(ValueError, match=message) as info:
        updates.validate_adapter(state, spec, w0, 1.0, site="site-9", rank=2)
    assert str(info.value).startswith("site-9: adapter rejected (rank 2)")


def test_validate_adapter_ratio_is_configurable(rank2_site):
    w0, model, spec = rank2_site
    state = _bad(lora_state_dict(model), "absurd_norm", spec, w0)
    updates.validate_adapter(state, spec, w0, 1.0, max_delta_ratio=1e9)
    with pytest.raises(ValueError, match="max_delta_ratio"):
        updates.validate_adapter(state, spec, w0, 1.0, max_delta_ratio=0)


def test_adapter_spec_needs_adapters():
    with pytest.raises(ValueError, match="no LoRA adapters"):
        updates.adapter_spec(_tiny_net())


# ----------------------------------------------------------------------------- per-round seeds


@pytest.mark.parametrize("site", ["site-1", "site-2", "site-3", "hospital-é"])
@pytest.mark.parametrize("round_index", [0, 1, 2, 7, 300_000])
def test_round_seed_zero_is_the_old_formula(site, round_index):
    """Job seed 0 gives the seeds every site used before jobs had a seed, so old runs reproduce."""
    old = (zlib.crc32(site.encode()) + 7919 * round_index) % (2**31)
    assert round_seed(0, site, round_index) == old


def test_round_seed_by_hand():
    crc = zlib.crc32(b"site-2")
    assert round_seed(3, "site-2", 2) == (crc + 2 * 7919 + 3 * 104729) % 2**31
    assert round_seed(2**40, "site-2", 0) == (crc + 2**40 * 104729) % 2**31  # large seeds wrap into [0, 2^31)


def test_round_seed_differs_by_seed_site_and_round():
    sites, rounds, seeds = ("site-1", "site-2", "site-3"), range(6), range(5)
    table = {(j, s, t): round_seed(j, s, t) for j in seeds for s in sites for t in rounds}
    assert len(set(table.values())) == len(table)  # no two (seed, site, round) share a seed
    assert all(0 <= v < 2**31 for v in table.values())
    for s in sites:
        for t in rounds:
            assert len({table[(j, s, t)] for j in seeds}) == len(seeds)  # each job seed shifts every round


@pytest.mark.parametrize("bad", [-1, 1.0, "1", None, True])
def test_seed_must_be_non_negative_int(bad):
    with pytest.raises(ValueError, match="`seed` must be a non-negative int"):
        round_seed(bad, "site-1", 0)
    with pytest.raises(ValueError, match="`seeds` must be a non-negative int"):
        check_seed(bad, "seeds")


def test_check_seed_accepts_numpy_integers():
    import numpy as np

    assert check_seed(np.int64(4)) == 4 and type(check_seed(np.int64(4))) is int
