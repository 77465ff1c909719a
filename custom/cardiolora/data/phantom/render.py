"""Rendering of a phantom cine: the torso, the heart, partial volume, PSF, bias and noise.

:func:`_render` draws every requested phase of every slice of a subject in one scanner profile:
the tissue map on the supersampled scene grid (body wall, lungs and vessels, liver, spine, aorta,
heart), the profile's intensity table and texture, partial volume, the Gaussian PSF, the bias
field, Rician noise and the stored-value mapping; the labels come from the same masks at the
native grid and the slice centre.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from cardiolora.data.phantom.anatomy import _lv_centre, _phase_state, _Subject
from cardiolora.data.phantom.geometry import _scene_grid, _scene_to_index, ellipse_mask
from cardiolora.data.phantom.heart import _heart_frame, _heart_label, _heart_masks, _paint_heart
from cardiolora.data.phantom.physics import (
    _SUBSLICE_FRACTIONS,
    _SUPERSAMPLING,
    area_downsample,
    bias_field,
    rician_noise,
    smooth_random_field,
)
from cardiolora.data.phantom.scanners import (
    _AIR,
    _BLOOD,
    _CSF,
    _FAT,
    _LIVER,
    _LUNG,
    _MARROW,
    _MEDIA,
    _MUSCLE,
    _TEXTURE_AMPLITUDE,
    TISSUES,
    ScannerProfile,
)

__all__: list[str] = []


def _paint_ellipse(
    tissue: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    subj: _Subject,
    centre: tuple[float, float],
    axes: tuple[float, float],
    value: int,
    angle: float = 0.0,
    only: tuple[int, ...] | None = None,
) -> None:
    """Set `tissue` to `value` inside an ellipse (scene mm), only over tissues `only` if given.

    Works on the bounding box of the ellipse only (`x`, `y` are the supersampled scene grid).
    """
    ss = x.shape[0] // subj.matrix[0]
    r, c = _scene_to_index(subj, centre)
    reach = max(axes) / subj.pixel + 2.0
    r0, r1 = int(max(0, (r - reach) * ss)), int(min(x.shape[0], math.ceil((r + reach + 1) * ss)))
    c0, c1 = int(max(0, (c - reach) * ss)), int(min(x.shape[1], math.ceil((c + reach + 1) * ss)))
    if r0 >= r1 or c0 >= c1:
        return
    box = (slice(r0, r1), slice(c0, c1))
    inside = ellipse_mask(x[box], y[box], centre, axes, angle)
    sub = tissue[box]
    if only is not None:
        inside &= np.isin(sub, only)
    sub[inside] = value


def _background(subj: _Subject, x: np.ndarray, y: np.ndarray, static: np.ndarray, z: float) -> np.ndarray:
    """Tissue map of the torso at slice position `z` (lungs, liver, vessels depend on `z`)."""
    tissue = static.copy()
    zf = z / subj.length
    grow = 1.0 - 0.25 * max(zf, 0.0)
    for (cx, cy), (a, b) in zip(subj.lung_centres, subj.lung_axes, strict=True):
        _paint_ellipse(tissue, x, y, subj, (cx, cy + 8.0 * zf), (a * grow, b * grow), _LUNG, only=(_MEDIA,))
    for vx, vy, vr, ddx, ddy in subj.vessels:
        _paint_ellipse(tissue, x, y, subj, (vx + ddx * z, vy + ddy * z), (vr, vr), _BLOOD, only=(_LUNG,))
    liver_scale = float(np.clip(0.45 + 0.7 * zf, 0.3, 1.15))
    la, lb = subj.liver_axes
    _paint_ellipse(
        tissue,
        x,
        y,
        subj,
        subj.liver_centre,
        (la * liver_scale, lb * liver_scale),
        _LIVER,
        angle=subj.liver_angle,
        only=(_MEDIA, _LUNG, _BLOOD),
    )
    sx, sy = subj.spine_centre
    vr = subj.vertebra_radius
    _paint_ellipse(tissue, x, y, subj, (sx, sy + vr + 28.0), (55.0, 30.0), _MUSCLE, only=(_MEDIA, _LUNG, _LIVER))
    _paint_ellipse(tissue, x, y, subj, (sx, sy), (vr * 1.15, vr), _MARROW)
    _paint_ellipse(tissue, x, y, subj, (sx, sy + vr + 8.0), (7.0, 6.0), _CSF)
    ar = subj.aorta_radius
    _paint_ellipse(tissue, x, y, subj, subj.aorta_centre, (ar + 1.5, ar + 1.5), _MUSCLE)
    _paint_ellipse(tissue, x, y, subj, subj.aorta_centre, (ar, ar), _BLOOD)
    return tissue


def _static_body(subj: _Subject, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Tissue map of the body wall: air, subcutaneous fat, muscle, thorax (mediastinum)."""
    a, b = subj.body_axes
    f, m = subj.fat_thickness, subj.muscle_thickness
    tissue = np.full(x.shape, _AIR, dtype=np.uint8)
    tissue[ellipse_mask(x, y, subj.body_centre, (a, b))] = _FAT
    tissue[ellipse_mask(x, y, subj.body_centre, (a - f, b - f))] = _MUSCLE
    tissue[ellipse_mask(x, y, subj.body_centre, (a - f - m, b - f - m))] = _MEDIA
    return tissue


def _crop_box(subj: _Subject) -> tuple[int, int, int, int]:
    """Native pixel box ``(y0, y1, x0, x1)`` that contains the heart in every slice and phase."""
    grow = 1.0 + float(np.abs(subj.fourier_a).sum() + np.abs(subj.fourier_b).sum())
    reach = max(
        grow * subj.rp0 + subj.rv_depth0 + subj.rv_wall,  # RV crescent and free wall
        1.3 * subj.rp0 + 0.8 * subj.rv_depth0 + 3.0,  # atria
        grow * subj.rp0 + 2.0 * subj.fat_max,  # epicardial fat
    )
    half = reach + subj.env_margin + math.hypot(*subj.drift) / 2 + 4.0
    mid = _lv_centre(subj, subj.length / 2)
    r, c = _scene_to_index(subj, mid)
    hp = half / subj.pixel * (abs(math.cos(subj.rotation)) + abs(math.sin(subj.rotation)))
    ny, nx = subj.matrix
    y0, y1 = max(0, int(math.floor(r - hp))), min(ny, int(math.ceil(r + hp)) + 1)
    x0, x1 = max(0, int(math.floor(c - hp))), min(nx, int(math.ceil(c + hp)) + 1)
    return y0, y1, x0, x1


def _render(subj: _Subject, prof: ScannerProfile, seed: int, phase_indices: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Render image and label ``(len(phase_indices), Z, Y, X)`` of the given cine phases."""
    ny, nx = subj.matrix
    nz = subj.n_slices
    ss = _SUPERSAMPLING
    tex_rng = np.random.default_rng([seed, 1])
    sigma_tex = max(4.0 / subj.pixel, 1.0)
    texture = 0.6 * smooth_random_field((nz, ny, nx), sigma_tex, tex_rng)
    # the coarse texture on a 4x coarser grid, linearly interpolated up (same statistics, cheaper)
    coarse = smooth_random_field((nz, -(-ny // 4), -(-nx // 4)), 0.75 * sigma_tex, tex_rng)
    zoom = (1.0, ny / coarse.shape[1], nx / coarse.shape[2])
    texture += 0.4 * ndimage.zoom(coarse, zoom, order=1, mode="nearest")[:, :ny, :nx]
    texture *= np.float32(prof.texture_strength)
    bias = bias_field((ny, nx), prof.bias_strength, tex_rng)
    lut = np.array([prof.tissue_intensity[t] for t in TISSUES], dtype=np.float32)
    amp = _TEXTURE_AMPLITUDE

    xs, ys = _scene_grid(ny, nx, subj.pixel, ss, subj.rotation)
    static = _static_body(subj, xs, ys)
    y0, y1, x0, x1 = _crop_box(subj)
    crop = (slice(y0, y1), slice(x0, x1))
    crop_ss = (slice(y0 * ss, y1 * ss), slice(x0 * ss, x1 * ss))
    xc, yc = xs[crop_ss], ys[crop_ss]
    xn, yn = _scene_grid(ny, nx, subj.pixel, 1, subj.rotation)
    xn, yn = xn[crop], yn[crop]
    states = [_phase_state(subj, k / subj.n_phases) for k in phase_indices]
    ed_state = _phase_state(subj, 0.0)
    sigma_psf = prof.psf_fwhm_mm / (2.0 * math.sqrt(2.0 * math.log(2.0))) / subj.pixel
    # the blur is linear: blur(frame) = blur(background) + blur(heart - background), and the
    # difference is zero outside the crop, so only the crop plus the kernel radius is blurred
    pad = int(4.0 * sigma_psf + 0.5) + 1
    ey0, ey1, ex0, ex1 = max(0, y0 - pad), min(ny, y1 + pad), max(0, x0 - pad), min(nx, x1 + pad)
    ext = (slice(ey0, ey1), slice(ex0, ex1))
    inner = (slice(y0 - ey0, y1 - ey0), slice(x0 - ex0, x1 - ex0))
    level = np.float32(prof.blood_level * subj.gain)
    gamma = np.float32(prof.gamma)

    image = np.empty((len(phase_indices), nz, ny, nx), dtype=np.float32)
    label = np.zeros((len(phase_indices), nz, ny, nx), dtype=np.uint8)
    for iz in range(nz):
        z = subj.z0 + iz * subj.spacing
        bg = _background(subj, xs, ys, static, z)
        fr = _heart_frame(subj, xc, yc, z)
        env = _heart_masks(subj, fr, z, ed_state, full=True, margin=subj.env_margin)
        crop_bg = bg[crop_ss]
        if env is not None:
            crop_bg[env["env"] & (crop_bg != _AIR)] = _MEDIA
        tex = texture[iz]
        bg_signal = np.maximum(area_downsample(lut[bg], ss) * (1.0 + area_downsample(amp[bg], ss) * tex), 0.0)
        bg_blurred = ndimage.gaussian_filter(bg_signal, sigma_psf, mode="nearest")
        frn = _heart_frame(subj, xn, yn, z)
        zsub = [z + f * subj.thickness for f in _SUBSLICE_FRACTIONS]
        for it, (k, st) in enumerate(zip(phase_indices, states, strict=True)):
            acc_int = np.zeros(xc.shape, dtype=np.float32)
            acc_amp = np.zeros(xc.shape, dtype=np.float32)
            for zz in zsub:
                tissue = crop_bg.copy()
                _paint_heart(tissue, _heart_masks(subj, fr, zz, st, full=True))
                acc_int += lut[tissue]
                acc_amp += amp[tissue]
            heart = area_downsample(acc_int, ss) * (1.0 + area_downsample(acc_amp, ss) / len(zsub) * tex[crop])
            heart /= len(zsub)
            delta = np.zeros((ey1 - ey0, ex1 - ex0), dtype=np.float32)
            delta[inner] = np.maximum(heart, 0.0) - bg_signal[crop]
            frame = bg_blurred.copy()
            frame[ext] += ndimage.gaussian_filter(delta, sigma_psf, mode="constant")
            np.maximum(frame, 0.0, out=frame)
            frame *= bias
            frame = rician_noise(frame, prof.noise_sigma, np.random.default_rng([seed, 2, k, iz]))
            image[it, iz] = np.clip(np.rint(level * frame**gamma), 0.0, prof.stored_max)
            label[it, iz][crop] = _heart_label(_heart_masks(subj, frn, z, st, full=False), xn.shape)
    return image, label
