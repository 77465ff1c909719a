"""Tests of cardiolora.data.phantom: the synthetic multi-vendor short-axis cine generator."""

from __future__ import annotations

import dataclasses
import math
from functools import cache

import numpy as np
import pytest
from scipy import ndimage

from cardiolora.data.cine import CineStudy
from cardiolora.data.phantom import (
    SCANNER_PROFILES,
    TISSUES,
    area_downsample,
    bias_field,
    cine_truth,
    contraction_curve,
    ellipse_mask,
    fourier_contour,
    get_scanner,
    make_subject,
    rician_noise,
    sax_orientation,
    superellipse_profile,
)
from cardiolora.labels import LV, MYO, RV

TOL = 1e-5


@cache
def _subject(seed: int, profile: str = "reference", phases: str = "ed_es", n_phases: int | None = None) -> CineStudy:
    """Cached subjects: rendering is the slow part, every test only reads them."""
    return make_subject(seed, profile, phases=phases, n_phases=n_phases)


def _volumes_ml(study: CineStudy, cls: int) -> np.ndarray:
    """Per-phase volume of label `cls` in mL."""
    counts = np.count_nonzero(study.label == cls, axis=(1, 2, 3))
    return counts * study.voxel_volume_ml


def _mid_slices(study: CineStudy) -> list[int]:
    z = study.n_slices
    return sorted({z // 2 - 1, z // 2})


# --------------------------------------------------------------------------------------------
# determinism, shapes, value ranges
# --------------------------------------------------------------------------------------------


def test_same_seed_is_bit_identical():
    a = make_subject(5, "philips", phases="ed_es")
    b = _subject(5, "philips")
    assert a.image.tobytes() == b.image.tobytes()
    assert a.label.tobytes() == b.label.tobytes()
    assert np.array_equal(a.affine_lps, b.affine_lps)
    assert a.truth == b.truth and a.meta == b.meta


def test_different_seeds_differ():
    a, b = _subject(5, "philips"), _subject(6, "philips")
    assert a.image.shape != b.image.shape or not np.array_equal(a.image, b.image)
    assert a.truth != b.truth


def test_truth_of_one_subject_is_pinned():
    """Any change to the generator (sampling, shapes, rendering, truth) shows here first.

    Values of ``make_subject(0, "reference", phases="ed_es")`` recorded when the phantom became a
    package, rounded to 6 decimals (hence the 1e-6 tolerance). Update them only on purpose.
    """
    got = _subject(0, "reference").truth
    expected = {
        "lv_edv_ml": 115.040721, "lv_esv_ml": 35.732163, "lv_sv_ml": 79.308558, "lv_ef_pct": 68.939552,
        "rv_edv_ml": 97.258857, "rv_esv_ml": 34.601246, "rv_sv_ml": 62.657611, "rv_ef_pct": 64.423553,
        "lv_mass_g": 129.256587,
    }  # fmt: skip
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert abs(got[key] - value) <= 1e-6, key


@pytest.mark.parametrize("profile", sorted(SCANNER_PROFILES))
def test_shapes_dtypes_ranges(profile):
    prof = SCANNER_PROFILES[profile]
    s = _subject(0, profile)
    t, z, y, x = s.image.shape
    assert (t, s.ed_phase, s.es_phase) == (2, 0, 1)
    assert s.image.dtype == np.float32 and s.label.dtype == np.uint8
    assert s.label.shape == s.image.shape
    assert 6 <= z <= 14
    assert (y, x) in prof.matrix_sizes
    lo_px, hi_px = prof.pixel_spacing_mm
    assert s.spacing_zyx[1] == s.spacing_zyx[2] and lo_px - TOL <= s.spacing_zyx[1] <= hi_px + TOL
    lo_th, hi_th = prof.slice_thickness_mm
    assert lo_th - 0.05 <= s.slice_thickness_mm <= hi_th + 0.05  # thickness is rounded to 0.1 mm
    gap = s.spacing_zyx[0] - s.slice_thickness_mm
    assert prof.slice_gap_mm[0] - 0.1 <= gap <= prof.slice_gap_mm[1] + 0.1  # spacing rounded to 0.1 mm
    assert prof.n_phases[0] <= s.meta["cine_n_phases"] <= prof.n_phases[1]
    assert s.image.min() >= 0 and s.image.max() <= prof.stored_max
    assert np.array_equal(s.image, np.round(s.image))  # stored values are integers
    assert set(np.unique(s.label).tolist()) <= {0, LV, MYO, RV}
    assert s.vendor == profile and s.meta["manufacturer"] == prof.manufacturer
    assert s.meta["profile"] == profile and s.meta["seed"] == 0
    assert 150 <= s.meta["height_cm"] <= 200 and 35 <= s.meta["weight_kg"] <= 140
    assert s.subject_id == f"{profile}-00000"


@pytest.mark.parametrize(
    "n_phases, expected_t",
    [pytest.param(None, None, id="profile_range"), pytest.param(6, 6, id="given")],
)
def test_full_cine_phase_count_and_trigger_times(n_phases, expected_t):
    s = _subject(2, "ge", "all", n_phases)
    lo, hi = SCANNER_PROFILES["ge"].n_phases
    t = s.n_phases
    assert t == expected_t if expected_t is not None else lo <= t <= hi
    rr = 60000.0 / s.meta["heart_rate_bpm"]
    assert s.trigger_times_ms[0] == 0.0
    assert np.all(np.diff(s.trigger_times_ms) > 0)
    assert abs(s.trigger_times_ms[-1] - rr * (t - 1) / t) < 0.1 * rr / t  # heart rate rounded in meta
    assert 0.25 <= s.trigger_times_ms[s.es_phase] / rr <= 0.45  # ES 30-40 % of R-R, on the phase grid


def test_custom_profile_object_and_subject_id():
    prof = dataclasses.replace(SCANNER_PROFILES["reference"], name="site9", noise_sigma=0.0, bias_strength=0.0)
    s = make_subject(1, prof, subject_id="abc", phases="ed_es")
    assert s.subject_id == "abc" and s.vendor == "site9"
    ref = _subject(1, "reference")
    assert np.array_equal(s.label, ref.label)  # same seed, same anatomy and acquisition ranges


# --------------------------------------------------------------------------------------------
# anatomy and function
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed, profile", [(0, "reference"), (4, "ge"), (7, "philips"), (9, "siemens")])
def test_mid_ventricular_slices_hold_every_structure(seed, profile):
    s = _subject(seed, profile)
    for phase in (s.ed_phase, s.es_phase):
        for z in _mid_slices(s):
            present = set(np.unique(s.label[phase, z]).tolist())
            assert {LV, MYO, RV} <= present, (phase, z, present)


def test_apical_slices_lose_the_cavity_and_the_rv():
    # some subject has no LV cavity in its most apical slice (myocardium only or nothing)
    assert any(np.count_nonzero(_subject(seed).label[0, -1] == LV) == 0 for seed in (1, 3))
    for seed in (1, 3):
        s = _subject(seed)
        assert np.count_nonzero(s.label[0, -1] == RV) == 0  # the RV ends before the apex
        rv_area = np.count_nonzero(s.label[0] == RV, axis=(1, 2))
        assert rv_area[0] > 0 and rv_area[: s.n_slices // 2].min() > 0


@pytest.mark.parametrize("seed", range(6))
def test_volumes_and_ejection_fraction(seed):
    s = _subject(seed, "reference")
    lv, rv, myo = (_volumes_ml(s, c) for c in (LV, RV, MYO))
    tr = s.truth
    # truth is recomputed from the labels
    assert abs(tr["lv_edv_ml"] - lv[0]) <= TOL * max(1.0, lv[0])
    assert abs(tr["lv_esv_ml"] - lv[1]) <= TOL * max(1.0, lv[1])
    assert abs(tr["rv_edv_ml"] - rv[0]) <= TOL * max(1.0, rv[0])
    assert abs(tr["rv_esv_ml"] - rv[1]) <= TOL * max(1.0, rv[1])
    assert abs(tr["lv_mass_g"] - 1.05 * myo[0]) <= TOL * max(1.0, myo[0])
    assert abs(tr["lv_ef_pct"] - 100 * (lv[0] - lv[1]) / lv[0]) <= TOL
    assert abs(tr["lv_sv_ml"] - (tr["lv_edv_ml"] - tr["lv_esv_ml"])) <= TOL
    assert tr["lv_edv_ml"] > tr["lv_esv_ml"] > 0 and tr["rv_edv_ml"] > tr["rv_esv_ml"] > 0
    assert 30.0 <= tr["lv_ef_pct"] <= 75.0 and 25.0 <= tr["rv_ef_pct"] <= 80.0
    assert 50.0 <= tr["lv_edv_ml"] <= 400.0 and 60.0 <= tr["lv_mass_g"] <= 300.0
    # the sampled EF is reached on the rendered labels (pixelisation: a few points)
    assert abs(tr["lv_ef_pct"] - s.meta["lv_ef_target_pct"]) < 3.0


def test_ef_spans_normal_and_reduced_subjects():
    efs = [_subject(seed).truth["lv_ef_pct"] for seed in range(6)]
    assert min(efs) < 50.0 < max(efs)


def _wall_thickness_px(lab: np.ndarray) -> float:
    """Mean LV wall thickness in pixels: myocardial area / epicardial perimeter."""
    heart = (lab == LV) | (lab == MYO)
    perimeter = np.count_nonzero(heart & ~ndimage.binary_erosion(heart))
    return np.count_nonzero(lab == MYO) / perimeter


def test_wall_thickens_in_systole():
    s = _subject(0)
    for z in _mid_slices(s):
        ed, es = s.label[0, z], s.label[1, z]
        assert _wall_thickness_px(es) > 1.15 * _wall_thickness_px(ed)
        # myocardial area is roughly conserved (within 25 %)
        assert abs(np.count_nonzero(es == MYO) / np.count_nonzero(ed == MYO) - 1.0) < 0.25


def test_full_cine_ed_es_match_rendered_volumes():
    s = _subject(2, "ge", "all", None)
    lv = _volumes_ml(s, LV)
    assert s.ed_phase == 0
    assert abs(lv[s.ed_phase] - lv.max()) <= TOL and abs(lv[s.es_phase] - lv.min()) <= TOL
    assert s.meta["cine_es_phase"] == s.es_phase
    truth = cine_truth(s.label, s.voxel_volume_ml, s.ed_phase, s.es_phase)
    assert truth == s.truth


@pytest.mark.parametrize(
    "seed, profile, n_phases",
    [pytest.param(2, "ge", None, id="ge_profile_T"), pytest.param(2, "ge", 6, id="ge_T6")],
)
def test_ed_es_mode_equals_frames_of_full_cine(seed, profile, n_phases):
    full = _subject(seed, profile, "all", n_phases)
    pair = make_subject(seed, profile, n_phases=n_phases, phases="ed_es")
    for i, k in enumerate((full.ed_phase, full.es_phase)):
        assert np.array_equal(pair.image[i], full.image[k])
        assert np.array_equal(pair.label[i], full.label[k])
        assert pair.trigger_times_ms[i] == full.trigger_times_ms[k]
    assert np.array_equal(pair.affine_lps, full.affine_lps)
    assert pair.truth == full.truth
    assert pair.meta["cine_es_phase"] == full.es_phase


# --------------------------------------------------------------------------------------------
# realism: vendors differ, segmentation is not a threshold
# --------------------------------------------------------------------------------------------


def _blood_myo_ratio(s: CineStudy) -> float:
    ratios = []
    for z in _mid_slices(s):
        im, lab = s.image[0, z], s.label[0, z]
        ratios.append(im[lab == LV].mean() / im[lab == MYO].mean())
    return float(np.mean(ratios))


def _blood_cov(s: CineStudy) -> float:
    z = s.n_slices // 2
    inner = ndimage.binary_erosion(s.label[0, z] == LV, iterations=3)
    values = s.image[0, z][inner]
    return float(values.std() / values.mean())


def test_profiles_differ_measurably():
    seeds = (0, 1, 2)
    ge = [_subject(seed, "ge") for seed in seeds]
    ph = [_subject(seed, "philips") for seed in seeds]
    # same anatomy (same seeds), different vendor look: contrast, noise, stored range, grid
    assert min(_blood_myo_ratio(s) for s in ph) > max(_blood_myo_ratio(s) for s in ge) + 1.0
    assert np.mean([_blood_cov(s) for s in ph]) > 1.5 * np.mean([_blood_cov(s) for s in ge])
    assert max(s.image.max() for s in ge) <= 255 < min(s.image.max() for s in ph)
    assert min(s.spacing_zyx[1] for s in ge) > max(s.spacing_zyx[1] for s in ph)


@pytest.mark.parametrize("profile", sorted(SCANNER_PROFILES))
def test_threshold_cannot_segment_the_lv(profile):
    s = _subject(0, profile)
    image, lv = s.image[0], s.label[0] == LV
    best = 0.0
    for q in np.linspace(50.0, 99.9, 50):
        mask = image > np.percentile(image, q)
        best = max(best, 2.0 * np.count_nonzero(mask & lv) / (np.count_nonzero(mask) + np.count_nonzero(lv)))
    # RV blood, aorta, lung vessels and fat are as bright as the LV blood pool
    assert best < 0.9


# --------------------------------------------------------------------------------------------
# geometry
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed, profile", [(0, "reference"), (3, "ge"), (8, "philips"), (5, "siemens")])
def test_affine_is_an_oblique_orthonormal_base_to_apex_stack(seed, profile):
    s = _subject(seed, profile)
    a = s.affine_lps
    assert np.allclose(a[3], (0, 0, 0, 1))
    norms = np.linalg.norm(a[:3, :3], axis=0)
    assert np.allclose(norms, s.spacing_zyx[::-1], rtol=0, atol=TOL)
    units = a[:3, :3] / norms
    assert np.allclose(units.T @ units, np.eye(3), atol=TOL)
    row, col, normal = units.T
    assert np.allclose(np.cross(row, col), normal, atol=TOL)  # slice normal = row x col
    # base to apex points left, anterior, inferior in LPS; the plane is double oblique
    assert normal[0] > 0.3 and normal[1] < -0.2 and normal[2] < -0.2
    assert np.max(np.abs(normal)) < 0.95
    # image up is anterior
    assert col[1] > 0


# --------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        pytest.param({"profile": "canon"}, r"'canon' is unknown; known scanner profiles: \['ge'", id="profile"),
        pytest.param({"profile": 3}, "`profile` must be", id="profile_type"),
        pytest.param({"n_phases": 1}, "`n_phases`", id="n_phases_1"),
        pytest.param({"n_phases": 0}, "`n_phases`", id="n_phases_0"),
        pytest.param({"n_phases": 4.0}, "`n_phases`", id="n_phases_float"),
        pytest.param({"n_phases": True}, "`n_phases`", id="n_phases_bool"),
        pytest.param({"phases": "es"}, "`phases` must be one of", id="phases"),
        pytest.param({"seed": -1}, "`seed`", id="seed_negative"),
        pytest.param({"seed": 1.5}, "`seed`", id="seed_float"),
    ],
)
def test_make_subject_rejects_bad_arguments(kwargs, match):
    args = {"seed": 0, **kwargs}
    with pytest.raises(ValueError, match=match):
        make_subject(**args)


def test_get_scanner():
    assert get_scanner("GE") is SCANNER_PROFILES["ge"]
    assert get_scanner(SCANNER_PROFILES["philips"]) is SCANNER_PROFILES["philips"]
    assert {"reference", "ge", "philips", "siemens"} <= set(SCANNER_PROFILES)
    assert SCANNER_PROFILES["ge"].manufacturer == "GE MEDICAL SYSTEMS"
    assert SCANNER_PROFILES["philips"].manufacturer == "Philips Medical Systems"
    assert SCANNER_PROFILES["siemens"].manufacturer == "SIEMENS" == SCANNER_PROFILES["reference"].manufacturer
    with pytest.raises(ValueError, match="known scanner profiles"):
        get_scanner("toshiba")


@pytest.mark.parametrize(
    "change, match",
    [
        pytest.param({"tissue_intensity": {"blood": 1.0}}, "lacks tissues", id="missing_tissue"),
        pytest.param({"tissue_intensity": {t: -1.0 for t in TISSUES}}, "must be >= 0", id="negative_tissue"),
        pytest.param({"pixel_spacing_mm": (1.5, 1.2)}, "`pixel_spacing_mm`", id="range_order"),
        pytest.param({"n_phases": (1, 5)}, "`n_phases`", id="n_phases"),
        pytest.param({"gamma": 0.0}, "`gamma`", id="gamma"),
        pytest.param({"noise_sigma": -0.1}, "`noise_sigma`", id="noise"),
        pytest.param({"matrix_sizes": ()}, "`matrix_sizes`", id="matrix"),
        pytest.param({"blood_level": 5000.0}, "`blood_level`", id="blood_level"),
    ],
)
def test_scanner_profile_validation(change, match):
    with pytest.raises(ValueError, match=match):
        dataclasses.replace(SCANNER_PROFILES["reference"], **change)


def test_profiles_are_read_only():
    prof = SCANNER_PROFILES["reference"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        prof.gamma = 2.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        prof.tissue_intensity["blood"] = 0.0  # type: ignore[index]


# --------------------------------------------------------------------------------------------
# small pure functions
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("t_es", [0.3, 0.35, 0.4])
def test_contraction_curve(t_es):
    t = np.linspace(0.0, 1.0, 2001)
    s = contraction_curve(t, t_es, 0.2, 0.15, 0.85)
    assert abs(s[0]) <= TOL and abs(s[-1]) <= TOL  # periodic: ED at 0 and 1
    assert abs(float(contraction_curve(t_es, t_es, 0.2, 0.15, 0.85)) - 1.0) <= TOL
    assert s.min() >= 0.0 and s.max() <= 1.0 + TOL
    assert abs(t[np.argmax(s)] - t_es) <= 1e-3
    assert np.all(s[1:-1] > 0)  # zero only at end-diastole
    assert np.all(np.diff(s[t <= t_es]) >= 0)  # ejection is monotonic
    # smooth: no jump larger than the steepest slope allows
    assert np.max(np.abs(np.diff(s))) < 0.01


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"t_es": 0.0}, id="t_es_0"),
        pytest.param({"t_es": 1.0}, id="t_es_1"),
        pytest.param({"t_es": 0.35, "fill_duration": 0.0}, id="fill"),
        pytest.param({"t_es": 0.35, "diastasis_level": 1.0}, id="diastasis"),
        pytest.param({"t_es": 0.35, "atrial_start": 0.5}, id="atrial_before_filling_ends"),
    ],
)
def test_contraction_curve_rejects_bad_timing(kwargs):
    with pytest.raises(ValueError, match=f"`{[k for k in kwargs][-1]}`"):
        contraction_curve(0.1, **kwargs)


def test_superellipse_profile():
    z = np.array([-1.0, 0.0, 50.0, 100.0, 120.0])
    got = superellipse_profile(z, 100.0, 2.0)
    assert np.allclose(got, [0.0, 1.0, math.sqrt(0.75), 0.0, 0.0], atol=TOL)
    with pytest.raises(ValueError, match="`length`"):
        superellipse_profile(z, 0.0, 2.0)


def test_fourier_contour_and_ellipse_mask():
    theta = np.array([0.0, np.pi / 2, np.pi])
    got = fourier_contour(theta, [0.0, 0.1], [0.0, 0.0])
    assert np.allclose(got, [1.1, 0.9, 1.1], atol=TOL)
    x = np.array([0.0, 2.9, 0.0, 3.1])
    y = np.array([0.0, 0.0, 1.9, 0.0])
    assert ellipse_mask(x, y, (0.0, 0.0), (3.0, 2.0)).tolist() == [True, True, True, False]
    # rotated by 90 degrees: the long axis is along y
    turned = ellipse_mask(np.array([0.0]), np.array([2.9]), (0.0, 0.0), (3.0, 2.0), np.pi / 2)
    assert turned.tolist() == [True]
    with pytest.raises(ValueError, match="`semi_axes`"):
        ellipse_mask(x, y, (0.0, 0.0), (0.0, 1.0))


def test_area_downsample_is_block_mean():
    a = np.arange(16, dtype=np.float32).reshape(4, 4)
    assert np.allclose(area_downsample(a, 2), [[2.5, 4.5], [10.5, 12.5]], atol=TOL)
    assert area_downsample(a, 1) is a
    with pytest.raises(ValueError, match="`factor`"):
        area_downsample(a, 3)


def test_rician_noise():
    rng = np.random.default_rng(0)
    zeros = np.zeros((200, 200), dtype=np.float32)
    noisy = rician_noise(zeros, 0.1, rng)
    # Rayleigh mean sigma * sqrt(pi / 2); 40 000 samples -> relative standard error ~0.3 %
    assert abs(noisy.mean() / (0.1 * math.sqrt(math.pi / 2)) - 1.0) < 0.02
    assert noisy.min() >= 0.0 and noisy.dtype == np.float32
    assert np.array_equal(rician_noise(zeros + 2.0, 0.0, rng), zeros + 2.0)
    with pytest.raises(ValueError, match="`sigma`"):
        rician_noise(zeros, -1.0, rng)


def test_bias_field():
    rng = np.random.default_rng(1)
    field = bias_field((64, 80), 0.4, rng)
    assert field.shape == (64, 80) and field.dtype == np.float32
    assert field.min() >= math.exp(-0.4) - TOL and field.max() <= math.exp(0.4) + TOL
    assert field.max() / field.min() > 1.5  # it really varies ...
    assert np.abs(np.diff(field, axis=1)).max() < 0.05  # ... but smoothly
    assert np.array_equal(bias_field((8, 8), 0.0, rng), np.ones((8, 8), np.float32))


@pytest.mark.parametrize("az, el, rot", [(45.0, -30.0, 0.0), (30.0, -45.0, 12.0), (60.0, -20.0, -15.0)])
def test_sax_orientation_is_right_handed_orthonormal(az, el, rot):
    row, col, normal = sax_orientation(az, el, rot)
    m = np.stack([row, col, normal])
    assert np.allclose(m @ m.T, np.eye(3), atol=TOL)
    assert np.allclose(np.cross(row, col), normal, atol=TOL)


def test_cine_truth_small_example():
    label = np.zeros((2, 1, 2, 5), dtype=np.uint8)
    label[0, 0, 0, :4] = LV  # ED: 4 LV voxels, 2 MYO, 2 RV
    label[0, 0, 1, :2] = MYO
    label[0, 0, 1, 2:4] = RV
    label[1, 0, 0, :1] = LV  # ES: 1 LV voxel, 1 RV
    label[1, 0, 1, 0] = RV
    got = cine_truth(label, 2.0, 0, 1)
    expected = {
        "lv_edv_ml": 8.0, "lv_esv_ml": 2.0, "lv_sv_ml": 6.0, "lv_ef_pct": 75.0,
        "rv_edv_ml": 4.0, "rv_esv_ml": 2.0, "rv_sv_ml": 2.0, "rv_ef_pct": 50.0, "lv_mass_g": 4.2,
    }  # fmt: skip
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert abs(got[key] - value) <= TOL, key
    with pytest.raises(ValueError, match="`es_phase`"):
        cine_truth(label, 1.0, 0, 2)
