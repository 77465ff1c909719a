"""The site application on a PACS: studies in over DICOMweb, SEG and SR back, a watch mode, a state file.

``cardiolora segment --dicomweb URL --study UID --out DIR --model model.pt`` (or a query:
``--patient-id``, ``--study-date``) processes each study in four steps:

1. **retrieve**: QIDO-RS lists the study's series and instances, WADO-RS retrieves its image
   series into ``DIR/.dicomweb-input/<StudyInstanceUID>`` (:meth:`DicomWebServer.retrieve_study`:
   written beside and renamed, so a partial study never reaches the pipeline);
2. **segment**: the site application's own :func:`cardiolora.site.app.run_study` on that folder,
   into ``DIR/<StudyInstanceUID>`` (report, NIfTI, SEG, SR, pictures as for a local study);
3. **store**: the SEG and SR go back into the study by STOW-RS, and the answer is checked;
4. **record**: ``report.json`` gets a ``dicomweb`` block (server, instances retrieved, UIDs
   stored), the state file an entry; the retrieved input is removed.

**Statuses** are the site application's: ``done`` only when every promised output was written
**and** stored; ``partial`` when the outputs were written but a promised one is missing or the
STOW-RS failed (the reason says which; the local outputs stay); ``failed`` when the study could not
be retrieved (a named :class:`~cardiolora.site.dicomweb.DicomWebError`: nothing is written and
nothing stored); ``skipped`` / ``error`` as for local input (nothing stored); ``exists`` when the
state file (or the output folder) shows the study was processed before.

**State file** (``DIR/dicomweb_state.json`` unless ``--state``; written atomically after every
change): ``{"server", "studies": {StudyInstanceUID: {"status", "reason", "time", "output",
"stored": {"seg": [SOPInstanceUIDs], "sr": SOPInstanceUID}, "attempts"}}}``. A study in it is
never processed again, whatever its status; one whose entry still says ``started`` (the process
was killed mid-study) is marked ``failed`` ("interrupted") when the state is loaded, never
silently redone (its SEG may already be stored). **Retry**: ``--retry-failed`` processes the
studies recorded as not ``done`` once more in this run (their local output is replaced; earlier
attempts stay in the entry's ``history``).

**Watch mode** (``--watch``): every ``--interval`` seconds a QIDO-RS search with the query finds
the matching studies and the new ones are processed; a failed search is logged and tried again at
the next poll. SIGINT / SIGTERM stop it after the current study (the state is always consistent).
``--max-polls N`` stops after N polls (``--once`` = 1).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom.uid

from cardiolora.atomic import write_json
from cardiolora.site.dicomweb import DicomWebError, DicomWebServer
from cardiolora.site.report import now_iso

__all__ = ["INPUT_FOLDER", "STATE_FILE", "PacsOutcome", "PacsQuery", "PacsState", "process_study", "run_pacs"]

logger = logging.getLogger(__name__)

#: Default state file name inside the output folder.
STATE_FILE = "dicomweb_state.json"
#: Where retrieved studies are put (inside the output folder) while they are processed.
INPUT_FOLDER = ".dicomweb-input"


@dataclass(frozen=True)
class PacsQuery:
    """Which studies of the server to process.

    Attributes:
        study_uids: StudyInstanceUIDs (``--study``, repeatable).
        patient_id: PatientID (``--patient-id``; whether ``*`` ``?`` are wildcards is up to the server).
        study_date: StudyDate or range (``--study-date``, :func:`~cardiolora.site.dicomweb.check_date_range`).
    """

    study_uids: tuple[str, ...] = ()
    patient_id: str | None = None
    study_date: str | None = None

    def __post_init__(self) -> None:
        if not (self.study_uids or self.patient_id or self.study_date):
            raise ValueError("--dicomweb needs --study UID or a query (--patient-id, --study-date).")
        bad = [u for u in self.study_uids if not pydicom.uid.UID(u).is_valid]
        if bad:
            raise ValueError(f"--study {bad[0]!r} is not a valid UID (digits and dots, at most 64 characters).")

    def describe(self) -> dict[str, Any]:
        """The query as the state file records it."""
        return {"study_uids": list(self.study_uids), "patient_id": self.patient_id, "study_date": self.study_date}


@dataclass
class PacsOutcome:
    """What happened to one study of the server.

    Attributes:
        study_uid: its StudyInstanceUID.
        status: ``done``, ``partial``, ``failed``, ``skipped``, ``exists`` or ``error`` (module docstring).
        reason: why it is not done (empty when done).
        output: its output folder (when written).
        stored: ``{"seg": [SOPInstanceUIDs], "sr": SOPInstanceUID}`` of what STOW-RS stored.
    """

    study_uid: str
    status: str
    reason: str = ""
    output: Path | None = None
    stored: dict[str, Any] = field(default_factory=dict)


class PacsState:
    """The state file: what was done to each study (module docstring).

    Args:
        path: the JSON file (created at the first change).
        server: the DICOMweb root (recorded; a state file of another server is refused).

    Raises:
        ValueError: the file is unreadable, not a state file, or belongs to another server.
    """

    def __init__(self, path: str | os.PathLike, server: str) -> None:
        self.path = Path(path)
        self.server = server
        self.data: dict[str, Any] = {"server": server, "studies": {}}
        if self.path.exists():
            try:
                data = json.loads(self.path.read_text())
            except (OSError, ValueError) as err:
                raise ValueError(f"--state {self.path}: not a readable JSON state file ({err}).") from None
            if not isinstance(data, dict) or not isinstance(data.get("studies"), dict):
                raise ValueError(f"--state {self.path}: not a state file (no `studies` object).")
            if data.get("server") != server:
                raise ValueError(
                    f"--state {self.path}: records server {data.get('server')!r}, not {server!r}; use another --state."
                )
            self.data = data
        interrupted = [u for u, e in self.studies.items() if e.get("status") == "started"]
        for uid in interrupted:
            entry = self.studies[uid]
            entry.update(
                status="failed",
                reason=f"interrupted: the process stopped while processing it "
                f"(started {entry.get('time')}); --retry-failed processes it again",
            )
        if interrupted:
            self.save()

    @property
    def studies(self) -> dict[str, dict[str, Any]]:
        """StudyInstanceUID -> entry."""
        return self.data["studies"]

    def save(self) -> None:
        """Write the state atomically."""
        write_json(self.data, self.path, indent=1, trailing_newline=True)

    def record(self, uid: str, status: str, **values: Any) -> None:
        """Set a study's entry (keeping its attempts and history) and save."""
        entry = self.studies.setdefault(uid, {"attempts": 0, "history": []})
        if status == "started":
            entry["attempts"] = int(entry.get("attempts", 0)) + 1
            entry.pop("retry", None)
        entry.update(status=status, time=now_iso(), **values)
        self.save()

    def release_not_done(self) -> list[str]:
        """For ``--retry-failed``: forget the statuses of studies not ``done`` (kept in ``history``).

        Returns:
            The StudyInstanceUIDs released.
        """
        released = []
        for uid, entry in self.studies.items():
            if entry.get("status") != "done" and "retry" not in entry:
                entry.setdefault("history", []).append(
                    {k: entry.get(k) for k in ("status", "reason", "time", "output", "stored")}
                )
                entry["retry"] = True
                released.append(uid)
        if released:
            self.save()
        return released

    def is_pending(self, uid: str) -> bool:
        """Whether the study is to be processed (not recorded, or released for a retry)."""
        entry = self.studies.get(uid)
        return entry is None or bool(entry.get("retry"))


def _promised_files(output: Path, report: dict[str, Any]) -> list[Path]:
    """The SEG and SR files of a study's output (SEG first: the SR references it)."""
    outputs = report.get("outputs") or {}
    files = [output / p for p in outputs.get("dicom_seg") or []]
    if outputs.get("dicom_sr"):
        files.append(output / outputs["dicom_sr"])
    return files


def process_study(
    server: DicomWebServer, study_uid: str, workflow: Any, out: str | os.PathLike, overwrite: bool = False
) -> PacsOutcome:
    """Retrieve, segment, store and record one study (module docstring, steps 1-4 but the state).

    Args:
        server: the DICOMweb server.
        study_uid: the StudyInstanceUID.
        workflow: the site-inference bundle's workflow (:func:`cardiolora.site.workflow.load_workflow`).
        out: the output folder.
        overwrite: replace the study's local output if it exists (a retry).

    Returns:
        The outcome; a :class:`~cardiolora.site.dicomweb.DicomWebError` becomes a ``failed`` outcome
        whose reason is the error's message.
    """
    from cardiolora.site.app import run_study
    from cardiolora.site.studies import find_studies

    root = Path(out)
    work = root / INPUT_FOLDER / _folder_name(study_uid)
    shutil.rmtree(work, ignore_errors=True)  # a left-over of a killed run: retrieved again, whole
    try:
        try:
            retrieved = server.retrieve_study(study_uid, work)
        except DicomWebError as err:
            logger.error("failed %s: %s", study_uid, err)
            return PacsOutcome(study_uid, "failed", str(err))
        studies, _ = find_studies(work)
        if len(studies) != 1:
            reason = f"the retrieved instances hold {len(studies)} studies, not one ({[s.name for s in studies]})"
            return PacsOutcome(study_uid, "skipped", reason)
        study = dataclasses.replace(studies[0], name=_folder_name(study_uid))
        wf = workflow
        if overwrite and not workflow.overwrite:
            wf = copy.copy(workflow)
            wf.overwrite = True
        outcome = run_study(study, wf, root)
        if outcome.status not in ("done", "partial") or outcome.output is None:
            return PacsOutcome(study_uid, outcome.status, outcome.reason, outcome.output)
        report_path = outcome.output / "report.json"
        report = json.loads(report_path.read_text())
        files = _promised_files(outcome.output, report)
        stored: dict[str, Any] = {}
        status, reason, store_error = outcome.status, outcome.reason, ""
        block: dict[str, Any] = {
            "url": server.url,
            "study_instance_uid": study_uid,
            "retrieved_instances": retrieved.n_instances,
            "retrieved_series": retrieved.series,
            "skipped_series": retrieved.skipped_series,
        }
        if files:
            try:
                uids = server.store(study_uid, files)
                stored = {"seg": uids[: len(report["outputs"].get("dicom_seg") or [])]}
                if report["outputs"].get("dicom_sr"):
                    stored["sr"] = uids[-1]
            except DicomWebError as err:
                store_error = str(err)
                status = "partial"
                reason = "; ".join(r for r in (reason, f"dicomweb_store not done: {err}") if r)
                logger.error("partial %s: %s", study_uid, reason)
        block["stored"] = stored
        report["dicomweb"] = block
        if store_error:
            report["status"], report["reason"] = status, reason
            report.setdefault("missing_outputs", {})["dicomweb_store"] = store_error
        write_json(report, report_path, indent=1, trailing_newline=True)
        return PacsOutcome(study_uid, status, reason, outcome.output, stored)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if (root / INPUT_FOLDER).exists() and not any((root / INPUT_FOLDER).iterdir()):
            (root / INPUT_FOLDER).rmdir()


def _folder_name(study_uid: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in study_uid)


def _selected(server: DicomWebServer, query: PacsQuery) -> list[str]:
    """The StudyInstanceUIDs the query selects (named studies as given; a query in the server's date order)."""
    if query.study_uids and not (query.patient_id or query.study_date):
        return list(dict.fromkeys(query.study_uids))  # named studies: asked for even if QIDO-RS misses them
    return [s["study_uid"] for s in server.find_studies(query.patient_id, query.study_date, query.study_uids)]


def run_pacs(
    server: DicomWebServer,
    query: PacsQuery,
    workflow: Any,
    out: str | os.PathLike,
    state_file: str | os.PathLike | None = None,
    *,
    watch: bool = False,
    interval: float = 60.0,
    max_polls: int | None = None,
    retry_failed: bool = False,
    stop: threading.Event | None = None,
    report: Any = None,
) -> list[PacsOutcome]:
    """Process the studies a query selects (once, or polling in watch mode); record each in the state.

    Args:
        server: the DICOMweb server.
        query: which studies.
        workflow: the site-inference bundle's workflow.
        out: the output folder.
        state_file: the state file (default ``out/dicomweb_state.json``).
        watch: poll every `interval` seconds until `stop` is set or `max_polls` polls were made.
        interval: seconds between polls (> 0).
        max_polls: stop after this many polls (watch mode; ``None``: until stopped).
        retry_failed: process the studies recorded as not done once more.
        stop: an event that ends the run after the current study (set by SIGINT / SIGTERM).
        report: called with each :class:`PacsOutcome` as it is recorded (the command prints it).

    Returns:
        The outcomes of the studies this run looked at (``exists`` for studies named by ``--study``
        that the state shows were processed before).

    Raises:
        DicomWebError: the first search failed when not watching (in watch mode it is logged and
            retried at the next poll).
        ValueError: a bad interval / max_polls, or a bad state file.
    """
    if interval <= 0:
        raise ValueError(f"--interval must be positive, got {interval}.")
    if max_polls is not None and max_polls < 1:
        raise ValueError(f"--max-polls must be >= 1, got {max_polls}.")
    root = Path(out)
    state = PacsState(state_file if state_file is not None else root / STATE_FILE, server.url)
    state.data["query"] = query.describe()
    state.save()  # the run's query is on record from its start
    if retry_failed:
        released = state.release_not_done()
        logger.info("--retry-failed: %d studies recorded as not done are processed again", len(released))
    stop = stop if stop is not None else threading.Event()
    outcomes: list[PacsOutcome] = []
    polls = 0
    while not stop.is_set():
        polls += 1
        try:
            selected = _selected(server, query)
        except DicomWebError as err:
            if not watch:
                raise
            logger.warning("poll %d: %s; trying again in %g s", polls, err, interval)
            selected = []
        pending = [u for u in selected if state.is_pending(u)]
        if not watch:  # a one-off run says what it left alone; a watcher skips them silently
            for uid in (u for u in selected if u not in pending):
                e = state.studies[uid]
                reason = (
                    f"processed before: {e.get('status')} at {e.get('time')} (state file {state.path}); "
                    "--retry-failed processes a study not done again"
                )
                outcomes.append(PacsOutcome(uid, "exists", reason, Path(e["output"]) if e.get("output") else None))
                if report:
                    report(outcomes[-1])
        for uid in pending:
            if stop.is_set():
                break
            retry = bool(state.studies.get(uid, {}).get("retry"))
            state.record(uid, "started", reason="")
            started = time.monotonic()
            try:
                outcome = process_study(server, uid, workflow, root, overwrite=retry)
            except Exception as err:  # noqa: BLE001 - one study's bug must not stop the watcher
                logger.exception("unexpected error on %s", uid)
                outcome = PacsOutcome(uid, "error", f"unexpected {type(err).__name__}: {err}")
            state.record(
                uid,
                outcome.status,
                reason=outcome.reason,
                output=None if outcome.output is None else str(outcome.output),
                stored=outcome.stored,
                seconds=round(time.monotonic() - started, 1),
            )
            outcomes.append(outcome)
            if report:
                report(outcome)
        if not watch or (max_polls is not None and polls >= max_polls):
            break
        stop.wait(interval)
    return outcomes


def summary_line(outcome: PacsOutcome) -> str:
    """One printed line per study: ``status UID -> folder: reason``."""
    where = f" -> {outcome.output}" if outcome.output else ""
    stored = ""
    if outcome.stored:
        stored = f" (stored SEG {', '.join(outcome.stored.get('seg', []))}" + (
            f", SR {outcome.stored['sr']})" if outcome.stored.get("sr") else ")"
        )
    return f"{outcome.status:8s} {outcome.study_uid}{where}{stored}" + (f": {outcome.reason}" if outcome.reason else "")


def exit_status(outcomes: Sequence[PacsOutcome], watch: bool = False) -> int:
    """The command's exit code for a DICOMweb run.

    Args:
        outcomes: the run's outcomes.
        watch: whether it was a watch run (where no new study is not an error).

    Returns:
        As :func:`cardiolora.site.app.exit_code` (several studies count as a batch); 0 for a
        watch run that found nothing new.
    """
    from cardiolora.site.app import EXIT_OK, exit_code

    if watch and not outcomes:
        return EXIT_OK
    return exit_code(outcomes, batch=len(outcomes) != 1)  # type: ignore[arg-type]
