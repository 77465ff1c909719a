"""The project's one error type for bad input, and the :class:`Problem` record of a left-out file.

Every stage that reads what a user gives it (DICOM folders, NIfTI files, site configurations,
series-selection rules) raises :class:`InputError` with a message that names the file or the
field and the true reason; a file that a scan leaves out without stopping is a :class:`Problem`.

Example:
    >>> raise InputError("study/IM_0001: lacks ImagePositionPatient")  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["MAX_NAMES", "InputError", "Problem", "name_list"]

#: Items named in one message before "... (N in all)".
MAX_NAMES = 3


class InputError(ValueError):
    """Input that cannot be used as given; the message names the file or field and says why."""


@dataclass(frozen=True)
class Problem:
    """A file that was left out, and why.

    Attributes:
        path: the file.
        reason: why it was left out (not DICOM, truncated header, duplicate SOPInstanceUID ...).
    """

    path: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def name_list(items: Sequence[str], limit: int = MAX_NAMES) -> str:
    """The first `limit` items joined by ", ", then ", ... (N in all)" when there are more.

    Args:
        items: names (files, attributes, positions).
        limit: how many to show; must be >= 1.

    Returns:
        e.g. ``"a.dcm, b.dcm, c.dcm, ... (7 in all)"``.

    Raises:
        ValueError: if `limit` < 1.
    """
    if limit < 1:
        raise ValueError(f"`limit` must be >= 1, got {limit}.")
    shown = ", ".join(items[:limit])
    return shown if len(items) <= limit else f"{shown}, ... ({len(items)} in all)"
