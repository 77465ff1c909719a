"""What a site does with each task of the protocol, without FLARE (the Client API script drives it).

:class:`SiteRunner` keeps the site's copy of the global weights ``W`` (a plain U-Net state dict),
the adapters it received for the next merge, and answers the tasks listed in
:mod:`cardiolora.fl.protocol`. The work itself (training an adapter — LoRA, or TenVOO tensor cores
for a job with ``adapter: tensor`` — or the full network for the local epochs, scoring a model on a
split) is done by a backend: :class:`BundleBackend` runs the
MONAI bundle's own workflows (``cardiolora.bundle.make_workflow("lora" | "train")``) and
:mod:`cardiolora.evaluation`, so the network, transforms and training loop are the bundle's.
Tests plug in a small backend on a tiny network; the task logic is the same.

The site applies exactly the server's merge (:func:`cardiolora.fl.updates.apply_coefficients` on the
adapters it got in ``validate``; tensor cores become deltas with the bundle's ``tensor_seed``, as
on the server) and returns the checksum of its ``W``, which the server compares with its own.
Adapters travel in the transport dtype the server names in the task meta
(``Meta.TRANSPORT_DTYPE``; float32 if it names none): the site rounds its own adapter to it
before sending it and before building its personalised model from it, and turns what it receives
back into float32 (:func:`cardiolora.fl.protocol.to_transport` / ``from_transport``).

Dual adapters (the ``dual_lora`` job, Med-DualLoRA; ``local_rank > 0``): the site's network holds
a global pair (rank from the server, sent, merged by the server's Eq. 2 into ``W``, reset every
round) and a local pair of rank ``local_rank`` beside it; both train together in every round
(:meth:`BundleBackend.train_dual`). The local pairs never leave: the site saves them after every
training run to ``<output_dir>/local_adapter.pt`` and reloads them from there before the next one,
so they persist across rounds (and across a restart of the site process), and the site's model is
``W_t + ΔW_local``. A new run (``init`` of round 0) starts them afresh; a job that resumes another
job's saved state takes that job's local pairs over (:meth:`SiteRunner.carry_over_local`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cardiolora.atomic import atomic_torch_save, jsonable, write_json
from cardiolora.fl import updates
from cardiolora.fl.job_info import check_folder_name, mark_latest, versions
from cardiolora.fl.protocol import (
    Meta,
    Task,
    from_transport,
    to_torch,
    to_transport,
    unpack_adapters,
)
from cardiolora.fl.seeds import DEFAULT_SEED, check_seed, round_seed
from cardiolora.fl.site_backend import BundleBackend, SiteBackend, check_local_rank
from cardiolora.lora import (
    local_delta_from_state,
)
from cardiolora.lora.state import state_problems

__all__ = ["SiteBackend", "BundleBackend", "SiteRunner", "Reply", "MergeError", "LOCAL_ADAPTER_FILE"]

#: The file (in the site's job output folder) that holds a dual adapter's local pairs between rounds.
LOCAL_ADAPTER_FILE = "local_adapter.pt"

logger = logging.getLogger(__name__)


class MergeError(RuntimeError):
    """The site cannot apply the server's merge (it lacks adapters named in the instruction)."""


@dataclass
class Reply:
    """What a site sends back for one task (becomes an ``FLModel``)."""

    params: dict[str, torch.Tensor] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] | None = None


class SiteRunner:
    """The site's side of the protocol (see :mod:`cardiolora.fl.protocol` for the tasks).

    Args:
        site: the site's name.
        backend: does the training and scoring (:class:`BundleBackend`).
        output_dir: where the site writes ``global_model.pt``, ``personalised_model.pt`` (plain
            merged U-Net weights, loadable by :func:`cardiolora.networks.load_weights`) and
            ``site_summary.json``.
        local_epochs: local epochs per round (from the job).
        profile: run profile (from the job); a task announcing another profile is refused.
        seed: the job seed (from the job); local training in round t is seeded with
            :func:`cardiolora.fl.seeds.round_seed` ``(seed, site, t)``.
        tensor_seed: the bundle's ``tensor_seed`` when the job's adapters are tensor cores (their
            deltas need ``θ0``); None for LoRA.
        local_rank: rank of the local pairs of dual adapters (``dual_lora``); 0 (default): none.
            With local pairs the backend must implement ``train_dual`` and ``local_scalings``.
        job_id: FLARE's job id. When given, `output_dir` is this job's own folder
            (:func:`cardiolora.fl.job_info.job_output_dir`) and ``finalize`` points the ``latest``
            link next to it at it (:func:`cardiolora.fl.job_info.mark_latest`); it is recorded in
            ``site_summary.json``.

    Raises:
        ValueError: if `seed` is not a non-negative int or `local_rank` not an int >= 0.
    """

    def __init__(
        self,
        site: str,
        backend: SiteBackend,
        output_dir: str | Path,
        local_epochs: int,
        profile: str,
        seed: int = DEFAULT_SEED,
        tensor_seed: int | None = None,
        local_rank: int = 0,
        job_id: str | None = None,
    ) -> None:
        self.seed = check_seed(seed)
        self.job_id = job_id
        self.tensor_seed = tensor_seed
        self.local_rank = check_local_rank(local_rank)
        self.site = site
        self.backend = backend
        self.output_dir = Path(output_dir)
        self.local_epochs = int(local_epochs)
        self.profile = profile
        self.weights: dict[str, torch.Tensor] | None = None
        self.rank: int | None = None
        self.received: dict[str, dict[str, torch.Tensor]] = {}
        self.received_round: int | None = None
        self.summary: dict[str, Any] = {"site": site, "job_id": job_id, "seed": self.seed, "rounds": []}

    # ------------------------------------------------------------------ helpers
    def _seed(self, round_index: int) -> int:
        """The torch seed of this site's local training in `round_index` (:func:`round_seed`)."""
        return round_seed(self.seed, self.site, round_index)

    def checksum(self) -> str:
        """SHA-256 of the site's ``W`` (:func:`cardiolora.fl.updates.state_checksum`)."""
        if self.weights is None:
            raise RuntimeError(f"{self.site}: no global weights yet (the `init` task comes first).")
        return updates.state_checksum(self.weights)

    @staticmethod
    def _transport_dtype(meta: Mapping[str, Any]) -> str:
        """The dtype the server wants adapters in (``"float32"`` when the task names none)."""
        return str(meta.get(Meta.TRANSPORT_DTYPE) or "float32")

    def _need_weights(self, task: str) -> dict[str, torch.Tensor]:
        if self.weights is None:
            raise RuntimeError(f"{self.site}: task `{task}` before `init`: the site holds no global weights.")
        return self.weights

    def apply_merge(self, merge: Mapping[str, Any] | None) -> str:
        """Apply the server's Eq. 2 merge to the site's ``W`` with the adapters received in ``validate``.

        Args:
            merge: ``{"round", "coefficients": {site: a}, "scalings": {site: s}}`` or None.

        Returns:
            ``"merged"``, ``"nothing_to_merge"`` or ``"merge_failed: <reason>"`` (the site keeps its ``W``;
            the server sees the checksum differ and re-synchronises it).
        """
        weights = self._need_weights(Task.TRAIN)
        if not merge:
            return "nothing_to_merge"
        coefficients = {s: float(a) for s, a in dict(merge.get(Meta.COEFFICIENTS) or {}).items()}
        scalings = dict(merge.get(Meta.SCALINGS) or {})
        round_index = merge.get(Meta.ROUND)
        needed = [s for s, a in coefficients.items() if a != 0]
        if not needed:
            self.received = {}
            return "nothing_to_merge"
        missing = [s for s in needed if s not in self.received]
        if missing or self.received_round != round_index:
            return (
                f"merge_failed: round {round_index} needs adapters of {missing or needed}; "
                f"this site holds adapters of round {self.received_round} for {sorted(self.received)}"
            )
        try:
            self.weights = updates.apply_coefficients(weights, self.received, scalings, coefficients, self.tensor_seed)
        except ValueError as err:
            return f"merge_failed: {err}"
        self.received = {}
        return "merged"

    def _save(self, weights: Mapping[str, torch.Tensor], name: str) -> Path:
        return atomic_torch_save({k: v.detach().cpu().contiguous() for k, v in weights.items()}, self.output_dir / name)

    def _write_summary(self) -> None:
        write_json(self.summary, self.output_dir / "site_summary.json")

    # ------------------------------------------------------------------ local pairs (dual adapters)
    @property
    def local_path(self) -> Path:
        """``<output_dir>/local_adapter.pt``: the local pairs between two training runs."""
        return self.output_dir / LOCAL_ADAPTER_FILE

    def load_local(self) -> dict[str, torch.Tensor] | None:
        """The saved local pairs, or None before the first training run of this run."""
        if not self.local_path.is_file():
            return None
        return dict(torch.load(self.local_path, map_location="cpu", weights_only=True))

    def carry_over_local(self, previous_job_id: str) -> dict[str, Any]:
        """Copy the local pairs of the job this one resumes into this job's folder (dual adapters).

        A job resubmitted after ``abort_job`` resumes the server's saved state under a new job id,
        so its site folder (``<output_dir>/<job name>/<job id>``) is new; the local pairs the site
        trained in the earlier job are in that job's sibling folder. They are copied (the earlier
        folder stays as it was) as they were after the site's last training run there, which may be
        one round past the server's saved round if the abort came mid-round (``round`` says which,
        from that job's ``site_summary.json``, written after every training run). Pairs that do not
        fit this job's local network (another local rank, a damaged file) are not used.

        Args:
            previous_job_id: the job id the server names in ``init`` (meta ``resumed_from``).

        Returns:
            ``{"job_id", "file", "checksum", "round"}`` when copied, or ``{"job_id", "reason"}`` when
            the site starts new local pairs (no job folders here, an id that is no job folder name,
            no file, or pairs that do not fit).
        """
        record: dict[str, Any] = {"job_id": previous_job_id}
        source = None
        if self.job_id is None:
            record["reason"] = "this site runs outside a job folder (no job id), so there is no earlier job folder"
        elif previous_job_id == self.job_id:
            record["reason"] = "the job resumes its own state (same job id, same folder): it has no local pairs yet"
        else:
            try:
                folder = check_folder_name("resumed_from", previous_job_id)
                source = self.output_dir.parent / folder / LOCAL_ADAPTER_FILE
            except ValueError as err:
                record["reason"] = str(err)
        if source is not None and not source.is_file():
            record["reason"] = f"{source} does not exist (this site trained no local pairs in that job)"
        elif source is not None:
            try:
                local = dict(torch.load(source, map_location="cpu", weights_only=True))
                problems = state_problems(self.backend.local_template(), local)
            except Exception as err:  # noqa: BLE001 - a file that cannot be read is a reason, not a crash
                problems = [f"cannot be read ({type(err).__name__}: {err})"]
            if problems:
                record["reason"] = f"{source} does not fit this job's local pairs: " + "; ".join(problems)
            else:
                self._save(local, LOCAL_ADAPTER_FILE)
                record.update(file=str(source), checksum=updates.state_checksum(local), round=None)
                try:
                    rounds = json.loads((source.parent / "site_summary.json").read_text()).get("rounds") or []
                    record["round"] = next(
                        (r.get("round") for r in reversed(rounds) if r.get("local_out") == record["checksum"]), None
                    )
                except (OSError, ValueError, AttributeError):
                    pass  # the round is information only; the pairs themselves were checked above
                logger.info(f"{self.site}: resuming job {previous_job_id}: its local pairs carried over from {source}")
                return record
        logger.warning(f"{self.site}: resuming job {previous_job_id}: new local pairs ({record['reason']}).")
        return record

    def _train(
        self, weights: Mapping[str, torch.Tensor], rank: int, epochs: int, seed: int
    ) -> tuple[dict, float, dict]:
        """Train this round's adapter; with local pairs, reload them, train both, save them again.

        Returns:
            (adapter to send, mean loss, summary fields: checksums of the local pairs before/after).
        """
        if not self.local_rank:
            adapter, loss = self.backend.train_adapter(weights, rank, epochs, seed)
            return adapter, loss, {}
        local_in = self.load_local()
        adapter, local_out, loss = self.backend.train_dual(weights, rank, local_in, epochs, seed)
        self._save(local_out, LOCAL_ADAPTER_FILE)
        info = {
            "local_in": None if local_in is None else updates.state_checksum(local_in),
            "local_out": updates.state_checksum(local_out),
        }
        return adapter, loss, info

    def with_local(self, weights: Mapping[str, torch.Tensor], rank: int) -> dict[str, torch.Tensor]:
        """``W + ΔW_local`` with the saved local pairs (`weights` itself without local pairs or before any)."""
        local = self.load_local() if self.local_rank else None
        if local is None:
            return dict(weights)
        return updates.apply_delta(weights, local_delta_from_state(local, self.backend.local_scalings(rank)))

    # ------------------------------------------------------------------ tasks
    def handle(self, task: str, params: Mapping[str, Any] | None, meta: Mapping[str, Any] | None) -> Reply:
        """Answer one task.

        Args:
            task: the task name (:class:`cardiolora.fl.protocol.Task`).
            params: the task's tensors (numpy arrays or torch tensors).
            meta: the task's meta.

        Returns:
            The reply.

        Raises:
            ValueError: for an unknown task, or a task announcing another profile than the job's.
            RuntimeError: for a task that needs global weights before ``init``.
        """
        params = dict(params or {})
        meta = dict(meta or {})
        profile = meta.get(Meta.PROFILE)
        if profile is not None and profile != self.profile:
            raise ValueError(
                f"{self.site}: the server runs profile {profile!r} but this site's job says {self.profile!r}."
            )
        handler = {
            Task.INIT: self.on_init,
            Task.TRAIN: self.on_train,
            Task.VALIDATE: self.on_validate,
            Task.SYNC: self.on_sync,
            Task.FINALIZE: self.on_finalize,
            Task.CROSS_EVAL: self.on_cross_eval,
        }.get(task)
        if handler is None:
            raise ValueError(f"{self.site}: unknown task `{task}` (expected one of {list(Task.ALL)}).")
        return handler(params, meta)

    def on_init(self, params: dict, meta: dict) -> Reply:
        """Load the server's ``W`` (``W_0``, or ``W_t`` when the server resumes) and score it: ``P_0^c``.

        With local pairs: a new run (round 0) discards local pairs an earlier run left in the
        output folder; a resumed run (round > 0) keeps them, and a job that resumes the saved state of
        another job (meta ``resumed_from``, a new job folder) takes that job's local pairs over
        (:meth:`carry_over_local`).
        The answer also names the site's job seed and versions (:func:`cardiolora.fl.job_info.versions`)
        for the server's job summary.
        """
        self.weights = to_torch(params)
        self.received = {}
        round_index = int(meta.get(Meta.ROUND) or 0)
        carried: dict[str, Any] = {}
        if self.local_rank and round_index == 0 and self.local_path.is_file():
            logger.info(
                f"{self.site}: a new run: the local adapter of an earlier run ({self.local_path}) is discarded."
            )
            self.local_path.unlink()
        elif self.local_rank and round_index > 0 and not self.local_path.is_file() and meta.get(Meta.RESUMED_FROM):
            carried = {"local_carried_over": self.carry_over_local(str(meta[Meta.RESUMED_FROM]))}
        score = self.backend.score(self.weights, "val")
        n = self.backend.n_cases()
        self.summary["init"] = {"round": meta.get(Meta.ROUND), "score": score, "n_cases": n, **carried}
        reply_meta = {Meta.N_CASES: n, Meta.CHECKSUM: self.checksum(), Meta.SEED: self.seed, Meta.VERSIONS: versions()}
        return Reply(meta=reply_meta, metrics={Meta.SCORE: score})

    def on_train(self, params: dict, meta: dict) -> Reply:
        """Apply the previous round's merge, then train a fresh adapter of this site's rank on ``W_{t-1}``."""
        status = self.apply_merge(meta.get(Meta.MERGE))
        round_index = int(meta.get(Meta.ROUND, 0))
        ranks = dict(meta.get(Meta.RANKS) or {})
        if self.site not in ranks:
            raise ValueError(f"{self.site}: the train task's `ranks` {ranks} names no rank for this site.")
        self.rank = int(ranks[self.site])
        epochs = int(meta.get(Meta.LOCAL_EPOCHS, self.local_epochs))
        adapter, loss, local_info = self._train(
            self._need_weights(Task.TRAIN), self.rank, epochs, self._seed(round_index)
        )
        adapter = to_transport(adapter, self._transport_dtype(meta))  # exactly what the server will see
        self.summary["rounds"].append(
            {"round": round_index, "merge": status, "train_loss": loss, "rank": self.rank, **local_info}
        )
        self._write_summary()  # after every training run: what an aborted job leaves says how far it got
        return Reply(
            params=adapter,
            meta={
                Meta.N_CASES: self.backend.n_cases(),
                Meta.RANK: self.rank,
                Meta.CHECKSUM: self.checksum(),
                Meta.STATUS: status,
            },
            metrics={Meta.TRAIN_LOSS: loss},
        )

    def on_validate(self, params: dict, meta: dict) -> Reply:
        """Score the equal-rating candidate ``W_{t-1} + Σ |D_c| ΔW_c / Σ|D|`` built from the adapters: ``P_t^c``.

        With local pairs the site scores the model it would use, the candidate plus its own local
        pairs (``+ ΔW_local``); the rating (Eq. 1) then weighs the global adapters by that score.
        """
        weights = self._need_weights(Task.VALIDATE)
        adapters = {s: from_transport(a) for s, a in unpack_adapters(params).items()}
        coefficients = {s: float(a) for s, a in dict(meta.get(Meta.COEFFICIENTS) or {}).items()}
        scalings = dict(meta.get(Meta.SCALINGS) or {})
        candidate = updates.apply_coefficients(weights, adapters, scalings, coefficients, self.tensor_seed)
        if self.local_rank and self.rank is not None:
            candidate = self.with_local(candidate, self.rank)
        score = self.backend.score(candidate, "val")
        self.received = adapters
        self.received_round = meta.get(Meta.ROUND)
        if self.summary["rounds"]:
            self.summary["rounds"][-1]["score"] = score
        return Reply(meta={Meta.ROUND: self.received_round}, metrics={Meta.SCORE: score})

    def on_sync(self, params: dict, meta: dict) -> Reply:
        """Replace ``W`` by the server's (after a checksum mismatch)."""
        self.weights = to_torch(params)
        self.received = {}
        return Reply(meta={Meta.CHECKSUM: self.checksum(), Meta.STATUS: "synced"}, metrics={})

    def on_finalize(self, params: dict, meta: dict) -> Reply:
        """Merge the last round (``W_T``), personalise one local epoch, save both models.

        Writes ``global_model.pt`` (``W_T``) and ``personalised_model.pt`` (``W_T + ΔW_c`` of the
        personal adapter, merged) as plain U-Net weights, and returns the personal adapter so the
        other sites can evaluate this site's personalised model (as an adapter relative to ``W_T``).
        With local pairs the personalisation epoch trains the personal global pair and the local
        pairs together, ``personalised_model.pt`` is ``W_T + ΔW_c + ΔW_local`` and only the global
        pair is returned (the other sites evaluate ``W_T + ΔW_c``).
        """
        status = self.apply_merge(meta.get(Meta.MERGE))
        weights = self._need_weights(Task.FINALIZE)
        round_index = int(meta.get(Meta.ROUND, 0))
        rank = int(dict(meta.get(Meta.RANKS) or {}).get(self.site, self.rank or 0))
        if rank < 1:
            raise ValueError(f"{self.site}: the finalize task names no rank for this site.")
        epochs = int(meta.get(Meta.LOCAL_EPOCHS, 1))
        adapter, loss, local_info = self._train(weights, rank, epochs, self._seed(round_index))
        # rounded first: the personalised model is the one the other sites evaluate from the upload
        adapter = to_transport(adapter, self._transport_dtype(meta))
        scaling = self.backend.scalings(rank)
        personal = updates.apply_coefficients(
            weights, {self.site: from_transport(adapter)}, {self.site: scaling}, {self.site: 1.0}, self.tensor_seed
        )
        personal = self.with_local(personal, rank)
        global_path = self._save(weights, "global_model.pt")
        personal_path = self._save(personal, "personalised_model.pt")
        self.personal_weights = personal
        self.summary["final"] = {
            "merge": status,
            "checksum": self.checksum(),
            "personalisation_loss": loss,
            **local_info,
            "global_model": str(global_path),
            "personalised_model": str(personal_path),
        }
        self._write_summary()
        if self.job_id is not None:  # this job's models are now the newest ones
            mark_latest(self.output_dir)
        return Reply(
            params=adapter,
            meta={Meta.CHECKSUM: self.checksum(), Meta.STATUS: status, Meta.RANK: rank},
            metrics={Meta.TRAIN_LOSS: loss},
        )

    def on_cross_eval(self, params: dict, meta: dict) -> Reply:
        """Evaluate ``W_T`` and every site's personalised model ``W_T + ΔW_c`` on this site's test split.

        With local pairs, this site's own model is ``W_T + ΔW_c + ΔW_local`` (its
        ``personalised_model.pt``); the other sites' local pairs never travel, so theirs are ``W_T + ΔW_c``.
        """
        weights = self._need_weights(Task.CROSS_EVAL)
        adapters = {s: from_transport(a) for s, a in unpack_adapters(params).items()}
        scalings = dict(meta.get(Meta.SCALINGS) or {})
        results = {"global": self.backend.evaluate(weights, "test")}
        for owner in sorted(adapters):
            personal = updates.apply_coefficients(
                weights, {owner: adapters[owner]}, scalings, {owner: 1.0}, self.tensor_seed
            )
            if owner == self.site and self.local_rank and self.rank is not None:
                personal = self.with_local(personal, self.rank)
            results[owner] = self.backend.evaluate(personal, "test")
        self.summary["cross_eval"] = results
        self._write_summary()
        return Reply(meta={}, metrics={"models": jsonable(results)})

    def on_fedavg_train(self, params: dict, meta: dict) -> Reply:
        """Full-weight FedAvg (the paper's † baseline): train the whole network from the received ``W``.

        The global model of this baseline is the server's (``global_model.pt`` in its run folder);
        the site keeps a per-round summary only (no personalisation step in this baseline).
        """
        round_index = int(meta.get("current_round", 0) or 0)
        weights = to_torch(params)
        new, loss = self.backend.train_full(weights, self.local_epochs, self._seed(round_index))
        self.weights = new
        self.summary["rounds"].append({"round": round_index, "train_loss": loss})
        self._write_summary()
        return Reply(params=new, meta={Meta.N_CASES: self.backend.n_cases()}, metrics={Meta.TRAIN_LOSS: loss})
