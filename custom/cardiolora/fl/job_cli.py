"""The command line every ``jobs/<name>/job.py`` shares: its parser, the exchange options, export or usage.

A job file builds its parser with :func:`job_parser` (export, rounds, profile, local epochs, minimum
sites, seed), the adapter jobs add :func:`add_exchange_arguments` (task timeout, straggler grace,
transport dtype, ``--fresh``) and their own options, and :func:`export_or_usage` exports the built job
(:func:`cardiolora.fl.jobs.export_job`) or prints what it is (:func:`usage`). The defaults are those of
:mod:`cardiolora.fl.jobs`, written once there.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from nvflare.job_config.api import FedJob

from cardiolora.fl.jobs import (
    DEFAULT_MIN_CLIENTS,
    DEFAULT_PROFILE,
    DEFAULT_ROUNDS,
    DEFAULT_SEED,
    DEFAULT_STRAGGLER_GRACE,
    DEFAULT_TASK_TIMEOUT,
    DEFAULT_TRANSPORT_DTYPE,
    DESCRIPTIONS,
    export_job,
)
from cardiolora.fl.protocol import TRANSPORT_DTYPES
from cardiolora.profiles import PROFILES

__all__ = ["usage", "job_parser", "add_exchange_arguments", "export_or_usage"]


def usage(name: str) -> str:
    """What ``python jobs/<name>/job.py`` prints without ``--export``: the job and how to run it.

    Args:
        name: one of :data:`cardiolora.fl.jobs.JOB_NAMES`.

    Returns:
        The text.
    """
    return (
        f"{name}: {DESCRIPTIONS[name]}\n"
        f"  export:   python jobs/{name}/job.py --export   (submit_job jobs/{name}/exported from the admin console)\n"
        f"  simulate: python -m cardiolora.fl.run --job {name} --sites-root <phantoms>/sites "
        "--pretrained <model.pt> --workdir <dir>"
    )


def job_parser(name: str) -> argparse.ArgumentParser:
    """The command line every ``jobs/<name>/job.py`` shares: export, rounds, profile, epochs, sites, seed.

    Args:
        name: the job (:data:`cardiolora.fl.jobs.JOB_NAMES`).

    Returns:
        The parser with ``--export``, ``--export-dir``, ``--rounds``, ``--profile``, ``--local-epochs``,
        ``--min-clients`` and ``--seed``; a job adds its own options.
    """
    p = argparse.ArgumentParser(prog=f"python jobs/{name}/job.py", description=DESCRIPTIONS[name])
    p.add_argument("--export", action="store_true", help=f"write the job folder jobs/{name}/exported")
    p.add_argument("--export-dir", type=Path, help="write the job folder here instead (implies --export)")
    p.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS, help="federated rounds")
    p.add_argument("--profile", choices=list(PROFILES), default=DEFAULT_PROFILE, help="run profile of the bundle")
    p.add_argument("--local-epochs", type=int, help="local epochs per round (default: the profile's)")
    p.add_argument("--min-clients", type=int, default=DEFAULT_MIN_CLIENTS, help="fewer sites stop the job")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="job seed of the sites' local training")
    return p


def add_exchange_arguments(p: argparse.ArgumentParser, what: str = "the adapters") -> None:
    """The options of the adapter jobs' exchange (:class:`~cardiolora.fl.exchange.SiteExchangeController`).

    Args:
        p: a :func:`job_parser`.
        what: what travels, for the ``--transport-dtype`` help.
    """
    p.add_argument("--task-timeout", type=int, default=DEFAULT_TASK_TIMEOUT, help="seconds a task may take")
    p.add_argument(
        "--straggler-grace",
        type=int,
        default=DEFAULT_STRAGGLER_GRACE,
        help="seconds to wait for the other sites once min_clients answered",
    )
    p.add_argument(
        "--transport-dtype",
        choices=sorted(TRANSPORT_DTYPES),
        default=DEFAULT_TRANSPORT_DTYPE,
        help=f"dtype {what} travel in, both ways (float16: half the bytes of float32)",
    )
    p.add_argument(
        "--fresh",
        action="store_true",
        help="start from W_0 even if an unfinished run of this job left a saved state (it is archived)",
    )


def export_or_usage(job: FedJob, name: str, export: bool, export_dir: Path | None, job_file: str) -> int:
    """What a ``job.py`` does with its job: export it (``--export`` / ``--export-dir``) or say what it is.

    Args:
        job: the built job.
        name: its name.
        export: ``--export`` (to ``exported/`` beside `job_file`).
        export_dir: ``--export-dir`` (implies export), or None.
        job_file: the ``job.py`` path (``__file__``).

    Returns:
        0.
    """
    if export or export_dir:
        dest = export_job(job, export_dir or Path(job_file).resolve().parent / "exported")
        print(f"exported {name} to {dest}; submit it with `submit_job {dest}` from the admin console")
    else:
        print(usage(name))
    return 0
