"""Plausibility checks of clinical cardiac measures and of the label map they come from.

A segmentation can be wrong in ways that still give numbers: a patch of chest wall labelled
"RV" gave an RV EF of -3 % on a real GE study, with no warning. :func:`plausibility_flags`
returns one named flag for each number or shape that is impossible or highly suspicious. The
limits are **plausibility** limits, far outside the normal ranges: they flag segmentation
failures, not disease (a dilated cardiomyopathy or a massive hypertrophy must pass).

Label maps follow the project convention (0 background, 1 LV cavity, 2 LV myocardium, 3 RV
cavity), cines are ``(T, Z, Y, X)`` and ``spacing_zyx`` is in mm (see :mod:`cardiolora.clinical`).
"LV" below means LV cavity ∪ myocardium; components are 3D with 26-connectivity, as in
:mod:`cardiolora.site.postprocess`.

Flags (stable names; each is a dict ``{"name", "message", "value", "range", "reference"}``,
``range`` is ``[low, high]`` with ``None`` for an open side):

==================================  ======================================================
``lv_absent`` / ``rv_absent``       no LV cavity / no RV cavity at ED (range: volume > 0)
``lv_ef_out_of_range``              LV EF outside [0, 90] %
``rv_ef_out_of_range``              RV EF outside [0, 90] %
``lv_esv_not_below_edv``            LV ESV >= LV EDV
``rv_esv_not_below_edv``            RV ESV >= RV EDV
``rv_lv_edv_ratio_out_of_range``    RV EDV / LV EDV outside [0.25, 4.0]
``lv_mass_out_of_range``            LV mass outside [30, 600] g
``lv_mass_index_out_of_range``      LV mass / BSA outside [20, 300] g/m² (BSA known)
``lv_disconnected``                 the LV cavity in more than one 3D piece at ED or ES
``myo_disconnected``                the myocardium in more than one piece at ED or ES
                                    (pieces: the components of LV cavity ∪ myocardium
                                    that hold myocardium; the apical cap may touch the
                                    slice above only through its cavity)
``rv_disconnected``                 the RV cavity in more than one 3D piece at ED or ES
``rv_far_from_lv``                  RV centroid more than 100 mm from the LV centroid at
                                    ED or ES
``rv_not_next_to_lv``               the RV's nearest voxel more than 10 mm from the LV at
                                    ED or ES
``ed_not_at_lv_max``                LV volume at the chosen ED more than 5 % of the
                                    curve's maximum below that maximum
``es_not_at_lv_min``                LV volume at the chosen ES more than 5 % of the
                                    curve's maximum above the curve's minimum
``too_few_lv_slices``               fewer than 3 slices with LV cavity at ED
==================================  ======================================================

A "piece" is a 3D component holding at least ``MIN_PIECE_SHARE`` = 5 % of the structure's
voxels at that phase: specks smaller than that are left to the clean-up
(:mod:`cardiolora.site.postprocess`), and the ACDC ground truth itself has apical RV pieces of
up to 3 % (9 of 80 patients).

Sources of the limits:

* Normal values: Kawel-Boehm N, et al. Reference ranges ("normal values") for cardiovascular
  magnetic resonance (CMR) in adults and children: 2020 update. J Cardiovasc Magn Reson
  2020;22:87 (SCMR), and the bSSFP studies it tabulates, e.g. Hudsmith LE, et al. J Cardiovasc
  Magn Reson 2005;7:775: LV EDV 160 ± 29 / 135 ± 26 mL, RV EDV 190 ± 33 / 148 ± 35 mL (men /
  women), so a normal RV EDV / LV EDV is about 1.1-1.2; normal LV EF is about 67 ± 5 %
  (Maceira 2006, as tabulated by Kawel-Boehm 2015). Every limit here lies many standard
  deviations outside these ranges.
* Disease must pass: the limits were checked on the ACDC ground truth (Bernard et al., IEEE TMI
  2018; 80 patients of the five groups NOR, DCM, HCM, MINF, RV in ``../shared/data/acdc_h5``,
  ED and ES; these files carry no spacing, so only spacing-free numbers are quoted): LV EF
  10-82 %, RV EF 2-73 %, RV EDV / LV EDV 0.31 (DCM) to 3.61 (RV group), at least 6 slices with
  LV cavity, RV-LV gap at most 1 pixel, no flag other than mass (which needs the true pixel
  size); and on the 16 DCM NIfTI files with their true spacing: LV mass 97-223 g
  (51-134 g/m²), RV-LV centroid distance 45-57 mm, no flag.
* Why these limits: an EF below 0 % needs ESV > EDV, above 90 % an almost empty ventricle at
  ES. LV mass 30-600 g / 20-300 g/m²: 30 g is a neonate's heart, massive hypertrophy stays
  below about 600 g. RV-LV centroid 100 mm: the LV radius, the septum and half the RV width of
  the most dilated hearts add up to about 80 mm. RV-LV gap 10 mm: the RV cavity lies on the
  septum, so the gap is 0 in a ground truth and a few pixels in a fair prediction; this is the
  check that catches a structure beside the heart labelled "RV" (the centroid check only
  catches one far away).
* ED / ES: ED is the phase of maximal, ES of minimal LV volume (:mod:`cardiolora.clinical`);
  a caller who chose them otherwise (e.g. by the ECG trigger) is told when the LV volume there
  is more than ``ED_ES_TOLERANCE`` = 5 % of the maximum away from the extreme.
* Slices: the short-axis stack must cover the LV from base to apex (Schulz-Menger J, et al.
  Standardized image interpretation and post-processing in CMR: 2020 update. J Cardiovasc
  Magn Reson 2020;22:19); an adult LV is 8-10 cm long, so fewer than 3 slices (of 8-10 mm)
  with LV cavity means a stack that misses the ventricle or a segmentation that lost it
  (the limit 3 is this project's; ACDC has at least 6).

Example:
    >>> lab = np.zeros((2, 6, 40, 40), np.uint8)
    >>> lab[:, 1:5, 10:30, 5:25] = 2; lab[0, 1:5, 13:27, 8:22] = 1; lab[1, 1:5, 16:24, 11:19] = 1
    >>> lab[:, 1:5, 10:30, 34:39] = 3  # an "RV" 10 pixels (20 mm) away from the LV
    >>> [f["name"] for f in plausibility_flags(None, lab, (10.0, 2.0, 2.0))]
    ['rv_not_next_to_lv']
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from cardiolora.clinical import find_ed_es, volume_curve
from cardiolora.labels import LV, MYO, RV, remap_labels

__all__ = [
    "ED_ES_TOLERANCE",
    "FLAG_NAMES",
    "LIMITS",
    "MIN_PIECE_SHARE",
    "plausibility_flags",
]

#: Plausibility limits ``(low, high)``; ``None`` is an open side. See the module docstring.
LIMITS: dict[str, tuple[float | None, float | None]] = {
    "ef_pct": (0.0, 90.0),
    "rv_lv_edv_ratio": (0.25, 4.0),
    "lv_mass_g": (30.0, 600.0),
    "lv_mass_i_g_m2": (20.0, 300.0),
    "components": (1, 1),
    "rv_lv_centroid_mm": (None, 100.0),
    "rv_lv_gap_mm": (None, 10.0),
    "lv_slices_at_ed": (3, None),
}

#: Least share of a structure's voxels (at one phase) for a 3D component to count as a piece.
MIN_PIECE_SHARE = 0.05

#: Share of the maximal LV volume by which the chosen ED / ES may miss the curve's extremes.
ED_ES_TOLERANCE = 0.05

#: Every flag name :func:`plausibility_flags` can return, in the order it returns them.
FLAG_NAMES: tuple[str, ...] = (
    "lv_absent",
    "rv_absent",
    "lv_ef_out_of_range",
    "rv_ef_out_of_range",
    "lv_esv_not_below_edv",
    "rv_esv_not_below_edv",
    "rv_lv_edv_ratio_out_of_range",
    "lv_mass_out_of_range",
    "lv_mass_index_out_of_range",
    "lv_disconnected",
    "myo_disconnected",
    "rv_disconnected",
    "rv_far_from_lv",
    "rv_not_next_to_lv",
    "ed_not_at_lv_max",
    "es_not_at_lv_min",
    "too_few_lv_slices",
)

_KAWEL = "Kawel-Boehm et al., J Cardiovasc Magn Reson 2020;22:87 (SCMR reference ranges); wide plausibility limit"
_ACDC = "checked on the ACDC ground truth (all five groups pass); see cardiolora.plausibility"
_SCMR_PP = "Schulz-Menger et al., J Cardiovasc Magn Reson 2020;22:19 (SCMR post-processing)"
_FULL_3D = ndimage.generate_binary_structure(3, 3)


def _flag(name: str, message: str, value: Any, limits: Sequence[Any], reference: str) -> dict[str, Any]:
    """One flag in the documented shape."""
    return {"name": name, "message": message, "value": value, "range": list(limits), "reference": reference}


def _outside(value: float, limits: Sequence[float | None]) -> bool:
    """True when `value` is NaN or outside the closed interval `limits` (``None``: open side)."""
    lo, hi = limits
    return not math.isfinite(value) or (lo is not None and value < lo) or (hi is not None and value > hi)


def _number(function: Mapping[str, Any], key: str) -> float | None:
    """``function[key]`` as a float, or None when absent or None (JSON for NaN)."""
    value = function.get(key)
    return None if value is None else float(value)


def _check_inputs(labels_tzyx: Any, spacing_zyx: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validated ``(T, Z, Y, X)`` labels (uint8) and spacing (3 positive floats)."""
    arr = np.asarray(labels_tzyx)
    if arr.ndim != 4 or arr.size == 0:
        raise ValueError(f"`labels_tzyx` must be a non-empty 4D (T, Z, Y, X) label map, got shape {arr.shape}.")
    arr = remap_labels(arr, "project", name="`labels_tzyx`")
    s = np.atleast_1d(np.asarray(spacing_zyx, dtype=np.float64))
    if s.shape != (3,) or not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise ValueError(f"`spacing_zyx` must be 3 positive finite values in mm, got {s.tolist()}.")
    return arr, s


def _phases(function: Mapping[str, Any] | None, lv_curve: np.ndarray) -> tuple[int, int]:
    """ED and ES: the caller's (``function["ed_phase"]`` / ``["es_phase"]``) or the LV curve's extremes."""
    ed, es = find_ed_es(lv_curve)
    if function is None:
        return ed, es
    chosen = []
    for key, auto in (("ed_phase", ed), ("es_phase", es)):
        value = function.get(key)
        if value is None:
            chosen.append(auto)
            continue
        if not 0 <= int(value) < lv_curve.size:
            raise ValueError(f"`function[{key!r}]` = {value} is not a phase of the {lv_curve.size}-phase labels.")
        chosen.append(int(value))
    return chosen[0], chosen[1]


def _function_flags(function: Mapping[str, Any], lv_present: bool, rv_present: bool) -> list[dict[str, Any]]:
    """EF, ESV >= EDV, RV/LV ratio and LV mass flags from the `cardiac_function` dict."""
    out = []
    ef_lim = LIMITS["ef_pct"]
    for prefix, present in (("lv", lv_present), ("rv", rv_present)):
        if not present:
            continue
        up = prefix.upper()
        ef = _number(function, f"{prefix}_ef_pct")
        if ef is not None and _outside(ef, ef_lim):
            out.append(
                _flag(
                    f"{prefix}_ef_out_of_range",
                    f"{up} EF {ef:.1f} % is outside the plausible {ef_lim[0]:g}-{ef_lim[1]:g} %: check the "
                    f"{up} segmentation at ED and ES",
                    ef,
                    ef_lim,
                    _KAWEL,
                )
            )
        edv, esv = _number(function, f"{prefix}_edv_ml"), _number(function, f"{prefix}_esv_ml")
        if edv is not None and esv is not None and esv >= edv:
            out.append(
                _flag(
                    f"{prefix}_esv_not_below_edv",
                    f"{up} ESV {esv:.1f} mL is not below the EDV {edv:.1f} mL: the ventricle does not empty",
                    esv - edv,
                    [None, 0.0],
                    "ESV < EDV in any beating heart",
                )
            )
    lv_edv, rv_edv = _number(function, "lv_edv_ml"), _number(function, "rv_edv_ml")
    if lv_present and rv_present and lv_edv and rv_edv is not None:
        ratio, lim = rv_edv / lv_edv, LIMITS["rv_lv_edv_ratio"]
        if _outside(ratio, lim):
            out.append(
                _flag(
                    "rv_lv_edv_ratio_out_of_range",
                    f"RV EDV / LV EDV = {ratio:.2f} is outside the plausible {lim[0]:g}-{lim[1]:g} "
                    "(normal about 1.1-1.2)",
                    ratio,
                    lim,
                    f"{_KAWEL}; {_ACDC}",
                )
            )
    for key, name, unit in (
        ("lv_mass_g", "lv_mass_out_of_range", "g"),
        ("lv_mass_i_g_m2", "lv_mass_index_out_of_range", "g/m²"),
    ):
        value = _number(function, key)
        if value is not None and _outside(value, LIMITS[key]):
            lo, hi = LIMITS[key]
            out.append(
                _flag(
                    name,
                    f"LV mass{' index' if 'index' in name else ''} {value:.1f} {unit} is outside the plausible "
                    f"{lo:g}-{hi:g} {unit}: check the myocardium",
                    value,
                    LIMITS[key],
                    f"{_KAWEL}; {_ACDC}",
                )
            )
    return out


def _pieces(mask: np.ndarray, within: np.ndarray | None = None) -> int:
    """Pieces of a 3D mask: 26-connected components of `within` (default: the mask) holding at
    least ``MIN_PIECE_SHARE`` of the mask's voxels."""
    total = int(np.count_nonzero(mask))
    if total == 0:
        return 0
    comp, n = ndimage.label(mask if within is None else within, structure=_FULL_3D)
    sizes = np.bincount(comp[mask], minlength=n + 1)[1:]
    return int(np.count_nonzero(sizes >= MIN_PIECE_SHARE * total))


def _rv_distances(phase: np.ndarray, spacing: np.ndarray) -> tuple[float, float] | None:
    """Centroid distance and gap (mm) between the RV and the LV of one phase; None if one is absent."""
    lv, rv = (phase == LV) | (phase == MYO), phase == RV
    if not lv.any() or not rv.any():
        return None
    centroid = float(
        np.linalg.norm((np.array(ndimage.center_of_mass(rv)) - np.array(ndimage.center_of_mass(lv))) * spacing)
    )
    where = np.nonzero(lv | rv)
    box = tuple(slice(int(w.min()), int(w.max()) + 1) for w in where)
    gap = float(ndimage.distance_transform_edt(~lv[box], sampling=spacing)[rv[box]].min())
    return centroid, gap


def _label_flags(labels: np.ndarray, spacing: np.ndarray, ed: int, es: int) -> list[dict[str, Any]]:
    """Connectivity and RV position flags at ED and ES."""
    phases = {ed: "ED", es: "ES"} if ed != es else {ed: "ED/ES"}
    counts: dict[str, dict[str, int]] = {"lv": {}, "myo": {}, "rv": {}}
    centroid: dict[str, float] = {}
    gap: dict[str, float] = {}
    for t, tag in phases.items():
        phase = labels[t]
        where = f"{tag} (phase {t})"
        counts["lv"][where] = _pieces(phase == LV)
        counts["myo"][where] = _pieces(phase == MYO, within=(phase == LV) | (phase == MYO))
        counts["rv"][where] = _pieces(phase == RV)
        dist = _rv_distances(phase, spacing)
        if dist is not None:
            centroid[where], gap[where] = dist
    out = []
    lim = LIMITS["components"]
    for key, label in (("lv", "LV cavity"), ("myo", "myocardium"), ("rv", "RV cavity")):
        bad = {w: n for w, n in counts[key].items() if n > lim[1]}
        if bad:
            out.append(
                _flag(
                    f"{key}_disconnected",
                    f"the {label} is in more than one 3D piece: " + ", ".join(f"{n} at {w}" for w, n in bad.items()),
                    max(bad.values()),
                    lim,
                    f"one connected structure (26-connectivity in 3D; pieces of at least "
                    f"{MIN_PIECE_SHARE:.0%} of its voxels)",
                )
            )
    for values, name, limit_key, what in (
        (centroid, "rv_far_from_lv", "rv_lv_centroid_mm", "RV centroid is {v:.0f} mm from the LV centroid"),
        (gap, "rv_not_next_to_lv", "rv_lv_gap_mm", "nearest RV voxel is {v:.0f} mm from the LV"),
    ):
        hi = LIMITS[limit_key][1]
        bad_d = {w: v for w, v in values.items() if v > hi}
        if bad_d:
            worst = max(bad_d.values())
            out.append(
                _flag(
                    name,
                    "the "
                    + "; ".join(what.format(v=v) + f" at {w}" for w, v in bad_d.items())
                    + f" (limit {hi:g} mm): the 'RV' may be another structure",
                    worst,
                    LIMITS[limit_key],
                    f"RV cavity on the interventricular septum; {_ACDC}",
                )
            )
    return out


def _timing_flags(lv_curve: np.ndarray, ed: int, es: int) -> list[dict[str, Any]]:
    """ED / ES at the LV curve's extremes, within ``ED_ES_TOLERANCE`` of the maximum."""
    v_max, v_min = float(lv_curve.max()), float(lv_curve.min())
    tol = ED_ES_TOLERANCE * v_max
    out = []
    if float(lv_curve[ed]) < v_max - tol:
        out.append(
            _flag(
                "ed_not_at_lv_max",
                f"the LV volume at ED (phase {ed}) is {lv_curve[ed]:.1f} mL, {v_max - lv_curve[ed]:.1f} mL below "
                f"the maximum {v_max:.1f} mL (phase {int(np.argmax(lv_curve))}): EDV and EF are underestimated",
                float(lv_curve[ed]),
                [v_max - tol, v_max],
                f"ED = phase of maximal LV volume ({ED_ES_TOLERANCE:.0%} of it tolerated); {_SCMR_PP}",
            )
        )
    if float(lv_curve[es]) > v_min + tol:
        out.append(
            _flag(
                "es_not_at_lv_min",
                f"the LV volume at ES (phase {es}) is {lv_curve[es]:.1f} mL, {lv_curve[es] - v_min:.1f} mL above "
                f"the minimum {v_min:.1f} mL (phase {int(np.argmin(lv_curve))}): ESV is overestimated, EF "
                "underestimated",
                float(lv_curve[es]),
                [v_min, v_min + tol],
                f"ES = phase of minimal LV volume ({ED_ES_TOLERANCE:.0%} of the maximum tolerated); {_SCMR_PP}",
            )
        )
    return out


def plausibility_flags(
    function: Mapping[str, Any] | None,
    labels_tzyx: Any,
    spacing_zyx: Sequence[float],
    curves: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Named flags for impossible or highly suspicious measures and label maps.

    Args:
        function: the dict of :func:`cardiolora.clinical.cardiac_function` for these labels
            (values may be None where the JSON report holds null), or None when no function
            was computed (a single phase): then only the label-map checks run, at the LV
            curve's ED and ES.
        labels_tzyx: the (cleaned) label map ``(T, Z, Y, X)``, values 0..3.
        spacing_zyx: voxel spacing in mm ``(slice, row, column)``, positive.
        curves: the volume curves ``{"LV": (T,), ...}`` in mL (as
            :func:`cardiolora.clinical.volume_curve` returns them); computed from the labels
            when None.

    Returns:
        The flags, in the order of ``FLAG_NAMES``, each ``{"name", "message", "value",
        "range", "reference"}``; an empty list when everything is plausible.

    Raises:
        ValueError: if `labels_tzyx` is not a non-empty 4D map of values 0..3, `spacing_zyx` is
            not 3 positive values, `curves["LV"]` does not have one value per phase, or
            `function`'s ``ed_phase`` / ``es_phase`` is not a phase of `labels_tzyx`.
    """
    labels, spacing = _check_inputs(labels_tzyx, spacing_zyx)
    n_phases = labels.shape[0]
    if curves is None:
        lv_curve = volume_curve(labels, spacing)["LV"]
    else:
        if "LV" not in curves:
            raise ValueError(f"`curves` must hold an 'LV' curve, got keys {sorted(curves)}.")
        lv_curve = np.asarray(curves["LV"], dtype=np.float64).ravel()
        if lv_curve.size != n_phases or not np.all(np.isfinite(lv_curve)):
            raise ValueError(f"`curves['LV']` must hold {n_phases} finite values (one per phase), got {lv_curve.size}.")
    ed, es = _phases(function, lv_curve)
    lv_present = bool((labels[ed] == LV).any())
    rv_present = bool((labels[ed] == RV).any())

    flags = []
    for present, name, label in ((lv_present, "lv_absent", "LV cavity"), (rv_present, "rv_absent", "RV cavity")):
        if not present:
            flags.append(
                _flag(
                    name,
                    f"no {label} at ED (phase {ed}): its volumes and EF are not measured",
                    0.0,
                    [0.0, None],
                    "a ventricle in every short-axis cine of the heart",
                )
            )
    if function is not None:
        flags += _function_flags(function, lv_present, rv_present)
    flags += _label_flags(labels, spacing, ed, es)
    if function is not None and n_phases > 1:
        flags += _timing_flags(lv_curve, ed, es)
    n_slices = int(np.count_nonzero((labels[ed] == LV).any(axis=(1, 2))))
    lo = LIMITS["lv_slices_at_ed"][0]
    if lv_present and n_slices < lo:
        flags.append(
            _flag(
                "too_few_lv_slices",
                f"only {n_slices} slice(s) hold LV cavity at ED (phase {ed}): volumes by summation of discs "
                f"need at least {lo:g}",
                n_slices,
                LIMITS["lv_slices_at_ed"],
                _SCMR_PP,
            )
        )
    order = {name: i for i, name in enumerate(FLAG_NAMES)}
    return sorted(flags, key=lambda f: order[f["name"]])
