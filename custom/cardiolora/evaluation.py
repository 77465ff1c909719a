"""Case-level evaluation as the paper reports it (Dice, VOE, HD, HD95, ASSD per structure).

Used by the bundle's ``evaluate.json``, by the federated clients (the score P_t^c of a candidate
model on a site's validation split is the mean foreground Dice over its cases) and by the
experiment harness.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from cardiolora.data.loaders import CaseRecord, load_case
from cardiolora.labels import STRUCTURES
from cardiolora.metrics import METRICS, aggregate_scores, dice, segmentation_scores
from cardiolora.predict import predict_zyx
from cardiolora.profiles import Profile

__all__ = ["evaluate_records", "score_records", "evaluate_to_files", "mean_fg_dice_3d"]


def mean_fg_dice_3d(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean 3D Dice over LV, MYO and RV of one case: ``(1/3) Σ_s Dice(pred == s, gt == s)``.

    A structure absent from both counts 1 (`cardiolora.metrics` empty-structure policy).

    Args:
        pred: predicted label map.
        gt: ground-truth label map of the same shape.

    Returns:
        The mean Dice in [0, 1].
    """
    return float(np.mean([dice(pred == s, gt == s) for s in STRUCTURES]))


def _as_record(entry: CaseRecord | Mapping) -> CaseRecord:
    return entry if isinstance(entry, CaseRecord) else CaseRecord.from_dict(dict(entry))


def evaluate_records(
    network: torch.nn.Module,
    records: Sequence[CaseRecord | Mapping],
    profile: str | Profile,
    device: str | torch.device = "cpu",
    distances: bool = True,
    default_spacing: float | None = None,
) -> list[dict]:
    """Segment every labelled case and score it against its ground truth.

    Args:
        network: the 2D network.
        records: cases (`CaseRecord` or datalist dicts) with labels.
        profile: the network's run profile.
        device: where to run.
        distances: also compute HD, HD95 and ASSD (slower); otherwise Dice and VOE only.
        default_spacing: in-plane spacing (mm) assumed for sources without spacing (ACDC HDF5)
            when the record's ``meta["in_plane_spacing_mm"]`` does not give one; distances of
            such cases are in these nominal millimetres.

    Returns:
        One dict per case: ``case_id``, ``patient_id``, ``phase``, ``mean_fg_dice`` and
        ``scores`` (see `cardiolora.metrics.segmentation_scores`).

    Raises:
        ValueError: if `records` is empty, a case has no label, or no spacing is known for it.
        cardiolora.data.loaders.DataError: if a case cannot be loaded (names the file).
    """
    if len(records) == 0:
        raise ValueError("`records` is empty: nothing to evaluate.")
    out = []
    for entry in records:
        rec = _as_record(entry)
        if rec.label is None:
            raise ValueError(f"{rec.image}: case {rec.case_id} has no label to evaluate against.")
        case = load_case(rec)
        spacing = case.spacing_zyx
        if spacing is None:
            s = rec.meta.get("in_plane_spacing_mm") or default_spacing
            if s is None:
                raise ValueError(
                    f"{rec.image}: the file holds no voxel spacing; set `in_plane_spacing_mm` in the "
                    "datalist entry's meta or pass `default_spacing`."
                )
            spacing = (float(rec.meta.get("slice_spacing_mm") or 10.0), float(s), float(s))
        pred = predict_zyx(network, case.image, spacing, profile, device)
        row = {
            "case_id": rec.case_id,
            "patient_id": rec.patient_id,
            "phase": rec.phase,
            "mean_fg_dice": mean_fg_dice_3d(pred, case.label),
        }
        if distances:
            row["scores"] = segmentation_scores(pred, case.label, spacing)
        out.append(row)
    return out


def score_records(
    network: torch.nn.Module,
    records: Sequence[CaseRecord | Mapping],
    profile: str | Profile,
    device: str | torch.device = "cpu",
) -> float:
    """Mean foreground Dice of `network` over the cases — the site score P^c of Rate-My-LoRA.

    ``P = (1/N) Σ_n (1/3) Σ_{s ∈ {LV, MYO, RV}} Dice_s(n)`` over the N cases (3D Dice per case;
    a structure absent from both prediction and truth counts 1).

    Args:
        network: the 2D network.
        records: labelled cases.
        profile: the network's run profile.
        device: where to run.

    Returns:
        The score in [0, 1].
    """
    rows = evaluate_records(network, records, profile, device, distances=False)
    return float(np.mean([r["mean_fg_dice"] for r in rows]))


def evaluate_to_files(
    network: torch.nn.Module,
    records: Sequence[CaseRecord | Mapping],
    profile: str | Profile,
    output_dir: str | os.PathLike,
    device: str | torch.device = "cpu",
) -> dict:
    """Evaluate and write ``case_scores.csv``, ``case_scores.json`` and ``summary.json``.

    Args:
        network: the 2D network.
        records: labelled cases.
        profile: the network's run profile.
        output_dir: folder for the files (created).
        device: where to run.

    Returns:
        The summary: mean/std/n per structure and metric (`aggregate_scores`).
    """
    rows = evaluate_records(network, records, profile, device, distances=True)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = aggregate_scores([r["scores"] for r in rows])
    (out / "case_scores.json").write_text(json.dumps(rows, indent=1, default=float))
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=float))
    with open(out / "case_scores.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        names = [k for k in rows[0]["scores"] if k != "mean"] + ["mean"]
        writer.writerow(["case_id", "patient_id", "phase"] + [f"{n}_{m}" for n in names for m in METRICS])
        for r in rows:
            writer.writerow(
                [r["case_id"], r["patient_id"], r["phase"]] + [r["scores"][n][m] for n in names for m in METRICS]
            )
    return summary
