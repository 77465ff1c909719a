"""Clinical cardiac measures from short-axis cine label maps: volumes, EF, LV mass, BSA indexing.

Label maps follow the project convention (0 background, 1 LV cavity, 2 LV myocardium, 3 RV
cavity, see :mod:`cardiolora.labels`) and the axis convention of :mod:`cardiolora.data.cine`:
one volume is ``(Z, Y, X)``, a cine is ``(T, Z, Y, X)``, and ``spacing_zyx`` is the distance in
mm between voxel centres along Z (slice spacing, not the nominal thickness), Y and X.

Volumes are voxel counts times the voxel volume (the "summation of discs" method on the
segmented slices):

.. math:: V_k = N_k \\cdot \\frac{s_z s_y s_x}{1000} \\; \\mathrm{mL}

Policies (documented here once, tested in ``tests/test_clinical.py``):

* ED is the phase of maximal LV cavity volume, ES the phase of minimal LV cavity volume; ties
  go to the first such phase (``numpy.argmax`` / ``numpy.argmin``).
* The RV is measured at the LV's ED and ES phases (one ED and one ES per study, as in ACDC and
  M&Ms), so RV values are "RV volume at LV-ED / LV-ES", not at the RV's own extremes.
* LV mass is the myocardial volume at ED times the myocardial density 1.05 g/mL.
* :func:`ejection_fraction` raises ``ValueError`` for a non-positive EDV; :func:`cardiac_function`
  instead returns NaN for the EF of a chamber with zero EDV and sets the flag
  ``lv_ef_defined`` / ``rv_ef_defined`` to False (no warning is emitted), so a batch of studies
  is never stopped by one empty prediction.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from cardiolora.labels import LV, MYO, NUM_CLASSES, RV, STRUCTURE_NAMES, STRUCTURES, remap_labels

__all__ = [
    "INDEXED_KEYS",
    "MEASURE_KEYS",
    "MYOCARDIAL_DENSITY_G_PER_ML",
    "structure_volumes_ml",
    "volume_curve",
    "find_ed_es",
    "ejection_fraction",
    "mosteller_bsa",
    "cardiac_function",
]

#: The measures :func:`cardiac_function` always returns (besides ``ed_phase`` / ``es_phase``).
MEASURE_KEYS: tuple[str, ...] = (
    "lv_edv_ml", "lv_esv_ml", "lv_sv_ml", "lv_ef_pct", "rv_edv_ml", "rv_esv_ml", "rv_sv_ml", "rv_ef_pct", "lv_mass_g",
)  # fmt: skip
#: The BSA-indexed measures it adds, with ``bsa_m2``, when height and weight are known.
INDEXED_KEYS: tuple[str, ...] = (
    "lv_edv_i_ml_m2", "lv_esv_i_ml_m2", "lv_sv_i_ml_m2", "rv_edv_i_ml_m2", "rv_esv_i_ml_m2", "rv_sv_i_ml_m2",
    "lv_mass_i_g_m2",
)  # fmt: skip

#: Density of myocardium used to turn myocardial volume into LV mass (g/mL).
MYOCARDIAL_DENSITY_G_PER_ML = 1.05


def _to_numpy(x: Any) -> np.ndarray:
    """Return `x` as a numpy array; torch tensors are detached and moved to the CPU first."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _check_label(label: Any, ndim: int, name: str, axes: str) -> np.ndarray:
    """Validate a label map of `ndim` dimensions with values 0..3; return it as uint8."""
    arr = _to_numpy(label)
    if arr.ndim != ndim:
        raise ValueError(f"`{name}` must be {ndim}D {axes}, got shape {tuple(arr.shape)}.")
    if arr.size == 0:
        raise ValueError(f"`{name}` must not be empty, got shape {tuple(arr.shape)}.")
    return remap_labels(arr, "project", name=f"`{name}`")


def _voxel_ml(spacing_zyx: Any) -> float:
    """Voxel volume in mL of a positive finite 3-element `spacing_zyx` (mm)."""
    s = np.atleast_1d(np.asarray(_to_numpy(spacing_zyx), dtype=np.float64))
    if s.ndim != 1 or s.size != 3:
        raise ValueError(f"`spacing_zyx` must have 3 values (slice, row, column spacing in mm), got {s.tolist()}.")
    if not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise ValueError(f"`spacing_zyx` values must be positive and finite (mm), got {s.tolist()}.")
    return float(np.prod(s)) / 1000.0


def _counts(label: np.ndarray) -> np.ndarray:
    """Voxel count of every label 0..NUM_CLASSES-1 in `label` (an array of length NUM_CLASSES)."""
    return np.bincount(label.ravel(), minlength=NUM_CLASSES)


def structure_volumes_ml(label_zyx: Any, spacing_zyx: Any) -> dict[str, float]:
    """Volume of each structure (LV cavity, myocardium, RV cavity) of one 3D label map, in mL.

    .. math:: V_k = N_k \\cdot s_z s_y s_x / 1000

    with :math:`N_k` the number of voxels labelled :math:`k` and :math:`s` the spacing in mm.

    Args:
        label_zyx: label map ``(Z, Y, X)`` with values 0..3 (numpy array or torch tensor).
        spacing_zyx: voxel spacing in mm ``(slice, row, column)``, positive.

    Returns:
        ``{"LV": float, "MYO": float, "RV": float}`` in mL.

    Raises:
        ValueError: if `label_zyx` is not 3D, is empty or holds values outside 0..3, or if
            `spacing_zyx` does not have 3 positive finite values.

    Example:
        >>> lab = np.zeros((2, 4, 4), dtype=np.uint8); lab[:, :2, :2] = 1  # 8 LV voxels
        >>> structure_volumes_ml(lab, (10.0, 1.25, 1.25))["LV"]  # 8 * 15.625 mm^3
        0.125
    """
    lab = _check_label(label_zyx, 3, "label_zyx", "(Z, Y, X)")
    voxel_ml = _voxel_ml(spacing_zyx)
    counts = _counts(lab)
    return {STRUCTURE_NAMES[k]: float(counts[k]) * voxel_ml for k in STRUCTURES}


def volume_curve(label_tzyx: Any, spacing_zyx: Any) -> dict[str, np.ndarray]:
    """Volume of each structure at every phase of a cine label map, in mL.

    .. math:: V_k(t) = N_k(t) \\cdot s_z s_y s_x / 1000

    Args:
        label_tzyx: label map ``(T, Z, Y, X)`` with values 0..3 (numpy array or torch tensor).
        spacing_zyx: voxel spacing in mm ``(slice, row, column)``, positive.

    Returns:
        ``{"LV": (T,), "MYO": (T,), "RV": (T,)}`` float64 arrays in mL.

    Raises:
        ValueError: if `label_tzyx` is not 4D, is empty or holds values outside 0..3, or if
            `spacing_zyx` does not have 3 positive finite values.

    Example:
        >>> lab = np.zeros((3, 1, 4, 4), dtype=np.uint8); lab[0, 0, :2, :2] = 1; lab[1, 0, 0, 0] = 1
        >>> volume_curve(lab, (10.0, 1.0, 1.0))["LV"].tolist()
        [0.04, 0.01, 0.0]
    """
    lab = _check_label(label_tzyx, 4, "label_tzyx", "(T, Z, Y, X)")
    voxel_ml = _voxel_ml(spacing_zyx)
    counts = np.stack([_counts(lab[t]) for t in range(lab.shape[0])])  # (T, NUM_CLASSES)
    return {STRUCTURE_NAMES[k]: counts[:, k].astype(np.float64) * voxel_ml for k in STRUCTURES}


def find_ed_es(lv_volumes: Any) -> tuple[int, int]:
    """End-diastolic and end-systolic phases from the LV cavity volume curve.

    .. math:: t_{ED} = \\arg\\max_t V_{LV}(t), \\qquad t_{ES} = \\arg\\min_t V_{LV}(t)

    Ties go to the first phase reaching the extreme value.

    Args:
        lv_volumes: ``(T,)`` LV cavity volumes (any unit), finite, T >= 1.

    Returns:
        ``(ed, es)`` phase indices in ``[0, T)``.

    Raises:
        ValueError: if `lv_volumes` is not a non-empty 1D sequence of finite numbers.

    Example:
        >>> find_ed_es([120.0, 150.0, 150.0, 60.0, 60.0])
        (1, 3)
    """
    v = np.asarray(_to_numpy(lv_volumes), dtype=np.float64)
    if v.ndim != 1 or v.size == 0:
        raise ValueError(f"`lv_volumes` must be a non-empty 1D sequence (T,), got shape {v.shape}.")
    if not np.all(np.isfinite(v)):
        raise ValueError("`lv_volumes` must be finite, found NaN or infinite values.")
    return int(np.argmax(v)), int(np.argmin(v))


def ejection_fraction(edv: float, esv: float) -> float:
    """Ejection fraction in percent.

    .. math:: \\mathrm{EF} = 100 \\cdot \\frac{\\mathrm{EDV} - \\mathrm{ESV}}{\\mathrm{EDV}}

    An ESV larger than the EDV (phases given by hand the wrong way round) gives a negative EF,
    returned as is so the mistake stays visible.

    Args:
        edv: end-diastolic volume, positive and finite.
        esv: end-systolic volume in the same unit, non-negative and finite.

    Returns:
        The EF in percent.

    Raises:
        ValueError: if `edv` is not positive and finite, or `esv` is negative or not finite.

    Example:
        >>> ejection_fraction(150.0, 60.0)
        60.0
    """
    edv_f, esv_f = float(edv), float(esv)
    if not math.isfinite(edv_f) or edv_f <= 0:
        raise ValueError(f"`edv` must be positive and finite to define an ejection fraction, got {edv}.")
    if not math.isfinite(esv_f) or esv_f < 0:
        raise ValueError(f"`esv` must be non-negative and finite, got {esv}.")
    return 100.0 * (edv_f - esv_f) / edv_f


def mosteller_bsa(height_cm: float, weight_kg: float) -> float:
    """Body surface area by the Mosteller formula, in m².

    .. math:: \\mathrm{BSA} = \\sqrt{\\frac{h_{cm} \\cdot w_{kg}}{3600}}

    (Mosteller, N Engl J Med 1987;317:1098.)

    Args:
        height_cm: body height in cm, positive and finite.
        weight_kg: body weight in kg, positive and finite.

    Returns:
        The BSA in m².

    Raises:
        ValueError: if `height_cm` or `weight_kg` is not positive and finite.

    Example:
        >>> mosteller_bsa(180.0, 80.0)  # sqrt(14400 / 3600)
        2.0
    """
    for name, value in (("height_cm", height_cm), ("weight_kg", weight_kg)):
        if not math.isfinite(float(value)) or float(value) <= 0:
            raise ValueError(f"`{name}` must be positive and finite, got {value}.")
    return math.sqrt(float(height_cm) * float(weight_kg) / 3600.0)


def _check_phase(value: Any, name: str, n_phases: int) -> int:
    """Validate a phase index in ``[0, n_phases)``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"`{name}` must be an integer phase index, got {value!r}.")
    if not 0 <= int(value) < n_phases:
        raise ValueError(f"`{name}` must be in [0, {n_phases}), got {value}.")
    return int(value)


def cardiac_function(
    label_tzyx: Any,
    spacing_zyx: Any,
    ed: int | None = None,
    es: int | None = None,
    height_cm: float | None = None,
    weight_kg: float | None = None,
) -> dict[str, float | int | bool]:
    """LV and RV volumes, stroke volumes, ejection fractions and LV mass of a cine label map.

    With :math:`V_k(t)` from :func:`volume_curve` and the ED / ES phases (given, or from
    :func:`find_ed_es` on the LV curve):

    .. math::
        \\mathrm{EDV} = V(t_{ED}),\\; \\mathrm{ESV} = V(t_{ES}),\\;
        \\mathrm{SV} = \\mathrm{EDV} - \\mathrm{ESV},\\;
        \\mathrm{EF} = 100\\, \\mathrm{SV} / \\mathrm{EDV},\\;
        m_{LV} = 1.05 \\, V_{MYO}(t_{ED})

    for the LV and, at the same two phases, the RV. When both `height_cm` and `weight_kg`
    are given, the Mosteller BSA and the values indexed by it (divided by BSA) are added.

    Args:
        label_tzyx: label map ``(T, Z, Y, X)`` with values 0..3 (numpy array or torch tensor).
        spacing_zyx: voxel spacing in mm ``(slice, row, column)``, positive.
        ed: end-diastolic phase in ``[0, T)``; ``None`` picks the phase of maximal LV volume.
        es: end-systolic phase in ``[0, T)``; ``None`` picks the phase of minimal LV volume.
        height_cm: body height in cm, positive; give it together with `weight_kg` or not at all.
        weight_kg: body weight in kg, positive; give it together with `height_cm` or not at all.

    Returns:
        A dict with ``ed_phase``, ``es_phase`` (int); ``lv_edv_ml``, ``lv_esv_ml``,
        ``lv_sv_ml``, ``lv_ef_pct``, ``rv_edv_ml``, ``rv_esv_ml``, ``rv_sv_ml``, ``rv_ef_pct``,
        ``lv_mass_g`` (float); ``lv_ef_defined``, ``rv_ef_defined`` (bool: False when that
        chamber's EDV is zero, its EF is then NaN). With height and weight also ``bsa_m2`` and
        ``lv_edv_i_ml_m2``, ``lv_esv_i_ml_m2``, ``lv_sv_i_ml_m2``, ``rv_edv_i_ml_m2``,
        ``rv_esv_i_ml_m2``, ``rv_sv_i_ml_m2``, ``lv_mass_i_g_m2``.

    Raises:
        ValueError: if `label_tzyx` is not 4D or holds values outside 0..3, `spacing_zyx` is
            not 3 positive values, `ed` / `es` is not an integer in ``[0, T)``, only one of
            `height_cm` / `weight_kg` is given, or either is not positive and finite.

    Example:
        >>> lab = np.zeros((2, 1, 10, 10), dtype=np.uint8)
        >>> lab[0, 0, :5, :4] = 1; lab[1, 0, :2, :4] = 1; lab[:, 0, 9, :] = 2
        >>> f = cardiac_function(lab, (10.0, 1.0, 1.0))
        >>> f["ed_phase"], f["es_phase"], round(f["lv_ef_pct"], 6), round(f["lv_mass_g"], 6)
        (0, 1, 60.0, 0.105)
    """
    curves = volume_curve(label_tzyx, spacing_zyx)
    n_phases = int(curves["LV"].size)
    if (height_cm is None) != (weight_kg is None):
        raise ValueError(
            f"`height_cm` and `weight_kg` must be given together (for the BSA), got height_cm={height_cm}, "
            f"weight_kg={weight_kg}."
        )
    bsa = None if height_cm is None or weight_kg is None else mosteller_bsa(height_cm, weight_kg)
    auto_ed, auto_es = find_ed_es(curves["LV"])
    ed_i = auto_ed if ed is None else _check_phase(ed, "ed", n_phases)
    es_i = auto_es if es is None else _check_phase(es, "es", n_phases)

    out: dict[str, float | int | bool] = {"ed_phase": ed_i, "es_phase": es_i}
    for prefix, k in (("lv", LV), ("rv", RV)):
        curve = curves[STRUCTURE_NAMES[k]]
        edv, esv = float(curve[ed_i]), float(curve[es_i])
        defined = edv > 0
        out[f"{prefix}_edv_ml"] = edv
        out[f"{prefix}_esv_ml"] = esv
        out[f"{prefix}_sv_ml"] = edv - esv
        out[f"{prefix}_ef_pct"] = ejection_fraction(edv, esv) if defined else float("nan")
        out[f"{prefix}_ef_defined"] = defined
    out["lv_mass_g"] = float(curves[STRUCTURE_NAMES[MYO]][ed_i]) * MYOCARDIAL_DENSITY_G_PER_ML

    if bsa is not None:
        out["bsa_m2"] = bsa
        for prefix in ("lv", "rv"):
            for q in ("edv", "esv", "sv"):
                out[f"{prefix}_{q}_i_ml_m2"] = float(out[f"{prefix}_{q}_ml"]) / bsa
        out["lv_mass_i_g_m2"] = float(out["lv_mass_g"]) / bsa
    return out
