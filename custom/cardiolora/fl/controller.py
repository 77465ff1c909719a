"""The Rate-My-LoRA server workflow for NVIDIA FLARE 2.9 (He et al., arXiv 2501.03223, Alg. 1).

:class:`RateMyLoRAController` is a ``ModelController`` with its own ``run()`` (in FLARE 2.9 the
``aggregate()`` hook of ``FedAvg`` is never called, so the rating cannot live there). This module
only sequences the tasks; the rest lives apart: the mathematics in :mod:`cardiolora.fl.rml` (rating)
and :mod:`cardiolora.fl.updates` (applying it to ``W``); the
exchange with the sites (sending, dropped sites, checksums and re-synchronisation, adapter and
answer checks) in :class:`cardiolora.fl.exchange.SiteExchangeController`; the resumable state in
:mod:`cardiolora.fl.state`; the per-site ledger (bytes, history, TensorBoard scalars,
``rml_history.json`` / ``rml_curves.png``) in :mod:`cardiolora.fl.ledger`; the cross-site table
in :mod:`cardiolora.fl.cross_eval`.

0. ``init`` — send ``W`` (``W_0`` from the persistor, or the persisted ``W_t`` on resume) to every
   site; get ``|D_c|``, ``P_0^c`` and the checksum of the loaded ``W``. Ranks
   ``r_c = rank_for_dataset_size(|D_c|, max |D|)`` are fixed here (and kept on resume).
1. per round ``t``: ``train`` (carries the merge of round ``t-1``: coefficients and scalings,
   no tensor) → each site's adapter, ``|D_c|``, train loss and the checksum of its ``W_{t-1}``.
   A site whose checksum differs is re-synchronised and its adapter is not used this round; a bad
   adapter (:func:`cardiolora.fl.updates.validate_adapter`) is rejected with the reason logged and the
   round goes on without it. If every adapter is rejected, ``W`` stays as it is.
2. ``validate`` — all accepted adapters + equal-rating coefficients ``|D_c|/Σ|D|`` → ``P_t^c``.
3. Eq. 1 (:func:`~cardiolora.fl.rml.rate_sites`) and Eq. 2 on the server's ``W``; the
   coefficients ``w_t(c)|D_c|/Σ|D|`` go to the sites with the next task, which apply the same
   merge to their own copy.
4. ``λ ← 0.95 λ``; the state (round, λ, previous scores, ``W_t``, ranks, sizes, history) is saved
   to ``<state_dir>/<state_name>/state.pt`` and the round's numbers to TensorBoard (FLARE's
   analytics events → ``TBAnalyticsReceiver``), ``rml_history.json`` and ``rml_curves.png``.

After round ``T``: ``finalize`` (merge round ``T``; each site saves ``W_T`` and a personalised
model after one more local epoch, and returns its personal adapter) and ``cross_eval`` (every
site scores ``W_T`` and every personalised model — shipped as adapters relative to ``W_T`` — on its
test split: Dice, VOE, HD, HD95, ASSD), saved as ``cross_site_eval.json`` in the run folder.

A job that stops (too few sites left, a server crash, ``abort_job``) keeps the state of its last
completed round on disk; submitting the job again resumes from it (the log and the job summary name
the job id it continues), unless the job says ``fresh: true`` (``job.py --fresh``): then the saved
state is archived and the run starts from ``W_0``.

What the admin sees: ``job_summary.json`` in the run folder (job id, seed, versions, bytes per site,
last Dice per site, the failed sites and their reasons; :func:`cardiolora.fl.job_info.job_summary`),
rewritten after every round; ``show_stats <job id> server`` in the admin console returns the round in
progress under ``cardiolora`` (:func:`cardiolora.fl.job_info.progress`), and the server's log has
one ``progress {...}`` JSON line per round.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import torch
from nvflare.apis.fl_context import FLContext
from nvflare.app_common.abstract.fl_model import FLModel
from nvflare.widgets.info_collector import GroupInfoCollector, InfoCollector

from cardiolora.atomic import write_json
from cardiolora.fl import job_info, privacy, rml, state, updates
from cardiolora.fl.cross_eval import write_cross_site_table
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
        adapter: the sites' adapter type, ``"lora"`` (default) or ``"tensor"`` (TenVOO cores; the
            server turns them into full-size ``ΔW_c`` with the bundle's ``tensor_seed``, and Eq. 1 /
            Eq. 2 aggregate those unchanged). ``ranks`` are then tensor ranks.
        dp_clip: ``C`` of the sites' DP filter, or None (DP off, the default); with it the history
            records ``ε`` per round and site (:mod:`cardiolora.fl.privacy`).
        dp_noise_multiplier: ``z`` of the sites' DP filter, or None.
        dp_delta: ``δ`` of the reported ``ε``.
        dp_reproducible_noise: the sites' DP noise is seeded from the job seed (reproducible, not
            private against anyone who knows it) instead of OS entropy (the default).
        label: the method's name in the logs, ``rml_history.json`` and the saved state; ``""``
            (default) names it by ``λ_0`` (``rate_my_lora`` / ``fedpetuning``). The ``dual_lora``
            job sets ``dual_lora_size`` / ``dual_lora_rated``: the same controller aggregates the
            sites' global adapters (their local ones never reach it).
        fresh: archive a saved unfinished state instead of resuming it (:func:`cardiolora.fl.state.archive_state`).

        ``min_clients``, ``max_delta_ratio``, ``task_timeout``, ``straggler_grace``, ``state_name``,
        ``persistor_id``, ``transport_dtype``, ``adapter`` and the ``dp_*`` settings go to
        :class:`~cardiolora.fl.exchange.SiteExchangeController`.

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
        "adapter",
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
        max_delta_ratio: float = updates.DEFAULT_MAX_DELTA_RATIO,
        task_timeout: int = 3600,
        straggler_grace: int = 600,
        cross_eval: bool = True,
        state_name: str = "rate_my_lora",
        persistor_id: str = "persistor",
        transport_dtype: str = DEFAULT_TRANSPORT_DTYPE,
        adapter: str = "lora",
        dp_clip: float | None = None,
        dp_noise_multiplier: float | None = None,
        dp_delta: float = privacy.DEFAULT_DELTA,
        dp_reproducible_noise: bool = False,
        label: str = "",
        fresh: bool = False,
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
            adapter=adapter,
            dp_clip=dp_clip,
            dp_noise_multiplier=dp_noise_multiplier,
            dp_delta=dp_delta,
            dp_reproducible_noise=dp_reproducible_noise,
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
        if not isinstance(label, str):
            raise ValueError(f"`label` must be a string, got {label!r}.")
        self.label = label
        if not isinstance(fresh, bool):
            raise ValueError(f"`fresh` must be true or false, got {fresh!r}.")
        self.fresh = fresh
        self.site_info: dict[str, dict] = {}  # {site: {"seed", "versions"}} from `init`
        self.resumed_from: dict | None = None
        # run state (with the exchange's: weights, checksum, round, site ranks, active sites, ledger)
        self.sizes: dict[str, int] = {}
        self.scores: dict[str, float] = {}
        self.pending_merge: dict | None = None

    @property
    def method(self) -> str:
        """The `label`, or ``"rate_my_lora"`` / ``"fedpetuning"`` (λ_0 = 0) without one."""
        return self.label or ("fedpetuning" if self.lambda0 == 0 else "rate_my_lora")

    def _config(self) -> dict:
        """What a saved state must share with this job to be resumed (:func:`cardiolora.fl.state.run_config`)."""
        # load_state compares the fields the saved run recorded: a state saved before jobs named
        # their adapter (a LoRA run) has no `adapter` field and still resumes
        config = state.run_config(self.profile, self.lambda0, self.decay, self.ranks, self.rank_threshold, self.method)
        # a run without DP saves no `dp` field; one with DP also its noise source (a state saved
        # before the source was a setting has no `dp_noise` and still resumes)
        dp = {} if self.dp is None else {"dp": self.dp.record(), "dp_noise": self.dp_noise}
        return {**config, "adapter": self.adapter, **dp}

    def save_state(self, status: str) -> None:
        """Persist round, ``W_t``, sizes, ranks, scores and history (:func:`cardiolora.fl.state.save_state`)."""
        state.save_state(
            self.state_dir(),
            status,
            self._config(),
            self.round,
            self.weights,
            self.checksum,
            self.sizes,
            self.site_ranks,
            self.scores,
            self.ledger.rounds,
            job_id=self.current_job_id(),
        )

    def _header(self) -> dict:
        """The run's description at the top of ``rml_history.json`` and ``job_summary.json``."""
        header = {
            "method": self.method,
            "adapter": self.adapter,
            "profile": self.profile,
            "lambda0": self.lambda0,
            "decay": self.decay,
            "ranks": self.site_ranks,
            "sizes": self.sizes,
        }
        if self.dp is not None:
            header["dp"] = self.dp_summary()
        return header

    def _write_outputs(self, final: bool = False, status: str = "running") -> None:
        """``rml_history.json``, ``rml_curves.png`` (:meth:`cardiolora.fl.ledger.RunLedger.write`) and
        ``job_summary.json`` (:func:`cardiolora.fl.job_info.job_summary`) with `status`."""
        header = self._header()
        self.ledger.write(self.output_dir(), header, f"{self.method} ({self.profile})", final=final, warn=self.warning)
        summary = job_info.job_summary(
            self.current_job_id(),
            self.state_name,
            status,
            header,
            self.ledger.rounds,
            self.site_info,
            self.failures,
            self.resumed_from,
            self._saved_round,
        )
        write_json(summary, self.output_dir() / job_info.SUMMARY_FILE)

    def progress(self) -> dict:
        """The round in progress (:func:`cardiolora.fl.job_info.progress`): what ``show_stats`` returns."""
        return job_info.progress(
            self.current_job_id(),
            self.method,
            self.round,
            self.num_rounds,
            self.ledger.rounds,
            self.active,
            self.failures,
        )

    def handle_event(self, event_type: str, fl_ctx: FLContext) -> None:
        """Add :meth:`progress` under ``cardiolora`` to FLARE's stats (the admin's ``show_stats``)."""
        super().handle_event(event_type, fl_ctx)
        if event_type == InfoCollector.EVENT_TYPE_GET_STATS:
            collector = fl_ctx.get_prop(InfoCollector.CTX_KEY_STATS_COLLECTOR, None)
            if isinstance(collector, GroupInfoCollector):
                try:  # FLARE asks from another thread while the rounds change the records
                    info = self.progress()
                except RuntimeError as err:  # a record changed while it was read: the next call gets it
                    info = {"job_id": self.current_job_id(), "round": self.round, "busy": str(err)}
                collector.add_info(group_name="cardiolora", info=info)

    # ------------------------------------------------------------------ the workflow
    def run(self) -> None:
        try:
            self._run()
        except BaseException as err:
            if self.ledger.rounds:  # what was done so far stays readable (JSON + curves + summary)
                try:
                    self._write_outputs(final=True, status=f"failed: {type(err).__name__}: {err}")
                except Exception as err:
                    self.warning(f"could not write the outputs after the failure: {err}")
            raise

    def _run(self) -> None:
        self.info(
            f"{self.method}: {self.num_rounds} rounds, λ_0 = {self.lambda0}, profile {self.profile}, "
            f"adapter {self.adapter}"
        )
        if self.fresh:
            state.archive_state(self.state_dir(), f"replaced-by-{self.current_job_id()}", log=self.info)
        saved = state.load_state(self.state_dir(), self._config(), log=self.info)
        if saved is None:
            model = self.load_model()
            if model is None or not model.params:
                raise RuntimeError(f"persistor `{self._persistor_id}` gave no initial model W_0.")
            self.weights = to_torch(model.params)
            self.round = 0
        else:
            self.weights, self.round = saved["weights"], int(saved["round"])
            self.sizes, self.site_ranks, self.scores = dict(saved["sizes"]), dict(saved["ranks"]), dict(saved["scores"])
            self.ledger.rounds = list(saved["history"])
            self.resumed_from = {"job_id": saved.get("job_id"), "round": self.round}
            self.warning(
                f"resuming after round {self.round} of job {saved.get('job_id')} from {self.state_dir()} "
                f"(W checksum {saved['checksum'][:12]}); submit the job with fresh: true (job.py --fresh) to "
                "start from W_0 instead"
            )
        self.checksum = updates.state_checksum(self.weights)
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
        self._write_outputs(final=True, status="finished")
        self.info(f"{self.method} finished; outputs in {self.output_dir()}")

    def _init(self, resumed: bool) -> None:
        """Send ``W``; fix the ranks from the dataset sizes; record ``P_0^c``."""
        record = {"round": self.round, "lambda": None, "checksum": self.checksum, "task": "init", "resumed": resumed}
        self.ledger.open({**record, "sites": {}})
        previous = (self.resumed_from or {}).get("job_id")
        resumed_from = {Meta.RESUMED_FROM: str(previous)} if previous else {}  # the sites look for its folder
        results = self._send(Task.INIT, self._model(to_numpy(self.weights), **resumed_from), list(self.active))
        mismatched = self._verify(results, Task.INIT)
        self._resync(mismatched)
        for site, r in results.items():
            meta = r.meta or {}
            self.site_info[site] = {"seed": meta.get(Meta.SEED), "versions": meta.get(Meta.VERSIONS)}
        sizes = self._dataset_sizes(results)
        for site, n in sizes.items():
            score = None if site in mismatched else self._finite_metric(results[site], Meta.SCORE)
            self.ledger.site(site).update({"n_cases": n, "score": score})
            if score is not None and (not resumed or site not in self.scores):
                self.scores[site] = score  # P_0^c (kept from the saved run when resuming)
        self.sizes.update(sizes)
        largest = max(self.sizes.values())
        for site, n in sizes.items():
            if site not in self.site_ranks:  # ranks are fixed once (kept on resume)
                self.site_ranks[site] = rank_for_dataset_size(n, largest, tuple(self.ranks), self.rank_threshold)
            self.ledger.site(site)["rank"] = self.site_ranks[site]
        self.info(f"init: |D| {sizes}, ranks {self.site_ranks}, P {self.scores}")
        self.ledger.close()
        self._write_outputs()
        self._track_round()
        self.info("progress " + json.dumps(self.progress(), default=str))

    def _round(self, t: int) -> None:
        """Train → validate the equal-rating candidate → Eq. 1 and Eq. 2 → save."""
        lam = rml.lambda_at_round(self.lambda0, t, self.decay)
        self.ledger.open({"round": t, "lambda": lam, "sites": {}})
        # 1. train (with the merge of round t-1)
        meta = {Meta.RANKS: dict(self.site_ranks), Meta.LOCAL_EPOCHS: self.local_epochs, Meta.MERGE: self.pending_merge}
        results = self._send(Task.TRAIN, self._model(None, **meta), list(self.active))
        mismatched = self._verify(results, Task.TRAIN)
        for site in mismatched:
            results.pop(site)
            self.ledger.site(site).update({"accepted": False, "reason": "checksum mismatch: re-synchronised"})
        self._resync(mismatched)
        self.pending_merge = None  # every active site now holds W_{t-1}
        for site, r in results.items():
            loss = self._finite_metric(r, Meta.TRAIN_LOSS)
            self.ledger.site(site).update(
                {"rank": self.site_ranks.get(site), "n_cases": self.sizes.get(site), "train_loss": loss}
            )
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
        cand = {Meta.COEFFICIENTS: rml.candidate_coefficients(sizes), Meta.SCALINGS: scalings}
        val = self._send(Task.VALIDATE, self._model(self._adapters_down(accepted), **cand), list(self.active))
        current = self._scores(val, Task.VALIDATE)
        # 3. Eq. 1 and Eq. 2
        ratings = rml.rate_sites(self.scores, current, lam, sites=list(accepted))
        coefficients = rml.merge_coefficients(sizes, ratings)
        degraded = rml.degraded_sites(self.scores, current)
        self.weights = updates.apply_coefficients(self.weights, accepted, scalings, coefficients, self.tensor_seed)
        self.checksum = updates.state_checksum(self.weights)
        self.ledger.record_ratings(self.scores, current, ratings, coefficients)
        self.scores.update(current)
        self.pending_merge = {Meta.ROUND: t, Meta.COEFFICIENTS: coefficients, Meta.SCALINGS: scalings}
        self.ledger.current.update({"checksum": self.checksum, "degraded": degraded})
        self.info(f"round {t}: λ {lam:.4f}, P {current}, degraded {degraded}, w {ratings}, coefficients {coefficients}")
        self._end_round(t)

    def _end_round(self, t: int) -> None:
        self.ledger.close()
        self.save_state("running")
        self._saved_round = t
        if self.persistor is not None:
            self.save_model(FLModel(params=to_numpy(self.weights), meta={"round": t}))
        self._write_outputs()
        self._track_round()
        self.info("progress " + json.dumps(self.progress(), default=str))

    def _finalize(self) -> dict[str, dict[str, torch.Tensor]]:
        """Merge round T at the sites, personalise, collect the personal adapters."""
        self.ledger.open(
            {"round": self.round, "lambda": None, "task": "finalize", "checksum": self.checksum, "sites": {}}
        )
        meta = {Meta.RANKS: dict(self.site_ranks), Meta.LOCAL_EPOCHS: self.personalise_epochs}
        model = self._model(None, **meta, **{Meta.MERGE: self.pending_merge})
        retry = self._model(None, **meta, **{Meta.MERGE: None})  # to a site just sent W_T in full
        results = self._send_in_sync(Task.FINALIZE, model, retry)
        self.pending_merge = None
        for site, r in results.items():
            self.ledger.site(site)["train_loss"] = self._finite_metric(r, Meta.TRAIN_LOSS)
        personal = self._validated_adapters(results, "finalize")
        self.ledger.close()
        self._write_outputs()
        return personal

    def _cross_eval(self, personal: dict[str, dict[str, torch.Tensor]]) -> None:
        """Every site scores ``W_T`` and every personalised model on its test split."""
        scalings = {s: self.reference.scaling(self.site_ranks[s]) for s in personal}
        self.ledger.open({"round": self.round, "lambda": None, "task": "cross_eval", "sites": {}})
        model = self._model(self._adapters_down(personal), **{Meta.SCALINGS: scalings})
        results = self._send(Task.CROSS_EVAL, model, list(self.active))
        models = {site: (r.metrics or {}).get("models") for site, r in results.items()}
        self.ledger.close()
        path = write_cross_site_table(models, self.output_dir(), warn=self.warning)
        self.info(f"cross-site evaluation written to {path}")
