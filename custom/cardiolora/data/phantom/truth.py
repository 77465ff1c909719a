"""Clinical ground truth of a labelled cine: volumes, stroke volumes, ejection fractions, LV mass."""

from __future__ import annotations

import numpy as np

from cardiolora.labels import LV, MYO, RV

__all__ = ["MYOCARDIAL_DENSITY_G_PER_ML", "cine_truth"]


#: Myocardial density used for LV mass (g/mL).
MYOCARDIAL_DENSITY_G_PER_ML = 1.05


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
