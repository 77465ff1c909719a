"""Stage 2 of the DICOM chain: the geometry of a set of frames — slice positions, phases, checks.

Conventions (the phantom MR writer :mod:`cardiolora.dicom.mr_writer` follows the same ones, so a
phantom written by it reads back with the same array, affine and trigger times):

* **Slice order.** ``n = row cosine × column cosine`` (from ImageOrientationPatient) is the slice
  normal. Slice positions are the projections ``ImagePositionPatient · n``, grouped with the
  tolerance :data:`POSITION_TOL_MM`, and slice ``z = 0`` is the position with the *smallest*
  projection: the slice index increases along ``n`` (the affine's third column is ``+n × slice
  spacing``, its translation the ImagePositionPatient of slice 0).
* **Phase order.** Within each slice position the frames are ordered by their trigger time
  (classic TriggerTime; enhanced NominalCardiacTriggerDelayTime). If any frame lacks one, the
  whole set is ordered by TemporalPositionIdentifier (enhanced: TemporalPositionIndex), and if
  that is missing too, by InstanceNumber then frame number (vendors differ: some number the
  instances slice-major, some phase-major; within one position both give time order).
* **Duplicates.** Two frames at one position with the same ordering value are duplicates: they
  are named as such, never counted as phases.

:func:`analyse` never raises: it collects every inconsistency as text naming the frames.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from cardiolora.dicom.headers import FrameRef
from cardiolora.errors import name_list

__all__ = [
    "Layout",
    "ORIENTATION_TOL_DEG",
    "PHASE_COUNT_ISSUE",
    "POSITION_TOL_MM",
    "analyse",
    "angle_deg",
    "phase_key",
    "phase_order",
    "unit",
]

#: Two frames whose positions differ by less than this (mm) are at the same place.
POSITION_TOL_MM = 0.1
#: Two orientations whose row or column cosines differ by less than this angle are the same.
ORIENTATION_TOL_DEG = 0.5
#: Relative tolerance on PixelSpacing within a series.
_SPACING_RTOL = 1e-4
#: Start of the issue raised when slice positions hold different numbers of phases.
PHASE_COUNT_ISSUE = "inconsistent number of phases"


def unit(v: np.ndarray) -> np.ndarray:
    """`v` scaled to length 1."""
    return v / np.linalg.norm(v)


def angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    """Angle between two unit vectors in degrees."""
    return math.degrees(math.acos(max(-1.0, min(1.0, float(np.dot(a, b))))))


@dataclass
class Layout:
    """Geometry and order of the frames of a series (see :func:`analyse`)."""

    row_cos: np.ndarray | None = None
    col_cos: np.ndarray | None = None
    normal: np.ndarray | None = None
    slices: list[list[FrameRef]] = field(default_factory=list)
    projections: list[float] = field(default_factory=list)
    phase_order: str = "InstanceNumber"
    duplicates: list[tuple[FrameRef, FrameRef]] = field(default_factory=list)
    duplicate_issue: str = ""
    geometry_issues: list[str] = field(default_factory=list)
    orientation_issues: list[str] = field(default_factory=list)
    issues: list[str] = field(default_factory=list)


def phase_order(frames: Sequence[FrameRef]) -> str:
    """Which attribute orders the phases of `frames` (see the module docstring)."""
    if frames and all(f.trigger_time is not None for f in frames):
        return "TriggerTime"
    if frames and all(f.temporal_index is not None for f in frames):
        return "TemporalPositionIdentifier"
    return "InstanceNumber"


def phase_key(frame: FrameRef, order: str) -> tuple[float, ...]:
    """The value that orders `frame` in time (equal keys at one position are duplicates)."""
    if order == "TriggerTime":
        return (round(float(frame.trigger_time), 3),)  # type: ignore[arg-type]
    if order == "TemporalPositionIdentifier":
        return (float(frame.temporal_index),)  # type: ignore[arg-type]
    return (float(frame.instance_number or 0), float(frame.frame_index))


def _geometry_issues(frames: Sequence[FrameRef]) -> list[str]:
    """One message per kind of missing / malformed geometry tag, naming the frames."""
    by_reason: dict[str, list[str]] = defaultdict(list)
    for f in frames:
        for reason in f.geometry_errors:
            by_reason[re.sub(r" \(frame \d+\)", "", reason)].append(f.name)
    return [f"{name_list(names)} {reason}" for reason, names in by_reason.items()]


def _consistency_issues(frames: Sequence[FrameRef]) -> list[str]:
    """Rows / Columns and PixelSpacing that differ within the series, naming the odd files."""
    issues = []
    matrices = Counter((f.rows, f.columns) for f in frames)
    if len(matrices) > 1:
        common = matrices.most_common(1)[0][0]
        odd = [f"{f.name} ({f.rows}x{f.columns})" for f in frames if (f.rows, f.columns) != common]
        issues.append(
            f"Rows x Columns differ within the series: {common[0]}x{common[1]} in most frames, but {name_list(odd)}"
        )
    spacings = [f.pixel_spacing for f in frames if f.pixel_spacing is not None]
    if spacings:
        ref = Counter(spacings).most_common(1)[0][0]
        odd = [
            f"{f.name} ({f.pixel_spacing[0]:g}, {f.pixel_spacing[1]:g})"
            for f in frames
            if f.pixel_spacing is not None and not np.allclose(f.pixel_spacing, ref, rtol=_SPACING_RTOL, atol=0)
        ]
        if odd:
            issues.append(
                f"PixelSpacing differs within the series: ({ref[0]:g}, {ref[1]:g}) mm in most frames, "
                f"but {name_list(odd)}"
            )
    return issues


def _orientation_issues(frames: Sequence[FrameRef], row0: np.ndarray, col0: np.ndarray, ref: FrameRef) -> list[str]:
    """Frames whose plane is not parallel to, or is rotated within, the reference frame's plane."""
    normal0 = unit(np.cross(row0, col0))
    tilted, rotated = [], []
    for f in frames:
        o = np.asarray(f.orientation, dtype=np.float64)
        row, col = unit(o[:3]), unit(o[3:])
        tilt = angle_deg(normal0, unit(np.cross(row, col)))
        if tilt > ORIENTATION_TOL_DEG:
            tilted.append(f"{f.name} ({tilt:.1f} deg)")
        elif max(angle_deg(row0, row), angle_deg(col0, col)) > ORIENTATION_TOL_DEG:
            rotated.append(f"{f.name} ({angle_deg(row0, row):.1f} deg)")
    issues = []
    if tilted:
        issues.append(f"ImageOrientationPatient is not parallel to that of {ref.name}: {name_list(tilted)}")
    if rotated:
        issues.append(f"ImageOrientationPatient is rotated in-plane relative to {ref.name}: {name_list(rotated)}")
    return issues


def _group_positions(frames: Sequence[FrameRef], normal: np.ndarray) -> tuple[list[list[FrameRef]], list[float]]:
    """Group frames by their projection on `normal` (gap > POSITION_TOL_MM starts a new group)."""
    proj = sorted(((float(np.dot(f.position, normal)), f) for f in frames), key=lambda pf: (pf[0], pf[1].name))
    groups: list[list[tuple[float, FrameRef]]] = []
    for p, f in proj:
        if groups and p - groups[-1][-1][0] <= POSITION_TOL_MM:
            groups[-1].append((p, f))
        else:
            groups.append([(p, f)])
    return [[f for _, f in g] for g in groups], [float(np.mean([p for p, _ in g])) for g in groups]


def analyse(frames: Sequence[FrameRef]) -> Layout:
    """Slice positions, phase order, duplicates and every inconsistency of a series' frames.

    Never raises: problems are collected in ``issues`` (and ``geometry_issues``).
    """
    lay = Layout()
    lay.issues.extend(_consistency_issues(frames))
    lay.geometry_issues = _geometry_issues(frames)
    lay.issues.extend(lay.geometry_issues)
    good = [f for f in frames if not f.geometry_errors]
    if not good:
        return lay
    ref = good[0]
    o = np.asarray(ref.orientation, dtype=np.float64)
    lay.row_cos, lay.col_cos = unit(o[:3]), unit(o[3:])
    lay.normal = unit(np.cross(lay.row_cos, lay.col_cos))
    lay.orientation_issues = _orientation_issues(good, lay.row_cos, lay.col_cos, ref)
    lay.issues.extend(lay.orientation_issues)

    groups, lay.projections = _group_positions(good, lay.normal)
    lay.phase_order = phase_order(good)
    for pos, group in zip(lay.projections, groups, strict=True):
        origin = np.asarray(group[0].position)
        shifted = [f.name for f in group if np.linalg.norm(np.asarray(f.position) - origin) > POSITION_TOL_MM]
        if shifted:
            lay.issues.append(
                f"frames at slice position {pos:.2f} mm have different ImagePositionPatient "
                f"(in-plane offset) from {group[0].name}: {name_list(shifted)}"
            )
        ordered = sorted(group, key=lambda f: (phase_key(f, lay.phase_order), f.instance_number or 0, f.name))
        kept: list[FrameRef] = []
        for f in ordered:
            if kept and phase_key(f, lay.phase_order) == phase_key(kept[-1], lay.phase_order):
                lay.duplicates.append((f, kept[-1]))
            else:
                kept.append(f)
        lay.slices.append(kept)

    if lay.duplicates:
        pairs = [
            f"{d.name} = {k.name} ({lay.phase_order} {phase_key(k, lay.phase_order)[0]:g})" for d, k in lay.duplicates
        ]
        lay.duplicate_issue = (
            f"{len(lay.duplicates)} frames repeat the {lay.phase_order} of another frame at the same slice position "
            f"(duplicate phases, not counted as phases): {name_list(pairs)}"
        )
    counts = [len(s) for s in lay.slices]
    if len(set(counts)) > 1:
        parts = [
            f"{n} at {p:.2f} mm ({s[0].path.name})" for n, p, s in zip(counts, lay.projections, lay.slices, strict=True)
        ]
        lay.issues.append(
            f"{PHASE_COUNT_ISSUE} across slice positions (position along the normal, first file): " + ", ".join(parts)
        )
    if len(lay.projections) >= 2:
        gaps = np.diff(lay.projections)
        median = float(np.median(gaps))
        if np.max(np.abs(gaps - median)) > max(POSITION_TOL_MM, 0.01 * median):
            lay.issues.append(
                "slice positions are not evenly spaced (a slice missing?): gaps "
                + ", ".join(f"{g:.2f}" for g in gaps)
                + " mm between positions "
                + ", ".join(f"{p:.2f}" for p in lay.projections)
                + " mm"
            )
        origin0 = np.asarray(lay.slices[0][0].position)
        for pos, s in zip(lay.projections[1:], lay.slices[1:], strict=True):
            d = np.asarray(s[0].position) - origin0
            offset = float(np.linalg.norm(d - np.dot(d, lay.normal) * lay.normal))
            if offset > POSITION_TOL_MM:
                lay.issues.append(
                    f"slice position {pos:.2f} mm ({s[0].name}) is shifted in-plane by {offset:.2f} mm "
                    f"relative to slice 0 ({lay.slices[0][0].name}): not a stack along the normal"
                )
                break
    return lay
