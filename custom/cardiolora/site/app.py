"""The site application: segment cine MRI studies, write DICOM SEG and SR, NIfTI, a report, pictures.

``cardiolora segment STUDY_OR_FOLDER_OF_STUDIES --out DIR --model model.pt`` runs, per study
(:func:`~cardiolora.site.studies.find_studies`: DICOM files grouped by PatientID +
StudyInstanceUID, NIfTI files):

1. **read** — the study's short-axis cine (:func:`cardiolora.dicom.read_study`: stacks of one
   series per slice assembled, the series chosen by the rules or ``--series``, pixels read) or a
   NIfTI stack / cine (:func:`~cardiolora.site.nifti_io.read_nifti_cine`);
2. **segment** — every slice of every phase with the site's model
   (:func:`~cardiolora.site.model.load_site_model`: plain weights, or base + adapter merged once)
   through :func:`cardiolora.predict.predict_cine`, the bundle's own preprocessing and inferer
   with the phases batched, a tqdm bar per study;
3. **clean** — :func:`~cardiolora.site.postprocess.clean_labels` per phase;
4. **measure** — the volume curve, ED / ES from the LV curve, LV / RV EDV, ESV, SV, EF, LV mass,
   BSA-indexed values (:mod:`cardiolora.clinical`);
5. **write** — :func:`~cardiolora.site.outputs.write_outputs` into ``DIR/.<study>.tmp-<pid>``,
   then renamed to ``DIR/<study>`` (one rename: a reader never sees half an output)::

       DIR/<study>/report.json, report.csv      the report (JSON: everything; CSV: one row)
       DIR/<study>/seg/seg.dcm                   DICOM SEG, one object for the cine (DICOM input)
       DIR/<study>/sr/measurements.dcm           DICOM SR, TID 1500 measurements (DICOM input)
       DIR/<study>/nifti/image.nii.gz            the input cine (X, Y, Z, T)
       DIR/<study>/nifti/labels.nii.gz           labels (X, Y, Z, T); labels_ED / labels_ES (X, Y, Z)
       DIR/<study>/overlay_ed_es.png             ED and ES overlays across the slices
       DIR/<study>/volume_curve.png              LV / RV volume over the cycle, ED / ES marked

   A finished output is never overwritten: the study is refused (``status`` ``exists``), or with
   ``--overwrite`` the new output is written beside it and swapped in by renames (the old one is
   deleted only after the new one is in place).

**Statuses.** ``done`` only when every promised output exists; ``partial`` when the study was
written but a promised output (SEG, SR, pictures) is missing (the reason names it); ``skipped``
(bad input), ``exists``, ``failed`` (nothing could be written) and ``error`` (a bug).

**Batch.** When the input holds several studies, each is processed as above; a study with bad
input is skipped with its reason and the batch goes on. ``DIR/studies.csv`` lists every study and
``DIR/run.json`` the run (model, options, versions, counts).

**Exit codes** (:func:`exit_code`): 0 every study done; 4 a study partial; 3 a batch in which
some studies were skipped (bad input or existing output; the CSV says why); 2 bad input or
arguments (a single study that cannot be read, an existing output without ``--overwrite``, a
missing or incompatible model, a bad rules file, no study found); 1 an unexpected error or a
``failed`` study (the traceback is logged; a batch still finishes the other studies).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import traceback
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cardiolora.data.cine import CineStudy, nifti_affine
from cardiolora.dicom import (
    DEFAULT_MAX_BYTES,
    INCOMPLETE_POSITION_POLICIES,
    ScanResult,
    load_rules,
    read_study,
    select_short_axis_cine,
)
from cardiolora.errors import InputError
from cardiolora.site.nifti_io import read_nifti_cine
from cardiolora.site.outputs import report_row, write_outputs
from cardiolora.site.postprocess import clean_labels_with_notes
from cardiolora.site.studies import StudyInput, find_studies

if TYPE_CHECKING:
    from cardiolora.site.model import SiteModel

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_OK",
    "EXIT_PARTIAL",
    "EXIT_SKIPPED",
    "EXIT_UNEXPECTED",
    "BatchOutcome",
    "SegmentOptions",
    "clean_cine",
    "StudyInput",
    "StudyOutcome",
    "exit_code",
    "find_studies",
    "load_study",
    "segment_labels",
    "run_study",
    "run_segment",
]

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_UNEXPECTED = 1
EXIT_BAD_INPUT = 2
EXIT_SKIPPED = 3
EXIT_PARTIAL = 4


@dataclass(frozen=True)
class SegmentOptions:
    """Options of a run (the command's flags).

    Attributes:
        series: SeriesInstanceUID, SeriesNumber or SeriesDescription of the cine to use.
        incomplete_positions: ``"raise"`` or ``"drop"`` (see the reader).
        max_bytes: pixel-memory limit per study (``--max-gb``).
        overwrite: replace finished outputs (atomically).
        progress: show a tqdm bar per study.
        sw_batch_size: slices per forward pass.
        postprocess: apply the anatomical clean-up.
        series_rules: a series-selection rules file (``None``: the defaults,
            :data:`cardiolora.dicom.DEFAULT_RULES_FILE`).
        seg_per_phase: write one SEG instance per phase instead of one SEG object per study.
    """

    series: str | None = None
    incomplete_positions: str = "raise"
    max_bytes: int = DEFAULT_MAX_BYTES
    overwrite: bool = False
    progress: bool = True
    sw_batch_size: int = 8
    postprocess: bool = True
    series_rules: str | None = None
    seg_per_phase: bool = False

    def __post_init__(self) -> None:
        if self.incomplete_positions not in INCOMPLETE_POSITION_POLICIES:
            raise ValueError(
                f"`incomplete_positions` must be one of {list(INCOMPLETE_POSITION_POLICIES)}, "
                f"got {self.incomplete_positions!r}."
            )
        if isinstance(self.max_bytes, bool) or not isinstance(self.max_bytes, int) or self.max_bytes < 1:
            raise ValueError(f"`max_bytes` must be a positive integer, got {self.max_bytes!r}.")
        if isinstance(self.sw_batch_size, bool) or not isinstance(self.sw_batch_size, int) or self.sw_batch_size < 1:
            raise ValueError(f"`sw_batch_size` must be a positive integer, got {self.sw_batch_size!r}.")
        if self.series_rules is not None:
            load_rules(self.series_rules)  # a bad rules file is refused before any study is read


@dataclass
class StudyOutcome:
    """What happened to one study.

    Attributes:
        study: the input.
        status: ``done`` (every promised output written), ``partial`` (written, but a promised
            output is missing: `reason` names it and why), ``skipped`` (bad input), ``exists``
            (finished output kept), ``failed`` (the report itself could not be written: nothing
            kept) or ``error`` (unexpected).
        reason: why it was not done (empty when done).
        output: the study's output folder (done / exists).
        row: its CSV row values (see :data:`cardiolora.site.report.CSV_COLUMNS`).
    """

    study: StudyInput
    status: str
    reason: str = ""
    output: Path | None = None
    row: dict[str, Any] = field(default_factory=dict)


@dataclass
class BatchOutcome:
    """The outcome of a run.

    Attributes:
        outcomes: one per study, in input order.
        batch: True when the input was a folder of studies.
        csv: the batch CSV (batch runs only).
    """

    outcomes: list[StudyOutcome]
    batch: bool
    csv: Path | None = None

    @property
    def exit_code(self) -> int:
        """See :func:`exit_code`."""
        return exit_code(self.outcomes, self.batch)


def exit_code(outcomes: Sequence[StudyOutcome], batch: bool) -> int:
    """The command's exit code (module docstring).

    Args:
        outcomes: the studies' outcomes.
        batch: whether the input was a folder of studies.

    Returns:
        0 all done; 1 an unexpected error or a study whose report could not be written
        (``error`` / ``failed``); 4 a study with a promised output missing (``partial``); 2 a
        single study not done (or no study); 3 a batch with skipped studies.
    """
    statuses = [o.status for o in outcomes]
    if not statuses:
        return EXIT_BAD_INPUT
    if "error" in statuses or "failed" in statuses:
        return EXIT_UNEXPECTED
    if "partial" in statuses:
        return EXIT_PARTIAL
    if all(s == "done" for s in statuses):
        return EXIT_OK
    return EXIT_SKIPPED if batch else EXIT_BAD_INPUT


# --------------------------------------------------------------------------------------------
# finding studies
# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# one study
# --------------------------------------------------------------------------------------------


def load_study(study: StudyInput, options: SegmentOptions) -> CineStudy:
    """Read one study's cine.

    Args:
        study: the input.
        options: series choice, incomplete-positions policy, memory limit.

    Returns:
        The :class:`CineStudy` ``(T, Z, Y, X)``.

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
        if options.series is not None:
            raise InputError(f"{study.path}: --series applies to DICOM input, not to a NIfTI file.")
        return read_nifti_cine(study.path, options.max_bytes)
    if study.scan is None:
        empty = ScanResult(study.path, [], list(study.problems), list(study.skipped), 0)
        select_short_axis_cine(empty)  # raises "no DICOM image series found", naming the files left out
    return read_study(
        study.scan,  # type: ignore[arg-type]
        options.series,
        rules=options.series_rules,
        max_bytes=options.max_bytes,
        incomplete_positions=options.incomplete_positions,
        problems=study.problems,
        skipped=study.skipped,
        warnings=study.warnings,
    )


def segment_labels(
    cine: CineStudy, model: SiteModel, options: SegmentOptions, desc: str = "", notes: list[dict] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Segment every phase and clean the labels.

    Args:
        cine: the study.
        model: the site model.
        options: batch size, progress, post-processing.
        desc: progress bar label.
        notes: when given, the clean-up's notes are appended (see :func:`clean_cine`).

    Returns:
        ``(raw, cleaned)`` uint8 label maps ``(T, Z, Y, X)`` (``cleaned is raw`` without
        post-processing).
    """
    from tqdm.auto import tqdm

    from cardiolora.predict import predict_cine

    image_txyz = np.transpose(cine.image, (0, 3, 2, 1))
    bar = tqdm(total=cine.n_phases, desc=desc or cine.subject_id, unit="phase", disable=not options.progress)
    with bar, model.runner() as network:
        raw_txyz = predict_cine(
            network,
            image_txyz,
            nifti_affine(cine.affine_lps),
            model.profile,
            device=model.device,
            sw_batch_size=options.sw_batch_size,
            progress=bar.update,
            phase_workers=model.cpu_workers if model.device.type == "cpu" else 1,
        )
    raw = np.ascontiguousarray(np.transpose(raw_txyz, (0, 3, 2, 1)))
    if not options.postprocess:
        return raw, raw
    return raw, clean_cine(raw, notes=notes)


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


def _commit(tmp: Path, target: Path) -> None:
    """Move the finished `tmp` folder to `target`; an existing `target` is swapped out first.

    The old output is renamed aside, the new one renamed in, and only then is the old one
    deleted: at every moment one complete output exists under a known name.
    """
    if target.exists():
        aside = target.with_name(f".{target.name}.old-{os.getpid()}")
        if aside.exists():
            shutil.rmtree(aside)
        os.replace(target, aside)
        try:
            os.replace(tmp, target)
        except OSError:
            os.replace(aside, target)
            raise
        shutil.rmtree(aside, ignore_errors=True)
    else:
        os.replace(tmp, target)


def _existing_row(study: StudyInput, target: Path) -> dict[str, Any]:
    """The row of a finished output left as it is (numbers from its report when readable)."""
    try:
        report = json.loads((target / "report.json").read_text())
        row = report_row(report, target)
    except (OSError, ValueError):
        row = {"study": study.name, "input": str(study.path), "input_kind": study.kind, "output": str(target)}
    row["status"] = "exists"
    row["reason"] = f"{target} exists; a finished output is never overwritten (use --overwrite to replace it)"
    return row


def run_study(
    study: StudyInput, model: SiteModel, out_root: str | os.PathLike, options: SegmentOptions
) -> StudyOutcome:
    """Process one study into ``out_root/<study.name>`` (module docstring).

    Bad input never raises: it becomes a ``skipped`` outcome with the reader's message; an
    unexpected exception becomes an ``error`` outcome (traceback logged). Nothing is left behind
    by a study that fails (its temporary folder is removed).

    Args:
        study: the input.
        model: the site model.
        out_root: the run's output folder (created).
        options: the run options.

    Returns:
        The outcome.
    """
    root = Path(out_root)
    target = root / study.name
    base_row = {"study": study.name, "input": str(study.path), "input_kind": study.kind}
    if target.exists() and not options.overwrite:
        row = _existing_row(study, target)
        return StudyOutcome(study, "exists", row["reason"], target, row)
    tmp = root / f".{study.name}.tmp-{os.getpid()}"
    try:
        cine = load_study(study, options)
        clean_notes: list[dict] = []
        raw, labels = segment_labels(cine, model, options, desc=study.name, notes=clean_notes)
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        try:
            report = write_outputs(tmp, study, cine, model, raw, labels, options, clean_notes)
            _commit(tmp, target)
        except OSError as err:
            shutil.rmtree(tmp, ignore_errors=True)
            reason = f"the outputs could not be written ({err}); nothing was kept"
            logger.error("failed %s: %s", study.name, reason)
            return StudyOutcome(study, "failed", reason, None, {**base_row, "status": "failed", "reason": reason})
    except InputError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        logger.warning("skipped %s: %s", study.name, err)
        return StudyOutcome(study, "skipped", str(err), None, {**base_row, "status": "skipped", "reason": str(err)})
    except Exception as err:  # noqa: BLE001 - a bug must not lose the rest of a batch
        shutil.rmtree(tmp, ignore_errors=True)
        logger.error("unexpected error on %s:\n%s", study.name, traceback.format_exc())
        reason = f"unexpected {type(err).__name__}: {err}"
        return StudyOutcome(study, "error", reason, None, {**base_row, "status": "error", "reason": reason})
    status = report.get("status", "done")
    if status != "done":
        logger.warning("partial %s: %s", study.name, report.get("reason", ""))
    return StudyOutcome(study, status, report.get("reason", ""), target, report_row(report, target))


def run_segment(
    path: str | os.PathLike, out: str | os.PathLike, model: SiteModel, options: SegmentOptions
) -> BatchOutcome:
    """Segment a study or a folder of studies (the ``segment`` command without argument parsing).

    Args:
        path: a study (DICOM folder / file, NIfTI file) or a folder of studies.
        out: the output folder.
        model: the site model.
        options: the run options.

    Returns:
        The outcomes; for a batch, ``DIR/studies.csv`` and ``DIR/run.json`` are written.

    Raises:
        InputError: if `path` does not exist.
    """
    from cardiolora.site.report import now_iso, software_versions, write_csv, write_json

    studies, batch = find_studies(path)
    out_root = Path(out)
    outcomes = []
    for i, study in enumerate(studies):
        logger.info("study %d/%d: %s (%s)", i + 1, len(studies), study.name, study.path)
        outcomes.append(run_study(study, model, out_root, options))
    result = BatchOutcome(outcomes, batch)
    if batch:
        out_root.mkdir(parents=True, exist_ok=True)
        result.csv = write_csv([o.row for o in outcomes], out_root / "studies.csv")
        counts: dict[str, int] = {}
        for o in outcomes:
            counts[o.status] = counts.get(o.status, 0) + 1
        write_json(
            {
                "input": str(path),
                "created": now_iso(),
                "counts": counts,
                "exit_code": result.exit_code,
                "options": {k: getattr(options, k) for k in options.__dataclass_fields__},
                "model": model.describe(),
                "versions": software_versions(),
                "studies": [{"study": o.study.name, "status": o.status, "reason": o.reason} for o in outcomes],
            },
            out_root / "run.json",
        )
    return result
