"""The bandwidth/Dice plot of the federated comparison (`lib.harness`).

One point per method: upload bytes per round (x, log scale) against mean in-client Dice (y, error
bar: std over seeds), from `lib.tables.bandwidth_dice_points`. Methods that upload nothing through
a federation (local only: 0 bytes; centralised: no federation) cannot sit on a log axis; they are
drawn as horizontal reference lines at their Dice.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cardiolora.atomic import save_figure

__all__ = ["plot_bandwidth_dice"]


def plot_bandwidth_dice(
    points: Mapping[str, Mapping[str, Any]], path: str | os.PathLike, titles: Mapping[str, str] | None = None
) -> Path | None:
    """Write the PNG of upload per round vs mean in-client Dice.

    Args:
        points: ``{method: {"up_per_round": bytes or None, "dice": {"mean", "std", "n"}}}``
            (`lib.tables.bandwidth_dice_points`).
        path: the PNG to write (its folder is created).
        titles: method → label (default: the method keys).

    Returns:
        `path`, or None when no method has a finite Dice (nothing is written).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    titles = dict(titles or {})
    scored = {m: p for m, p in points.items() if p["dice"].get("n") and math.isfinite(p["dice"]["mean"])}
    if not scored:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    markers = "osD^v<>ph*X"
    i = 0
    for method, p in scored.items():
        up, d = p.get("up_per_round"), p["dice"]
        label = titles.get(method, method)
        if up is None or up <= 0:
            ax.axhline(d["mean"], linestyle=":", color="grey", linewidth=1)
            ax.annotate(
                f"{label} (no upload)", (0.01, d["mean"]), xycoords=("axes fraction", "data"), fontsize=7, va="bottom"
            )
            continue
        ax.errorbar(up / 1e6, d["mean"], yerr=d["std"], fmt=markers[i % len(markers)], capsize=3, label=label)
        i += 1
    if i:
        ax.set_xscale("log")
    ax.set_xlabel("upload per site and round (MB, log scale; mean over sites)")
    ax.set_ylabel("mean in-client Dice (± std over seeds)")
    ax.set_title("Upload vs Dice")
    ax.grid(True, which="both", alpha=0.3)
    if i:
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return save_figure(fig, path)
