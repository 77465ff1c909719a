"""The clinical profile on real data: time an epoch, and report a trained model on held-out patients.

    # measure: build the stratified ACDC split, run N epochs of the clinical recipe, extrapolate
    .venv/bin/python benchmarks/clinical_pretrain.py time --data ../shared/data/acdc_h5 \
        [--out runs/clinical-timing] [--epochs 1] [--budget-min 90]

    # report: per-structure 3D Dice on the test split (all, ED, ES, each ACDC group), and the
    # clinical measures (EDV, ESV, EF, LV mass) on the test patients present in the official
    # NIfTI layout (real voxel spacing)
    .venv/bin/python benchmarks/clinical_pretrain.py report --run runs/clinical-pretrain \
        [--acdc ../shared/data/acdc] [--metadata bundles/cardiac_lora_unet/configs/metadata.json \
        inference/configs/metadata.json]

    # the bundles' eval_metrics from a report already written (no network run)
    .venv/bin/python benchmarks/clinical_pretrain.py eval-metrics --run runs/clinical-pretrain \
        --metadata bundles/cardiac_lora_unet/configs/metadata.json inference/configs/metadata.json

`make clinical-pretrain` trains (`cardiolora pretrain --profile clinical`, the same split as
`time`) and then runs `report`. `time` writes benchmarks/results/clinical_pretrain_timing.json;
`report` writes <run>/test_report.json and <run>/test_report.md, and with ``--metadata`` the held-out
numbers into the bundles' ``metadata.json`` ``eval_metrics`` (`write_eval_metrics`; the LoRA U-Net
bundle and the site-inference bundle, which runs its network), so the model card's numbers come
from this command.

The ACDC HDF5 layout holds no voxel spacing (its slices are read at a nominal 1.5 mm, the
profile's spacing), so volumes in mL, EF and LV mass are computed only on the official-layout
patients (`--acdc`), whose NIfTI headers carry the spacing; only patients of the run's test split
are used there, so no trained-on patient is measured.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from cardiolora.atomic import atomic_write_text
from cardiolora.bundle import make_workflow
from cardiolora.clinical import MEASURE_KEYS, cardiac_function
from cardiolora.data.acdc import index_acdc
from cardiolora.data.dataset import DATALIST_NAME, load_datalist
from cardiolora.data.loaders import load_case
from cardiolora.data.records import CaseRecord
from cardiolora.labels import STRUCTURE_NAMES, STRUCTURES
from cardiolora.metrics import dice
from cardiolora.networks import load_weights, lora_unet
from cardiolora.plausibility import plausibility_flags
from cardiolora.predict import predict_zyx
from cardiolora.profiles import get_profile
from cardiolora.site.postprocess import clean_labels
from lib.readme_blocks import machine_line

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "clinical_pretrain_timing.json"
#: The split of the clinical recipe: 70/10/20 % of the patients, every ACDC group in proportion.
RATIOS = (0.7, 0.1, 0.2)
STRATIFY = "group"
NAMES = [STRUCTURE_NAMES[s] for s in STRUCTURES]
#: The clinical measures compared with the truth (stroke volumes left out: EDV - ESV).
CLINICAL_KEYS = tuple(k for k in MEASURE_KEYS if "_sv_" not in k)


def build_split(data: str | os.PathLike, out: Path, seed: int = 0) -> Path:
    """The run's dataset folder ``out/data`` with the stratified datalist (made once, as `cardiolora pretrain` does)."""
    from cardiolora.cli import main

    dataset = out / "data"
    if not (dataset / DATALIST_NAME).is_file():
        argv = ["datalist", "--source", str(data), "--out", str(dataset), "--stratify", STRATIFY, "--seed", str(seed)]
        if main(argv + ["--ratios", *map(str, RATIOS)]) != 0:
            raise RuntimeError(f"could not build the datalist of {data}")
    return dataset


def time_epochs(
    data: str | os.PathLike, out: Path, epochs: int = 1, profile: str = "clinical", extra: Mapping | None = None
) -> dict:
    """Run `epochs` epochs of the profile's recipe from scratch and time setup, training and validation.

    The learning-rate warm-up is switched off for the measurement (a 1-epoch run cannot hold
    2 warm-up epochs); it costs nothing per iteration, so the time per epoch is that of the full run.
    """
    from ignite.engine import Events

    dataset = build_split(data, out)
    run = out / "run"
    shutil.rmtree(run, ignore_errors=True)
    overrides = {
        "dataset_dir": str(dataset.resolve()),
        "output_dir": str(run.resolve()),
        "model_dir": str(run.resolve()),
        "profile": profile,
        "max_epochs": epochs,
        "warmup_epochs": 0,
        "progress": False,
        **dict(extra or {}),
    }
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    wf = make_workflow("train", overrides)  # with the profile's recipe file
    wf.initialize()
    evaluator = wf.parser.get_parsed_content("validate#evaluator")
    setup_s = time.perf_counter() - t0
    marks: dict[str, float] = {"val": 0.0}

    def val_start(_):
        marks["val_t0"] = time.perf_counter()

    def val_end(_):
        marks["val"] += time.perf_counter() - marks["val_t0"]

    evaluator.add_event_handler(Events.STARTED, val_start)
    evaluator.add_event_handler(Events.COMPLETED, val_end)
    t1 = time.perf_counter()
    wf.run()
    run_s = time.perf_counter() - t1
    wf.finalize()
    load_after = os.getloadavg()
    n_train = len(wf.parser.get_parsed_content("train#dataset"))
    n_val = len(wf.parser.get_parsed_content("validate#dataset"))
    epoch_s = run_s / epochs
    return {
        "profile": profile,
        "epochs_run": epochs,
        "train_slices": n_train,
        "val_slices": n_val,
        "iterations_per_epoch": math.ceil(n_train / get_profile(profile).batch_size),
        "setup_s": setup_s,
        "epoch_s": epoch_s,
        "train_s_per_epoch": (run_s - marks["val"]) / epochs,
        "val_s_per_epoch": marks["val"] / epochs,
        "loadavg_before": list(load_before),
        "loadavg_after": list(load_after),
        "torch_threads": torch.get_num_threads(),
        "overrides": dict(extra or {}),
        "machine": machine_line(),
    }


def plan(timing: Mapping, budget_min: float, margin: float = 0.1) -> dict:
    """Epochs that fit the budget: ``E = floor((budget · (1 - margin) - setup) / epoch)``."""
    usable = budget_min * 60 * (1 - margin) - timing["setup_s"]
    epochs = max(1, int(usable // timing["epoch_s"]))
    return {
        "budget_min": budget_min,
        "margin": margin,
        "fitting_epochs": epochs,
        "profile_epochs": get_profile(timing["profile"]).pretrain_epochs,
        "expected_min_at_profile_epochs": (
            timing["setup_s"] + get_profile(timing["profile"]).pretrain_epochs * timing["epoch_s"]
        )
        / 60,
    }


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------


def _mean(values: Sequence[float]) -> float:
    """Mean of the finite values (NaN when there is none: e.g. an EF whose predicted EDV is 0)."""
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def _scores(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    scores = {STRUCTURE_NAMES[s]: dice(pred == s, truth == s) for s in STRUCTURES}
    scores["mean"] = _mean([scores[n] for n in NAMES])
    return scores


def dice_rows(network: torch.nn.Module, records: Sequence[Mapping], profile: str) -> list[dict]:
    """3D Dice of LV, MYO, RV (their mean is the case Dice) for every case, raw and after the site application's
    clean-up (``clean_labels``, the same call as ``cardiolora segment``), with its phase and group."""
    rows = []
    for entry in records:
        rec = CaseRecord.from_dict(dict(entry))
        case = load_case(rec)
        spacing = case.spacing_zyx
        if spacing is None:
            s = float(rec.meta.get("in_plane_spacing_mm") or get_profile(profile).pixel_spacing)
            spacing = (10.0, s, s)
        pred = predict_zyx(network, case.image, spacing, profile)
        rows.append(
            {
                "case_id": rec.case_id,
                "patient_id": rec.patient_id,
                "phase": rec.phase,
                "group": rec.group,
                "raw": _scores(pred, case.label),
                "cleaned": _scores(clean_labels(pred, slice_axis=0), case.label),
            }
        )
    return rows


def dice_table(rows: Sequence[Mapping], variant: str = "cleaned") -> list[dict]:
    """Mean 3D Dice per structure over all cases, ED, ES and each group (rows with their case count).

    Args:
        rows: from :func:`dice_rows`.
        variant: ``"raw"`` network output or ``"cleaned"`` (the site application's labels).
    """
    subsets: list[tuple[str, list[Mapping]]] = [("all", list(rows))]
    for phase in ("ED", "ES"):
        subsets.append((phase, [r for r in rows if r["phase"] == phase]))
    for group in sorted({str(r["group"]) for r in rows}):
        subsets.append((group, [r for r in rows if str(r["group"]) == group]))
    return [
        {"subset": name, "n": len(sel), **{k: _mean([r[variant][k] for r in sel]) for k in [*NAMES, "mean"]}}
        for name, sel in subsets
        if sel
    ]


def clinical_rows(
    network: torch.nn.Module, acdc_root: str | os.PathLike, patients: set[str], profile: str
) -> list[dict]:
    """EDV, ESV, EF (LV, RV) and LV mass, truth and (cleaned, as the site reports it) prediction, for
    the official-layout patients in `patients`."""
    by_patient: dict[str, dict[str, CaseRecord]] = {}
    for rec in index_acdc(acdc_root):
        if rec.patient_id in patients:
            by_patient.setdefault(rec.patient_id, {})[rec.phase] = rec
    out = []
    for pid, phases in sorted(by_patient.items()):
        if not {"ED", "ES"} <= set(phases):
            continue
        cases = [load_case(phases[p]) for p in ("ED", "ES")]
        if cases[0].image.shape != cases[1].image.shape:
            continue
        spacing = cases[0].spacing_zyx
        truth = np.stack([c.label for c in cases])
        pred = np.stack([clean_labels(predict_zyx(network, c.image, spacing, profile), slice_axis=0) for c in cases])
        kw = {"ed": 0, "es": 1}
        t, p = cardiac_function(truth, spacing, **kw), cardiac_function(pred, spacing, **kw)
        row = {"patient_id": pid, "group": phases["ED"].group, "spacing_zyx": [float(s) for s in spacing]}
        for key in CLINICAL_KEYS:
            row[key] = {"truth": float(t[key]), "pred": float(p[key]), "error": float(p[key] - t[key])}
        row["flags"] = [f["name"] for f in plausibility_flags(p, pred, spacing)]
        out.append(row)
    return out


def _markdown(tables: Mapping[str, Sequence[Mapping]], clinical: Sequence[Mapping], header: str) -> str:
    lines = [header]
    for variant, table in tables.items():
        lines += ["", f"{variant}:", "", "| subset | cases | LV | MYO | RV | mean |", "|---|---|---|---|---|---|"]
        for r in table:
            cells = " | ".join(f"{r[k]:.3f}" for k in [*NAMES, "mean"])
            lines.append(f"| {r['subset']} | {r['n']} | {cells} |")
    if clinical:
        keys = CLINICAL_KEYS
        lines += ["", "Clinical measures (official NIfTI layout, real spacing), truth / predicted (cleaned):", ""]
        lines += ["| patient | " + " | ".join(keys) + " | plausibility flags |", "|---" * (len(keys) + 2) + "|"]
        for r in clinical:
            cells = [f"{r[k]['truth']:.1f} / {r[k]['pred']:.1f}" for k in keys]
            flags = ", ".join(r["flags"]) or "none"
            lines.append(f"| {r['patient_id']} | " + " | ".join(cells) + f" | {flags} |")
        mae = [_mean([abs(r[k]["error"]) for r in clinical]) for k in keys]
        lines.append("| mean abs. error | " + " | ".join(f"{v:.1f}" for v in mae) + " | |")
    return "\n".join(lines) + "\n"


def report(
    run: Path, acdc: str | None, split: str = "test", profile: str = "clinical", weights: str | None = None
) -> dict:
    """Score the run's weights on its held-out split; write and return the tables."""
    net = lora_unet(profile)
    load_weights(net, weights or run / "model.pt")
    net.eval()
    records = load_datalist(run / "data", split)
    rows = dice_rows(net, records, profile)
    tables = {
        "Network output (raw)": dice_table(rows, "raw"),
        "After the site clean-up (what `cardiolora segment` reports)": dice_table(rows, "cleaned"),
    }
    patients = {r["patient_id"] for r in records}
    clinical = clinical_rows(net, acdc, patients, profile) if acdc and Path(acdc).is_dir() else []
    result = {
        "split": split,
        "profile": profile,
        "cases": rows,
        "table_raw": tables["Network output (raw)"],
        "table": tables["After the site clean-up (what `cardiolora segment` reports)"],
        "clinical": clinical,
    }
    (run / "test_report.json").write_text(json.dumps(result, indent=1))
    header = (
        f"3D Dice on the {split} split of {run / 'data' / DATALIST_NAME} ({len(patients)} patients, "
        f"{len(rows)} volumes), profile {profile}; {machine_line()}"
    )
    text = _markdown(tables, clinical, header)
    (run / "test_report.md").write_text(text)
    print(text)
    if acdc and not clinical:
        print(f"no test patient of this split is in {acdc}: no EF / LV mass")
    return result


#: ``eval_metrics`` key ← (report table, row column) of the ``"all"`` row of the held-out split.
EVAL_METRICS: dict[str, tuple[str, str]] = {
    "case_dice": ("table", "mean"),
    "dice_lv": ("table", "LV"),
    "dice_myo": ("table", "MYO"),
    "dice_rv": ("table", "RV"),
    "case_dice_raw": ("table_raw", "mean"),
}
_EVAL_METRICS_BLOCK = re.compile(r'(?P<indent>[ \t]*)"eval_metrics":\s*\{[^{}]*\}')


def eval_metrics(result: Mapping, digits: int = 4) -> dict[str, float]:
    """The bundle's numeric ``eval_metrics`` from a held-out report (`report`, ``test_report.json``).

    The ``"all"`` row of the tables: ``case_dice`` = mean over the test cases of
    ``(Dice_LV + Dice_MYO + Dice_RV) / 3`` (3D Dice per case) after the site clean-up, what
    ``cardiolora segment`` reports; ``dice_lv`` / ``dice_myo`` / ``dice_rv`` the per-structure means;
    ``case_dice_raw`` the network output before the clean-up; ``test_cases`` the number of volumes.

    Args:
        result: the report dict (``table`` and ``table_raw`` lists with a row ``subset == "all"``).
        digits: decimals kept.

    Returns:
        ``{name: number}``.

    Raises:
        ValueError: if the report is not of the ``test`` split, a table, its ``"all"`` row or a
            column is missing, or a value is not finite.
    """
    if result.get("split") != "test":
        raise ValueError(
            f"eval_metrics are the held-out numbers: the report's `split` must be 'test', got {result.get('split')!r}."
        )
    out: dict[str, float] = {}
    rows: dict[str, Mapping] = {}
    for table in {t for t, _ in EVAL_METRICS.values()}:
        found = [r for r in result.get(table) or [] if r.get("subset") == "all"]
        if len(found) != 1:
            raise ValueError(f"the report needs one row with subset 'all' in `{table}`, found {len(found)}.")
        rows[table] = found[0]
    for key, (table, column) in EVAL_METRICS.items():
        value = rows[table].get(column)
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"`{table}` row 'all' column `{column}` must be a finite number, got {value!r}.")
        out[key] = round(float(value), digits)
    out["test_cases"] = int(rows["table"]["n"])
    return out


def write_eval_metrics(meta_file: str | os.PathLike, metrics: Mapping[str, float]) -> dict:
    """Replace ``eval_metrics`` in a bundle's ``metadata.json`` with `metrics`, leaving the rest of the text as it is.

    Only the ``"eval_metrics": {...}`` block is rewritten (the file's own layout, e.g. one-line
    arrays, stays), and the file is replaced atomically.

    Args:
        meta_file: the bundle's ``configs/metadata.json``.
        metrics: ``{name: number}`` (`eval_metrics`).

    Returns:
        The new metadata dict.

    Raises:
        FileNotFoundError: if `meta_file` does not exist.
        ValueError: if the file has no flat ``eval_metrics`` object, or a metric is not a finite number.
    """
    path = Path(meta_file)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such metadata file.")
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"eval_metrics `{key}` must be a finite number, got {value!r}.")
    text = path.read_text()
    found = list(_EVAL_METRICS_BLOCK.finditer(text))
    if len(found) != 1:
        raise ValueError(f"{path}: expected one flat `eval_metrics` object, found {len(found)}.")
    indent = found[0].group("indent")
    body = json.dumps(dict(metrics), indent=4).replace("\n", "\n" + indent)
    new_text = text[: found[0].start()] + f'{indent}"eval_metrics": {body}' + text[found[0].end() :]
    meta = json.loads(new_text)
    if meta["eval_metrics"] != dict(metrics):
        raise ValueError(f"{path}: `eval_metrics` is not a top-level object.")
    atomic_write_text(new_text, path)
    return meta


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("time", help="time N epochs of the clinical recipe and extrapolate the full run")
    q.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "acdc_h5"))
    q.add_argument("--out", default="runs/clinical-timing")
    q.add_argument("--epochs", type=int, default=1)
    q.add_argument("--profile", default="clinical")
    q.add_argument("--budget-min", type=float, default=90.0)
    q.add_argument("--set", nargs="*", default=[], metavar="ID=JSON", help="more bundle overrides, e.g. num_workers=1")
    q = sub.add_parser("report", help="test-split table (and EF / LV mass on official-layout patients)")
    q.add_argument("--run", required=True)
    q.add_argument("--acdc", help="the official ACDC NIfTI folder, for EF and LV mass")
    q.add_argument("--split", default="test")
    q.add_argument("--profile", default="clinical")
    q.add_argument("--weights", help="default: <run>/model.pt (the best validation checkpoint)")
    q.add_argument(
        "--metadata",
        nargs="+",
        default=[],
        help="also write the held-out numbers into these bundle metadata.json files",
    )
    q = sub.add_parser("eval-metrics", help="write <run>/test_report.json's numbers into a bundle's eval_metrics")
    q.add_argument("--run", required=True, help="a run folder holding test_report.json (from `report`)")
    q.add_argument("--metadata", nargs="+", required=True, help="the bundles' configs/metadata.json files")
    args = p.parse_args(argv)
    if args.cmd == "time":
        extra = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
        timing = time_epochs(args.data, Path(args.out), args.epochs, args.profile, extra)
        timing["plan"] = plan(timing, args.budget_min)
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(timing, indent=1))
        print(json.dumps(timing, indent=1))
        return 0
    if args.cmd == "report":
        if args.metadata and args.split != "test":
            p.error(f"--metadata takes the held-out numbers: --split must be test, got {args.split!r}")
        result = report(Path(args.run), args.acdc, args.split, args.profile, args.weights)
    else:
        path = Path(args.run) / "test_report.json"
        if not path.is_file():
            p.error(f"{path} does not exist: run `report` first")
        result = json.loads(path.read_text())
    if args.metadata:
        metrics = eval_metrics(result)
        for meta_file in args.metadata:
            write_eval_metrics(meta_file, metrics)
            print(f"{meta_file}: eval_metrics {json.dumps(metrics)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
