"""FedJob builders of the three methods; ``jobs/<name>/job.py`` calls :func:`build_job`.

* ``rate_my_lora`` — :class:`~cardiolora.fl.controller.RateMyLoRAController` with ``λ_0 = 0.2``;
* ``fedpetuning`` — the same controller with ``λ_0 = 0`` (size-weighted LoRA averaging);
* ``fedavg_full`` — FLARE's own ``FedAvg`` on the full network, weighted by ``|D_c|``
  (:class:`~cardiolora.fl.aggregators.DatasetSizeAggregator`): the paper's † baseline. It sends
  full weights both ways by design and has no adapter filter.

Every job: the server's ``persistor`` builds the bundle's ``network_def`` for the profile and loads
``W_0`` from the server's local config; every site runs :mod:`cardiolora.fl.client` (copied into
the job's ``custom/`` folder; it imports the installed ``cardiolora`` package, which is not copied —
``app_packages``). Hyperparameters appear once: profile, rounds, local epochs and the job seed are
arguments here, network numbers live in :mod:`cardiolora.profiles`, read through the bundle. The
seed reaches every site as the script argument ``--seed`` (see :func:`cardiolora.fl.seeds.round_seed`).
The LoRA jobs' ``transport_dtype`` (float16 by default) is an argument of the server's controller,
which names it to the sites in every task (:mod:`cardiolora.fl.protocol`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from nvflare.app_common.executors.client_api_executor import ClientAPIExecutor
from nvflare.app_common.workflows.fedavg import FedAvg
from nvflare.app_opt.tracking.tb.tb_receiver import TBAnalyticsReceiver
from nvflare.client.config import ExchangeFormat
from nvflare.job_config.api import FedJob
from nvflare.job_config.defs import FilterType

from cardiolora.fl import rml
from cardiolora.fl.aggregators import DatasetSizeAggregator
from cardiolora.fl.controller import RateMyLoRAController
from cardiolora.fl.filters import AdapterOnlyFilter
from cardiolora.fl.network import bundle_network
from cardiolora.fl.persistor import BundleModelPersistor
from cardiolora.fl.protocol import DEFAULT_TRANSPORT_DTYPE, TRANSPORT_DTYPES, Task, check_transport_dtype
from cardiolora.fl.seeds import DEFAULT_SEED, check_seed
from cardiolora.profiles import get_profile

__all__ = ["JOB_NAMES", "LAMBDA0", "DEFAULT_ROUNDS", "build_job", "export_job", "job_main", "CLIENT_SCRIPT"]

#: The methods, one job folder each.
JOB_NAMES = ("rate_my_lora", "fedpetuning", "fedavg_full")
#: λ_0 of the LoRA jobs.
LAMBDA0 = {"rate_my_lora": rml.DEFAULT_LAMBDA0, "fedpetuning": 0.0}
#: The site script, by its path inside the job's custom/ folder.
CLIENT_SCRIPT = "cardiolora/fl/client.py"


def build_job(
    name: str,
    num_rounds: int = 5,
    profile: str = "quick",
    local_epochs: int | None = None,
    n_clients: int = 3,
    min_clients: int = 2,
    task_timeout: int = 3600,
    straggler_grace: int = 600,
    ranks: tuple[int, int] = (16, 32),
    seed: int = DEFAULT_SEED,
    transport_dtype: str = DEFAULT_TRANSPORT_DTYPE,
) -> FedJob:
    """Build the FedJob of one method.

    Args:
        name: one of :data:`JOB_NAMES`.
        num_rounds: federated rounds.
        profile: run profile (the bundle's network and training settings for it).
        local_epochs: local epochs per round (default: the profile's ``local_epochs``).
        n_clients: sites FedAvg samples each round (``fedavg_full``).
        min_clients: fewer sites than this stop the job (also the job's deployment minimum).
        task_timeout: seconds a task may take at most.
        straggler_grace: seconds to wait for the remaining sites once ``min_clients`` answered.
        ranks: (small-site rank, large-site rank).
        seed: job seed (non-negative int), passed to every site's script as ``--seed``: the bundle
            seed of the site's workflows and, with site and round, the seed of each local run
            (:func:`cardiolora.fl.seeds.round_seed`; 0 gives the seeds of the runs made before jobs had one).
        transport_dtype: dtype the LoRA jobs' adapters travel in, ``"float16"`` (default) or
            ``"float32"``; ``fedavg_full`` ships full float32 weights and ignores it.

    Returns:
        The job (export it with :func:`export_job` or run ``job.simulator_run``).

    Raises:
        ValueError: for an unknown `name` or profile, a profile whose network the bundle cannot build,
            a `seed` that is not a non-negative int, or an unknown `transport_dtype`.
    """
    if name not in JOB_NAMES:
        raise ValueError(f"`name` must be one of {list(JOB_NAMES)}, got {name!r}.")
    seed = check_seed(seed)
    check_transport_dtype(transport_dtype)
    prof = get_profile(profile)
    local_epochs = int(local_epochs or prof.local_epochs)
    bundle_network(profile, 0)  # fail fast: the bundle's network_def builds for this profile
    job = FedJob(name=name, min_clients=min_clients)
    job.set_app_packages(["cardiolora"])
    job.to_server(BundleModelPersistor(profile=profile), id="persistor")
    method = "fedavg" if name == "fedavg_full" else "rml"
    if method == "rml":
        job.to_server(
            RateMyLoRAController(
                num_rounds=num_rounds,
                lambda0=LAMBDA0[name],
                profile=profile,
                local_epochs=local_epochs,
                ranks=tuple(ranks),
                min_clients=min_clients,
                task_timeout=task_timeout,
                straggler_grace=straggler_grace,
                state_name=name,
                transport_dtype=transport_dtype,
            ),
            id="controller",
        )
        job.to_server(TBAnalyticsReceiver(tb_folder="tb_events"), id="tb_receiver")
    else:
        job.to_server(
            FedAvg(
                num_clients=n_clients,
                num_rounds=num_rounds,
                persistor_id="persistor",
                aggregator=DatasetSizeAggregator(),
            ),
            id="controller",
        )
    executor = ClientAPIExecutor(
        execution_mode="in_process",
        task_script_path=CLIENT_SCRIPT,
        task_script_args=(
            f"--method {method} --profile {profile} --local-epochs {local_epochs} --job-name {name} --seed {seed}"
        ),
        params_exchange_format=ExchangeFormat.PYTORCH,
        server_expected_format=ExchangeFormat.NUMPY,
    )
    job.to_clients(executor, tasks=["*"])
    job.to_clients(str(Path(__file__).with_name("client.py")))
    if method == "rml":
        # every task by name: FLARE 2.9 keys result filters by exact task name ("*" would match none)
        job.to_clients(AdapterOnlyFilter(), tasks=list(Task.ALL), filter_type=FilterType.TASK_RESULT)
    return job


def export_job(job: FedJob, dest: str | os.PathLike) -> Path:
    """Export `job` so that `dest` itself is the job folder (``meta.json`` + ``app/``).

    The folder is replaced as a whole, so nothing hand-edited survives an export.

    Args:
        job: the FedJob.
        dest: the job folder to write (e.g. ``jobs/rate_my_lora/exported``).

    Returns:
        `dest` as a Path.
    """
    dest = Path(dest)
    with tempfile.TemporaryDirectory() as tmp:
        job.export_job(tmp)
        src = Path(tmp) / job.name
        for config in src.glob("*/config/config_fed_*.json"):
            _sort_filter_tasks(config)
        if dest.exists():
            shutil.rmtree(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(src, dest)
    return dest


def _sort_filter_tasks(path: Path) -> None:
    """FLARE keeps a filter's task names in a set (order varies run to run): sort them, so exports are reproducible."""
    import json

    config = json.loads(path.read_text())
    for key in ("task_result_filters", "task_data_filters"):
        for chain in config.get(key, []):
            chain["tasks"] = sorted(chain["tasks"])
    path.write_text(json.dumps(config, indent=4))


#: Rounds written into the committed job folders (the embedded phantom demo; pass --rounds for more).
DEFAULT_ROUNDS = 3

_DESCRIPTIONS = {
    "rate_my_lora": "Rate-My-LoRA (λ_0 = 0.2): adapters of rank 16/32 by site size, rated (Eq. 1), merged (Eq. 2)",
    "fedpetuning": "FedPETuning: the same protocol with λ_0 = 0 (size-weighted LoRA averaging)",
    "fedavg_full": "full-weight FedAvg weighted by |D_c| (the paper's † baseline; sends full weights)",
}


def job_main(name: str, argv: list[str] | None = None, job_dir: str | os.PathLike | None = None) -> int:
    """The command line of ``jobs/<name>/job.py``.

    ``python jobs/<name>/job.py --export`` writes ``jobs/<name>/exported/`` (what ``submit_job``
    takes); ``--out DIR`` exports elsewhere; ``--rounds`` / ``--profile`` / ``--local-epochs`` /
    ``--min-clients`` / ``--seed`` / ``--transport-dtype`` (LoRA jobs) change the federation's
    hyperparameters. Without ``--export`` it prints what
    the job is and how to run it.

    Args:
        name: the job name.
        argv: arguments (default ``sys.argv[1:]``).
        job_dir: the ``jobs/<name>`` folder (default: ``<project>/jobs/<name>``).

    Returns:
        The exit code.
    """
    import argparse

    from cardiolora.paths import project_root

    job_dir = Path(job_dir) if job_dir is not None else project_root() / "jobs" / name
    p = argparse.ArgumentParser(prog=f"python jobs/{name}/job.py", description=_DESCRIPTIONS[name])
    p.add_argument("--export", action="store_true", help=f"write the job folder ({job_dir / 'exported'})")
    p.add_argument("--out", help="export to this folder instead")
    p.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS)
    p.add_argument("--profile", default="quick")
    p.add_argument("--local-epochs", type=int)
    p.add_argument("--min-clients", type=int, default=2)
    p.add_argument("--task-timeout", type=int, default=3600, help="seconds a task may take at most")
    p.add_argument(
        "--straggler-grace", type=int, default=600, help="seconds to wait for the other sites once min_clients answered"
    )
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="job seed of the sites' local training")
    if name != "fedavg_full":
        p.add_argument(
            "--transport-dtype",
            choices=sorted(TRANSPORT_DTYPES),
            default=DEFAULT_TRANSPORT_DTYPE,
            help=f"dtype the adapters travel in, both ways (default {DEFAULT_TRANSPORT_DTYPE}: half of float32)",
        )
    args = p.parse_args(argv)
    job = build_job(
        name,
        num_rounds=args.rounds,
        profile=args.profile,
        local_epochs=args.local_epochs,
        min_clients=args.min_clients,
        task_timeout=args.task_timeout,
        straggler_grace=args.straggler_grace,
        seed=args.seed,
        transport_dtype=getattr(args, "transport_dtype", DEFAULT_TRANSPORT_DTYPE),
    )
    if args.export or args.out:
        dest = export_job(job, args.out or job_dir / "exported")
        print(f"exported {name} to {dest}; submit it with `submit_job {dest}` from the admin console")
    else:
        print(
            f"{name}: {_DESCRIPTIONS[name]}\n  export: python jobs/{name}/job.py --export\n"
            f"  simulate: python -m cardiolora.fl.run --job {name} --sites-root <phantoms>/sites "
            "--pretrained <model.pt> --workdir <dir>"
        )
    return 0
