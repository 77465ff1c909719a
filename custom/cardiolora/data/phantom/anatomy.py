"""Anatomy and cardiac cycle of a phantom subject: the random draw and the shape functions.

:func:`_sample_subject` draws every random quantity of one subject (patient, LV, RV, papillary
muscles and trabeculae, cycle, acquisition, body) into a frozen :class:`_Subject`;
:func:`_phase_state` turns an R-R fraction into the heart's state (:class:`_Phase`). The shape
functions (:func:`contraction_curve`, :func:`superellipse_profile`, :func:`fourier_contour`) are
the equations of the package docstring (:mod:`cardiolora.data.phantom`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cardiolora.data.phantom.scanners import ScannerProfile

__all__ = ["contraction_curve", "superellipse_profile", "fourier_contour"]


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


def _lv_centre(subj: _Subject, z: float) -> tuple[float, float]:
    """LV centre (scene mm) at slice position `z`."""
    f = z / subj.length
    return subj.centre[0] + subj.drift[0] * f, subj.centre[1] + subj.drift[1] * f
