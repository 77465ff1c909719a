"""The clinical report of a segmented study: JSON per study, one CSV row per study.

Numbers come from :func:`cardiolora.clinical.cardiac_function` on the post-processed label map:
ED / ES are the phases of maximal / minimal LV cavity volume (``find_ed_es``), volumes by
summation of discs, LV mass = 1.05 g/mL × myocardial volume at ED, indexed values divided by
the Mosteller BSA when the DICOM header holds PatientSize and PatientWeight. A single-phase input
(a NIfTI stack) gets volumes but no ED / ES, SV or EF (``null``), and the reason in ``warnings``.

CSV columns (:data:`CSV_COLUMNS`) are the same for every row; the batch CSV holds skipped studies
with their ``status`` (``skipped`` / ``exists`` / ``error``) and ``reason`` and empty numbers.
"""

from __future__ import annotations

import csv
import io
import os
import platform
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import highdicom
import monai
import nibabel
import numpy as np
import pydicom
import torch

import cardiolora
from cardiolora.atomic import atomic_write_text, jsonable
from cardiolora.clinical import INDEXED_KEYS, MEASURE_KEYS

__all__ = ["CSV_COLUMNS", "FUNCTION_KEYS", "csv_row", "software_versions", "write_csv"]

#: Clinical values copied from ``cardiac_function`` into the CSV (indexed ones when known).
FUNCTION_KEYS: tuple[str, ...] = (*MEASURE_KEYS, "bsa_m2", *INDEXED_KEYS)

CSV_COLUMNS: tuple[str, ...] = (
    "study",
    "status",
    "reason",
    "input",
    "input_kind",
    "series_instance_uid",
    "series_number",
    "series_description",
    "n_phases",
    "n_slices",
    "ed_phase",
    "es_phase",
    *FUNCTION_KEYS,
    "model_sha256",
    "output",
    "flags",
    "warnings",
)


def software_versions() -> dict[str, str]:
    """Versions of the software that made a report (cardiolora and what it runs on)."""
    return {
        "cardiolora": cardiolora.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "monai": monai.__version__,
        "numpy": np.__version__,
        "pydicom": pydicom.__version__,
        "highdicom": highdicom.__version__,
        "nibabel": nibabel.__version__,
    }


def _cell(value: Any) -> str:
    value = jsonable(value)
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return "; ".join(str(v) for v in value)
    return str(value)


def csv_row(values: Mapping[str, Any]) -> dict[str, str]:
    """One CSV row: every column of :data:`CSV_COLUMNS` (missing ones empty) as text.

    Args:
        values: column → value (numbers, text, lists joined with ``"; "``).

    Returns:
        The row.

    Raises:
        ValueError: if `values` has a key that is not a column.
    """
    unknown = sorted(set(values) - set(CSV_COLUMNS))
    if unknown:
        raise ValueError(f"unknown CSV columns {unknown}; known: {list(CSV_COLUMNS)}.")
    return {c: _cell(values.get(c)) for c in CSV_COLUMNS}


def write_csv(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> Path:
    """Write rows (see :func:`csv_row`) with the header :data:`CSV_COLUMNS`, atomically.

    Args:
        rows: one mapping per study.
        path: the file.

    Returns:
        The path.
    """
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(CSV_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(csv_row(row))
    return atomic_write_text(buf.getvalue(), path)


def now_iso() -> str:
    """Local time as ISO 8601 with offset (for ``created``)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
