"""The site's training and scoring through the MONAI bundle: :class:`BundleBackend`.

:class:`SiteBackend` is what :class:`cardiolora.fl.site_runner.SiteRunner` needs of a site (train
an adapter, a dual adapter or the full network; score and evaluate weights); :class:`BundleBackend`
does it with the LoRA bundle's workflows on the site's datalist. A test or a benchmark can give the
runner another backend.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import torch
from ignite.engine import Events

from cardiolora.bundle import make_workflow
from cardiolora.data.dataset import load_datalist
from cardiolora.evaluation import evaluate_records, mean_case_dice
from cardiolora.fl.network import bundle_network, bundle_tensor_seed
from cardiolora.fl.protocol import (
    check_adapter_type,
)
from cardiolora.fl.seeds import DEFAULT_SEED, check_seed
from cardiolora.fl.site_config import SiteConfig
from cardiolora.lora import (
    load_lora_local_state_dict,
    lora_local_scalings,
    lora_local_state_dict,
    lora_scalings,
    lora_state_dict,
    reset_lora,
    reset_lora_local,
    reset_tensor,
    tensor_state_dict,
)
from cardiolora.metrics import aggregate_scores
from cardiolora.networks import load_weights, lora_unet, plain_state_dict

__all__ = ["SiteBackend", "BundleBackend", "check_local_rank"]


class SiteBackend(Protocol):
    """The work a site does on its own data (implemented by :class:`BundleBackend`)."""

    def n_cases(self) -> int:
        """``|D_c|``: training cases."""

    def train_adapter(
        self, weights: Mapping[str, torch.Tensor], rank: int, epochs: int, seed: int
    ) -> tuple[dict, float]:
        """Train a fresh rank-`rank` adapter on top of `weights`; return (adapter state dict, mean loss)."""

    def scalings(self, rank: int) -> dict[str, float]:
        """``{module: alpha / r}`` of the site's adapters at `rank`."""

    def train_dual(
        self,
        weights: Mapping[str, torch.Tensor],
        rank: int,
        local: Mapping[str, torch.Tensor] | None,
        epochs: int,
        seed: int,
    ) -> tuple[dict, dict, float]:
        """Dual adapters only: train a fresh global pair of rank `rank` and the local pairs (from `local`,
        or fresh if None) together on top of `weights`; return (global state, local state, mean loss)."""

    def local_scalings(self, rank: int) -> dict[str, float]:
        """Dual adapters only: ``{module: alpha_l / r_l}`` of the local pairs."""

    def local_template(self) -> dict[str, torch.Tensor]:
        """Dual adapters only: fresh local pairs (the keys and shapes a saved set must have)."""

    def train_full(self, weights: Mapping[str, torch.Tensor], epochs: int, seed: int) -> tuple[dict, float]:
        """Train every weight starting from `weights`; return (plain state dict, mean loss)."""

    def score(self, weights: Mapping[str, torch.Tensor], split: str) -> float:
        """Mean case Dice of the plain network with `weights` on `split` (``P^c``)."""

    def evaluate(self, weights: Mapping[str, torch.Tensor], split: str) -> dict:
        """Dice / VOE / HD / HD95 / ASSD summary (``cardiolora.metrics.aggregate_scores``) on `split`."""


def check_local_rank(local_rank: object, adapter: str = "lora") -> int:
    """The rank of a site's local pairs (dual adapters): an int >= 0, LoRA only.

    Raises:
        ValueError: naming `local_rank` if it is not an int >= 0, or comes with tensor adapters.
    """
    if isinstance(local_rank, bool) or not isinstance(local_rank, int) or local_rank < 0:
        raise ValueError(f"`local_rank` must be an int >= 0 (0: no local adapters), got {local_rank!r}.")
    if local_rank and adapter != "lora":
        raise ValueError(f"`local_rank` {local_rank}: dual (global + local) adapters are LoRA only, not {adapter!r}.")
    return local_rank


def _mean_loss(values: list[float]) -> float:
    return float(sum(values) / len(values)) if values else float("nan")


class BundleBackend:
    """Site work through the MONAI bundle: ``make_workflow("lora")`` / ``make_workflow("train")``.

    Workflows are built once per (kind, rank) and reused every round: the site's ``W`` is loaded
    into the network's base weights, the adapter is reset to identity (LoRA ``B = 0``; tensor
    cores ``θ = θ0``) and the optimizer state cleared, then the trainer runs `epochs` more epochs.
    With ``adapter="tensor"`` the LoRA workflow runs with the bundle overrides
    ``adapter_type: "tensor"`` and ``tensor_rank`` = the site's rank (seed and variant: the bundle's),
    and the site sends the trained cores (:func:`cardiolora.lora.tensor_state_dict`). The bundle's per-epoch
    validation handler is switched off (``val_interval`` beyond any epoch): the federation scores
    models itself with :func:`cardiolora.evaluation.mean_case_dice`.

    Args:
        config: the site's local config (``dataset_dir``, ``output_dir``).
        profile: run profile of the federation (from the job).
        output_dir: where the bundle writes its run files (TensorBoard, loss curve).
        seed: the job seed, the bundle's ``seed`` (``set_determinism`` when a workflow is built; the
            bundle's default is 0, the default job seed). Each run then seeds torch with the seed
            :class:`SiteRunner` passes.
        adapter: ``"lora"`` (default) or ``"tensor"`` (the job's adapter type).
        local_rank: rank of the local pairs of dual adapters (the ``dual_lora`` job; bundle override
            ``lora_local_rank``); 0 (default): plain adapters.

    Raises:
        ValueError: if the config has no ``dataset_dir``, `seed` is not a non-negative int,
            `adapter` is unknown, or `local_rank` is not an int >= 0 or comes with tensor adapters.
    """

    #: An epoch interval no run reaches: the bundle's ValidationHandler never fires.
    NO_VALIDATION = 10**9

    def __init__(
        self,
        config: SiteConfig,
        profile: str,
        output_dir: Path,
        seed: int = DEFAULT_SEED,
        adapter: str = "lora",
        local_rank: int = 0,
    ) -> None:
        if config.dataset_dir is None:
            raise ValueError(f"{config.path}: field `dataset_dir` is required for a site.")
        self.seed = check_seed(seed)
        self.adapter = check_adapter_type(adapter)
        self.local_rank = check_local_rank(local_rank, adapter)
        #: The bundle's ``tensor_seed`` (θ0 of the tensor adapters; never sent), None for LoRA.
        self.tensor_seed = bundle_tensor_seed(profile, adapter)
        self.config = config
        self.profile = profile
        self.output_dir = Path(output_dir)
        self._workflows: dict[tuple[str, int], Any] = {}
        self._plain = None
        self._losses: list[float] = []

    def n_cases(self) -> int:
        return len(load_datalist(self.config.dataset_dir, "train"))

    def _workflow(self, kind: str, rank: int):
        key = (kind, rank)
        if key not in self._workflows:
            name = f"{self.adapter}_r{rank}" + (f"_local{self.local_rank}" if self.local_rank else "")
            run_dir = self.output_dir / "bundle" / (name if kind == "lora" else "full")
            overrides = {
                "dataset_dir": str(self.config.dataset_dir),
                "output_dir": str(run_dir),
                "model_dir": str(run_dir),
                "profile": self.profile,
                "max_epochs": 0,
                "val_interval": self.NO_VALIDATION,
                "resume": False,
                "progress": False,
                "load_pretrain": False,
                "seed": self.seed,
                # a round is a few epochs of a longer run whose length the site does not know: the
                # profile's recipe (loss, optimiser, augmentation) applies, at a constant rate
                "lr_schedule": "constant",
                "warmup_epochs": 0,
            }
            if kind == "lora" and self.adapter == "tensor":
                overrides.update({"adapter_type": "tensor", "tensor_rank": rank})
            elif kind == "lora":
                overrides["lora_rank"] = rank
                if self.local_rank:
                    overrides["lora_local_rank"] = self.local_rank
            wf = make_workflow(kind, overrides)
            wf.initialize()
            wf.trainer.add_event_handler(Events.ITERATION_COMPLETED, self._record_loss)
            self._workflows[key] = wf
        return self._workflows[key]

    def _record_loss(self, engine) -> None:
        out = engine.state.output
        out = out[0] if isinstance(out, list) and out else out
        if isinstance(out, Mapping) and "loss" in out:
            self._losses.append(float(out["loss"]))

    def _run(
        self,
        wf,
        weights: Mapping[str, torch.Tensor],
        epochs: int,
        seed: int,
        adapters: bool,
        local: Mapping[str, torch.Tensor] | None = None,
    ) -> float:
        net = wf.parser.get_parsed_content("network")
        load_weights(net, weights)
        torch.manual_seed(seed)
        if adapters:
            (reset_tensor if self.adapter == "tensor" else reset_lora)(net)  # the global pairs only
            if self.local_rank:  # the local pairs go on from where they were (fresh in a new run)
                if local is None:
                    reset_lora_local(net)
                else:
                    load_lora_local_state_dict(net, local)
        wf.trainer.optimizer.state.clear()
        self._losses = []
        trainer = wf.trainer
        trainer.state.max_epochs = trainer.state.epoch + epochs
        if trainer.state.epoch_length:
            trainer.state.iteration = trainer.state.epoch_length * trainer.state.epoch
        trainer.run()
        return _mean_loss(self._losses)

    def train_adapter(self, weights, rank, epochs, seed):
        wf = self._workflow("lora", rank)
        loss = self._run(wf, weights, epochs, seed, adapters=True)
        net = wf.parser.get_parsed_content("network")
        return (tensor_state_dict(net) if self.adapter == "tensor" else lora_state_dict(net)), loss

    def train_dual(self, weights, rank, local, epochs, seed):
        if not self.local_rank:
            raise ValueError("train_dual needs dual adapters: this backend has local_rank 0.")
        wf = self._workflow("lora", rank)
        loss = self._run(wf, weights, epochs, seed, adapters=True, local=local)
        net = wf.parser.get_parsed_content("network")
        return lora_state_dict(net), lora_local_state_dict(net), loss

    def local_scalings(self, rank):
        return lora_local_scalings(self._workflow("lora", rank).parser.get_parsed_content("network"))

    def local_template(self):
        if not self.local_rank:
            raise ValueError("local_template needs dual adapters: this backend has local_rank 0.")
        # the local pairs do not depend on the global rank: any rank builds the same ones
        return lora_local_state_dict(lora_unet(self.profile, lora_rank=1, local_rank=self.local_rank))

    def scalings(self, rank):
        if self.adapter == "tensor":
            return {}  # ΔW = T(θ) − T(θ0) has no scaling
        return lora_scalings(self._workflow("lora", rank).parser.get_parsed_content("network"))

    def train_full(self, weights, epochs, seed):
        wf = self._workflow("train", 0)
        loss = self._run(wf, weights, epochs, seed, adapters=False)
        return plain_state_dict(wf.parser.get_parsed_content("network")), loss

    def _plain_network(self, weights):
        if self._plain is None:
            self._plain = bundle_network(self.profile, 0)
        load_weights(self._plain, weights)
        self._plain.eval()
        return self._plain

    def score(self, weights, split):
        return mean_case_dice(self._plain_network(weights), load_datalist(self.config.dataset_dir, split), self.profile)

    def evaluate(self, weights, split):
        rows = evaluate_records(
            self._plain_network(weights), load_datalist(self.config.dataset_dir, split), self.profile, distances=True
        )
        return {"n_cases": len(rows), "summary": aggregate_scores([r["scores"] for r in rows])}
