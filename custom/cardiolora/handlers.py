"""Ignite/MONAI event handlers used by the bundle: resumable checkpoints and metric curves."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events

__all__ = ["ResumableCheckpoint", "MetricCurve", "atomic_torch_save"]

logger = logging.getLogger(__name__)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` through a temporary file and a rename, so a crash never leaves half a file.

    Args:
        obj: what to save.
        path: destination (its folder is created).

    Returns:
        The destination path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)
    return path


class ResumableCheckpoint:
    """Save the whole training state every epoch and resume from it when a run restarts.

    On ``STARTED`` it loads ``<ckpt_dir>/<name>`` if it exists (network, optimizer and the
    trainer's epoch/iteration), so an interrupted pretraining continues at the next epoch; on
    every ``EPOCH_COMPLETED`` it saves the state atomically, and at ``COMPLETED`` it also writes
    the plain network weights to `final_path` (what the bundle's inference loads).

    Args:
        ckpt_dir: folder for the checkpoint.
        save_dict: objects with ``state_dict`` / ``load_state_dict`` (``{"model": net, "optimizer": opt}``).
        final_path: where to write the network weights at the end (``None``: do not).
        name: checkpoint file name.
        enabled: ``False`` turns the handler off (used when a FLARE client drives the rounds).

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
    ) -> None:
        if "model" not in save_dict:
            raise ValueError(f"`save_dict` must hold a 'model' entry, got keys {sorted(save_dict)}.")
        self.path = Path(ckpt_dir) / name
        self.save_dict = dict(save_dict)
        self.final_path = Path(final_path) if final_path is not None else None
        self.enabled = enabled

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
        engine.state.epoch = int(state["epoch"])
        engine.state.iteration = int(state["iteration"])
        logger.info("resumed from %s at epoch %d", self.path, engine.state.epoch)

    def save(self, engine: Engine) -> None:
        """Save the training state of the epoch just completed."""
        state = {k: v.state_dict() for k, v in self.save_dict.items()}
        state["epoch"] = engine.state.epoch
        state["iteration"] = engine.state.iteration
        atomic_torch_save(state, self.path)

    def finish(self, engine: Engine) -> None:
        """Write the final network weights."""
        if self.final_path is not None:
            atomic_torch_save(self.save_dict["model"].state_dict(), self.final_path)


class MetricCurve:
    """Record the validation metric and the training loss per epoch; write JSON and a PNG.

    Attach it to the trainer after the ``ValidationHandler`` (handlers of one event run in the
    order they were attached): at every ``EPOCH_COMPLETED`` it reads `metric_name` from the
    evaluator's last run and the trainer's last loss, appends them to ``<output_dir>/<stem>.json``
    (keeping earlier epochs when a run resumes) and redraws ``<output_dir>/<stem>.png``.

    Args:
        output_dir: folder for the files.
        metric_name: the evaluator metric to plot (e.g. ``"val_mean_dice"``).
        evaluator: the validation engine.
        stem: file stem.
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
        if self.json_path.is_file():
            return json.loads(self.json_path.read_text())
        return []

    def record(self, engine: Engine) -> None:
        """Append this epoch's values and redraw the curve."""
        value = self.evaluator.state.metrics.get(self.metric_name)
        row: dict[str, Any] = {
            "epoch": int(engine.state.epoch),
            self.metric_name: None if value is None else float(value),
        }
        out = engine.state.output
        out = out[0] if isinstance(out, list) and out else out
        if isinstance(out, Mapping) and "loss" in out:
            row["train_loss"] = float(out["loss"])
        history = [r for r in self._history() if r["epoch"] != row["epoch"]] + [row]
        self.output_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.json_path.with_name(self.json_path.name + ".tmp")
        tmp.write_text(json.dumps(history, indent=1))
        os.replace(tmp, self.json_path)
        plot_curve(history, self.metric_name, self.png_path)


def plot_curve(history: list[dict], metric_name: str, path: Path) -> None:
    """Draw a metric (and train loss when present) against epochs into `path` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
