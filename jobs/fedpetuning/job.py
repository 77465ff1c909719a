"""FedPETuning as an NVIDIA FLARE job: the Rate-My-LoRA protocol with λ_0 = 0.

The same sites, adapters (rank 16 on the half-size site, 32 on the others), tasks, filter and
checksums as jobs/rate_my_lora; with λ_0 = 0 the rating has no weight and the merge is the
size-weighted average of the adapters. `--adapter tensor` trains and sends TenVOO tensor cores
instead of LoRA (averaged as full-size deltas). See jobs/README.md.

    python jobs/fedpetuning/job.py --export                   # writes jobs/fedpetuning/exported
    python jobs/fedpetuning/job.py --export-dir /tmp/fedpet --rounds 10 --profile paper
    python jobs/fedpetuning/job.py --export-dir /tmp/fedpet_tensor --adapter tensor
    python jobs/fedpetuning/job.py --export-dir /tmp/fedpet_dp --dp-clip 0.1 --dp-noise-multiplier 1.0   # site-level DP
    python -m cardiolora.fl.run --job fedpetuning ...         # the simulator, with site configs

`build` is also what the package builds for this job (`cardiolora.fl.jobs.build_job`).
"""

from __future__ import annotations

import sys

from nvflare.app_opt.tracking.tb.tb_receiver import TBAnalyticsReceiver
from nvflare.job_config.api import FedJob
from nvflare.job_config.defs import FilterType

from cardiolora.fl import job_cli, job_dp, jobs
from cardiolora.fl.controller import RateMyLoRAController
from cardiolora.fl.filters import AdapterOnlyFilter
from cardiolora.fl.persistor import BundleModelPersistor
from cardiolora.fl.protocol import Task

NAME = "fedpetuning"
#: No weight for the rating (Eq. 2): coefficients |D_c| / Σ|D|.
LAMBDA0 = 0.0


def build(
    num_rounds: int = jobs.DEFAULT_ROUNDS,
    profile: str = jobs.DEFAULT_PROFILE,
    local_epochs: int | None = None,
    min_clients: int = jobs.DEFAULT_MIN_CLIENTS,
    task_timeout: int = jobs.DEFAULT_TASK_TIMEOUT,
    straggler_grace: int = jobs.DEFAULT_STRAGGLER_GRACE,
    ranks: tuple[int, int] | None = None,
    seed: int = jobs.DEFAULT_SEED,
    transport_dtype: str = jobs.DEFAULT_TRANSPORT_DTYPE,
    adapter: str = jobs.DEFAULT_ADAPTER,
    dp_clip: float | None = None,
    dp_noise_multiplier: float | None = None,
    dp_delta: float = jobs.DEFAULT_DELTA,
    dp_reproducible_noise: bool = False,
    fresh: bool = False,
) -> FedJob:
    """The FedJob; the arguments are those of :func:`cardiolora.fl.jobs.build_job`."""
    # {} when off: the job without DP
    dp = job_dp.dp_options(dp_clip, dp_noise_multiplier, dp_delta, dp_reproducible_noise)
    local_epochs = jobs.check_settings(profile, local_epochs, seed, transport_dtype, adapter)
    ranks = jobs.job_ranks(adapter, profile, ranks)
    job = FedJob(name=NAME, min_clients=min_clients)
    job.set_app_packages(["cardiolora"])  # installed on every participant, never copied into the job

    # server: W_0 (the bundle's network_def + the base model named in the server's local config),
    # the rounds (train -> validate -> merge by size, Eq. 2 with λ = 0), TensorBoard scalars
    job.to_server(BundleModelPersistor(profile=profile), id="persistor")
    controller = RateMyLoRAController(
        num_rounds=num_rounds,
        lambda0=LAMBDA0,
        profile=profile,
        local_epochs=local_epochs,
        ranks=tuple(ranks),
        min_clients=min_clients,
        task_timeout=task_timeout,
        straggler_grace=straggler_grace,
        state_name=NAME,
        transport_dtype=transport_dtype,
        adapter=adapter,
        **dp,
        fresh=fresh,
    )
    job.to_server(controller, id="controller")
    job.to_server(TBAnalyticsReceiver(tb_folder="tb_events"), id="tb_receiver")

    # sites: the Client API script (app/custom/client.py) runs every task in the client process
    job.to_clients(jobs.site_executor("rml", NAME, profile, local_epochs, seed, adapter), tasks=["*"])
    job.add_file_to_clients(str(jobs.SITE_SCRIPT))
    # optional site-level DP: each adapter update clipped to C and noised before the adapter filter
    job_dp.add_dp_filter(job, profile, adapter, seed, **dp)
    # only adapters, counts and scalar metrics leave a site; FLARE 2.9 keys result filters by the
    # exact task name ("*" would match none), so every task of the protocol is listed
    job.to_clients(AdapterOnlyFilter(), tasks=list(Task.ALL), filter_type=FilterType.TASK_RESULT)
    return job


def main(argv: list[str] | None = None) -> int:
    """Export the job (``--export`` / ``--export-dir``), or say what it is."""
    p = job_cli.job_parser(NAME)
    p.add_argument(
        "--adapter",
        choices=list(jobs.ADAPTER_TYPES),
        default=jobs.DEFAULT_ADAPTER,
        help="lora: LoRA of rank 16/32 by site size; tensor: TenVOO cores of the bundle's tensor_rank",
    )
    job_dp.add_dp_arguments(p)
    job_cli.add_exchange_arguments(p, "the adapters")
    args = p.parse_args(argv)
    job = build(
        num_rounds=args.rounds,
        profile=args.profile,
        local_epochs=args.local_epochs,
        min_clients=args.min_clients,
        task_timeout=args.task_timeout,
        straggler_grace=args.straggler_grace,
        seed=args.seed,
        transport_dtype=args.transport_dtype,
        adapter=args.adapter,
        dp_clip=args.dp_clip,
        dp_noise_multiplier=args.dp_noise_multiplier,
        dp_delta=args.dp_delta,
        dp_reproducible_noise=args.dp_reproducible_noise,
        fresh=args.fresh,
    )
    return job_cli.export_or_usage(job, NAME, args.export, args.export_dir, __file__)


if __name__ == "__main__":
    sys.exit(main())
