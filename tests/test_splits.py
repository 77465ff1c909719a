"""Tests of cardiolora.data.splits: deterministic, order-independent, patient-level splits."""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from cardiolora.data.acdc import index_acdc
from cardiolora.data.acdc_h5 import index_acdc_h5
from cardiolora.data.records import CaseRecord
from cardiolora.data.splits import SPLIT_NAMES, split_patients, split_records, split_sizes

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def ids(n: int, prefix: str = "patient") -> list[str]:
    return [f"{prefix}{i:03d}" for i in range(1, n + 1)]


def records_of(patients: list[str], group_of: dict[str, str] | None = None, source: str = "acdc") -> list[CaseRecord]:
    """ED and ES records of each patient."""
    return [
        CaseRecord(
            f"{p}_{ph}",
            p,
            ph,
            f"/d/{p}_{ph}.nii.gz",
            f"/d/{p}_{ph}_gt.nii.gz",
            source,
            group=(group_of or {}).get(p),
            meta={"site": "A" if i % 2 else "B"},
        )
        for i, p in enumerate(patients)
        for ph in ("ED", "ES")
    ]


SIZES = [
    # n, ratios, (train, val, test)
    (3, (0.8, 0.1, 0.1), (1, 1, 1)),
    (4, (0.8, 0.1, 0.1), (2, 1, 1)),
    (10, (0.8, 0.1, 0.1), (8, 1, 1)),
    (16, (0.8, 0.1, 0.1), (13, 2, 1)),
    (80, (0.8, 0.1, 0.1), (64, 8, 8)),
    (100, (0.7, 0.15, 0.15), (70, 15, 15)),
    (7, (0.6, 0.2, 0.2), (4, 2, 1)),
    (2, (0.5, 0.5, 0.0), (1, 1, 0)),
    (5, (1.0, 0.0, 0.0), (5, 0, 0)),
    (1, (0.0, 0.0, 1.0), (0, 0, 1)),
]


@pytest.mark.parametrize("n,ratios,expected", SIZES)
def test_sizes(n: int, ratios: tuple[float, float, float], expected: tuple[int, int, int]) -> None:
    assert split_sizes(n, ratios) == expected
    parts = split_patients(ids(n), ratios=ratios)
    assert tuple(len(parts[name]) for name in SPLIT_NAMES) == expected


@pytest.mark.parametrize("n", [3, 10, 16, 80])
@pytest.mark.parametrize("seed", [0, 1, 12345])
def test_disjoint_cover_deterministic_order_independent(n: int, seed: int) -> None:
    patients = ids(n)
    parts = split_patients(patients, seed=seed)
    assert list(parts) == list(SPLIT_NAMES)
    everyone = [p for name in SPLIT_NAMES for p in parts[name]]
    assert sorted(everyone) == patients and len(set(everyone)) == n  # disjoint and covering
    assert all(parts[name] == sorted(parts[name]) for name in SPLIT_NAMES)
    assert split_patients(patients, seed=seed) == parts  # deterministic
    shuffled = patients[::-1]
    random.Random(seed).shuffle(shuffled)
    assert split_patients(shuffled, seed=seed) == parts  # independent of the input order
    assert split_patients(iter(shuffled), seed=seed) == parts  # any iterable


def test_seed_changes_split() -> None:
    patients = ids(80)
    splits = {tuple(split_patients(patients, seed=s)["test"]) for s in range(5)}
    assert len(splits) == 5


def test_split_is_stable_across_runs() -> None:
    """The hash ranking is pinned: the same ids and seed give this split on any machine."""
    parts = split_patients([f"p{i}" for i in range(10)], seed=0)
    assert parts == {"train": ["p0", "p2", "p3", "p4", "p5", "p6", "p7", "p8"], "val": ["p1"], "test": ["p9"]}


SPLIT_ILL = [
    ("sum_not_one", ids(10), {"ratios": (0.8, 0.1, 0.2)}, "must sum to 1"),
    ("negative", ids(10), {"ratios": (1.1, -0.1, 0.0)}, "non-negative"),
    ("two_ratios", ids(10), {"ratios": (0.8, 0.2)}, "must have 3 values"),
    ("nan_ratio", ids(10), {"ratios": (float("nan"), 0.5, 0.5)}, "finite"),
    ("too_few_patients", ids(2), {}, "cannot split 2 patient"),
    ("no_patients", [], {}, "cannot split 0 patient"),
    ("too_few_for_two_parts", ids(1), {"ratios": (0.5, 0.5, 0.0)}, "need at least 2 patients"),
    ("duplicate_ids", ["a", "b", "c", "a", "d"], {}, r"duplicated: \['a'\]"),
    ("empty_id", ["a", "", "c"], {}, "non-empty strings"),
    ("non_string_id", ["a", 3, "c"], {}, "non-empty strings"),
    ("float_seed", ids(10), {"seed": 1.5}, "`seed`"),
    ("strata_missing", ids(5), {"strata": {"patient001": "A"}}, "no stratum for the patient"),
]


@pytest.mark.parametrize("name,patients,kwargs,match", SPLIT_ILL, ids=[c[0] for c in SPLIT_ILL])
def test_split_patients_ill(name: str, patients: list, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        split_patients(patients, **kwargs)


@pytest.mark.parametrize("n_per_group,seed", [(16, 0), (16, 1), (16, 2), (16, 3), (4, 0), (7, 5)])
def test_stratified_split(n_per_group: int, seed: int) -> None:
    groups = ["DCM", "HCM", "MINF", "NOR", "RV"]
    patients = ids(n_per_group * len(groups))
    strata = {p: groups[i % len(groups)] for i, p in enumerate(patients)}
    ratios = (0.8, 0.1, 0.1)
    parts = split_patients(patients, ratios=ratios, seed=seed, strata=strata)
    sizes = split_sizes(len(patients), ratios)
    assert tuple(len(parts[name]) for name in SPLIT_NAMES) == sizes  # sizes unchanged by strata
    assert sorted(p for part in parts.values() for p in part) == sorted(patients)
    for name, ratio in zip(SPLIT_NAMES, ratios, strict=True):
        counts = Counter(strata[p] for p in parts[name])
        for group in groups:
            assert abs(counts[group] - n_per_group * ratio) < 2, (name, group, counts)
    shuffled = list(reversed(patients))
    assert split_patients(shuffled, ratios=ratios, seed=seed, strata=strata) == parts


def test_split_records_patient_level() -> None:
    patients = ids(20)
    records = records_of(patients) + records_of(patients[:5], source="acdc_h5")  # same patients, 2nd layout
    random.Random(0).shuffle(records)
    parts = split_records(records, seed=3)
    side: dict[str, str] = {}
    for name, part in parts.items():
        for r in part:
            assert side.setdefault(r.patient_id, name) == name, f"{r.patient_id} on two sides"
    assert sorted(r.case_id + r.source for part in parts.values() for r in part) == sorted(
        r.case_id + r.source for r in records
    )
    by_patient = split_patients(patients, seed=3)
    assert {name: sorted({r.patient_id for r in part}) for name, part in parts.items()} == by_patient
    assert parts == split_records(list(reversed(records)), seed=3)


@pytest.mark.parametrize("stratify", ["group", "site", lambda r: r.group])
def test_split_records_stratified(stratify: str | Callable[[CaseRecord], object]) -> None:
    groups = ["DCM", "HCM", "MINF", "NOR", "RV"]
    patients = ids(40)
    group_of = {p: groups[i % 5] for i, p in enumerate(patients)}
    parts = split_records(records_of(patients, group_of), seed=0, stratify=stratify)
    assert [len({r.patient_id for r in parts[n]}) for n in SPLIT_NAMES] == [32, 4, 4]
    if stratify != "site":
        assert all(len({r.group for r in parts[n]}) >= 4 for n in SPLIT_NAMES)  # 4 val patients, 4 groups


RECORDS_ILL = [
    ("empty", [], {}, "is empty"),
    ("unknown_key", records_of(ids(5)), {"stratify": "scanner"}, "`stratify` must be a CaseRecord field"),
    ("bad_type", records_of(ids(5)), {"stratify": 3}, "`stratify` must be None"),
    ("too_few_patients", records_of(ids(2)), {}, "cannot split 2 patient"),
    ("bad_ratios", records_of(ids(5)), {"ratios": (0.5, 0.5, 0.5)}, "must sum to 1"),
]


@pytest.mark.parametrize("name,records,kwargs,match", RECORDS_ILL, ids=[c[0] for c in RECORDS_ILL])
def test_split_records_ill(name: str, records: list[CaseRecord], kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        split_records(records, **kwargs)


def test_split_records_inconsistent_stratum() -> None:
    records = records_of(ids(5), {p: "NOR" for p in ids(5)})
    records[1] = CaseRecord.from_dict({**records[1].to_dict(), "group": "DCM"})
    with pytest.raises(ValueError, match="records of patient patient001 disagree"):
        split_records(records, stratify="group")


@pytest.mark.realdata
def test_real_acdc_split() -> None:
    """The 80 HDF5 patients split by group; the NIfTI copies of the same patients follow them."""
    h5_root, nifti_root = SHARED_DATA / "acdc_h5", SHARED_DATA / "acdc"
    if not (h5_root.is_dir() and nifti_root.is_dir()):
        pytest.skip(f"real data folders {h5_root} / {nifti_root} absent (only CI and development machines have them)")
    records = list(index_acdc_h5(h5_root)) + list(index_acdc(nifti_root))
    parts = split_records(records, seed=0, stratify="group")
    patients = {name: {r.patient_id for r in part} for name, part in parts.items()}
    assert [len(patients[n]) for n in SPLIT_NAMES] == [64, 8, 8]
    assert not (
        patients["train"] & patients["val"]
        or patients["train"] & patients["test"]
        or patients["val"] & patients["test"]
    )
    for name in SPLIT_NAMES:
        assert {r.group for r in parts[name]} == {"DCM", "HCM", "MINF", "NOR", "RV"}
        for r in parts[name]:
            assert r.patient_id in patients[name]


# --------------------------------------------------------------------------------------------
# the clinical recipe's split: 70/10/20 % of the patients, every ACDC group in proportion
# --------------------------------------------------------------------------------------------

CLINICAL_RATIOS = (0.7, 0.1, 0.2)
GROUPS = ["DCM", "HCM", "MINF", "NOR", "RV"]


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_clinical_split_puts_every_group_in_every_part_in_proportion(seed: int) -> None:
    """16 patients per group, 70/10/20: every group has 11-12 train, 1-2 val and 3-4 test patients."""
    patients = ids(80)
    group_of = {p: GROUPS[i % 5] for i, p in enumerate(patients)}
    parts = split_records(records_of(patients, group_of), ratios=CLINICAL_RATIOS, seed=seed, stratify="group")
    by_part = {name: {r.patient_id for r in parts[name]} for name in SPLIT_NAMES}
    assert [len(by_part[n]) for n in SPLIT_NAMES] == [56, 8, 16]
    assert not (
        by_part["train"] & by_part["val"] or by_part["train"] & by_part["test"] or by_part["val"] & by_part["test"]
    )
    for name in SPLIT_NAMES:
        assert sorted(r.case_id for r in parts[name]) == sorted(
            f"{p}_{ph}" for p in by_part[name] for ph in ("ED", "ES")
        )
    for name, ratio in zip(SPLIT_NAMES, CLINICAL_RATIOS, strict=True):
        counts = Counter(group_of[p] for p in by_part[name])
        assert set(counts) == set(GROUPS), (name, counts)
        for group in GROUPS:
            assert math.floor(16 * ratio) <= counts[group] <= math.ceil(16 * ratio), (name, group, counts)


def _fake_acdc_h5(root: Path, n_per_group: int = 16) -> dict[str, str]:
    """An ACDC HDF5 folder to index (patients.csv and empty .h5 files: indexing reads no voxels)."""
    root.mkdir(parents=True)
    rows = ["patient,group,ed_frame,es_frame,n_frames,height_cm,weight_kg"]
    group_of = {}
    for i in range(n_per_group * len(GROUPS)):
        pid = f"patient{i + 1:03d}"
        group_of[pid] = GROUPS[i % len(GROUPS)]
        rows.append(f"{pid},{group_of[pid]},1,12,30,170,70")
        for frame in (1, 12):
            (root / f"{pid}_frame{frame:02d}.h5").write_bytes(b"")
    (root / "patients.csv").write_text("\n".join(rows) + "\n")
    return group_of


def test_datalist_command_stratifies_by_group(tmp_path: Path) -> None:
    """`cardiolora datalist --stratify group`: a patient-level, group-stratified datalist, reproducible."""
    from cardiolora.cli import main

    group_of = _fake_acdc_h5(tmp_path / "acdc_h5")
    argv = ["datalist", "--source", str(tmp_path / "acdc_h5"), "--stratify", "group", "--ratios", "0.7", "0.1", "0.2"]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 0
    assert main([*argv, "--out", str(tmp_path / "b")]) == 0
    assert main([*argv, "--out", str(tmp_path / "c"), "--seed", "1"]) == 0
    content = json.loads((tmp_path / "a" / "datalist.json").read_text())
    assert content["meta"]["stratify"] == "group" and content["meta"]["ratios"] == [0.7, 0.1, 0.2]
    sides: dict[str, str] = {}
    for name in SPLIT_NAMES:
        for entry in content[name]:
            assert sides.setdefault(entry["patient_id"], name) == name, f"{entry['patient_id']} on two sides"
            assert not Path(entry["image"]).is_absolute()  # relative to the dataset folder, as site_datalist
    for name, ratio in zip(SPLIT_NAMES, CLINICAL_RATIOS, strict=True):
        counts = Counter(group_of[p] for p, side in sides.items() if side == name)
        assert all(math.floor(16 * ratio) <= counts[g] <= math.ceil(16 * ratio) for g in GROUPS), (name, counts)
    again = json.loads((tmp_path / "b" / "datalist.json").read_text())
    assert [content[n] for n in SPLIT_NAMES] == [again[n] for n in SPLIT_NAMES]  # deterministic
    other = json.loads((tmp_path / "c" / "datalist.json").read_text())
    assert {e["patient_id"] for e in other["test"]} != {e["patient_id"] for e in content["test"]}


@pytest.mark.realdata
def test_real_acdc_clinical_split() -> None:
    """The split of `make clinical-pretrain` on the 80 HDF5 patients: 56/8/16, every group in every part."""
    h5_root = SHARED_DATA / "acdc_h5"
    if not h5_root.is_dir():
        pytest.skip(f"real data folder {h5_root} absent (only CI and development machines have them)")
    parts = split_records(index_acdc_h5(h5_root), ratios=CLINICAL_RATIOS, seed=0, stratify="group")
    patients = {name: {r.patient_id for r in part} for name, part in parts.items()}
    assert [len(patients[n]) for n in SPLIT_NAMES] == [56, 8, 16]
    assert not (
        patients["train"] & patients["val"]
        or patients["train"] & patients["test"]
        or patients["val"] & patients["test"]
    )
    for name, ratio in zip(SPLIT_NAMES, CLINICAL_RATIOS, strict=True):
        counts = Counter(r.group for r in parts[name] if r.phase == "ED")
        assert set(counts) == set(GROUPS)
        assert all(math.floor(16 * ratio) <= c <= math.ceil(16 * ratio) for c in counts.values()), (name, counts)
