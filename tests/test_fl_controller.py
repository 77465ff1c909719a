"""The Rate-My-LoRA controller's run() against in-process sites (no FLARE transport).

The sites are real :class:`cardiolora.fl.site_runner.SiteRunner` objects (the same task logic the FLARE
client script drives) with a small backend on a tiny conv net: training pulls the weights towards
a site-specific target, the score falls with the distance to it, so sites disagree and Eq. 1 has
something to rate. ``dispatch`` hands the task to the sites as FLARE would (numpy on the wire,
``client_name`` in the reply meta); a site that "drops" simply does not answer.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from nvflare.app_common.abstract.fl_model import FLModel
from torch import nn

import cardiolora.fl.rml as rml
import cardiolora.fl.updates as updates
from cardiolora.fl.controller import RateMyLoRAController
from cardiolora.fl.cross_eval import write_cross_site_table
from cardiolora.fl.ledger import RunLedger
from cardiolora.fl.protocol import Meta, Task, is_adapter_key, to_numpy
from cardiolora.fl.site_runner import SiteRunner
from cardiolora.lora import inject_lora, lora_scalings, lora_state_dict, reset_lora


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.PReLU(), nn.ConvTranspose2d(4, 2, 2, stride=2))


BASE = {k: v.detach().clone() for k, v in tiny_net().state_dict().items()}
ADAPTED = ("0.weight", "2.weight")


class TinyBackend:
    """Training moves the adapted weights towards `target`; the score is exp(-distance)."""

    def __init__(self, target: dict[str, torch.Tensor], n_cases: int) -> None:
        self.target = target
        self.n = n_cases

    def n_cases(self) -> int:
        return self.n

    def _net(self, weights, rank):
        net = tiny_net()
        net.load_state_dict({k: torch.as_tensor(v) for k, v in weights.items()})
        inject_lora(net, rank=rank)
        return net

    def train_adapter(self, weights, rank, epochs, seed):
        net = self._net(weights, rank)
        torch.manual_seed(seed)
        reset_lora(net)
        opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=0.02)
        losses = []
        for _ in range(10 * epochs):
            opt.zero_grad()
            loss = sum(
                ((m.base.weight + m.delta_weight()) - self.target[f"{n}.weight"]).pow(2).sum()
                for n, m in ((n, net.get_submodule(n)) for n in ("0", "2"))
            )
            loss.backward()
            opt.step()
            losses.append(float(loss))
        return lora_state_dict(net), float(np.mean(losses))

    def scalings(self, rank):
        return lora_scalings(self._net(BASE, rank))

    def train_full(self, weights, epochs, seed):  # pragma: no cover - not used by these tests
        raise NotImplementedError

    def score(self, weights, split):
        d = sum(float((torch.as_tensor(weights[k]) - self.target[k]).pow(2).sum()) for k in ADAPTED)
        return float(np.exp(-d))

    def evaluate(self, weights, split):
        return {"n_cases": 2, "summary": {"mean": {"dice": {"mean": self.score(weights, split), "std": 0.0, "n": 2}}}}


class TinyReference:
    """The adapter reference (keys, shapes, scalings per rank) of the tiny net, in place of the bundle's."""

    def spec(self, rank):
        net = tiny_net()
        inject_lora(net, rank=rank)
        return updates.adapter_spec(net)

    def scaling(self, rank):
        net = tiny_net()
        inject_lora(net, rank=rank)
        return lora_scalings(net)


def make_sites(tmp_path, sizes=None):
    sizes = sizes or {"site-1": 12, "site-2": 6, "site-3": 12}
    g = torch.Generator().manual_seed(42)
    sites = {}
    for name, n in sizes.items():
        target = {k: BASE[k] + 0.3 * torch.randn(BASE[k].shape, generator=g) for k in ADAPTED}
        sites[name] = SiteRunner(name, TinyBackend(target, n), tmp_path / "sites" / name, 1, "quick")
    return sites


class Harness(RateMyLoRAController):
    """The controller with its FLARE environment replaced by in-process sites and a temp folder."""

    def __init__(self, sites, root, drop=None, crash_at=None, corrupt=None, plot=False, **kwargs):
        kwargs.setdefault("ranks", (2, 4))
        kwargs.setdefault("task_timeout", 0)
        super().__init__(**kwargs)
        self.sites = sites
        self.root = root
        self.drop = drop or {}  # {site: (task, round)} → never answers from then on
        self.crash_at = crash_at  # (task, round): the server "crashes" there
        self.corrupt = corrupt or {}  # {site: "merge" | "always"}
        self.sent: list[tuple[str, str, list[str]]] = []
        self.sent_meta: list[tuple[str, str, dict]] = []  # (task, site, meta) as dispatched
        self.fl_ctx = None
        self.persistor = None
        self.reference = TinyReference()
        self._dropped: set[str] = set()
        self.plot = plot

    def _write_outputs(self, final=False, status="running"):
        # the PNG costs ~1 s: drawn in one test only
        super()._write_outputs(final=final and self.plot, status=status)

    def server_root(self):
        return self.root

    def output_dir(self):
        return self.root / "run"

    def sample_clients(self, num_clients=None):
        return sorted(self.sites)

    def load_model(self):
        return FLModel(params=to_numpy(BASE))

    def dispatch(self, task, model, targets):
        if self.crash_at == (task, self.round):
            raise RuntimeError(f"server crash at {task} of round {self.round}")
        results = []
        for site in targets:
            if site in self._dropped or self.drop.get(site) == (task, self.round):
                self._dropped.add(site)
                continue
            runner = self.sites[site]
            params = {k: np.array(v) for k, v in (model.params or {}).items()}  # the wire
            reply = runner.handle(task, params, copy.deepcopy(model.meta))
            if self.corrupt.get(site) == "always" or (
                self.corrupt.get(site) == "merge" and task == Task.TRAIN and self.round == 2
            ):
                runner.weights["0.bias"] = runner.weights["0.bias"] + 1e-3
                reply.meta[Meta.CHECKSUM] = runner.checksum()
            self.sent.append((task, site, sorted(model.params or {})))
            self.sent_meta.append((task, site, dict(model.meta)))
            results.append(
                FLModel(
                    params=to_numpy(reply.params) if reply.params else None,
                    metrics=reply.metrics,
                    meta={**reply.meta, "client_name": site},
                )
            )
        return results


def run(tmp_path, sites=None, **kwargs):
    sites = sites or make_sites(tmp_path)
    ctl = Harness(sites, tmp_path, **kwargs)
    ctl.run()
    return ctl, sites


def history(tmp_path):
    return json.loads((tmp_path / "run" / "rml_history.json").read_text())


def test_full_run_rates_merges_and_keeps_sites_in_sync(tmp_path):
    ctl, sites = run(tmp_path, num_rounds=3, lambda0=0.2, min_clients=2, plot=True)
    # server and every site hold the same W_T
    assert {s.checksum() for s in sites.values()} == {ctl.checksum}
    h = history(tmp_path)
    rounds = [r for r in h["rounds"] if r.get("task") in (None, "init")]
    assert [r["round"] for r in rounds] == [0, 1, 2, 3]
    assert h["ranks"] == {"site-1": 4, "site-2": 2, "site-3": 4}  # half-size site gets the small rank
    # Eq. 1 replayed from the recorded scores, λ schedule, Eq. 2 coefficients
    prev = {s: v["score"] for s, v in rounds[0]["sites"].items()}
    for r in rounds[1:]:
        assert r["lambda"] == pytest.approx(rml.lambda_at_round(0.2, r["round"]))
        cur = {s: v["score"] for s, v in r["sites"].items()}
        expected = rml.rate_sites(prev, cur, r["lambda"])
        assert {s: v["rating"] for s, v in r["sites"].items()} == pytest.approx(expected)
        coeffs = rml.merge_coefficients(h["sizes"], expected)
        assert {s: v["coefficient"] for s, v in r["sites"].items()} == pytest.approx(coeffs)
        for v in r["sites"].values():
            assert v["bytes_up"] > 0 and v["bytes_down"] > 0 and v["train_loss"] is not None
        prev.update(cur)
    assert any(v["rating"] < 1 for r in rounds[1:] for v in r["sites"].values()), "no round exercised the 1-λ branch"
    # only adapter keys ever arrived at the server
    assert all(is_adapter_key(k) for keys in h["received_keys"].values() for k in keys)
    # outputs
    assert (tmp_path / "run" / "rml_curves.png").stat().st_size > 1000
    table = json.loads((tmp_path / "run" / "cross_site_eval.json").read_text())
    assert set(table["global"]) == set(sites) and set(table["in_client"]) == set(sites)
    assert set(table["cross_client"]["site-1"]) == {"site-2", "site-3"}
    state = json.loads((tmp_path / "cardiolora_state" / "rate_my_lora" / "state.json").read_text())
    assert state["status"] == "done" and state["round"] == 3
    for s in sites.values():
        assert (s.output_dir / "global_model.pt").is_file() and (s.output_dir / "personalised_model.pt").is_file()
        glob = torch.load(s.output_dir / "global_model.pt", weights_only=True)
        assert updates.state_checksum(glob) == ctl.checksum


class CapturingHarness(Harness):
    """Keeps the personal adapters the server accepted in ``finalize`` (as it received them)."""

    def _cross_eval(self, personal):
        self.personal = personal
        super()._cross_eval(personal)


@pytest.mark.parametrize("dtype, itemsize", [("float16", 2), ("float32", 4)])
def test_transport_dtype_keeps_server_and_sites_bit_identical(tmp_path, dtype, itemsize):
    """Adapters travel in `dtype`; W_t and the personalised models agree bit for bit with the server's view."""
    sites = make_sites(tmp_path)
    ctl = CapturingHarness(sites, tmp_path, num_rounds=2, transport_dtype=dtype)
    ctl.run()
    assert {s.checksum() for s in sites.values()} == {ctl.checksum}
    h = history(tmp_path)
    for r in (r for r in h["rounds"] if r.get("task") is None):
        for site, v in r["sites"].items():
            rank = h["ranks"][site]
            numel = sum(int(np.prod(shape)) for shape in ctl.reference.spec(rank).values())
            assert v["bytes_up"] == itemsize * numel  # the adapter, in the transport dtype
    for site, runner in sites.items():
        received = ctl.personal[site]  # float32 copies of the float16 (or float32) upload
        assert all(t.dtype == torch.float32 for t in received.values())
        scaling = ctl.reference.scaling(h["ranks"][site])
        expected = updates.apply_coefficients(runner.weights, {site: received}, {site: scaling}, {site: 1.0})
        saved = torch.load(runner.output_dir / "personalised_model.pt", weights_only=True)
        assert updates.state_checksum(saved) == updates.state_checksum(expected)


def test_lambda_zero_rates_everyone_one(tmp_path):
    run(tmp_path, num_rounds=2, lambda0=0.0, state_name="fedpetuning", cross_eval=False)
    for r in history(tmp_path)["rounds"]:
        for v in r["sites"].values():
            assert v.get("rating", 1.0) == 1.0


@pytest.mark.parametrize("kind", ["nan", "missing_key", "base_weight", "wrong_rank", "absurd", "float32"])
def test_bad_adapter_is_rejected_and_round_goes_on(tmp_path, kind):
    sites = make_sites(tmp_path)
    original = sites["site-2"].on_train

    def bad_train(params, meta):
        reply = original(params, meta)
        if meta[Meta.ROUND] == 1:
            p = reply.params
            if kind == "nan":
                p["0.lora_A.weight"][0, 0, 0, 0] = float("nan")
            elif kind == "missing_key":
                del p["2.lora_B_T.weight"]
            elif kind == "base_weight":
                p["0.weight"] = BASE["0.weight"]
            elif kind == "wrong_rank":
                p["0.lora_A.weight"] = torch.zeros(4, 1, 3, 3)
            elif kind == "absurd":
                p["0.lora_B.weight"] = p["0.lora_B.weight"] + 1e3
            elif kind == "float32":  # not what the job's transport dtype (float16) says
                reply.params = {k: v.float() for k, v in p.items()}
        return reply

    sites["site-2"].on_train = bad_train
    ctl, _ = run(tmp_path, sites=sites, num_rounds=1, cross_eval=False)
    r1 = [r for r in history(tmp_path)["rounds"] if r["round"] == 1 and "task" not in r][0]
    assert r1["sites"]["site-2"]["accepted"] is False
    assert "site-2: adapter rejected (rank 2)" in r1["sites"]["site-2"]["reason"]
    assert r1["sites"]["site-1"]["accepted"] and "coefficient" not in r1["sites"]["site-2"]
    assert {s.checksum() for s in sites.values()} == {ctl.checksum}  # the rejected site merged the others


def test_all_adapters_rejected_leaves_w_unchanged(tmp_path):
    sites = make_sites(tmp_path)
    ctl, _ = run(tmp_path, sites=sites, num_rounds=1, max_delta_ratio=1e-12, cross_eval=False)
    r1 = [r for r in history(tmp_path)["rounds"] if r["round"] == 1 and "task" not in r][0]
    assert r1["note"] == "all adapters rejected: W unchanged"
    assert ctl.checksum == updates.state_checksum(BASE)
    assert {s.checksum() for s in sites.values()} == {ctl.checksum}


def test_dropped_site_job_goes_on_with_the_others(tmp_path):
    ctl, sites = run(tmp_path, num_rounds=2, min_clients=2, drop={"site-3": (Task.VALIDATE, 1)})
    assert ctl.active == ["site-1", "site-2"]
    r1 = [r for r in history(tmp_path)["rounds"] if r["round"] == 1 and "task" not in r][0]
    assert r1["sites"]["site-3"]["dropped"] == Task.VALIDATE
    assert r1["sites"]["site-3"]["rating"] == 1.0  # accepted in train, no score: not rated as improved
    assert sites["site-1"].checksum() == sites["site-2"].checksum() == ctl.checksum
    table = json.loads((tmp_path / "run" / "cross_site_eval.json").read_text())
    assert set(table["global"]) == {"site-1", "site-2"}


def test_too_few_sites_stop_the_job_and_keep_the_state(tmp_path):
    with pytest.raises(RuntimeError, match="fewer than min_clients = 3"):
        run(tmp_path, num_rounds=3, min_clients=3, drop={"site-3": (Task.TRAIN, 2)})
    state = json.loads((tmp_path / "cardiolora_state" / "rate_my_lora" / "state.json").read_text())
    assert state["status"] == "running" and state["round"] == 1


def test_checksum_mismatch_is_resynchronised(tmp_path, caplog):
    caplog.set_level("ERROR")
    ctl, sites = run(tmp_path, num_rounds=3, corrupt={"site-2": "merge"}, cross_eval=False)
    assert any("checksum of its W after `train` of round 2" in r.getMessage() for r in caplog.records)
    r2 = [r for r in history(tmp_path)["rounds"] if r["round"] == 2 and "task" not in r][0]
    assert r2["sites"]["site-2"]["checksum_ok"] is False
    assert r2["sites"]["site-2"]["reason"] == "checksum mismatch: re-synchronised"
    assert ("sync", "site-2") in {(t, s) for t, s, _ in ctl.sent}
    assert {s.checksum() for s in sites.values()} == {ctl.checksum}


def test_persistent_mismatch_stops_the_job(tmp_path):
    with pytest.raises(RuntimeError, match="still differs from the server's after re-synchronisation"):
        run(tmp_path, num_rounds=2, corrupt={"site-2": "always"}, cross_eval=False)


def test_resume_after_restart_gives_the_uninterrupted_result(tmp_path):
    ref, _ = run(tmp_path / "ref", num_rounds=3, cross_eval=False)
    with pytest.raises(RuntimeError, match="server crash"):
        run(tmp_path / "crash", num_rounds=3, cross_eval=False, crash_at=(Task.VALIDATE, 2))
    state = json.loads((tmp_path / "crash" / "cardiolora_state" / "rate_my_lora" / "state.json").read_text())
    assert state["round"] == 1 and state["status"] == "running"
    # a restarted job: new server object, new site processes (they get W_1 from `init`)
    resumed, sites = run(tmp_path / "crash", num_rounds=3, cross_eval=False)
    assert resumed.checksum == ref.checksum
    assert {s.checksum() for s in sites.values()} == {ref.checksum}
    h = history(tmp_path / "crash")
    assert [r["round"] for r in h["rounds"] if r.get("task") is None] == [1, 2, 3]
    assert [r["resumed"] for r in h["rounds"] if r.get("task") == "init"] == [False, True]


def test_resume_refuses_another_configuration(tmp_path):
    with pytest.raises(RuntimeError):
        run(tmp_path, num_rounds=2, cross_eval=False, crash_at=(Task.TRAIN, 2))
    with pytest.raises(RuntimeError, match="field `lambda0` was 0.2"):
        run(tmp_path, num_rounds=2, cross_eval=False, lambda0=0.1)


def test_resume_refuses_another_dp_noise_source(tmp_path):
    """A DP run's saved state names its noise source: a job with seeded noise cannot continue it."""
    dp = {"dp_clip": 0.05, "dp_noise_multiplier": 1.0}
    with pytest.raises(RuntimeError, match="server crash"):
        run(tmp_path, num_rounds=2, cross_eval=False, crash_at=(Task.TRAIN, 2), **dp)
    with pytest.raises(RuntimeError, match="field `dp_noise` was 'os-entropy'"):
        run(tmp_path, num_rounds=2, cross_eval=False, dp_reproducible_noise=True, **dp)


@pytest.mark.parametrize(
    "kwargs, arg",
    [
        ({"num_rounds": 0}, "num_rounds"),
        ({"lambda0": 2.0}, "lambda0"),
        ({"ranks": (16,)}, "ranks"),
        ({"min_clients": 0}, "min_clients"),
        ({"max_delta_ratio": 0}, "max_delta_ratio"),
        ({"transport_dtype": "int8"}, "transport_dtype"),
    ],
    ids=["rounds", "lambda0", "ranks", "min_clients", "ratio", "transport_dtype"],
)
def test_controller_arguments_are_checked(kwargs, arg):
    with pytest.raises(ValueError, match=arg):
        RateMyLoRAController(**kwargs)


def test_ledger_times_each_record_and_records_the_ratings():
    ledger = RunLedger()
    ledger.open({"round": 1, "lambda": 0.2, "sites": {}})
    # Eq. 1: a degraded, b improved -> b rated 1 - λ; only b's adapter was merged
    ledger.record_ratings({"a": 0.5, "b": 0.5}, {"a": 0.4, "b": 0.6}, {"b": 0.8}, {"b": 0.4})
    ledger.close()
    rec = ledger.current
    assert isinstance(rec["seconds"], float) and rec["seconds"] >= 0
    assert rec["sites"]["a"] == {"bytes_up": 0, "bytes_down": 0, "previous_score": 0.5, "score": 0.4}
    assert rec["sites"]["b"]["rating"] == 0.8 and rec["sites"]["b"]["coefficient"] == 0.4
    bytes_ = {(f"bytes_{d}/{s}", 0, 1) for d in ("up", "down") for s in "ab"}
    assert set(ledger.scalars()) == {
        ("lambda", 0.2, 1),
        ("score/a", 0.4, 1),
        ("score/b", 0.6, 1),
        ("rating/b", 0.8, 1),
        ("coefficient/b", 0.4, 1),
        *bytes_,
    }  # TensorBoard: no previous_score


def test_cross_site_table_names_an_evaluator_without_a_table(tmp_path):
    entry = {"n_cases": 2, "summary": {"mean": {"dice": {"mean": 0.9, "std": 0.0, "n": 2}}}}
    said: list[str] = []
    path = write_cross_site_table({"a": {"global": entry, "a": entry}, "b": None}, tmp_path, warn=said.append)
    assert said == ["b: `cross_eval` gave no `models` table."]
    table = json.loads(path.read_text())
    assert path.name == "cross_site_eval.json" and set(table["global"]) == {"a"} and table["in_client"]["a"] == entry
