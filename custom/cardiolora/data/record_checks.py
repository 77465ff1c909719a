"""Checks and small helpers shared by the record writers (NIfTI and DICOM).

Used by the NIfTI layout writers (:mod:`cardiolora.data.acdc`, :mod:`cardiolora.data.mnms2`,
:mod:`cardiolora.data.truth`) and :mod:`cardiolora.dicom.mr_writer` (phantom MR Image Storage
series): the geometry check of a :class:`~cardiolora.data.cine.CineStudy` (the convention of
:mod:`cardiolora.data.cine`), its image, labels and ``meta`` values, the equipment strings, the
output folder and the CSV encoding. The files themselves are
written with :func:`cardiolora.atomic.atomic_write_bytes`. Every ValueError names the study and
the field.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from cardiolora.data.cine import CineStudy
from cardiolora.labels import remap_labels

__all__ = [
    "VENDOR_DEFAULTS",
    "check_image_dtype",
    "check_studies",
    "checked_image",
    "checked_label",
    "csv_bytes",
    "field_strength",
    "frame_interval_ms",
    "group_of",
    "is_positive_int",
    "manufacturer_and_model",
    "meta_float",
    "prepare_dir",
    "require_meta_float",
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


def require_meta_float(study: CineStudy, key: str, purpose: str) -> float:
    """Like :func:`meta_float`, but a ValueError naming `purpose` when the key is absent."""
    value = meta_float(study, key)
    if value is None:
        raise ValueError(f"`meta['{key}']` of {study.subject_id} is required for {purpose}.")
    return value


def group_of(study: CineStudy) -> str:
    """Diagnostic group of a study (``meta['group']``, default ``"NOR"``)."""
    return text_field(study.meta.get("group", "NOR"), "meta['group']", study)


def checked_label(study: CineStudy, phase: int, name: str) -> np.ndarray:
    """Label frame `phase` of a study in the project convention, checked.

    Raises:
        ValueError: if the study has no labels or the frame holds values outside 0..3; the
            message names `name` (the file the frame is written to) and the study.
    """
    if study.label is None:
        raise ValueError(f"{name}: `label` of {study.subject_id} is None; ground-truth labels are needed.")
    where = f"{name} (label of {study.subject_id}, phase {phase})"
    return remap_labels(study.label[phase], "project", name=where)


def check_image_dtype(image_dtype: str) -> None:
    """Raise a ValueError naming `image_dtype` unless it is ``"float32"`` or ``"int16"``."""
    if image_dtype not in ("float32", "int16"):
        raise ValueError(f"`image_dtype` must be 'float32' or 'int16', got {image_dtype!r}.")


def check_studies(studies: Sequence[CineStudy]) -> list[CineStudy]:
    """`studies` as a list; a ValueError if it is empty or holds something else than a CineStudy."""
    items = list(studies)
    if not items:
        raise ValueError("`studies` is empty; nothing to write.")
    for i, s in enumerate(items):
        if not isinstance(s, CineStudy):
            raise ValueError(f"`studies[{i}]` must be a CineStudy, got {type(s).__name__}.")
    return items


def csv_bytes(columns: Sequence[str], rows: Sequence[Mapping[str, object]]) -> bytes:
    """UTF-8 CSV with a header row of `columns` and ``\\n`` line ends; ``None`` cells are empty."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: ("" if row.get(c) is None else row.get(c)) for c in columns})
    return buf.getvalue().encode("utf-8")
