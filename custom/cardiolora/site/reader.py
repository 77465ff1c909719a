"""Stage 1 of the site-inference bundle: the study reader (DICOM or NIfTI in, a cine out).

:class:`StudyReader` is the ``reader`` of ``inference/configs/inference.json``: a study found by
:func:`~cardiolora.site.studies.find_studies` is read with :func:`cardiolora.dicom.read_study`
(series chosen by the rules or ``series``, stacks of one series per slice assembled) or
:func:`~cardiolora.site.nifti_io.read_nifti_cine`.
"""

from __future__ import annotations

import os

from cardiolora.data.cine import CineStudy
from cardiolora.dicom import INCOMPLETE_POSITION_POLICIES, ScanResult, load_rules, read_study, select_short_axis_cine
from cardiolora.errors import InputError
from cardiolora.site.nifti_io import read_nifti_cine
from cardiolora.site.studies import StudyInput

__all__ = ["StudyReader"]


class StudyReader:
    """Read one study's short-axis cine.

    Args:
        series: SeriesInstanceUID, SeriesNumber or SeriesDescription of the cine (DICOM only;
            ``None``: chosen by the rules).
        series_rules: a series-selection rules file (``None``: the package's defaults); a bad
            file is refused here, before any study is read.
        max_gb: pixel-memory limit per study in GiB, > 0.
        incomplete_positions: ``"raise"`` or ``"drop"`` (see :func:`cardiolora.dicom.read_study`).

    Raises:
        ValueError: if `max_gb` is not positive or `incomplete_positions` is unknown;
            :class:`~cardiolora.errors.InputError` for a bad rules file.

    Example:
        >>> cine = StudyReader(None, None, 2.0, "raise")(study)  # doctest: +SKIP
    """

    def __init__(
        self,
        series: str | int | None,
        series_rules: str | os.PathLike | None,
        max_gb: float,
        incomplete_positions: str,
    ) -> None:
        if isinstance(max_gb, bool) or not isinstance(max_gb, (int, float)) or not float(max_gb) > 0:
            raise ValueError(f"--max-gb must be positive, got {max_gb!r} (`max_gb`).")
        if incomplete_positions not in INCOMPLETE_POSITION_POLICIES:
            raise ValueError(
                f"`incomplete_positions` must be one of {list(INCOMPLETE_POSITION_POLICIES)}, "
                f"got {incomplete_positions!r}."
            )
        self.series = None if series is None else str(series)
        self.series_rules = None if series_rules is None else str(series_rules)
        self.max_bytes = max(1, int(float(max_gb) * 1024**3))
        self.incomplete_positions = incomplete_positions
        if self.series_rules is not None:
            load_rules(self.series_rules)  # a bad rules file is refused before any study is read

    def __call__(self, study: StudyInput) -> CineStudy:
        """The study's cine ``(T, Z, Y, X)``.

        Raises:
            InputError: naming the file or series, for every kind of bad input (see the reader
                and :func:`~cardiolora.site.nifti_io.read_nifti_cine`); also for a loose non-study
                file in a batch folder.
        """
        if study.kind == "other":
            raise InputError(
                f"{study.path}: not a study (a loose file in a batch folder; a study is a subfolder or a NIfTI file)."
            )
        if study.kind == "nifti":
            if self.series is not None:
                raise InputError(f"{study.path}: --series applies to DICOM input, not to a NIfTI file.")
            return read_nifti_cine(study.path, self.max_bytes)
        if study.scan is None:
            empty = ScanResult(study.path, [], list(study.problems), list(study.skipped), 0)
            select_short_axis_cine(empty)  # raises "no DICOM image series found", naming the files left out
        return read_study(
            study.scan,  # type: ignore[arg-type]
            self.series,
            rules=self.series_rules,
            max_bytes=self.max_bytes,
            incomplete_positions=self.incomplete_positions,
            problems=study.problems,
            skipped=study.skipped,
            warnings=study.warnings,
        )
