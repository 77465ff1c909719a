"""The phantoms' ground-truth table: one row per study (identity, ED/ES phase, spacing and every
``truth`` value) as CSV or JSON (:func:`write_truth`)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

from cardiolora.atomic import atomic_write_bytes, write_json
from cardiolora.data.cine import CineStudy
from cardiolora.data.record_checks import check_studies, csv_bytes, group_of, prepare_dir

__all__ = ["write_truth"]

_TRUTH_FIXED_COLUMNS: tuple[str, ...] = (
    "subject_id",
    "vendor",
    "group",
    "n_phases",
    "n_slices",
    "ed_phase",
    "es_phase",
    "spacing_z_mm",
    "spacing_y_mm",
    "spacing_x_mm",
)


def _truth_rows(items: Sequence[CineStudy]) -> tuple[list[str], list[dict[str, object]]]:
    """Columns and rows of the truth table (fixed columns, then the union of truth keys, sorted)."""
    truth_keys: set[str] = set()
    seen: set[str] = set()
    for study in items:
        if study.subject_id in seen:
            raise ValueError(f"`studies` holds subject_id {study.subject_id!r} twice; one row per study.")
        seen.add(study.subject_id)
        clash = set(study.truth) & set(_TRUTH_FIXED_COLUMNS)
        if clash:
            raise ValueError(f"`truth` of {study.subject_id} uses reserved column names {sorted(clash)}.")
        truth_keys.update(str(k) for k in study.truth)
    columns = [*_TRUTH_FIXED_COLUMNS, *sorted(truth_keys)]
    rows = []
    for study in items:
        row: dict[str, object] = {
            "subject_id": study.subject_id,
            "vendor": study.vendor,
            "group": group_of(study),
            "n_phases": study.n_phases,
            "n_slices": study.n_slices,
            "ed_phase": int(study.ed_phase),
            "es_phase": int(study.es_phase),
            "spacing_z_mm": float(study.spacing_zyx[0]),
            "spacing_y_mm": float(study.spacing_zyx[1]),
            "spacing_x_mm": float(study.spacing_zyx[2]),
        }
        for key in sorted(truth_keys):
            value = study.truth.get(key)
            if value is None:
                row[key] = None
                continue
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"`truth['{key}']` of {study.subject_id} must be a number, got {value!r}.") from None
            if not math.isfinite(number):
                raise ValueError(f"`truth['{key}']` of {study.subject_id} must be finite, got {number}.")
            row[key] = number
        rows.append(row)
    return columns, rows


def write_truth(studies: Sequence[CineStudy], path: str | os.PathLike) -> Path:
    """Write one row per study with its identity, phases, spacing and every ``truth`` value.

    Columns: ``subject_id, vendor, group, n_phases, n_slices, ed_phase, es_phase (0-based),
    spacing_z_mm, spacing_y_mm, spacing_x_mm`` and then the union of all ``truth`` keys, sorted
    (empty in CSV / ``null`` in JSON where a study lacks one). Truth values are written as floats
    (JSON keeps full precision; CSV uses Python's ``repr``, which round-trips exactly).

    Args:
        studies: the studies (distinct ``subject_id``).
        path: ``.csv`` or ``.json`` file; its folder is created; an existing file is replaced.

    Returns:
        `path` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: if the suffix is neither ``.csv`` nor ``.json``, `path` is a folder, a subject
            id repeats, or a truth key clashes with a fixed column or holds a non-number.
    """
    items = check_studies(studies)
    out = Path(path)
    suffix = out.suffix.lower()
    if suffix not in (".csv", ".json"):
        raise ValueError(f"`path` {out} must end in .csv or .json.")
    if out.is_dir():
        raise ValueError(f"`path` {out} is a directory.")
    columns, rows = _truth_rows(items)
    prepare_dir(out.parent, "path (its folder)")
    if suffix == ".csv":
        atomic_write_bytes(csv_bytes(columns, rows), out)
    else:
        write_json(rows, out, indent=2, trailing_newline=True)
    return out
