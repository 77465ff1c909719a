"""Coded concepts and UCUM units of the cardiac function SR (:mod:`cardiolora.dicom.sr`).

Concepts (CID 3835 "Cardiac Volume Measurement" and CID 3833 "Cardiac Ejection Fraction" for
CT/MR; else the echo context groups) and UCUM units:

* EDV / ESV: LN 8821-1 / 8823-7 "Left Ventricular ED / ES Volume", LN 8822-9 / 8824-5 (right); ml.
* SV: SCT 90096001 "Stroke Volume" (finding site LV), SCT 429483009 "RV Stroke Volume"; ml.
* EF: LN 8811-2 "Left ventricular ejection fraction by MR", LN 8818-7 (right ...); %.
* LV mass: LN 18087-7 "Left Ventricle Mass" (CID 12203); g. Myocardial volume at ED x 1.05 g/ml;
  CID 12232's mass methods are echo-specific (truncated ellipse, area-length), so none is named.
* Indexed: the same concepts in ml/m2 and g/m2; SV index as SCT 277381004 "Stroke Index" /
  429619008 "RV Stroke Index". BSA: LN 8277-6 in m2, method DCM 122244 "BSA = (HT*WT/36)^0.5"
  (Mosteller, height in m).
* Phase: trigger time DCM 122666 "Time relative to R-wave peak" (ms); phase index (0-based) has no
  standard code: private 99CARDIOLORA PHASE_INDEX, unit "1".

Modifiers, as in DICOM's adult echo post-coordinated measurements (PS3.17): HAS CONCEPT MOD (SCT
272518008 "Cardiac Cycle Point") = SCT 416190007 "End diastole" / 416430001 "End Systole" (CID
12233 "Cardiac Phase") on every phase-bound NUM (EDV, ESV, mass, indexed ones, phase index and
trigger time); (DCM 125306 "Measurement Type") = DCM 125316 "Directly measured" (volumes, which
also carry Measurement Method DCM 126030 "Sum of segmented voxel method for volume", CID 7474),
125315 "Calculated" (SV, EF, mass, BSA) or 125313 "Indexed" (CID 12303) plus (DCM 125308
"Measurement Divisor") = LN 8277-6 BSA. (DCM 109070 is "End of systole" of hemodynamic waveforms,
CID 3337, and 109071 "Indicator mean transit time": not cardiac phases.)

Flags: per flag one CODE qualitative evaluation, concept 99CARDIOLORA FLAG "Plausibility flag",
value 99CARDIOLORA <flag> (Long Code Value beyond 16 characters); the private scheme is declared in
the Coding Scheme Identification Sequence.
"""

from __future__ import annotations

from typing import NamedTuple

from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from cardiolora.clinical import INDEXED_KEYS, MEASURE_KEYS
from cardiolora.labels import LV, MYO, RV

__all__ = [
    "BSA",
    "CALC",
    "CYCLE_POINT",
    "FLAG",
    "FUNCTION_GROUPS",
    "FUNCTION_REQUIRED",
    "INDEXED",
    "INDEXED_KEYS",
    "MEASURED",
    "PHASE_CODE",
    "PHASE_INDEX",
    "SCHEME",
    "SPECS",
    "UNITS",
    "VOLUMETRIC",
    "Spec",
]

#: Private coding scheme of the phase index and the flags.
SCHEME = "99CARDIOLORA"
#: Keys `function` must have (:data:`cardiolora.clinical.INDEXED_KEYS` are optional).
FUNCTION_REQUIRED = ("ed_phase", "es_phase", *MEASURE_KEYS)
UNITS = {
    u: Code(u, "UCUM", m)
    for u, m in (
        ("ml", "milliliter"),
        ("%", "percent"),
        ("g", "gram"),
        ("ml/m2", "milliliter per square meter"),
        ("g/m2", "gram per square meter"),
        ("ms", "millisecond"),
        ("m2", "square meter"),
        ("1", "no units"),
    )
}
CYCLE_POINT = Code("272518008", "SCT", "Cardiac Cycle Point")
PHASE_CODE = {"ed": codes.SCT.EndDiastole, "es": codes.SCT.EndSystole}
BSA = Code("8277-6", "LN", "Body Surface Area")
PHASE_INDEX = Code("PHASE_INDEX", SCHEME, "Cardiac phase index (0-based)")
FLAG = Code("FLAG", SCHEME, "Plausibility flag")
MEASURED, CALC, INDEXED = codes.DCM.DirectlyMeasured, codes.DCM.Calculated, codes.DCM.Indexed


class Spec(NamedTuple):
    """One measurement: concept, UCUM unit, measurement type, cardiac phase (or None), finding site."""

    name: Code
    unit: str
    kind: Code
    phase: str | None = None
    site: Code | None = None


_LN, _SCT = codes.LN, codes.SCT
#: Measurement key -> coded concept, unit, measurement type, phase modifier, finding site.
SPECS: dict[str, Spec] = {
    "lv_edv_ml": Spec(_LN.LeftVentricularEDVolume, "ml", MEASURED, "ed"),
    "lv_esv_ml": Spec(_LN.LeftVentricularESVolume, "ml", MEASURED, "es"),
    "lv_mass_g": Spec(_LN.LeftVentricleMass, "g", CALC, "ed"),
    "rv_edv_ml": Spec(_LN.RightVentricularEDVolume, "ml", MEASURED, "ed"),
    "rv_esv_ml": Spec(_LN.RightVentricularESVolume, "ml", MEASURED, "es"),
    "lv_sv_ml": Spec(_SCT.StrokeVolume, "ml", CALC, None, _SCT.LeftVentricle),
    "lv_ef_pct": Spec(_LN.LeftVentricularEjectionFractionByMR, "%", CALC),
    "rv_sv_ml": Spec(_SCT.RVStrokeVolume, "ml", CALC),
    "rv_ef_pct": Spec(_LN.RightVentricularEjectionFractionByMR, "%", CALC),
    "lv_edv_i_ml_m2": Spec(_LN.LeftVentricularEDVolume, "ml/m2", INDEXED, "ed"),
    "lv_esv_i_ml_m2": Spec(_LN.LeftVentricularESVolume, "ml/m2", INDEXED, "es"),
    "lv_sv_i_ml_m2": Spec(_SCT.StrokeIndex, "ml/m2", INDEXED, None, _SCT.LeftVentricle),
    "lv_mass_i_g_m2": Spec(_LN.LeftVentricleMass, "g/m2", INDEXED, "ed"),
    "rv_edv_i_ml_m2": Spec(_LN.RightVentricularEDVolume, "ml/m2", INDEXED, "ed"),
    "rv_esv_i_ml_m2": Spec(_LN.RightVentricularESVolume, "ml/m2", INDEXED, "es"),
    "rv_sv_i_ml_m2": Spec(_SCT.RVStrokeIndex, "ml/m2", INDEXED),
    "bsa_m2": Spec(BSA, "m2", CALC),
}
#: Volumetric groups: (tracking identifier, segment number, phase, measurement key).
VOLUMETRIC = (
    ("LV cavity ED", LV, "ed", "lv_edv_ml"),
    ("LV cavity ES", LV, "es", "lv_esv_ml"),
    ("LV myocardium ED", MYO, "ed", "lv_mass_g"),
    ("RV cavity ED", RV, "ed", "rv_edv_ml"),
    ("RV cavity ES", RV, "es", "rv_esv_ml"),
)
FUNCTION_GROUPS = (
    (
        "LV function",
        _SCT.LeftVentricle,
        ("lv_sv_ml", "lv_ef_pct", "lv_edv_i_ml_m2", "lv_esv_i_ml_m2", "lv_sv_i_ml_m2", "lv_mass_i_g_m2"),
    ),
    (
        "RV function",
        _SCT.RightVentricle,
        ("rv_sv_ml", "rv_ef_pct", "rv_edv_i_ml_m2", "rv_esv_i_ml_m2", "rv_sv_i_ml_m2"),
    ),
    ("Body surface area", None, ("bsa_m2",)),
)
