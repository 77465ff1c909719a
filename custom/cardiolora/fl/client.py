"""The site script of every cardiolora FLARE job (FLARE 2.9 Client API).

The job runs it in the FLARE client process (``ClientAPIExecutor``, ``in_process``)::

    python client.py --method rml|fedavg --profile quick --local-epochs 1 --job-name rate_my_lora --seed 0 \
        --adapter lora|tensor [--local-rank 16]

Federation hyperparameters (method, profile, local epochs, seed, adapter type) come from the job's
script arguments (``--adapter tensor`` becomes the bundle overrides ``adapter_type: "tensor"`` and
``tensor_rank``; the seed of ``θ0`` is the bundle's ``tensor_seed``; ``--local-rank r_l`` — the
``dual_lora`` job — gives every adapter a local pair of rank ``r_l`` that never leaves the site);
the site's data location and output folder come from the site's own local config
(:func:`cardiolora.fl.site_config.load_site_config`: ``$CARDIOLORA_SITE_CONFIG`` or
``<site workspace>/local/cardiolora_site.json``), so one job folder serves every site. A missing
or invalid config stops the site with an error naming the file and the field.

The loop: ``flare.receive()`` → the task name (``flare.get_task_name()``) → the site's answer from
:class:`cardiolora.fl.site_runner.SiteRunner` (Rate-My-LoRA / FedPETuning tasks) or its full-weight
training (FedAvg's ``train``) → ``flare.send(FLModel(...))``. Network, transforms and training
loop come from the MONAI bundle (:class:`cardiolora.fl.site_backend.BundleBackend`). Another
:class:`~cardiolora.fl.site_runner.SiteRunner` can be given to :func:`main` (``runner_factory``), e.g.
by a wrapper script that a test names as the job's ``task_script_path``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

import nvflare.client as flare
import torch
from nvflare.app_common.abstract.fl_model import FLModel, ParamsType

from cardiolora.fl.job_info import error_reason, job_output_dir
from cardiolora.fl.protocol import ADAPTER_TYPES, Meta, Task
from cardiolora.fl.seeds import DEFAULT_SEED, check_seed
from cardiolora.fl.site_config import load_site_config
from cardiolora.fl.site_runner import BundleBackend, SiteRunner

__all__ = ["main", "build_parser"]

logger = logging.getLogger("cardiolora.fl.client")


def _seed_arg(text: str) -> int:
    """``--seed``: a non-negative int (:func:`cardiolora.fl.seeds.check_seed`).

    Args:
        text: the argument as given.

    Returns:
        The seed.

    Raises:
        argparse.ArgumentTypeError: if `text` is not a non-negative int (the message names `seed`).
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"`seed` must be a non-negative int, got {text!r}.") from None
    try:
        return check_seed(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def build_parser() -> argparse.ArgumentParser:
    """Arguments the job passes to the script.

    Returns:
        The parser (``--method``, ``--profile``, ``--local-epochs``, ``--job-name``, ``--seed``, ``--adapter``,
        ``--local-rank``).
    """
    p = argparse.ArgumentParser(prog="cardiolora-fl-client", description="cardiolora FLARE site script")
    p.add_argument(
        "--method",
        choices=["rml", "fedavg"],
        required=True,
        help="rml: Rate-My-LoRA / FedPETuning task protocol; fedavg: full-weight FedAvg",
    )
    p.add_argument("--profile", required=True, help="run profile of the bundle (quick, paper)")
    p.add_argument("--local-epochs", type=int, required=True, help="local epochs per round")
    p.add_argument(
        "--job-name",
        required=True,
        help="folder of this job in the site's output_dir (<output_dir>/<job name>/<job id>)",
    )
    p.add_argument(
        "--seed",
        type=_seed_arg,
        default=DEFAULT_SEED,
        help=f"job seed: bundle seed and, with site and round, each local run's seed (default {DEFAULT_SEED})",
    )
    p.add_argument(
        "--adapter",
        choices=list(ADAPTER_TYPES),
        default="lora",
        help="adapter type of the rml method: lora (default) or tensor (TenVOO cores; the bundle's adapter_type)",
    )
    p.add_argument(
        "--local-rank",
        type=int,
        default=0,
        help="rank of the local LoRA pairs of dual adapters (dual_lora job; they never leave the site); 0: none",
    )
    return p


def _refuse_tasks(reason: str) -> None:
    """Answer every task of the job with `reason` (``Meta.ERROR``): the server logs it, drops the site
    and writes the reason into the job summary, instead of waiting for a site that never answers."""
    while flare.is_running():
        received = flare.receive()
        if received is None:
            break
        flare.send(FLModel(metrics={}, meta={Meta.ERROR: reason}))


def main(argv: list[str] | None = None, runner_factory: Callable[..., SiteRunner] = SiteRunner) -> None:
    """Run the site until the server ends the job.

    The site's outputs go to ``<output_dir>/<job name>/<job id>/`` (:func:`cardiolora.fl.job_info.job_output_dir`).
    A site that cannot start (no or a bad site config, a missing data folder) or fails at a task of
    the Rate-My-LoRA protocol answers the server with the reason (``Meta.ERROR``) and from then on
    answers every task with it; the server drops it and records the reason.

    Args:
        argv: the script arguments (:func:`build_parser`; default ``sys.argv[1:]``).
        runner_factory: makes the site's runner, called as ``runner_factory(site, backend, output_dir,
            local_epochs, profile, seed=seed, tensor_seed=backend.tensor_seed, job_id=job_id)`` and, with
            ``--local-rank r_l > 0``, ``local_rank=r_l`` too (default :class:`~cardiolora.fl.site_runner.SiteRunner`).

    Raises:
        ValueError: for a task the job's method does not send.
    """
    args = build_parser().parse_args(argv)
    flare.init()
    site = flare.get_site_name()
    job_id = flare.get_job_id()
    dual = {"local_rank": args.local_rank} if args.local_rank else {}  # only the dual_lora job names it
    try:
        cfg = load_site_config(site, required=("dataset_dir", "output_dir"))
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        out = job_output_dir(cfg.output_dir, args.job_name, job_id)
        backend = BundleBackend(cfg, args.profile, out, seed=args.seed, adapter=args.adapter, **dual)
        runner = runner_factory(
            site,
            backend,
            out,
            args.local_epochs,
            args.profile,
            seed=args.seed,
            tensor_seed=backend.tensor_seed,
            job_id=job_id,
            **dual,
        )
    except Exception as err:
        if args.method == "fedavg":  # FLARE's FedAvg has no error answer: the site stops as it always did
            raise
        reason = error_reason(f"{site}: cannot start job {job_id}", err)
        logger.error(reason)
        _refuse_tasks(reason)
        return
    logger.info(
        f"{site}: job {job_id}, config {cfg.path}, data {cfg.dataset_dir}, output {out}, method {args.method}, "
        f"seed {args.seed}, adapter {args.adapter}" + (f", local rank {args.local_rank}" if args.local_rank else "")
    )
    while flare.is_running():
        received = flare.receive()
        if received is None:
            break
        task = flare.get_task_name()
        if args.method == "fedavg":
            if task != Task.TRAIN:
                raise ValueError(f"{site}: the fedavg job sends only `train`, got `{task}`.")
            meta = dict(received.meta or {})
            meta.setdefault("current_round", received.current_round)
            reply = runner.on_fedavg_train(dict(received.params or {}), meta)
        else:
            try:
                reply = runner.handle(task, received.params, received.meta)
            except Exception as err:
                round_index = (received.meta or {}).get(Meta.ROUND)
                reason = error_reason(f"{site}: `{task}` of round {round_index} failed", err)
                logger.exception(reason)
                flare.send(FLModel(metrics={}, meta={Meta.ERROR: reason}))
                _refuse_tasks(reason)
                return
        logger.info(f"{site}: `{task}` done: meta {reply.meta}, metrics {sorted(reply.metrics or {})}")
        # the task's round travels back as the result's `current_round` header (the DP filter's round)
        current = received.current_round
        if reply.params is not None:
            flare.send(
                FLModel(
                    params=reply.params,
                    params_type=ParamsType.FULL,
                    metrics=reply.metrics,
                    meta=reply.meta,
                    current_round=current,
                )
            )
        else:
            flare.send(FLModel(metrics=dict(reply.metrics or {}), meta=reply.meta, current_round=current))


if __name__ == "__main__":
    main(sys.argv[1:])
