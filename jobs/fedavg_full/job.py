"""Full-weight FedAvg as an NVIDIA FLARE job: the paper's † baseline.

FLARE's own ``FedAvg`` on the whole U-Net, each site's weights averaged with weight |D_c| (its
number of training cases, not FLARE's default step count). It sends full weights both ways by
design, so it has no adapter filter. See jobs/README.md.

    python jobs/fedavg_full/job.py --export                   # writes jobs/fedavg_full/exported
    python jobs/fedavg_full/job.py --export-dir /tmp/fedavg --rounds 10 --profile paper
    python -m cardiolora.fl.run --job fedavg_full ...         # the simulator, with site configs

`build` is also what the package builds for this job (`cardiolora.fl.jobs.build_job`).
"""

from __future__ import annotations

import sys

from nvflare.app_common.workflows.fedavg import FedAvg
from nvflare.job_config.api import FedJob

from cardiolora.fl import job_cli, jobs
from cardiolora.fl.aggregators import DatasetSizeAggregator
from cardiolora.fl.persistor import BundleModelPersistor

NAME = "fedavg_full"


def build(
    num_rounds: int = jobs.DEFAULT_ROUNDS,
    profile: str = jobs.DEFAULT_PROFILE,
    local_epochs: int | None = None,
    n_clients: int = jobs.DEFAULT_N_CLIENTS,
    min_clients: int = jobs.DEFAULT_MIN_CLIENTS,
    seed: int = jobs.DEFAULT_SEED,
) -> FedJob:
    """The FedJob; the arguments are those of :func:`cardiolora.fl.jobs.build_job`."""
    local_epochs = jobs.check_settings(profile, local_epochs, seed)
    job = FedJob(name=NAME, min_clients=min_clients)
    job.set_app_packages(["cardiolora"])  # installed on every participant, never copied into the job

    # server: W_0 (the bundle's network_def + the base model named in the server's local config),
    # FedAvg's rounds with the |D_c|-weighted aggregator
    job.to_server(BundleModelPersistor(profile=profile), id="persistor")
    controller = FedAvg(
        num_clients=n_clients,
        num_rounds=num_rounds,
        persistor_id="persistor",
        aggregator=DatasetSizeAggregator(),
    )
    job.to_server(controller, id="controller")

    # sites: the Client API script (app/custom/client.py) trains the full network at every `train`;
    # no result filter: full weights leave the site by design
    job.to_clients(jobs.site_executor("fedavg", NAME, profile, local_epochs, seed), tasks=["*"])
    job.add_file_to_clients(str(jobs.SITE_SCRIPT))
    return job


def main(argv: list[str] | None = None) -> int:
    """Export the job (``--export`` / ``--export-dir``), or say what it is."""
    p = job_cli.job_parser(NAME)
    p.add_argument("--n-clients", type=int, default=jobs.DEFAULT_N_CLIENTS, help="sites FedAvg samples each round")
    args = p.parse_args(argv)
    job = build(
        num_rounds=args.rounds,
        profile=args.profile,
        local_epochs=args.local_epochs,
        n_clients=args.n_clients,
        min_clients=args.min_clients,
        seed=args.seed,
    )
    return job_cli.export_or_usage(job, NAME, args.export, args.export_dir, __file__)


if __name__ == "__main__":
    sys.exit(main())
