"""The pictures of a segmented study: ED/ES overlay montage and the volume curve (PNG).

* :func:`overlay_montage` — two rows (ED, ES), one column per slice (base → apex as stored),
  each tile the image in its own 1–99.5 percentile window with the LV cavity (red), myocardium
  (green) and RV cavity (blue) filled half-transparent and outlined;
* :func:`volume_curve_figure` — LV and RV cavity volumes (mL) over the cardiac cycle (trigger
  time when known, else phase index), ED and ES marked, the EF values in the title.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from cardiolora.labels import LV, MYO, RV
from cardiolora.plotting import pyplot

__all__ = ["LABEL_COLOURS", "overlay_montage", "volume_curve_figure"]

#: Overlay colours (RGB, 0..1) per label.
LABEL_COLOURS: dict[int, tuple[float, float, float]] = {
    LV: (0.90, 0.15, 0.15),
    MYO: (0.15, 0.80, 0.25),
    RV: (0.15, 0.45, 0.95),
}
_MAX_COLUMNS = 12


def _rgb_overlay(image: np.ndarray, label: np.ndarray, alpha: float = 0.35) -> np.ndarray:
    """Grey image (windowed 1–99.5 percentiles) with labels blended in, as RGB 0..1."""
    lo, hi = np.percentile(image, [1.0, 99.5])
    grey = np.clip((image - lo) / max(float(hi - lo), 1e-6), 0, 1)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    for k, colour in LABEL_COLOURS.items():
        mask = label == k
        rgb[mask] = (1 - alpha) * rgb[mask] + alpha * np.asarray(colour)
    return rgb


def _crop_box(labels: np.ndarray, shape: tuple[int, int], margin: int = 24) -> tuple[slice, slice]:
    """Rows / columns around every labelled pixel (whole image when nothing is labelled)."""
    any_label = labels.reshape(-1, *shape).any(axis=0)
    if not any_label.any():
        return slice(0, shape[0]), slice(0, shape[1])
    rows, cols = np.nonzero(any_label)
    side = max(rows.max() - rows.min(), cols.max() - cols.min()) + 2 * margin
    r0 = int(max(0, (rows.min() + rows.max()) // 2 - side // 2))
    c0 = int(max(0, (cols.min() + cols.max()) // 2 - side // 2))
    return slice(r0, min(shape[0], r0 + side)), slice(c0, min(shape[1], c0 + side))


def overlay_montage(
    image_tzyx: np.ndarray,
    label_tzyx: np.ndarray,
    phases: Mapping[str, int],
    path: str | os.PathLike,
    title: str = "",
) -> Path:
    """Draw the overlay montage: one row per named phase, one column per slice.

    Args:
        image_tzyx: the cine ``(T, Z, Y, X)``.
        label_tzyx: its labels, same shape.
        phases: row name → phase index, e.g. ``{"ED": 0, "ES": 9}``.
        path: PNG to write.
        title: figure title.

    Returns:
        The PNG path.

    Raises:
        ValueError: if the shapes differ, `phases` is empty or a phase is out of range.
    """
    if image_tzyx.shape != label_tzyx.shape or image_tzyx.ndim != 4:
        raise ValueError(f"image {image_tzyx.shape} and labels {label_tzyx.shape} must be the same (T, Z, Y, X).")
    if not phases or any(not 0 <= p < image_tzyx.shape[0] for p in phases.values()):
        raise ValueError(f"`phases` must name phases in [0, {image_tzyx.shape[0]}), got {dict(phases)}.")
    plt = pyplot()
    n_slices = image_tzyx.shape[1]
    slices = np.unique(np.linspace(0, n_slices - 1, min(n_slices, _MAX_COLUMNS)).round().astype(int))
    rows_sl, cols_sl = _crop_box(label_tzyx[list(phases.values())], image_tzyx.shape[2:])
    fig, axes = plt.subplots(
        len(phases),
        len(slices),
        figsize=(max(6.0, 1.9 * len(slices) + 0.6), 2.1 * len(phases) + 0.9),
        dpi=110,
        squeeze=False,
    )
    for r, (name, t) in enumerate(phases.items()):
        for c, z in enumerate(slices):
            ax = axes[r, c]
            img = image_tzyx[t, z][rows_sl, cols_sl]
            lab = label_tzyx[t, z][rows_sl, cols_sl]
            ax.imshow(_rgb_overlay(img, lab), interpolation="nearest")
            for k, colour in LABEL_COLOURS.items():
                if (lab == k).any():
                    ax.contour(lab == k, levels=[0.5], colors=[colour], linewidths=0.8)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"slice {z}", fontsize=9)
        axes[r, 0].set_ylabel(f"{name} (phase {t})", fontsize=10)
    handles = [plt.Rectangle((0, 0), 1, 1, color=LABEL_COLOURS[k]) for k in (LV, MYO, RV)]
    fig.legend(
        handles, ["LV cavity", "LV myocardium", "RV cavity"], loc="lower center", ncol=3, fontsize=9, frameon=False
    )
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0.06, 1, 0.95 if title else 1))
    out = Path(path)
    fig.savefig(out)
    plt.close(fig)
    return out


def volume_curve_figure(
    curves: Mapping[str, Sequence[float]],
    trigger_times_ms: Sequence[float],
    ed: int,
    es: int,
    path: str | os.PathLike,
    title: str = "",
) -> Path:
    """Plot the LV and RV cavity volumes over the cycle with ED and ES marked.

    Args:
        curves: ``{"LV": (T,), "RV": (T,)}`` volumes in mL (other keys ignored).
        trigger_times_ms: ``(T,)`` trigger times; NaN anywhere → the x axis is the phase index.
        ed: ED phase index.
        es: ES phase index.
        path: PNG to write.
        title: figure title (e.g. the EF values).

    Returns:
        The PNG path.

    Raises:
        ValueError: if the curves are empty or of different lengths, or ED / ES is out of range.
    """
    lv = np.asarray(curves["LV"], dtype=float)
    rv = np.asarray(curves["RV"], dtype=float)
    times = np.asarray(trigger_times_ms, dtype=float)
    if lv.size == 0 or lv.shape != rv.shape or times.shape != lv.shape:
        raise ValueError(f"curves LV {lv.shape}, RV {rv.shape} and times {times.shape} must be equal and non-empty.")
    if not (0 <= ed < lv.size and 0 <= es < lv.size):
        raise ValueError(f"ED {ed} / ES {es} must be phases in [0, {lv.size}).")
    use_time = bool(np.all(np.isfinite(times)))
    x = times if use_time else np.arange(lv.size, dtype=float)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.8), dpi=110)
    ax.plot(x, lv, "-o", color=LABEL_COLOURS[LV], ms=3.5, label="LV cavity")
    ax.plot(x, rv, "-o", color=LABEL_COLOURS[RV], ms=3.5, label="RV cavity")
    top = float(max(lv.max(), rv.max(), 1e-6))
    for phase, name, style in ((ed, "ED", "--"), (es, "ES", ":")):
        ax.axvline(x[phase], color="0.3", linestyle=style, linewidth=1)
        ax.annotate(f" {name} (phase {phase})", (x[phase], top * 1.03), ha="left", fontsize=9, color="0.2")
    ax.set_ylim(0, top * 1.12)
    ax.set_xlabel("trigger time (ms)" if use_time else "phase")
    ax.set_ylabel("volume (mL)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=9)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out)
    plt.close(fig)
    return out
