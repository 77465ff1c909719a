"""Stage 2 of the DICOM chain: pick the short-axis cine of a study, by rules a site can change.

In the spirit of MONAI Deploy's ``DICOMSeriesSelectorOperator``, the choice is data, not code: a
JSON *rules file* (the default is :data:`DEFAULT_RULES_FILE`, ``series_rules.json`` beside this
module) lists named rules, each a set of conditions on a series. Selection is:

1. **Qualify** (:func:`rejection_reasons`): an MR series (not a localiser) with complete geometry,
   parallel planes, >= 2 slice positions and >= 2 phases at every position. These are structural
   needs of a cine volume and are not rules.
2. **Rules, in order**: the first rule that matches at least one qualifying series picks among
   the series it matches; ties go to more positions × phases (with ``drop``: those kept), then
   more positions, then more acquired positions, then ORIGINAL over DERIVED ImageType, then the
   higher SeriesNumber (the later, repeated acquisition).
   The report names the rule (``SelectedSeries.rule``).

A stack split over several series (one series per slice position, e.g. ``sax_5``, ``sax_6`` ...)
is assembled first (:mod:`cardiolora.dicom.stack`) and takes part as one series.

Rules file::

    {"version": 1,
     "rules": [{"name": "my-sax", "description": "...",
                "conditions": {"Modality": "^MR$",
                               "SeriesDescription": {"regex": "sax|short", "not_regex": "loc"},
                               "ImageType": {"not_regex": "DERIVED"},
                               "n_positions": {"min": 6},
                               "trigger_times_vary": true}}]}

Condition keys: a DICOM keyword of the series' first instance (``Modality``,
``SeriesDescription``, ``ProtocolName``, ``ImageType`` (any value matches), ``SOPClassUID``,
``SeriesNumber``, ``Manufacturer`` ...), ``DescriptionOrProtocol`` (SeriesDescription and
ProtocolName together), or a derived property: ``n_positions``, ``n_phases``, ``n_frames``
(numbers), ``trigger_times_vary``, ``original``, ``multi_series_stack``, ``multiframe`` (true /
false), ``plane`` (``axial``, ``coronal``, ``sagittal`` or ``oblique``: the slice normal within
15 degrees of a patient axis, else oblique). Values: a string is a case-insensitive regular
expression searched in the text; ``{"regex": ..., "not_regex": ...}`` either or both; a number is
equality; ``{"min": a, "max": b}`` a range; a list is "any of" (case-insensitive equality);
true / false for the flags.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cardiolora.dicom.scan import ScanResult, SeriesInfo, plural
from cardiolora.errors import InputError

__all__ = [
    "DEFAULT_RULES_FILE",
    "INCOMPLETE_POSITION_POLICIES",
    "Rule",
    "SelectedSeries",
    "check_policy",
    "count_reasons",
    "load_rules",
    "rejection_reasons",
    "select_short_axis_cine",
]

#: The default rules (today's heuristics as data).
DEFAULT_RULES_FILE = Path(__file__).with_name("series_rules.json")
#: What the reader does with slice positions that lack phases (see :func:`~cardiolora.dicom.volume.read_cine`).
INCOMPLETE_POSITION_POLICIES: tuple[str, ...] = ("raise", "drop")
_FLAGS = ("trigger_times_vary", "original", "multi_series_stack", "multiframe")
_NUMBERS = ("n_positions", "n_phases", "n_frames")
_PLANES = ("axial", "coronal", "sagittal", "oblique")
_PLANE_TOL_DEG = 15.0


@dataclass(frozen=True)
class Rule:
    """One named selection rule (module docstring).

    Attributes:
        name: how the report names it.
        description: what it is for.
        conditions: keyword or property → condition value.
    """

    name: str
    description: str
    conditions: Mapping[str, object]

    def failed(self, info: SeriesInfo) -> list[str]:
        """The conditions `info` does not meet (empty: the rule matches)."""
        return [key for key, cond in self.conditions.items() if not _meets(_value(info, key), cond)]


@dataclass(frozen=True)
class SelectedSeries:
    """The series chosen, and why.

    Attributes:
        series: the chosen series (or assembled stack).
        rule: the name of the rule that picked it (``"--series"`` when named by the user).
        rules_file: the rules file used.
    """

    series: SeriesInfo
    rule: str
    rules_file: str


def _plane(info: SeriesInfo) -> str:
    if info.orientation is None:
        return ""
    o = np.asarray(info.orientation, dtype=float)
    normal = np.cross(o[:3], o[3:])
    normal = normal / np.linalg.norm(normal)
    axis = int(np.argmax(np.abs(normal)))
    if math.degrees(math.acos(min(1.0, abs(float(normal[axis]))))) > _PLANE_TOL_DEG:
        return "oblique"
    return ("sagittal", "coronal", "axial")[axis]


def _value(info: SeriesInfo, key: str) -> object:
    """The value a condition on `key` tests."""
    derived: dict[str, object] = {
        "Modality": info.modality,
        "SeriesDescription": info.description,
        "ProtocolName": info.protocol_name,
        "DescriptionOrProtocol": f"{info.description} {info.protocol_name}".strip(),
        "ImageType": list(info.image_type),
        "SOPClassUID": info.sop_class_uid,
        "SeriesNumber": info.series_number,
        "n_positions": info.n_positions,
        "n_phases": info.n_phases,
        "n_frames": len(info.frames),
        "trigger_times_vary": info.trigger_times_vary,
        "original": bool(info.image_type) and info.image_type[0] == "ORIGINAL",
        "multi_series_stack": bool(info.assembled_by),
        "multiframe": info.multiframe,
        "plane": _plane(info),
    }
    return derived[key] if key in derived else info.header.get(key, "")


def _meets(value: object, cond: object) -> bool:
    """Whether `value` meets `cond` (module docstring; lists of values: any one)."""
    if isinstance(value, list):
        if isinstance(cond, Mapping) and "not_regex" in cond:
            return all(_meets(v, {"not_regex": cond["not_regex"]}) for v in value) and (
                "regex" not in cond or any(_meets(v, {"regex": cond["regex"]}) for v in value)
            )
        return any(_meets(v, cond) for v in value) if value else _meets("", cond)
    if isinstance(cond, bool):
        return bool(value) is cond
    if isinstance(cond, (int, float)):
        return value is not None and not isinstance(value, str) and float(value) == float(cond)  # type: ignore[arg-type]
    if isinstance(cond, str):
        return re.search(cond, "" if value is None else str(value), re.IGNORECASE) is not None
    if isinstance(cond, list):
        return str(value).casefold() in {str(c).casefold() for c in cond}
    if isinstance(cond, Mapping):
        ok = True
        if "regex" in cond:
            ok &= re.search(str(cond["regex"]), str(value or ""), re.IGNORECASE) is not None
        if "not_regex" in cond:
            ok &= re.search(str(cond["not_regex"]), str(value or ""), re.IGNORECASE) is None
        if "min" in cond:
            ok &= value is not None and float(value) >= float(cond["min"])  # type: ignore[arg-type]
        if "max" in cond:
            ok &= value is not None and float(value) <= float(cond["max"])  # type: ignore[arg-type]
        return ok
    return False


def _check_condition(where: str, key: str, cond: object) -> None:
    """Raise naming `where` and `key` when a condition is not of the documented forms."""
    if key in _FLAGS and not isinstance(cond, bool):
        raise InputError(f"{where}: condition `{key}` must be true or false, got {cond!r}.")
    if key == "plane" and not (isinstance(cond, str) and cond in _PLANES) and not isinstance(cond, list):
        raise InputError(f"{where}: condition `plane` must be one of {list(_PLANES)}, got {cond!r}.")
    if isinstance(cond, Mapping):
        unknown = sorted(set(cond) - {"regex", "not_regex", "min", "max"})
        if unknown or not cond:
            raise InputError(f"{where}: condition `{key}` has unknown keys {unknown}; use regex, not_regex, min, max.")
        for k in ("min", "max"):
            if k in cond and (isinstance(cond[k], bool) or not isinstance(cond[k], (int, float))):
                raise InputError(f"{where}: condition `{key}`.{k} must be a number, got {cond[k]!r}.")
    regexes = (
        [cond]
        if isinstance(cond, str)
        else [cond.get(k) for k in ("regex", "not_regex")]
        if isinstance(cond, Mapping)
        else []
    )
    for rx in regexes:
        if rx is None:
            continue
        try:
            re.compile(str(rx))
        except re.error as exc:
            raise InputError(f"{where}: condition `{key}` has an invalid regular expression {rx!r}: {exc}.") from exc
    if key in _NUMBERS and isinstance(cond, str):
        raise InputError(f'{where}: condition `{key}` is a number; use a number or {{"min": .., "max": ..}}.')


def load_rules(source: str | os.PathLike | Sequence[Mapping] | None = None) -> tuple[list[Rule], str]:
    """Read and check a rules file (or a list of rule dicts from a site config).

    Args:
        source: a JSON file, a list of rule objects, or ``None`` for :data:`DEFAULT_RULES_FILE`.

    Returns:
        ``(rules, where)``: the rules in order and the file (or ``"site config"``) they came from.

    Raises:
        InputError: naming the file and the rule / field, if the file is missing or not JSON,
            ``rules`` is not a non-empty list, a rule lacks a unique ``name`` or ``conditions``,
            or a condition is malformed (bad regular expression, unknown keys, wrong type).
    """
    if source is None or isinstance(source, (str, os.PathLike)):
        path = Path(source) if source is not None else DEFAULT_RULES_FILE
        where = str(path)
        try:
            data = json.loads(path.read_text())
        except OSError as exc:
            raise InputError(f"series rules {path}: cannot be read ({exc.strerror or exc}).") from exc
        except ValueError as exc:
            raise InputError(f"series rules {path}: not valid JSON ({exc}).") from exc
        items = data.get("rules") if isinstance(data, dict) else None
    else:
        where, items = "site config series_rules", list(source)
    if not isinstance(items, list) or not items:
        raise InputError(f"series rules {where}: `rules` must be a non-empty list of rules.")
    rules, names = [], set()
    for i, item in enumerate(items):
        at = f"series rules {where}, rule {i + 1}"
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str) or not item["name"].strip():
            raise InputError(f"{at}: each rule needs a `name` (text).")
        at = f"series rules {where}, rule '{item['name']}'"
        if item["name"] in names:
            raise InputError(f"{at}: the name is used twice.")
        conditions = item.get("conditions")
        if not isinstance(conditions, Mapping):
            raise InputError(f"{at}: `conditions` must be an object of keyword -> condition.")
        for key, cond in conditions.items():
            _check_condition(at, key, cond)
        names.add(item["name"])
        rules.append(Rule(item["name"], str(item.get("description", "")), dict(conditions)))
    return rules, where


def check_policy(incomplete_positions: str) -> None:
    """Raise :class:`InputError` unless `incomplete_positions` is a known policy."""
    if incomplete_positions not in INCOMPLETE_POSITION_POLICIES:
        raise InputError(
            f"`incomplete_positions` must be one of {list(INCOMPLETE_POSITION_POLICIES)}, got {incomplete_positions!r}."
        )


def count_reasons(
    n_positions: int, n_phases: int, min_positions: int = 2, per_position: Sequence[int] = ()
) -> list[str]:
    """Reasons about too few slice positions or phases (a cine stack needs >= 2 of each).

    Args:
        n_positions: slice positions that count.
        n_phases: the fewest phases at one of them.
        min_positions: positions needed.
        per_position: phases at every position, to say which hold too few when they differ.

    Returns:
        The reasons (empty when the counts suffice).
    """
    reasons = []
    if n_positions < min_positions:
        reasons.append(f"{plural(n_positions, 'slice position')} (need >= {min_positions})")
    if n_phases < 2:
        if len(set(per_position)) > 1:
            few = sum(1 for n in per_position if n < 2)
            reasons.append(
                f"{few} of {len(per_position)} slice positions hold fewer than 2 phases (phases per position: "
                f"{', '.join(str(n) for n in per_position)}; a cine needs >= 2 at every position)"
            )
        else:
            reasons.append(f"{plural(n_phases, 'phase')} per slice position (need >= 2 for a cine)")
    return reasons


def rejection_reasons(info: SeriesInfo, incomplete_positions: str = "raise") -> list[str]:
    """Why `info` cannot be a short-axis cine volume (empty when it qualifies).

    Args:
        info: a series (or assembled stack).
        incomplete_positions: ``"raise"`` or ``"drop"`` (with ``"drop"`` only the positions
            holding the full phase set count, at least 1 of them).

    Returns:
        The reasons, e.g. ``["1 slice position (need >= 2)"]``; duplicate phases are named as
        duplicates.

    Raises:
        InputError: if `incomplete_positions` is unknown.
    """
    check_policy(incomplete_positions)
    reasons = []
    if info.modality and info.modality.upper() != "MR":
        reasons.append(f"modality {info.modality} (need MR)")
    if info.is_localizer:
        reasons.append("a localizer (ImageType LOCALIZER)")
    reasons.extend(f"missing geometry: {g}" for g in info.geometry_issues)
    reasons.extend(info.orientation_issues)
    if incomplete_positions == "drop" and info.phases_per_position:
        full = max(info.phases_per_position)
        n_full = sum(1 for n in info.phases_per_position if n == full)
        counts = count_reasons(n_full, full, min_positions=1)
    else:
        counts = count_reasons(info.n_positions, info.n_phases, per_position=info.phases_per_position)
    # Identical duplicates are dropped when the pixels are read; they matter here when they are
    # why a position holds too few phases.
    if counts and info.duplicate_issue:
        counts.append(info.duplicate_issue)
    return reasons + counts


def _tie_key(info: SeriesInfo, incomplete_positions: str) -> tuple[int, ...]:
    """Ties among matches: the volume read (positions x phases, with ``drop`` the kept ones), its
    positions, every acquired position, ORIGINAL over DERIVED, then the higher SeriesNumber."""
    counts = info.phases_per_position
    if incomplete_positions == "drop" and counts:
        positions, phases = sum(1 for n in counts if n == max(counts)), max(counts)
    else:
        positions, phases = info.n_positions, info.n_phases
    original = int(bool(info.image_type) and info.image_type[0] == "ORIGINAL")
    number = info.series_number if info.series_number is not None else -1
    return (positions * phases, positions, info.n_positions, original, number)


def _named(infos: Sequence[SeriesInfo], name: str | int) -> SeriesInfo:
    """The one series named by SeriesInstanceUID, SeriesNumber or SeriesDescription."""
    text = str(name).strip()
    real = [s for s in infos if not s.assembled_by]
    for pool, test in (
        (real, lambda s: s.series_uid == text),
        (real, lambda s: s.series_number is not None and str(s.series_number) == text),
        (infos, lambda s: s.description.casefold() == text.casefold()),
    ):
        matches = [s for s in pool if test(s)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            stacks = [s for s in matches if s.assembled_by]
            if len(stacks) == 1:  # the description of a one-series-per-slice stack names the stack
                return stacks[0]
            listed = "; ".join(f"{s.label} (SeriesInstanceUID {s.series_uid})" for s in matches)
            raise InputError(
                f"`series` {name!r} names {len(matches)} series: {listed}. Name one by its SeriesInstanceUID."
            )
    available = "; ".join(s.summary() for s in infos) or "none"
    raise InputError(
        f"`series` {name!r} matches no SeriesInstanceUID, SeriesNumber or SeriesDescription. Available: {available}."
    )


def select_short_axis_cine(
    series_list: ScanResult | Sequence[SeriesInfo],
    series: str | int | None = None,
    incomplete_positions: str = "raise",
    rules: str | os.PathLike | Sequence[Mapping] | None = None,
) -> SelectedSeries:
    """Pick the short-axis cine series (or check the one the user names).

    Args:
        series_list: a :class:`ScanResult` or the series of one study (assembled stacks included).
        series: ``None`` to choose by the rules, or the SeriesInstanceUID, SeriesNumber or
            SeriesDescription (case-insensitive) of the series to use.
        incomplete_positions: ``"raise"`` or ``"drop"`` (see :func:`rejection_reasons`).
        rules: a rules file, a list of rule objects, or ``None`` for the defaults.

    Returns:
        The chosen series and the name of the rule that chose it.

    Raises:
        InputError: if there is no image series (listing the problem files), `series` names none
            or several series, the named series does not qualify (with the reasons), the rules are
            malformed, or no qualifying series matches a rule (every series listed with its
            reasons or the rules it failed).
    """
    check_policy(incomplete_positions)
    rule_list, where = load_rules(rules)
    scan = series_list if isinstance(series_list, ScanResult) else None
    infos = list(scan.series if scan is not None else series_list)
    if not infos:
        loc = f" in {scan.root} ({plural(scan.n_files, 'file')})" if scan is not None else ""
        detail = ""
        if scan is not None and (scan.problems or scan.skipped):
            detail = " Files left out: " + "; ".join(str(p) for p in [*scan.problems, *scan.skipped][:10])
        raise InputError(f"no DICOM image series found{loc}.{detail}")
    if series is not None:
        chosen = _named(infos, series)
        reasons = rejection_reasons(chosen, incomplete_positions)
        if reasons:
            raise InputError(f"{chosen.label} is not a short-axis cine: {'; '.join(reasons)}.")
        return SelectedSeries(chosen, "--series", where)
    candidates = [s for s in infos if not rejection_reasons(s, incomplete_positions)]
    for rule in rule_list:
        matched = [s for s in candidates if not rule.failed(s)]
        if matched:
            best = max(matched, key=lambda m: _tie_key(m, incomplete_positions))
            return SelectedSeries(best, rule.name, where)
    listed = []
    for s in infos:
        reasons = rejection_reasons(s, incomplete_positions)
        if not reasons:
            reasons = [f"matched no rule of {where} (" + ", ".join(f"{r.name}: {r.failed(s)}" for r in rule_list) + ")"]
        listed.append(f"{s.label}: {', '.join(reasons)}")
    raise InputError(f"no short-axis cine series found among {len(infos)} series: {'; '.join(listed)}.")
