"""The site-inference bundle's workflow: the stage chain for one study, and the bundle loader.

``inference/configs/inference.json`` declares the stages, each an object with a ``_target_``:

    reader (:class:`~cardiolora.site.reader.StudyReader`)
    -> network (:func:`~cardiolora.site.model.load_site_model` of the LoRA bundle's ``network_def``)
    -> inferer (:class:`~cardiolora.site.inferer.CineInferer`)
    -> postprocessing (:class:`~cardiolora.site.cleanup.CineCleanup`)
    -> measures (:class:`~cardiolora.site.measures.ClinicalMeasures`)
    -> writers (:class:`~cardiolora.site.outputs.StudyWriter`: report, NIfTI, SEG, SR, pictures)

and ``workflow`` (:class:`StudyWorkflow`) chains them for one study. :func:`load_workflow` parses
the bundle with overrides (what ``cardiolora segment`` does with its flags); the bundle's ``run``
is :func:`cardiolora.site.app.run_segment`, the same call the command makes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from monai.bundle import ConfigParser

from cardiolora.data.cine import CineStudy
from cardiolora.paths import inference_bundle_dir
from cardiolora.site.cleanup import CineCleanup
from cardiolora.site.inferer import CineInferer
from cardiolora.site.measures import ClinicalMeasures
from cardiolora.site.model import SiteModel
from cardiolora.site.outputs import StudyWriter
from cardiolora.site.reader import StudyReader
from cardiolora.site.studies import StudyInput

__all__ = ["Segmented", "StudyWorkflow", "load_workflow"]


@dataclass
class Segmented:
    """A study after the reader, inferer, clean-up and measures (what the writers take)."""

    study: StudyInput
    cine: CineStudy
    raw: np.ndarray
    labels: np.ndarray
    measures: dict[str, Any]
    notes: list[dict[str, Any]] = field(default_factory=list)


class StudyWorkflow:
    """One study through the stage chain, its outputs written into a folder.

    Args:
        reader: the study reader.
        inferer: the inferer (holds the site model).
        postprocessing: the clean-up.
        measures: the clinical measures.
        writers: the output writers.
        overwrite: replace finished outputs (used by :func:`cardiolora.site.app.run_study`).

    Example:
        >>> workflow = load_workflow({"model": "model.pt", "progress": False})  # doctest: +SKIP
        >>> report = workflow(study, folder)  # doctest: +SKIP
    """

    def __init__(
        self,
        reader: StudyReader,
        inferer: CineInferer,
        postprocessing: CineCleanup,
        measures: ClinicalMeasures,
        writers: StudyWriter,
        overwrite: bool = False,
    ) -> None:
        self.reader = reader
        self.inferer = inferer
        self.postprocessing = postprocessing
        self.measures = measures
        self.writers = writers
        self.overwrite = bool(overwrite)

    @property
    def model(self) -> SiteModel:
        """The site model the inferer runs."""
        return self.inferer.model

    def segment(self, study: StudyInput) -> Segmented:
        """Read, segment, clean and measure `study` (everything but the writing).

        Raises:
            InputError: for bad input (from the reader), naming the file or series.
        """
        cine = self.reader(study)
        raw = self.inferer(cine, desc=study.name)
        labels, notes = self.postprocessing(raw)
        return Segmented(study, cine, raw, labels, self.measures(cine, labels), notes)

    def write(self, segmented: Segmented, folder: Path) -> dict[str, Any]:
        """Write a segmented study's outputs into `folder` (created by the caller); returns the report.

        Raises:
            OSError: if the outputs cannot be written.
        """
        s = segmented
        return self.writers(folder, s.study, s.cine, s.raw, s.labels, s.measures, s.notes, self.postprocessing.enabled)

    def __call__(self, study: StudyInput, folder: Path) -> dict[str, Any]:
        """The chain for one study: :meth:`segment`, then :meth:`write` into `folder`."""
        return self.write(self.segment(study), folder)

    def options(self) -> dict[str, Any]:
        """The run's options as ``run.json`` lists them."""
        return {
            "series": self.reader.series,
            "incomplete_positions": self.reader.incomplete_positions,
            "max_bytes": self.reader.max_bytes,
            "overwrite": self.overwrite,
            "progress": self.inferer.progress,
            "sw_batch_size": self.inferer.sw_batch_size,
            "postprocess": self.postprocessing.enabled,
            "series_rules": self.reader.series_rules,
            "seg_per_phase": self.writers.seg_per_phase,
        }


def _input_error(err: BaseException) -> BaseException | None:
    """The first ValueError (InputError, ModelError ...) in the chain of a config-parsing error."""
    seen: set[int] = set()
    cur: BaseException | None = err
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, ValueError):
            return cur
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return None


def load_workflow(
    overrides: Mapping[str, Any] | None = None,
    config_file: str | os.PathLike | None = None,
    key: str = "workflow",
) -> Any:
    """Parse the site-inference bundle with `overrides` and build one of its objects.

    Args:
        overrides: top-level keys of ``configs/inference.json`` (the segment options) and their
            values; ``None`` values are ignored (the bundle's default stays).
        config_file: the config (default: the one shipped with the package,
            :func:`cardiolora.paths.inference_bundle_dir`).
        key: the object to build (``workflow``; or a stage such as ``reader``).

    Returns:
        The object (a :class:`StudyWorkflow` for ``workflow``).

    Raises:
        ValueError: a stage refused its arguments (bad option, missing or incompatible model:
            the stage's own error, e.g. :class:`~cardiolora.site.model.ModelError`); or an
            override names no key of the config.
    """
    path = Path(config_file) if config_file is not None else inference_bundle_dir() / "configs" / "inference.json"
    parser = ConfigParser()
    parser.read_config(str(path))
    declared = parser["segment_options"]
    values = {k: v for k, v in (overrides or {}).items() if v is not None}
    unknown = sorted(set(values) - set(declared))
    if unknown:
        raise ValueError(f"{path}: unknown options {unknown}; known: {sorted(declared)}.")
    parser["bundle_root"] = str(path.parent.parent)
    parser.update(values)
    try:
        return parser.get_parsed_content(key)
    except Exception as err:
        cause = _input_error(err)
        if cause is not None and cause is not err:
            raise cause from None
        raise
