"""Med-DualLoRA as an NVIDIA FLARE job (Perramon-Llussà et al., arXiv 2603.10967).

Every adapted convolution of each site's U-Net holds two LoRA pairs: a *global* pair (the bundle's
dual_global_rank), trained afresh every round, sent, aggregated by the server and merged into W
(as in the Rate-My-LoRA protocol), and a *local* pair (dual_local_rank) that never leaves the site:
it is saved in the site's output folder after every round and reloaded for the next, and the
site's model is W_t + local. Both pairs train together in every round. The server aggregates the
global adapters by dataset size (`--aggregation size`, the default: Eq. 2 with λ = 0) or with the
Rate-My-LoRA rating (`--aggregation rated`: Eq. 1 with λ_0 = 0.2 on the global adapters, then
Eq. 2), a combination no paper has measured. The sites' result filter refuses any local key.
See jobs/README.md, "Med-DualLoRA (`dual_lora`)".

    python jobs/dual_lora/job.py --export                      # writes jobs/dual_lora/exported (size)
    python jobs/dual_lora/job.py --export-dir /tmp/dual_rated --aggregation rated
    python jobs/dual_lora/job.py --export-dir /tmp/dual --global-rank 8 --local-rank 4
    python jobs/dual_lora/job.py --export-dir /tmp/dual_dp --dp-clip 0.05 --dp-noise-multiplier 1.0   # site-level DP
    python -m cardiolora.fl.run --job dual_lora --aggregation rated ...   # the simulator

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

NAME = "dual_lora"


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
    aggregation: str = jobs.DEFAULT_AGGREGATION,
    local_rank: int | None = None,
    dp_clip: float | None = None,
    dp_noise_multiplier: float | None = None,
    dp_delta: float = jobs.DEFAULT_DELTA,
    dp_reproducible_noise: bool = False,
    fresh: bool = False,
) -> FedJob:
    """The FedJob; the arguments are those of :func:`cardiolora.fl.jobs.build_job`.

    `ranks` are the global pairs' (small site, large site; default the bundle's
    ``dual_global_rank`` for every site), `local_rank` the local pairs' (default the bundle's
    ``dual_local_rank``), `aggregation` ``"size"`` or ``"rated"`` (:func:`cardiolora.fl.jobs.dual_settings`).
    With `dp_clip` and `dp_noise_multiplier` the sites privatise the global adapters they send
    (:mod:`cardiolora.fl.job_dp`): a global pair starts every round from the same seeded draw as a
    plain LoRA pair of its rank, which is the ``x_0`` the DP filter rebuilds; local pairs never leave.

    Raises:
        ValueError: as :func:`cardiolora.fl.jobs.check_settings` and
            :func:`cardiolora.fl.job_dp.dp_options`, for an unknown `aggregation`, a `local_rank` < 1,
            or ``adapter != "lora"`` (dual adapters are LoRA pairs).
    """
    # {} when off: the job without DP
    dp = job_dp.dp_options(dp_clip, dp_noise_multiplier, dp_delta, dp_reproducible_noise)
    if adapter != "lora":
        raise ValueError(f"`adapter` {adapter!r}: the dual_lora job's global and local adapters are LoRA pairs.")
    local_epochs = jobs.check_settings(profile, local_epochs, seed, transport_dtype, adapter)
    ranks, local_rank, lambda0 = jobs.dual_settings(profile, aggregation, ranks, local_rank)
    job = FedJob(name=NAME, min_clients=min_clients)
    job.set_app_packages(["cardiolora"])  # installed on every participant, never copied into the job

    # server: W_0, the rounds on the global adapters (train -> validate -> [rate, Eq. 1] -> merge,
    # Eq. 2), TensorBoard scalars; it never sees a local adapter
    job.to_server(BundleModelPersistor(profile=profile), id="persistor")
    controller = RateMyLoRAController(
        num_rounds=num_rounds,
        lambda0=lambda0,
        profile=profile,
        local_epochs=local_epochs,
        ranks=tuple(ranks),
        min_clients=min_clients,
        task_timeout=task_timeout,
        straggler_grace=straggler_grace,
        state_name=NAME,
        transport_dtype=transport_dtype,
        adapter=adapter,
        label=f"{NAME}_{aggregation}",
        **dp,
        fresh=fresh,
    )
    job.to_server(controller, id="controller")
    job.to_server(TBAnalyticsReceiver(tb_folder="tb_events"), id="tb_receiver")

    # sites: the Client API script with --local-rank: a local pair beside every global one
    job.to_clients(
        jobs.site_executor("rml", NAME, profile, local_epochs, seed, adapter, local_rank=local_rank), tasks=["*"]
    )
    job.add_file_to_clients(str(jobs.SITE_SCRIPT))
    # optional site-level DP: each global adapter update clipped to C and noised before the adapter filter
    job_dp.add_dp_filter(job, profile, adapter, seed, **dp)
    # only global adapters, counts and scalar metrics leave a site (a local key is refused); FLARE
    # 2.9 keys result filters by the exact task name, so every task of the protocol is listed
    job.to_clients(AdapterOnlyFilter(), tasks=list(Task.ALL), filter_type=FilterType.TASK_RESULT)
    return job


def main(argv: list[str] | None = None) -> int:
    """Export the job (``--export`` / ``--export-dir``), or say what it is."""
    p = job_cli.job_parser(NAME)
    p.add_argument(
        "--aggregation",
        choices=list(jobs.DUAL_AGGREGATIONS),
        default=jobs.DEFAULT_AGGREGATION,
        help="size: global adapters averaged by dataset size; rated: Rate-My-LoRA rating (Eq. 1) first",
    )
    p.add_argument("--global-rank", type=int, help="rank of the global pairs (default: the bundle's dual_global_rank)")
    p.add_argument("--local-rank", type=int, help="rank of the local pairs (default: the bundle's dual_local_rank)")
    job_dp.add_dp_arguments(p)
    job_cli.add_exchange_arguments(p, "the global adapters")
    args = p.parse_args(argv)
    job = build(
        num_rounds=args.rounds,
        profile=args.profile,
        local_epochs=args.local_epochs,
        min_clients=args.min_clients,
        task_timeout=args.task_timeout,
        straggler_grace=args.straggler_grace,
        ranks=None if args.global_rank is None else (args.global_rank, args.global_rank),
        seed=args.seed,
        transport_dtype=args.transport_dtype,
        aggregation=args.aggregation,
        local_rank=args.local_rank,
        dp_clip=args.dp_clip,
        dp_noise_multiplier=args.dp_noise_multiplier,
        dp_delta=args.dp_delta,
        dp_reproducible_noise=args.dp_reproducible_noise,
        fresh=args.fresh,
    )
    return job_cli.export_or_usage(job, NAME, args.export, args.export_dir, __file__)


if __name__ == "__main__":
    sys.exit(main())
