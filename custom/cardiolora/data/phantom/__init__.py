"""Synthetic multi-vendor short-axis bSSFP cine phantoms: the project's embedded default data.

No real image may ship with the project, so every demo, test and default job runs on subjects made
here. A subject is a 2D+t short-axis stack (:class:`~cardiolora.data.cine.CineStudy`) with labels
in the project convention (0 background, 1 LV cavity, 2 LV myocardium, 3 RV cavity), an oblique
geometry, clinical ground truth computed from the rendered labels, and the look of one scanner
profile. This docstring is the specification; the stages live in one module each, and every
public name is importable from here:

=====================  ===================================================================
module                 stage
=====================  ===================================================================
``scanners``           tissue table, :class:`ScannerProfile`, :data:`SCANNER_PROFILES`, :func:`get_scanner`
``anatomy``            the subject's random draw, shape functions, cardiac cycle state
``heart``              polar frame of a slice, heart masks, painting and labels
``geometry``           LPS orientation and affine, scene grid, :func:`ellipse_mask`
``physics``            partial volume, texture, bias field, Rician noise
``render``             torso and heart tissue maps, PSF, the rendered cine
``truth``              :func:`cine_truth` (volumes, EF, LV mass)
=====================  ===================================================================

Imports go one way only: ``scanners`` <- ``anatomy`` <- ``geometry`` / ``heart`` <- ``render``
<- this package (``physics`` and ``truth`` stand alone). Names with a leading underscore are
shared between these modules but are not part of the API.

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

Scanner profiles (:data:`SCANNER_PROFILES`) are *stylised* caricatures of vendor looks, chosen to be
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

import numpy as np

from cardiolora.data.cine import CineStudy
from cardiolora.data.phantom.anatomy import (
    _sample_subject,
    contraction_curve,
    fourier_contour,
    superellipse_profile,
)
from cardiolora.data.phantom.geometry import _affine, ellipse_mask, sax_orientation
from cardiolora.data.phantom.physics import area_downsample, bias_field, rician_noise, smooth_random_field
from cardiolora.data.phantom.render import _render
from cardiolora.data.phantom.scanners import SCANNER_PROFILES, TISSUES, ScannerProfile, get_scanner
from cardiolora.data.phantom.truth import MYOCARDIAL_DENSITY_G_PER_ML, cine_truth

__all__ = [
    "TISSUES",
    "MYOCARDIAL_DENSITY_G_PER_ML",
    "ScannerProfile",
    "SCANNER_PROFILES",
    "get_scanner",
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

_PHASE_MODES = ("all", "ed_es")


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
        profile: a :data:`SCANNER_PROFILES` name or a :class:`ScannerProfile`.
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
    prof = get_scanner(profile)
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
