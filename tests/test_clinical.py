"""Tests of cardiolora.clinical on tiny synthetic label maps with known voxel counts."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from cardiolora.clinical import (
    MYOCARDIAL_DENSITY_G_PER_ML,
    cardiac_function,
    ejection_fraction,
    find_ed_es,
    mosteller_bsa,
    structure_volumes_ml,
    volume_curve,
)
from cardiolora.labels import LV, MYO, RV

TOL = 1e-5


def _phase(counts: dict[int, int], shape: tuple[int, int, int] = (2, 10, 12)) -> np.ndarray:
    """A (Z, Y, X) label map with exactly `counts[k]` voxels of label k (filled in C order)."""
    flat = np.zeros(int(np.prod(shape)), dtype=np.uint8)
    start = 0
    for k, n in counts.items():
        flat[start : start + n] = k
        start += n
    return flat.reshape(shape)


def _cine(lv: list[int], myo: list[int], rv: list[int]) -> np.ndarray:
    return np.stack([_phase({LV: a, MYO: b, RV: c}) for a, b, c in zip(lv, myo, rv, strict=True)])


# --------------------------------------------------------------------------------------------
# volumes
# --------------------------------------------------------------------------------------------

VOLUME_CASES = [
    # voxel 8 * 1.5 * 1.25 = 15 mm^3 = 0.015 mL
    pytest.param({LV: 7, MYO: 5, RV: 3}, (8.0, 1.5, 1.25), {"LV": 0.105, "MYO": 0.075, "RV": 0.045}, id="aniso"),
    # voxel 10 * 1 * 1 = 0.01 mL; RV absent
    pytest.param({LV: 100, MYO: 40}, (10.0, 1.0, 1.0), {"LV": 1.0, "MYO": 0.4, "RV": 0.0}, id="no_rv"),
    pytest.param({}, (5.0, 0.5, 0.5), {"LV": 0.0, "MYO": 0.0, "RV": 0.0}, id="background_only"),
]


@pytest.mark.parametrize("counts, spacing, expected", VOLUME_CASES)
def test_structure_volumes_ml(counts, spacing, expected):
    got = structure_volumes_ml(_phase(counts), spacing)
    assert list(got) == ["LV", "MYO", "RV"]
    for name, value in expected.items():
        assert abs(got[name] - value) <= TOL


def test_volume_curve_hand_computed_and_torch_input():
    lab = _cine(lv=[10, 20, 20, 4], myo=[6, 6, 7, 8], rv=[0, 3, 2, 1])
    spacing = (10.0, 2.0, 0.5)  # 10 mm^3 = 0.01 mL per voxel
    for inp in (lab, torch.as_tensor(lab)):
        curves = volume_curve(inp, spacing)
        assert list(curves) == ["LV", "MYO", "RV"]
        np.testing.assert_allclose(curves["LV"], [0.1, 0.2, 0.2, 0.04], atol=TOL)
        np.testing.assert_allclose(curves["MYO"], [0.06, 0.06, 0.07, 0.08], atol=TOL)
        np.testing.assert_allclose(curves["RV"], [0.0, 0.03, 0.02, 0.01], atol=TOL)


# --------------------------------------------------------------------------------------------
# ED / ES, EF, BSA
# --------------------------------------------------------------------------------------------

ED_ES_CASES = [
    pytest.param([120.0, 150.0, 90.0, 60.0, 100.0], (1, 3), id="plain"),
    pytest.param([1.0, 3.0, 3.0, 2.0, 1.0], (1, 0), id="ties_first_max_and_min"),
    pytest.param([3.0, 1.0, 1.0, 3.0], (0, 1), id="ties_at_both_ends"),
    pytest.param([2.0, 2.0, 2.0], (0, 0), id="flat"),
    pytest.param([5.0], (0, 0), id="single_phase"),
    pytest.param(np.array([0, 4, 2]), (1, 0), id="integer_array"),
]


@pytest.mark.parametrize("volumes, expected", ED_ES_CASES)
def test_find_ed_es(volumes, expected):
    assert find_ed_es(volumes) == expected


EF_CASES = [
    pytest.param(150.0, 60.0, 60.0, id="normal"),
    pytest.param(100.0, 100.0, 0.0, id="no_ejection"),
    pytest.param(50.0, 0.0, 100.0, id="empty_at_es"),
    pytest.param(80.0, 100.0, -25.0, id="esv_above_edv_negative"),
]


@pytest.mark.parametrize("edv, esv, expected", EF_CASES)
def test_ejection_fraction(edv, esv, expected):
    assert abs(ejection_fraction(edv, esv) - expected) <= TOL


BSA_CASES = [
    pytest.param(180.0, 80.0, 2.0, id="180cm_80kg"),
    pytest.param(150.0, 24.0, 1.0, id="150cm_24kg"),
    pytest.param(170.0, 65.0, 1.7519830034690533, id="170cm_65kg"),  # sqrt(11050 / 3600)
]


@pytest.mark.parametrize("height, weight, expected", BSA_CASES)
def test_mosteller_bsa(height, weight, expected):
    assert abs(mosteller_bsa(height, weight) - expected) <= TOL


# --------------------------------------------------------------------------------------------
# cardiac_function
# --------------------------------------------------------------------------------------------

# voxel 10 * 2 * 1 = 20 mm^3 = 0.02 mL. LV counts 50, 100, 30 -> ED 1, ES 2.
# RV counts 90, 80, 40: the RV's own maximum (phase 0) is NOT used; RV EDV is taken at LV-ED.
_LAB = _cine(lv=[50, 100, 30], myo=[40, 45, 40], rv=[90, 80, 40])
_SPACING = (10.0, 2.0, 1.0)

FUNCTION_CASES = [
    pytest.param(
        {},
        {
            "ed_phase": 1,
            "es_phase": 2,
            "lv_edv_ml": 2.0,
            "lv_esv_ml": 0.6,
            "lv_sv_ml": 1.4,
            "lv_ef_pct": 70.0,
            "rv_edv_ml": 1.6,
            "rv_esv_ml": 0.8,
            "rv_sv_ml": 0.8,
            "rv_ef_pct": 50.0,
            "lv_mass_g": 45 * 0.02 * 1.05,
            "lv_ef_defined": True,
            "rv_ef_defined": True,
        },
        id="auto_phases",
    ),
    pytest.param(
        {"ed": 0, "es": 2},
        {
            "ed_phase": 0,
            "es_phase": 2,
            "lv_edv_ml": 1.0,
            "lv_esv_ml": 0.6,
            "lv_sv_ml": 0.4,
            "lv_ef_pct": 40.0,
            "rv_edv_ml": 1.8,
            "rv_esv_ml": 0.8,
            "rv_sv_ml": 1.0,
            "rv_ef_pct": 100.0 / 1.8,
            "lv_mass_g": 40 * 0.02 * 1.05,
        },
        id="given_phases",
    ),
    pytest.param({"es": np.int64(0)}, {"ed_phase": 1, "es_phase": 0, "lv_ef_pct": 50.0}, id="only_es_given"),
    pytest.param(
        {"height_cm": 180.0, "weight_kg": 80.0},  # BSA 2.0 m^2
        {
            "bsa_m2": 2.0,
            "lv_edv_i_ml_m2": 1.0,
            "lv_esv_i_ml_m2": 0.3,
            "lv_sv_i_ml_m2": 0.7,
            "rv_edv_i_ml_m2": 0.8,
            "rv_esv_i_ml_m2": 0.4,
            "rv_sv_i_ml_m2": 0.4,
            "lv_mass_i_g_m2": 45 * 0.02 * 1.05 / 2.0,
        },
        id="indexed_by_bsa",
    ),
]


@pytest.mark.parametrize("kwargs, expected", FUNCTION_CASES)
def test_cardiac_function_hand_computed(kwargs, expected):
    got = cardiac_function(_LAB, _SPACING, **kwargs)
    for key, value in expected.items():
        if isinstance(value, (bool, int)):
            assert got[key] == value and type(got[key]) is type(value), key
        else:
            assert abs(got[key] - value) <= TOL, (key, got[key], value)


def test_cardiac_function_keys_without_and_with_bsa():
    base = {
        "ed_phase",
        "es_phase",
        "lv_edv_ml",
        "lv_esv_ml",
        "lv_sv_ml",
        "lv_ef_pct",
        "lv_ef_defined",
        "rv_edv_ml",
        "rv_esv_ml",
        "rv_sv_ml",
        "rv_ef_pct",
        "rv_ef_defined",
        "lv_mass_g",
    }
    assert set(cardiac_function(_LAB, _SPACING)) == base
    indexed = {f"{p}_{q}_i_ml_m2" for p in ("lv", "rv") for q in ("edv", "esv", "sv")}
    with_bsa = cardiac_function(_LAB, _SPACING, height_cm=170.0, weight_kg=65.0)
    assert set(with_bsa) == base | indexed | {"bsa_m2", "lv_mass_i_g_m2"}
    assert MYOCARDIAL_DENSITY_G_PER_ML == 1.05


def test_cardiac_function_zero_edv_gives_flagged_nan_without_warning():
    lab = _cine(lv=[0, 0], myo=[10, 12], rv=[30, 20])  # no LV cavity segmented at all
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        got = cardiac_function(lab, (10.0, 1.0, 1.0))
    assert got["ed_phase"] == 0 and got["es_phase"] == 0  # ties -> first phase
    assert math.isnan(got["lv_ef_pct"]) and got["lv_ef_defined"] is False
    assert got["lv_edv_ml"] == 0.0 and got["lv_sv_ml"] == 0.0
    assert abs(got["rv_ef_pct"] - 0.0) <= TOL and got["rv_ef_defined"] is True  # RV at LV phases: 30 -> 30
    assert abs(got["lv_mass_g"] - 10 * 0.01 * 1.05) <= TOL


# --------------------------------------------------------------------------------------------
# ill cases: one per ValueError
# --------------------------------------------------------------------------------------------

_P = _phase({LV: 3})
ILL_CASES = [
    pytest.param(lambda: structure_volumes_ml(_LAB, _SPACING), r"`label_zyx` must be 3D", id="volumes_4d"),
    pytest.param(
        lambda: structure_volumes_ml(np.zeros((0, 2, 2)), _SPACING),
        r"`label_zyx` must not be empty",
        id="empty",
    ),
    pytest.param(
        lambda: structure_volumes_ml(_P + 3, _SPACING),
        r"`label_zyx`: label values \[4\] are out of range",
        id="label_4",
    ),
    pytest.param(
        lambda: structure_volumes_ml(_P + 0.5, _SPACING),
        r"`label_zyx`: label values must be integers",
        id="float",
    ),
    pytest.param(lambda: structure_volumes_ml(_P, (1.0, 1.0)), r"`spacing_zyx` must have 3 values", id="spacing_len"),
    pytest.param(
        lambda: structure_volumes_ml(_P, (1.0, 0.0, 1.0)),
        r"`spacing_zyx` values must be positive",
        id="spacing_0",
    ),
    pytest.param(lambda: volume_curve(_P, _SPACING), r"`label_tzyx` must be 4D \(T, Z, Y, X\)", id="curve_3d"),
    pytest.param(
        lambda: volume_curve(_LAB, (1.0, -2.0, 1.0)),
        r"`spacing_zyx` values must be positive",
        id="curve_spacing",
    ),
    pytest.param(lambda: find_ed_es([]), r"`lv_volumes` must be a non-empty 1D", id="ed_es_empty"),
    pytest.param(lambda: find_ed_es(np.ones((2, 3))), r"`lv_volumes` must be a non-empty 1D", id="ed_es_2d"),
    pytest.param(lambda: find_ed_es([1.0, float("nan")]), r"`lv_volumes` must be finite", id="ed_es_nan"),
    pytest.param(lambda: ejection_fraction(0.0, 0.0), r"`edv` must be positive", id="ef_edv_zero"),
    pytest.param(lambda: ejection_fraction(-5.0, 1.0), r"`edv` must be positive", id="ef_edv_negative"),
    pytest.param(lambda: ejection_fraction(float("inf"), 1.0), r"`edv` must be positive and finite", id="ef_edv_inf"),
    pytest.param(lambda: ejection_fraction(100.0, -1.0), r"`esv` must be non-negative", id="ef_esv_negative"),
    pytest.param(
        lambda: ejection_fraction(100.0, float("nan")),
        r"`esv` must be non-negative and finite",
        id="ef_esv_nan",
    ),
    pytest.param(lambda: mosteller_bsa(0.0, 70.0), r"`height_cm` must be positive", id="bsa_height"),
    pytest.param(lambda: mosteller_bsa(170.0, -1.0), r"`weight_kg` must be positive", id="bsa_weight"),
    pytest.param(lambda: cardiac_function(_LAB, _SPACING, ed=3), r"`ed` must be in \[0, 3\), got 3", id="ed_range"),
    pytest.param(
        lambda: cardiac_function(_LAB, _SPACING, es=-1), r"`es` must be in \[0, 3\), got -1", id="es_negative"
    ),
    pytest.param(
        lambda: cardiac_function(_LAB, _SPACING, ed=1.0),
        r"`ed` must be an integer phase index",
        id="ed_float",
    ),
    pytest.param(
        lambda: cardiac_function(_LAB, _SPACING, es=True),
        r"`es` must be an integer phase index",
        id="es_bool",
    ),
    pytest.param(
        lambda: cardiac_function(_LAB, _SPACING, height_cm=170.0), r"must be given together", id="height_only"
    ),
    pytest.param(lambda: cardiac_function(_LAB, _SPACING, weight_kg=70.0), r"must be given together", id="weight_only"),
    pytest.param(
        lambda: cardiac_function(_LAB, _SPACING, height_cm=170.0, weight_kg=0.0),
        r"`weight_kg` must be positive",
        id="weight_zero",
    ),
    pytest.param(lambda: cardiac_function(_P, _SPACING), r"`label_tzyx` must be 4D", id="function_3d"),
]


@pytest.mark.parametrize("call, match", ILL_CASES)
def test_ill_cases(call, match):
    with pytest.raises(ValueError, match=match):
        call()
