"""Scanner profiles: the tissue table and the stylised vendor looks of the phantom.

A :class:`ScannerProfile` holds the look (tissue contrast, gamma, stored range, bias field, noise,
point-spread function, texture) and the acquisition ranges (pixel spacing, matrix, slice thickness
and gap, number of phases) of one caricatured vendor; :data:`SCANNER_PROFILES` are the four the project
uses. The tissue classes (:data:`TISSUES`) are the index of every per-tissue table of the renderer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

__all__ = ["TISSUES", "ScannerProfile", "SCANNER_PROFILES", "get_scanner"]


#: Tissue classes of the rendered scene, in the order of the intensity lookup table.
TISSUES: tuple[str, ...] = (
    "air",
    "fat",
    "muscle",
    "mediastinum",
    "lung",
    "liver",
    "blood",
    "myocardium",
    "marrow",
    "csf",
)
_AIR, _FAT, _MUSCLE, _MEDIA, _LUNG, _LIVER, _BLOOD, _MYOC, _MARROW, _CSF = range(len(TISSUES))

#: Relative amplitude of the smooth texture in each tissue (multiplied by the profile's strength).
_TEXTURE_AMPLITUDE = np.array([0.0, 0.10, 0.12, 0.18, 0.45, 0.10, 0.05, 0.05, 0.15, 0.05], dtype=np.float32)


def _check_range(name: str, value: tuple[float, float], positive: bool = True) -> None:
    """Raise ValueError unless `value` is an ordered ``(low, high)`` pair (positive if asked)."""
    if len(value) != 2 or not value[0] <= value[1] or (positive and value[0] <= 0) or value[0] < 0:
        kind = "positive" if positive else "non-negative"
        raise ValueError(f"`{name}` must be an ordered (low, high) pair of {kind} values, got {value}.")


@dataclass(frozen=True)
class ScannerProfile:
    """The look and the acquisition parameters of one (stylised) scanner vendor.

    Attributes:
        name: short key (``"reference"``, ``"ge"`` ...); also the ``vendor`` of the studies.
        manufacturer: DICOM ``Manufacturer`` string (e.g. ``"GE MEDICAL SYSTEMS"``).
        model: DICOM ``ManufacturerModelName``.
        field_strength_t: magnetic field strength in tesla.
        tissue_intensity: signal of every tissue in :data:`TISSUES` (blood about 1), before gamma.
        gamma: exponent of the intensity mapping ``stored = level * signal ** gamma``.
        blood_level: stored value of unit signal (blood) for an average subject.
        stored_max: largest stored value (the image is clipped to ``[0, stored_max]``).
        bias_strength: amplitude of the log bias field (the field lies in ``[e^-b, e^b]``).
        noise_sigma: standard deviation of each complex noise channel, relative to unit signal.
        psf_fwhm_mm: full width at half maximum of the Gaussian point-spread function (mm).
        pixel_spacing_mm: ``(low, high)`` range of the square in-plane pixel spacing.
        matrix_sizes: the ``(rows, columns)`` matrices a subject is drawn from.
        slice_thickness_mm: ``(low, high)`` range of the slice thickness.
        slice_gap_mm: ``(low, high)`` range of the gap between slices (spacing = thickness + gap).
        n_phases: ``(low, high)`` inclusive range of the number of cine phases.
        texture_strength: multiplier of the smooth tissue texture.
        description: what the profile caricatures.

    Raises:
        ValueError: if a tissue is missing or negative, or a number or range is out of bounds
            (the message names the field).
    """

    name: str
    manufacturer: str
    model: str
    field_strength_t: float
    tissue_intensity: Mapping[str, float] = field(hash=False)
    gamma: float
    blood_level: float
    stored_max: float
    bias_strength: float
    noise_sigma: float
    psf_fwhm_mm: float
    pixel_spacing_mm: tuple[float, float]
    matrix_sizes: tuple[tuple[int, int], ...]
    slice_thickness_mm: tuple[float, float]
    slice_gap_mm: tuple[float, float]
    n_phases: tuple[int, int]
    texture_strength: float = 1.0
    description: str = ""

    def __post_init__(self) -> None:
        missing = [t for t in TISSUES if t not in self.tissue_intensity]
        if missing:
            raise ValueError(f"`tissue_intensity` of profile {self.name!r} lacks tissues {missing}.")
        bad = {k: v for k, v in self.tissue_intensity.items() if not (math.isfinite(v) and v >= 0)}
        if bad:
            raise ValueError(f"`tissue_intensity` of profile {self.name!r} must be >= 0, got {bad}.")
        object.__setattr__(self, "tissue_intensity", MappingProxyType(dict(self.tissue_intensity)))
        for name in ("field_strength_t", "gamma", "blood_level", "stored_max", "psf_fwhm_mm"):
            if not getattr(self, name) > 0:
                raise ValueError(f"`{name}` of profile {self.name!r} must be positive, got {getattr(self, name)}.")
        for name in ("bias_strength", "noise_sigma", "texture_strength"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"`{name}` of profile {self.name!r} must be >= 0, got {getattr(self, name)}.")
        if self.blood_level >= self.stored_max:
            raise ValueError(f"`blood_level` of profile {self.name!r} must be below `stored_max`.")
        _check_range("pixel_spacing_mm", self.pixel_spacing_mm)
        _check_range("slice_thickness_mm", self.slice_thickness_mm)
        _check_range("slice_gap_mm", self.slice_gap_mm, positive=False)
        _check_range("n_phases", self.n_phases)
        if self.n_phases[0] < 2:
            raise ValueError(f"`n_phases` of profile {self.name!r} must start at >= 2, got {self.n_phases}.")
        if not self.matrix_sizes or any(len(m) != 2 or min(m) < 32 for m in self.matrix_sizes):
            raise ValueError(
                f"`matrix_sizes` of profile {self.name!r} must be (rows, cols) pairs >= 32, got {self.matrix_sizes}."
            )


def _tissues(**values: float) -> dict[str, float]:
    """A tissue table with air 0 unless given."""
    return {"air": 0.0, **values}


#: The scanner profiles. All are stylised looks chosen to differ clearly, not measurements.
SCANNER_PROFILES: dict[str, ScannerProfile] = {
    p.name: p
    for p in (
        ScannerProfile(
            name="reference",
            manufacturer="SIEMENS",
            model="Avanto",
            field_strength_t=1.5,
            tissue_intensity=_tissues(
                fat=0.78,
                muscle=0.22,
                mediastinum=0.34,
                lung=0.05,
                liver=0.21,
                blood=1.0,
                myocardium=0.27,
                marrow=0.55,
                csf=0.9,
            ),
            gamma=1.0,
            blood_level=420.0,
            stored_max=4095.0,
            bias_strength=0.15,
            noise_sigma=0.035,
            psf_fwhm_mm=2.2,
            pixel_spacing_mm=(1.30, 1.70),
            matrix_sizes=((256, 216), (232, 256), (256, 256)),
            slice_thickness_mm=(6.0, 8.0),
            slice_gap_mm=(1.0, 4.0),
            n_phases=(20, 30),
            description="ACDC-like Siemens 1.5 T bSSFP cine: the single vendor the base model is "
            "pretrained on (stylised, not measured).",
        ),
        ScannerProfile(
            name="siemens",
            manufacturer="SIEMENS",
            model="Skyra",
            field_strength_t=3.0,
            tissue_intensity=_tissues(
                fat=0.70,
                muscle=0.18,
                mediastinum=0.30,
                lung=0.06,
                liver=0.17,
                blood=1.0,
                myocardium=0.21,
                marrow=0.50,
                csf=0.95,
            ),
            gamma=1.0,
            blood_level=900.0,
            stored_max=4095.0,
            bias_strength=0.45,
            noise_sigma=0.028,
            psf_fwhm_mm=1.7,
            pixel_spacing_mm=(1.15, 1.45),
            matrix_sizes=((208, 256), (256, 256)),
            slice_thickness_mm=(7.0, 8.0),
            slice_gap_mm=(1.0, 3.0),
            n_phases=(22, 28),
            description="Stylised Siemens 3 T site: sharper, higher SNR, darker myocardium and a strong B1 bias field.",
        ),
        ScannerProfile(
            name="ge",
            manufacturer="GE MEDICAL SYSTEMS",
            model="Signa HDxt",
            field_strength_t=1.5,
            tissue_intensity=_tissues(
                fat=0.95,
                muscle=0.35,
                mediastinum=0.45,
                lung=0.10,
                liver=0.32,
                blood=0.88,
                myocardium=0.40,
                marrow=0.60,
                csf=0.85,
            ),
            gamma=0.85,
            blood_level=150.0,
            stored_max=255.0,
            bias_strength=0.20,
            noise_sigma=0.025,
            psf_fwhm_mm=3.0,
            pixel_spacing_mm=(1.40, 1.60),
            matrix_sizes=((256, 256),),
            slice_thickness_mm=(8.0, 10.0),
            slice_gap_mm=(0.0, 2.0),
            n_phases=(20, 25),
            texture_strength=0.7,
            description="Stylised GE FIESTA look: smooth (wide PSF), flat blood-myocardium "
            "contrast, fat brighter than blood, 8-bit-like stored range.",
        ),
        ScannerProfile(
            name="philips",
            manufacturer="Philips Medical Systems",
            model="Achieva",
            field_strength_t=1.5,
            tissue_intensity=_tissues(
                fat=0.82,
                muscle=0.17,
                mediastinum=0.28,
                lung=0.03,
                liver=0.15,
                blood=1.0,
                myocardium=0.19,
                marrow=0.50,
                csf=0.90,
            ),
            gamma=1.15,
            blood_level=2200.0,
            stored_max=4095.0,
            bias_strength=0.30,
            noise_sigma=0.065,
            psf_fwhm_mm=2.0,
            pixel_spacing_mm=(1.05, 1.30),
            matrix_sizes=((288, 288), (320, 320)),
            slice_thickness_mm=(8.0, 10.0),
            slice_gap_mm=(0.0, 1.0),
            n_phases=(25, 30),
            texture_strength=1.2,
            description="Stylised Philips bTFE look: reconstructed to a finer, larger matrix, "
            "noisier, high blood-myocardium contrast, large stored range.",
        ),
    )
}


def get_scanner(name_or_profile: str | ScannerProfile) -> ScannerProfile:
    """Return a scanner profile by name (case-insensitive), or the profile itself.

    Args:
        name_or_profile: a key of :data:`SCANNER_PROFILES` or a :class:`ScannerProfile`.

    Returns:
        The profile.

    Raises:
        ValueError: if the name is unknown (the message lists the known names) or the argument is
            neither a string nor a profile.

    Example:
        >>> get_scanner("GE").manufacturer
        'GE MEDICAL SYSTEMS'
    """
    if isinstance(name_or_profile, ScannerProfile):
        return name_or_profile
    if not isinstance(name_or_profile, str):
        raise ValueError(f"`profile` must be a profile name or a ScannerProfile, got {type(name_or_profile).__name__}.")
    key = name_or_profile.strip().lower()
    if key not in SCANNER_PROFILES:
        raise ValueError(
            f"scanner profile {name_or_profile!r} is unknown; known scanner profiles: {sorted(SCANNER_PROFILES)}."
        )
    return SCANNER_PROFILES[key]
