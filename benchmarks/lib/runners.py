"""The method runners of the federated comparison (`lib.harness`): base, local, FLARE job, centralised.

Every method runs through the project's entry points (`cardiolora.bundle.run_workflow`,
`cardiolora.fl.jobs.build_job` and `cardiolora.fl.run.simulate_job`); each runner returns the method's score matrix
``{owner: {evaluator: {metric: value}}}`` (`evaluate_matrix`, `matrix_from_cross_eval`) and its
bandwidth (`lib.tables`).
"""

from __future__ import annotations

import json
import logging
import os
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from cardiolora.atomic import write_json
from cardiolora.bundle import run_workflow
from cardiolora.data.dataset import DATALIST_NAME, load_datalist, write_datalist
from cardiolora.evaluation import evaluate_records
from cardiolora.fl.jobs import build_job, export_job
from cardiolora.fl.run import simulate_job, write_site_configs
from cardiolora.metrics import METRICS, aggregate_scores
from cardiolora.networks import load_weights, lora_unet, rank_for_dataset_size, read_state_dict
from cardiolora.profiles import get_profile

from .tables import bandwidth_from_history, dp_budget, fedavg_bandwidth, state_dict_bytes

__all__ = [
    "pretrain_base",
    "centralised_datalist",
    "reuse_or_run",
    "record_failure",
    "evaluate_matrix",
    "matrix_from_cross_eval",
    "run_local",
    "run_federated",
    "run_centralised",
]

logger = logging.getLogger(__name__)


def pretrain_base(workdir: Path, sites_root: Path, profile: str, progress: bool = False) -> Path:
    """Pretrain the base on ``<sites_root>/reference`` with the bundle (reused when finished)."""
    out = Path(workdir) / "base"
    if not ((out / "model_final.pt").is_file() and (out / "model.pt").is_file()):
        run_workflow(
            "train",
            {
                "dataset_dir": str((sites_root / "reference").resolve()),
                "output_dir": str(out.resolve()),
                "model_dir": str(out.resolve()),
                "profile": profile,
                "progress": progress,
            },
        )
    return out / "model.pt"


# ------------------------------------------------------------------------------------------------
# datalists, reuse
# ------------------------------------------------------------------------------------------------


def centralised_datalist(sites_root: str | os.PathLike, sites: Sequence[str], out_dir: str | os.PathLike) -> Path:
    """Pool the train and val splits of all sites into ``<out_dir>/datalist.json``.

    Every site's test split is kept apart under ``test_<site>`` (there is no pooled ``test``), so
    the centralised model is scored on exactly the cases the other methods are scored on.
    Paths are absolute. Each entry's ``meta["site"]`` names its site.

    Returns:
        The datalist path.
    """
    splits: dict[str, list] = {"train": [], "val": []}
    for site in sites:
        for key in ("train", "val", "test"):
            rows = [
                {**e, "meta": {**(e.get("meta") or {}), "site": site}}
                for e in load_datalist(Path(sites_root) / site, key)
            ]
            if key == "test":
                splits[f"test_{site}"] = rows
            else:
                splits[key].extend(rows)
    return write_datalist(splits, Path(out_dir) / DATALIST_NAME, meta={"pooled_sites": list(sites)})


def reuse_or_run(folder: str | os.PathLike, run: Callable[[Path], Mapping[str, Any]]) -> dict:
    """Return ``<folder>/done.json`` if it exists, else ``run(folder)`` written there as ``done.json``.

    A folder without ``done.json`` (an interrupted run) is run again; whatever `run` can resume
    (the bundle's checkpoints, the FLARE server state) it resumes.
    """
    folder = Path(folder)
    done = folder / "done.json"
    if done.is_file():
        logger.info("reusing %s", done)
        return json.loads(done.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    result = dict(run(folder))
    result.setdefault("seconds", round(time.time() - t0, 1))
    write_json(result, done)
    return json.loads(done.read_text())


FAILED_NAME = "failed.json"


def record_failure(folder: str | os.PathLike, exc: BaseException) -> str:
    """Write why a method run failed to ``<folder>/failed.json`` and return the one-line reason.

    The folder keeps whatever the run left (checkpoints, FLARE logs, the server state), so a rerun
    of the comparison resumes or retries it; the harness deletes the file once the run is scored.

    Args:
        folder: the method's folder (``<workdir>/seed<s>/<method>``).
        exc: the exception the run raised.

    Returns:
        ``"<ExceptionType>: <message>"`` (first line of the message, at most 300 characters).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lines = str(exc).strip().splitlines() or [""]
    reason = f"{type(exc).__name__}: {lines[0][:300]}"
    write_json(
        {
            "error": reason,
            "message": str(exc),
            "traceback": traceback.format_exception(exc)[-12:],
            "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
        folder / FAILED_NAME,
    )
    return reason


# ------------------------------------------------------------------------------------------------
# evaluation
# ------------------------------------------------------------------------------------------------


def evaluate_matrix(
    models: Mapping[str, str | os.PathLike],
    sites_root: str | os.PathLike,
    sites: Sequence[str],
    profile: str,
    test_dirs: Mapping[str, str | os.PathLike] | None = None,
) -> dict:
    """Score each owner's weights on every site's test split; the same file is evaluated once.

    Args:
        models: owner site → weights file (plain U-Net state dict).
        sites_root: folder of ``<site>/datalist.json``.
        sites: the evaluator sites.
        profile: run profile.
        test_dirs: where a site's datalist is, when not ``sites_root/<site>``.

    Returns:
        ``{owner: {evaluator: {metric: mean over structures}}}``.
    """
    cache: dict[str, dict] = {}
    out: dict = {}
    for owner, path in models.items():
        key = str(Path(path).resolve())
        if key not in cache:
            net = lora_unet(profile)
            load_weights(net, path)
            net.eval()
            row = {}
            for ev in sites:
                folder = Path((test_dirs or {}).get(ev, Path(sites_root) / ev))
                rows = evaluate_records(net, load_datalist(folder, "test"), profile)
                agg = aggregate_scores([r["scores"] for r in rows])
                row[ev] = {m: agg["mean"][m]["mean"] for m in METRICS}
            cache[key] = row
        out[owner] = cache[key]
    return out


def matrix_from_cross_eval(cross: Mapping[str, Any], sites: Sequence[str]) -> dict:
    """Score matrix of the personalised models from a job's ``cross_site_eval.json``.

    ``mean_over_structures[metric][owner][evaluator]`` → ``{owner: {evaluator: {metric: value}}}``.
    """
    means = cross.get("mean_over_structures") or {}
    out: dict = {}
    for metric, by_model in means.items():
        for owner in sites:
            for ev, value in (by_model.get(owner) or {}).items():
                out.setdefault(owner, {}).setdefault(ev, {})[metric] = value
    return out


# ------------------------------------------------------------------------------------------------
# method runners
# ------------------------------------------------------------------------------------------------


def _total_epochs(profile: str, rounds: int) -> int:
    return rounds * get_profile(profile).local_epochs + 1


def run_local(
    folder: Path, sites_root: Path, sites: Sequence[str], base: Path, profile: str, rounds: int, seed: int
) -> dict:
    """Local only: the bundle's ``lora`` workflow at each site, ``rounds × local_epochs + 1`` epochs."""
    sizes = {s: len(load_datalist(sites_root / s, "train")) for s in sites}
    models, ranks = {}, {}
    epochs = _total_epochs(profile, rounds)
    for s in sites:
        out = folder / s
        ranks[s] = rank_for_dataset_size(sizes[s], max(sizes.values()))
        run_workflow(
            "lora",
            {
                "dataset_dir": str((sites_root / s).resolve()),
                "output_dir": str(out.resolve()),
                "model_dir": str(out.resolve()),
                "profile": profile,
                "max_epochs": epochs,
                "lora_rank": ranks[s],
                "pretrained_path": str(base.resolve()),
                "seed": seed,
                "progress": False,
            },
        )
        models[s] = out / "model.pt"
    matrix = evaluate_matrix(models, sites_root, sites, profile)
    bw = {s: {"up_per_round": 0.0, "down_per_round": 0.0, "up_total": 0, "down_total": 0, "rounds": 0} for s in sites}
    return {"matrix": matrix, "bandwidth": bw, "epochs": epochs, "ranks": ranks}


def run_federated(
    folder: Path,
    job: str,
    sites_root: Path,
    sites: Sequence[str],
    base: Path,
    profile: str,
    rounds: int,
    seed: int,
    job_kwargs: Mapping[str, Any] | None = None,
) -> dict:
    """One FLARE job in the simulator; personalised models (adapter jobs) or the global model (FedAvg) scored.

    The job is built by `cardiolora.fl.jobs.build_job` with the run's rounds, profile, sites and
    `seed` (every site's local training depends on it) and `job_kwargs` (the method's own job
    settings, `lib.methods.MethodSpec.job_kwargs`), exported to ``<folder>/job/<job>`` and run
    with `cardiolora.fl.run.simulate_job` — the steps of `cardiolora.fl.run.run_simulation`, whose
    signature holds a fixed set of job settings, so any setting `build_job` takes can be a row.

    Args:
        folder: the run folder (``<workdir>/seed<s>/<method>``).
        job: the FLARE job (`cardiolora.fl.jobs.JOB_NAMES`).
        sites_root: folder of ``<site>/datalist.json``.
        sites: the sites (all of them must answer: ``min_clients = len(sites)``).
        base: the base model ``W_0``.
        profile: run profile.
        rounds: federated rounds.
        seed: the job seed.
        job_kwargs: more keyword arguments of `build_job` (e.g. ``{"adapter": "tensor"}``).

    Returns:
        ``{"job", "job_kwargs", "seconds_simulator", "seed", "matrix", "bandwidth", "history"}`` and,
        when the job recorded a privacy budget (`lib.tables.dp_budget`), ``"privacy"``.

    Raises:
        TypeError: if `build_job` does not take one of `job_kwargs` (the job is not built yet).
        RuntimeError: if the simulator fails.
    """
    kwargs = dict(job_kwargs or {})
    folder = Path(folder).resolve()
    cfg_dir = write_site_configs(folder, Path(sites_root), list(sites), Path(base))
    fed_job = build_job(
        job,
        num_rounds=rounds,
        profile=profile,
        n_clients=len(sites),
        min_clients=len(sites),
        seed=seed,
        **kwargs,
    )
    run = simulate_job(export_job(fed_job, folder / "job" / job), folder, list(sites), cfg_dir)
    results = folder / "results" / job
    out: dict = {"job": job, "job_kwargs": kwargs, "seconds_simulator": run["seconds"], "seed": seed}
    if "dp" in run:  # the DP jobs: settings and ε per round from the history
        out["dp"] = run["dp"]
    if job == "fedavg_full":
        g = results / "global_model.pt"
        out["matrix"] = evaluate_matrix({s: g for s in sites}, sites_root, sites, profile)
        out["bandwidth"] = fedavg_bandwidth(state_dict_bytes(read_state_dict(g)), sites, rounds)
        out["history"] = []
        return out
    cross = json.loads((results / "cross_site_eval.json").read_text())
    history = json.loads((results / "rml_history.json").read_text())
    out["matrix"] = matrix_from_cross_eval(cross, sites)
    out["bandwidth"] = bandwidth_from_history(history)
    out["history"] = history
    privacy = dp_budget(history)  # the server's history holds every ε (the sites' summaries hold none)
    if privacy is not None:
        out["privacy"] = privacy
    return out


def run_centralised(
    folder: Path, sites_root: Path, sites: Sequence[str], base: Path, profile: str, rounds: int, seed: int
) -> dict:
    """Upper bound: pooled train/val, full-weight fine-tuning of the base through the ``train`` workflow."""
    data = folder / "data"
    centralised_datalist(sites_root, sites, data)
    epochs = _total_epochs(profile, rounds)
    run_workflow(
        "train",
        {
            "dataset_dir": str(data.resolve()),
            "output_dir": str(folder.resolve()),
            "model_dir": str(folder.resolve()),
            "profile": profile,
            "max_epochs": epochs,
            "load_pretrain": True,
            "pretrained_path": str(base.resolve()),
            "seed": seed,
            "progress": False,
        },
    )
    g = folder / "model.pt"
    return {
        "matrix": evaluate_matrix({s: g for s in sites}, sites_root, sites, profile),
        "bandwidth": None,
        "epochs": epochs,
    }
