"""The Rate-My-LoRA server workflow for NVIDIA FLARE 2.9 (He et al., arXiv 2501.03223, Alg. 1).

:class:`RateMyLoRAController` is a ``ModelController`` with its own ``run()`` (in FLARE 2.9 the
``aggregate()`` hook of ``FedAvg`` is never called, so the rating cannot live there). The
mathematics is in :mod:`cardiolora.fl.rml`, the exchange with the sites (sending, dropped sites,
checksums, adapter checks) in :class:`cardiolora.fl.exchange.SiteExchangeController`; this module
sequences the tasks:

0. ``init`` — send ``W`` (``W_0`` from the persistor, or the persisted ``W_t`` on resume) to every
   site; get ``|D_c|``, ``P_0^c`` and the checksum of the loaded ``W``. Ranks
   ``r_c = rank_for_dataset_size(|D_c|, max |D|)`` are fixed here (and kept on resume).
1. per round ``t``: ``train`` (carries the merge of round ``t-1``: coefficients and scalings,
   no tensor) → each site's adapter, ``|D_c|``, train loss and the checksum of its ``W_{t-1}``.
   A checksum that differs from the server's is logged as an error; the site's adapter is
   rejected this round and the site is re-synchronised with a ``sync`` task (full ``W_{t-1}``);
   if its checksum still differs, the job stops. Adapters are validated
   (:func:`cardiolora.fl.rml.validate_adapter`); a bad one is rejected with the reason logged
   and the round goes on without it. If every adapter is rejected, ``W`` stays as it is.
2. ``validate`` — all accepted adapters + equal-rating coefficients ``|D_c|/Σ|D|`` → ``P_t^c``.
3. Eq. 1 (:func:`~cardiolora.fl.rml.rate_sites`) and Eq. 2 on the server's ``W``; the
   coefficients ``w_t(c)|D_c|/Σ|D|`` go to the sites with the next task, which apply the same
   merge to their own copy.
4. ``λ ← 0.95 λ``; the state (round, λ, previous scores, ``W_t``, ranks, sizes, history) is saved
   to ``<state_dir>/<state_name>/state.pt`` (:mod:`cardiolora.fl.state`) and the round's numbers
   (:class:`cardiolora.fl.ledger.RunLedger`) to TensorBoard (FLARE's analytics events →
   ``TBAnalyticsReceiver``), ``rml_history.json`` and ``rml_curves.png``.

After round ``T``: ``finalize`` (merge round ``T``; each site saves ``W_T`` and a personalised
model after one more local epoch, and returns its personal adapter) and ``cross_eval`` (every
site scores ``W_T`` and every personalised model — shipped as adapters relative to ``W_T`` — on its
test split: Dice, VOE, HD, HD95, ASSD), saved as ``cross_site_eval.json`` in the run folder
(:func:`cardiolora.fl.cross_eval.cross_site_table`).

Dropped sites (:mod:`cardiolora.fl.exchange`): a site that does not answer in time (or answers
with an error) is dropped for the rest of the job; if fewer than ``min_clients`` sites remain, the
job stops — the state of the last completed round is on disk, and submitting the job again
resumes from it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from nvflare.app_common.abstract.fl_model import FLModel

from cardiolora.atomic import write_json
from cardiolora.fl import rml, state
from cardiolora.fl.cross_eval import CROSS_EVAL_FILE, cross_site_table
from cardiolora.fl.exchange import SiteExchangeController
from cardiolora.fl.protocol import DEFAULT_TRANSPORT_DTYPE, Meta, Task, to_numpy, to_torch
from cardiolora.networks import rank_for_dataset_size

__all__ = ["RateMyLoRAController"]


class RateMyLoRAController(SiteExchangeController):
    """Rate-My-LoRA (``lambda0 > 0``) or FedPETuning (``lambda0 = 0``) on FLARE 2.9.

    Args:
        num_rounds: federated rounds ``T`` (≥ 1).
        lambda0: ``λ_0`` in ``[0, 1]``: 0.2 in the paper; 0 is FedPETuning.
        decay: ``λ ← decay·λ`` after each round, in ``(0, 1]``.
        profile: run profile of the bundle network (must be the sites' profile).
        local_epochs: local epochs per round.
        personalise_epochs: local epochs of the final personalisation.
        ranks: ``(small-site rank, large-site rank)`` for :func:`cardiolora.networks.rank_for_dataset_size`.
        rank_threshold: a site with ``|D_c| < rank_threshold · max|D|`` gets the small rank.
        min_clients: fewer answering sites than this stops the job.
        max_delta_ratio: largest accepted ``||ΔW_k||/||W_k||`` of an adapter.
        task_timeout: seconds a task may take at most (0: no limit).
        straggler_grace: seconds to wait for the remaining sites once ``min_clients`` answered.
        cross_eval: run the final cross-site evaluation.
        state_name: sub-folder of the state directory (one per job kind).
        persistor_id: the component that loads ``W_0``.
        transport_dtype: dtype adapters travel in, both ways (``"float16"`` or ``"float32"``).

        ``min_clients``, ``max_delta_ratio``, ``task_timeout``, ``straggler_grace``, ``state_name``,
        ``persistor_id`` and ``transport_dtype`` go to :class:`~cardiolora.fl.exchange.SiteExchangeController`.

    Raises:
        ValueError: naming the argument that is out of range (see also
            :class:`~cardiolora.fl.exchange.SiteExchangeController`).
    """

    #: Written into the exported job even when equal to the default, so the job file says them.
    _always_serialize_args = (
        "num_rounds",
        "lambda0",
        "decay",
        "profile",
        "local_epochs",
        "ranks",
        "min_clients",
        "task_timeout",
        "straggler_grace",
        "state_name",
        "transport_dtype",
    )

    def __init__(
        self,
        num_rounds: int = 5,
        lambda0: float = rml.DEFAULT_LAMBDA0,
        decay: float = rml.DEFAULT_DECAY,
        profile: str = "quick",
        local_epochs: int = 1,
        personalise_epochs: int = 1,
        ranks: Sequence[int] = (16, 32),
        rank_threshold: float = 0.75,
        min_clients: int = 2,
        max_delta_ratio: float = rml.DEFAULT_MAX_DELTA_RATIO,
        task_timeout: int = 3600,
        straggler_grace: int = 600,
        cross_eval: bool = True,
        state_name: str = "rate_my_lora",
        persistor_id: str = "persistor",
        transport_dtype: str = DEFAULT_TRANSPORT_DTYPE,
    ) -> None:
        super().__init__(
            num_rounds=num_rounds,
            profile=profile,
            min_clients=min_clients,
            max_delta_ratio=max_delta_ratio,
            task_timeout=task_timeout,
            straggler_grace=straggler_grace,
            state_name=state_name,
            persistor_id=persistor_id,
            transport_dtype=transport_dtype,
        )
        for name, value in (("local_epochs", local_epochs), ("personalise_epochs", personalise_epochs)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be an int >= 1, got {value!r}.")
        rml.lambda_at_round(lambda0, 1, decay)  # validates lambda0 and decay
        ranks = tuple(ranks)
        if len(ranks) != 2 or not all(isinstance(r, int) and not isinstance(r, bool) and r >= 1 for r in ranks):
            raise ValueError(f"`ranks` must be two ints >= 1 (small site, large site), got {ranks!r}.")
        if not 0 < rank_threshold <= 1:
            raise ValueError(f"`rank_threshold` must be in (0, 1], got {rank_threshold!r}.")
        self.lambda0 = float(lambda0)
        self.decay = float(decay)
        self.local_epochs = local_epochs
        self.personalise_epochs = personalise_epochs
        self.ranks = list(ranks)
        self.rank_threshold = float(rank_threshold)
        self.cross_eval = cross_eval
        # run state (with the exchange's: weights, checksum, round, site ranks, active sites, ledger)
        self.sizes: dict[str, int] = {}
        self.scores: dict[str, float] = {}
        self.pending_merge: dict | None = None
        self._t0 = time.monotonic()

    @property
    def method(self) -> str:
        """``"rate_my_lora"`` or ``"fedpetuning"`` (λ_0 = 0)."""
        return "fedpetuning" if self.lambda0 == 0 else "rate_my_lora"

    # ------------------------------------------------------------------ state
    def _fingerprint(self) -> dict:
        return {
            "profile": self.profile,
            "lambda0": self.lambda0,
            "decay": self.decay,
            "ranks": list(self.ranks),
            "rank_threshold": self.rank_threshold,
            "method": self.method,
        }

    def save_state(self, status: str) -> Path:
        """Persist the server state atomically to ``<state_dir>/state.pt`` (:func:`cardiolora.fl.state.save_state`)."""
        return state.save_state(
            self.state_dir(),
            status,
            self._fingerprint(),
            self.round,
            self.weights,
            self.checksum,
            self.sizes,
            self.site_ranks,
            self.scores,
            self.ledger.rounds,
        )

    def load_state(self) -> dict | None:
        """The state to resume from, or None (:func:`cardiolora.fl.state.load_state`).

        Raises:
            RuntimeError: naming the file and the field if the state belongs to another configuration.
        """
        return state.load_state(self.state_dir(), self._fingerprint(), log=self.info)

    # ------------------------------------------------------------------ outputs
    def _write_outputs(self, final: bool = False) -> None:
        """``rml_history.json`` every time; ``rml_curves.png`` at the end and at most once a minute in between."""
        header = {
            "method": self.method,
            "profile": self.profile,
            "lambda0": self.lambda0,
            "decay": self.decay,
            "ranks": self.site_ranks,
            "sizes": self.sizes,
        }
        title = f"{self.method} ({self.profile})"
        self.ledger.write(self.output_dir(), header, title, final=final, warn=self.warning)

    # ------------------------------------------------------------------ the workflow
    def run(self) -> None:
        try:
            self._run()
        except BaseException:
            if self.ledger.rounds:  # what was done so far stays readable (JSON + curves)
                try:
                    self._write_outputs(final=True)
                except Exception as err:
                    self.warning(f"could not write the outputs after the failure: {err}")
            raise

    def _run(self) -> None:
        self._saved_round = 0
        self.info(f"{self.method}: {self.num_rounds} rounds, λ_0 = {self.lambda0}, profile {self.profile}")
        saved = self.load_state()
        if saved is None:
            model = self.load_model()
            if model is None or not model.params:
                raise RuntimeError(f"persistor `{self._persistor_id}` gave no initial model W_0.")
            self.weights = to_torch(model.params)
            self.round = 0
        else:
            self.weights = saved["weights"]
            self.round = int(saved["round"])
            self.sizes = dict(saved["sizes"])
            self.site_ranks = dict(saved["ranks"])
            self.scores = dict(saved["scores"])
            self.ledger.rounds = list(saved["history"])
            self.info(
                f"resuming after round {self.round} from {self.state_dir()} (W checksum {saved['checksum'][:12]})"
            )
        self.checksum = rml.state_checksum(self.weights)
        self._saved_round = self.round
        self.active = self.sample_clients()
        self._init(resumed=saved is not None)
        for t in range(self.round + 1, self.num_rounds + 1):
            self.round = t
            self._round(t)
        self.round = max(self.round, self.num_rounds)
        personal = self._finalize()
        if self.cross_eval and personal:
            self._cross_eval(personal)
        self.save_state("done")
        self._write_outputs(final=True)
        self.info(f"{self.method} finished; outputs in {self.output_dir()}")

    def _init(self, resumed: bool) -> None:
        t0 = time.monotonic()
        self.ledger.open(
            {
                "round": self.round,
                "lambda": None,
                "checksum": self.checksum,
                "task": "init",
                "resumed": resumed,
                "sites": {},
            }
        )
        results = self._send(Task.INIT, self._model(to_numpy(self.weights)), list(self.active))
        mismatched = self._verify(results, Task.INIT)
        self._resync(mismatched)
        sizes = {}
        for site, r in results.items():
            n = (r.meta or {}).get(Meta.N_CASES)
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                self.warning(f"{site}: `init` gave |D_c| = {n!r}, expected a positive int; the site is dropped.")
                self.active.remove(site)
                continue
            sizes[site] = n
            score = None if site in mismatched else self._finite_metric(r, Meta.SCORE)
            rec = self.ledger.site(site)
            rec.update({"n_cases": n, "score": score})
            if score is not None and (not resumed or site not in self.scores):
                self.scores[site] = score  # P_0^c (kept from the saved run when resuming)
        if not sizes:
            raise RuntimeError("no site answered `init` with its dataset size.")
        self.sizes.update(sizes)
        largest = max(self.sizes.values())
        for site, n in sizes.items():
            if site not in self.site_ranks:  # ranks are fixed once (kept on resume)
                self.site_ranks[site] = rank_for_dataset_size(n, largest, tuple(self.ranks), self.rank_threshold)
            self.ledger.site(site)["rank"] = self.site_ranks[site]
        self.info(f"init: |D| {sizes}, ranks {self.site_ranks}, P {self.scores}")
        self.ledger.current["seconds"] = round(time.monotonic() - t0, 3)
        self._write_outputs()
        self._track_round()

    def _round(self, t: int) -> None:
        lam = rml.lambda_at_round(self.lambda0, t, self.decay)
        self._t0 = time.monotonic()
        self.ledger.open({"round": t, "lambda": lam, "sites": {}})
        # 1. train (with the merge of round t-1)
        model = self._model(
            None,
            **{Meta.RANKS: dict(self.site_ranks), Meta.LOCAL_EPOCHS: self.local_epochs, Meta.MERGE: self.pending_merge},
        )
        results = self._send(Task.TRAIN, model, list(self.active))
        mismatched = self._verify(results, Task.TRAIN)
        for site in mismatched:
            results.pop(site)
            self.ledger.site(site).update({"accepted": False, "reason": "checksum mismatch: re-synchronised"})
        self._resync(mismatched)
        self.pending_merge = None  # every active site now holds W_{t-1}
        for site, r in results.items():
            rec = self.ledger.site(site)
            rec["rank"] = self.site_ranks.get(site)
            rec["n_cases"] = self.sizes.get(site)
            rec["train_loss"] = self._finite_metric(r, Meta.TRAIN_LOSS)
            n = (r.meta or {}).get(Meta.N_CASES)
            if n != self.sizes.get(site):
                self.warning(
                    f"{site}: |D_c| changed from {self.sizes.get(site)} to {n}; the ranks stay as fixed at init."
                )
        accepted = self._validated_adapters(results, "train")
        if not accepted:
            self.warning(f"round {t}: every adapter was rejected or missing; W stays W_{t - 1} (nothing to merge).")
            self.ledger.current.update({"checksum": self.checksum, "note": "all adapters rejected: W unchanged"})
            self._end_round(t)
            return
        sizes = {s: self.sizes[s] for s in accepted}
        scalings = {s: self.reference.scaling(self.site_ranks[s]) for s in accepted}
        # 2. validate the equal-rating candidate at every site
        cand = rml.candidate_coefficients(sizes)
        val = self._send(
            Task.VALIDATE,
            self._model(self._adapters_down(accepted), **{Meta.COEFFICIENTS: cand, Meta.SCALINGS: scalings}),
            list(self.active),
        )
        current: dict[str, float] = {}
        for site, r in val.items():
            score = self._finite_metric(r, Meta.SCORE)
            if score is None:
                self.warning(f"{site}: `validate` gave no finite score ({(r.metrics or {}).get(Meta.SCORE)!r}).")
                continue
            current[site] = score
        # 3. Eq. 1 and Eq. 2
        ratings = rml.rate_sites(self.scores, current, lam, sites=list(accepted))
        coefficients = rml.merge_coefficients(sizes, ratings)
        degraded = rml.degraded_sites(self.scores, current)
        self.weights = rml.apply_coefficients(self.weights, accepted, scalings, coefficients)
        self.checksum = rml.state_checksum(self.weights)
        for site in set(current) | set(accepted):
            rec = self.ledger.site(site)
            rec["previous_score"] = self.scores.get(site)
            rec["score"] = current.get(site)
            if site in accepted:
                rec["rating"] = ratings[site]
                rec["coefficient"] = coefficients[site]
        self.scores.update(current)
        self.pending_merge = {Meta.ROUND: t, Meta.COEFFICIENTS: coefficients, Meta.SCALINGS: scalings}
        self.ledger.current.update({"checksum": self.checksum, "degraded": degraded})
        self.info(f"round {t}: λ {lam:.4f}, P {current}, degraded {degraded}, w {ratings}, coefficients {coefficients}")
        self._end_round(t)

    def _end_round(self, t: int) -> None:
        self.ledger.current["seconds"] = round(time.monotonic() - self._t0, 3)
        self.save_state("running")
        self._saved_round = t
        if self.persistor is not None:
            self.save_model(FLModel(params=to_numpy(self.weights), meta={"round": t}))
        self._write_outputs()
        self._track_round()

    def _finalize(self) -> dict[str, dict[str, torch.Tensor]]:
        """Merge round T at the sites, personalise, collect the personal adapters."""
        t0 = time.monotonic()
        self.ledger.open(
            {"round": self.round, "lambda": None, "task": "finalize", "checksum": self.checksum, "sites": {}}
        )
        meta = {
            Meta.RANKS: dict(self.site_ranks),
            Meta.LOCAL_EPOCHS: self.personalise_epochs,
            Meta.MERGE: self.pending_merge,
        }
        results = self._send(Task.FINALIZE, self._model(None, **meta), list(self.active))
        mismatched = self._verify(results, Task.FINALIZE)
        if mismatched:
            self._resync(mismatched)
            meta[Meta.MERGE] = None
            results.update(self._send(Task.FINALIZE, self._model(None, **meta), mismatched))
            still = self._verify({s: results[s] for s in mismatched if s in results}, Task.FINALIZE)
            if still:
                raise RuntimeError(f"{still}: W_T differs from the server's after re-synchronisation; stopping.")
        self.pending_merge = None
        for site, r in results.items():
            self.ledger.site(site)["train_loss"] = self._finite_metric(r, Meta.TRAIN_LOSS)
        personal = self._validated_adapters(results, "finalize")
        self.ledger.current["seconds"] = round(time.monotonic() - t0, 3)
        self._write_outputs()
        return personal

    def _cross_eval(self, personal: dict[str, dict[str, torch.Tensor]]) -> None:
        """Every site scores ``W_T`` and every personalised model on its test split."""
        scalings = {s: self.reference.scaling(self.site_ranks[s]) for s in personal}
        t0 = time.monotonic()
        self.ledger.open({"round": self.round, "lambda": None, "task": "cross_eval", "sites": {}})
        results = self._send(
            Task.CROSS_EVAL,
            self._model(self._adapters_down(personal), **{Meta.SCALINGS: scalings}),
            list(self.active),
        )
        models = {site: (r.metrics or {}).get("models") for site, r in results.items()}
        for evaluator in sorted(models):
            if not isinstance(models[evaluator], Mapping):
                self.warning(f"{evaluator}: `cross_eval` gave no `models` table.")
        table = cross_site_table(models)
        self.ledger.current["seconds"] = round(time.monotonic() - t0, 3)
        write_json(table, self.output_dir() / CROSS_EVAL_FILE)
        self.info(f"cross-site evaluation written to {self.output_dir() / CROSS_EVAL_FILE}")
