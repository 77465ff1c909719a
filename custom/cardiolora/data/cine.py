"""The in-memory record of one short-axis cine study with its geometry and ground truth.

Both the phantom generator (which makes them) and the writers (NIfTI in the M&Ms-2 and ACDC
layouts, DICOM cine series) and the site application (which reads DICOM into the same record
without labels) share this one type.

Axes and geometry conventions (used everywhere in the project):

* ``image`` and ``label`` are indexed ``[phase, slice, row, column]`` = ``(T, Z, Y, X)``.
* ``spacing_zyx`` is ``(slice spacing, row spacing, column spacing)`` in mm, i.e. the distance
  between voxel centres along Z, Y and X. ``PixelSpacing`` in DICOM is ``[row spacing, column
  spacing]`` = ``[spacing_zyx[1], spacing_zyx[2]]``.
* ``affine_lps`` maps a voxel index ``(x=column, y=row, z=slice, 1)`` to patient coordinates in
  DICOM's LPS frame (mm). Its first column is the DICOM row direction cosine (moving along a row,
  i.e. increasing column) times the column spacing, its second the column direction cosine times
  the row spacing, its third the slice normal times the slice spacing; its translation is
  ``ImagePositionPatient`` of slice 0.
* NIfTI files store the array as ``(X, Y, Z)`` (``nib`` order) with the RAS affine
  ``diag(-1, -1, 1, 1) @ affine_lps``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["CineStudy", "LPS_TO_RAS", "nifti_affine"]

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def nifti_affine(affine_lps: np.ndarray) -> np.ndarray:
    """Return the NIfTI (RAS) affine of a volume whose voxel-to-LPS affine is `affine_lps`.

    Args:
        affine_lps: 4×4 matrix mapping ``(x, y, z, 1)`` voxel indices to LPS millimetres.

    Returns:
        The 4×4 RAS affine, ``diag(-1, -1, 1, 1) @ affine_lps``.

    Raises:
        ValueError: if `affine_lps` is not a finite 4×4 matrix.
    """
    a = np.asarray(affine_lps, dtype=np.float64)
    if a.shape != (4, 4) or not np.all(np.isfinite(a)):
        raise ValueError(f"`affine_lps` must be a finite 4x4 matrix, got shape {a.shape}.")
    return LPS_TO_RAS @ a


@dataclass
class CineStudy:
    """One short-axis cine: ``(T, Z, Y, X)`` intensities, optional labels, geometry, truth.

    Attributes:
        subject_id: identifier of the subject (e.g. ``"ge-007"``).
        image: float32 array ``(T, Z, Y, X)`` of non-negative scanner intensities.
        label: uint8 array like `image` in the project convention (0 bg, 1 LV, 2 MYO, 3 RV), or
            ``None`` when unknown (real studies at inference).
        spacing_zyx: voxel spacing in mm ``(slice, row, column)``.
        affine_lps: 4×4 voxel ``(x, y, z)`` to LPS mm affine (see module docstring).
        trigger_times_ms: ``(T,)`` trigger time of each phase in ms after the R wave.
        ed_phase: index of end-diastole in ``[0, T)``.
        es_phase: index of end-systole in ``[0, T)``.
        vendor: scanner profile / manufacturer name of the study.
        slice_thickness_mm: nominal slice thickness (may be smaller than the slice spacing).
        truth: ground-truth clinical values (e.g. ``lv_edv_ml``, ``lv_ef_pct``) when known.
        meta: free-form extra information (patient height/weight, group, seeds ...).
    """

    subject_id: str
    image: np.ndarray
    label: np.ndarray | None
    spacing_zyx: tuple[float, float, float]
    affine_lps: np.ndarray
    trigger_times_ms: np.ndarray
    ed_phase: int
    es_phase: int
    vendor: str = "unknown"
    slice_thickness_mm: float | None = None
    truth: dict[str, float] = field(default_factory=dict)
    meta: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.image.ndim != 4:
            raise ValueError(f"`image` of {self.subject_id} must be (T, Z, Y, X), got shape {self.image.shape}.")
        if self.label is not None and self.label.shape != self.image.shape:
            raise ValueError(
                f"`label` of {self.subject_id} has shape {self.label.shape}, image has {self.image.shape}."
            )
        t = self.image.shape[0]
        if len(self.trigger_times_ms) != t:
            raise ValueError(
                f"`trigger_times_ms` of {self.subject_id} has {len(self.trigger_times_ms)} entries for {t} phases."
            )
        for name in ("ed_phase", "es_phase"):
            if not 0 <= getattr(self, name) < t:
                raise ValueError(f"`{name}` of {self.subject_id} must be in [0, {t}), got {getattr(self, name)}.")
        if len(self.spacing_zyx) != 3 or min(self.spacing_zyx) <= 0:
            raise ValueError(f"`spacing_zyx` of {self.subject_id} must be 3 positive values, got {self.spacing_zyx}.")
        self.affine_lps = np.asarray(self.affine_lps, dtype=np.float64)
        if self.affine_lps.shape != (4, 4):
            raise ValueError(f"`affine_lps` of {self.subject_id} must be 4x4, got {self.affine_lps.shape}.")

    @property
    def n_phases(self) -> int:
        """Number of temporal phases T."""
        return int(self.image.shape[0])

    @property
    def n_slices(self) -> int:
        """Number of slice positions Z."""
        return int(self.image.shape[1])

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in millilitres (mm³ / 1000)."""
        return float(np.prod(self.spacing_zyx)) / 1000.0
