"""The heart of one slice: polar frame, angle tables, tissue masks, painting and labels.

Everything is star-shaped about the LV centre, so a slice is described once in polar coordinates
(:func:`_heart_frame`, shared by every phase and sub-slice) and each phase only compares radii
(:func:`_heart_masks`). :func:`_paint_heart` writes tissues for the image, :func:`_heart_label`
projects the labels (0 background, 1 LV cavity, 2 myocardium, 3 RV cavity).
"""

from __future__ import annotations

import math

import numpy as np

from cardiolora.data.phantom.anatomy import (
    _lv_centre,
    _lv_radii,
    _Phase,
    _Subject,
    fourier_contour,
    superellipse_profile,
)
from cardiolora.data.phantom.scanners import _BLOOD, _FAT, _MYOC
from cardiolora.labels import LV, MYO, RV

__all__: list[str] = []


_ANGLE_TABLE_SIZE = 2048


def _angle_tables(subj: _Subject, z: float) -> dict[str, np.ndarray]:
    """Functions of the polar angle at slice position `z`, sampled on a fine 1D angle grid."""
    theta = np.linspace(-np.pi, np.pi, _ANGLE_TABLE_SIZE, endpoint=False)
    twist = subj.fourier_twist * z / subj.length
    shape = fourier_contour(theta - twist, subj.fourier_a, subj.fourier_b)
    wall = 1.0 + subj.wall_var * np.cos(theta - subj.wall_angle)
    trab = fourier_contour(theta, subj.trab_a, subj.trab_b) - 1.0
    trab_mask = trab > 0.9 * np.sqrt((np.sum(subj.trab_a**2) + np.sum(subj.trab_b**2)) / 2)
    h_pos, h_neg = subj.rv_half_angles
    half = np.where(theta >= 0, h_pos, h_neg)
    rel = np.clip(np.abs(theta) / half, 0.0, 1.0)
    rv = np.where(rel < 1.0, np.cos(0.5 * np.pi * rel) ** subj.rv_gamma, 0.0)
    dist = np.minimum(np.abs(theta - h_pos), np.abs(theta + h_neg))
    groove = np.exp(-(((np.abs(theta) - np.pi) / 0.5) ** 2)) * max(0.0, 1.0 - z / subj.length) ** 2
    fat = subj.fat_max * (np.exp(-((dist / 0.35) ** 2)) + groove)
    return {
        "shape": shape.astype(np.float32),
        "wall": wall.astype(np.float32),
        "trab": trab_mask,
        "fat": fat.astype(np.float32),
        "rv": rv.astype(np.float32),
    }


def _heart_frame(subj: _Subject, x: np.ndarray, y: np.ndarray, z: float) -> dict[str, np.ndarray]:
    """Polar quantities of a slice, shared by every phase and sub-slice.

    ``u`` points from the LV centre towards the RV (septum), ``v`` along the septum.
    """
    cx, cy = _lv_centre(subj, z)
    dx, dy = x - np.float32(cx), y - np.float32(cy)
    c, s = np.float32(math.cos(subj.phi_rv)), np.float32(math.sin(subj.phi_rv))
    u = c * dx + s * dy
    v = -s * dx + c * dy
    theta = np.arctan2(v, u)
    idx = ((theta + np.float32(np.pi)) * np.float32(_ANGLE_TABLE_SIZE / (2 * np.pi))).astype(np.intp)
    np.clip(idx, 0, _ANGLE_TABLE_SIZE - 1, out=idx)
    frame = {name: table[idx] for name, table in _angle_tables(subj, z).items()}
    frame.update(r2=u * u + v * v, u=u, v=v)
    return frame


def _heart_masks(
    subj: _Subject, fr: dict[str, np.ndarray], z: float, st: _Phase, full: bool, margin: float | None = None
) -> dict[str, np.ndarray] | None:
    """Boolean masks of the heart at slice position `z` and phase state `st`.

    Returns ``None`` beyond the apex; masks ``la``, ``la_wall``, ``ra``, ``ra_wall`` above the
    (descended) base; otherwise ``lv``, ``epi``, ``rv_in`` and, when `full`, ``rv_out``, ``pap``,
    ``trab`` and ``fat``; with a `margin` (mm) only ``env``, the heart grown radially by it.
    """
    r2 = fr["r2"]
    u, v = fr["u"], fr["v"]
    if z < st.base:
        # atria: bright blood, unlabelled
        ra0 = 0.85 * subj.re0
        la = r2 < np.float32(ra0**2)
        la_wall = r2 < np.float32((ra0 + 2.5) ** 2)
        d = subj.rp0 + 0.3 * subj.rv_depth0
        a, b = 0.9 * subj.rp0, 0.5 * subj.rv_depth0 + 0.3 * subj.rp0
        ra = ((u - d) / b) ** 2 + (v / a) ** 2 < 1.0
        ra_wall = ((u - d) / (b + 2.5)) ** 2 + (v / (a + 2.5)) ** 2 < 1.0
        return {"la": la, "la_wall": la_wall, "ra": ra & ~la_wall, "ra_wall": ra_wall & ~la_wall}
    if z >= subj.length:
        return None
    re, rp = _lv_radii(subj, z)
    shape = fr["shape"]
    endo = np.float32(re) * shape
    thick = np.float32(rp - re) * fr["wall"]
    area = thick * (2 * endo + thick)  # epi^2 - endo^2 at ED
    re_t = np.float32(st.c_lv) * endo
    lv = r2 < re_t * re_t
    epi2 = re_t * re_t + area * np.float32(1.0 + subj.kappa * st.s)
    epi = r2 < epi2
    out = {"lv": lv, "epi": epi}
    p_rv = float(superellipse_profile(z, subj.rv_length * subj.length, subj.q_rv))
    epi_r = np.sqrt(epi2)
    if margin is not None:
        # everything is star-shaped about the LV centre: grow the outermost radius
        reach = np.maximum(fr["fat"], fr["rv"] * np.float32(subj.rv_depth0 * p_rv * st.c_rv + subj.rv_wall))
        env = epi_r + reach + np.float32(margin)
        return {"env": r2 < env * env}
    if p_rv > 0:
        # crescent between the LV epicardium and epicardium + D(theta)
        depth = fr["rv"] * np.float32(subj.rv_depth0 * p_rv * st.c_rv)
        outer = epi_r + depth
        rv_in = (r2 < outer * outer) & ~epi
        if full:
            outer_wall = outer + np.float32(subj.rv_wall) * np.minimum(fr["rv"] * 4.0, 1.0)
            out["rv_out"] = (r2 < outer_wall * outer_wall) & ~epi
    else:
        rv_in = np.zeros_like(lv)
        if full:
            out["rv_out"] = rv_in
    out["rv_in"] = rv_in
    if not full:
        return out
    mean_re = st.c_lv * re
    pap = np.zeros_like(lv)
    zf = z / subj.length
    p_pap = math.sin(math.pi * (zf - 0.12) / 0.66) if 0.12 < zf < 0.78 else 0.0
    if p_pap > 0 and mean_re > 2:
        pr = min(subj.pap_radius * p_pap, 0.45 * mean_re)
        for ang in subj.pap_angles:
            pu, pv = subj.pap_pos * mean_re * math.cos(ang), subj.pap_pos * mean_re * math.sin(ang)
            pap |= (u - np.float32(pu)) ** 2 + (v - np.float32(pv)) ** 2 < np.float32(pr * pr)
    out["pap"] = pap & lv
    band = re_t * np.float32(1.0 - subj.trab_depth)
    out["trab"] = lv & fr["trab"] & (r2 > band * band)
    ring = np.sqrt(epi2) + fr["fat"]
    out["fat"] = (r2 < ring * ring) & ~epi
    return out


def _paint_heart(tissue: np.ndarray, masks: dict[str, np.ndarray] | None) -> None:
    """Paint heart tissues into `tissue` (in place), later structures over earlier ones."""
    if masks is None:
        return
    if "la" in masks:
        tissue[masks["la_wall"] | masks["ra_wall"]] = _MYOC
        tissue[masks["la"] | masks["ra"]] = _BLOOD
        return
    tissue[masks["fat"]] = _FAT
    tissue[masks["rv_out"]] = _MYOC
    tissue[masks["rv_in"]] = _BLOOD
    tissue[masks["epi"] & ~masks["lv"]] = _MYOC
    tissue[masks["lv"]] = _BLOOD
    tissue[masks["trab"] | masks["pap"]] = _MYOC


def _heart_label(masks: dict[str, np.ndarray] | None, shape: tuple[int, int]) -> np.ndarray:
    """Project labels (0 bg, 1 LV, 2 MYO, 3 RV) from heart masks."""
    out = np.zeros(shape, dtype=np.uint8)
    if masks is None or "la" in masks:
        return out
    out[masks["rv_in"]] = RV
    out[masks["epi"]] = MYO
    out[masks["lv"]] = LV
    return out
