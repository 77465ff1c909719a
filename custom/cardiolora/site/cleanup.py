"""Stage 4 of the site-inference bundle: the anatomical clean-up of a cine's labels.

:class:`CineCleanup` is the ``postprocessing`` of ``inference/configs/inference.json``:
:func:`~cardiolora.site.postprocess.clean_labels` on every phase (:func:`clean_cine`).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from cardiolora.site.postprocess import clean_labels_with_notes

__all__ = ["CineCleanup", "clean_cine"]


def clean_cine(labels_tzyx: np.ndarray, workers: int | None = None, notes: list[dict] | None = None) -> np.ndarray:
    """:func:`~cardiolora.site.postprocess.clean_labels` on every phase, phases in parallel.

    Args:
        labels_tzyx: uint8 labels ``(T, Z, Y, X)``.
        workers: threads (``None``: one per CPU core); the phases are independent and
            scipy.ndimage releases the GIL, so the result does not depend on it.
        notes: when given, what the anatomical rules removed is appended, one dict per note
            with its ``phase`` (:func:`~cardiolora.site.postprocess.clean_labels_with_notes`).

    Returns:
        The cleaned labels, same shape.
    """
    n = max(1, min(len(labels_tzyx), workers or os.cpu_count() or 1))
    with ThreadPoolExecutor(n, thread_name_prefix="cardiolora-clean") as pool:
        done = list(pool.map(lambda phase: clean_labels_with_notes(phase, slice_axis=0), labels_tzyx))
    if notes is not None:
        notes.extend({"phase": t, **note} for t, (_, found) in enumerate(done) for note in found)
    return np.stack([cleaned for cleaned, _ in done])


class CineCleanup:
    """The clean-up stage: ``(labels, notes)`` from the raw labels.

    Args:
        enabled: apply the anatomical rules (``False``: the raw labels are returned as they are).
        workers: threads for :func:`clean_cine` (``None``: one per core).

    Example:
        >>> labels, notes = CineCleanup()(raw)  # doctest: +SKIP
    """

    def __init__(self, enabled: bool = True, workers: int | None = None) -> None:
        self.enabled = bool(enabled)
        self.workers = workers

    def __call__(self, raw_tzyx: np.ndarray) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """The cleaned labels (``raw_tzyx`` itself when disabled) and what the rules removed."""
        notes: list[dict[str, Any]] = []
        if not self.enabled:
            return raw_tzyx, notes
        return clean_cine(raw_tzyx, self.workers, notes), notes
