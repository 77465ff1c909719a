"""The site application: segment cine MRI studies, write DICOM SEG, NIfTI, a report and pictures.

``cardiolora segment STUDY_OR_FOLDER_OF_STUDIES --out DIR --model model.pt`` runs, per study:

1. **read** — a DICOM folder (any nesting; the short-axis cine is picked by
   :func:`~cardiolora.site.dicom_reader.read_short_axis_cine`, or named with ``--series``) or a
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
from cardiolora.site.dicom_reader import (
    DEFAULT_MAX_BYTES,
    INCOMPLETE_POSITION_POLICIES,
    DicomInputError,
    read_short_axis_cine,
)
from cardiolora.site.nifti_io import is_nifti, nifti_study_name, read_nifti_cine, write_nifti_outputs

if TYPE_CHECKING:
    from cardiolora.site.model import SiteModel

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_OK",
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
    """

    name: str
    path: Path
    kind: str


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
    """

    series: str | None = None
    incomplete_positions: str = "raise"
    max_bytes: int = DEFAULT_MAX_BYTES
    overwrite: bool = False
    progress: bool = True
    sw_batch_size: int = 8
    postprocess: bool = True

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


@dataclass
class StudyOutcome:
    """What happened to one study.

    Attributes:
        study: the input.
        status: ``done``, ``skipped`` (bad input), ``exists`` (finished output kept) or ``error``.
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
        0 all done; 1 an unexpected error; 2 a single study not done (or no study); 3 a batch
        with skipped studies.
    """
    statuses = [o.status for o in outcomes]
    if not statuses:
        return EXIT_BAD_INPUT
    if "error" in statuses:
        return EXIT_UNEXPECTED
    if all(s == "done" for s in statuses):
        return EXIT_OK
    return EXIT_SKIPPED if batch else EXIT_BAD_INPUT


# --------------------------------------------------------------------------------------------
# finding studies
# --------------------------------------------------------------------------------------------


def _visible(entries: Sequence[Path]) -> list[Path]:
    return sorted(p for p in entries if not p.name.startswith("."))


def _dicom_header(path: Path) -> Any | None:
    """The header of `path` when it is a DICOM file (Part 10, e.g. also a DICOMDIR), else None."""
    import pydicom

    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except Exception:  # noqa: BLE001 - anything unreadable is simply "not DICOM" here
        return None


def _first_study_uid(folder: Path) -> str | None:
    """StudyInstanceUID of the first DICOM file found under `folder` (a few files tried)."""
    tried = 0
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            ds = _dicom_header(Path(root) / name)
            if ds is not None and "StudyInstanceUID" in ds:
                return str(ds.StudyInstanceUID)
            tried += 1
            if tried >= _HEADER_PROBES:
                return None
    return None


def _unique_names(studies: list[StudyInput]) -> list[StudyInput]:
    seen: dict[str, int] = {}
    out = []
    for s in studies:
        n = seen.get(s.name, 0)
        seen[s.name] = n + 1
        out.append(s if n == 0 else StudyInput(f"{s.name}_{n + 1}", s.path, s.kind))
    return out


def find_studies(path: str | os.PathLike) -> tuple[list[StudyInput], bool]:
    """The studies named by the command's input, and whether it is a batch.

    Rule: a NIfTI file is one study; another file is one DICOM study. A folder is

    * a **batch** when it holds NIfTI files at its top level (each NIfTI file and each subfolder
      is a study; other loose files are listed as skipped), or when it holds no DICOM file at its
      top level and its subfolders hold DICOM files of two or more StudyInstanceUIDs (the first
      header found in each subfolder): each subfolder is a study (those without DICOM are listed
      as skipped);
    * otherwise **one study**: DICOM files (a DICOMDIR counts) at the top level, a single
      subfolder (``STUDY/DICOM/...`` exports), or subfolders whose DICOM files belong to one
      StudyInstanceUID (series folders, next to folders of contours or reports).

    Args:
        path: the command's input.

    Returns:
        ``(studies, batch)``; hidden entries (``.name``) are ignored.

    Raises:
        DicomInputError: if `path` does not exist.
    """
    root = Path(path)
    if not root.exists():
        raise DicomInputError(f"{root}: no such file or folder.")
    if root.is_file():
        kind = "nifti" if is_nifti(root) else "dicom"
        name = nifti_study_name(root) if kind == "nifti" else root.stem
        return [StudyInput(name, root, kind)], False
    entries = _visible(list(root.iterdir()))
    files = [p for p in entries if p.is_file()]
    folders = [p for p in entries if p.is_dir()]
    niftis = [p for p in files if is_nifti(p)]
    if niftis:
        studies = [StudyInput(nifti_study_name(p), p, "nifti") for p in niftis]
        studies += [StudyInput(p.name, p, "dicom") for p in folders]
        studies += [StudyInput(p.name, p, "other") for p in files if not is_nifti(p)]
        return _unique_names(studies), True
    if any(_dicom_header(p) is not None for p in files[:_HEADER_PROBES]) or len(folders) < 2:
        return [StudyInput(root.name, root, "dicom")], False
    uids = {uid for uid in (_first_study_uid(f) for f in folders) if uid is not None}
    if len(uids) <= 1:  # one study whose series (and maybe contour or report folders) are subfolders
        return [StudyInput(root.name, root, "dicom")], False
    studies = [StudyInput(p.name, p, "dicom") for p in folders]
    studies += [StudyInput(p.name, p, "other") for p in files]
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
        DicomInputError: naming the file or series, for every kind of bad input (see the reader
            and :func:`~cardiolora.site.nifti_io.read_nifti_cine`); also for a loose non-study
            file in a batch folder.
    """
    if study.kind == "other":
        raise DicomInputError(
            f"{study.path}: not a study (a loose file in a batch folder; a study is a subfolder or a NIfTI file)."
        )
    if study.kind == "nifti":
        if options.series is not None:
            raise DicomInputError(f"{study.path}: --series applies to DICOM input, not to a NIfTI file.")
        return read_nifti_cine(study.path, options.max_bytes)
    return read_short_axis_cine(
        study.path,
        options.series,
        max_bytes=options.max_bytes,
        incomplete_positions=options.incomplete_positions,
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
    if not np.any(curves["LV"] > 0):
        out.append("no LV cavity found in any phase")
    if function is not None and function["ed_phase"] == function["es_phase"]:
        out.append("ED and ES are the same phase")
    return out


def _series_info(cine: CineStudy) -> dict[str, Any]:
    keys = ("study_instance_uid", "series_instance_uid", "series_number", "series_description", "patient_id",
            "manufacturer", "scanner", "field_strength_t", "phase_order", "incomplete_positions")  # fmt: skip
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
    import cardiolora
    from cardiolora.site.figures import overlay_montage, volume_curve_figure
    from cardiolora.site.report import write_csv, write_json

    report = build_report(study, cine, model, raw, labels, options)
    function = report["function"]
    ed = None if function is None else int(function["ed_phase"])
    es = None if function is None else int(function["es_phase"])
    outputs: dict[str, Any] = {}
    nifti = write_nifti_outputs(cine, labels, tmp / "nifti", ed, es)
    outputs["nifti"] = {k: str(p.relative_to(tmp)) for k, p in nifti.items()}
    if study.kind == "dicom":
        from cardiolora.site.dicom_seg import write_cine_seg

        try:
            number = cine.meta.get("series_number")
            segs = write_cine_seg(
                labels,
                cine.meta["source_files"],
                cine.meta["source_frame_numbers"],
                tmp / "seg",
                version=cardiolora.__version__,
                parameters={"profile": model.profile.name, "model_sha256": model.model_sha256[:16]},
                trigger_times_ms=cine.trigger_times_ms,
                ed_phase=ed,
                es_phase=es,
                series_number=1000 + int(number) if isinstance(number, int) and 0 <= number < 2**30 else 9901,
            )
            outputs["dicom_seg"] = [str(p.relative_to(tmp)) for p in segs]
        except ValueError as err:
            report["warnings"].append(f"DICOM SEG not written: {err}")
            outputs["dicom_seg"] = []
    phases = {"ED": ed, "ES": es} if function is not None else {"phase": 0}
    title = f"{study.name}: " + (
        f"LV EF {_fmt(function['lv_ef_pct'])} %, RV EF {_fmt(function['rv_ef_pct'])} %" if function else "single phase"
    )
    outputs["overlay_png"] = overlay_montage(cine.image, labels, phases, tmp / "overlay_ed_es.png", title).name
    if function is not None:
        curves = report["volume_curve_ml"]
        outputs["volume_curve_png"] = volume_curve_figure(
            curves, cine.trigger_times_ms, ed, es, tmp / "volume_curve.png", title
        ).name
    report["outputs"] = outputs
    write_json(report, tmp / "report.json")
    write_csv([report_row(report, None)], tmp / "report.csv")
    return report


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
        report = _write_outputs(tmp, study, cine, model, raw, labels, options)
        _commit(tmp, target)
    except DicomInputError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        logger.warning("skipped %s: %s", study.name, err)
        return StudyOutcome(study, "skipped", str(err), None, {**base_row, "status": "skipped", "reason": str(err)})
    except Exception as err:  # noqa: BLE001 - a bug must not lose the rest of a batch
        shutil.rmtree(tmp, ignore_errors=True)
        logger.error("unexpected error on %s:\n%s", study.name, traceback.format_exc())
        reason = f"unexpected {type(err).__name__}: {err}"
        return StudyOutcome(study, "error", reason, None, {**base_row, "status": "error", "reason": reason})
    return StudyOutcome(study, "done", "", target, report_row(report, target))


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
        DicomInputError: if `path` does not exist.
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
