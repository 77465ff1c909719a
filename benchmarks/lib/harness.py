"""The experiment harness behind ``benchmarks/compare.py``: the paper's Tables 1 and 2.

On the same sites, splits and seeds it runs the methods of `lib.methods.METHOD_SPECS` and compares them:

* ``local`` — LoRA fine-tuning of the base at each site alone (the bundle's ``lora`` workflow), for
  the same number of local epochs a site spends in a federated run (``rounds × local_epochs + 1``:
  the federated sites train one more epoch for their personal adapter at ``finalize``);
* ``fedavg_full`` — the ``fedavg_full`` FLARE job (full weights travel); its final global model is
  scored on every site's test split with `cardiolora.evaluation.evaluate_records`;
* ``fedpetuning``, ``rate_my_lora`` and the rows that vary a job setting (``rate_my_lora_tensor``:
  ``adapter="tensor"``; ``dual_lora_size`` / ``dual_lora_rated``: the ``dual_lora`` job with
  ``aggregation="size"`` / ``"rated"``; ``rate_my_lora_dp_low`` / ``_high``: DP on the adapter
  updates at two noise multipliers) — FLARE jobs with their own cross-site evaluation
  (``cross_site_eval.json``);
* ``centralised`` — the upper bound: the train/val splits of all sites pooled into one datalist,
  full-weight fine-tuning of the base with the bundle's ``train`` workflow (``load_pretrain``) for
  the same number of epochs.

Every method runs through the existing entry points (`cardiolora.bundle.run_workflow`,
`cardiolora.fl.jobs.build_job`, `cardiolora.fl.run.simulate_job`): there is no training or
federation loop here. The seed of a
run is the bundle ``seed`` of the local and centralised workflows and the job ``seed`` of the FLARE
jobs (each site seeds its round-t training with `cardiolora.fl.seeds.round_seed` of seed, site, t). A method's
folder ``<workdir>/seed<s>/<method>/`` gets a ``done.json`` when it finished; a rerun reuses it.

The result of one method and seed is a *score matrix* ``{owner: {evaluator: {metric: value}}}``:
the model of site ``owner`` scored on the test split of site ``evaluator`` (mean over LV, MYO and RV
of the per-case means). A single-model method (FedAvg, centralised) gives every site the same model.

The DP rows' sites send noised copies of their personalised models for cross-site evaluation
(the DP filter privatises ``finalize`` results too); their in-client entries (Table 1) are therefore
the site's own, un-noised model scored here (`lib.paired.own_model_entries`), the cross-client ones
the noised copies, as the job's table has them.

The parts: the methods in `lib.methods`, the sites in `lib.sites`, the method runners in
`lib.runners`, the tables, Markdown and curves in `lib.tables`, the upload/Dice plot in
`lib.plots`, the per-patient statistics in `lib.paired`.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cardiolora.atomic import write_json
from cardiolora.fl.seeds import DEFAULT_SEED, check_seed

from .methods import available_methods, method_spec, unavailable_reason
from .paired import (
    in_client_models,
    own_model_entries,
    paired_summary,
    per_case_scores,
    rating_events,
    render_paired_markdown,
)
from .plots import plot_bandwidth_dice
from .readme_blocks import machine_line, replace_block
from .runners import (
    FAILED_NAME,
    _total_epochs,
    pretrain_base,
    record_failure,
    reuse_or_run,
    run_centralised,
    run_federated,
    run_local,
)
from .sites import prepare_acdc, prepare_mnms2, prepare_phantoms
from .tables import (
    FEDERATED_METHODS,
    METHOD_TITLES,
    METHODS,
    bandwidth_dice_points,
    cross_client_table,
    in_client_table,
    plot_curves,
    render_markdown,
)

__all__ = ["run_comparison"]

logger = logging.getLogger(__name__)


def _run_method(method: str, folder: Path, **kw: Any) -> dict:
    """Dispatch one method to its runner (`run_local`, `run_centralised` or `run_federated`) by its spec.

    A federated method's job and job arguments come from `lib.methods.METHOD_SPECS`.
    """
    spec = method_spec(method)
    if spec.runner == "local":
        return run_local(folder, **kw)
    if spec.runner == "centralised":
        return run_centralised(folder, **kw)
    return run_federated(folder, spec.job, **kw, job_kwargs=spec.job_kwargs)


def _check_reusable(folder: Path, method: str, seed: int) -> None:
    """Refuse to reuse a FLARE result from before the jobs took the seed as a result of seed > 0.

    Such a ``done.json`` has a ``seed_note`` field: its sites trained with the per-round seeds of
    job seed 0 (`cardiolora.fl.seeds.round_seed`), so it is a valid result of seed 0 only.

    Args:
        folder: the method's folder (``<workdir>/seed<s>/<method>``).
        method: the method.
        seed: the seed the folder stands for.

    Raises:
        ValueError: if `folder` holds such a result and `seed` is not 0 (the message names the file).
    """
    done = folder / "done.json"
    if method not in FEDERATED_METHODS or seed == DEFAULT_SEED or not done.is_file():
        return
    if "seed_note" in json.loads(done.read_text()):
        raise ValueError(
            f"{done}: made when the FLARE jobs ignored the seed (its sites used the seeds of seed "
            f"{DEFAULT_SEED}), so it is no result of seed {seed}; delete {folder} to run it with seed {seed}."
        )


def _per_case(
    folder: Path,
    method: str,
    res: Mapping[str, Any],
    sites_root: Path,
    sites: Sequence[str],
    profile: str,
    with_metrics: bool = False,
) -> dict:
    """The run's per-case in-client scores: kept in its ``done.json``, computed once when missing
    (again when `with_metrics` asks for the per-case metrics a run scored before they were kept)."""
    cases = res.get("per_case")
    stale = with_metrics and cases is not None and any("metrics" not in r for rows in cases.values() for r in rows)
    if cases is None or stale:
        res = {**res, "per_case": per_case_scores(in_client_models(method, folder, sites), sites_root, profile)}
        write_json(res, folder / "done.json")
    return res["per_case"]


def sends_privatised_models(method: str) -> bool:
    """Whether a method's sites send noised copies of their personalised models for cross-site
    evaluation: the DP rows (the DP filter privatises every ``train`` and ``finalize`` result), whose
    own models stay at the site un-noised."""
    return method_spec(method).job_kwargs.get("dp_noise_multiplier") is not None


def with_own_diagonal(matrix: Mapping[str, Mapping[str, Any]], own: Mapping[str, Mapping[str, Any]]) -> dict:
    """A score matrix whose in-client entries (owner = evaluator) are replaced by `own`.

    Args:
        matrix: ``{owner: {evaluator: {metric: value}}}``.
        own: ``{site: {metric: value}}`` (`lib.paired.own_model_entries`).

    Returns:
        A new matrix; the cross-client entries are `matrix`'s.

    Example:
        >>> with_own_diagonal({"a": {"a": {"dice": 0.5}, "b": {"dice": 0.4}}}, {"a": {"dice": 0.9}})
        {'a': {'a': {'dice': 0.9}, 'b': {'dice': 0.4}}}
    """
    out = {owner: dict(row) for owner, row in matrix.items()}
    for site, entry in own.items():
        out.setdefault(site, {})[site] = dict(entry)
    return out


def run_comparison(
    source: str,
    workdir: str | os.PathLike,
    seeds: Sequence[int] = (0,),
    rounds: int = 2,
    profile: str = "quick",
    data: str | os.PathLike | None = None,
    methods: Sequence[str] | None = None,
    command: str = "",
    readme: str | os.PathLike | None = None,
) -> dict:
    """Prepare the sites, pretrain the base, run every method and seed, write the summary files.

    Writes ``<workdir>/results.json``, ``results.md``, ``curves.png``, ``bandwidth_dice.png`` and,
    when `readme` is given, the block ``compare-<source>`` of that Markdown file (the PNGs copied to
    ``<readme folder>/results/compare_<source>_{curves,bandwidth_dice}.png``).

    A run that raises is recorded, not fatal: its reason goes to ``<folder>/failed.json`` and the
    summary's ``failures`` (``{method: {seed: {"error", "folder"}}}``, listed above the tables), the
    other runs go on, and a rerun retries it (resuming what it left). `compare.py` then exits 1.

    Args:
        methods: keys of `lib.methods.METHOD_SPECS`; None: every method this installation can run
            (`lib.methods.available_methods`).

    Raises:
        ValueError: for an unknown source or method (named), a method whose FLARE job or job
            arguments do not exist here (`lib.methods.unavailable_reason`, before anything runs), a
            seed that is not a non-negative int, or a FLARE result to reuse that was made before the
            jobs took the seed (`_check_reusable`).
    """
    methods = list(available_methods() if methods is None else methods)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"`methods` {unknown} unknown; known: {list(METHODS)}.")
    missing = [r for r in (unavailable_reason(method_spec(m)) for m in methods) if r]
    if missing:
        raise ValueError("`methods`: cannot run " + " ".join(missing))
    seeds = [check_seed(s, "seeds") for s in seeds]
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    if source == "phantoms":
        sites_root, sites = prepare_phantoms(workdir)
    elif source == "acdc":
        sites_root, sites = prepare_acdc(workdir, data or Path("../shared/data/acdc_h5"))
    elif source == "mnms2":
        if data is None:
            raise ValueError("`--data` is required for source `mnms2` (a folder in the M&Ms-2 layout).")
        sites_root, sites = prepare_mnms2(workdir, data)
    else:
        raise ValueError(f"`source` must be phantoms, acdc or mnms2, got {source!r}.")
    base = pretrain_base(workdir, sites_root, profile)
    results: dict = {m: {} for m in methods}
    per_case: dict = {}
    rating: dict = {}
    bandwidth: dict = {}
    histories: dict = {}
    seconds: dict = {}
    privacy: dict = {}
    failures: dict = {}
    for seed in seeds:
        for method in methods:
            folder = workdir / f"seed{seed}" / method
            logger.info("seed %s: %s in %s", seed, method, folder)
            fn = functools.partial(
                _run_method,
                method,
                sites_root=sites_root,
                sites=sites,
                base=base,
                profile=profile,
                rounds=rounds,
                seed=seed,
            )
            _check_reusable(folder, method, seed)
            try:
                res = reuse_or_run(folder, fn)
                own = sends_privatised_models(method)
                cases = _per_case(folder, method, res, sites_root, sites, profile, own)  # reads the run's models
                (folder / FAILED_NAME).unlink(missing_ok=True)  # an earlier failure of this run is history now
            except Exception as exc:  # noqa: BLE001 - one failed run must not cost the hours of the others
                reason = record_failure(folder, exc)
                failures.setdefault(method, {})[str(seed)] = {"error": reason, "folder": str(folder)}
                logger.error("seed %s: %s failed (%s); details in %s", seed, method, reason, folder / FAILED_NAME)
                continue
            # a DP site's in-client model is its own, un-noised one (Table 1); the others saw the noised copy
            matrix = with_own_diagonal(res["matrix"], own_model_entries(cases)) if own else res["matrix"]
            results[method][str(seed)] = matrix
            seconds.setdefault(method, {})[str(seed)] = res.get("seconds")
            if own:  # the DP rows
                privacy.setdefault(method, {})[str(seed)] = res.get("privacy")
            per_case.setdefault(method, {})[str(seed)] = cases
            if method == "rate_my_lora" and res.get("history"):
                rating[str(seed)] = rating_events(res["history"])
            if res.get("bandwidth") is not None:
                bandwidth.setdefault(method, res["bandwidth"])
            else:
                bandwidth.setdefault(method, {s: None for s in sites})
            if res.get("history"):
                histories.setdefault(method, res["history"])
    curves = plot_curves(histories, workdir / "curves.png")
    points = bandwidth_dice_points(results, bandwidth)
    bd_plot = plot_bandwidth_dice(points, workdir / "bandwidth_dice.png", METHOD_TITLES)
    summary = {
        "command": command,
        "machine": machine_line(),
        "source": source,
        "profile": profile,
        "rounds": rounds,
        "seeds": list(seeds),
        "sites": list(sites),
        "in_client": in_client_table(results),
        "cross_client": cross_client_table(results),
        "bandwidth": bandwidth,
        "privacy": privacy,
        "bandwidth_dice": points,
        "bandwidth_dice_plot": str(bd_plot) if bd_plot else None,
        "seconds": seconds,
        "failures": failures,
        "raw": results,
        **paired_summary(per_case, rating),
        "curves": str(curves) if curves else None,
        "notes": [
            f"Local only and centralised train {_total_epochs(profile, rounds)} epochs "
            "(rounds × local epochs + the federated personalisation epoch) and keep the best-validation "
            "weights; the federated sites' personalised models are those of the last round. `--seeds` "
            "is the bundle seed of the local and centralised runs and the job seed of the FLARE runs "
            "(each site's round-t seed is a function of seed, site and t).",
            *(
                [
                    "DP rows: Table 1 and the upload/Dice points score each site's own personalised model, which "
                    "stays at the site un-noised; Table 2 scores the privatised copies the sites sent for "
                    "cross-site evaluation (the DP filter noises every `finalize` result too, so the job's own "
                    "`cross_site_eval.json` has the noised copies on its diagonal as well)."
                ]
                if any(sends_privatised_models(m) for m in methods)
                else []
            ),
        ],
    }
    write_json(summary, workdir / "results.json")
    md = render_markdown(summary) + render_paired_markdown(summary, METHOD_TITLES)
    (workdir / "results.md").write_text(md)
    if readme is not None:
        body = md
        for png, name, alt in ((curves, "curves", "curves"), (bd_plot, "bandwidth_dice", "upload vs Dice")):
            if png:
                dest = Path(readme).parent / "results" / f"compare_{source}_{name}.png"
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(png, dest)
                body = body.replace(
                    f"`{png}`", f"![{alt}](results/{dest.name}) (`{dest.relative_to(Path(readme).parent)}`)"
                )
        replace_block(readme, f"compare-{source}", body)
    return summary
