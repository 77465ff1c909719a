"""Plausibility flags (cardiolora.plausibility): one crafted cine per flag, and a normal one."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cardiolora.clinical import cardiac_function, volume_curve
from cardiolora.plausibility import FLAG_NAMES, LIMITS, plausibility_flags
from cardiolora.site.postprocess import clean_labels_with_notes

BG, LV, MYO, RV = 0, 1, 2, 3
SPACING = (10.0, 1.5, 1.5)  # one voxel = 0.0225 mL
HEIGHT_WEIGHT = {"height_cm": 175.0, "weight_kg": 75.0}  # BSA 1.91 m²


def _phase(
    lv_r: float,
    rv: tuple[float, float] | None,
    myo_r: float = 20.0,
    n_slices: int = 8,
    size: int = 96,
    centre: tuple[int, int] = (48, 40),
) -> np.ndarray:
    """One ``(Z, Y, X)`` phase: a stack of identical short-axis slices with an empty slice above
    and below. LV cavity of radius `lv_r` px in a myocardium of radius `myo_r`, and an RV crescent
    ``rv[0] < r <= rv[1]`` on the septal side (x >= centre + 5), touching the wall when
    ``rv[0] == myo_r``."""
    yy, xx = np.mgrid[0:size, 0:size]
    cy, cx = centre
    r = np.hypot(yy - cy, xx - cx)
    s = np.zeros((size, size), np.uint8)
    s[r <= myo_r] = MYO
    s[r <= lv_r] = LV
    if rv is not None:
        s[(r > rv[0]) & (r <= rv[1]) & (xx >= cx + 5)] = RV
    out = np.zeros((n_slices + 2, size, size), np.uint8)
    out[1 : n_slices + 1] = s
    return out


def _cine(lv_r=(15, 13, 10, 13), rv=((20, 32), (20, 29), (20, 26), (20, 29)), **kw) -> np.ndarray:
    """A 4-phase cine ``(T, Z, Y, X)``: ED at phase 0, ES at phase 2 by default.

    Default volumes: LV EDV 127.6 mL, ESV 57.1 mL (EF 55 %), RV EDV 156.2 mL, ESV 68.0 mL
    (EF 56 %), LV mass 103.6 g (54 g/m² at 1.91 m²), RV centroid 28 mm from the LV's.
    """
    return np.stack([_phase(a, b, **kw) for a, b in zip(lv_r, rv, strict=True)])


def _names(flags: list[dict]) -> list[str]:
    return [f["name"] for f in flags]


def _blob(lab: np.ndarray, phases, label: int, box=(slice(1, 4), slice(80, 92), slice(80, 92))) -> np.ndarray:
    """A copy of `lab` with a 3 x 12 x 12 block (432 voxels) of `label` in the far corner."""
    out = lab.copy()
    for t in phases:
        out[(t, *box)] = label
    return out


def test_a_normal_phantom_raises_no_flag():
    lab = _cine()
    function = cardiac_function(lab, SPACING, **HEIGHT_WEIGHT)
    assert 50 < function["lv_ef_pct"] < 60 and 100 < function["lv_mass_g"] < 110  # the documented phantom
    assert plausibility_flags(function, lab, SPACING) == []
    assert plausibility_flags(function, lab, SPACING, curves=volume_curve(lab, SPACING)) == []
    assert plausibility_flags(None, lab, SPACING) == []


def _case_lv_absent():
    lab = _cine()
    lab[lab == LV] = BG
    return cardiac_function(lab, SPACING, ed=0, es=2), lab


def _case_rv_absent():
    lab = _cine(rv=(None,) * 4)
    return cardiac_function(lab, SPACING), lab


def _case_lv_ef_high():
    lab = _cine(lv_r=(15, 13, 4, 13))  # ES cavity 50 px against 709 at ED: EF 93 %
    return cardiac_function(lab, SPACING), lab


def _case_rv_ef_high():
    lab = _cine(rv=((20, 32), (20, 29), (20, 21), (20, 29)))  # a one-pixel RV at ES
    return cardiac_function(lab, SPACING), lab


def _case_lv_esv_equal():
    lab = _cine(lv_r=(15, 15, 15, 15))  # no LV contraction: EF 0 %, inside 0-90 but ESV == EDV
    return cardiac_function(lab, SPACING, ed=0, es=2), lab


def _case_rv_esv_equal():
    lab = _cine(rv=((20, 32),) * 4)
    return cardiac_function(lab, SPACING), lab


def _case_rv_small():
    lab = _cine(rv=((20, 22), (20, 22), (20, 21), (20, 22)))  # RV EDV / LV EDV about 0.15
    return cardiac_function(lab, SPACING), lab


def _case_mass_low():
    """A one-pixel wall at every phase, the RV on it: LV mass 18 g."""
    radii, widths = (15, 13, 10, 13), (12, 10, 8, 10)
    lab = np.stack([_phase(r, (r + 1, r + 1 + w), myo_r=r + 1) for r, w in zip(radii, widths, strict=True)])
    return cardiac_function(lab, SPACING), lab


def _case_mass_index_high():
    lab = _cine()
    return cardiac_function(lab, SPACING, height_cm=50.0, weight_kg=3.0), lab  # 104 g at 0.20 m²


def _case_lv_disconnected():
    lab = _blob(_cine(), [0], LV)
    return cardiac_function(lab, SPACING), lab


def _case_myo_disconnected():
    lab = _blob(_cine(), [0, 2], MYO)
    return cardiac_function(lab, SPACING), lab


def _case_rv_disconnected():
    lab = _blob(_cine(), [0], RV)
    return cardiac_function(lab, SPACING), lab


def _case_rv_far():
    """An RV on the septum that runs 150 mm away: its centroid is beyond 100 mm."""
    lab = _cine(rv=(None,) * 4, size=200)
    for t, half_width in ((0, 5), (1, 4), (2, 3), (3, 4)):
        lab[t, 1:9, 48 - half_width : 48 + half_width, 60:160] = RV
    return cardiac_function(lab, SPACING), lab


def _case_rv_not_next_to_lv():
    """An RV crescent 8 pixels (12 mm) off the wall: its centroid is near, its nearest voxel is not."""
    lab = _cine(rv=((28, 38), (28, 36), (28, 33), (28, 36)))
    return cardiac_function(lab, SPACING), lab


def _case_ed_not_at_max():
    lab = _cine()
    return cardiac_function(lab, SPACING, ed=1), lab  # the caller's ED holds 25 % less than the maximum


def _case_es_not_at_min():
    lab = _cine()
    return cardiac_function(lab, SPACING, es=1), lab


def _case_too_few_slices():
    lab = _cine(n_slices=2, myo_r=26.0, rv=((26, 38), (26, 35), (26, 32), (26, 35)))
    return cardiac_function(lab, SPACING), lab


FLAG_CASES = [
    ("lv_absent", _case_lv_absent),
    ("rv_absent", _case_rv_absent),
    ("lv_ef_out_of_range", _case_lv_ef_high),
    ("rv_ef_out_of_range", _case_rv_ef_high),
    ("lv_esv_not_below_edv", _case_lv_esv_equal),
    ("rv_esv_not_below_edv", _case_rv_esv_equal),
    ("rv_lv_edv_ratio_out_of_range", _case_rv_small),
    ("lv_mass_out_of_range", _case_mass_low),
    ("lv_mass_index_out_of_range", _case_mass_index_high),
    ("lv_disconnected", _case_lv_disconnected),
    ("myo_disconnected", _case_myo_disconnected),
    ("rv_disconnected", _case_rv_disconnected),
    ("rv_far_from_lv", _case_rv_far),
    ("rv_not_next_to_lv", _case_rv_not_next_to_lv),
    ("ed_not_at_lv_max", _case_ed_not_at_max),
    ("es_not_at_lv_min", _case_es_not_at_min),
    ("too_few_lv_slices", _case_too_few_slices),
]


def test_every_flag_has_a_case():
    assert sorted(name for name, _ in FLAG_CASES) == sorted(FLAG_NAMES)


@pytest.mark.parametrize("name, make", FLAG_CASES, ids=[n for n, _ in FLAG_CASES])
def test_each_case_raises_exactly_its_flag(name, make):
    function, lab = make()
    flags = plausibility_flags(function, lab, SPACING)
    assert _names(flags) == [name]
    flag = flags[0]
    assert set(flag) == {"name", "message", "value", "range", "reference"}
    assert flag["message"] and flag["reference"] and len(flag["range"]) == 2
    json.dumps(flags)  # goes into the JSON report and the SR as it is


def test_values_and_ranges_of_number_flags():
    function, lab = _case_lv_ef_high()
    (flag,) = plausibility_flags(function, lab, SPACING)
    assert flag["value"] == pytest.approx(function["lv_ef_pct"]) and flag["range"] == list(LIMITS["ef_pct"])
    function, lab = _case_rv_not_next_to_lv()
    (flag,) = plausibility_flags(function, lab, SPACING)
    assert flag["value"] == pytest.approx(12.0, abs=1.5) and flag["range"] == [None, 10.0]


def test_chest_wall_labelled_rv_is_flagged_raw_and_after_cleaning():
    """The GE case: the only "RV" is a patch of chest wall that changes little over the cycle."""
    lab = _cine(rv=(None,) * 4)
    lab[:, 2:8, 0:10, 30:70] = RV  # 20 mm anterior of the LV wall, a little larger at ES
    lab[2, 2:8, 10, 30:70] = RV
    function = cardiac_function(lab, SPACING)
    assert function["rv_ef_pct"] < 0
    raw = _names(plausibility_flags(function, lab, SPACING))
    assert raw == ["rv_ef_out_of_range", "rv_esv_not_below_edv", "rv_not_next_to_lv"]
    cleaned = []
    for t in range(lab.shape[0]):
        phase, notes = clean_labels_with_notes(lab[t], slice_axis=0)
        assert [n["name"] for n in notes] == ["rv_removed"]
        cleaned.append(phase)
    cleaned = np.stack(cleaned)
    assert _names(plausibility_flags(cardiac_function(cleaned, SPACING), cleaned, SPACING)) == ["rv_absent"]


def test_json_nulls_and_single_phase():
    """A report's function (None for NaN) and a single phase (no function) are handled."""
    function, lab = _case_rv_absent()
    as_json = json.loads(json.dumps({k: (None if isinstance(v, float) and v != v else v) for k, v in function.items()}))
    assert _names(plausibility_flags(as_json, lab, SPACING)) == ["rv_absent"]
    assert plausibility_flags(None, _cine()[:1], SPACING) == []


def test_flags_come_in_the_documented_order():
    lab = _blob(_cine(lv_r=(15, 13, 4, 13)), [0], RV)
    names = _names(plausibility_flags(cardiac_function(lab, SPACING), lab, SPACING))
    assert names == ["lv_ef_out_of_range", "rv_disconnected"]
    assert names == sorted(names, key=FLAG_NAMES.index)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: plausibility_flags(None, np.zeros((4, 4, 4), np.uint8), SPACING), "labels_tzyx"),
        (lambda: plausibility_flags(None, np.full((1, 2, 4, 4), 7, np.uint8), SPACING), "labels_tzyx"),
        (lambda: plausibility_flags(None, _cine(), (10.0, 0.0, 1.5)), "spacing_zyx"),
        (lambda: plausibility_flags(None, _cine(), (10.0, 1.5)), "spacing_zyx"),
        (lambda: plausibility_flags(None, _cine(), SPACING, curves={"LV": [1.0, 2.0]}), "curves"),
        (lambda: plausibility_flags(None, _cine(), SPACING, curves={"RV": [1.0] * 4}), "curves"),
        (lambda: plausibility_flags({"ed_phase": 9}, _cine(), SPACING), "ed_phase"),
    ],
    ids=["3d", "values", "zero-spacing", "two-spacings", "curve-length", "curve-key", "ed-phase"],
)
def test_ill_inputs_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()
