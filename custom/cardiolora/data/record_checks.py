"""Checks and small helpers shared by the record writers (NIfTI and DICOM).

Used by :mod:`cardiolora.data.writers` (M&Ms-2, ACDC, truth tables) and
:mod:`cardiolora.dicom.mr_writer` (phantom MR Image Storage series): the geometry check of a
:class:`~cardiolora.data.cine.CineStudy` (the convention of :mod:`cardiolora.data.cine`), its
image and ``meta`` values, the equipment strings and the output folder. The files themselves are
written with :func:`cardiolora.atomic.atomic_write_bytes`. Every ValueError names the study and
the field.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from cardiolora.data.cine import CineStudy

__all__ = [
    "VENDOR_DEFAULTS",
    "checked_image",
    "field_strength",
    "frame_interval_ms",
    "is_positive_int",
    "manufacturer_and_model",
    "meta_float",
    "prepare_dir",
    "study_geometry",
    "text_field",
]

#: Plausible manufacturer and model strings by (lower-case) vendor / profile name.
VENDOR_DEFAULTS: dict[str, tuple[str, str]] = {
    "siemens": ("SIEMENS", "Avanto"),
    "ge": ("GE MEDICAL SYSTEMS", "Signa HDxt"),
    "philips": ("Philips Medical Systems", "Achieva"),
}


def prepare_dir(path: str | os.PathLike, arg: str) -> Path:
    """Create folder `path` (and parents) and return it; a ValueError if it is a file."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ValueError(f"`{arg}` {p} exists and is not a directory.")
    p.mkdir(parents=True, exist_ok=True)
    return p


def is_positive_int(value: object) -> bool:
    """True for an integer (not bool) >= 1."""
    return not isinstance(value, bool) and isinstance(value, (int, np.integer)) and value >= 1


def text_field(value: object, field: str, study: CineStudy) -> str:
    """Return `value` as a one-line string free of separators, or raise naming the field.

    `field` is how the message names the value, e.g. ``"meta['group']"`` or ``"vendor"``.
    """
    text = "" if value is None else str(value).strip()
    if not text or any(c in text for c in "\r\n,\\"):
        raise ValueError(
            f"`{field}` of {study.subject_id} must be a non-empty single-line text without commas or "
            f"backslashes, got {value!r}."
        )
    return text


def meta_float(study: CineStudy, key: str) -> float | None:
    """Return ``study.meta[key]`` as a positive finite float, or ``None`` if absent."""
    raw = study.meta.get(key)
    if raw is None:
        return None
    try:
        value = float(str(raw))
    except ValueError:
        raise ValueError(f"`meta['{key}']` of {study.subject_id} must be a number, got {raw!r}.") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"`meta['{key}']` of {study.subject_id} must be positive and finite, got {value}.")
    return value


def manufacturer_and_model(study: CineStudy) -> tuple[str, str]:
    """Manufacturer and model strings: from meta, else the vendor table, else the vendor name."""
    default = VENDOR_DEFAULTS.get(study.vendor.lower(), (study.vendor, "unknown"))
    manufacturer = text_field(study.meta.get("manufacturer", default[0]), "meta['manufacturer']", study)
    model = text_field(study.meta.get("scanner", default[1]), "meta['scanner']", study)
    return manufacturer, model


def field_strength(study: CineStudy) -> float:
    """Magnetic field strength in tesla (``meta['field_strength_t']``, default 1.5)."""
    value = meta_float(study, "field_strength_t")
    return 1.5 if value is None else value


def study_geometry(study: CineStudy) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit row cosine, unit column cosine and unit slice direction of a study.

    Args:
        study: the study; its ``affine_lps`` must follow the convention of
            :mod:`cardiolora.data.cine` (columns = unit vectors × (column, row, slice) spacing).

    Returns:
        ``(row_cos, col_cos, slice_dir)``, each a unit 3-vector in LPS; ``slice_dir`` is the
        direction of increasing slice index (± the normal ``row_cos × col_cos``).

    Raises:
        ValueError: if the affine is not finite, its last row is not ``(0, 0, 0, 1)``, its column
            lengths differ from ``spacing_zyx`` by more than 1e-4 mm, or its columns are not
            mutually orthogonal (|cos| > 1e-6).
    """
    a = study.affine_lps
    sid = study.subject_id
    if not np.all(np.isfinite(a)) or not np.allclose(a[3], (0, 0, 0, 1)):
        raise ValueError(f"`affine_lps` of {sid} must be finite with last row (0, 0, 0, 1), got\n{a}.")
    cols = a[:3, :3]
    norms = np.linalg.norm(cols, axis=0)
    expected = np.asarray(study.spacing_zyx, dtype=np.float64)[::-1]
    if not np.allclose(norms, expected, rtol=0, atol=1e-4):
        raise ValueError(
            f"`affine_lps` of {sid} has column lengths {norms.round(6).tolist()} mm, but "
            f"`spacing_zyx` reversed (x, y, z) is {expected.tolist()}."
        )
    units = cols / norms
    gram = units.T @ units
    if np.max(np.abs(gram - np.eye(3))) > 1e-6:
        raise ValueError(f"`affine_lps` of {sid} must have orthogonal columns (no shear), got\n{a}.")
    return units[:, 0], units[:, 1], units[:, 2]


def checked_image(study: CineStudy) -> np.ndarray:
    """The study image as float32, after checking it is finite."""
    image = np.asarray(study.image)
    if image.dtype.kind not in "fiu" or not np.all(np.isfinite(image)):
        raise ValueError(f"`image` of {study.subject_id} must hold finite numbers.")
    return image.astype(np.float32, copy=False)


def frame_interval_ms(study: CineStudy) -> float:
    """Median interval between successive trigger times (1.0 when there is a single phase)."""
    times = np.asarray(study.trigger_times_ms, dtype=np.float64)
    if times.size < 2:
        return 1.0
    step = float(np.median(np.diff(times)))
    return step if math.isfinite(step) and step > 0 else 1.0
