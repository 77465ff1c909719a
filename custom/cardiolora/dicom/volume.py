"""Stage 3 of the DICOM chain: the chosen series' pixels → a ``(T, Z, Y, X)`` cine volume.

:func:`read_cine` reads the pixels of a series (or of an assembled one-series-per-slice stack)
into a float32 :class:`~cardiolora.data.cine.CineStudy` (``label=None``) with the conventions of
:mod:`cardiolora.dicom.geometry`. :func:`read_study` runs the chain for one study (stacks,
selection by rules, pixels); :func:`read_short_axis_cine` scans a folder that holds one study
and reads it.

* **Intensities.** ``stored * RescaleSlope + RescaleIntercept`` per frame (slope 1, intercept 0
  when absent), as float32. Compressed transfer syntaxes are decoded by pydicom's pixel
  handlers (RLE natively; JPEG, JPEG-LS and JPEG 2000 with the decoder packages the project
  installs); an undecodable file is named with its transfer syntax.
* **Incomplete slice positions.** A series whose slice positions hold different numbers of
  phases (the RVSC 2012 series hold 2, 2 and 20) is refused by default
  (``incomplete_positions="raise"``). With ``"drop"`` only the positions that hold the *full*
  phase set are kept and listed in ``meta["positions_dropped"]``: a phase must be the same
  cardiac time at every slice for a volume to mean anything, and the partial positions of such
  series are not the same cardiac times (RVSC patient 09: the second frame of the three
  positions is at 48.75, 48.75 and 322 ms), so truncating every position to the phases common to
  all would mix systole and diastole. The kept positions must still form an evenly spaced stack;
  a single kept position is read as a 2D+t cine whose slice spacing is its SliceThickness.
* **ED / ES.** DICOM does not say which phase is end-systole: ``ed_phase = es_phase = 0`` and
  ``meta["ed_es_known"] = False`` until a segmentation decides.
* **Duplicates.** Frames at the same position and phase with identical pixels are kept once
  (``meta["duplicates_dropped"]``); different pixels are refused naming both files.

``CineStudy.meta`` keys: ``source_files``, ``source_sop_instance_uids`` and
``source_frame_numbers`` (each ``[t][z]``, to reference source instances from a DICOM SEG);
``study_instance_uid``, ``series_instance_uid``, ``source_series_instance_uids``,
``assembled_by`` and ``stack_notes`` (stacks), ``series_rule`` and ``series_rules_file`` (which
rule picked the series), ``frame_of_reference_uid`` (slice 0's) and ``frame_of_reference_uids``
(every distinct one), ``series_number``, ``series_description``, ``sop_class_uid``,
``patient_id``, ``manufacturer``, ``scanner``, ``field_strength_t``, ``height_cm``,
``weight_kg``, ``sex``, ``age_years``, ``phase_order``, ``slice_order``, ``slice_positions_mm``,
``trigger_times_ms_per_slice``, ``trigger_time_spread_ms``, ``trigger_time_gaps``, ``ed_es_known``, ``problems``,
``skipped``, ``duplicates_dropped``, ``positions_dropped``, ``dicom_warnings`` (pydicom's
warnings, one line per kind).

Example:
    >>> study = read_short_axis_cine("/data/study_folder")  # doctest: +SKIP
    >>> study.image.shape  # (T, Z, Y, X)  # doctest: +SKIP
    (25, 10, 256, 216)
"""

from __future__ import annotations

import math
import os
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from cardiolora.data.cine import CineStudy
from cardiolora.dicom.geometry import PHASE_COUNT_ISSUE, Layout, analyse, phase_key
from cardiolora.dicom.headers import FrameRef, WarningLog, attr_number, number, text
from cardiolora.dicom.scan import SeriesInfo, StudyScan, plural, scan_files, scan_folder
from cardiolora.dicom.select import check_policy, count_reasons, select_short_axis_cine
from cardiolora.dicom.stack import assemble_stacks
from cardiolora.errors import MAX_NAMES, InputError, Problem, name_list

__all__ = ["DEFAULT_MAX_BYTES", "read_cine", "read_short_axis_cine", "read_study", "trigger_gaps"]

#: Default pixel-memory limit of :func:`read_cine` (2 GiB of float32 voxels).
DEFAULT_MAX_BYTES = 2 * 1024**3


def _series_from_files(files: Iterable[str | os.PathLike]) -> SeriesInfo:
    """The one series made by an explicit list of files (problems kept in ``info.problems``)."""
    paths = sorted(Path(p) for p in files)
    if not paths:
        raise InputError("`series_info_or_files` is an empty list of files.")
    folders = [p for p in paths if p.is_dir()]
    if folders:
        raise InputError(f"{folders[0]} is a folder; pass files, a SeriesInfo, or use read_short_axis_cine(folder).")
    absent = [str(p) for p in paths if not p.exists()]
    if absent:
        raise InputError(f"files do not exist: {name_list(absent)}.")
    scan = scan_files(paths, paths[0].parent)
    if not scan.series:
        listed = "; ".join(str(p) for p in scan.problems[:10]) or "no image files"
        raise InputError(f"none of the {len(paths)} files is a DICOM image: {listed}.")
    if len(scan.series) > 1:
        listed = "; ".join(s.summary() for s in scan.series)
        raise InputError(f"the files hold {len(scan.series)} series, expected one: {listed}.")
    info = scan.series[0]
    info.problems = tuple(scan.problems)
    return info


def _pixels(path: Path, ds: Dataset, frames: int, rows: int, columns: int) -> np.ndarray:
    """Stored pixel values of file `path` as ``(frames, rows, columns)``, checked.

    Raises:
        InputError: naming the file, if pixels are missing, not monochrome, shorter than
            ``Rows × Columns × frames × BitsAllocated / 8``, undecodable, or of another shape.
    """
    if "PixelData" not in ds:
        raise InputError(f"{path}: no PixelData (FloatPixelData and DoubleFloatPixelData are not supported).")
    samples = int(attr_number(ds, "SamplesPerPixel") or 1)
    photometric = text(ds, "PhotometricInterpretation") or "MONOCHROME2"
    if samples != 1 or photometric != "MONOCHROME2":
        raise InputError(
            f"{path}: PhotometricInterpretation {photometric} with {samples} samples per pixel; "
            "a cine must be MONOCHROME2 grey levels."
        )
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    bits = int(attr_number(ds, "BitsAllocated") or 16)
    if syntax is None or not syntax.is_compressed:
        expected = rows * columns * frames * bits // 8
        got = len(ds.PixelData)
        if got < expected:
            raise InputError(
                f"{path}: PixelData holds {got} bytes but Rows x Columns x frames x BitsAllocated/8 = "
                f"{rows} x {columns} x {frames} x {bits}/8 = {expected}; the file is truncated or corrupt."
            )
    try:
        arr = np.asarray(ds.pixel_array)
    except Exception as exc:  # noqa: BLE001 - decoders raise many types
        name = getattr(syntax, "name", "unknown transfer syntax")
        raise InputError(f"{path}: cannot decode the pixel data ({name}): {exc}") from exc
    arr = arr.reshape((1, *arr.shape)) if arr.ndim == 2 else arr
    if arr.shape != (frames, rows, columns):
        raise InputError(
            f"{path}: pixel data has shape {arr.shape}, the header scanned before said "
            f"{(frames, rows, columns)}; "
            "was the file changed?"
        )
    return arr


def _read_file(path: Path) -> Dataset:
    try:
        return pydicom.dcmread(path)
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on corrupt input
        raise InputError(f"{path}: unreadable or truncated DICOM file ({type(exc).__name__}: {exc}).") from exc


def _patient_meta(header: dict[str, str]) -> dict[str, object]:
    """Writer-compatible patient / equipment keys of ``CineStudy.meta`` from a series header."""
    meta: dict[str, object] = {}
    size = number(header.get("PatientSize"))
    if size is not None and size > 0:
        meta["height_cm"] = round(size * 100.0, 2)
    weight = number(header.get("PatientWeight"))
    if weight is not None and weight > 0:
        meta["weight_kg"] = weight
    sex = header.get("PatientSex", "").upper()
    if sex in ("M", "F", "O"):
        meta["sex"] = sex
    age = header.get("PatientAge", "")
    if re.fullmatch(r"\d{3}Y", age):
        meta["age_years"] = int(age[:3])
    if header.get("Manufacturer"):
        meta["manufacturer"] = header["Manufacturer"]
    if header.get("ManufacturerModelName"):
        meta["scanner"] = header["ManufacturerModelName"]
    field_t = number(header.get("MagneticFieldStrength"))
    if field_t is not None and field_t > 0:
        meta["field_strength_t"] = field_t
    if header.get("StudyDate"):
        meta["study_date"] = header["StudyDate"]
    return meta


def _trigger_times(
    slices: Sequence[Sequence[FrameRef]], n_phases: int
) -> tuple[np.ndarray, list[list[float | None]], float]:
    """Mean trigger time per phase (NaN when no slice has one), the per-slice table ``[t][z]``, spread."""
    table = [[s[t].trigger_time for s in slices] for t in range(n_phases)]
    means, spread = [], 0.0
    for row in table:
        known = [v for v in row if v is not None]
        means.append(float(np.mean(known)) if known else math.nan)
        if len(known) > 1:
            spread = max(spread, max(known) - min(known))
    return np.asarray(means, dtype=np.float64), table, spread


def trigger_gaps(times_ms: np.ndarray, factor: float = 1.5) -> list[str]:
    """Steps between consecutive phases' trigger times that are over `factor` × the median step.

    A cine's phases are evenly spaced in time; a step much longer than the others means a phase
    is missing there (a file lost or left out by the scan).

    Args:
        times_ms: mean trigger time per phase (NaN when unknown: then no gap is reported).
        factor: how many median steps make a gap (> 1).

    Returns:
        One note per gap, e.g. ``"trigger times jump 97 ms between phases 3 and 4 (median step
        48 ms): a phase missing?"``.
    """
    times = np.asarray(times_ms, dtype=float)
    if times.size < 3 or not np.all(np.isfinite(times)):
        return []
    steps = np.diff(times)
    median = float(np.median(steps))
    if median <= 0:
        return []
    return [
        f"trigger times jump {step:.0f} ms between phases {t} and {t + 1} (median step {median:.0f} ms): "
        "a phase missing?"
        for t, step in enumerate(steps)
        if step > factor * median
    ]


def _drop_incomplete_positions(lay: Layout) -> tuple[Layout, list[str]]:
    """Keep the slice positions that hold the full (largest) phase set; re-analyse their frames.

    Returns:
        The layout of the kept frames and one note per dropped position (``"2 phases at
        -39.25 mm (P09-0022.dcm)"``); ``(lay, [])`` unchanged when every position is complete.
    """
    counts = [len(s) for s in lay.slices]
    if len(set(counts)) <= 1:
        return lay, []
    full = max(counts)
    kept_ids = {id(f) for s in lay.slices if len(s) == full for f in s}
    kept = [f for s in lay.slices if len(s) == full for f in s]
    kept += [d for d, twin in lay.duplicates if id(twin) in kept_ids]
    notes = [
        f"{plural(n, 'phase')} at {p:.2f} mm ({s[0].path.name})"
        for n, p, s in zip(counts, lay.projections, lay.slices, strict=True)
        if n != full
    ]
    new = analyse(kept)
    before = [i for i in lay.issues if not i.startswith(PHASE_COUNT_ISSUE)]
    new.issues = before + [
        f"{issue} (after dropping the incomplete positions: {', '.join(notes)})"
        for issue in new.issues
        if issue not in before
    ]
    return new, notes


def _single_slice_spacing(info: SeriesInfo, lay: Layout) -> float:
    """Slice spacing of a one-position cine: its SliceThickness (there is no second position).

    Raises:
        InputError: if the frames carry no positive SliceThickness.
    """
    thickness = lay.slices[0][0].slice_thickness
    if thickness is None or thickness <= 0:
        raise InputError(
            f"{info.label}: the one slice position left ({lay.slices[0][0].name}) has no SliceThickness; "
            "a single-slice cine needs it for its voxel size."
        )
    return float(thickness)


def read_cine(
    series_info_or_files: SeriesInfo | Sequence[str | os.PathLike],
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    incomplete_positions: str = "raise",
) -> CineStudy:
    """Read a short-axis cine series into a ``(T, Z, Y, X)`` :class:`CineStudy` (``label=None``).

    Slices are ordered along ``n = row cosine × column cosine`` (slice 0 has the smallest
    ``ImagePositionPatient · n``; the affine's third column is ``+n × spacing``), phases by
    TriggerTime, else TemporalPositionIdentifier / TemporalPositionIndex, else InstanceNumber
    (module docstring). Intensities are ``stored * RescaleSlope + RescaleIntercept`` as float32.
    Frames at the same slice position and phase with different SOPInstanceUIDs are kept once
    when their pixels are identical (reported in ``meta["duplicates_dropped"]``).

    Args:
        series_info_or_files: a :class:`SeriesInfo` (from :func:`scan_folder` /
            :func:`select_short_axis_cine`) or the files of one series (classic or multi-frame).
        max_bytes: the largest pixel memory (float32 ``T × Z × Y × X × 4`` bytes) to allocate;
            checked before any pixel is read. Must be >= 1.
        incomplete_positions: ``"raise"`` (default) refuses a series whose slice positions hold
            different numbers of phases; ``"drop"`` keeps only the positions holding the full
            phase set (module docstring: why this and not the phases common to all), lists the
            others in ``meta["positions_dropped"]``, and accepts a single kept position as a
            2D+t cine (slice spacing = SliceThickness).

    Returns:
        The study: ``image`` float32, ``spacing_zyx`` = (slice spacing from the positions, row
        spacing, column spacing), ``affine_lps``, ``trigger_times_ms``, ``ed_phase = es_phase =
        0`` with ``meta["ed_es_known"] = False``, ``vendor`` = Manufacturer, ``subject_id`` =
        PatientID (else the SeriesInstanceUID), and the ``meta`` keys of the module docstring.

    Raises:
        InputError: naming the file or series, if the files hold no or several series, a
            geometry tag (ImagePositionPatient, ImageOrientationPatient, PixelSpacing) is missing,
            Rows / Columns / PixelSpacing differ, the planes are not parallel, there are fewer than
            2 slice positions or 2 phases, the phase count differs between positions (naming
            them), slices are unevenly spaced or sheared, two different images share a position
            and phase, the pixel memory exceeds `max_bytes` (naming the size), a file is
            truncated, corrupt or undecodable, or `incomplete_positions` is unknown.
    """
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, (int, np.integer)) or max_bytes < 1:
        raise InputError(f"`max_bytes` must be a positive integer, got {max_bytes!r}.")
    check_policy(incomplete_positions)
    if isinstance(series_info_or_files, SeriesInfo):
        info = series_info_or_files
    elif isinstance(series_info_or_files, (str, os.PathLike)):
        info = _series_from_files([series_info_or_files])
    else:
        info = _series_from_files(series_info_or_files)

    lay = analyse(info.frames)
    positions_dropped: list[str] = []
    if incomplete_positions == "drop":
        lay, positions_dropped = _drop_incomplete_positions(lay)
    issues = lay.issues + count_reasons(
        len(lay.slices),
        min((len(s) for s in lay.slices), default=0),
        min_positions=1 if incomplete_positions == "drop" else 2,
        per_position=[len(s) for s in lay.slices],
    )
    if issues or lay.row_cos is None or lay.col_cos is None or lay.normal is None:
        raise InputError(f"{info.label} cannot be read as a short-axis cine: {'; '.join(issues)}.")

    n_slices, n_phases = len(lay.slices), len(lay.slices[0])
    rows, columns = lay.slices[0][0].rows, lay.slices[0][0].columns
    n_bytes = n_phases * n_slices * rows * columns * 4
    if n_bytes > max_bytes:
        raise InputError(
            f"{info.label} needs {n_bytes} bytes ({n_bytes / 1024**3:.2f} GiB) of float32 pixel memory "
            f"({n_phases} phases x {n_slices} slices x {rows} x {columns}), "
            f"more than `max_bytes` = {max_bytes}."
        )

    # Which frames of which file go where: (t, z) for kept frames, the kept twin for duplicates.
    wanted: dict[Path, list[tuple[FrameRef, tuple[int, int] | FrameRef]]] = defaultdict(list)
    where: dict[FrameRef, tuple[int, int]] = {}
    for z, frames in enumerate(lay.slices):
        for t, f in enumerate(frames):
            wanted[f.path].append((f, (t, z)))
            where[f] = (t, z)
    for dropped, kept in lay.duplicates:
        wanted[dropped.path].append((dropped, kept))

    image = np.empty((n_phases, n_slices, rows, columns), dtype=np.float32)
    twins: list[tuple[FrameRef, FrameRef, np.ndarray]] = []
    bad: list[str] = []
    log = WarningLog()
    with log:
        for path in sorted(wanted):
            entries = wanted[path]
            first = entries[0][0]
            try:
                stored = _pixels(path, _read_file(path), first.n_frames_in_file, first.rows, first.columns)
            except InputError as err:
                bad.append(str(err).rstrip("."))
                continue
            for f, target in entries:
                slope, intercept = f.rescale
                values = (stored[f.frame_index].astype(np.float64) * slope + intercept).astype(np.float32)
                if isinstance(target, FrameRef):
                    twins.append((f, target, values))
                else:
                    image[target] = values
    if bad:
        raise InputError(
            f"{info.label}: the pixels of {plural(len(bad), 'file')} cannot be read: "
            + "; ".join(bad[:MAX_NAMES])
            + (f"; ... ({len(bad)} in all)" if len(bad) > MAX_NAMES else "")
            + "."
        )
    dropped_notes = []
    for dropped, kept, values in twins:
        if not np.array_equal(values, image[where[kept]]):
            pos = lay.projections[where[kept][1]]
            raise InputError(
                f"{info.label}: {dropped.name} and {kept.name} are two different images at the same slice "
                f"position ({pos:.2f} mm) and phase "
                f"({lay.phase_order} {phase_key(kept, lay.phase_order)[0]:g}); "
                "remove one of them or pass the files to read."
            )
        dropped_notes.append(f"{dropped.name} (same position, phase and pixels as {kept.name})")

    spacing_y, spacing_x = lay.slices[0][0].pixel_spacing  # type: ignore[misc]
    if n_slices > 1:
        spacing_z = (lay.projections[-1] - lay.projections[0]) / (n_slices - 1)
    else:
        spacing_z = _single_slice_spacing(info, lay)
    affine = np.eye(4)
    affine[:3, 0] = lay.row_cos * spacing_x
    affine[:3, 1] = lay.col_cos * spacing_y
    affine[:3, 2] = lay.normal * spacing_z
    affine[:3, 3] = lay.slices[0][0].position  # type: ignore[assignment]
    times, per_slice, spread = _trigger_times(lay.slices, n_phases)
    gaps = trigger_gaps(times)

    header = info.header
    meta: dict[str, object] = {
        "source": "dicom",
        "study_instance_uid": info.study_uid,
        "series_instance_uid": info.series_uid,
        "frame_of_reference_uid": lay.slices[0][0].frame_of_reference_uid or header.get("FrameOfReferenceUID", ""),
        "series_number": info.series_number,
        "series_description": info.description,
        "sop_class_uid": info.sop_class_uid,
        "patient_id": header.get("PatientID", ""),
        **_patient_meta(header),
        "source_files": [[str(lay.slices[z][t].path) for z in range(n_slices)] for t in range(n_phases)],
        "source_sop_instance_uids": [
            [lay.slices[z][t].sop_instance_uid for z in range(n_slices)] for t in range(n_phases)
        ],
        "source_frame_numbers": [[lay.slices[z][t].frame_index + 1 for z in range(n_slices)] for t in range(n_phases)],
        "phase_order": lay.phase_order,
        "slice_order": "ascending along row_cos x col_cos (ImagePositionPatient . normal)",
        "slice_positions_mm": list(lay.projections),
        "trigger_times_ms_per_slice": per_slice,
        "trigger_time_spread_ms": spread,
        "trigger_time_gaps": gaps,
        "ed_es_known": False,
        "problems": [str(p) for p in info.problems],
        "source_series_instance_uids": list(info.source_series),
        "assembled_by": info.assembled_by,
        "stack_notes": list(info.notes),
        "frame_of_reference_uids": sorted({f.frame_of_reference_uid for s in lay.slices for f in s} - {""}),
        "dicom_warnings": log.lines(),
        "duplicates_dropped": dropped_notes,
        "positions_dropped": positions_dropped,
        "incomplete_positions": incomplete_positions,
    }
    return CineStudy(
        subject_id=header.get("PatientID") or info.series_uid,
        image=image,
        label=None,
        spacing_zyx=(float(spacing_z), float(spacing_y), float(spacing_x)),
        affine_lps=affine,
        trigger_times_ms=times,
        ed_phase=0,
        es_phase=0,
        vendor=header.get("Manufacturer") or "unknown",
        slice_thickness_mm=lay.slices[0][0].slice_thickness,
        meta=meta,
    )


def _left_out(problems: Sequence[Problem]) -> str:
    """The scan's left-out files for the end of a refusal (first few + count)."""
    return name_list([str(p) for p in problems])


def read_study(
    study: StudyScan,
    series: str | int | None = None,
    *,
    rules: str | os.PathLike | Sequence[Mapping] | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    incomplete_positions: str = "raise",
    problems: Sequence[Problem] = (),
    skipped: Sequence[Problem] = (),
    warnings: Sequence[str] = (),
) -> CineStudy:
    """One study's short-axis cine: stacks assembled, series chosen by the rules, pixels read.

    Args:
        study: a study of a scan (:meth:`ScanResult.studies`).
        series: ``None`` to choose by the rules, else the series to use (see
            :func:`~cardiolora.dicom.select.select_short_axis_cine`).
        rules: a rules file or list of rules (``None``: the defaults).
        max_bytes: as in :func:`read_cine`.
        incomplete_positions: as in :func:`read_cine`.
        problems: files the scan left out (named in a refusal, listed in ``meta["problems"]``).
        skipped: files the scan skipped on purpose (``meta["skipped"]``).
        warnings: the scan's collapsed pydicom warnings (added to ``meta["dicom_warnings"]``).

    Returns:
        The :class:`CineStudy`.

    Raises:
        InputError: as :func:`select_short_axis_cine` and :func:`read_cine`; when the scan left
            files out, the message ends with them (a truncated header explains a missing phase).
    """
    candidates = [*study.series, *assemble_stacks(study.series)]
    try:
        chosen = select_short_axis_cine(candidates, series, incomplete_positions, rules)
        cine = read_cine(chosen.series, max_bytes=max_bytes, incomplete_positions=incomplete_positions)
    except InputError as exc:
        if not problems:
            raise
        raise InputError(f"{exc} The scan left out: {_left_out(problems)}") from exc
    cine.meta["series_rule"] = chosen.rule
    cine.meta["series_rules_file"] = chosen.rules_file
    cine.meta["problems"] = [str(p) for p in problems]
    cine.meta["skipped"] = [str(p) for p in skipped]
    cine.meta["dicom_warnings"] = [*warnings, *cine.meta.get("dicom_warnings", [])]
    return cine


def read_short_axis_cine(
    path: str | os.PathLike,
    series: str | int | None = None,
    *,
    rules: str | os.PathLike | Sequence[Mapping] | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    incomplete_positions: str = "raise",
) -> CineStudy:
    """Scan a folder holding one study, pick its short-axis cine and read it.

    Args:
        path: the study folder (any nesting) or a single file.
        series: as in :func:`~cardiolora.dicom.select.select_short_axis_cine`.
        rules: a rules file or list of rules (``None``: the defaults).
        max_bytes: as in :func:`read_cine`.
        incomplete_positions: as in :func:`read_cine` (``"raise"`` or ``"drop"``).

    Returns:
        The :class:`CineStudy`; ``meta["problems"]`` lists every file the scan left out.

    Raises:
        InputError: if `path` does not exist, holds no image series, or holds several studies
            (each named: ``cardiolora segment`` processes each one), and as :func:`read_study`.
    """
    scan = scan_folder(path)
    studies = scan.studies()
    if len(studies) > 1:
        listed = "; ".join(f"{s.label} ({plural(len(s.series), 'series')})" for s in studies)
        raise InputError(
            f"{scan.root} holds {len(studies)} studies: {listed}. Read one study folder at a time, or run "
            "`cardiolora segment` on the folder, which processes every study."
        )
    if not studies:
        select_short_axis_cine(scan)  # raises the "no image series" message with the left-out files
    return read_study(
        studies[0],
        series,
        rules=rules,
        max_bytes=max_bytes,
        incomplete_positions=incomplete_positions,
        problems=scan.problems,
        skipped=scan.skipped,
        warnings=scan.warnings,
    )
