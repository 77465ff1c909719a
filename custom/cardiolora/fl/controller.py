"""The Rate-My-LoRA server workflow for NVIDIA FLARE 2.9 (He et al., arXiv 2501.03223, Alg. 1).

:class:`RateMyLoRAController` is a ``ModelController`` with its own ``run()`` (in FLARE 2.9 the
``aggregate()`` hook of ``FedAvg`` is never called, so the rating cannot live there). The
mathematics is in :mod:`cardiolora.fl.rml`; this module sequences the tasks:

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
   to ``<state_dir>/<state_name>/state.pt`` and the round's numbers to TensorBoard (FLARE's
   analytics events → ``TBAnalyticsReceiver``), ``rml_history.json`` and ``rml_curves.png``.

After round ``T``: ``finalize`` (merge round ``T``; each site saves ``W_T`` and a personalised
model after one more local epoch, and returns its personal adapter) and ``cross_eval`` (every
site scores ``W_T`` and every personalised model — shipped as adapters relative to ``W_T`` — on its
test split: Dice, VOE, HD, HD95, ASSD), saved as ``cross_site_eval.json`` in the run folder.

Dropped sites: every task waits until all targets answered, or — once ``min_clients`` answered —
at most ``straggler_grace`` seconds more, and never more than ``task_timeout``. A site that does
not answer (or answers with an error) is dropped for the rest of the job (logged); if fewer than
``min_clients`` sites remain, the job stops — the state of the last completed round is on disk,
and submitting the job again resumes from it.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from nvflare.app_common.abstract.fl_model import FLModel
from nvflare.app_common.workflows.model_controller import ModelController

from cardiolora.fl import rml
from cardiolora.fl.common import (
    DEFAULT_TRANSPORT_DTYPE,
    Meta,
    Task,
    bundle_network,
    check_transport_dtype,
    from_transport,
    load_site_config,
    pack_adapters,
    payload_bytes,
    to_numpy,
    to_torch,
    to_transport,
)
from cardiolora.fl.history import plot_history, write_json

__all__ = ["RateMyLoRAController", "STATE_VERSION"]

STATE_VERSION = 1


class RateMyLoRAController(ModelController):
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
        state_name: sub-folder of the state directory (one per job kind); the state directory is
            the server config's ``state_dir`` or ``<server workspace>/cardiolora_state``.
        persistor_id: the component that loads ``W_0`` (:class:`cardiolora.fl.persistor.BundleModelPersistor`).
        transport_dtype: dtype adapters travel in, both ways: ``"float16"`` (default, half the
            bytes) or ``"float32"``. Named to the sites in every task's meta; an adapter that
            arrives in another dtype is rejected. ``W`` itself (``init``, ``sync``) travels in float32.

    Raises:
        ValueError: naming the argument that is out of range.
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
        super().__init__(persistor_id=persistor_id)
        for name, value, low in (
            ("num_rounds", num_rounds, 1),
            ("local_epochs", local_epochs, 1),
            ("personalise_epochs", personalise_epochs, 1),
            ("min_clients", min_clients, 1),
            ("task_timeout", task_timeout, 0),
            ("straggler_grace", straggler_grace, 0),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"`{name}` must be an int >= {low}, got {value!r}.")
        rml.lambda_at_round(lambda0, 1, decay)  # validates lambda0 and decay
        ranks = tuple(ranks)
        if len(ranks) != 2 or not all(isinstance(r, int) and not isinstance(r, bool) and r >= 1 for r in ranks):
            raise ValueError(f"`ranks` must be two ints >= 1 (small site, large site), got {ranks!r}.")
        if not 0 < rank_threshold <= 1:
            raise ValueError(f"`rank_threshold` must be in (0, 1], got {rank_threshold!r}.")
        if not isinstance(max_delta_ratio, (int, float)) or max_delta_ratio <= 0:
            raise ValueError(f"`max_delta_ratio` must be > 0, got {max_delta_ratio!r}.")
        check_transport_dtype(transport_dtype)
        if not state_name or os.sep in state_name:
            raise ValueError(f"`state_name` must be a plain folder name, got {state_name!r}.")
        self.num_rounds = num_rounds
        self.lambda0 = float(lambda0)
        self.decay = float(decay)
        self.profile = profile
        self.local_epochs = local_epochs
        self.personalise_epochs = personalise_epochs
        self.ranks = list(ranks)
        self.rank_threshold = float(rank_threshold)
        self.min_clients = min_clients
        self.max_delta_ratio = float(max_delta_ratio)
        self.task_timeout = task_timeout
        self.straggler_grace = straggler_grace
        self.cross_eval = cross_eval
        self.state_name = state_name
        self.transport_dtype = transport_dtype
        # run state
        self.weights: dict[str, torch.Tensor] = {}
        self.checksum = ""
        self.round = 0
        self.sizes: dict[str, int] = {}
        self.site_ranks: dict[str, int] = {}
        self.scores: dict[str, float] = {}
        self.active: list[str] = []
        self.history: list[dict] = []
        self.received_keys: dict[str, list[str]] = {}
        self.pending_merge: dict | None = None
        self._specs: dict[int, dict[str, tuple[int, ...]]] = {}
        self._scalings: dict[int, dict[str, float]] = {}
        self._saved_round = 0
        self._last_plot = time.monotonic()
        self._t0 = time.monotonic()

    # ------------------------------------------------------------------ environment (overridable in tests)
    @property
    def method(self) -> str:
        """``"rate_my_lora"`` or ``"fedpetuning"`` (λ_0 = 0)."""
        return "fedpetuning" if self.lambda0 == 0 else "rate_my_lora"

    def server_root(self) -> Path:
        """The server's workspace root."""
        return Path(self.engine.get_workspace().get_root_dir())

    def output_dir(self) -> Path:
        """The job's run folder on the server (history, curves, cross-site tables)."""
        return Path(self.get_run_dir())

    def state_dir(self) -> Path:
        """``<state_dir>/<state_name>``: the server config's ``state_dir`` or ``<workspace>/cardiolora_state``."""
        root = self.server_root()
        base = root / "cardiolora_state"
        try:
            cfg = load_site_config("server", required=(), workspace=root)
        except FileNotFoundError:
            cfg = None
        if cfg is not None and cfg.state_dir is not None:
            base = cfg.state_dir
        return base / self.state_name

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
        from nvflare.apis.analytix import AnalyticsDataType, LogWriterName
        from nvflare.apis.utils.analytix_utils import create_analytic_dxo, send_analytic_dxo

        dxo = create_analytic_dxo(
            tag, float(value), AnalyticsDataType.SCALAR, writer=LogWriterName.TORCH_TB, global_step=int(step)
        )
        send_analytic_dxo(self, dxo, self.fl_ctx)

    # ------------------------------------------------------------------ references built from the bundle
    def spec(self, rank: int) -> dict[str, tuple[int, ...]]:
        """Expected adapter keys and shapes at `rank` (the bundle's ``network_def`` with adapters)."""
        if rank not in self._specs:
            from cardiolora.lora import lora_scalings

            net = bundle_network(self.profile, rank)
            self._specs[rank] = rml.adapter_spec(net)
            self._scalings[rank] = lora_scalings(net)
        return self._specs[rank]

    def scaling(self, rank: int) -> dict[str, float]:
        """``{module: alpha / r}`` at `rank`."""
        self.spec(rank)
        return self._scalings[rank]

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
        """Persist the server state (atomically) to ``<state_dir>/state.pt``."""
        from cardiolora.handlers import atomic_torch_save

        state = {
            "version": STATE_VERSION,
            "status": status,
            "config": self._fingerprint(),
            "round": self.round,
            "weights": {k: v.clone() for k, v in self.weights.items()},
            "checksum": self.checksum,
            "sizes": dict(self.sizes),
            "ranks": dict(self.site_ranks),
            "scores": dict(self.scores),
            "history": list(self.history),
        }
        path = atomic_torch_save(state, self.state_dir() / "state.pt")
        write_json({k: v for k, v in state.items() if k != "weights"}, self.state_dir() / "state.json")
        return path

    def load_state(self) -> dict | None:
        """The persisted state to resume from, or None (no state, or the last run finished).

        Raises:
            RuntimeError: naming the file and the field if the state belongs to another
                configuration (profile, λ_0, decay, ranks, method) or is corrupt.
        """
        path = self.state_dir() / "state.pt"
        if not path.is_file():
            return None
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise RuntimeError(f"{path}: cannot read the server state to resume from ({err}).") from err
        if state.get("version") != STATE_VERSION:
            raise RuntimeError(f"{path}: state version {state.get('version')} != {STATE_VERSION}.")
        if state.get("status") == "done":
            archived = path.with_name(f"state.done-{time.strftime('%Y%m%d-%H%M%S')}.pt")
            os.replace(path, archived)
            self.info(f"{path}: the previous run finished; archived as {archived.name}, starting afresh.")
            return None
        mine = self._fingerprint()
        for key, value in state.get("config", {}).items():
            if mine.get(key) != value:
                raise RuntimeError(
                    f"{path}: cannot resume: field `{key}` was {value!r} in the saved run but the job says "
                    f"{mine.get(key)!r}. Use another `state_name` or remove the state folder."
                )
        if rml.state_checksum(state["weights"]) != state["checksum"]:
            raise RuntimeError(f"{path}: the saved W_t does not match its checksum; the state is corrupt.")
        return state

    # ------------------------------------------------------------------ helpers
    def _site_record(self, site: str) -> dict:
        rec = self.history[-1]["sites"].setdefault(site, {})
        rec.setdefault("bytes_up", 0)
        rec.setdefault("bytes_down", 0)
        return rec

    def _send(self, task: str, model: FLModel, targets: list[str]) -> dict[str, FLModel]:
        """Dispatch, count bytes, drop sites that did not answer; returns ``{site: result}``."""
        targets = [t for t in targets if t in self.active]
        if not targets:
            return {}
        down = payload_bytes(model.params)
        for site in targets:
            self._site_record(site)["bytes_down"] += down
        results = self.dispatch(task, model, targets)
        out: dict[str, FLModel] = {}
        for r in results or []:
            site = (r.meta or {}).get("client_name")
            if site in targets:
                out[site] = r
                self._site_record(site)["bytes_up"] += payload_bytes(r.params)
        missing = [s for s in targets if s not in out]
        if missing:
            self.warning(
                f"`{task}` (round {self.round}): no valid answer from {missing} (an error, a blocked result or "
                "nothing within the time limits); they are dropped for the rest of the job."
            )
            self.active = [s for s in self.active if s not in missing]
            for s in missing:
                self._site_record(s)["dropped"] = task
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
                self._site_record(site)["checksum_ok"] = False
                bad.append(site)
            else:
                self._site_record(site)["checksum_ok"] = True
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

    @staticmethod
    def _finite_metric(r: FLModel, key: str) -> float | None:
        value = (r.metrics or {}).get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return None
        return float(value)

    def _validated_adapters(self, results: Mapping[str, FLModel], stage: str) -> dict[str, dict[str, torch.Tensor]]:
        """Validate each site's adapter against its rank's spec; log and drop the bad ones."""
        accepted: dict[str, dict[str, torch.Tensor]] = {}
        for site, r in sorted(results.items()):
            rec = self._site_record(site)
            rank = self.site_ranks.get(site)
            self.received_keys.setdefault(site, [])
            self.received_keys[site] = sorted(set(self.received_keys[site]) | set(map(str, (r.params or {}).keys())))
            try:
                if rank is None:
                    raise ValueError(f"{site}: no rank assigned (it did not answer `init`).")
                rml.validate_adapter(
                    r.params or {},
                    self.spec(rank),
                    self.weights,
                    self.scaling(rank),
                    self.max_delta_ratio,
                    site=site,
                    rank=rank,
                    dtype=check_transport_dtype(self.transport_dtype),
                )
            except ValueError as err:
                self.warning(f"{stage} of round {self.round}: {err} The round goes on without it.")
                rec["accepted"] = False
                rec["reason"] = str(err)
                continue
            accepted[site] = from_transport(r.params)
            rec["accepted"] = True
        return accepted

    def _write_outputs(self, final: bool = False) -> None:
        """History JSON every time; the PNG at the end and at most once a minute in between."""
        out = self.output_dir()
        write_json(
            {
                "method": self.method,
                "profile": self.profile,
                "lambda0": self.lambda0,
                "decay": self.decay,
                "ranks": self.site_ranks,
                "sizes": self.sizes,
                "rounds": self.history,
                "received_keys": self.received_keys,
            },
            out / "rml_history.json",
        )
        if not final and time.monotonic() - self._last_plot < 60:
            return
        self._last_plot = time.monotonic()
        try:
            plot_history(self.history, out / "rml_curves.png", title=f"{self.method} ({self.profile})")
        except Exception as err:  # a plot must never stop a federation
            self.warning(f"could not draw {out / 'rml_curves.png'}: {err}")

    def _track_round(self) -> None:
        rec = self.history[-1]
        t = int(rec["round"])
        if rec.get("lambda") is not None:
            self.track("lambda", rec["lambda"], t)
        for site, s in rec["sites"].items():
            for key in ("score", "rating", "coefficient", "train_loss", "bytes_up", "bytes_down"):
                if isinstance(s.get(key), (int, float)):
                    self.track(f"{key}/{site}", s[key], t)

    # ------------------------------------------------------------------ the workflow
    def run(self) -> None:
        try:
            self._run()
        except BaseException:
            if self.history:  # what was done so far stays readable (JSON + curves)
                try:
                    self._write_outputs(final=True)
                except Exception as err:
                    self.warning(f"could not write the outputs after the failure: {err}")
            raise

    def _run(self) -> None:
        self._saved_round = 0
        self.info(f"{self.method}: {self.num_rounds} rounds, λ_0 = {self.lambda0}, profile {self.profile}")
        state = self.load_state()
        if state is None:
            model = self.load_model()
            if model is None or not model.params:
                raise RuntimeError(f"persistor `{self._persistor_id}` gave no initial model W_0.")
            self.weights = to_torch(model.params)
            self.round = 0
        else:
            self.weights = state["weights"]
            self.round = int(state["round"])
            self.sizes = dict(state["sizes"])
            self.site_ranks = dict(state["ranks"])
            self.scores = dict(state["scores"])
            self.history = list(state["history"])
            self.info(
                f"resuming after round {self.round} from {self.state_dir()} (W checksum {state['checksum'][:12]})"
            )
        self.checksum = rml.state_checksum(self.weights)
        self._saved_round = self.round
        self.active = self.sample_clients()
        self._init(resumed=state is not None)
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
        self.history.append(
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
            rec = self._site_record(site)
            rec.update({"n_cases": n, "score": score})
            if score is not None and (not resumed or site not in self.scores):
                self.scores[site] = score  # P_0^c (kept from the saved run when resuming)
        if not sizes:
            raise RuntimeError("no site answered `init` with its dataset size.")
        self.sizes.update(sizes)
        from cardiolora.networks import rank_for_dataset_size

        largest = max(self.sizes.values())
        for site, n in sizes.items():
            if site not in self.site_ranks:  # ranks are fixed once (kept on resume)
                self.site_ranks[site] = rank_for_dataset_size(n, largest, tuple(self.ranks), self.rank_threshold)
            self._site_record(site)["rank"] = self.site_ranks[site]
        self.info(f"init: |D| {sizes}, ranks {self.site_ranks}, P {self.scores}")
        self.history[-1]["seconds"] = round(time.monotonic() - t0, 3)
        self._write_outputs()
        self._track_round()

    def _round(self, t: int) -> None:
        lam = rml.lambda_at_round(self.lambda0, t, self.decay)
        self._t0 = time.monotonic()
        self.history.append({"round": t, "lambda": lam, "sites": {}})
        # 1. train (with the merge of round t-1)
        model = self._model(
            None,
            **{Meta.RANKS: dict(self.site_ranks), Meta.LOCAL_EPOCHS: self.local_epochs, Meta.MERGE: self.pending_merge},
        )
        results = self._send(Task.TRAIN, model, list(self.active))
        mismatched = self._verify(results, Task.TRAIN)
        for site in mismatched:
            results.pop(site)
            self._site_record(site).update({"accepted": False, "reason": "checksum mismatch: re-synchronised"})
        self._resync(mismatched)
        self.pending_merge = None  # every active site now holds W_{t-1}
        for site, r in results.items():
            rec = self._site_record(site)
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
            self.history[-1].update({"checksum": self.checksum, "note": "all adapters rejected: W unchanged"})
            self._end_round(t)
            return
        sizes = {s: self.sizes[s] for s in accepted}
        scalings = {s: self.scaling(self.site_ranks[s]) for s in accepted}
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
            rec = self._site_record(site)
            rec["previous_score"] = self.scores.get(site)
            rec["score"] = current.get(site)
            if site in accepted:
                rec["rating"] = ratings[site]
                rec["coefficient"] = coefficients[site]
        self.scores.update(current)
        self.pending_merge = {Meta.ROUND: t, Meta.COEFFICIENTS: coefficients, Meta.SCALINGS: scalings}
        self.history[-1].update({"checksum": self.checksum, "degraded": degraded})
        self.info(f"round {t}: λ {lam:.4f}, P {current}, degraded {degraded}, w {ratings}, coefficients {coefficients}")
        self._end_round(t)

    def _end_round(self, t: int) -> None:
        self.history[-1]["seconds"] = round(time.monotonic() - self._t0, 3)
        self.save_state("running")
        self._saved_round = t
        if self.persistor is not None:
            self.save_model(FLModel(params=to_numpy(self.weights), meta={"round": t}))
        self._write_outputs()
        self._track_round()

    def _finalize(self) -> dict[str, dict[str, torch.Tensor]]:
        """Merge round T at the sites, personalise, collect the personal adapters."""
        t0 = time.monotonic()
        self.history.append(
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
            self._site_record(site)["train_loss"] = self._finite_metric(r, Meta.TRAIN_LOSS)
        personal = self._validated_adapters(results, "finalize")
        self.history[-1]["seconds"] = round(time.monotonic() - t0, 3)
        self._write_outputs()
        return personal

    def _cross_eval(self, personal: dict[str, dict[str, torch.Tensor]]) -> None:
        """Every site scores ``W_T`` and every personalised model on its test split."""
        scalings = {s: self.scaling(self.site_ranks[s]) for s in personal}
        t0 = time.monotonic()
        self.history.append({"round": self.round, "lambda": None, "task": "cross_eval", "sites": {}})
        results = self._send(
            Task.CROSS_EVAL,
            self._model(self._adapters_down(personal), **{Meta.SCALINGS: scalings}),
            list(self.active),
        )
        table: dict[str, Any] = {"global": {}, "in_client": {}, "cross_client": {}}
        for evaluator, r in sorted(results.items()):
            models = (r.metrics or {}).get("models")
            if not isinstance(models, Mapping):
                self.warning(f"{evaluator}: `cross_eval` gave no `models` table.")
                continue
            for name, entry in models.items():
                if name == "global":
                    table["global"][evaluator] = entry
                elif name == evaluator:
                    table["in_client"][evaluator] = entry
                else:
                    table["cross_client"].setdefault(name, {})[evaluator] = entry
        means: dict[str, dict[str, dict[str, Any]]] = {}
        for evaluator, r in sorted(results.items()):
            for name, entry in ((r.metrics or {}).get("models") or {}).items():
                summary = (entry or {}).get("summary", {}).get("mean", {}) if isinstance(entry, Mapping) else {}
                for metric, stats in summary.items():
                    if isinstance(stats, Mapping):
                        means.setdefault(metric, {}).setdefault(name, {})[evaluator] = stats.get("mean")
        table["mean_over_structures"] = means  # {metric: {model: {evaluator site: mean over LV/MYO/RV}}}
        table["description"] = (
            "global: W_T on each site's test split; in_client: each site's personalised model on its own test "
            "split; cross_client[owner][evaluator]: owner's personalised model (W_T + its personal adapter) on "
            "the evaluator's test split. Each entry: n_cases and summary[structure][metric] = mean/std/n."
        )
        self.history[-1]["seconds"] = round(time.monotonic() - t0, 3)
        write_json(table, self.output_dir() / "cross_site_eval.json")
        self.info(f"cross-site evaluation written to {self.output_dir() / 'cross_site_eval.json'}")
