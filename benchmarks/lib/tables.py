"""Tables, bandwidth, Markdown and curves of the federated comparison (`lib.harness`).

The input is one *score matrix* ``{owner: {evaluator: {metric: value}}}`` per method and seed:
the model of site ``owner`` scored on the test split of site ``evaluator``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cardiolora.atomic import save_figure

from .methods import METHOD_SPECS

__all__ = [
    "METHODS",
    "FEDERATED_METHODS",
    "METHOD_TITLES",
    "TABLE_METRICS",
    "mean_std",
    "in_client_table",
    "cross_client_table",
    "bandwidth_from_history",
    "fedavg_bandwidth",
    "state_dict_bytes",
    "dp_budget",
    "bandwidth_dice_points",
    "render_markdown",
    "plot_curves",
]

#: The methods in table order (`lib.methods.METHOD_SPECS`).
METHODS: tuple[str, ...] = tuple(METHOD_SPECS)
#: The methods that run as FLARE jobs (`run_federated`).
FEDERATED_METHODS: tuple[str, ...] = tuple(m for m, s in METHOD_SPECS.items() if s.runner == "federated")
METHOD_TITLES: dict[str, str] = {m: s.title for m, s in METHOD_SPECS.items()}
#: The metrics of the tables, as the paper reports them (HD95 is in the JSON too).
TABLE_METRICS: tuple[str, ...] = ("dice", "voe", "hd", "assd")
_METRIC_TITLES = {"dice": "DICE", "voe": "VOE (%)", "hd": "HD (mm)", "hd95": "HD95 (mm)", "assd": "ASSD (mm)"}
FL_SITES: tuple[str, ...] = ("site-1", "site-2", "site-3")

# ------------------------------------------------------------------------------------------------
# tables
# ------------------------------------------------------------------------------------------------


def mean_std(values: Sequence[float | None]) -> dict:
    """NaN-aware mean and population std over seeds: ``{"mean", "std", "n"}`` (NaN and n 0 if none)."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return {"mean": float("nan"), "std": float("nan"), "n": 0}
    return {"mean": float(np.mean(vals)), "std": float(np.std(vals)), "n": len(vals)}


def in_client_table(results: Mapping[str, Mapping[str, Mapping]], metrics: Sequence[str] = TABLE_METRICS) -> dict:
    """Table 1: each site's model on its own test split, mean ± std over seeds.

    Args:
        results: ``{method: {seed: score matrix}}`` (see the module docstring).
        metrics: the metrics to tabulate.

    Returns:
        ``{method: {site: {metric: {"mean", "std", "n"}}}}``.
    """
    table: dict = {}
    for method, by_seed in results.items():
        sites = sorted({s for m in by_seed.values() for s in m})
        table[method] = {
            s: {k: mean_std([(m.get(s) or {}).get(s, {}).get(k) for m in by_seed.values()]) for k in metrics}
            for s in sites
        }
    return table


def cross_client_table(results: Mapping[str, Mapping[str, Mapping]], metrics: Sequence[str] = TABLE_METRICS) -> dict:
    """Table 2: each site's model on the *other* sites' test splits (diagonal excluded).

    Per seed the owner's score is the mean over evaluators ≠ owner; then mean ± std over seeds.

    Returns:
        ``{method: {owner: {metric: {"mean", "std", "n"}}}}``.
    """
    table: dict = {}
    for method, by_seed in results.items():
        owners = sorted({s for m in by_seed.values() for s in m})
        table[method] = {}
        for owner in owners:
            row = {}
            for k in metrics:
                per_seed = []
                for m in by_seed.values():
                    vals = [
                        v.get(k)
                        for ev, v in (m.get(owner) or {}).items()
                        if ev != owner and v.get(k) is not None and math.isfinite(float(v.get(k)))
                    ]
                    per_seed.append(float(np.mean(vals)) if vals else None)
                row[k] = mean_std(per_seed)
            table[method][owner] = row
    return table


def _round_records(history: Sequence[Mapping[str, Any]] | Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The round records of an ``rml_history.json`` (the file's ``rounds`` list, or a bare list)."""
    if isinstance(history, Mapping):
        return list(history.get("rounds") or [])
    return list(history)


def bandwidth_from_history(history: Sequence[Mapping[str, Any]] | Mapping[str, Any]) -> dict:
    """Bytes per site from a LoRA job's ``rml_history.json`` (its ``rounds`` list, or the list itself).

    Training rounds are the records with ``round >= 1`` and no ``task`` field; ``per_round`` is
    the mean over them, ``total`` sums every record (init, rounds, finalize, cross-eval).

    Returns:
        ``{site: {"up_per_round", "down_per_round", "up_total", "down_total", "rounds"}}``.
    """
    out: dict = {}
    for rec in _round_records(history):
        training = int(rec.get("round") or 0) >= 1 and not rec.get("task")
        for site, v in (rec.get("sites") or {}).items():
            if not isinstance(v, Mapping):
                continue
            s = out.setdefault(site, {"up": [], "down": [], "up_total": 0, "down_total": 0})
            up, down = int(v.get("bytes_up") or 0), int(v.get("bytes_down") or 0)
            s["up_total"] += up
            s["down_total"] += down
            if training:
                s["up"].append(up)
                s["down"].append(down)
    return {
        site: {
            "up_per_round": float(np.mean(s["up"])) if s["up"] else 0.0,
            "down_per_round": float(np.mean(s["down"])) if s["down"] else 0.0,
            "up_total": s["up_total"],
            "down_total": s["down_total"],
            "rounds": len(s["up"]),
        }
        for site, s in out.items()
    }


def state_dict_bytes(state: Mapping[str, Any]) -> int:
    """Payload bytes of a state dict: ``Σ numel × element size`` over its tensors."""
    return int(sum(t.numel() * t.element_size() for t in state.values() if hasattr(t, "numel")))


def fedavg_bandwidth(model_bytes: int, sites: Sequence[str], rounds: int) -> dict:
    """FedAvg with full weights: every round each site gets the model down and sends it up.

    Returns:
        The same layout as `bandwidth_from_history` (totals = ``rounds × model_bytes``).
    """
    return {
        s: {
            "up_per_round": float(model_bytes),
            "down_per_round": float(model_bytes),
            "up_total": rounds * model_bytes,
            "down_total": rounds * model_bytes,
            "rounds": rounds,
        }
        for s in sites
    }


def dp_budget(*documents: Any) -> dict | None:
    """The privacy budget a DP job recorded: the largest ε found in the documents (its ``rml_history.json``).

    Looks at any depth of the JSON documents for a mapping with a numeric ``epsilon`` key (the
    accountant's ε spent so far; it only grows over rounds, so the largest is the job's total) and
    takes ``delta`` from the same mapping.

    Args:
        documents: parsed JSON documents (the job's ``rml_history.json``; any other record of ε).

    Returns:
        ``{"epsilon", "delta", "records"}`` (``records``: how many ε values were found), or None
        when no document holds one (a job without DP).
    """
    found: list[tuple[float, Any]] = []

    def walk(obj: Any) -> None:
        if isinstance(obj, Mapping):
            eps = obj.get("epsilon")
            if isinstance(eps, (int, float)) and not isinstance(eps, bool):
                found.append((float(eps), obj.get("delta")))
            for v in obj.values():
                walk(v)
        elif isinstance(obj, (list, tuple)):
            for v in obj:
                walk(v)

    for doc in documents:
        walk(doc)
    if not found:
        return None
    eps, delta = max(found, key=lambda e: e[0])
    return {"epsilon": eps, "delta": delta, "records": len(found)}


def bandwidth_dice_points(
    results: Mapping[str, Mapping[str, Mapping]], bandwidth: Mapping[str, Mapping[str, Any]]
) -> dict:
    """One point per method: upload bytes per round against mean in-client Dice.

    ``up = mean_c up_per_round(c)`` over the sites with a byte record (``None`` when the method
    sends nothing through a federation: no record at all, e.g. centralised); per seed
    ``dice = mean_c S[c][c]["dice"]`` (each site's model on its own test split), then mean ± std
    over seeds (`mean_std`).

    Args:
        results: ``{method: {seed: score matrix}}``.
        bandwidth: ``{method: {site: bandwidth_from_history record or None}}``.

    Returns:
        ``{method: {"up_per_round": float or None, "dice": {"mean", "std", "n"}}}`` in the order of `results`.
    """
    out: dict = {}
    for method, by_seed in results.items():
        per_seed = []
        for m in by_seed.values():
            vals = [(m.get(s) or {}).get(s, {}).get("dice") for s in m]
            vals = [float(v) for v in vals if v is not None and math.isfinite(float(v))]
            per_seed.append(float(np.mean(vals)) if vals else None)
        ups = [b["up_per_round"] for b in (bandwidth.get(method) or {}).values() if b is not None]
        out[method] = {"up_per_round": float(np.mean(ups)) if ups else None, "dice": mean_std(per_seed)}
    return out


# ------------------------------------------------------------------------------------------------
# rendering
# ------------------------------------------------------------------------------------------------


def _fmt(cell: Mapping[str, Any], digits: int) -> str:
    m, s, n = cell.get("mean"), cell.get("std"), cell.get("n", 0)
    if not n or m is None or not math.isfinite(m):
        return "n/a"
    return f"{m:.{digits}f} ± {s:.{digits}f}" if n > 1 else f"{m:.{digits}f}"


def _score_table(table: Mapping[str, Mapping[str, Mapping]], metrics: Sequence[str]) -> list[str]:
    sites = sorted({s for rows in table.values() for s in rows})
    head = "| method | " + " | ".join(f"{s} {_METRIC_TITLES.get(k, k)}" for s in sites for k in metrics) + " |"
    lines = [head, "|---|" + "---|" * (len(sites) * len(metrics))]
    for method in [m for m in METHODS if m in table] + [m for m in table if m not in METHODS]:
        cells = [_fmt(table[method].get(s, {}).get(k, {}), 3 if k == "dice" else 2) for s in sites for k in metrics]
        lines.append(f"| {METHOD_TITLES.get(method, method)} | " + " | ".join(cells) + " |")
    return lines


def _failure_lines(failures: Mapping[str, Mapping[str, Mapping[str, str]]]) -> list[str]:
    """Markdown rows of the runs that failed (they are missing from every table below them).

    Args:
        failures: ``{method: {seed (str): {"error": reason, "folder": path}}}``.

    Returns:
        The lines (empty when nothing failed).
    """
    if not failures:
        return []
    lines = [
        "",
        "**Failed runs** (missing from the tables; the reason is the run's `failed.json`; rerun the command to "
        "retry them):",
        "",
        "| method | seed | error |",
        "|---|---|---|",
    ]
    for method in [m for m in METHODS if m in failures] + [m for m in failures if m not in METHODS]:
        for seed, f in sorted(failures[method].items(), key=lambda kv: int(kv[0])):
            error = str(f.get("error", "")).replace("|", "\\|")
            lines.append(f"| {METHOD_TITLES.get(method, method)} | {seed} | {error} |")
    return lines


def _mb(x: float | None) -> str:
    return "—" if x is None else f"{x / 1e6:.2f} MB"


def _wall_time_lines(seconds: Mapping[str, Mapping[str, float | None]], seeds: Sequence[int]) -> list[str]:
    """Markdown rows of the wall time of each method run, in minutes, one column per seed.

    Args:
        seconds: ``{method: {seed (str): seconds or None}}`` (the ``seconds`` of each run's ``done.json``).
        seeds: the seeds, in column order.

    Returns:
        The lines (empty when no run recorded its time).
    """
    if not any(v for per in seconds.values() for v in per.values()):
        return []
    lines = [
        "",
        "**Wall time** (minutes per run as recorded in its `done.json`, on this machine; runs share the "
        "2 cores with whatever else ran then, so compare within a seed, not across seeds):",
        "",
        "| method | " + " | ".join(f"seed {s}" for s in seeds) + " |",
        "|---|" + "---|" * len(seeds),
    ]
    for method in [m for m in METHODS if m in seconds] + [m for m in seconds if m not in METHODS]:
        cells = [seconds[method].get(str(s)) for s in seeds]
        lines.append(
            f"| {METHOD_TITLES.get(method, method)} | "
            + " | ".join("—" if c is None else f"{c / 60:.1f}" for c in cells)
            + " |"
        )
    return lines


def _privacy_lines(privacy: Mapping[str, Mapping[str, Mapping | None]], seeds: Sequence[int]) -> list[str]:
    """Markdown rows of the DP methods: clip C, noise multiplier z, δ and the ε each run reported.

    Args:
        privacy: ``{method: {seed (str): dp_budget result or None}}``.
        seeds: the seeds, in column order.

    Returns:
        The lines (empty when no DP method ran).
    """
    dp = [m for m in METHODS if m in privacy and "dp_noise_multiplier" in METHOD_SPECS[m].job_kwargs]
    if not dp:
        return []
    lines = [
        "",
        "**Privacy** (site-level DP on the adapter updates: each site's update clipped to L2 norm C, "
        "Gaussian noise of std z·C added; ε at δ as the job's accountant reports it after the last round; "
        '"not recorded": the job wrote no ε):',
        "",
        "| method | C | z | δ | " + " | ".join(f"ε seed {s}" for s in seeds) + " |",
        "|---|---|---|---|" + "---|" * len(seeds),
    ]
    for method in dp:
        kw = METHOD_SPECS[method].job_kwargs
        cells = []
        for s in seeds:
            b = privacy[method].get(str(s))
            cells.append("not recorded" if not b else f"{b['epsilon']:.2f}")
        lines.append(
            f"| {METHOD_TITLES[method]} | {kw['dp_clip']:g} | {kw['dp_noise_multiplier']:g} | "
            f"{kw.get('dp_delta', float('nan')):g} | " + " | ".join(cells) + " |"
        )
    return lines


def _bandwidth_dice_lines(points: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Markdown rows of `bandwidth_dice_points`, with the upload as a fraction of FedAvg's (full weights)."""
    if not points:
        return []
    full = (points.get("fedavg_full") or {}).get("up_per_round")
    lines = [
        "",
        "**Upload vs Dice** (upload per round: mean over sites of the bytes a site sends per training round; "
        "Dice: mean over sites of the in-client Dice, mean ± std over seeds):",
        "",
        "| method | up per round | % of full weights | mean in-client Dice |",
        "|---|---|---|---|",
    ]
    for method in [m for m in METHODS if m in points] + [m for m in points if m not in METHODS]:
        p = points[method]
        up = p.get("up_per_round")
        pct = "—" if up is None or not full else f"{100 * up / full:.1f} %"
        lines.append(f"| {METHOD_TITLES.get(method, method)} | {_mb(up)} | {pct} | {_fmt(p['dice'], 3)} |")
    return lines


def render_markdown(summary: Mapping[str, Any], metrics: Sequence[str] = TABLE_METRICS) -> str:
    """Markdown of a comparison: command, machine line, Table 1, Table 2, bandwidth, privacy, upload vs Dice, curves.

    Args:
        summary: ``{"command", "machine", "source", "seeds", "rounds", "profile", "in_client",
            "cross_client", "bandwidth": {method: {site: ...}}, "seconds": {method: {seed: s}},
            "privacy": {method: {seed: dp_budget}}, "bandwidth_dice": bandwidth_dice_points,
            "bandwidth_dice_plot": png name or None, "curves": png name or None,
            "failures": {method: {seed: {"error", "folder"}}}, "notes": [str]}``.
        metrics: metrics in the tables.

    Returns:
        The Markdown text.
    """
    seeds = summary.get("seeds", [])
    lines = [
        f"`{summary.get('command', '')}` ({summary.get('machine', '')}):",
        "",
        f"Source `{summary.get('source')}`, profile `{summary.get('profile')}`, {summary.get('rounds')} rounds, "
        f"seeds {', '.join(str(s) for s in seeds)} (mean ± std over seeds when more than one). "
        "Scores: mean over LV, MYO and RV of the per-case means on each site's test split.",
        *_failure_lines(summary.get("failures") or {}),
        "",
        "**Table 1 — in-client** (each site's model on its own test split):",
        "",
        *_score_table(summary.get("in_client", {}), metrics),
        "",
        "**Table 2 — cross-client** (each site's model on the other sites' test splits, averaged):",
        "",
        *_score_table(summary.get("cross_client", {}), metrics),
        "",
        "**Bandwidth** (payload bytes as sent, per site: full weights and W_0 in float32, LoRA adapters in "
        "the jobs' transport dtype, float16 by default; per round = mean over training rounds; total = "
        "whole job incl. init / finalize / cross-evaluation):",
        "",
        "| method | site | up per round | down per round | up total | down total |",
        "|---|---|---|---|---|---|",
    ]
    for method in [m for m in METHODS if m in summary.get("bandwidth", {})]:
        for site, b in sorted(summary["bandwidth"][method].items()):
            if b is None:
                lines.append(f"| {METHOD_TITLES[method]} | {site} | — | — | — | — |")
                continue
            lines.append(
                f"| {METHOD_TITLES[method]} | {site} | {_mb(b['up_per_round'])} | {_mb(b['down_per_round'])} | "
                f"{_mb(b['up_total'])} | {_mb(b['down_total'])} |"
            )
    lines += _privacy_lines(summary.get("privacy") or {}, seeds)
    lines += _bandwidth_dice_lines(summary.get("bandwidth_dice") or {})
    if summary.get("bandwidth_dice_plot"):
        lines += ["", f"Upload per round against mean in-client Dice: `{summary['bandwidth_dice_plot']}`."]
    lines += _wall_time_lines(summary.get("seconds") or {}, seeds)
    if summary.get("curves"):
        lines += ["", f"Per-round curves (validation Dice P_t per site, λ_t, w_t(c)): `{summary['curves']}`."]
    for note in summary.get("notes", []):
        lines += ["", note]
    return "\n".join(lines) + "\n"


def plot_curves(histories: Mapping[str, Sequence[Mapping[str, Any]]], path: str | os.PathLike) -> Path | None:
    """PNG of validation Dice P_t^c per site, λ_t and w_t(c) per round for each LoRA job."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not histories:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(14, 4), dpi=90)
    for method, hist in histories.items():
        rounds = [r for r in _round_records(hist) if r.get("task") in (None, "init")]  # init: P_0 of W_0
        sites = sorted({s for r in rounds for s in (r.get("sites") or {})})
        style = "-" if method == "rate_my_lora" else "--"
        for s in sites:
            pts = [(r["round"], (r["sites"].get(s) or {}).get("score")) for r in rounds if s in (r.get("sites") or {})]
            pts = [(t, v) for t, v in pts if v is not None]
            if pts:
                axes[0].plot(*zip(*pts, strict=True), style, marker="o", label=f"{method} {s}")
            pts = [(r["round"], (r["sites"].get(s) or {}).get("rating")) for r in rounds if s in (r.get("sites") or {})]
            pts = [(t, v) for t, v in pts if v is not None]
            if pts:
                axes[2].plot(*zip(*pts, strict=True), style, marker="o", label=f"{method} {s}")
        pts = [(r["round"], r.get("lambda")) for r in rounds if r.get("lambda") is not None]
        if pts:
            axes[1].plot(*zip(*pts, strict=True), style, marker="o", label=method)
    for ax, title in zip(axes, ("validation Dice P_t(c)", "λ_t", "rating w_t(c)"), strict=True):
        ax.set_title(title)
        ax.set_xlabel("round")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)
