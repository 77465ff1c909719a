"""Deterministic patient-level train / validation / test splits.

Everything of one patient (its ED and ES frames, all their slices, and the same patient in
another layout of the same data set, e.g. ACDC NIfTI and ACDC HDF5) lands on one side.

Algorithm (:func:`split_patients`):

1. **Sizes.** With ``n`` patients and ratios ``r``, part ``i`` gets ``floor(n * r_i)``
   patients; the patients left over go one each to the parts with the largest remainders
   ``n * r_i - floor(n * r_i)`` (ties to the earlier part: train, then val, then test) --
   largest-remainder (Hamilton) rounding. Then every part with a non-zero ratio that got no
   patient takes one from the largest part, so with the default ratios any ``n >= 3`` gives at
   least one validation and one test patient (``n = 3 -> 1/1/1``, ``4 -> 2/1/1``,
   ``10 -> 8/1/1``, ``16 -> 13/2/1``, ``80 -> 64/8/8``).
2. **Order.** Patients are ranked by ``sha256(f"{seed}:{patient_id}")``, which depends only
   on the id and the seed: the split is the same for the same set of ids and seed whatever the
   input order, on every platform and Python version. The first block of the ranking is train,
   the next val, the rest test.
3. **Strata** (optional, e.g. the ACDC group or the M&Ms-2 vendor): each stratum is ranked by
   the hash on its own, and the patient of rank ``k`` in a stratum of ``n_s`` gets the position
   ``(k + 0.5) / n_s``; all patients are ordered by position (ties by the hash of the stratum
   name, the same at every position, then of the patient) and cut into the blocks of step 1.
   The sizes of the parts are unchanged and every stratum is spread over the parts in
   proportion: its count in a part is within 2 of its quota ``n_s * r_i`` (16 patients in each
   of 5 groups with ``80/10/10``: 12 or 13 train, 1 or 2 val, 1 or 2 test per group; with
   ``70/10/20``, the split of the clinical recipe, 11 or 12 train, 1 or 2 val, 3 or 4 test).
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence

from cardiolora.data.records import CaseRecord

__all__ = ["SPLIT_NAMES", "split_sizes", "split_patients", "split_records"]

#: Names (and order) of the parts of a split.
SPLIT_NAMES: tuple[str, str, str] = ("train", "val", "test")

_RATIO_TOL = 1e-6


def _check_ratios(ratios: Sequence[float]) -> tuple[float, float, float]:
    """Validate `ratios`: three finite non-negative numbers summing to 1."""
    values = tuple(float(r) for r in ratios)
    if len(values) != len(SPLIT_NAMES):
        raise ValueError(f"`ratios` must have {len(SPLIT_NAMES)} values {SPLIT_NAMES}, got {ratios!r}.")
    if not all(math.isfinite(r) for r in values):
        raise ValueError(f"`ratios` must be finite, got {ratios!r}.")
    if any(r < 0 for r in values):
        raise ValueError(f"`ratios` must be non-negative, got {ratios!r}.")
    if abs(sum(values) - 1.0) > _RATIO_TOL:
        raise ValueError(f"`ratios` must sum to 1, got {ratios!r} (sum {sum(values):.6g}).")
    return values[0], values[1], values[2]


def split_sizes(n: int, ratios: Sequence[float] = (0.8, 0.1, 0.1)) -> tuple[int, int, int]:
    """Number of patients in train, val and test for `n` patients (step 1 of the module docstring).

    Args:
        n: number of patients, at least the number of non-zero ratios.
        ratios: fractions of (train, val, test), non-negative, summing to 1.

    Returns:
        ``(n_train, n_val, n_test)``, summing to `n`; every part with a non-zero ratio is non-empty.

    Raises:
        ValueError: if `ratios` are not 3 non-negative numbers summing to 1, or `n` is smaller
            than the number of non-zero ratios.

    Example:
        >>> split_sizes(16)
        (13, 2, 1)
    """
    values = _check_ratios(ratios)
    needed = sum(1 for r in values if r > 0)
    if n < needed:
        raise ValueError(
            f"cannot split {n} patient(s) into {needed} non-empty parts (ratios {tuple(ratios)}); "
            f"need at least {needed} patients."
        )
    sizes = _largest_remainder([n * r for r in values], n)
    for i, r in enumerate(values):
        if r > 0 and sizes[i] == 0:
            donor = max(range(len(sizes)), key=lambda j: (sizes[j], -j))
            sizes[donor] -= 1
            sizes[i] += 1
    return sizes[0], sizes[1], sizes[2]


def _largest_remainder(quotas: Sequence[float], total: int) -> list[int]:
    """Round `quotas` (summing to `total`) to integers summing to `total` (Hamilton's method)."""
    sizes = [int(math.floor(q + 1e-9)) for q in quotas]
    order = sorted(range(len(quotas)), key=lambda i: (-(quotas[i] - sizes[i]), i))
    for i in order[: total - sum(sizes)]:
        sizes[i] += 1
    return sizes


def _rank(ids: Iterable[str], seed: int) -> list[str]:
    """Order ids by ``sha256(f"{seed}:{id}")`` (ties, impossible in practice, by id)."""

    def key(pid: str) -> tuple[str, str]:
        return hashlib.sha256(f"{seed}:{pid}".encode()).hexdigest(), pid

    return sorted(ids, key=key)


def split_patients(
    patient_ids: Iterable[str],
    ratios: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    strata: Mapping[str, str] | None = None,
) -> dict[str, list[str]]:
    """Split patient ids into train / val / test, deterministically (see the module docstring).

    Args:
        patient_ids: unique, non-empty patient ids, in any order.
        ratios: fractions of (train, val, test): non-negative, summing to 1 (within 1e-6).
        seed: integer seed; another seed gives another split of the same sizes.
        strata: optional ``{patient_id: stratum}`` (e.g. the ACDC group) to spread every stratum
            over the parts in proportion; must cover every patient.

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}``, each list sorted; the parts are
        disjoint and cover `patient_ids`. Sizes are :func:`split_sizes` of the number of patients.

    Raises:
        ValueError: if `ratios` are invalid (wrong length, negative, not summing to 1), there
            are fewer patients than non-zero ratios, an id is duplicated, empty or not a string,
            or `strata` misses a patient.

    Example:
        >>> parts = split_patients([f"p{i}" for i in range(10)], seed=0)
        >>> parts["val"], parts["test"], len(parts["train"])
        (['p1'], ['p9'], 8)
    """
    ids = list(patient_ids)
    bad = [pid for pid in ids if not isinstance(pid, str) or not pid]
    if bad:
        raise ValueError(f"`patient_ids` must be non-empty strings, got {bad[:5]!r}.")
    duplicates = sorted(pid for pid, count in Counter(ids).items() if count > 1)
    if duplicates:
        raise ValueError(f"`patient_ids` must be unique; duplicated: {duplicates[:10]}.")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"`seed` must be an integer, got {seed!r}.")
    values = _check_ratios(ratios)
    totals = split_sizes(len(ids), values)
    out: dict[str, list[str]] = {name: [] for name in SPLIT_NAMES}
    if strata is None:
        ranked = _rank(ids, seed)
        start = 0
        for name, size in zip(SPLIT_NAMES, totals, strict=True):
            out[name] = sorted(ranked[start : start + size])
            start += size
        return out
    missing = [pid for pid in ids if pid not in strata]
    if missing:
        raise ValueError(f"`strata` has no stratum for the patient(s) {sorted(missing)[:10]}.")
    members: dict[str, list[str]] = {}
    for pid in ids:
        members.setdefault(str(strata[pid]), []).append(pid)
    position: dict[str, float] = {}
    for group in members.values():
        for k, pid in enumerate(_rank(group, seed)):
            position[pid] = (k + 0.5) / len(group)
    stratum_order = {s: i for i, s in enumerate(_rank(members, seed))}
    patient_order = {pid: i for i, pid in enumerate(_rank(ids, seed))}
    ranked = sorted(ids, key=lambda pid: (position[pid], stratum_order[str(strata[pid])], patient_order[pid]))
    start = 0
    for name, size in zip(SPLIT_NAMES, totals, strict=True):
        out[name] = ranked[start : start + size]
        start += size
    return {name: sorted(part) for name, part in out.items()}


def split_records(
    records: Iterable[CaseRecord],
    ratios: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    stratify: str | Callable[[CaseRecord], object] | None = None,
) -> dict[str, list[CaseRecord]]:
    """Split records by patient with :func:`split_patients`.

    Args:
        records: records of one or several sources; records sharing a ``patient_id`` (ED and ES,
            the same patient in two layouts) always go to the same part.
        ratios: fractions of (train, val, test) of the *patients*.
        seed: integer seed.
        stratify: ``None``; the name of a :class:`CaseRecord` attribute (``"group"``,
            ``"vendor"``, ``"source"``) or of a ``meta`` key; or a function of a record. Its
            value (``None`` included) is the patient's stratum and must agree across the
            records of a patient.

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}`` of records, each sorted by
        ``(patient_id, case_id, source)``.

    Raises:
        ValueError: as :func:`split_patients`; if `records` is empty, `stratify` names neither
            an attribute nor a meta key of the records, or a patient's records disagree on it.
    """
    items = list(records)
    if not items:
        raise ValueError("`records` is empty: nothing to split.")
    strata: dict[str, str] | None = None
    if stratify is not None:
        key = _stratum_key(stratify, items)
        strata = {}
        for record in items:
            value = str(key(record))
            previous = strata.setdefault(record.patient_id, value)
            if previous != value:
                raise ValueError(
                    f"records of patient {record.patient_id} disagree on `stratify` ({stratify!r}): "
                    f"{previous!r} vs {value!r} ({record.case_id})."
                )
    patients = sorted({r.patient_id for r in items})
    parts = split_patients(patients, ratios=ratios, seed=seed, strata=strata)
    side = {pid: name for name, pids in parts.items() for pid in pids}
    out: dict[str, list[CaseRecord]] = {name: [] for name in SPLIT_NAMES}
    for record in sorted(items, key=lambda r: (r.patient_id, r.case_id, r.source)):
        out[side[record.patient_id]].append(record)
    return out


def _stratum_key(
    stratify: str | Callable[[CaseRecord], object], records: Sequence[CaseRecord]
) -> Callable[[CaseRecord], object]:
    """Turn `stratify` into a function of a record."""
    if callable(stratify):
        return stratify
    if not isinstance(stratify, str):
        raise ValueError(f"`stratify` must be None, a field name or a function, got {stratify!r}.")
    if stratify in CaseRecord.__dataclass_fields__ and stratify != "meta":
        return lambda r: getattr(r, stratify)
    if all(stratify in r.meta for r in records):
        return lambda r: r.meta[stratify]
    fields = sorted(f for f in CaseRecord.__dataclass_fields__ if f != "meta")
    raise ValueError(
        f"`stratify` must be a CaseRecord field {fields} or a key present in every record's meta, got {stratify!r}."
    )
