"""The site application: the batch around the site-inference bundle (studies, commit, outcomes, exit codes).

``cardiolora segment STUDY_OR_FOLDER_OF_STUDIES --out DIR --model model.pt`` finds the studies
(:func:`~cardiolora.site.studies.find_studies`: DICOM files grouped by PatientID +
StudyInstanceUID, NIfTI files) and runs the bundle's workflow on each
(``inference/configs/inference.json``, :class:`~cardiolora.site.workflow.StudyWorkflow`: read ->
network -> inferer -> clean-up -> measures -> writers) into ``DIR/.<study>.tmp-<pid>``, then
renames it to ``DIR/<study>`` (one rename: a reader never sees half an output)::

       DIR/<study>/report.json, report.csv      the report (JSON: everything; CSV: one row)
       DIR/<study>/seg/seg.dcm                   DICOM SEG, one object for the cine (DICOM input)
       DIR/<study>/sr/measurements.dcm           DICOM SR, TID 1500 measurements (DICOM input)
       DIR/<study>/nifti/image.nii.gz            the input cine (X, Y, Z, T)
       DIR/<study>/nifti/labels.nii.gz           labels (X, Y, Z, T); labels_ED / labels_ES (X, Y, Z)
       DIR/<study>/overlay_ed_es.png             ED and ES overlays across the slices
       DIR/<study>/volume_curve.png              LV / RV volume over the cycle, ED / ES marked

A finished output is never overwritten: the study is refused (``status`` ``exists``), or with
``overwrite`` the new output is written beside it and swapped in by renames (the old one is
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cardiolora.atomic import write_json
from cardiolora.errors import InputError
from cardiolora.site.outputs import report_row
from cardiolora.site.report import now_iso, software_versions, write_csv
from cardiolora.site.studies import StudyInput, find_studies
from cardiolora.site.workflow import StudyWorkflow

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_OK",
    "EXIT_PARTIAL",
    "EXIT_SKIPPED",
    "EXIT_UNEXPECTED",
    "BatchOutcome",
    "StudyInput",
    "StudyOutcome",
    "exit_code",
    "find_studies",
    "run_study",
    "run_segment",
]

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_UNEXPECTED = 1
EXIT_BAD_INPUT = 2
EXIT_SKIPPED = 3
EXIT_PARTIAL = 4


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


def run_study(study: StudyInput, workflow: StudyWorkflow, out_root: str | os.PathLike) -> StudyOutcome:
    """Process one study into ``out_root/<study.name>`` (module docstring).

    Bad input never raises: it becomes a ``skipped`` outcome with the reader's message; an
    unexpected exception becomes an ``error`` outcome (traceback logged). Nothing is left behind
    by a study that fails (its temporary folder is removed).

    Args:
        study: the input.
        workflow: the bundle's workflow (:func:`cardiolora.site.workflow.load_workflow`).
        out_root: the run's output folder (created).

    Returns:
        The outcome.
    """
    root = Path(out_root)
    target = root / study.name
    base_row = {"study": study.name, "input": str(study.path), "input_kind": study.kind}
    if target.exists() and not workflow.overwrite:
        row = _existing_row(study, target)
        return StudyOutcome(study, "exists", row["reason"], target, row)
    tmp = root / f".{study.name}.tmp-{os.getpid()}"
    try:
        segmented = workflow.segment(study)
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        try:
            report = workflow.write(segmented, tmp)
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


def run_segment(path: str | os.PathLike, out: str | os.PathLike, workflow: StudyWorkflow) -> BatchOutcome:
    """Segment a study or a folder of studies with the bundle's workflow (the ``segment`` command
    without argument parsing, and the site-inference bundle's ``run``).

    Args:
        path: a study (DICOM folder / file, NIfTI file) or a folder of studies.
        out: the output folder.
        workflow: the bundle's workflow (:func:`cardiolora.site.workflow.load_workflow`).

    Returns:
        The outcomes; for a batch, ``DIR/studies.csv`` and ``DIR/run.json`` are written.

    Raises:
        InputError: if `path` does not exist.
    """
    studies, batch = find_studies(path)
    out_root = Path(out)
    outcomes = []
    for i, study in enumerate(studies):
        logger.info("study %d/%d: %s (%s)", i + 1, len(studies), study.name, study.path)
        outcomes.append(run_study(study, workflow, out_root))
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
                "options": workflow.options(),
                "model": workflow.model.describe(),
                "versions": software_versions(),
                "studies": [{"study": o.study.name, "status": o.status, "reason": o.reason} for o in outcomes],
            },
            out_root / "run.json",
            indent=1,
            trailing_newline=True,
        )
    return result
