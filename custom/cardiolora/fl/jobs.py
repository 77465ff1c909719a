"""What the three FLARE jobs share; each job itself is ``jobs/<name>/job.py``.

The jobs are FedJobs written out in ``jobs/<name>/job.py`` (FLARE's idiom: a ``build()`` that puts
the persistor, the controller, the TensorBoard receiver, the site executor and script and the result
filter on the job, and a command line that exports it). Those files ship inside the package too
(``cardiolora/jobs`` is, in the source tree, a link to the top-level ``jobs/``, as
``cardiolora/bundles`` is to ``bundles/``), so :func:`build_job` imports the very same ``build`` as
``cardiolora.jobs.<name>.job`` and an installed site with no checkout builds the same jobs
(:mod:`cardiolora.fl.run`, the tests).

* ``rate_my_lora`` — :class:`~cardiolora.fl.controller.RateMyLoRAController` with ``λ_0 = 0.2``;
* ``fedpetuning`` — the same controller with ``λ_0 = 0`` (size-weighted LoRA averaging);
* ``fedavg_full`` — FLARE's own ``FedAvg`` on the full network, weighted by ``|D_c|``
  (:class:`~cardiolora.fl.aggregators.DatasetSizeAggregator`): the paper's † baseline. It sends
  full weights both ways by design and has no adapter filter;
* ``dual_lora`` — Med-DualLoRA: every site holds a global and a local LoRA pair per convolution
  (ranks: the bundle's ``dual_global_rank`` / ``dual_local_rank``); only the global pairs travel
  and the same controller aggregates them by size (``aggregation="size"``, λ_0 = 0) or with the
  Rate-My-LoRA rating (``aggregation="rated"``, λ_0 = 0.2) (:func:`dual_settings`).

Here: the arguments' defaults (one place for the three command lines and :func:`build_job`), the
settings check every job makes before it builds anything (:func:`check_settings`), the site executor
(:func:`site_executor`) and its script (:data:`SITE_SCRIPT`, a launcher of
:func:`cardiolora.fl.client.main`; every participant installs the ``cardiolora`` package, which the
job does not copy — ``app_packages``), and the export (:func:`export_job`, reproducible).
Hyperparameters appear once: profile, rounds, local epochs and the job seed are job arguments,
network numbers live in the bundle (:mod:`cardiolora.profiles`). The seed reaches every site as
the script argument ``--seed`` (:func:`cardiolora.fl.seeds.round_seed`). The LoRA jobs'
``transport_dtype`` (float16 by default) is an argument of the server's controller, which names it
to the sites in every task (:mod:`cardiolora.fl.protocol`). The adapter jobs' ``adapter`` (``lora``
by default, or ``tensor`` for TenVOO cores) is an argument of the controller and of every site's
script (``--adapter``, a bundle override there); the tensor ranks then default to the bundle's
``tensor_rank`` for every site (:func:`job_ranks`). Site-level differential privacy of the adapter
jobs (off by default): ``dp_clip`` ``C``, ``dp_noise_multiplier`` ``z``, ``dp_delta`` ``δ`` (and
``dp_reproducible_noise``, noise from the job seed for reproducible experiments) put
:class:`~cardiolora.fl.filters.AdapterDPFilter` in front of every site's result filter and tell the
controller to record ``ε`` (:mod:`cardiolora.fl.job_dp`, :mod:`cardiolora.fl.privacy`). The shared
command line of the job files: :mod:`cardiolora.fl.job_cli`.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from nvflare.app_common.executors.client_api_executor import ClientAPIExecutor
from nvflare.client.config import ExchangeFormat
from nvflare.job_config.api import FedJob

from cardiolora.fl.job_dp import DEFAULT_DELTA, dp_options
from cardiolora.fl.network import bundle_network
from cardiolora.fl.protocol import (
    ADAPTER_TYPES,
    DEFAULT_TRANSPORT_DTYPE,
    check_adapter_type,
    check_transport_dtype,
)
from cardiolora.fl.rml import DEFAULT_LAMBDA0
from cardiolora.fl.seeds import DEFAULT_SEED, check_seed
from cardiolora.networks import bundle_setting
from cardiolora.profiles import get_profile

__all__ = [
    "JOB_NAMES",
    "DEFAULT_ROUNDS",
    "DEFAULT_PROFILE",
    "DEFAULT_N_CLIENTS",
    "DEFAULT_MIN_CLIENTS",
    "DEFAULT_TASK_TIMEOUT",
    "DEFAULT_STRAGGLER_GRACE",
    "DEFAULT_RANKS",
    "DEFAULT_ADAPTER",
    "ADAPTER_TYPES",
    "DUAL_AGGREGATIONS",
    "DEFAULT_AGGREGATION",
    "DEFAULT_SEED",
    "DEFAULT_TRANSPORT_DTYPE",
    "DEFAULT_DELTA",
    "SITE_SCRIPT",
    "CLIENT_SCRIPT",
    "build_job",
    "job_builder",
    "check_settings",
    "job_ranks",
    "dual_settings",
    "site_executor",
    "export_job",
]

#: The methods, one job folder each (``jobs/<name>/job.py``).
JOB_NAMES = ("rate_my_lora", "fedpetuning", "fedavg_full", "dual_lora")

#: Rounds written into the committed job folders (the embedded phantom demo; ``--rounds`` for more).
DEFAULT_ROUNDS = 3
#: Run profile of the bundle (network and training settings).
DEFAULT_PROFILE = "quick"
#: Sites FedAvg samples each round (``fedavg_full``).
DEFAULT_N_CLIENTS = 3
#: Fewer answering sites stop the job (also the job's deployment minimum).
DEFAULT_MIN_CLIENTS = 2
#: Seconds a task may take at most (LoRA jobs).
DEFAULT_TASK_TIMEOUT = 3600
#: Seconds the server waits for the remaining sites once ``min_clients`` answered (LoRA jobs).
DEFAULT_STRAGGLER_GRACE = 600
#: LoRA ranks: (half-size site, other sites) (adapter jobs with ``adapter: lora``).
DEFAULT_RANKS = (16, 32)
#: Adapter type of the adapter jobs: LoRA (``"tensor"``: TenVOO cores, the bundle's ``tensor_rank``).
DEFAULT_ADAPTER = "lora"
#: How ``dual_lora``'s server aggregates the global adapters: by dataset size (Eq. 2 with λ = 0,
#: Med-DualLoRA's FedAvg) or with the Rate-My-LoRA rating (Eq. 1, λ_0 = 0.2, then Eq. 2).
DUAL_AGGREGATIONS = ("size", "rated")
#: ``dual_lora``'s default aggregation.
DEFAULT_AGGREGATION = "size"

#: The site script as shipped in the package (``cardiolora/jobs/client.py`` = ``jobs/client.py``):
#: a launcher of :func:`cardiolora.fl.client.main`, copied into every job's ``app/custom/``.
SITE_SCRIPT = Path(__file__).resolve().parents[1] / "jobs" / "client.py"
#: The site script by its path inside the job's ``custom/`` folder (the executor's ``task_script_path``).
CLIENT_SCRIPT = SITE_SCRIPT.name

#: What each job is, one line (the command lines' help and :func:`cardiolora.fl.job_cli.usage`).
DESCRIPTIONS = {
    "rate_my_lora": "Rate-My-LoRA (λ_0 = 0.2): adapters of rank 16/32 by site size, rated (Eq. 1), merged (Eq. 2)",
    "fedpetuning": "FedPETuning: the same protocol with λ_0 = 0 (size-weighted LoRA averaging)",
    "fedavg_full": "full-weight FedAvg weighted by |D_c| (the paper's † baseline; sends full weights)",
    "dual_lora": "Med-DualLoRA: global + local LoRA per site, only the global adapters travel; aggregated by "
    "size (default) or by the Rate-My-LoRA rating (--aggregation rated)",
}


def job_builder(name: str) -> Callable[..., FedJob]:
    """The ``build`` function of ``jobs/<name>/job.py`` (imported as ``cardiolora.jobs.<name>.job``).

    Args:
        name: one of :data:`JOB_NAMES`.

    Returns:
        The job's ``build(**settings) -> FedJob``.

    Raises:
        ValueError: for an unknown `name`.
        ModuleNotFoundError: if the package was installed without its jobs (a broken install).
    """
    if name not in JOB_NAMES:
        raise ValueError(f"`name` must be one of {list(JOB_NAMES)}, got {name!r}.")
    return importlib.import_module(f"cardiolora.jobs.{name}.job").build


def build_job(
    name: str,
    num_rounds: int = DEFAULT_ROUNDS,
    profile: str = DEFAULT_PROFILE,
    local_epochs: int | None = None,
    n_clients: int = DEFAULT_N_CLIENTS,
    min_clients: int = DEFAULT_MIN_CLIENTS,
    task_timeout: int = DEFAULT_TASK_TIMEOUT,
    straggler_grace: int = DEFAULT_STRAGGLER_GRACE,
    ranks: tuple[int, int] | None = None,
    seed: int = DEFAULT_SEED,
    transport_dtype: str = DEFAULT_TRANSPORT_DTYPE,
    adapter: str = DEFAULT_ADAPTER,
    dp_clip: float | None = None,
    dp_noise_multiplier: float | None = None,
    dp_delta: float = DEFAULT_DELTA,
    dp_reproducible_noise: bool = False,
    aggregation: str = DEFAULT_AGGREGATION,
    local_rank: int | None = None,
    fresh: bool = False,
) -> FedJob:
    """Build the FedJob of one method: ``jobs/<name>/job.py``'s ``build`` with the settings it takes.

    Args:
        name: one of :data:`JOB_NAMES`.
        num_rounds: federated rounds.
        profile: run profile (the bundle's network and training settings for it).
        local_epochs: local epochs per round (default: the profile's ``local_epochs``).
        n_clients: sites FedAvg samples each round (``fedavg_full`` only).
        min_clients: fewer sites than this stop the job (also the job's deployment minimum).
        task_timeout: seconds a task may take at most (LoRA jobs).
        straggler_grace: seconds to wait for the remaining sites once ``min_clients`` answered (LoRA jobs).
        ranks: (small-site rank, large-site rank) (adapter jobs); None: :func:`job_ranks`.
        seed: job seed (non-negative int), passed to every site's script as ``--seed``: the bundle
            seed of the site's workflows and, with site and round, the seed of each local run
            (:func:`cardiolora.fl.seeds.round_seed`; 0 gives the seeds of the runs made before jobs had one).
        transport_dtype: dtype the LoRA jobs' adapters travel in, ``"float16"`` (default) or
            ``"float32"``; ``fedavg_full`` ships full float32 weights (the name is still checked).
        adapter: the adapter jobs' adapter type, ``"lora"`` (default) or ``"tensor"`` (TenVOO
            cores); ``fedavg_full`` trains the full network and takes only ``"lora"`` (the default),
            ``dual_lora`` only ``"lora"`` too (dual adapters are LoRA pairs).
        dp_clip: site-level DP of the adapter jobs (of ``dual_lora``'s global adapters): ``C``, the L2
            bound of each site's update per release (:mod:`cardiolora.fl.privacy`); None (default) with
            `dp_noise_multiplier` None: off, and the job is exactly the one without DP.
        dp_noise_multiplier: ``z``: Gaussian noise of std ``z·C`` per coordinate.
        dp_delta: ``δ`` of the ``ε`` the accountant reports (default 1e-5).
        dp_reproducible_noise: the sites seed their noise from the job seed (reproducible experiments;
            no privacy against anyone who knows the job seed) instead of OS entropy (default).
        aggregation: ``dual_lora`` only: ``"size"`` (default) or ``"rated"`` (:data:`DUAL_AGGREGATIONS`);
            the other jobs take only the default.
        local_rank: ``dual_lora`` only: rank of the sites' local pairs (None: the bundle's
            ``dual_local_rank``); for ``dual_lora``, `ranks` default to the bundle's ``dual_global_rank``.
        fresh: the adapter jobs archive an unfinished saved state instead of resuming it
            (``fedavg_full`` keeps no state and refuses it).

    Returns:
        The job (export it with :func:`export_job` or run ``job.simulator_run``).

    Raises:
        ValueError: for an unknown `name` or profile, a profile whose network the bundle cannot build,
            a `seed` that is not a non-negative int, an unknown `transport_dtype`, `adapter` or
            `aggregation`, ``adapter="tensor"`` for ``fedavg_full`` or ``dual_lora``, DP options for
            ``fedavg_full``,
            DP options out of range (:func:`cardiolora.fl.privacy.dp_settings`), or
            `aggregation` / `local_rank` given to another job than ``dual_lora``.
    """
    build = job_builder(name)
    check_transport_dtype(transport_dtype)
    check_adapter_type(adapter)
    dp = dp_options(dp_clip, dp_noise_multiplier, dp_delta, dp_reproducible_noise)
    if name == "dual_lora":
        return build(
            num_rounds=num_rounds,
            profile=profile,
            local_epochs=local_epochs,
            min_clients=min_clients,
            seed=seed,
            task_timeout=task_timeout,
            straggler_grace=straggler_grace,
            ranks=None if ranks is None else tuple(ranks),
            transport_dtype=transport_dtype,
            adapter=adapter,
            aggregation=aggregation,
            local_rank=local_rank,
            **dp,  # only when DP is on (the global adapters are privatised; local pairs never leave)
            fresh=fresh,
        )
    if aggregation != DEFAULT_AGGREGATION or local_rank is not None:
        raise ValueError(
            f"`aggregation` {aggregation!r} / `local_rank` {local_rank!r}: only the dual_lora job takes them "
            f"(job {name!r})."
        )
    settings = dict(
        num_rounds=num_rounds, profile=profile, local_epochs=local_epochs, min_clients=min_clients, seed=seed
    )
    if name == "fedavg_full":
        if adapter != DEFAULT_ADAPTER:
            raise ValueError(f"`adapter` {adapter!r}: fedavg_full trains the full network, it has no adapters.")
        if dp:
            raise ValueError("`dp_clip` / `dp_noise_multiplier`: fedavg_full has no DP option (adapter jobs only).")
        if fresh:
            raise ValueError("`fresh`: fedavg_full keeps no resumable state, there is nothing to start afresh from.")
        return build(**settings, n_clients=n_clients)
    return build(
        **settings,
        task_timeout=task_timeout,
        straggler_grace=straggler_grace,
        ranks=None if ranks is None else tuple(ranks),
        transport_dtype=transport_dtype,
        adapter=adapter,
        **dp,  # only when DP is on: a job's build without DP options still works without it
        fresh=fresh,
    )


def check_settings(
    profile: str,
    local_epochs: int | None,
    seed: int,
    transport_dtype: str = DEFAULT_TRANSPORT_DTYPE,
    adapter: str = DEFAULT_ADAPTER,
) -> int:
    """Check a job's settings before anything is built (fail fast, with the argument named).

    Args:
        profile: run profile; the bundle's ``network_def`` must build for it.
        local_epochs: local epochs per round, or None for the profile's.
        seed: the job seed (a non-negative int).
        transport_dtype: the adapters' transport dtype name.
        adapter: the adapter type name (``"lora"`` / ``"tensor"``).

    Returns:
        The local epochs per round.

    Raises:
        ValueError: for an unknown profile, `transport_dtype` or `adapter`, a `seed` that is not a
            non-negative int, or a profile whose network the bundle cannot build.
    """
    check_seed(seed)
    check_transport_dtype(transport_dtype)
    check_adapter_type(adapter)
    epochs = int(local_epochs or get_profile(profile).local_epochs)
    bundle_network(profile, 0)  # the bundle's network_def builds for this profile
    return epochs


def job_ranks(adapter: str, profile: str, ranks: tuple[int, int] | None = None) -> tuple[int, int]:
    """The (small-site, large-site) ranks of an adapter job.

    Args:
        adapter: ``"lora"`` or ``"tensor"``.
        profile: run profile (the bundle's ``tensor_rank`` may depend on it).
        ranks: given ranks, returned as they are; None for the adapter's default: LoRA
            :data:`DEFAULT_RANKS` (16, 32), tensor adapters the bundle's ``tensor_rank`` for every
            site (a TenVOO network grows as ``r⁴``; the rank is written once, in the bundle).

    Returns:
        The two ranks.

    Raises:
        ValueError: for an unknown `adapter` or profile.
    """
    check_adapter_type(adapter)
    if ranks is not None:
        return tuple(ranks)
    if adapter == "tensor":
        rank = int(bundle_setting(profile, "tensor_rank"))
        return (rank, rank)
    return DEFAULT_RANKS


def dual_settings(
    profile: str, aggregation: str, ranks: tuple[int, int] | None = None, local_rank: int | None = None
) -> tuple[tuple[int, int], int, float]:
    """The ranks and ``λ_0`` of a ``dual_lora`` job.

    Args:
        profile: run profile (the bundle's ``dual_global_rank`` / ``dual_local_rank`` are read for it).
        aggregation: ``"size"`` (λ_0 = 0: Eq. 2 is the size-weighted average of the global adapters'
            ``ΔW``) or ``"rated"`` (λ_0 = the paper's 0.2: Eq. 1 rates the sites first).
        ranks: (small-site, large-site) global ranks; None: the bundle's ``dual_global_rank`` for every site.
        local_rank: rank of the local pairs; None: the bundle's ``dual_local_rank``.

    Returns:
        ``(global ranks, local rank, λ_0)``.

    Raises:
        ValueError: naming `aggregation` if unknown, or `local_rank` if not an int >= 1.
    """
    if aggregation not in DUAL_AGGREGATIONS:
        raise ValueError(f"`aggregation` must be one of {list(DUAL_AGGREGATIONS)}, got {aggregation!r}.")
    if ranks is None:
        g = int(bundle_setting(profile, "dual_global_rank"))
        ranks = (g, g)
    if local_rank is None:
        local_rank = int(bundle_setting(profile, "dual_local_rank"))
    if isinstance(local_rank, bool) or not isinstance(local_rank, int) or local_rank < 1:
        raise ValueError(f"`local_rank` must be an int >= 1 for dual adapters, got {local_rank!r}.")
    return tuple(ranks), local_rank, (DEFAULT_LAMBDA0 if aggregation == "rated" else 0.0)


def site_executor(
    method: str,
    job_name: str,
    profile: str,
    local_epochs: int,
    seed: int,
    adapter: str = DEFAULT_ADAPTER,
    local_rank: int = 0,
) -> ClientAPIExecutor:
    """The sites' executor: :data:`SITE_SCRIPT` in the FLARE client process (Client API, ``in_process``).

    The job's settings reach the script as its arguments (:func:`cardiolora.fl.client.build_parser`);
    the site's data and output folders come from its own local config, not from the job. Put the
    script itself on the job with ``job.add_file_to_clients(str(SITE_SCRIPT))``.

    Args:
        method: ``"rml"`` (Rate-My-LoRA / FedPETuning tasks) or ``"fedavg"`` (FedAvg's ``train``).
        job_name: the job's name (the sub-folder of each site's ``output_dir``).
        profile: run profile.
        local_epochs: local epochs per round.
        seed: the job seed (a non-negative int).
        adapter: ``"lora"`` or ``"tensor"``: the sites' adapter type (``--adapter``; ``rml`` only,
            ``fedavg`` takes only the default and its script arguments do not name it).
        local_rank: rank of the sites' local pairs (``dual_lora``; ``--local-rank``); 0 (default):
            none, and the script arguments do not name it.

    Returns:
        The executor (for every task: ``job.to_clients(executor, tasks=["*"])``).

    Raises:
        ValueError: for an unknown `method` or `adapter`, ``adapter="tensor"`` with ``fedavg``, or
            a `seed` that is not a non-negative int.
    """
    if method not in ("rml", "fedavg"):
        raise ValueError(f"`method` must be 'rml' or 'fedavg', got {method!r}.")
    check_adapter_type(adapter)
    if method == "fedavg" and adapter != DEFAULT_ADAPTER:
        raise ValueError(f"`adapter` {adapter!r}: the fedavg method trains the full network, it has no adapters.")
    seed = check_seed(seed)
    if local_rank and (method != "rml" or adapter != "lora"):
        raise ValueError(f"`local_rank` {local_rank}: dual adapters need the rml method with LoRA adapters.")
    adapter_arg = f" --adapter {adapter}" if method == "rml" else ""
    adapter_arg += f" --local-rank {int(local_rank)}" if local_rank else ""
    return ClientAPIExecutor(
        execution_mode="in_process",
        task_script_path=CLIENT_SCRIPT,
        task_script_args=(
            f"--method {method} --profile {profile} --local-epochs {local_epochs} --job-name {job_name}"
            f"{adapter_arg} --seed {seed}"
        ),
        params_exchange_format=ExchangeFormat.PYTORCH,
        server_expected_format=ExchangeFormat.NUMPY,
    )


def export_job(job: FedJob, dest: str | os.PathLike) -> Path:
    """Export `job` so that `dest` itself is the job folder (``meta.json`` + ``app/``).

    The folder is replaced as a whole, so nothing hand-edited survives an export; the task names of
    every filter chain are sorted (FLARE keeps them in a set), so two exports are byte-identical.

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
    """Sort the task names of every filter chain of one exported config file, in place."""
    config = json.loads(path.read_text())
    for key in ("task_result_filters", "task_data_filters"):
        for chain in config.get(key, []):
            chain["tasks"] = sorted(chain["tasks"])
    path.write_text(json.dumps(config, indent=4))
