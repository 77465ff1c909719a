"""Case-level evaluation as the paper reports it (Dice, VOE, HD, HD95, ASSD per structure).

Used by the bundle's ``evaluate.json`` and ``cardiolora evaluate`` (:func:`evaluate_to_files`),
by the federated clients (the score P_t^c of a candidate model on a site's validation split is
the mean case Dice, :func:`mean_case_dice`) and by the experiment harness.

Names: the **case Dice** (:func:`case_dice`, key ``case_dice``) is the mean over LV, MYO and RV
of the 3D Dice of one case, all its slices pooled; :func:`mean_case_dice` averages it over cases.
The per-structure Dice of the paper tables is ``"dice"`` inside the
`cardiolora.metrics.segmentation_scores` dicts. The bundle's slice-level validation metric,
MONAI's ``MeanDice`` over 2D slices, is the *slice Dice* (``val_slice_dice``), another quantity.

Two scores per case: **raw**, the network's argmax labels (the paper's numbers, and what the
federated score uses), and **cleaned**, the same labels after the site application's anatomical
clean-up (:func:`cardiolora.site.postprocess.clean_labels`, the exact call of the site app and
of the inference bundle's ``CleanCardiacLabelsd``), i.e. what a hospital gets. Stray blobs
inflate the raw distances (HD, HD95, ASSD); the cleaned ones measure the delivered result.
The raw keys are ``case_dice``, ``scores``, ``summary.json`` and the ``<S>_<metric>`` CSV
columns; the cleaned ones are named ``cleaned`` / ``cleaned_*``.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from cardiolora.data.loaders import load_case
from cardiolora.data.records import CaseRecord
from cardiolora.labels import STRUCTURES
from cardiolora.metrics import METRICS, aggregate_scores, dice, segmentation_scores
from cardiolora.predict import predict_zyx
from cardiolora.profiles import Profile
from cardiolora.site.postprocess import clean_labels_with_notes

__all__ = ["evaluate_records", "mean_case_dice", "evaluate_to_files", "case_dice", "score_prediction"]


def case_dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """The case Dice: mean 3D Dice over LV, MYO and RV of one case, ``(1/3) Σ_s Dice(pred == s, gt == s)``.

    A structure absent from both counts 1 (`cardiolora.metrics` empty-structure policy).

    Args:
        pred: predicted label map.
        gt: ground-truth label map of the same shape.

    Returns:
        The mean Dice in [0, 1].
    """
    return float(np.mean([dice(pred == s, gt == s) for s in STRUCTURES]))


def score_prediction(
    pred: np.ndarray,
    gt: np.ndarray,
    spacing_zyx: Sequence[float],
    distances: bool = True,
    cleaned: bool = False,
) -> dict:
    """Raw (and optionally cleaned) scores of one predicted ``(Z, Y, X)`` label map.

    Args:
        pred: predicted label map ``(Z, Y, X)``, values 0..3.
        gt: ground-truth label map of the same shape.
        spacing_zyx: voxel spacing (slice, row, column) in mm.
        distances: also compute the per-structure scores (Dice, VOE, HD, HD95, ASSD);
            otherwise the case Dice only.
        cleaned: also score ``clean_labels(pred, slice_axis=0)``, the site application's clean-up.

    Returns:
        ``{"case_dice": float}`` plus ``"scores"`` (`cardiolora.metrics.segmentation_scores`)
        when `distances`; with `cleaned` also ``"cleaned": {"case_dice", "scores" (when
        `distances`), "voxels_changed", "notes"}`` (notes of
        :func:`~cardiolora.site.postprocess.clean_labels_with_notes`).

    Raises:
        ValueError: if `pred` and `gt` differ in shape; with `distances` or `cleaned`, also if
            they hold values outside 0..3 or `spacing_zyx` is not 3 positive values.

    Example:
        >>> gt = np.zeros((2, 8, 8), np.uint8); gt[:, 2:6, 2:6] = 1
        >>> score_prediction(gt, gt, (10.0, 1.0, 1.0), distances=False)
        {'case_dice': 1.0}
    """
    pred, gt = np.asarray(pred), np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"`pred` shape {pred.shape} differs from `gt` shape {gt.shape}.")
    row: dict = {"case_dice": case_dice(pred, gt)}
    if distances:
        row["scores"] = segmentation_scores(pred, gt, spacing_zyx)
    if cleaned:
        clean, notes = clean_labels_with_notes(pred, slice_axis=0)
        row["cleaned"] = {"case_dice": case_dice(clean, gt)}
        if distances:
            row["cleaned"]["scores"] = segmentation_scores(clean, gt, spacing_zyx)
        row["cleaned"]["voxels_changed"] = int(np.count_nonzero(clean != pred))
        row["cleaned"]["notes"] = notes
    return row


def _as_record(entry: CaseRecord | Mapping) -> CaseRecord:
    return entry if isinstance(entry, CaseRecord) else CaseRecord.from_dict(dict(entry))


def evaluate_records(
    network: torch.nn.Module,
    records: Sequence[CaseRecord | Mapping],
    profile: str | Profile,
    device: str | torch.device = "cpu",
    distances: bool = True,
    default_spacing: float | None = None,
    cleaned: bool = False,
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
        cleaned: also score the prediction after the site application's clean-up (see
            :func:`score_prediction`); off by default (the federated score is on raw labels).

    Returns:
        One dict per case: ``case_id``, ``patient_id``, ``phase``, ``case_dice`` and
        ``scores`` (see `cardiolora.metrics.segmentation_scores`) of the raw prediction, and
        with `cleaned` a ``cleaned`` dict (see :func:`score_prediction`).

    Raises:
        ValueError: if `records` is empty, a case has no label, or no spacing is known for it.
        cardiolora.data.records.DataError: if a case cannot be loaded (names the file).
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
        row = {"case_id": rec.case_id, "patient_id": rec.patient_id, "phase": rec.phase}
        row.update(score_prediction(pred, case.label, spacing, distances=distances, cleaned=cleaned))
        out.append(row)
    return out


def mean_case_dice(
    network: torch.nn.Module,
    records: Sequence[CaseRecord | Mapping],
    profile: str | Profile,
    device: str | torch.device = "cpu",
) -> float:
    """Mean case Dice of `network` over the cases — the site score P^c of Rate-My-LoRA.

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
    return float(np.mean([r["case_dice"] for r in rows]))


def evaluate_to_files(
    network: torch.nn.Module,
    records: Sequence[CaseRecord | Mapping],
    profile: str | Profile,
    output_dir: str | os.PathLike,
    device: str | torch.device = "cpu",
    cleaned: bool = True,
) -> dict:
    """Evaluate and write the raw and the cleaned scores.

    Files in `output_dir`:

    * ``summary.json``: raw scores, mean/std/n per structure and metric (`aggregate_scores`);
    * ``summary_cleaned.json``: the same for the cleaned labels (with `cleaned`);
    * ``case_scores.json``: one row per case, raw ``case_dice`` / ``scores`` and a
      ``cleaned`` dict (``case_dice``, ``scores``, ``voxels_changed``, ``notes``);
    * ``case_scores.csv``: ``case_id``, ``patient_id``, ``phase``, the raw ``<S>_<metric>``
      columns (S in LV, MYO, RV, mean), then ``cleaned_<S>_<metric>`` and
      ``cleaned_voxels_changed``.

    Args:
        network: the 2D network.
        records: labelled cases.
        profile: the network's run profile.
        output_dir: folder for the files (created).
        device: where to run.
        cleaned: also score the labels after the site application's clean-up.

    Returns:
        The raw summary (as in ``summary.json``).
    """
    rows = evaluate_records(network, records, profile, device, distances=True, cleaned=cleaned)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = aggregate_scores([r["scores"] for r in rows])
    (out / "case_scores.json").write_text(json.dumps(rows, indent=1, default=float))
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=float))
    if cleaned:
        summary_clean = aggregate_scores([r["cleaned"]["scores"] for r in rows])
        (out / "summary_cleaned.json").write_text(json.dumps(summary_clean, indent=1, default=float))
    with open(out / "case_scores.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        names = [k for k in rows[0]["scores"] if k != "mean"] + ["mean"]
        header = ["case_id", "patient_id", "phase"] + [f"{n}_{m}" for n in names for m in METRICS]
        if cleaned:
            header += [f"cleaned_{n}_{m}" for n in names for m in METRICS] + ["cleaned_voxels_changed"]
        writer.writerow(header)
        for r in rows:
            line = [r["case_id"], r["patient_id"], r["phase"]] + [r["scores"][n][m] for n in names for m in METRICS]
            if cleaned:
                c = r["cleaned"]
                line += [c["scores"][n][m] for n in names for m in METRICS] + [c["voxels_changed"]]
            writer.writerow(line)
    return summary
