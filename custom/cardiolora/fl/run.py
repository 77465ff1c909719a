"""Run one job in the FLARE simulator on phantom (or any) sites — a thin wrapper.

::

    python -m cardiolora.fl.run --job rate_my_lora --sites-root runs/demo/phantoms/sites \\
        --pretrained runs/demo/pretrain/model.pt --workdir runs/fl --rounds 2 --profile quick [--adapter tensor] \\
        [--dp-clip 0.1 --dp-noise-multiplier 1.0 --dp-delta 1e-5]
    python -m cardiolora.fl.run --job dual_lora --aggregation rated ...   # Med-DualLoRA, rated

It writes each participant's local config (``<workdir>/site_config/<site>.json``, given to the
simulator through ``$CARDIOLORA_SITE_CONFIG``), exports the job with the requested rounds and
profile to ``<workdir>/job``, runs ``nvflare simulator`` with one client per site and copies the
server's results (``rml_history.json``, ``rml_curves.png``, ``cross_site_eval.json``,
``tb_events/``, ``global_model.pt``, ``job_summary.json``) to ``<workdir>/results``. Each site's
models are in ``<workdir>/sites/<site>/<job>/simulate_job/`` (the simulator's job id;
``<job>/latest`` points at it). The server state (for resuming) is in ``<workdir>/server_state``.
:func:`simulate_job` runs a job folder that is already exported (e.g. a committed ``jobs/<name>/exported``)
with the site configs of :func:`write_site_configs`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from nvflare.private.fed.simulator.simulator_const import SimulatorConstants

from cardiolora.fl.job_dp import add_dp_arguments
from cardiolora.fl.job_info import job_output_dir
from cardiolora.fl.jobs import (
    DEFAULT_AGGREGATION,
    DEFAULT_DELTA,
    DUAL_AGGREGATIONS,
    JOB_NAMES,
    build_job,
    export_job,
)
from cardiolora.fl.protocol import ADAPTER_TYPES, DEFAULT_TRANSPORT_DTYPE, check_adapter_type, check_transport_dtype
from cardiolora.fl.seeds import DEFAULT_SEED, check_seed
from cardiolora.profiles import PROFILES

__all__ = ["run_simulation", "simulate_job", "write_site_configs", "main"]

RESULT_FILES = (
    "rml_history.json",
    "rml_curves.png",
    "cross_site_eval.json",
    "global_model.pt",
    "tb_events",
    "job_summary.json",
)


def write_site_configs(
    workdir: Path,
    sites_root: Path,
    sites: list[str],
    pretrained: Path,
    torch_threads: int = 1,
    extra: dict[str, dict] | None = None,
) -> Path:
    """Write ``<workdir>/site_config/{server,<site>}.json``; returns the folder.

    Raises:
        FileNotFoundError: if a site folder has no ``datalist.json`` or `pretrained` does not exist.
    """
    folder = workdir / "site_config"
    folder.mkdir(parents=True, exist_ok=True)
    if not pretrained.is_file():
        raise FileNotFoundError(f"{pretrained}: no base model (make one with `cardiolora pretrain`).")
    server = {"pretrained_path": str(pretrained.resolve()), "state_dir": str((workdir / "server_state").resolve())}
    (folder / "server.json").write_text(json.dumps(server, indent=1))
    for site in sites:
        data = sites_root / site
        if not (data / "datalist.json").is_file():
            raise FileNotFoundError(f"{data / 'datalist.json'}: no datalist for site `{site}`.")
        cfg = {
            "dataset_dir": str(data.resolve()),
            "output_dir": str((workdir / "sites" / site).resolve()),
            "num_threads": torch_threads,
            **(extra or {}).get(site, {}),
        }
        (folder / f"{site}.json").write_text(json.dumps(cfg, indent=1))
    return folder


def run_simulation(
    job: str,
    sites_root: str | os.PathLike,
    pretrained: str | os.PathLike,
    workdir: str | os.PathLike,
    rounds: int = 2,
    profile: str = "quick",
    sites: list[str] | None = None,
    local_epochs: int | None = None,
    min_clients: int | None = None,
    torch_threads: int = 1,
    extra_site_config: dict[str, dict] | None = None,
    timeout: float | None = None,
    straggler_grace: int = 600,
    seed: int = DEFAULT_SEED,
    transport_dtype: str | None = None,
    adapter: str = "lora",
    dp_clip: float | None = None,
    dp_noise_multiplier: float | None = None,
    dp_delta: float = DEFAULT_DELTA,
    dp_reproducible_noise: bool = False,
    aggregation: str = DEFAULT_AGGREGATION,
) -> dict:
    """Export `job`, run it in the simulator, collect the results.

    Args:
        job: ``rate_my_lora``, ``fedpetuning``, ``fedavg_full`` or ``dual_lora``.
        sites_root: folder holding ``<site>/datalist.json``.
        pretrained: the base model ``W_0``.
        workdir: work folder (created; the simulator workspace is ``<workdir>/simulate``).
        rounds: federated rounds.
        profile: run profile.
        sites: site names (default: ``site-1``, ``site-2``, ``site-3``).
        local_epochs: local epochs per round (default: the profile's).
        min_clients: fewer answering sites stop the job (default: all but one, at least 1).
        torch_threads: torch CPU threads per simulated site.
        extra_site_config: more fields per site config (``{site: {field: value}}``).
        timeout: seconds before the simulator is stopped (None: no limit).
        straggler_grace: seconds the server waits for the remaining sites once ``min_clients`` answered.
        seed: the job seed (every site's local training; see :func:`cardiolora.fl.seeds.round_seed`).
        transport_dtype: dtype the LoRA jobs' adapters travel in (``"float16"`` / ``"float32"``;
            None: the job's default, :data:`cardiolora.fl.protocol.DEFAULT_TRANSPORT_DTYPE`).
        adapter: the adapter jobs' adapter type, ``"lora"`` (default) or ``"tensor"`` (TenVOO cores).
        dp_clip: site-level DP of the adapter jobs, ``C`` (None with `dp_noise_multiplier` None: off).
        dp_noise_multiplier: ``z`` (noise std ``z·C`` per coordinate).
        dp_delta: ``δ`` of the reported ``ε``.
        dp_reproducible_noise: DP noise seeded from the job seed (reproducible runs) instead of OS entropy.
        aggregation: ``dual_lora`` only: ``"size"`` (default) or ``"rated"`` (the global adapters
            rated by Rate-My-LoRA's Eq. 1 before the merge).

    Returns:
        ``{"returncode", "seconds", "workdir", "results": {file: path}, "sites": {site: folder}}``
        (and ``"dp"``: the history's DP settings and ``ε`` per round, when DP is on).

    Raises:
        RuntimeError: if the simulator fails or times out (the message names its log).
        ValueError: if `seed` is not a non-negative int, `transport_dtype` or `adapter` unknown (before
            anything is written).
    """
    seed = check_seed(seed)
    check_adapter_type(adapter)
    transport_dtype = transport_dtype or DEFAULT_TRANSPORT_DTYPE
    check_transport_dtype(transport_dtype)
    workdir = Path(workdir).resolve()
    sites = list(sites or ["site-1", "site-2", "site-3"])
    min_clients = min_clients or max(1, len(sites) - 1)
    cfg_dir = write_site_configs(workdir, Path(sites_root), sites, Path(pretrained), torch_threads, extra_site_config)
    job_dir = export_job(
        build_job(
            job,
            num_rounds=rounds,
            profile=profile,
            local_epochs=local_epochs,
            n_clients=len(sites),
            min_clients=min_clients,
            task_timeout=int(timeout or 3600),
            straggler_grace=straggler_grace,
            seed=seed,
            transport_dtype=transport_dtype,
            adapter=adapter,
            dp_clip=dp_clip,
            dp_noise_multiplier=dp_noise_multiplier,
            dp_delta=dp_delta,
            dp_reproducible_noise=dp_reproducible_noise,
            aggregation=aggregation,
        ),
        workdir / "job" / job,
    )
    return simulate_job(job_dir, workdir, sites, cfg_dir, torch_threads, timeout)


def simulate_job(
    job_dir: str | os.PathLike,
    workdir: str | os.PathLike,
    sites: list[str],
    site_config_dir: str | os.PathLike,
    torch_threads: int = 1,
    timeout: float | None = None,
) -> dict:
    """Run an exported job folder in the simulator, one client per site, and collect the results.

    Args:
        job_dir: the job folder (``meta.json`` + ``app/``), e.g. from :func:`cardiolora.fl.jobs.export_job`.
        workdir: work folder (the simulator workspace is ``<workdir>/simulate``, the results go to
            ``<workdir>/results/<job name>``).
        sites: site names, one simulated client each.
        site_config_dir: the folder of :func:`write_site_configs` (given as ``$CARDIOLORA_SITE_CONFIG``).
        torch_threads: torch CPU threads per simulated site.
        timeout: seconds before the simulator is stopped (None: no limit).

    Returns:
        ``{"job", "returncode", "seconds", "workdir", "log", "results": {file: path}, "sites": {site: folder}}``,
        and ``"dp"`` (settings, ``ε`` per round and final, from ``rml_history.json``) for a job with DP.

    Raises:
        RuntimeError: if the simulator fails or times out (the message names its log).
    """
    job_dir = Path(job_dir)
    workdir = Path(workdir).resolve()
    job = json.loads((job_dir / "meta.json").read_text())["name"]
    ws = workdir / "simulate"
    env = {**os.environ, "CARDIOLORA_SITE_CONFIG": str(site_config_dir), "PYTHONUNBUFFERED": "1"}
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):  # N sites share the cores
        env.setdefault(var, str(torch_threads))
    cmd = [
        sys.executable,
        "-m",
        "nvflare.cli",
        "simulator",
        str(job_dir),
        "-w",
        str(ws),
        "-n",
        str(len(sites)),
        "-c",
        ",".join(sites),
        "-t",
        str(len(sites)),
    ]
    log = workdir / "simulator.log"
    start = time.time()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
            raise RuntimeError(f"the simulator did not finish in {timeout} s; see {log}") from None
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, 9)
    seconds = time.time() - start
    run_dir = ws / "server" / "simulate_job"
    results_dir = workdir / "results" / job
    results_dir.mkdir(parents=True, exist_ok=True)
    results = {}
    for name in RESULT_FILES:
        src = run_dir / name
        if src.is_dir():
            shutil.copytree(src, results_dir / name, dirs_exist_ok=True)
        elif src.is_file():
            shutil.copy2(src, results_dir / name)
        else:
            continue
        results[name] = str(results_dir / name)
    summary = {
        "job": job,
        "returncode": rc,
        "seconds": round(seconds, 1),
        "workdir": str(workdir),
        "log": str(log),
        "results": results,
        # each site's folder of this job (the simulator's job id; <job>/latest points at the newest)
        "sites": {s: str(job_output_dir(workdir / "sites" / s, job, SimulatorConstants.JOB_NAME)) for s in sites},
    }
    if rc != 0:
        raise RuntimeError(f"the simulator exited with {rc}; see {log} and {ws}/server/log.txt")
    history = results_dir / "rml_history.json"
    if history.is_file():
        dp = json.loads(history.read_text()).get("dp")
        if dp is not None:
            summary["dp"] = dp
    return summary


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (``python -m cardiolora.fl.run``)."""
    p = argparse.ArgumentParser(prog="python -m cardiolora.fl.run", description=__doc__.splitlines()[0])
    p.add_argument("--job", required=True, choices=list(JOB_NAMES))
    p.add_argument("--sites-root", required=True, help="folder with <site>/datalist.json (phantoms: <out>/sites)")
    p.add_argument("--pretrained", required=True, help="base model W_0 (.pt)")
    p.add_argument("--workdir", required=True)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--profile", default="quick", choices=list(PROFILES))
    p.add_argument("--sites", default="site-1,site-2,site-3", help="comma-separated site names")
    p.add_argument("--local-epochs", type=int)
    p.add_argument("--min-clients", type=int)
    p.add_argument("--torch-threads", type=int, default=1)
    p.add_argument("--straggler-grace", type=int, default=600)
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="job seed of the sites' local training")
    p.add_argument("--transport-dtype", choices=["float16", "float32"], help="dtype adapters travel in (LoRA jobs)")
    p.add_argument("--adapter", choices=list(ADAPTER_TYPES), default="lora", help="adapter type (adapter jobs)")
    add_dp_arguments(p)
    p.add_argument(
        "--aggregation",
        choices=list(DUAL_AGGREGATIONS),
        default=DEFAULT_AGGREGATION,
        help="dual_lora only: size (default) or rated (Rate-My-LoRA's Eq. 1 on the global adapters)",
    )
    args = p.parse_args(argv)
    try:
        summary = run_simulation(
            args.job,
            args.sites_root,
            args.pretrained,
            args.workdir,
            args.rounds,
            args.profile,
            args.sites.split(","),
            args.local_epochs,
            args.min_clients,
            args.torch_threads,
            straggler_grace=args.straggler_grace,
            seed=args.seed,
            transport_dtype=args.transport_dtype,
            adapter=args.adapter,
            dp_clip=args.dp_clip,
            dp_noise_multiplier=args.dp_noise_multiplier,
            dp_delta=args.dp_delta,
            dp_reproducible_noise=args.dp_reproducible_noise,
            aggregation=args.aggregation,
        )
    except (RuntimeError, FileNotFoundError, ValueError) as err:
        print(f"cardiolora.fl.run: {err}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
