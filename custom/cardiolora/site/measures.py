"""Stage 5 of the site-inference bundle: the clinical measures of a segmented cine.

:class:`ClinicalMeasures` is the ``measures`` of ``inference/configs/inference.json``: the volume
curve, ED / ES, LV / RV volumes, EF, LV mass and BSA-indexed values (:mod:`cardiolora.clinical`)
and the plausibility flags (:mod:`cardiolora.plausibility`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cardiolora.clinical import cardiac_function, volume_curve
from cardiolora.data.cine import CineStudy
from cardiolora.plausibility import plausibility_flags

__all__ = ["ClinicalMeasures"]


class ClinicalMeasures:
    """Measure a segmented cine.

    Returns, when called with ``(cine, labels_tzyx)``, a dict with ``curves`` (the volume curve
    in ml per label), ``function`` (:func:`cardiolora.clinical.cardiac_function`; ``None`` for a
    single phase) and ``flags`` (:func:`cardiolora.plausibility.plausibility_flags`).

    Example:
        >>> m = ClinicalMeasures()(cine, labels)  # doctest: +SKIP
        >>> m["function"]["lv_ef_pct"]  # doctest: +SKIP
    """

    def __call__(self, cine: CineStudy, labels_tzyx: np.ndarray) -> dict[str, Any]:
        curves = volume_curve(labels_tzyx, cine.spacing_zyx)
        height, weight = cine.meta.get("height_cm"), cine.meta.get("weight_kg")
        if height is None or weight is None:
            height = weight = None
        function = (
            cardiac_function(labels_tzyx, cine.spacing_zyx, height_cm=height, weight_kg=weight)
            if cine.n_phases > 1
            else None
        )
        flags = plausibility_flags(function, labels_tzyx, cine.spacing_zyx, curves)
        return {"curves": curves, "function": function, "flags": flags}
