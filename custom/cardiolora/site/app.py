"""The site application: segment cine MRI studies, write DICOM SEG, NIfTI, a report and pictures.

``cardiolora segment STUDY_OR_FOLDER_OF_STUDIES --out DIR --model model.pt`` runs, per study:

1. **read** — a DICOM folder (any nesting; the short-axis cine is picked by
   :func:`~cardiolora.dicom.read_short_axis_cine`, or named with ``--series``) or a
   NIfTI stack / cine (:func:`~cardiolora.site.nifti_io.read_nifti_cine`);
2. **segment** — every slice of every phase with the site's model
   (:func:`~cardiolora.site.model.load_site_model`: plain weights, or base + adapter merged once)
   through :func:`cardiolora.predict.predict_cine`, the bundle's own preprocessing and inferer
   with the phases batched, a tqdm bar per study;
3. **clean** — :func:`~cardiolora.site.postprocess.clean_labels` per phase (largest component,
   myocardium between the cavities, holes filled);
4. **measure** — the volume curve, ED / ES from the LV curve, LV / RV EDV, ESV, SV, EF, LV mass,
   BSA-indexed values (:mod:`cardiolora.clinical`);
5. **write** — into ``DIR/.<study>.tmp-<pid>``, then renamed to ``DIR/<study>`` (one rename:
   a reader never sees half an output)::

       DIR/<study>/report.json, report.csv      the report (JSON: everything; CSV: one row)
       DIR/<study>/seg/phase_<t>.dcm             DICOM SEG series, one instance per phase (DICOM input)
       DIR/<study>/nifti/image.nii.gz            the input cine (X, Y, Z, T)
       DIR/<study>/nifti/labels.nii.gz           labels (X, Y, Z, T); labels_ED / labels_ES (X, Y, Z)
       DIR/<study>/overlay_ed_es.png             ED and ES overlays across the slices
       DIR/<study>/volume_curve.png              LV / RV volume over the cycle, ED / ES marked

   A finished output is never overwritten: the study is refused (``status`` ``exists``), or with
   ``--overwrite`` the new output is written beside it and swapped in by renames (the old one is
   deleted only after the new one is in place).

**Batch.** When the input is a folder of studies (rule in :func:`find_studies`), each study is
processed as above; a study with bad input is skipped with its reason and the batch goes on.
``DIR/studies.csv`` lists every study (done, skipped, exists, error) and ``DIR/run.json`` the run
(model, options, versions, counts).

**Exit codes** (:func:`exit_code`): 0 every study done; 3 a batch in which some studies were
skipped (bad input or existing output; the CSV says why); 2 bad input or arguments (a single
study that cannot be read, an existing output without ``--overwrite``, a missing or incompatible
model, no study found); 1 an unexpected error (a bug: the traceback is logged, a batch still
finishes the other studies).
"""

from __future__ import annotations

import dataclasses
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
    StudyScan,
    load_rules,
    read_study,
    scan_folder,
    select_short_axis_cine,
)
from cardiolora.errors import InputError, Problem
from cardiolora.site.nifti_io import is_nifti, nifti_study_name, read_nifti_cine, write_nifti_outputs

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

#: Trigger times of one phase that differ by more than this across slices are worth a warning.
TRIGGER_SPREAD_WARN_MS = 50.0
_HEADER_PROBES = 20  # files tried per folder when looking for a DICOM header


@dataclass(frozen=True)
class StudyInput:
    """One study to process.

    Attributes:
        name: output folder name (unique within a run).
        path: the DICOM folder / file or the NIfTI file.
        kind: ``"dicom"``, ``"nifti"`` or ``"other"`` (a loose file in a batch folder: skipped).
        scan: for DICOM, the study as the folder scan found it (PatientID + StudyInstanceUID);
            ``None`` when the scan found no image series there.
        problems: files the scan left out that lie in this study's folder.
        skipped: files the scan skipped on purpose (DICOMDIR, non-image instances).
        warnings: pydicom's warnings during the scan, one line per kind.
    """

    name: str
    path: Path
    kind: str
    scan: StudyScan | None = None
    problems: tuple[Problem, ...] = ()
    skipped: tuple[Problem, ...] = ()
    warnings: tuple[str, ...] = ()


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


def _visible(entries: Sequence[Path]) -> list[Path]:
    return sorted(p for p in entries if not p.name.startswith("."))


def _safe_name(text: str) -> str:
    """`text` as a folder name (letters, digits, ``-``, ``_``, ``.``)."""
    cleaned = "".join(c if c.isalnum() or c in "-_." else "_" for c in text).strip("._")
    return cleaned or "study"


def _top_folder(path: Path, root: Path) -> str:
    """The first folder below `root` on the way to `path` (``""`` for files at the top)."""
    parts = path.relative_to(root).parts if path != root else ()
    return parts[0] if len(parts) > 1 else ""


def _inside(path: Path, folder: Path) -> bool:
    return folder == path or folder in path.parents


def _dicom_studies(root: Path, scan: ScanResult) -> list[StudyInput]:
    """One :class:`StudyInput` per (PatientID, StudyInstanceUID) that the scan of `root` found.

    A study's name is the subfolder of `root` that holds all its files when that subfolder
    holds no other study, else ``<PatientID>_<end of the StudyInstanceUID>``. Files the scan
    left out go to the study whose subfolder holds them.
    """
    found = scan.studies()
    homes = []
    for study in found:
        tops = {_top_folder(p, root) for p in study.files}
        homes.append(next(iter(tops)) if len(tops) == 1 and "" not in tops else "")
    counts = {h: homes.count(h) for h in homes}
    homed = [root / h for h in homes if h and counts[h] == 1]
    out = []
    for study, home in zip(found, homes, strict=True):
        if home and counts[home] == 1:
            name, folder = home, root / home
            mine = tuple(p for p in scan.problems if _inside(p.path, folder))
            skipped = tuple(p for p in scan.skipped if _inside(p.path, folder))
        else:  # flat or interleaved: the files left out outside every study folder concern it
            name, folder = _safe_name(f"{study.patient_id or 'anonymous'}_{study.study_uid[-8:]}"), root
            mine = tuple(p for p in scan.problems if not any(_inside(p.path, h) for h in homed))
            skipped = tuple(p for p in scan.skipped if not any(_inside(p.path, h) for h in homed))
        out.append(StudyInput(name, folder, "dicom", study, mine, skipped, tuple(scan.warnings)))
    return out


def _folder_studies(folder: Path, scan: ScanResult | None = None) -> list[StudyInput]:
    """The DICOM studies of `folder` (or file); one study keeps the folder's (or file's) name."""
    scan = scan if scan is not None else scan_folder(folder)
    found = _dicom_studies(folder, scan)
    if len(found) > 1:
        return found
    name = folder.stem if folder.is_file() else folder.name
    study = found[0].scan if found else None
    return [StudyInput(name, folder, "dicom", study, tuple(scan.problems), tuple(scan.skipped), tuple(scan.warnings))]


def _unique_names(studies: list[StudyInput]) -> list[StudyInput]:
    seen: dict[str, int] = {}
    out = []
    for s in studies:
        n = seen.get(s.name, 0)
        seen[s.name] = n + 1
        out.append(s if n == 0 else dataclasses.replace(s, name=f"{s.name}_{n + 1}"))
    return out


def find_studies(path: str | os.PathLike) -> tuple[list[StudyInput], bool]:
    """The studies named by the command's input, and whether it is a batch.

    Rule: a NIfTI file is one study. DICOM input (a file or a folder, any nesting) is scanned once
    and its image files grouped into **studies by PatientID + StudyInstanceUID**: one study is
    processed under the input's name; several make a batch, each study named by the subfolder
    that holds it (else ``<PatientID>_<end of the StudyInstanceUID>``). A folder holding NIfTI
    files at its top level is a batch of those files and of its subfolders (each scanned the same
    way); other loose files there are listed as skipped.

    Args:
        path: the command's input.

    Returns:
        ``(studies, batch)``; hidden entries (``.name``) are ignored at the top level.

    Raises:
        InputError: if `path` does not exist.
    """
    root = Path(path)
    if not root.exists():
        raise InputError(f"{root}: no such file or folder.")
    if root.is_file() and is_nifti(root):
        return [StudyInput(nifti_study_name(root), root, "nifti")], False
    entries = _visible(list(root.iterdir())) if root.is_dir() else []
    niftis = [p for p in entries if p.is_file() and is_nifti(p)]
    if niftis:
        studies = [StudyInput(nifti_study_name(p), p, "nifti") for p in niftis]
        for folder in (p for p in entries if p.is_dir()):
            studies += _folder_studies(folder)
        studies += [StudyInput(p.name, p, "other") for p in entries if p.is_file() and not is_nifti(p)]
        return _unique_names(studies), True
    scan = scan_folder(root)
    found = _dicom_studies(root, scan)
    if len(found) <= 1:
        return _folder_studies(root, scan), False
    flat = any(s.path == root for s in found)  # loose files then belong to the flat studies' problems
    loose = [] if flat else [p for p in scan.problems if p.path.parent == root]
    studies = found + [StudyInput(p.path.name, p.path, "other") for p in loose]
    return _unique_names(studies), True


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
    cine: CineStudy, model: SiteModel, options: SegmentOptions, desc: str = ""
) -> tuple[np.ndarray, np.ndarray]:
    """Segment every phase and clean the labels.

    Args:
        cine: the study.
        model: the site model.
        options: batch size, progress, post-processing.
        desc: progress bar label.

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
    return raw, clean_cine(raw)


def clean_cine(labels_tzyx: np.ndarray, workers: int | None = None) -> np.ndarray:
    """:func:`~cardiolora.site.postprocess.clean_labels` on every phase, phases in parallel.

    Args:
        labels_tzyx: uint8 labels ``(T, Z, Y, X)``.
        workers: threads (``None``: one per CPU core); the phases are independent and
            scipy.ndimage releases the GIL, so the result does not depend on it.

    Returns:
        The cleaned labels, same shape.
    """
    from cardiolora.site.postprocess import clean_labels

    n = max(1, min(len(labels_tzyx), workers or os.cpu_count() or 1))
    with ThreadPoolExecutor(n, thread_name_prefix="cardiolora-clean") as pool:
        return np.stack(list(pool.map(lambda phase: clean_labels(phase, slice_axis=0), labels_tzyx)))


def _warnings(cine: CineStudy, function: dict[str, Any] | None, curves: dict[str, np.ndarray]) -> list[str]:
    """Things a reader of the numbers should know (coverage, timing, missing structures)."""
    meta = cine.meta
    out = []
    for note in meta.get("positions_dropped") or []:
        out.append(f"slice position dropped (incomplete phases): {note}; volumes cover the kept slices only")
    if cine.n_slices == 1:
        out.append("a single slice: volumes are of that slab (area x slice thickness), not of the ventricles")
    if cine.n_phases < 2:
        out.append("a single phase: no ED/ES, stroke volume or ejection fraction")
    spread = float(meta.get("trigger_time_spread_ms") or 0.0)
    if spread > TRIGGER_SPREAD_WARN_MS:
        out.append(f"trigger times of one phase differ by up to {spread:.0f} ms across slices")
    if meta.get("phase_order") not in (None, "TriggerTime"):
        out.append(f"phases ordered by {meta.get('phase_order')} (no trigger times)")
    if not np.all(np.isfinite(np.asarray(cine.trigger_times_ms, dtype=float))):
        out.append("trigger times unknown: the volume curve is drawn over the phase index")
    for p in meta.get("problems") or []:
        out.append(f"file left out by the scan: {p}")
    for d in meta.get("duplicates_dropped") or []:
        out.append(f"duplicate instance ignored: {d}")
    out.extend(meta.get("trigger_time_gaps") or [])
    out.extend(meta.get("stack_notes") or [])
    frames_of_reference = meta.get("frame_of_reference_uids") or []
    if len(frames_of_reference) > 1:
        out.append(
            f"the source files carry {len(frames_of_reference)} different FrameOfReferenceUIDs; their geometry "
            f"was checked to form one stack and the outputs use slice 0's ({meta.get('frame_of_reference_uid')})"
        )
    out.extend(f"DICOM reading: {w}" for w in meta.get("dicom_warnings") or [])
    if not np.any(curves["LV"] > 0):
        out.append("no LV cavity found in any phase")
    if function is not None and function["ed_phase"] == function["es_phase"]:
        out.append("ED and ES are the same phase")
    return out


def _series_info(cine: CineStudy) -> dict[str, Any]:
    keys = ("study_instance_uid", "series_instance_uid", "series_number", "series_description", "patient_id",
            "manufacturer", "scanner", "field_strength_t", "phase_order", "incomplete_positions", "series_rule",
            "series_rules_file", "assembled_by", "source_series_instance_uids", "frame_of_reference_uid")  # fmt: skip
    return {k: cine.meta[k] for k in keys if k in cine.meta}


def build_report(
    study: StudyInput,
    cine: CineStudy,
    model: SiteModel,
    raw: np.ndarray,
    labels: np.ndarray,
    options: SegmentOptions,
) -> dict[str, Any]:
    """The JSON report of a segmented study (see inference/README.md for every field).

    Args:
        study: the input.
        cine: the study read.
        model: the site model.
        raw: labels before post-processing.
        labels: labels after post-processing.
        options: the run options.

    Returns:
        The report (``function`` is ``None`` for a single phase).
    """
    from cardiolora.clinical import cardiac_function, volume_curve
    from cardiolora.site.report import now_iso, software_versions

    curves = volume_curve(labels, cine.spacing_zyx)
    height, weight = cine.meta.get("height_cm"), cine.meta.get("weight_kg")
    if height is None or weight is None:
        height = weight = None
    function = (
        cardiac_function(labels, cine.spacing_zyx, height_cm=height, weight_kg=weight) if cine.n_phases > 1 else None
    )
    times = np.asarray(cine.trigger_times_ms, dtype=float)
    phases: dict[str, Any] = {"n_phases": cine.n_phases, "trigger_times_ms": times}
    if function is not None:
        ed, es = int(function["ed_phase"]), int(function["es_phase"])
        phases.update(
            ed_phase=ed,
            es_phase=es,
            ed_trigger_time_ms=times[ed],
            es_trigger_time_ms=times[es],
            method="ED = phase of maximal, ES = phase of minimal LV cavity volume (after post-processing)",
        )
    return {
        "study": study.name,
        "status": "done",
        "input": str(study.path),
        "input_kind": study.kind,
        "intended_use": "research only, not for clinical diagnosis",
        "created": now_iso(),
        "series": _series_info(cine),
        "patient": {"height_cm": cine.meta.get("height_cm"), "weight_kg": cine.meta.get("weight_kg")},
        "geometry": {
            "shape_tzyx": list(cine.image.shape),
            "spacing_zyx_mm": list(cine.spacing_zyx),
            "slice_thickness_mm": cine.slice_thickness_mm,
            "affine_lps": cine.affine_lps,
            "nifti_affine_ras": nifti_affine(cine.affine_lps),
            "positions_dropped": cine.meta.get("positions_dropped", []),
        },
        "phases": phases,
        "function": function,
        "volume_curve_ml": curves,
        "postprocessing": {
            "applied": options.postprocess,
            "rules": "largest 3D component per structure; myocardium-enclosed regions -> LV; "
            "cavity holes filled per slice (cardiolora.site.postprocess)",
            "voxels_changed": int(np.count_nonzero(raw != labels)),
        },
        "model": model.describe(),
        "versions": software_versions(),
        "warnings": _warnings(cine, function, curves),
    }


def report_row(report: dict[str, Any], output: Path | None) -> dict[str, Any]:
    """The CSV row of a finished study's report."""
    from cardiolora.site.report import FUNCTION_KEYS

    function = report.get("function") or {}
    series = report.get("series") or {}
    shape = report.get("geometry", {}).get("shape_tzyx") or [None, None]
    row: dict[str, Any] = {
        "study": report.get("study"),
        "status": report.get("status", "done"),
        "reason": report.get("reason", ""),
        "input": report.get("input"),
        "input_kind": report.get("input_kind"),
        "series_instance_uid": series.get("series_instance_uid"),
        "series_number": series.get("series_number"),
        "series_description": series.get("series_description"),
        "n_phases": shape[0],
        "n_slices": shape[1],
        "ed_phase": report.get("phases", {}).get("ed_phase"),
        "es_phase": report.get("phases", {}).get("es_phase"),
        "model_sha256": (report.get("model") or {}).get("model_sha256"),
        "output": None if output is None else str(output),
        "warnings": report.get("warnings", []),
    }
    row.update({k: function.get(k) for k in FUNCTION_KEYS})
    return row


def _write_outputs(
    tmp: Path,
    study: StudyInput,
    cine: CineStudy,
    model: SiteModel,
    raw: np.ndarray,
    labels: np.ndarray,
    options: SegmentOptions,
) -> dict[str, Any]:
    """Write every output of one study into `tmp`; returns the report written."""
    from cardiolora.site.figures import overlay_montage, volume_curve_figure
    from cardiolora.site.report import write_csv, write_json

    report = build_report(study, cine, model, raw, labels, options)
    function = report["function"]
    ed = None if function is None else int(function["ed_phase"])
    es = None if function is None else int(function["es_phase"])
    outputs: dict[str, Any] = {}
    missing: dict[str, str] = {}
    nifti = write_nifti_outputs(cine, labels, tmp / "nifti", ed, es)
    outputs["nifti"] = {k: str(p.relative_to(tmp)) for k, p in nifti.items()}
    if study.kind == "dicom":
        _write_dicom_outputs(tmp, cine, model, labels, options, report, outputs, missing)
    phases = {"ED": ed, "ES": es} if function is not None else {"phase": 0}
    title = f"{study.name}: " + (
        f"LV EF {_fmt(function['lv_ef_pct'])} %, RV EF {_fmt(function['rv_ef_pct'])} %" if function else "single phase"
    )
    try:
        outputs["overlay_png"] = overlay_montage(cine.image, labels, phases, tmp / "overlay_ed_es.png", title).name
        if function is not None:
            curves = report["volume_curve_ml"]
            outputs["volume_curve_png"] = volume_curve_figure(
                curves, cine.trigger_times_ms, ed, es, tmp / "volume_curve.png", title
            ).name
    except Exception as err:  # noqa: BLE001 - a picture that fails must not lose the other outputs
        missing["figures"] = f"{type(err).__name__}: {err}"
    if missing:
        report["status"] = "partial"
        report["reason"] = "; ".join(f"{k} not written: {v}" for k, v in missing.items())
    report["missing_outputs"] = missing
    report["outputs"] = outputs
    write_json(report, tmp / "report.json")
    write_csv([report_row(report, None)], tmp / "report.csv")
    return report


def _write_dicom_outputs(
    tmp: Path,
    cine: CineStudy,
    model: SiteModel,
    labels: np.ndarray,
    options: SegmentOptions,
    report: dict[str, Any],
    outputs: dict[str, Any],
    missing: dict[str, str],
) -> None:
    """Write the DICOM SEG and SR of a DICOM study into `tmp`; record what could not be written.

    The SEG is one object for the whole study (``seg/seg.dcm``; one instance per phase with
    ``options.seg_per_phase``). The SR (``sr/measurements.dcm``) references the SEG, so it is
    missing when the SEG is; a single-phase study has no ED/ES measurements and promises no SR.
    Reasons go to `missing` (the study becomes ``partial``), notes to ``report["dicom_notes"]``.
    """
    import cardiolora
    from cardiolora.dicom.seg import write_study_seg
    from cardiolora.dicom.sr import write_measurement_sr

    function = report["function"]
    ed = None if function is None else int(function["ed_phase"])
    es = None if function is None else int(function["es_phase"])
    number = cine.meta.get("series_number")
    number = int(number) if isinstance(number, int) and 0 <= number < 2**30 else 0
    notes: list[str] = report.setdefault("dicom_notes", [])
    try:
        seg = write_study_seg(
            labels,
            cine.meta["source_files"],
            cine.meta["source_frame_numbers"],
            tmp / "seg" / ("phase.dcm" if options.seg_per_phase else "seg.dcm"),
            version=cardiolora.__version__,
            parameters={"profile": model.profile.name, "model_sha256": model.model_sha256[:16]},
            trigger_times_ms=cine.trigger_times_ms,
            ed_phase=ed,
            es_phase=es,
            series_number=1000 + number,
            frame_of_reference_uid=cine.meta.get("frame_of_reference_uid") or None,
            per_phase=options.seg_per_phase,
        )
    except Exception as err:  # noqa: BLE001 - highdicom raises many types; the study becomes partial
        missing["dicom_seg"] = f"{type(err).__name__}: {err}"
        if function is not None:
            missing["dicom_sr"] = "it references the DICOM SEG, which could not be written"
        return
    outputs["dicom_seg"] = [str(p.relative_to(tmp)) for p in seg.paths]
    notes.extend(seg.notes)
    if function is None:
        notes.append("no DICOM SR: a single phase has no ED/ES measurements")
        return
    evidence = sorted({*cine.meta["source_files"][ed], *cine.meta["source_files"][es]})
    try:
        sr = write_measurement_sr(
            list(seg.paths),
            evidence,
            function,
            tmp / "sr" / "measurements.dcm",
            version=cardiolora.__version__,
            series_number=2000 + number,
            flags=tuple(report.get("flags", ())),
            trigger_times_ms=cine.trigger_times_ms,
        )
    except Exception as err:  # noqa: BLE001 - highdicom raises many types; the study becomes partial
        missing["dicom_sr"] = f"{type(err).__name__}: {err}"
        return
    outputs["dicom_sr"] = str(sr.relative_to(tmp))


def _fmt(value: float) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.1f}"


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
        raw, labels = segment_labels(cine, model, options, desc=study.name)
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        try:
            report = _write_outputs(tmp, study, cine, model, raw, labels, options)
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
