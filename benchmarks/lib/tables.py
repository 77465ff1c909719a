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
    "render_markdown",
    "plot_curves",
]

#: The methods in table order.
METHODS: tuple[str, ...] = ("local", "fedavg_full", "fedpetuning", "rate_my_lora", "centralised")
#: The methods that run as FLARE jobs (`run_federated`).
FEDERATED_METHODS: tuple[str, ...] = ("fedavg_full", "fedpetuning", "rate_my_lora")
METHOD_TITLES: dict[str, str] = {
    "local": "Local only (LoRA)",
    "fedavg_full": "FedAvg (full weights)",
    "fedpetuning": "FedPETuning",
    "rate_my_lora": "Rate-My-LoRA",
    "centralised": "Centralised (upper bound)",
}
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


def render_markdown(summary: Mapping[str, Any], metrics: Sequence[str] = TABLE_METRICS) -> str:
    """Markdown of a comparison: command, machine line, Table 1, Table 2, bandwidth, curves.

    Args:
        summary: ``{"command", "machine", "source", "seeds", "rounds", "profile", "in_client",
            "cross_client", "bandwidth": {method: {site: ...}}, "seconds": {method: {seed: s}},
            "curves": png name or None,
            "notes": [str]}``.
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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
