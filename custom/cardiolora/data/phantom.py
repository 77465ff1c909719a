"""Synthetic multi-vendor short-axis bSSFP cine phantoms: the project's embedded default data.

No real image may ship with the project, so every demo, test and default job runs on subjects made
here. A subject is a 2D+t short-axis stack (:class:`~cardiolora.data.cine.CineStudy`) with labels
in the project convention (0 background, 1 LV cavity, 2 LV myocardium, 3 RV cavity), an oblique
geometry, clinical ground truth computed from the rendered labels, and the look of one scanner
profile.

Anatomy (all lengths in mm; ``z`` is the distance from the end-diastolic base plane towards the
apex):

* LV: a super-ellipsoidal cavity and myocardial shell, radius ``R(z) = R0 (1 - (z/L)^q)^(1/q)``,
  whose cross-sections are perturbed by a low-order Fourier series in the polar angle; the
  cavity ends a wall thickness before the epicardial apex, so apical slices show only myocardium
  (or nothing beyond the apex). Two papillary muscles (dark, labelled LV cavity as in ACDC) and a
  band of trabeculae (dark, labelled LV cavity) sit inside the cavity.
* RV: a bent ellipse wrapped around the septal side of the LV minus the LV epicardium, i.e. a
  crescent, with a thin free wall (labelled background); it ends before the LV apex.
* Cycle: a smooth systolic fraction ``s(t)`` (:func:`contraction_curve`, 0 at end-diastole, 1 at
  end-systole 30-40 % into the R-R interval, rapid filling, diastasis, atrial kick) scales the
  cavity radii; the myocardial cross-sectional area is conserved (slightly increased for long-axis
  shortening), so the wall thickens in systole; the base plane descends towards the apex, so the
  most basal slice may show only atria (bright, unlabelled) at end-systole. Label masks are nested
  in ``s``, so the LV volume is largest at phase 0 (ED) and smallest at the phase of largest
  ``s`` (ES), which is how ``ed_phase`` / ``es_phase`` are set.
* Background: body outline with subcutaneous fat, chest-wall muscle, two lungs with bright vessel
  dots, liver (patient's right, image left-lower, growing towards the apex), spine (marrow and
  CSF), paraspinal muscle, descending aorta (bright), mediastinal tissue and epicardial fat, all
  with smooth random texture. Rendered at ``2x`` supersampling and area-averaged (in-plane partial
  volume), averaged over three positions across the slice thickness (through-plane partial
  volume), blurred by the profile's PSF, multiplied by a smooth bias field and given Rician noise.

Scanner profiles (:data:`PROFILES`) are *stylised* caricatures of vendor looks, chosen to be
clearly different, not measured from any scanner: tissue contrast table, gamma, stored range,
bias field, noise, PSF, pixel spacing, matrix, slice thickness and gap, number of phases.

Geometry: a double-oblique short-axis orientation with the slice normal ``row × col`` pointing
from base to apex (left, anterior, inferior in LPS); slice 0 is the most basal slice and the
affine's third column is ``normal × slice spacing`` (right-handed), as :mod:`cardiolora.data.cine`
states. The image is drawn in the usual display (anterior up, RV on the image left). A real scanner
with a right-handed base-to-apex stack would show the RV on the image *right*, so the drawn
anatomy is the left-right mirror of what the direction cosines imply; nothing in the project
depends on that handedness.

Example:
    >>> study = make_subject(3, "ge", phases="ed_es")
    >>> study.image.shape[0], study.ed_phase, study.es_phase
    (2, 0, 1)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np
from scipy import ndimage

from cardiolora.data.cine import CineStudy
from cardiolora.labels import LV, MYO, RV

__all__ = [
    "TISSUES",
    "MYOCARDIAL_DENSITY_G_PER_ML",
    "ScannerProfile",
    "PROFILES",
    "get_profile",
    "make_subject",
    "contraction_curve",
    "superellipse_profile",
    "fourier_contour",
    "ellipse_mask",
    "area_downsample",
    "smooth_random_field",
    "bias_field",
    "rician_noise",
    "sax_orientation",
    "cine_truth",
]

#: Tissue classes of the rendered scene, in the order of the intensity lookup table.
TISSUES: tuple[str, ...] = (
    "air",
    "fat",
    "muscle",
    "mediastinum",
    "lung",
    "liver",
    "blood",
    "myocardium",
    "marrow",
    "csf",
)
_AIR, _FAT, _MUSCLE, _MEDIA, _LUNG, _LIVER, _BLOOD, _MYOC, _MARROW, _CSF = range(len(TISSUES))

#: Relative amplitude of the smooth texture in each tissue (multiplied by the profile's strength).
_TEXTURE_AMPLITUDE = np.array([0.0, 0.10, 0.12, 0.18, 0.45, 0.10, 0.05, 0.05, 0.15, 0.05], dtype=np.float32)

#: Myocardial density used for LV mass (g/mL).
MYOCARDIAL_DENSITY_G_PER_ML = 1.05

_SUPERSAMPLING = 2
#: Offsets, as fractions of the slice thickness, averaged for through-plane partial volume.
_SUBSLICE_FRACTIONS = (-1.0 / 3.0, 0.0, 1.0 / 3.0)
_PHASE_MODES = ("all", "ed_es")


# --------------------------------------------------------------------------------------------
# scanner profiles
# --------------------------------------------------------------------------------------------


def _check_range(name: str, value: tuple[float, float], positive: bool = True) -> None:
    """Raise ValueError unless `value` is an ordered ``(low, high)`` pair (positive if asked)."""
    if len(value) != 2 or not value[0] <= value[1] or (positive and value[0] <= 0) or value[0] < 0:
        kind = "positive" if positive else "non-negative"
        raise ValueError(f"`{name}` must be an ordered (low, high) pair of {kind} values, got {value}.")


@dataclass(frozen=True)
class ScannerProfile:
    """The look and the acquisition parameters of one (stylised) scanner vendor.

    Attributes:
        name: short key (``"reference"``, ``"ge"`` ...); also the ``vendor`` of the studies.
        manufacturer: DICOM ``Manufacturer`` string (e.g. ``"GE MEDICAL SYSTEMS"``).
        model: DICOM ``ManufacturerModelName``.
        field_strength_t: magnetic field strength in tesla.
        tissue_intensity: signal of every tissue in :data:`TISSUES` (blood about 1), before gamma.
        gamma: exponent of the intensity mapping ``stored = level * signal ** gamma``.
        blood_level: stored value of unit signal (blood) for an average subject.
        stored_max: largest stored value (the image is clipped to ``[0, stored_max]``).
        bias_strength: amplitude of the log bias field (the field lies in ``[e^-b, e^b]``).
        noise_sigma: standard deviation of each complex noise channel, relative to unit signal.
        psf_fwhm_mm: full width at half maximum of the Gaussian point-spread function (mm).
        pixel_spacing_mm: ``(low, high)`` range of the square in-plane pixel spacing.
        matrix_sizes: the ``(rows, columns)`` matrices a subject is drawn from.
        slice_thickness_mm: ``(low, high)`` range of the slice thickness.
        slice_gap_mm: ``(low, high)`` range of the gap between slices (spacing = thickness + gap).
        n_phases: ``(low, high)`` inclusive range of the number of cine phases.
        texture_strength: multiplier of the smooth tissue texture.
        description: what the profile caricatures.

    Raises:
        ValueError: if a tissue is missing or negative, or a number or range is out of bounds
            (the message names the field).
    """

    name: str
    manufacturer: str
    model: str
    field_strength_t: float
    tissue_intensity: Mapping[str, float] = field(hash=False)
    gamma: float
    blood_level: float
    stored_max: float
    bias_strength: float
    noise_sigma: float
    psf_fwhm_mm: float
    pixel_spacing_mm: tuple[float, float]
    matrix_sizes: tuple[tuple[int, int], ...]
    slice_thickness_mm: tuple[float, float]
    slice_gap_mm: tuple[float, float]
    n_phases: tuple[int, int]
    texture_strength: float = 1.0
    description: str = ""

    def __post_init__(self) -> None:
        missing = [t for t in TISSUES if t not in self.tissue_intensity]
        if missing:
            raise ValueError(f"`tissue_intensity` of profile {self.name!r} lacks tissues {missing}.")
        bad = {k: v for k, v in self.tissue_intensity.items() if not (math.isfinite(v) and v >= 0)}
        if bad:
            raise ValueError(f"`tissue_intensity` of profile {self.name!r} must be >= 0, got {bad}.")
        object.__setattr__(self, "tissue_intensity", MappingProxyType(dict(self.tissue_intensity)))
        for name in ("field_strength_t", "gamma", "blood_level", "stored_max", "psf_fwhm_mm"):
            if not getattr(self, name) > 0:
                raise ValueError(f"`{name}` of profile {self.name!r} must be positive, got {getattr(self, name)}.")
        for name in ("bias_strength", "noise_sigma", "texture_strength"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"`{name}` of profile {self.name!r} must be >= 0, got {getattr(self, name)}.")
        if self.blood_level >= self.stored_max:
            raise ValueError(f"`blood_level` of profile {self.name!r} must be below `stored_max`.")
        _check_range("pixel_spacing_mm", self.pixel_spacing_mm)
        _check_range("slice_thickness_mm", self.slice_thickness_mm)
        _check_range("slice_gap_mm", self.slice_gap_mm, positive=False)
        _check_range("n_phases", self.n_phases)
        if self.n_phases[0] < 2:
            raise ValueError(f"`n_phases` of profile {self.name!r} must start at >= 2, got {self.n_phases}.")
        if not self.matrix_sizes or any(len(m) != 2 or min(m) < 32 for m in self.matrix_sizes):
            raise ValueError(
                f"`matrix_sizes` of profile {self.name!r} must be (rows, cols) pairs >= 32, got {self.matrix_sizes}."
            )


def _tissues(**values: float) -> dict[str, float]:
    """A tissue table with air 0 unless given."""
    return {"air": 0.0, **values}


#: The scanner profiles. All are stylised looks chosen to differ clearly, not measurements.
PROFILES: dict[str, ScannerProfile] = {
    p.name: p
    for p in (
        ScannerProfile(
            name="reference",
            manufacturer="SIEMENS",
            model="Avanto",
            field_strength_t=1.5,
            tissue_intensity=_tissues(
                fat=0.78,
                muscle=0.22,
                mediastinum=0.34,
                lung=0.05,
                liver=0.21,
                blood=1.0,
                myocardium=0.27,
                marrow=0.55,
                csf=0.9,
            ),
            gamma=1.0,
            blood_level=420.0,
            stored_max=4095.0,
            bias_strength=0.15,
            noise_sigma=0.035,
            psf_fwhm_mm=2.2,
            pixel_spacing_mm=(1.30, 1.70),
            matrix_sizes=((256, 216), (232, 256), (256, 256)),
            slice_thickness_mm=(6.0, 8.0),
            slice_gap_mm=(1.0, 4.0),
            n_phases=(20, 30),
            description="ACDC-like Siemens 1.5 T bSSFP cine: the single vendor the base model is "
            "pretrained on (stylised, not measured).",
        ),
        ScannerProfile(
            name="siemens",
            manufacturer="SIEMENS",
            model="Skyra",
            field_strength_t=3.0,
            tissue_intensity=_tissues(
                fat=0.70,
                muscle=0.18,
                mediastinum=0.30,
                lung=0.06,
                liver=0.17,
                blood=1.0,
                myocardium=0.21,
                marrow=0.50,
                csf=0.95,
            ),
            gamma=1.0,
            blood_level=900.0,
            stored_max=4095.0,
            bias_strength=0.45,
            noise_sigma=0.028,
            psf_fwhm_mm=1.7,
            pixel_spacing_mm=(1.15, 1.45),
            matrix_sizes=((208, 256), (256, 256)),
            slice_thickness_mm=(7.0, 8.0),
            slice_gap_mm=(1.0, 3.0),
            n_phases=(22, 28),
            description="Stylised Siemens 3 T site: sharper, higher SNR, darker myocardium and a strong B1 bias field.",
        ),
        ScannerProfile(
            name="ge",
            manufacturer="GE MEDICAL SYSTEMS",
            model="Signa HDxt",
            field_strength_t=1.5,
            tissue_intensity=_tissues(
                fat=0.95,
                muscle=0.35,
                mediastinum=0.45,
                lung=0.10,
                liver=0.32,
                blood=0.88,
                myocardium=0.40,
                marrow=0.60,
                csf=0.85,
            ),
            gamma=0.85,
            blood_level=150.0,
            stored_max=255.0,
            bias_strength=0.20,
            noise_sigma=0.025,
            psf_fwhm_mm=3.0,
            pixel_spacing_mm=(1.40, 1.60),
            matrix_sizes=((256, 256),),
            slice_thickness_mm=(8.0, 10.0),
            slice_gap_mm=(0.0, 2.0),
            n_phases=(20, 25),
            texture_strength=0.7,
            description="Stylised GE FIESTA look: smooth (wide PSF), flat blood-myocardium "
            "contrast, fat brighter than blood, 8-bit-like stored range.",
        ),
        ScannerProfile(
            name="philips",
            manufacturer="Philips Medical Systems",
            model="Achieva",
            field_strength_t=1.5,
            tissue_intensity=_tissues(
                fat=0.82,
                muscle=0.17,
                mediastinum=0.28,
                lung=0.03,
                liver=0.15,
                blood=1.0,
                myocardium=0.19,
                marrow=0.50,
                csf=0.90,
            ),
            gamma=1.15,
            blood_level=2200.0,
            stored_max=4095.0,
            bias_strength=0.30,
            noise_sigma=0.065,
            psf_fwhm_mm=2.0,
            pixel_spacing_mm=(1.05, 1.30),
            matrix_sizes=((288, 288), (320, 320)),
            slice_thickness_mm=(8.0, 10.0),
            slice_gap_mm=(0.0, 1.0),
            n_phases=(25, 30),
            texture_strength=1.2,
            description="Stylised Philips bTFE look: reconstructed to a finer, larger matrix, "
            "noisier, high blood-myocardium contrast, large stored range.",
        ),
    )
}


def get_profile(name_or_profile: str | ScannerProfile) -> ScannerProfile:
    """Return a scanner profile by name (case-insensitive), or the profile itself.

    Args:
        name_or_profile: a key of :data:`PROFILES` or a :class:`ScannerProfile`.

    Returns:
        The profile.

    Raises:
        ValueError: if the name is unknown (the message lists the known names) or the argument is
            neither a string nor a profile.

    Example:
        >>> get_profile("GE").manufacturer
        'GE MEDICAL SYSTEMS'
    """
    if isinstance(name_or_profile, ScannerProfile):
        return name_or_profile
    if not isinstance(name_or_profile, str):
        raise ValueError(f"`profile` must be a profile name or a ScannerProfile, got {type(name_or_profile).__name__}.")
    key = name_or_profile.strip().lower()
    if key not in PROFILES:
        raise ValueError(f"`profile` {name_or_profile!r} is unknown; known profiles: {sorted(PROFILES)}.")
    return PROFILES[key]


# --------------------------------------------------------------------------------------------
# small pure functions
# --------------------------------------------------------------------------------------------


def contraction_curve(
    t: np.ndarray | float,
    t_es: float,
    fill_duration: float = 0.2,
    diastasis_level: float = 0.2,
    atrial_start: float = 0.85,
) -> np.ndarray:
    """Systolic fraction ``s(t)`` over one R-R interval: 0 at end-diastole, 1 at end-systole.

    With ``t`` the fraction of the R-R interval (taken modulo 1) and cosine ramps
    ``ramp(x) = (1 - cos(pi x)) / 2``::

        s = ramp(t / t_es)                                          0 <= t <= t_es  (ejection)
        s = 1 - (1 - d) ramp((t - t_es) / fill_duration)            rapid filling, then s = d
        s = d (1 - ramp((t - atrial_start) / (1 - atrial_start)))   atrial kick back to 0

    The curve is continuous with a continuous derivative, periodic, largest (1) only at ``t_es``
    and zero only at ``t = 0``. Cavity radii are scaled by ``1 - (1 - c_es) s(t)``.

    Args:
        t: time(s) as fractions of the R-R interval.
        t_es: end-systole in ``(0, 1)``, typically 0.30-0.40.
        fill_duration: length of rapid filling (fraction of R-R), > 0.
        diastasis_level: ``d`` in ``[0, 1)``, the systolic fraction held during diastasis.
        atrial_start: start of the atrial kick; ``t_es + fill_duration <= atrial_start < 1``.

    Returns:
        ``s(t)`` in ``[0, 1]``, float64, shaped like `t`.

    Raises:
        ValueError: if the timing parameters are out of order or range.

    Example:
        >>> contraction_curve([0.0, 0.35], 0.35).round(6).tolist()
        [0.0, 1.0]
    """
    if not 0 < t_es < 1:
        raise ValueError(f"`t_es` must be in (0, 1), got {t_es}.")
    if not fill_duration > 0:
        raise ValueError(f"`fill_duration` must be positive, got {fill_duration}.")
    if not 0 <= diastasis_level < 1:
        raise ValueError(f"`diastasis_level` must be in [0, 1), got {diastasis_level}.")
    if not t_es + fill_duration <= atrial_start < 1:
        raise ValueError(
            f"`atrial_start` must be in [t_es + fill_duration, 1) = [{t_es + fill_duration}, 1), got {atrial_start}."
        )
    tt = np.mod(np.asarray(t, dtype=np.float64), 1.0)

    def ramp(x: np.ndarray) -> np.ndarray:
        return 0.5 * (1.0 - np.cos(np.pi * np.clip(x, 0.0, 1.0)))

    ejection = ramp(tt / t_es)
    filling = 1.0 - (1.0 - diastasis_level) * ramp((tt - t_es) / fill_duration)
    kick = diastasis_level * (1.0 - ramp((tt - atrial_start) / (1.0 - atrial_start)))
    return np.where(tt <= t_es, ejection, np.where(tt < atrial_start, filling, kick))


def superellipse_profile(z: np.ndarray | float, length: float, q: float) -> np.ndarray:
    """Long-axis radius profile ``(1 - (z / length)^q)^(1/q)`` on ``0 <= z < length``, else 0.

    It is 1 at the base (``z = 0``), flat near the base for ``q > 2`` and falls to 0 at the apex.

    Args:
        z: distance(s) from the base towards the apex (mm).
        length: base-to-apex length (mm), > 0.
        q: super-ellipse exponent, > 0 (2 is an ellipse).

    Returns:
        Float64 array shaped like `z` in ``[0, 1]``.

    Raises:
        ValueError: if `length` or `q` is not positive.
    """
    if not length > 0:
        raise ValueError(f"`length` must be positive, got {length}.")
    if not q > 0:
        raise ValueError(f"`q` must be positive, got {q}.")
    zz = np.asarray(z, dtype=np.float64)
    x = np.clip(zz / length, 0.0, 1.0)
    return np.where((zz >= 0) & (zz < length), (1.0 - x**q) ** (1.0 / q), 0.0)


def fourier_contour(theta: np.ndarray, cos_coeffs: np.ndarray, sin_coeffs: np.ndarray) -> np.ndarray:
    """Relative radius ``1 + sum_k a_k cos(k theta) + b_k sin(k theta)`` of a perturbed circle.

    Args:
        theta: polar angle(s) in radians.
        cos_coeffs: ``a_k`` for orders ``k = 1 .. K``.
        sin_coeffs: ``b_k`` for the same orders (same length).

    Returns:
        Array shaped like `theta` (same float dtype, at least float32).

    Raises:
        ValueError: if the coefficient vectors differ in length.
    """
    a = np.asarray(cos_coeffs, dtype=np.float64).ravel()
    b = np.asarray(sin_coeffs, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"`cos_coeffs` and `sin_coeffs` must have the same length, got {a.size} and {b.size}.")
    th = np.asarray(theta)
    out = np.ones_like(th, dtype=np.result_type(th.dtype, np.float32))
    for k in range(1, a.size + 1):
        if a[k - 1]:
            out += a[k - 1] * np.cos(k * th)
        if b[k - 1]:
            out += b[k - 1] * np.sin(k * th)
    return out


def ellipse_mask(
    x: np.ndarray,
    y: np.ndarray,
    centre: tuple[float, float],
    semi_axes: tuple[float, float],
    angle: float = 0.0,
) -> np.ndarray:
    """Points strictly inside an ellipse: ``(x'/a)^2 + (y'/b)^2 < 1`` in the ellipse's frame.

    Args:
        x: x coordinates (any shape).
        y: y coordinates, broadcastable with `x`.
        centre: ``(cx, cy)``.
        semi_axes: ``(a, b)`` along the ellipse's own x and y axes, both > 0.
        angle: rotation of the ellipse's x axis from the x axis (radians, towards +y).

    Returns:
        Boolean array of the broadcast shape.

    Raises:
        ValueError: if a semi-axis is not positive.
    """
    a, b = semi_axes
    if not (a > 0 and b > 0):
        raise ValueError(f"`semi_axes` must be positive, got {semi_axes}.")
    dx = x - centre[0]
    dy = y - centre[1]
    if angle:
        c, s = math.cos(angle), math.sin(angle)
        dx, dy = c * dx + s * dy, -s * dx + c * dy
    return (dx / a) ** 2 + (dy / b) ** 2 < 1.0


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


def sax_orientation(
    azimuth_deg: float, elevation_deg: float, inplane_deg: float = 0.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Direction cosines of a double-oblique short-axis plane in DICOM's LPS frame.

    The slice normal (base to apex) is ``n = (cos(el) cos(az), -cos(el) sin(az), sin(el))``:
    ``az`` turns from patient left towards anterior, ``el < 0`` tilts inferiorly. The column
    direction (image down) is posterior projected onto the plane, ``row = col × n`` (so that
    ``row × col = n``), and both are then turned by `inplane_deg` about ``n``.

    Args:
        azimuth_deg: azimuth of the long axis (typically 30-60°).
        elevation_deg: elevation of the long axis (typically -45 to -20°).
        inplane_deg: in-plane rotation of the image axes.

    Returns:
        ``(row_cos, col_cos, normal)``: orthonormal unit 3-vectors with ``row × col = normal``.

    Raises:
        ValueError: if the normal is (almost) parallel to the posterior axis.
    """
    az, el, rho = (math.radians(v) for v in (azimuth_deg, elevation_deg, inplane_deg))
    n = np.array([math.cos(el) * math.cos(az), -math.cos(el) * math.sin(az), math.sin(el)])
    posterior = np.array([0.0, 1.0, 0.0])
    col_c = posterior - np.dot(posterior, n) * n
    norm = np.linalg.norm(col_c)
    if norm < 1e-3:
        raise ValueError("`azimuth_deg`/`elevation_deg` give a normal parallel to the posterior axis.")
    col_c /= norm
    row_c = np.cross(col_c, n)
    row = math.cos(rho) * row_c - math.sin(rho) * col_c
    col = math.sin(rho) * row_c + math.cos(rho) * col_c
    return row, col, np.cross(row, col)


def cine_truth(label: np.ndarray, voxel_ml: float, ed_phase: int, es_phase: int) -> dict[str, float]:
    """Clinical volumes of a labelled cine from voxel counts.

    ``V = count × voxel_ml``; ``SV = EDV - ESV``; ``EF = 100 SV / EDV`` (0 when EDV is 0);
    ``lv_mass_g = 1.05 g/mL × myocardial volume at ED``.

    Args:
        label: ``(T, Z, Y, X)`` labels (0 bg, 1 LV, 2 MYO, 3 RV).
        voxel_ml: volume of one voxel in mL, > 0.
        ed_phase: index of end-diastole.
        es_phase: index of end-systole.

    Returns:
        ``lv_edv_ml, lv_esv_ml, lv_sv_ml, lv_ef_pct, rv_edv_ml, rv_esv_ml, rv_sv_ml, rv_ef_pct,
        lv_mass_g`` as floats.

    Raises:
        ValueError: if `label` is not 4D, `voxel_ml` is not positive or a phase is out of range.
    """
    if label.ndim != 4:
        raise ValueError(f"`label` must be (T, Z, Y, X), got shape {label.shape}.")
    if not voxel_ml > 0:
        raise ValueError(f"`voxel_ml` must be positive, got {voxel_ml}.")
    for name, value in (("ed_phase", ed_phase), ("es_phase", es_phase)):
        if not 0 <= value < label.shape[0]:
            raise ValueError(f"`{name}` must be in [0, {label.shape[0]}), got {value}.")

    def vol(phase: int, cls: int) -> float:
        return float(np.count_nonzero(label[phase] == cls)) * voxel_ml

    out: dict[str, float] = {}
    for prefix, cls in (("lv", LV), ("rv", RV)):
        edv, esv = vol(ed_phase, cls), vol(es_phase, cls)
        out[f"{prefix}_edv_ml"] = edv
        out[f"{prefix}_esv_ml"] = esv
        out[f"{prefix}_sv_ml"] = edv - esv
        out[f"{prefix}_ef_pct"] = 100.0 * (edv - esv) / edv if edv > 0 else 0.0
    out["lv_mass_g"] = MYOCARDIAL_DENSITY_G_PER_ML * vol(ed_phase, MYO)
    return out


# --------------------------------------------------------------------------------------------
# subject sampling
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Subject:
    """Every random quantity of one subject (lengths in mm, angles in radians)."""

    # patient
    height_cm: float
    weight_kg: float
    sex: str
    age_years: int
    group: str
    # LV
    re0: float  # ED endocardial radius at the base
    rp0: float  # ED epicardial radius at the base
    length: float  # ED base-to-epicardial-apex length
    length_endo: float  # base-to-endocardial-apex length
    q_lv: float
    fourier_a: np.ndarray
    fourier_b: np.ndarray
    fourier_twist: float  # rotation of the contour shape per unit z/length
    wall_var: float
    wall_angle: float
    drift: tuple[float, float]  # LV centre shift from base to apex (scene mm)
    centre: tuple[float, float]  # LV centre at the base (scene mm)
    phi_rv: float  # direction of the RV from the LV centre (scene angle)
    # RV
    rv_depth0: float  # largest radial thickness of the RV cavity at the base (ED)
    rv_half_angles: tuple[float, float]  # angular half-extent of the crescent on each side
    rv_gamma: float  # bluntness of the crescent (cos^gamma window)
    rv_length: float
    q_rv: float
    rv_wall: float
    # details
    pap_angles: tuple[float, float]
    pap_pos: float
    pap_radius: float
    trab_depth: float
    trab_a: np.ndarray
    trab_b: np.ndarray
    fat_max: float
    env_margin: float
    # cycle
    heart_rate: float
    t_es: float
    fill: float
    diastasis: float
    atrial_start: float
    ef_target: float
    rv_ef_target: float
    c_es: float
    c_rv_es: float
    base_descent: float
    kappa: float
    # stack and scanner
    n_phases: int
    es_index: int
    thickness: float
    spacing: float
    z0: float
    n_slices: int
    pixel: float
    matrix: tuple[int, int]
    rotation: float
    gain: float
    # body (scene mm)
    body_centre: tuple[float, float]
    body_axes: tuple[float, float]
    fat_thickness: float
    muscle_thickness: float
    spine_centre: tuple[float, float]
    vertebra_radius: float
    aorta_centre: tuple[float, float]
    aorta_radius: float
    liver_centre: tuple[float, float]
    liver_axes: tuple[float, float]
    liver_angle: float
    lung_centres: tuple[tuple[float, float], tuple[float, float]]
    lung_axes: tuple[tuple[float, float], tuple[float, float]]
    vessels: np.ndarray  # (N, 5): x, y, radius, dx/dz, dy/dz
    # geometry
    azimuth: float
    elevation: float
    origin_centre: np.ndarray  # LPS position of the FOV centre of slice 0


def _lv_radii(subj: _Subject, z: float) -> tuple[float, float]:
    """ED endocardial and epicardial radius (mm) at distance `z` from the ED base."""
    re = subj.re0 * float(superellipse_profile(z, subj.length_endo, subj.q_lv))
    rp = subj.rp0 * float(superellipse_profile(z, subj.length, subj.q_lv))
    return re, max(rp, re)


def _calibrate(weights: np.ndarray, present_es: np.ndarray, target_ratio: float, power: float) -> float:
    """Radial scale ``c`` with ``c^power × sum(weights[present_es]) / sum(weights) = target_ratio``.

    `weights` are per-slice volumes at ED, `present_es` marks the slices still below the base at
    ES; the result is clipped to ``[0.3, 0.97]``.
    """
    total = float(weights.sum())
    kept = float(weights[present_es].sum())
    if total <= 0 or kept <= 0:
        return 0.97
    return float(np.clip((target_ratio * total / kept) ** (1.0 / power), 0.3, 0.97))


def _sample_subject(seed: int, prof: ScannerProfile, n_phases: int | None) -> _Subject:
    """Draw every random quantity of a subject, always in the same order (determinism).

    Patient, anatomy and cycle come from ``default_rng(seed)`` alone, so they are the same in
    every profile; the acquisition (phases, slices, pixel, matrix, orientation, gain) from
    ``default_rng([seed, 3])`` and the profile's ranges.
    """
    rng = np.random.default_rng(seed)
    acq = np.random.default_rng([seed, 3])
    u = rng.uniform
    # patient
    sex = "M" if rng.random() < 0.55 else "F"
    height = float(np.clip(rng.normal(177.0 if sex == "M" else 164.0, 7.0), 150.0, 200.0))
    bmi = float(u(19.0, 33.0))
    weight = round(bmi * (height / 100.0) ** 2, 1)
    age = int(u(20, 80))
    bsa = math.sqrt(height * weight / 3600.0)
    group = str(rng.choice(["NOR", "NOR", "DCM", "HCM", "MINF"]))
    size = math.sqrt(bsa / 1.9) * u(0.92, 1.08)

    # LV
    re0 = u(22.0, 27.0) * size
    wall = u(7.5, 10.5)
    length = u(82.0, 98.0) * size
    ef = u(56.0, 70.0)
    rv_ef = u(45.0, 65.0)
    if group == "DCM":
        re0 *= u(1.18, 1.32)
        wall *= u(0.75, 0.9)
        length *= u(1.05, 1.12)
        ef = u(35.0, 48.0)
        rv_ef = u(35.0, 55.0)
    elif group == "HCM":
        re0 *= u(0.85, 0.95)
        wall *= u(1.35, 1.7)
        ef = u(60.0, 70.0)
    elif group == "MINF":
        re0 *= u(1.05, 1.15)
        ef = u(35.0, 50.0)
    rp0 = re0 + wall
    length_endo = length - wall * u(0.7, 0.9)
    q_lv = u(2.2, 3.0)
    fourier_a = np.array([0.0, u(-0.07, 0.07), u(-0.03, 0.03), u(-0.02, 0.02)])
    fourier_b = np.array([0.0, u(-0.07, 0.07), u(-0.03, 0.03), u(-0.02, 0.02)])
    fourier_twist = u(-0.6, 0.6)
    wall_var = u(0.0, 0.35 if group == "MINF" else 0.15)
    wall_angle = u(-np.pi, np.pi)
    drift = (u(-7.0, 7.0), u(-7.0, 7.0))
    centre = (u(-15.0, 15.0), u(-15.0, 15.0))
    phi_rv = np.pi + u(0.05, 0.5)

    # RV
    rv_depth0 = u(16.0, 26.0) * size * (1.2 if group == "DCM" else 1.0)
    rv_half_angles = (u(1.1, 1.6), u(1.1, 1.6))
    rv_gamma = u(0.35, 0.8)
    rv_length = u(0.62, 0.85)
    q_rv = u(1.8, 2.6)
    rv_wall = u(2.5, 4.0)

    # details
    pap_angles = (np.pi - u(0.5, 1.0), -np.pi + u(0.5, 1.0))
    pap_pos = u(0.45, 0.62)
    pap_radius = u(3.0, 5.0) * size
    trab_depth = u(0.04, 0.09)
    trab_a = rng.normal(0.0, 1.0, 14) * (np.arange(1, 15) >= 6)
    trab_b = rng.normal(0.0, 1.0, 14) * (np.arange(1, 15) >= 6)
    fat_max = u(2.0, 7.0)
    env_margin = u(2.0, 6.0)

    # cycle
    heart_rate = u(55.0, 90.0)
    t_es = u(0.30, 0.40)
    fill = u(0.15, 0.25)
    diastasis = u(0.08, 0.22)
    atrial_start = u(max(0.78, t_es + fill + 0.05), 0.9)
    base_descent = u(2.5, 8.0) * ef / 65.0
    kappa = u(0.04, 0.12)

    # stack (acquisition stream)
    lo, hi = prof.n_phases
    t_count = int(acq.integers(lo, hi + 1))
    if n_phases is not None:
        t_count = n_phases
    times = np.arange(t_count) / t_count
    es_index = int(np.argmax(contraction_curve(times, t_es, fill, diastasis, atrial_start)))
    s_es = float(contraction_curve(times[es_index], t_es, fill, diastasis, atrial_start))
    thickness = round(acq.uniform(*prof.slice_thickness_mm), 1)
    spacing = round(thickness + acq.uniform(*prof.slice_gap_mm), 1)
    z0 = acq.uniform(0.3, 1.0) * spacing
    last = length * acq.uniform(0.86, 1.04)
    n_slices = int(np.clip(math.floor((last - z0) / spacing) + 1, 6, 14))
    pixel = round(acq.uniform(*prof.pixel_spacing_mm), 3)
    matrix = tuple(prof.matrix_sizes[int(acq.integers(len(prof.matrix_sizes)))])
    rotation = acq.uniform(-0.26, 0.26)
    gain = acq.uniform(0.8, 1.25)
    azimuth, elevation = acq.uniform(30.0, 60.0), acq.uniform(-45.0, -20.0)
    origin_centre = np.array([acq.uniform(-10.0, 30.0), acq.uniform(-30.0, 10.0), acq.uniform(-40.0, 40.0)])

    # calibrate the radial contraction to the sampled ejection fractions on the actual slices
    zs = z0 + spacing * np.arange(n_slices)
    ph = superellipse_profile(zs, length_endo, q_lv) ** 2
    present = zs >= base_descent * s_es
    c_es_eff = _calibrate(ph, present, 1.0 - ef / 100.0, 2.0)
    c_es = float(np.clip(1.0 - (1.0 - c_es_eff) / max(s_es, 1e-6), 0.2, 0.97))
    prv = superellipse_profile(zs, rv_length * length, q_rv) * superellipse_profile(zs, length, q_lv)
    c_rv_eff = _calibrate(prv, present, 1.0 - rv_ef / 100.0, 1.3)
    c_rv_es = float(np.clip(1.0 - (1.0 - c_rv_eff) / max(s_es, 1e-6), 0.2, 0.97))

    # body: centre to the patient's right (image left) and posterior (down) of the heart
    body_axes = (u(150.0, 175.0) * (1 + 0.012 * (bmi - 24)), u(105.0, 125.0) * (1 + 0.012 * (bmi - 24)))
    body_centre = (centre[0] + u(20.0, 40.0) * -1.0, centre[1] + u(25.0, 40.0))
    fat_thickness = float(np.clip(5.0 + 1.1 * (bmi - 19.0) + u(-2.0, 2.0), 3.0, 25.0))
    muscle_thickness = u(8.0, 14.0)
    inner_b = body_axes[1] - fat_thickness - muscle_thickness
    spine_centre = (body_centre[0] + u(-6.0, 6.0), body_centre[1] + inner_b - u(38.0, 48.0))
    vertebra_radius = u(15.0, 19.0)
    aorta_radius = u(10.0, 13.5)
    aorta_centre = (
        spine_centre[0] + u(18.0, 28.0),
        spine_centre[1] - vertebra_radius - aorta_radius + u(0.0, 6.0),
    )
    inner_a = body_axes[0] - fat_thickness - muscle_thickness
    liver_centre = (body_centre[0] - u(0.25, 0.4) * inner_a, body_centre[1] + u(0.25, 0.45) * inner_b)
    liver_axes = (u(0.45, 0.6) * inner_a, u(0.45, 0.6) * inner_b)
    liver_angle = u(-0.5, 0.1)
    lung_centres = (
        (body_centre[0] - u(0.45, 0.55) * inner_a, body_centre[1] - u(0.0, 0.15) * inner_b),
        (body_centre[0] + u(0.5, 0.6) * inner_a, body_centre[1] - u(0.0, 0.15) * inner_b),
    )
    lung_axes = (
        (u(0.38, 0.48) * inner_a, u(0.75, 0.9) * inner_b),
        (u(0.35, 0.45) * inner_a, u(0.75, 0.9) * inner_b),
    )
    n_vessels = int(rng.integers(16, 30))
    side = rng.integers(0, 2, n_vessels)
    ang = u(0, 2 * np.pi, n_vessels)
    rad = np.sqrt(u(0, 1, n_vessels)) * 0.85
    vx = np.array(
        [lung_centres[s][0] + r * lung_axes[s][0] * math.cos(a) for s, r, a in zip(side, rad, ang, strict=True)]
    )
    vy = np.array(
        [lung_centres[s][1] + r * lung_axes[s][1] * math.sin(a) for s, r, a in zip(side, rad, ang, strict=True)]
    )
    vessels = np.stack([vx, vy, u(1.2, 4.0, n_vessels), u(-0.4, 0.4, n_vessels), u(-0.4, 0.4, n_vessels)], axis=1)

    return _Subject(
        height_cm=round(height, 1),
        weight_kg=weight,
        sex=sex,
        age_years=age,
        group=group,
        re0=re0,
        rp0=rp0,
        length=length,
        length_endo=length_endo,
        q_lv=q_lv,
        fourier_a=fourier_a,
        fourier_b=fourier_b,
        fourier_twist=fourier_twist,
        wall_var=wall_var,
        wall_angle=wall_angle,
        drift=drift,
        centre=centre,
        phi_rv=phi_rv,
        rv_depth0=rv_depth0,
        rv_half_angles=rv_half_angles,
        rv_gamma=rv_gamma,
        rv_length=rv_length,
        q_rv=q_rv,
        rv_wall=rv_wall,
        pap_angles=pap_angles,
        pap_pos=pap_pos,
        pap_radius=pap_radius,
        trab_depth=trab_depth,
        trab_a=trab_a,
        trab_b=trab_b,
        fat_max=fat_max,
        env_margin=env_margin,
        heart_rate=heart_rate,
        t_es=t_es,
        fill=fill,
        diastasis=diastasis,
        atrial_start=atrial_start,
        ef_target=ef,
        rv_ef_target=rv_ef,
        c_es=c_es,
        c_rv_es=c_rv_es,
        base_descent=base_descent,
        kappa=kappa,
        n_phases=t_count,
        es_index=es_index,
        thickness=thickness,
        spacing=spacing,
        z0=z0,
        n_slices=n_slices,
        pixel=pixel,
        matrix=(int(matrix[0]), int(matrix[1])),
        rotation=rotation,
        gain=gain,
        body_centre=body_centre,
        body_axes=body_axes,
        fat_thickness=fat_thickness,
        muscle_thickness=muscle_thickness,
        spine_centre=spine_centre,
        vertebra_radius=vertebra_radius,
        aorta_centre=aorta_centre,
        aorta_radius=aorta_radius,
        liver_centre=liver_centre,
        liver_axes=liver_axes,
        liver_angle=liver_angle,
        lung_centres=lung_centres,
        lung_axes=lung_axes,
        vessels=vessels,
        azimuth=azimuth,
        elevation=elevation,
        origin_centre=origin_centre,
    )


# --------------------------------------------------------------------------------------------
# rendering
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Phase:
    """State of the heart at one phase."""

    s: float  # systolic fraction
    c_lv: float  # LV cavity radial scale
    c_rv: float  # RV depth scale
    base: float  # position of the base plane (mm from the ED base)


def _phase_state(subj: _Subject, t: float) -> _Phase:
    """Heart state at R-R fraction `t`."""
    s = float(contraction_curve(t, subj.t_es, subj.fill, subj.diastasis, subj.atrial_start))
    return _Phase(
        s=s, c_lv=1.0 - (1.0 - subj.c_es) * s, c_rv=1.0 - (1.0 - subj.c_rv_es) * s, base=subj.base_descent * s
    )


def _scene_grid(ny: int, nx: int, pixel: float, factor: int, rotation: float) -> tuple[np.ndarray, np.ndarray]:
    """Scene coordinates (mm, x right, y down, rotated by `rotation`) of a supersampled grid."""
    offs = (np.arange(factor, dtype=np.float32) + 0.5) / factor - 0.5
    cols = ((np.arange(nx, dtype=np.float32)[:, None] + offs[None, :]).ravel() - (nx - 1) / 2) * pixel
    rows = ((np.arange(ny, dtype=np.float32)[:, None] + offs[None, :]).ravel() - (ny - 1) / 2) * pixel
    x, y = np.meshgrid(cols, rows)
    c, s = np.float32(math.cos(rotation)), np.float32(math.sin(rotation))
    return c * x + s * y, -s * x + c * y


def _scene_to_index(subj: _Subject, point: tuple[float, float]) -> tuple[float, float]:
    """Native (row, column) index of a scene point."""
    c, s = math.cos(subj.rotation), math.sin(subj.rotation)
    x = c * point[0] - s * point[1]
    y = s * point[0] + c * point[1]
    ny, nx = subj.matrix
    return y / subj.pixel + (ny - 1) / 2, x / subj.pixel + (nx - 1) / 2


def _lv_centre(subj: _Subject, z: float) -> tuple[float, float]:
    """LV centre (scene mm) at slice position `z`."""
    f = z / subj.length
    return subj.centre[0] + subj.drift[0] * f, subj.centre[1] + subj.drift[1] * f


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


def _affine(subj: _Subject) -> np.ndarray:
    """Voxel ``(x, y, z)`` to LPS affine of the stack (cine convention)."""
    row, col, normal = sax_orientation(subj.azimuth, subj.elevation, math.degrees(subj.rotation))
    ny, nx = subj.matrix
    p = subj.pixel
    origin = subj.origin_centre - row * (nx - 1) / 2 * p - col * (ny - 1) / 2 * p
    aff = np.eye(4)
    aff[:3, 0] = row * p
    aff[:3, 1] = col * p
    aff[:3, 2] = normal * subj.spacing
    aff[:3, 3] = origin
    return aff


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


# --------------------------------------------------------------------------------------------
# public entry point
# --------------------------------------------------------------------------------------------


def make_subject(
    seed: int,
    profile: str | ScannerProfile = "reference",
    subject_id: str | None = None,
    n_phases: int | None = None,
    phases: str = "all",
) -> CineStudy:
    """Make one synthetic short-axis cine subject, deterministically from `seed`.

    Args:
        seed: non-negative integer; the same seed (and profile, `n_phases`) gives bit-identical
            arrays. Patient, anatomy and cycle are drawn from ``np.random.default_rng(seed)``
            alone, so one seed is the same heart in every profile (use distinct seeds for
            distinct sites); the acquisition (phases, slices, pixel, matrix, orientation) from
            ``default_rng([seed, 3])``; texture and bias from ``default_rng([seed, 1])``; the
            noise of phase ``k``, slice ``z`` from ``default_rng([seed, 2, k, z])``, so a frame
            does not depend on which others are rendered.
        profile: a :data:`PROFILES` name or a :class:`ScannerProfile`.
        subject_id: identifier; default ``"<profile>-<seed:05d>"``.
        n_phases: number of cine phases T >= 2; default drawn from the profile's range.
        phases: ``"all"`` renders the T-phase cine; ``"ed_es"`` renders only the ED and ES frames
            of that same cine (T = 2, ``ed_phase`` 0, ``es_phase`` 1), bit-identical to those
            frames of ``"all"``, with their trigger times.

    Returns:
        A :class:`~cardiolora.data.cine.CineStudy` with float32 ``image`` in
        ``[0, profile.stored_max]`` (integer-valued), uint8 ``label``, geometry, ``truth`` computed
        from the labels (:func:`cine_truth`) and ``meta`` (height_cm, weight_kg, sex, age_years,
        group, seed, profile, manufacturer, scanner, field_strength_t, heart_rate_bpm,
        lv_ef_target_pct, rv_ef_target_pct, cine_n_phases, cine_es_phase).

    Raises:
        ValueError: if `seed` is not a non-negative integer, the profile is unknown, `n_phases`
            is not an integer >= 2 or `phases` is not ``"all"`` or ``"ed_es"``.

    Example:
        >>> s = make_subject(0, "philips", n_phases=10)
        >>> s.image.shape[0], s.truth["lv_edv_ml"] > s.truth["lv_esv_ml"]
        (10, True)
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"`seed` must be a non-negative integer, got {seed!r}.")
    prof = get_profile(profile)
    if n_phases is not None and (
        isinstance(n_phases, bool) or not isinstance(n_phases, (int, np.integer)) or n_phases < 2
    ):
        raise ValueError(f"`n_phases` must be an integer >= 2 or None, got {n_phases!r}.")
    if phases not in _PHASE_MODES:
        raise ValueError(f"`phases` must be one of {list(_PHASE_MODES)}, got {phases!r}.")
    seed = int(seed)
    subj = _sample_subject(seed, prof, None if n_phases is None else int(n_phases))

    indices = list(range(subj.n_phases)) if phases == "all" else [0, subj.es_index]
    image, label = _render(subj, prof, seed, indices)
    rr_ms = 60000.0 / subj.heart_rate
    trigger = np.array([k * rr_ms / subj.n_phases for k in indices], dtype=np.float64)
    ed, es = (0, subj.es_index) if phases == "all" else (0, 1)
    spacing = (float(subj.spacing), float(subj.pixel), float(subj.pixel))
    voxel_ml = float(np.prod(spacing)) / 1000.0
    meta: dict[str, object] = {
        "seed": seed,
        "profile": prof.name,
        "manufacturer": prof.manufacturer,
        "scanner": prof.model,
        "field_strength_t": prof.field_strength_t,
        "height_cm": subj.height_cm,
        "weight_kg": subj.weight_kg,
        "sex": subj.sex,
        "age_years": subj.age_years,
        "group": subj.group,
        "heart_rate_bpm": round(subj.heart_rate, 1),
        "lv_ef_target_pct": round(subj.ef_target, 2),
        "rv_ef_target_pct": round(subj.rv_ef_target, 2),
        "cine_n_phases": subj.n_phases,
        "cine_es_phase": subj.es_index,
        "phases": phases,
    }
    return CineStudy(
        subject_id=subject_id if subject_id is not None else f"{prof.name}-{seed:05d}",
        image=image,
        label=label,
        spacing_zyx=spacing,
        affine_lps=_affine(subj),
        trigger_times_ms=trigger,
        ed_phase=ed,
        es_phase=es,
        vendor=prof.name,
        slice_thickness_mm=float(subj.thickness),
        truth=cine_truth(label, voxel_ml, ed, es),
        meta=meta,
    )
