"""Segmentation metrics as the Rate-My-LoRA paper reports them: Dice, VOE, HD, HD95 and ASSD.

Every function works on 2D ``(Y, X)`` and 3D ``(Z, Y, X)`` arrays (the project's axis
convention, see :mod:`cardiolora.data.cine`) with the voxel spacing in mm given in the same
axis order (``spacing_zyx`` for volumes, ``(row, column)`` spacing for slices). Inputs may be
numpy arrays or torch tensors (tensors are detached and copied to numpy); the computation is pure
numpy / scipy.

The modules, by concern (every public name is importable from ``cardiolora.metrics``):

* :mod:`cardiolora.metrics.overlap`: Dice and VOE of binary masks, and the fast batched mean
  foreground Dice (:func:`mean_foreground_dice`) for scoring candidates;
* :mod:`cardiolora.metrics.distances`: surfaces, directed surface distances, HD, HD95 and ASSD
  (the definitions, and how HD95 differs from MONAI's, are in its docstring);
* :mod:`cardiolora.metrics.scores`: every metric of every structure of a label map
  (:func:`segmentation_scores`) and their NaN-aware aggregation over cases (:func:`aggregate_scores`);
* :mod:`cardiolora.metrics.inputs`: the conversion and checks of the inputs.

Empty-structure policy (used by every function here, tested in ``tests/test_metrics.py``):

* both masks empty: Dice 1, VOE 0, HD = HD95 = ASSD = 0, and ``segmentation_scores`` sets
  ``"both_empty": True`` for the structure (a correct "absent" call);
* exactly one mask empty: Dice 0, VOE 100, HD = HD95 = ASSD = NaN (undefined, never infinity);
* means over structures and over cases are NaN-aware (NaNs are skipped) and report the number
  ``n`` of valid (finite) values each mean is taken over; a mean over no valid value is NaN with
  ``n = 0`` (no warning is raised).
"""

from __future__ import annotations

from cardiolora.metrics.distances import assd, hausdorff, surface, surface_distances
from cardiolora.metrics.overlap import dice, mean_foreground_dice, voe
from cardiolora.metrics.scores import METRICS, aggregate_scores, segmentation_scores

__all__ = [
    "METRICS",
    "dice",
    "voe",
    "surface",
    "surface_distances",
    "hausdorff",
    "assd",
    "segmentation_scores",
    "aggregate_scores",
    "mean_foreground_dice",
]
