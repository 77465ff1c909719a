"""The cross-site evaluation table (``cross_site_eval.json``) from the sites' ``cross_eval`` answers.

In ``cross_eval`` every site scores ``W_T`` (``"global"``) and every site's personalised model
(named by its owner) on its own test split and answers ``{"models": {model: entry}}`` with
``entry = {"n_cases", "summary": {structure: {metric: {"mean", "std", "n"}}}}``
(:func:`cardiolora.metrics.aggregate_scores`). :func:`cross_site_table` arranges the answers as
FLARE's cross-site evaluation does: by model, then by evaluating site;
:func:`write_cross_site_table` writes it into the server's run folder.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from cardiolora.atomic import write_json

__all__ = ["CROSS_EVAL_FILE", "DESCRIPTION", "cross_site_table", "write_cross_site_table"]

#: The table in the server's run folder.
CROSS_EVAL_FILE = "cross_site_eval.json"
#: What the table's parts mean (written into it).
DESCRIPTION = (
    "global: W_T on each site's test split; in_client: each site's personalised model on its own test "
    "split; cross_client[owner][evaluator]: owner's personalised model (W_T + its personal adapter) on "
    "the evaluator's test split. Each entry: n_cases and summary[structure][metric] = mean/std/n."
)


def cross_site_table(models: Mapping[str, Any]) -> dict[str, Any]:
    """Arrange every evaluator's ``models`` answer into the cross-site table.

    Args:
        models: ``{evaluator site: its "models" answer}``; an answer that is not a mapping is left
            out of the ``global`` / ``in_client`` / ``cross_client`` parts (the caller logs it).

    Returns:
        ``{"global": {evaluator: entry}, "in_client": {site: entry}, "cross_client": {owner:
        {evaluator: entry}}, "mean_over_structures": {metric: {model: {evaluator: mean}}},
        "description"}``, where ``mean_over_structures`` holds the ``summary["mean"]`` row (the mean
        over LV / MYO / RV).

    Example:
        >>> entry = {"n_cases": 1, "summary": {"mean": {"dice": {"mean": 0.8}}}}
        >>> cross_site_table({"a": {"global": entry, "a": entry, "b": entry}})["cross_client"]["b"]["a"]["n_cases"]
        1
    """
    table: dict[str, Any] = {"global": {}, "in_client": {}, "cross_client": {}}
    for evaluator, answer in sorted(models.items()):
        if not isinstance(answer, Mapping):
            continue
        for name, entry in answer.items():
            if name == "global":
                table["global"][evaluator] = entry
            elif name == evaluator:
                table["in_client"][evaluator] = entry
            else:
                table["cross_client"].setdefault(name, {})[evaluator] = entry
    means: dict[str, dict[str, dict[str, Any]]] = {}
    for evaluator, answer in sorted(models.items()):
        for name, entry in (answer or {}).items():
            summary = (entry or {}).get("summary", {}).get("mean", {}) if isinstance(entry, Mapping) else {}
            for metric, stats in summary.items():
                if isinstance(stats, Mapping):
                    means.setdefault(metric, {}).setdefault(name, {})[evaluator] = stats.get("mean")
    table["mean_over_structures"] = means  # {metric: {model: {evaluator site: mean over LV/MYO/RV}}}
    table["description"] = DESCRIPTION
    return table


def write_cross_site_table(
    models: Mapping[str, Any], folder: str | os.PathLike, warn: Callable[[str], None] | None = None
) -> Path:
    """Write :func:`cross_site_table` of `models` as ``<folder>/cross_site_eval.json`` (atomically).

    Args:
        models: ``{evaluator site: its "models" answer}`` (see :func:`cross_site_table`).
        folder: the server's run folder.
        warn: where to report an evaluator whose answer is not a ``models`` table (default: nowhere).

    Returns:
        The path of the table.
    """
    for evaluator in sorted(models):
        if not isinstance(models[evaluator], Mapping) and warn is not None:
            warn(f"{evaluator}: `cross_eval` gave no `models` table.")
    return write_json(cross_site_table(models), Path(folder) / CROSS_EVAL_FILE)
