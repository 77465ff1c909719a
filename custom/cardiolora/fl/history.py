"""Per-round records of a federated run: JSON for machines (written with
:func:`cardiolora.atomic.write_json`), a PNG of the curves for people.

One record per round ``t`` (round 0 is the base model)::

    {"round": t, "lambda": λ_t, "checksum": sha256 of W_t, "note": "...",
     "sites": {site: {"rank", "n_cases", "accepted", "reason", "train_loss", "score" (P_t^c),
                      "previous_score" (P_{t-1}^c), "rating" (w_t(c)), "coefficient",
                      "bytes_up", "bytes_down"}}}
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cardiolora.atomic import save_figure
from cardiolora.plotting import pyplot

__all__ = ["plot_history"]


def plot_history(rounds: Sequence[Mapping[str, Any]], path: str | os.PathLike, title: str = "Rate-My-LoRA") -> Path:
    """Draw P_t^c, w_t(c), λ_t and the bytes per round and site into one PNG.

    Args:
        rounds: the round records (see the module docstring).
        path: the PNG to write.
        title: figure title.

    Returns:
        The path written.
    """
    plt = pyplot()

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rounds = [r for r in rounds if r.get("task") in (None, "init")]  # rounds 0..T, not finalize / cross_eval
    sites = sorted({s for r in rounds for s in r.get("sites", {})})
    fig, axes = plt.subplots(2, 2, figsize=(9, 6), dpi=100)
    ax_p, ax_w, ax_l, ax_b = axes.ravel()

    def series(site: str, key: str) -> tuple[list[int], list[float]]:
        xs, ys = [], []
        for r in rounds:
            v = r.get("sites", {}).get(site, {}).get(key)
            if isinstance(v, (int, float)) and math.isfinite(v):
                xs.append(int(r["round"]))
                ys.append(float(v))
        return xs, ys

    for site in sites:
        ax_p.plot(*series(site, "score"), "o-", label=site)
        ax_w.plot(*series(site, "rating"), "s-", label=site)
        for key, style in (("bytes_up", "^-"), ("bytes_down", "v--")):
            points = [(x, y) for x, y in zip(*series(site, key), strict=True) if y > 0]  # log scale: no zeros
            ax_b.plot([x for x, _ in points], [y for _, y in points], style, label=f"{site} {key[6:]}")
    lam = [(int(r["round"]), r["lambda"]) for r in rounds if isinstance(r.get("lambda"), (int, float))]
    if lam:
        ax_l.plot([x for x, _ in lam], [y for _, y in lam], "o-", color="black")
    ax_p.set(title="P_t^c (candidate, val mean case Dice)", xlabel="round", ylim=(0, 1))
    ax_w.set(title="rating w_t(c) (Eq. 1)", xlabel="round", ylim=(0, 1.05))
    ax_l.set(title="λ_t", xlabel="round")
    ax_b.set(title="payload bytes per site", xlabel="round")
    if any(series(s, "bytes_up")[1] or series(s, "bytes_down")[1] for s in sites):
        ax_b.set_yscale("log")
    for ax in (ax_p, ax_w, ax_l, ax_b):
        ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    for ax in (ax_p, ax_w, ax_b):
        if sites:
            ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    ax_l.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)
