"""MR image formation: partial volume, smooth texture, coil bias field and Rician noise.

In-plane partial volume is rendering at :data:`_SUPERSAMPLING` times the matrix and area
averaging (:func:`area_downsample`); through-plane partial volume is averaging the slice positions
:data:`_SUBSLICE_FRACTIONS` of the thickness. :func:`bias_field` is the multiplicative coil
sensitivity and :func:`rician_noise` the magnitude of the signal plus complex Gaussian noise.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["area_downsample", "smooth_random_field", "bias_field", "rician_noise"]


_SUPERSAMPLING = 2
#: Offsets, as fractions of the slice thickness, averaged for through-plane partial volume.
_SUBSLICE_FRACTIONS = (-1.0 / 3.0, 0.0, 1.0 / 3.0)


def area_downsample(image: np.ndarray, factor: int) -> np.ndarray:
    """Average non-overlapping ``factor × factor`` blocks of the last two axes (area resampling).

    Args:
        image: array ``(..., factor * H, factor * W)``.
        factor: integer block size >= 1.

    Returns:
        Array ``(..., H, W)`` of block means.

    Raises:
        ValueError: if `factor` < 1 or the last two sizes are not multiples of it.
    """
    if factor < 1:
        raise ValueError(f"`factor` must be >= 1, got {factor}.")
    h, w = image.shape[-2:]
    if h % factor or w % factor:
        raise ValueError(f"`image` size {(h, w)} is not a multiple of `factor` {factor}.")
    if factor == 1:
        return image
    out = np.zeros(image.shape[:-2] + (h // factor, w // factor), dtype=np.result_type(image.dtype, np.float32))
    for i in range(factor):
        for j in range(factor):
            out += image[..., i::factor, j::factor]
    out /= factor * factor
    return out


def smooth_random_field(shape: tuple[int, ...], sigma_px: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian-smoothed white noise normalised to zero mean and unit standard deviation.

    Args:
        shape: output shape (2D, or ``(Z, H, W)`` smoothed in-plane only).
        sigma_px: smoothing sigma in pixels (in-plane), > 0.
        rng: random generator.

    Returns:
        Float32 array of `shape`.

    Raises:
        ValueError: if `sigma_px` is not positive or `shape` is not 2D/3D.
    """
    if not sigma_px > 0:
        raise ValueError(f"`sigma_px` must be positive, got {sigma_px}.")
    if len(shape) not in (2, 3):
        raise ValueError(f"`shape` must be 2D or 3D, got {shape}.")
    noise = rng.standard_normal(shape, dtype=np.float32)
    sigma = (sigma_px, sigma_px) if len(shape) == 2 else (0.0, sigma_px, sigma_px)
    field_ = ndimage.gaussian_filter(noise, sigma, mode="reflect")
    axes = tuple(range(-2, 0))
    field_ -= field_.mean(axis=axes, keepdims=True)
    field_ /= field_.std(axis=axes, keepdims=True) + 1e-12
    return field_


def bias_field(shape: tuple[int, int], strength: float, rng: np.random.Generator, n_terms: int = 4) -> np.ndarray:
    """Smooth multiplicative coil-sensitivity field ``exp(strength * f)`` with ``max |f| = 1``.

    ``f`` is a sum of `n_terms` random plane cosines of at most one cycle across the image plus a
    random linear gradient (the surface coil side is brighter).

    Args:
        shape: ``(rows, columns)``.
        strength: log amplitude ``b`` >= 0; the field lies in ``[e^-b, e^b]``.
        rng: random generator.
        n_terms: number of cosine terms >= 0.

    Returns:
        Float32 array of `shape`, all positive (all ones when `strength` is 0).

    Raises:
        ValueError: if `strength` < 0 or `n_terms` < 0.
    """
    if not strength >= 0:
        raise ValueError(f"`strength` must be >= 0, got {strength}.")
    if n_terms < 0:
        raise ValueError(f"`n_terms` must be >= 0, got {n_terms}.")
    yy, xx = np.meshgrid(
        np.linspace(-0.5, 0.5, shape[0], dtype=np.float32),
        np.linspace(-0.5, 0.5, shape[1], dtype=np.float32),
        indexing="ij",
    )
    gx, gy = rng.uniform(-1.0, 1.0, size=2)
    f = (gx * xx + gy * yy).astype(np.float32)
    for _ in range(n_terms):
        kx, ky = rng.uniform(-1.0, 1.0, size=2)
        phase = rng.uniform(0.0, 2.0 * np.pi)
        weight = rng.uniform(0.3, 1.0)
        f += np.float32(weight) * np.cos(np.float32(2 * np.pi) * (kx * xx + ky * yy) + np.float32(phase))
    peak = float(np.abs(f).max())
    if peak > 0:
        f /= peak
    return np.exp(np.float32(strength) * f).astype(np.float32)


def rician_noise(signal: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of the signal plus complex Gaussian noise: ``|s + sigma (n1 + i n2)|``.

    The result is Rician distributed (Rayleigh where the signal is 0), always >= 0.

    Args:
        signal: non-negative real magnitude image.
        sigma: standard deviation of each of the real and imaginary noise channels, >= 0.
        rng: random generator.

    Returns:
        Float32 array shaped like `signal`.

    Raises:
        ValueError: if `sigma` < 0.
    """
    if not sigma >= 0:
        raise ValueError(f"`sigma` must be >= 0, got {sigma}.")
    s = np.asarray(signal, dtype=np.float32)
    if sigma == 0:
        return np.abs(s)
    noise = rng.standard_normal((2, *s.shape), dtype=np.float32)
    noise *= np.float32(sigma)
    return np.sqrt((s + noise[0]) ** 2 + noise[1] ** 2)
