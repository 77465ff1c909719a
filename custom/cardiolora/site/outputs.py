"""The outputs of one segmented study: the report, NIfTI, DICOM SEG and SR, pictures.

:func:`write_outputs` writes everything a study promises into a temporary folder (the caller,
:mod:`cardiolora.site.app`, renames it into place). For DICOM input the SEG
(:mod:`cardiolora.dicom.seg`, one object per study) and the SR (:mod:`cardiolora.dicom.sr`, TID
1500, referencing the SEG) are promised: when one cannot be written the report's ``status`` is
``partial`` and ``missing_outputs`` says which and why; nothing is reported ``done`` with an
output missing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import cardiolora
from cardiolora.atomic import write_json
from cardiolora.data.cine import CineStudy, nifti_affine
from cardiolora.dicom.seg import write_study_seg
from cardiolora.dicom.sr import write_measurement_sr
from cardiolora.site.figures import overlay_montage, volume_curve_figure
from cardiolora.site.model import SiteModel
from cardiolora.site.nifti_io import write_nifti_outputs
from cardiolora.site.report import FUNCTION_KEYS, now_iso, software_versions, write_csv
from cardiolora.site.studies import StudyInput

__all__ = ["TRIGGER_SPREAD_WARN_MS", "StudyWriter", "build_report", "report_row", "write_outputs"]

#: The clean-up's rules as the report names them (cardiolora.site.postprocess has them in full).
POSTPROCESS_RULES = (
    "per phase: largest 3D LV cavity component, myocardium of the largest cavity+myocardium component; "
    "RV kept only where it touches the myocardium (septum); myocardium-enclosed regions -> LV; cavity holes "
    "filled; LV cavity outside a closed ring removed; cavity trimmed beyond the base and apex "
    "(cardiolora.site.postprocess)"
)
#: Trigger times of one phase that differ by more than this across slices are worth a warning.
TRIGGER_SPREAD_WARN_MS = 50.0


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
    measures: Mapping[str, Any],
    postprocess: bool,
    clean_notes: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """The JSON report of a segmented study (see inference/docs/README.md for every field).

    Args:
        study: the input.
        cine: the study read.
        model: the site model.
        raw: labels before post-processing.
        labels: labels after post-processing.
        measures: the clinical measures (:class:`~cardiolora.site.measures.ClinicalMeasures`).
        postprocess: whether the clean-up was applied.
        clean_notes: what the anatomical clean-up removed, per phase
            (:func:`cardiolora.site.cleanup.clean_cine`).

    Returns:
        The report (``function`` is ``None`` for a single phase); ``flags`` names the
        plausibility flags (:func:`cardiolora.plausibility.plausibility_flags`), ``plausibility``
        holds them in full.
    """

    curves, function, flags = measures["curves"], measures["function"], measures["flags"]
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
        "flags": [f["name"] for f in flags],
        "plausibility": flags,
        "volume_curve_ml": curves,
        "postprocessing": {
            "applied": bool(postprocess),
            "rules": POSTPROCESS_RULES,
            "voxels_changed": int(np.count_nonzero(raw != labels)),
            "notes": [dict(n) for n in clean_notes],
        },
        "model": model.describe(),
        "versions": software_versions(),
        "warnings": _warnings(cine, function, curves),
    }


def report_row(report: dict[str, Any], output: Path | None) -> dict[str, Any]:
    """The CSV row of a finished study's report."""

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
        "flags": report.get("flags", []),
        "warnings": report.get("warnings", []),
    }
    row.update({k: function.get(k) for k in FUNCTION_KEYS})
    return row


def write_outputs(
    tmp: Path,
    study: StudyInput,
    cine: CineStudy,
    model: SiteModel,
    raw: np.ndarray,
    labels: np.ndarray,
    measures: Mapping[str, Any],
    *,
    postprocess: bool,
    seg_per_phase: bool,
    clean_notes: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """Write every output of one study into `tmp`; returns the report written (arguments as
    :func:`build_report`; `seg_per_phase`: one DICOM SEG instance per phase)."""

    report = build_report(study, cine, model, raw, labels, measures, postprocess, clean_notes)
    function = report["function"]
    ed = None if function is None else int(function["ed_phase"])
    es = None if function is None else int(function["es_phase"])
    outputs: dict[str, Any] = {}
    missing: dict[str, str] = {}
    nifti = write_nifti_outputs(cine, labels, tmp / "nifti", ed, es)
    outputs["nifti"] = {k: str(p.relative_to(tmp)) for k, p in nifti.items()}
    if study.kind == "dicom":
        _write_dicom_outputs(tmp, cine, model, labels, seg_per_phase, report, outputs, missing)
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
    write_json(report, tmp / "report.json", indent=1, trailing_newline=True)
    write_csv([report_row(report, None)], tmp / "report.csv")
    return report


class StudyWriter:
    """The writers stage of the site-inference bundle: every output of one study into a folder.

    The ``writers`` of ``inference/configs/inference.json``: the report (JSON, CSV), NIfTI, and for
    DICOM input the DICOM SEG and SR, and the pictures (:func:`write_outputs`).

    Args:
        model: the site model (described in the report).
        seg_per_phase: write one DICOM SEG instance per phase instead of one object per study.

    Example:
        >>> report = StudyWriter(model)(tmp, study, cine, raw, labels, measures)  # doctest: +SKIP
    """

    def __init__(self, model: SiteModel, seg_per_phase: bool = False) -> None:
        self.model = model
        self.seg_per_phase = bool(seg_per_phase)

    def __call__(
        self,
        folder: Path,
        study: StudyInput,
        cine: CineStudy,
        raw: np.ndarray,
        labels: np.ndarray,
        measures: Mapping[str, Any],
        clean_notes: Sequence[Mapping[str, Any]] = (),
        postprocess: bool = True,
    ) -> dict[str, Any]:
        """Write the study's outputs into `folder`; returns the report."""
        return write_outputs(
            folder,
            study,
            cine,
            self.model,
            raw,
            labels,
            measures,
            postprocess=postprocess,
            seg_per_phase=self.seg_per_phase,
            clean_notes=clean_notes,
        )


def _write_dicom_outputs(
    tmp: Path,
    cine: CineStudy,
    model: SiteModel,
    labels: np.ndarray,
    seg_per_phase: bool,
    report: dict[str, Any],
    outputs: dict[str, Any],
    missing: dict[str, str],
) -> None:
    """Write the DICOM SEG and SR of a DICOM study into `tmp`; record what could not be written.

    The SEG is one object for the whole study (``seg/seg.dcm``; one instance per phase,
    ``seg/seg_phase<ttt>.dcm``, with ``seg_per_phase``). The SR
    (``sr/measurements.dcm``) references the SEG, so it is missing when the SEG is; a
    single-phase study has no ED/ES measurements and promises no SR. Reasons go to `missing`
    (the study becomes ``partial``), notes to ``report["dicom_notes"]``.
    """
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
            tmp / "seg" / "seg.dcm",
            version=cardiolora.__version__,
            parameters={"profile": model.profile.name, "model_sha256": model.model_sha256[:16]},
            trigger_times_ms=cine.trigger_times_ms,
            ed_phase=ed,
            es_phase=es,
            series_number=1000 + number,
            frame_of_reference_uid=cine.meta.get("frame_of_reference_uid") or None,
            per_phase=seg_per_phase,
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
    # by phase: a multi-frame source holds every phase in one file, so a flat list cannot say which
    evidence = {ed: sorted(set(cine.meta["source_files"][ed])), es: sorted(set(cine.meta["source_files"][es]))}
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
