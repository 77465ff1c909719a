"""Stage 2a of the DICOM chain: a short-axis stack split over several series, assembled into one.

Siemens scanners and large cohort exports often store a short-axis cine as **one series per slice
position**, each a full cine at one location, with the same or numbered SeriesDescriptions
(``sax_5``, ``sax_6`` ... or ``CINE_segmented_SAX_b1`` ... ``_b12``). :func:`assemble_stacks` finds
them in one study and offers each group as one :class:`~cardiolora.dicom.scan.SeriesInfo`
(``assembled_by`` names the grouping rule), which then takes part in series selection like any
other series.

Grouping rule: single-position MR cine series (>= 2 phases, not localisers, complete geometry)
of one study with the same Rows × Columns, the same number of phases and the same description
*stem* (the SeriesDescription without a trailing slice number: ``sax_5`` → ``sax``,
``CINE_segmented_SAX_b3`` → ``CINE_segmented_SAX``) form a candidate; at least 2 distinct
positions are needed. The geometry of the assembled frames is then checked like any series
(same orientation, parallel planes, evenly spaced positions along the normal, same pixel
spacing): a candidate that fails is still offered, with its reasons, so a refusal says why.

Re-acquired slices: when two series of a group lie at the same position, the later acquisition
(higher SeriesNumber, then later AcquisitionTime) is kept and ``notes`` says which was dropped.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from cardiolora.dicom.geometry import POSITION_TOL_MM, unit
from cardiolora.dicom.scan import SeriesInfo, frame_fields

__all__ = ["RULE_NUMBERED", "RULE_SAME", "assemble_stacks", "description_stem"]

#: Grouping rule names written in the report.
RULE_SAME = "one-series-per-slice: same SeriesDescription"
RULE_NUMBERED = "one-series-per-slice: SeriesDescription numbered by slice"
_TRAILING_NUMBER = re.compile(r"[\s_\-]*(?:b|s|sl|slice)?[\s_\-]*\d+\s*$", re.IGNORECASE)


def description_stem(description: str) -> str:
    """`description` without a trailing slice number (``"sax_5"`` → ``"sax"``)."""
    stem = _TRAILING_NUMBER.sub("", description.strip())
    return stem if stem else description.strip()


def _single_position_cine(info: SeriesInfo) -> bool:
    return (
        info.n_positions == 1
        and info.n_phases >= 2
        and (not info.modality or info.modality.upper() == "MR")
        and not info.is_localizer
        and not info.geometry_issues
        and not info.assembled_by
    )


def _acquisition_key(info: SeriesInfo) -> tuple[int, str]:
    times = [f.acquisition_time for f in info.frames if f.acquisition_time]
    return (info.series_number if info.series_number is not None else -1, max(times, default=""))


def _keep_latest(members: list[SeriesInfo]) -> tuple[list[SeriesInfo], list[str]]:
    """One series per position: the later acquisition; notes name the dropped ones."""
    ref = next(m for m in members if m.orientation is not None)
    o = np.asarray(ref.orientation, dtype=float)
    normal = unit(np.cross(unit(o[:3]), unit(o[3:])))
    placed = sorted(members, key=lambda m: float(np.dot(m.frames[0].position, normal)))
    groups: list[list[SeriesInfo]] = []
    last = None
    for m in placed:
        p = float(np.dot(m.frames[0].position, normal))
        if groups and last is not None and p - last <= POSITION_TOL_MM:
            groups[-1].append(m)
        else:
            groups.append([m])
        last = p
    kept, notes = [], []
    for g in groups:
        best = max(g, key=_acquisition_key)
        kept.append(best)
        for other in g:
            if other is not best:
                p = float(np.dot(best.frames[0].position, normal))
                notes.append(
                    f"slice at {p:.2f} mm was acquired twice: {other.label} and {best.label}; kept the later "
                    f"acquisition {best.label}"
                )
    return kept, notes


def assemble_stacks(series: Sequence[SeriesInfo]) -> list[SeriesInfo]:
    """The stacks that one-series-per-slice cines of one study form (module docstring).

    Args:
        series: the series of one study.

    Returns:
        One assembled :class:`SeriesInfo` per group of >= 2 distinct positions (possibly with
        ``issues`` when their geometry does not form a stack); empty when there is none.
    """
    groups: dict[tuple[str, int, int, int], list[SeriesInfo]] = {}
    for info in series:
        if _single_position_cine(info):
            key = (description_stem(info.description).casefold(), info.rows, info.columns, info.n_phases)
            groups.setdefault(key, []).append(info)
    stacks = []
    for members in groups.values():
        if len(members) < 2:
            continue
        kept, notes = _keep_latest(members)
        if len(kept) < 2:
            continue
        kept.sort(key=lambda m: m.series_number if m.series_number is not None else -1)
        same = len({m.description for m in kept}) == 1
        first = kept[0]
        frames = [f for m in kept for f in m.frames]
        numbers = [str(m.series_number) for m in kept if m.series_number is not None]
        stacks.append(
            replace(
                first,
                description=description_stem(first.description),
                series_number=first.series_number,
                source_series=tuple(m.series_uid for m in kept),
                assembled_by=RULE_SAME if same else RULE_NUMBERED,
                notes=tuple(notes),
                problems=tuple(p for m in kept for p in m.problems),
                image_type=first.image_type,
                **frame_fields(frames),
            )
        )
        if numbers:
            stacks[-1] = replace(stacks[-1], header={**first.header, "StackSeriesNumbers": ", ".join(numbers)})
    return stacks
