"""Ignite/MONAI event handlers used by the bundle: resumable checkpoints, metric curves, the
learning-rate schedule and the case Dice validation metric (`CaseDice`)."""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from ignite.metrics import Metric

from cardiolora.atomic import atomic_torch_save, write_json
from cardiolora.labels import STRUCTURE_NAMES, STRUCTURES
from cardiolora.plotting import pyplot

__all__ = [
    "ResumableCheckpoint",
    "MetricCurve",
    "LearningRateSchedule",
    "CaseDice",
    "RENAMED_METRICS",
    "SCHEDULES",
    "schedule_factor",
]

logger = logging.getLogger(__name__)


class ResumableCheckpoint:
    """Save the whole training state every epoch and resume from it when a run restarts.

    On ``STARTED`` it loads ``<ckpt_dir>/<name>`` if it exists (network, optimizer and the
    trainer's epoch/iteration), so an interrupted pretraining continues at the next epoch; on
    every ``EPOCH_COMPLETED`` it saves the state atomically, and at ``COMPLETED`` it also writes
    the plain network weights to `final_path` (what the bundle's inference loads). With
    `best_checkpoint` (the validator's MONAI ``CheckpointSaver`` of the best model) the saver's
    best score travels in the checkpoint too, so a resumed run replaces ``model.pt`` only with a
    better one (without it, MONAI's saver starts with no score and the first validation after a
    resume would overwrite the best model).

    Args:
        ckpt_dir: folder for the checkpoint.
        save_dict: objects with ``state_dict`` / ``load_state_dict`` (``{"model": net, "optimizer": opt}``).
        final_path: where to write the network weights at the end (``None``: do not).
        name: checkpoint file name.
        enabled: ``False`` turns the handler off (used when a FLARE client drives the rounds).
        best_checkpoint: the ``CheckpointSaver`` whose key-metric record to save and restore.

    Raises:
        ValueError: if `save_dict` has no ``"model"`` entry.
    """

    def __init__(
        self,
        ckpt_dir: str | os.PathLike,
        save_dict: Mapping[str, Any],
        final_path: str | os.PathLike | None = None,
        name: str = "checkpoint.pt",
        enabled: bool = True,
        best_checkpoint: Any | None = None,
    ) -> None:
        if "model" not in save_dict:
            raise ValueError(f"`save_dict` must hold a 'model' entry, got keys {sorted(save_dict)}.")
        self.path = Path(ckpt_dir) / name
        self.save_dict = dict(save_dict)
        self.final_path = Path(final_path) if final_path is not None else None
        self.enabled = enabled
        # MONAI's CheckpointSaver keeps the best score in an ignite Checkpoint (state_dict: the
        # saved (score, file) list); None when it does not save by key metric
        self.best = getattr(best_checkpoint, "_key_metric_checkpoint", None)
        self.best_dir = Path(getattr(best_checkpoint, "save_dir", ".") or ".")
        # MONAI's disk saver writes every best model under its fixed `key_metric_filename`
        saver = getattr(self.best, "save_handler", None)
        self.best_file = getattr(saver, "filename", None)

    def attach(self, engine: Engine) -> None:
        """Register the handler's events on `engine`."""
        if not self.enabled:
            return
        engine.add_event_handler(Events.STARTED, self.resume)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.save)
        engine.add_event_handler(Events.COMPLETED, self.finish)

    def resume(self, engine: Engine) -> None:
        """Load the checkpoint if one exists and move the engine to its epoch."""
        if not self.path.is_file():
            return
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=False)
        except Exception as err:  # a corrupt checkpoint must not be silently ignored
            raise RuntimeError(f"{self.path}: cannot read the checkpoint to resume from ({err}).") from err
        for key, obj in self.save_dict.items():
            if key not in state:
                raise RuntimeError(f"{self.path}: checkpoint lacks '{key}' (has {sorted(state)}).")
            obj.load_state_dict(state[key])
        if self.best is not None and state.get("best_checkpoint") is not None:
            record = dict(state["best_checkpoint"])
            # a best model that is gone (deleted, or the checkpoint copied elsewhere) is no record
            kept = [
                (score, name)
                for score, name in record.get("_saved", [])
                if (self.best_dir / (self.best_file or name)).is_file()
            ]
            if len(kept) < len(record.get("_saved", [])):
                logger.warning(
                    "%s: the best model named in the checkpoint is missing; the next validation sets it", self.path
                )
            self.best.load_state_dict({**record, "_saved": kept})
        engine.state.epoch = int(state["epoch"])
        engine.state.iteration = int(state["iteration"])
        logger.info("resumed from %s at epoch %d", self.path, engine.state.epoch)

    def save(self, engine: Engine) -> None:
        """Save the training state of the epoch just completed."""
        state = {k: v.state_dict() for k, v in self.save_dict.items()}
        state["epoch"] = engine.state.epoch
        state["iteration"] = engine.state.iteration
        if self.best is not None:
            state["best_checkpoint"] = self.best.state_dict()
        atomic_torch_save(state, self.path)

    def finish(self, engine: Engine) -> None:
        """Write the final network weights."""
        if self.final_path is not None:
            atomic_torch_save(self.save_dict["model"].state_dict(), self.final_path)


#: Old bundle metric names (runs started before "one name per quantity") and the names they
#: have now: the slice Dice (MONAI ``MeanDice`` over 2D slices) and the case Dice
#: (`CaseDice`). `MetricCurve` reads a resumed run's curve under the new name.
RENAMED_METRICS: Mapping[str, str] = {"val_mean_dice": "val_slice_dice", "val_mean_dice_3d": "val_case_dice"}


class MetricCurve:
    """Record the validation metric and the training loss per epoch; write JSON and a PNG.

    Attach it to the trainer after the ``ValidationHandler`` (handlers of one event run in the
    order they were attached): at every ``EPOCH_COMPLETED`` it reads `metric_name` from the
    evaluator's last run and the trainer's last loss, appends them to ``<output_dir>/<stem>.json``
    (keeping earlier epochs when a run resumes) and redraws ``<output_dir>/<stem>.png``. A run
    started under an old metric name (`RENAMED_METRICS`) resumes: its earlier rows are read under
    the new name.

    Args:
        output_dir: folder for the files.
        metric_name: the evaluator metric to plot (e.g. ``"val_slice_dice"``).
        evaluator: the validation engine.
        stem: file stem.

    Raises:
        ValueError: at an epoch whose validation ran without computing `metric_name` (the message
            names the metrics it did compute, and the new name when `metric_name` is an old one).
    """

    def __init__(
        self, output_dir: str | os.PathLike, metric_name: str, evaluator: Engine, stem: str = "val_curve"
    ) -> None:
        self.output_dir = Path(output_dir)
        self.metric_name = metric_name
        self.evaluator = evaluator
        self.json_path = self.output_dir / f"{stem}.json"
        self.png_path = self.output_dir / f"{stem}.png"

    def attach(self, engine: Engine) -> None:
        """Register on the trainer's ``EPOCH_COMPLETED`` event."""
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.record)

    def _history(self) -> list[dict]:
        if not self.json_path.is_file():
            return []
        history = json.loads(self.json_path.read_text())
        old_names = [old for old, new in RENAMED_METRICS.items() if new == self.metric_name]
        renamed = 0
        for row in history:
            for old in old_names:
                if old in row and self.metric_name not in row:
                    row[self.metric_name] = row.pop(old)
                    renamed += 1
        if renamed:
            logger.info(
                "%s: %d epoch(s) recorded under the old name %s are read as %r",
                self.json_path,
                renamed,
                " / ".join(repr(o) for o in old_names),
                self.metric_name,
            )
        return history

    def record(self, engine: Engine) -> None:
        """Append this epoch's values and redraw the curve."""
        metrics = self.evaluator.state.metrics
        if metrics and self.metric_name not in metrics:
            hint = ""
            if self.metric_name in RENAMED_METRICS:
                hint = (
                    f"; {self.metric_name!r} is the old name of {RENAMED_METRICS[self.metric_name]!r}: set "
                    f"`val_key_metric` to {RENAMED_METRICS[self.metric_name]!r}"
                )
            raise ValueError(
                f"the validation computed {sorted(metrics)} but not `metric_name` {self.metric_name!r}{hint}."
            )
        value = metrics.get(self.metric_name)
        row: dict[str, Any] = {
            "epoch": int(engine.state.epoch),
            self.metric_name: None if value is None else float(value),
        }
        out = engine.state.output
        out = out[0] if isinstance(out, list) and out else out
        if isinstance(out, Mapping) and "loss" in out:
            row["train_loss"] = float(out["loss"])
        history = [r for r in self._history() if r["epoch"] != row["epoch"]] + [row]
        write_json(history, self.json_path, indent=1)
        plot_curve(history, self.metric_name, self.png_path)


def plot_curve(history: list[dict], metric_name: str, path: Path) -> None:
    """Draw a metric (and train loss when present) against epochs into `path` (PNG)."""
    plt = pyplot()

    epochs = [r["epoch"] for r in history]
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=100)
    ax.plot(epochs, [r.get(metric_name) for r in history], "o-", label=metric_name)
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric_name)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    if any("train_loss" in r for r in history):
        ax2 = ax.twinx()
        ax2.plot(epochs, [r.get("train_loss") for r in history], "s--", color="tab:orange", label="train loss")
        ax2.set_ylabel("train loss")
    ax.set_title(f"{metric_name} per epoch")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


#: Learning-rate schedules of `LearningRateSchedule` / `schedule_factor`.
SCHEDULES: tuple[str, ...] = ("constant", "cosine", "poly")


def schedule_factor(
    step: int, total: int, schedule: str = "cosine", warmup: int = 0, min_factor: float = 0.0, power: float = 0.9
) -> float:
    """Multiplier of the base learning rate at optimisation step `step` (0-based) of `total`.

    Linear warm-up over the first `warmup` steps, ``f = (step + 1) / warmup``; then, with the
    progress ``p = (step - warmup) / (total - warmup)`` in [0, 1):

    * ``"constant"``: ``f = 1``;
    * ``"cosine"``: ``f = m + (1 - m) · (1 + cos(π p)) / 2`` (Loshchilov & Hutter, SGDR);
    * ``"poly"``: ``f = m + (1 - m) · (1 - p)^power`` (nnU-Net: power 0.9, m = 0);

    with ``m = min_factor``. Steps past `total` keep the last value.

    Args:
        step: the step, >= 0.
        total: number of steps of the whole run, > 0.
        schedule: one of `SCHEDULES`.
        warmup: warm-up steps, in [0, total).
        min_factor: final multiplier m, in [0, 1].
        power: exponent of ``"poly"``, > 0.

    Returns:
        The multiplier in (0, 1].

    Raises:
        ValueError: if an argument is out of its range.

    Example:
        >>> round(schedule_factor(0, 100, "cosine", warmup=10), 3), schedule_factor(10, 100, "cosine", warmup=10)
        (0.1, 1.0)
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"`schedule` must be one of {SCHEDULES}, got {schedule!r}.")
    if total <= 0:
        raise ValueError(f"`total` must be positive, got {total}.")
    if step < 0:
        raise ValueError(f"`step` must be >= 0, got {step}.")
    if not 0 <= warmup < total:
        raise ValueError(f"`warmup` must be in [0, total={total}), got {warmup}.")
    if not 0.0 <= min_factor <= 1.0:
        raise ValueError(f"`min_factor` must be in [0, 1], got {min_factor}.")
    if power <= 0:
        raise ValueError(f"`power` must be positive, got {power}.")
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    p = min(step - warmup, total - warmup - 1) / (total - warmup)
    shape = 0.5 * (1.0 + math.cos(math.pi * p)) if schedule == "cosine" else (1.0 - p) ** power
    return min_factor + (1.0 - min_factor) * shape


class LearningRateSchedule:
    """Set the optimizer's learning rate before every iteration from the trainer's position.

    ``lr = base_lr · schedule_factor(iteration - 1, max_epochs · epoch_length, schedule,
    warmup_epochs · epoch_length, min_factor)`` on ``ITERATION_STARTED``. The rate is a function
    of the trainer's iteration and nothing else, so a resumed run (`ResumableCheckpoint` restores
    the iteration) continues on the same curve with no scheduler state to save. ``"constant"``
    without warm-up attaches nothing (the optimizer's own rate is left alone). A warm-up as long
    as half the run or longer (a short test run) is cut to half the run, with a warning.

    Args:
        optimizer: the optimizer whose parameter groups get the rate.
        base_lr: the peak learning rate (> 0).
        schedule: one of `SCHEDULES`.
        warmup_epochs: epochs of linear warm-up (>= 0).
        min_factor: the final rate as a fraction of `base_lr`, in [0, 1].

    Raises:
        ValueError: if `base_lr`, `schedule`, `warmup_epochs` or `min_factor` is out of range.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        base_lr: float,
        schedule: str = "constant",
        warmup_epochs: float = 0,
        min_factor: float = 0.0,
    ) -> None:
        if not base_lr > 0:
            raise ValueError(f"`base_lr` must be positive, got {base_lr}.")
        if schedule not in SCHEDULES:
            raise ValueError(f"`schedule` must be one of {SCHEDULES}, got {schedule!r}.")
        if warmup_epochs < 0:
            raise ValueError(f"`warmup_epochs` must be >= 0, got {warmup_epochs}.")
        if not 0.0 <= min_factor <= 1.0:
            raise ValueError(f"`min_factor` must be in [0, 1], got {min_factor}.")
        self.optimizer = optimizer
        self.base_lr = float(base_lr)
        self.schedule = schedule
        self.warmup_epochs = warmup_epochs
        self.min_factor = float(min_factor)
        self._warned = False

    def attach(self, engine: Engine) -> None:
        """Register on the trainer's ``ITERATION_STARTED`` (nothing for a constant rate)."""
        if self.schedule == "constant" and self.warmup_epochs == 0:
            return
        engine.add_event_handler(Events.ITERATION_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        """Set the rate of this iteration."""
        length = int(engine.state.epoch_length)
        total = int(engine.state.max_epochs) * length
        warmup = int(round(self.warmup_epochs * length))
        if warmup >= total // 2 and warmup > 0:
            if not self._warned:
                logger.warning(
                    "warm-up of %s epochs is not shorter than half the run (%d epochs): warming up over %d "
                    "iterations instead",
                    self.warmup_epochs,
                    engine.state.max_epochs,
                    total // 2,
                )
                self._warned = True
            warmup = total // 2
        lr = self.base_lr * schedule_factor(engine.state.iteration - 1, total, self.schedule, warmup, self.min_factor)
        for group in self.optimizer.param_groups:
            group["lr"] = lr


class CaseDice(Metric):
    """The case Dice: mean over cases of the mean 3D Dice of LV, MYO and RV, a case's slices pooled.

    The bundle validates slice by slice; MONAI's ``MeanDice`` (the slice Dice, ``val_slice_dice``
    of ``train.json``) then averages 2D Dice over slices, which weighs a basal slice with a sliver
    of myocardium as much as a mid-ventricular one and ignores slices where a structure is absent
    from the truth. This metric sums, for every case (the ``case_id`` of the batch items), the
    overlap ``|P_s ∩ G_s|`` and sizes ``|P_s|``, ``|G_s|`` over its slices and returns

    ``(1/N) Σ_n (1/3) Σ_{s ∈ {LV, MYO, RV}} 2 |P_s ∩ G_s| / (|P_s| + |G_s|)``

    (a structure absent from both prediction and truth of a case counts 1, the policy of
    `cardiolora.metrics`) — the 3D Dice of the challenge, on the grid the network sees (the
    profile's spacing); `cardiolora.evaluation.case_dice` is the same quantity on the original
    grid. The bundle's ``clinical.json`` names it ``val_case_dice``. The mean Dice of each
    structure over the cases is also written to the engine's metrics as ``<name>_LV``,
    ``<name>_MYO`` and ``<name>_RV``.

    It reads the one-hot ``pred`` and ``label`` of the evaluator's (decollated) output and the
    ``case_id`` of its batch, so use it in ``key_val_metric`` of a ``SupervisedEvaluator`` whose
    postprocessing one-hot encodes both (as the bundle's does).

    Args:
        case_key: batch key naming the case of each slice.
        structures: label values scored.
        device: unused (kept for ignite's ``Metric`` signature).

    Raises:
        ValueError: if `structures` is empty.
    """

    def __init__(
        self, case_key: str = "case_id", structures: Sequence[int] = STRUCTURES, device: str | torch.device = "cpu"
    ) -> None:
        if not structures:
            raise ValueError("`structures` must not be empty.")
        self.case_key = case_key
        self.structures = tuple(int(s) for s in structures)
        self._sums: dict[Hashable, torch.Tensor] = {}
        super().__init__(output_transform=lambda x: x, device=device)

    def reset(self) -> None:
        """Forget the cases of the previous run."""
        self._sums = {}

    def update(self, output: tuple[Sequence[Hashable], Sequence[torch.Tensor], Sequence[torch.Tensor]]) -> None:
        """Add slices: ``(case_ids, one-hot preds (C, H, W), one-hot labels (C, H, W))``."""
        cases, preds, labels = output
        for case, pred, label in zip(cases, preds, labels, strict=True):
            p = torch.as_tensor(pred)[list(self.structures)].flatten(1) > 0.5
            g = torch.as_tensor(label)[list(self.structures)].flatten(1) > 0.5
            row = torch.stack([(p & g).sum(1), p.sum(1), g.sum(1)]).to(torch.float64).cpu()
            self._sums[case] = self._sums[case] + row if case in self._sums else row

    def iteration_completed(self, engine: Engine) -> None:
        """Read the case ids from the batch and the one-hot maps from the output of this iteration."""
        batch, output = engine.state.batch, engine.state.output
        if isinstance(output, Mapping):  # not decollated: one dict of batched tensors
            cases = list(batch[self.case_key])
            self.update((cases, list(output["pred"]), list(output["label"])))
            return
        self.update(([b[self.case_key] for b in batch], [o["pred"] for o in output], [o["label"] for o in output]))

    def per_structure(self) -> dict[str, float]:
        """Mean 3D Dice of each structure over the cases seen since the last reset."""
        if not self._sums:
            raise ValueError("CaseDice saw no case: the validation split is empty.")
        rows = torch.stack(list(self._sums.values()))  # (cases, 3, structures)
        inter, size_p, size_g = rows[:, 0], rows[:, 1], rows[:, 2]
        denom = size_p + size_g
        dice = torch.where(denom > 0, 2 * inter / denom.clamp_min(1), torch.ones_like(denom))
        return {STRUCTURE_NAMES.get(s, str(s)): float(v) for s, v in zip(self.structures, dice.mean(0), strict=True)}

    def compute(self) -> float:
        """Mean over cases and structures."""
        return float(sum(self.per_structure().values()) / len(self.structures))

    def completed(self, engine: Engine, name: str) -> None:
        """Store the mean under `name` and each structure under ``<name>_<structure>``."""
        super().completed(engine, name)
        for structure, value in self.per_structure().items():
            engine.state.metrics[f"{name}_{structure}"] = value
