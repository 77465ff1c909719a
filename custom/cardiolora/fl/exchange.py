"""The server's side of the task exchange with the sites, under FLARE 2.9's ``ModelController``.

:class:`SiteExchangeController` holds what every task of the protocol (:mod:`cardiolora.fl.protocol`)
needs, whatever the round: it sends a task (with the protocol's meta: profile, round, transport
dtype) to the active sites and collects the answers, counting the bytes both ways in the run's
:class:`~cardiolora.fl.ledger.RunLedger`; it compares the checksum each site returns with the
server's ``W`` and re-synchronises a site that disagrees; it validates adapters against the
reference of the site's rank (:func:`cardiolora.fl.updates.validate_adapter`) and rejects bad ones with
the reason logged. :class:`cardiolora.fl.controller.RateMyLoRAController` drives the rounds with it.

Dropped sites: every task waits until all targets answered, or — once ``min_clients`` answered —
at most ``straggler_grace`` seconds more, and never more than ``task_timeout``. A site that does
not answer (or answers with an error) is dropped for the rest of the job (logged); if fewer than
``min_clients`` sites remain, the job stops — the state of the last completed round is on disk,
and submitting the job again resumes from it.

A site that answers with ``Meta.ERROR`` (it could not start the job, e.g. a missing data folder,
or a task failed there) is dropped the same way; its reason is logged as an error in the server's
log and kept in :attr:`SiteExchangeController.failures` (the job summary lists it).

Checksums: a site whose ``W`` differs from the server's is logged as an error and sent the full
``W`` (``sync``); if its checksum still differs, the job stops (server and sites must hold
identical ``W_t``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from nvflare.apis.analytix import AnalyticsDataType, LogWriterName
from nvflare.apis.utils.analytix_utils import create_analytic_dxo, send_analytic_dxo
from nvflare.app_common.abstract.fl_model import FLModel
from nvflare.app_common.workflows.model_controller import ModelController

from cardiolora.fl import privacy, state, updates
from cardiolora.fl.ledger import RunLedger
from cardiolora.fl.network import AdapterReference
from cardiolora.fl.protocol import (
    DEFAULT_TRANSPORT_DTYPE,
    Meta,
    Task,
    check_adapter_type,
    check_transport_dtype,
    from_transport,
    pack_adapters,
    to_numpy,
    to_transport,
)

__all__ = ["SiteExchangeController"]


class SiteExchangeController(ModelController):
    """Sends the protocol's tasks and checks what comes back; a subclass drives the rounds in ``run()``.

    Args:
        num_rounds: federated rounds ``T`` (≥ 1).
        profile: run profile of the bundle network (must be the sites' profile).
        min_clients: fewer answering sites than this stops the job.
        max_delta_ratio: largest accepted ``||ΔW_k||/||W_k||`` of an adapter.
        task_timeout: seconds a task may take at most (0: no limit).
        straggler_grace: seconds to wait for the remaining sites once ``min_clients`` answered.
        state_name: sub-folder of the state directory (one per job kind); the state directory is
            the server config's ``state_dir`` or ``<server workspace>/cardiolora_state``.
        persistor_id: the component that loads ``W_0`` (:class:`cardiolora.fl.persistor.BundleModelPersistor`).
        transport_dtype: dtype adapters travel in, both ways: ``"float16"`` (default, half the
            bytes) or ``"float32"``. Named to the sites in every task's meta; an adapter that
            arrives in another dtype is rejected. ``W`` itself (``init``, ``sync``) travels in float32.
        adapter: the sites' adapter type: ``"lora"`` (default) or ``"tensor"`` (TenVOO cores,
            turned into full-size deltas with the bundle's ``tensor_seed``).
        dp_clip: ``C`` of the sites' DP filter (:class:`cardiolora.fl.filters.AdapterDPFilter`), or
            None (DP off, the default). The server does not privatise anything itself: with DP on it
            records the ``ε`` each site reports with its adapter and the accountant's ``ε`` of the
            round (:mod:`cardiolora.fl.privacy`).
        dp_noise_multiplier: ``z`` of the sites' DP filter, or None (DP off).
        dp_delta: ``δ`` of the reported ``ε``.
        dp_reproducible_noise: the sites seed their DP noise from the job seed (reproducible runs, not
            private against anyone who knows it) instead of OS entropy (default); an adapter whose
            record names another noise source is rejected, like one with another ``C`` or ``z``.

    Raises:
        ValueError: naming the argument that is out of range.
    """

    def __init__(
        self,
        num_rounds: int = 5,
        profile: str = "quick",
        min_clients: int = 2,
        max_delta_ratio: float = updates.DEFAULT_MAX_DELTA_RATIO,
        task_timeout: int = 3600,
        straggler_grace: int = 600,
        state_name: str = "rate_my_lora",
        persistor_id: str = "persistor",
        transport_dtype: str = DEFAULT_TRANSPORT_DTYPE,
        adapter: str = "lora",
        dp_clip: float | None = None,
        dp_noise_multiplier: float | None = None,
        dp_delta: float = privacy.DEFAULT_DELTA,
        dp_reproducible_noise: bool = False,
    ) -> None:
        super().__init__(persistor_id=persistor_id)
        for name, value, low in (
            ("num_rounds", num_rounds, 1),
            ("min_clients", min_clients, 1),
            ("task_timeout", task_timeout, 0),
            ("straggler_grace", straggler_grace, 0),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"`{name}` must be an int >= {low}, got {value!r}.")
        if not isinstance(max_delta_ratio, (int, float)) or max_delta_ratio <= 0:
            raise ValueError(f"`max_delta_ratio` must be > 0, got {max_delta_ratio!r}.")
        check_transport_dtype(transport_dtype)
        check_adapter_type(adapter)
        if not state_name or os.sep in state_name:
            raise ValueError(f"`state_name` must be a plain folder name, got {state_name!r}.")
        self.num_rounds = num_rounds
        self.profile = profile
        self.min_clients = min_clients
        self.max_delta_ratio = float(max_delta_ratio)
        self.task_timeout = task_timeout
        self.straggler_grace = straggler_grace
        self.state_name = state_name
        self.transport_dtype = transport_dtype
        self.adapter = adapter
        self.dp_clip, self.dp_noise_multiplier, self.dp_delta = dp_clip, dp_noise_multiplier, dp_delta
        #: The job's DP settings (None: off).
        self.dp = privacy.dp_settings(dp_clip, dp_noise_multiplier, dp_delta)
        #: The noise source the sites promise (:func:`cardiolora.fl.privacy.noise_source`).
        self.dp_noise = privacy.noise_source(dp_reproducible_noise)
        self.dp_reproducible_noise = dp_reproducible_noise
        if dp_reproducible_noise and self.dp is None:
            raise ValueError(
                "`dp_reproducible_noise` is an option of DP: give `dp_clip` and `dp_noise_multiplier` too."
            )
        self._dp_summary: dict | None = None
        if self.dp is not None:  # a job with DP names all its settings in its file (a job without names none)
            always = tuple(getattr(type(self), "_always_serialize_args", ()))
            self._always_serialize_args = (
                *always,
                "dp_clip",
                "dp_noise_multiplier",
                "dp_delta",
                "dp_reproducible_noise",
            )
        # run state
        self.weights: dict[str, torch.Tensor] = {}
        self.checksum = ""
        self.round = 0
        self.site_ranks: dict[str, int] = {}
        self.active: list[str] = []
        self.ledger = RunLedger()
        #: ``{site: {"task", "round", "reason"}}`` of the sites that answered with an error.
        self.failures: dict[str, dict] = {}
        self.reference = AdapterReference(profile, adapter)  # expected adapter keys, shapes and scalings per rank
        self.tensor_seed = self.reference.tensor_seed  # the bundle's θ0 seed of tensor adapters (None: LoRA)
        self._saved_round = 0

    # ------------------------------------------------------------------ environment (overridable in tests)
    def server_root(self) -> Path:
        """The server's workspace root."""
        return Path(self.engine.get_workspace().get_root_dir())

    def current_job_id(self) -> str | None:
        """FLARE's id of the running job (None outside a FLARE run)."""
        return self.fl_ctx.get_job_id() if self.fl_ctx is not None else None

    def output_dir(self) -> Path:
        """The job's run folder on the server (history, curves, cross-site tables)."""
        return Path(self.get_run_dir())

    def state_dir(self) -> Path:
        """``<state_dir>/<state_name>`` (:func:`cardiolora.fl.state.state_dir`)."""
        return state.state_dir(self.server_root(), self.state_name)

    def dispatch(self, task: str, model: FLModel, targets: list[str]) -> list[FLModel]:
        """Send `model` as `task` to `targets` and wait (see the module docstring for the waiting rule)."""
        return self.broadcast_model(
            data=model,
            task_name=task,
            targets=targets,
            min_responses=min(self.min_clients, len(targets)),
            timeout=self.task_timeout,
            wait_time_after_min_received=self.straggler_grace,
        )

    def track(self, tag: str, value: float, step: int) -> None:
        """Stream one scalar to TensorBoard through FLARE's analytics events (server-side receiver)."""
        if self.fl_ctx is None or value is None or not math.isfinite(value):
            return
        dxo = create_analytic_dxo(
            tag, float(value), AnalyticsDataType.SCALAR, writer=LogWriterName.TORCH_TB, global_step=int(step)
        )
        send_analytic_dxo(self, dxo, self.fl_ctx)

    # ------------------------------------------------------------------ the exchange
    def _send(self, task: str, model: FLModel, targets: list[str]) -> dict[str, FLModel]:
        """Dispatch, count bytes, drop sites that did not answer; returns ``{site: result}``."""
        targets = [t for t in targets if t in self.active]
        if not targets:
            return {}
        self.ledger.sent(targets, model.params)
        results = self.dispatch(task, model, targets)
        out: dict[str, FLModel] = {}
        for r in results or []:
            site = (r.meta or {}).get("client_name")
            if site not in targets:
                continue
            self.ledger.received(site, r.params)
            reason = (r.meta or {}).get(Meta.ERROR)
            if reason:
                self.error(f"{site} failed at `{task}` (round {self.round}): {reason}")
                self.failures[site] = {"task": task, "round": self.round, "reason": str(reason)}
                self.ledger.site(site)["error"] = str(reason)
                continue
            out[site] = r
        missing = [s for s in targets if s not in out]
        if missing:
            self.warning(
                f"`{task}` (round {self.round}): no valid answer from {missing} (an error, a blocked result or "
                "nothing within the time limits); they are dropped for the rest of the job."
            )
            self.active = [s for s in self.active if s not in missing]
            for s in missing:
                self.ledger.site(s)["dropped"] = task
        if len(self.active) < self.min_clients:
            raise RuntimeError(
                f"only {len(self.active)} site(s) left ({self.active}) after `{task}` of round {self.round}, "
                f"fewer than min_clients = {self.min_clients}: stopping. The state of round "
                f"{self._saved_round} is in {self.state_dir()}; submit the job again to resume."
            )
        return out

    def _model(self, params: Mapping[str, Any] | None = None, **meta: Any) -> FLModel:
        meta = {Meta.PROFILE: self.profile, Meta.ROUND: self.round, Meta.TRANSPORT_DTYPE: self.transport_dtype, **meta}
        return FLModel(params=dict(params or {}), current_round=self.round, total_rounds=self.num_rounds, meta=meta)

    def _adapters_down(self, adapters: Mapping[str, Mapping[str, torch.Tensor]]) -> dict[str, Any]:
        """Accepted adapters packed for a download, in the transport dtype (exact: they arrived in it)."""
        return to_numpy(to_transport(pack_adapters(adapters), self.transport_dtype))

    def _verify(self, results: Mapping[str, FLModel], task: str) -> list[str]:
        """Sites whose returned checksum differs from the server's ``W`` (logged as errors)."""
        bad = []
        for site, r in results.items():
            theirs = (r.meta or {}).get(Meta.CHECKSUM)
            if theirs != self.checksum:
                status = (r.meta or {}).get(Meta.STATUS, "")
                self.error(
                    f"{site}: checksum of its W after `{task}` of round {self.round} is {str(theirs)[:12]}, the "
                    f"server's is {self.checksum[:12]} ({status}); its result is not used and it is re-synchronised."
                )
                self.ledger.site(site)["checksum_ok"] = False
                bad.append(site)
            else:
                self.ledger.site(site)["checksum_ok"] = True
        return bad

    def _resync(self, sites: list[str]) -> None:
        """Send the full ``W`` to `sites`; a checksum that still differs stops the job."""
        if not sites:
            return
        results = self._send(Task.SYNC, self._model(to_numpy(self.weights)), sites)
        still = [s for s, r in results.items() if (r.meta or {}).get(Meta.CHECKSUM) != self.checksum]
        if still:
            raise RuntimeError(
                f"{still}: W still differs from the server's after re-synchronisation in round {self.round}; "
                "stopping (server and sites must hold identical W_t)."
            )
        self.info(f"re-synchronised {sorted(results)} with W (checksum {self.checksum[:12]}).")

    def _send_in_sync(self, task: str, model: FLModel, retry: FLModel) -> dict[str, FLModel]:
        """Send `task` to the active sites; a site whose ``W`` differs is re-synchronised and sent `retry`.

        `retry` is the task without what assumed the site's old ``W`` (the merge). A site whose
        checksum still differs after that stops the job (RuntimeError).
        """
        results = self._send(task, model, list(self.active))
        mismatched = self._verify(results, task)
        if mismatched:
            self._resync(mismatched)
            results.update(self._send(task, retry, mismatched))
            still = self._verify({s: results[s] for s in mismatched if s in results}, task)
            if still:
                raise RuntimeError(f"{still}: W still differs from the server's after re-synchronisation; stopping.")
        return results

    def _dataset_sizes(self, results: Mapping[str, FLModel]) -> dict[str, int]:
        """``{site: |D_c|}`` of the `init` answers; a site without a positive int is logged and dropped.

        Raises:
            RuntimeError: if no site gave its dataset size.
        """
        sizes = {}
        for site, r in results.items():
            n = (r.meta or {}).get(Meta.N_CASES)
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                self.warning(f"{site}: `init` gave |D_c| = {n!r}, expected a positive int; the site is dropped.")
                self.active.remove(site)
                continue
            sizes[site] = n
        if not sizes:
            raise RuntimeError("no site answered `init` with its dataset size.")
        return sizes

    def _scores(self, results: Mapping[str, FLModel], task: str) -> dict[str, float]:
        """``{site: score}`` of the answers with a finite ``score`` metric; the others are logged."""
        scores = {}
        for site, r in results.items():
            score = self._finite_metric(r, Meta.SCORE)
            if score is None:
                self.warning(f"{site}: `{task}` gave no finite score ({(r.metrics or {}).get(Meta.SCORE)!r}).")
                continue
            scores[site] = score
        return scores

    @staticmethod
    def _finite_metric(r: FLModel, key: str) -> float | None:
        value = (r.metrics or {}).get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return None
        return float(value)

    def dp_epsilon(self, steps: int) -> dict | None:
        """The accountant's ``ε`` after `steps` releases of every site (None with DP off).

        Args:
            steps: adapter releases per site so far (``t`` after round ``t``, ``T + 1`` after ``finalize``).

        Returns:
            ``{"steps", "epsilon", "epsilon_replace", "delta"}`` (:func:`cardiolora.fl.privacy.epsilon_after`).
        """
        if self.dp is None:
            return None
        s = self.dp
        return {
            "steps": steps,
            "epsilon": privacy.epsilon_after(steps, s.noise_multiplier, s.delta, s.sample_rate),
            "epsilon_replace": privacy.epsilon_after(steps, s.noise_multiplier, s.delta, s.sample_rate, replace=True),
            "delta": s.delta,
        }

    def dp_summary(self) -> dict | None:
        """The history's ``dp`` (None with DP off): settings, ``ε`` after rounds ``1..T`` and after ``finalize``.

        Returns:
            :meth:`cardiolora.fl.privacy.DPSettings.record` with ``level: "site"``,
            ``epsilon_per_round`` / ``epsilon_replace_per_round`` (after round ``t = 1..T``),
            ``epsilon_final`` / ``epsilon_replace_final`` (``T + 1`` steps), ``unprotected``
            (what the sites send unprivatised, :data:`cardiolora.fl.privacy.UNPROTECTED`) and
            ``noise`` (the sites' noise source the job promises, :func:`cardiolora.fl.privacy.noise_source`).
        """
        if self.dp is None:
            return None
        if self._dp_summary is None:
            per_round = [self.dp_epsilon(t) for t in range(1, self.num_rounds + 2)]
            self._dp_summary = {
                **self.dp.record(),
                "level": "site",
                "epsilon_per_round": [e["epsilon"] for e in per_round[:-1]],
                "epsilon_replace_per_round": [e["epsilon_replace"] for e in per_round[:-1]],
                "epsilon_final": per_round[-1]["epsilon"],
                "epsilon_replace_final": per_round[-1]["epsilon_replace"],
                "unprotected": list(privacy.UNPROTECTED),
                "noise": self.dp_noise,
            }
        return self._dp_summary

    def _record_dp(self, results: Mapping[str, FLModel], stage: str) -> dict[str, str]:
        """With DP on: the round's ``ε`` (accountant) and each site's reported ``dp`` meta into the ledger.

        Returns:
            ``{site: reason}`` of the sites whose adapter came without the job's ``dp`` record (no
            record, or another ``C``, ``z`` or noise source): they are rejected, as the job promises every merged
            adapter was privatised with its settings. Empty with DP off.
        """
        if self.dp is None:
            return {}
        self.ledger.current["dp"] = self.dp_epsilon(self.round + (1 if stage == "finalize" else 0))
        bad = {}
        for site, r in results.items():
            reported = (r.meta or {}).get(Meta.DP)
            reported = dict(reported) if isinstance(reported, Mapping) else None
            self.ledger.site(site)["dp"] = reported
            keys = ("clip", "noise_multiplier", "noise")
            settings = None if reported is None else tuple(reported.get(k) for k in keys)
            if settings != (self.dp.clip, self.dp.noise_multiplier, self.dp_noise):
                bad[site] = (
                    f"{site}: adapter rejected: the job privatises adapters with C = {self.dp.clip}, "
                    f"z = {self.dp.noise_multiplier}, noise from {self.dp_noise}, but its result's `dp` record "
                    f"is {reported!r} (a site without the job's AdapterDPFilter?)."
                )
        return bad

    def _validated_adapters(self, results: Mapping[str, FLModel], stage: str) -> dict[str, dict[str, torch.Tensor]]:
        """Validate each site's adapter against its rank's spec; log and drop the bad ones."""
        undeclared = self._record_dp(results, stage)
        accepted: dict[str, dict[str, torch.Tensor]] = {}
        for site, r in sorted(results.items()):
            rec = self.ledger.site(site)
            rank = self.site_ranks.get(site)
            self.ledger.note_keys(site, (r.params or {}).keys())
            try:
                if site in undeclared:
                    raise ValueError(undeclared[site])
                if rank is None:
                    raise ValueError(f"{site}: no rank assigned (it did not answer `init`).")
                updates.validate_adapter(
                    r.params or {},
                    self.reference.spec(rank),
                    self.weights,
                    self.reference.scaling(rank),
                    self.max_delta_ratio,
                    site=site,
                    rank=rank,
                    dtype=check_transport_dtype(self.transport_dtype),
                    tensor_seed=self.tensor_seed,
                )
            except ValueError as err:
                self.warning(f"{stage} of round {self.round}: {err} The round goes on without it.")
                rec["accepted"] = False
                rec["reason"] = str(err)
                continue
            accepted[site] = from_transport(r.params)
            rec["accepted"] = True
        return accepted

    def _track_round(self) -> None:
        for tag, value, step in self.ledger.scalars():
            self.track(tag, value, step)
