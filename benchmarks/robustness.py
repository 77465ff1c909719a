"""Cross-vendor robustness of a trained model: phantom vendors, a real Siemens RVSC series, shifted ACDC sites.

::

    .venv/bin/python benchmarks/robustness.py --model runs/clinical-pretrain/model.pt --profile clinical \\
        --workdir runs/robustness [--sections phantoms rvsc acdc] [--subjects 3] [--seed 0] \\
        [--rvsc ../shared/data/rvsc_dicom/patient09] [--compare runs/compare-acdc-clinical] [--no-readme]

Three sections, each scoring the model on data it was never trained on:

* ``phantoms`` — the project's multi-vendor cine generator (`cardiolora.data.phantom.make_subject`,
  subject seeds of `cardiolora.data.generate.subject_seed`, so the same subjects as a
  ``generate_sites`` run with that seed and vendor order) writes ``--subjects`` subjects per
  vendor profile (reference, GE, Philips, Siemens) in the ACDC layout under
  ``<workdir>/phantoms/<vendor>`` (reused when the settings match); every ED and ES volume is scored
  with `cardiolora.evaluation.evaluate_records` (3D Dice of LV, MYO, RV, raw and after the site
  application's clean-up).
* ``rvsc`` — the RVSC 2012 patient folder (`cardiolora.data.rvsc`): every image with a manual RV
  endocardium contour is segmented as a one-slice stack (spacing from its DICOM header) and the
  predicted RV (label 3) is compared with the inside of the contour, raw and after
  `cardiolora.site.postprocess.clean_labels_with_notes`; what the model labelled elsewhere (LV,
  myocardium) is counted, and the Dice against the mirrored contour is computed to catch a
  left-right or up-down flip. An overlay PNG is written beside the numbers.
* ``acdc`` — the federated comparison's appearance-shifted ACDC sites (``benchmarks/compare.py
  --source acdc``): "before" is the comparison's base model on each site's test split
  (`lib.paired.per_case_scores`), "after" the per-case in-client scores that the finished
  ``seed<s>/<method>/done.json`` files hold (Rate-My-LoRA, with FedPETuning and local-only LoRA for
  context), averaged over the seeds that finished.

Writes ``<workdir>/robustness.json``, ``robustness.md``, ``rvsc_overlay.png`` and the block
``robustness`` of ``benchmarks/README.md`` (unless ``--no-readme``).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shlex
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from cardiolora.atomic import jsonable, write_json
from cardiolora.data.acdc import index_acdc, write_acdc
from cardiolora.data.dataset import load_datalist
from cardiolora.data.generate import subject_seed
from cardiolora.data.phantom import SCANNER_PROFILES, make_subject
from cardiolora.data.records import DataError
from cardiolora.data.rvsc import RvscCase, rvsc_cases
from cardiolora.evaluation import evaluate_records
from cardiolora.labels import BACKGROUND, LV, MYO, RV, STRUCTURE_NAMES
from cardiolora.metrics import dice
from cardiolora.networks import load_weights, lora_unet
from cardiolora.predict import predict_zyx
from cardiolora.profiles import PROFILES
from cardiolora.site.postprocess import clean_labels_with_notes
from lib.paired import paired_comparison, patient_scores, per_case_scores
from lib.readme_blocks import machine_line, replace_block

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "benchmarks" / "README.md"
BLOCK = "robustness"
HEADING = "### Cross-vendor robustness"
#: The README heading the block goes before when it is added.
BEFORE_HEADING = "### Results: M&Ms-2"
VENDORS: tuple[str, ...] = ("reference", "ge", "philips", "siemens")
SECTIONS: tuple[str, ...] = ("phantoms", "rvsc", "acdc")
NAMES: tuple[str, ...] = tuple(STRUCTURE_NAMES.values())
DEFAULT_RVSC = ROOT.parent / "shared" / "data" / "rvsc_dicom" / "patient09"
DEFAULT_COMPARE = ROOT / "runs" / "compare-acdc-clinical"
#: The methods of the comparison read for "after", the first one is the one the section is about.
ACDC_METHODS: tuple[str, ...] = ("rate_my_lora", "fedpetuning", "local")
METHOD_TITLES = {
    "base": "base (before)",
    "rate_my_lora": "Rate-My-LoRA",
    "fedpetuning": "FedPETuning",
    "local": "local only",
}
COMPARE_COMMAND = (
    ".venv/bin/python benchmarks/compare.py --source acdc --profile clinical --seeds 0 1 2 --rounds 10 "
    "--workdir runs/compare-acdc-clinical"
)
#: RVSC images are written with 7 mm slices; used when a header has no SliceThickness.
DEFAULT_SLICE_MM = 7.0

logger = logging.getLogger("robustness")


def load_model(path: str | Path, profile: str) -> torch.nn.Module:
    """The profile's plain U-Net with the weights of `path`, in eval mode.

    Raises:
        FileNotFoundError: if `path` is not a file (named).
        ValueError: from `cardiolora.networks.load_weights` when the weights do not fit the profile.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: `--model` is not a file.")
    net = lora_unet(profile)
    load_weights(net, path)
    return net.eval()


def _mean(values: Sequence[float | None]) -> float | None:
    """Mean of the finite values, None when there is none."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return float(np.mean(vals)) if vals else None


# ---------------------------------------------------------------------------------------------
# phantoms
# ---------------------------------------------------------------------------------------------


def make_phantoms(
    out: Path, subjects: int, seed: int, vendors: Sequence[str] = VENDORS
) -> tuple[dict[str, Path], bool]:
    """Write `subjects` phantom subjects per vendor in the ACDC layout, ``out/<vendor>`` (reused).

    Subject ``k`` of vendor number ``i`` has seed ``subject_seed(seed, i, k)`` and its ED and ES
    frames are written (``phases="ed_es"``).

    Returns:
        ``({vendor: its ACDC-layout folder}, generated)``; `generated` is False when an earlier run's
        folders with the same settings were reused.

    Raises:
        ValueError: if `subjects` < 1 or a vendor is not a phantom profile.
    """
    if subjects < 1:
        raise ValueError(f"`--subjects` must be >= 1, got {subjects}.")
    unknown = [v for v in vendors if v not in SCANNER_PROFILES]
    if unknown:
        raise ValueError(f"vendors {unknown} are not phantom profiles; known: {sorted(SCANNER_PROFILES)}.")
    settings = {"subjects": subjects, "seed": seed, "vendors": list(vendors)}
    stamp = out / "settings.json"
    folders = {v: out / v for v in vendors}
    if stamp.is_file() and json.loads(stamp.read_text()) == settings:
        logger.info("phantoms: reusing %s", out)
        return folders, False
    shutil.rmtree(out, ignore_errors=True)
    for i, vendor in enumerate(vendors):
        studies = []
        for k in range(subjects):
            logger.info("phantoms: generating %s subject %d/%d", vendor, k + 1, subjects)
            sid = f"{vendor}-{k + 1:03d}"
            studies.append(make_subject(subject_seed(seed, i, k), vendor, subject_id=sid, phases="ed_es"))
        write_acdc(studies, folders[vendor])
    stamp.write_text(json.dumps(settings))
    return folders, True


def dice_summary(row: Mapping[str, Any]) -> dict[str, float | None]:
    """``{"mean", "LV", "MYO", "RV"}`` Dice of one `evaluate_records` score entry (raw or cleaned)."""
    out = {"mean": float(row["case_dice"])}
    out.update({n: float(row["scores"][n]["dice"]) for n in NAMES})
    return out


def summarise_cases(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float | None]]:
    """Mean over cases of the raw and the cleaned ``{"mean", "LV", "MYO", "RV"}`` Dice.

    Args:
        rows: per-case rows ``{"raw": {...}, "cleaned": {...}}`` (see `dice_summary`).

    Returns:
        ``{"raw": {...}, "cleaned": {...}}``.
    """
    return {v: {k: _mean([r[v][k] for r in rows]) for k in ("mean", *NAMES)} for v in ("raw", "cleaned")}


def phantom_section(
    net: torch.nn.Module, profile: str, out: Path, subjects: int, seed: int, vendors: Sequence[str] = VENDORS
) -> dict:
    """Score `net` on every ED / ES phantom volume of every vendor (raw and cleaned 3D Dice)."""
    folders, generated = make_phantoms(out, subjects, seed, vendors)
    result: dict[str, Any] = {
        "status": "ok",
        "folder": str(out),
        "subjects": subjects,
        "seed": seed,
        "generated": generated,
        "vendors": {},
    }
    for vendor, folder in folders.items():
        logger.info("phantoms: scoring %s", vendor)
        records = list(index_acdc(folder))
        rows = [
            {
                "case_id": r["case_id"],
                "phase": r["phase"],
                "raw": dice_summary(r),
                "cleaned": dice_summary(r["cleaned"]),
                "cleaned_voxels_changed": r["cleaned"]["voxels_changed"],
            }
            for r in evaluate_records(net, records, profile, cleaned=True)
        ]
        scanner = SCANNER_PROFILES[vendor]
        result["vendors"][vendor] = {
            "scanner": f"{scanner.manufacturer} {scanner.model}",
            "cases": len(rows),
            **summarise_cases(rows),
            "by_phase": {ph: summarise_cases([r for r in rows if r["phase"] == ph]) for ph in ("ED", "ES")},
            "rows": rows,
        }
    return result


# ---------------------------------------------------------------------------------------------
# RVSC
# ---------------------------------------------------------------------------------------------

_FLIPS = {"none": lambda m: m, "left-right": np.fliplr, "up-down": np.flipud, "both": lambda m: m[::-1, ::-1]}


def rvsc_scores(pred: np.ndarray, cleaned: np.ndarray, case: RvscCase) -> dict[str, Any]:
    """RV Dice of one RVSC image and what the model put where.

    Args:
        pred: raw predicted labels ``(rows, columns)``.
        cleaned: the labels after the site clean-up, same shape.
        case: the image and its masks.

    Returns:
        ``rv_dice`` / ``rv_dice_cleaned`` (predicted label 3 against the i-contour's inside),
        ``truth_rv_px``, ``pred_px`` / ``cleaned_px`` (pixels per label name), ``truth_rv_as``
        (share of the truth RV labelled background / LV / MYO / RV), ``wall_as`` (the same for
        the pixels between the i- and o-contour, None without an o-contour), ``rv_dice_flipped``
        (Dice against the mirrored truth: a flip that beats ``none`` means a mirrored result),
        ``columns`` (mean column of the truth RV and of the predicted RV and LV).
    """
    names = {BACKGROUND: "background", LV: "LV", MYO: "MYO", RV: "RV"}
    truth = case.rv_mask

    def shares(mask: np.ndarray | None) -> dict[str, float] | None:
        if mask is None or not mask.any():
            return None
        return {n: float(np.mean(pred[mask] == k)) for k, n in names.items()}

    def col(mask: np.ndarray) -> float | None:
        return float(np.nonzero(mask)[1].mean()) if mask.any() else None

    return {
        "rv_dice": dice(pred == RV, truth),
        "rv_dice_cleaned": dice(cleaned == RV, truth),
        "truth_rv_px": int(truth.sum()),
        "pred_px": {n: int(np.sum(pred == k)) for k, n in names.items() if k != BACKGROUND},
        "cleaned_px": {n: int(np.sum(cleaned == k)) for k, n in names.items() if k != BACKGROUND},
        "truth_rv_as": shares(truth),
        "wall_as": shares(case.wall_mask),
        "rv_dice_flipped": {k: dice(pred == RV, f(truth)) for k, f in _FLIPS.items()},
        "columns": {"truth_RV": col(truth), "pred_RV": col(pred == RV), "pred_LV": col(pred == LV)},
    }


def rvsc_section(net: torch.nn.Module, profile: str, patient_dir: Path, out: Path) -> dict:
    """Segment every contoured RVSC image as a one-slice stack and score its RV (raw and cleaned).

    A missing folder gives ``{"status": "skipped", "reason": ...}``.
    """
    if not patient_dir.is_dir():
        return {"status": "skipped", "reason": f"{patient_dir} does not exist (real data, never shipped)"}
    cases = rvsc_cases(patient_dir)
    rows, shown = [], []
    for case in cases:
        logger.info("rvsc: %s", case.case_id)
        thick = case.slice_thickness or DEFAULT_SLICE_MM
        spacing = (thick, *case.pixel_spacing)
        pred = predict_zyx(net, case.image[None], spacing, profile)
        cleaned, notes = clean_labels_with_notes(pred, slice_axis=0)
        row = {
            "case_id": case.case_id,
            "dicom": case.dicom_path.name,
            "trigger_time_ms": case.trigger_time,
            "slice_location_mm": case.slice_location,
            "spacing_zyx_mm": list(spacing),
            "notes": [n["name"] for n in notes],
            **rvsc_scores(pred[0], cleaned[0], case),
        }
        rows.append(row)
        shown.append((case, pred[0], cleaned[0]))
    png = overlay_png(shown, out / "rvsc_overlay.png")
    return {
        "status": "ok",
        "folder": str(patient_dir),
        "cleanup_one_slice": "accepted (a (1, rows, columns) stack; slice rules see one slice)",
        "cases": rows,
        "mean_rv_dice": _mean([r["rv_dice"] for r in rows]),
        "mean_rv_dice_cleaned": _mean([r["rv_dice_cleaned"] for r in rows]),
        "overlay": str(png),
    }


def overlay_png(shown: Sequence[tuple[RvscCase, np.ndarray, np.ndarray]], path: Path) -> Path:
    """Each image with the manual RV contour (white) and the raw / cleaned labels in colour."""
    path.parent.mkdir(parents=True, exist_ok=True)
    colours = np.array([[0, 0, 0, 0], [1, 0.2, 0.2, 0.45], [0.2, 1, 0.2, 0.45], [0.2, 0.4, 1, 0.45]])
    fig = Figure(figsize=(4 * max(1, len(shown)), 8))
    axes = fig.subplots(2, max(1, len(shown)), squeeze=False)
    for j, (case, pred, cleaned) in enumerate(shown):
        for i, (lab, title) in enumerate(((pred, "raw"), (cleaned, "cleaned"))):
            ax = axes[i, j]
            ax.imshow(case.image, cmap="gray")
            ax.imshow(colours[lab])
            ax.contour(case.rv_mask, [0.5], colors="w", linewidths=1)
            ax.set_title(f"{case.case_id} {title}: RV Dice {dice(lab == RV, case.rv_mask):.3f}", fontsize=9)
            ax.axis("off")
    fig.suptitle("RVSC: manual RV endocardium (white); predicted LV red, MYO green, RV blue", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    return path


# ---------------------------------------------------------------------------------------------
# ACDC (the federated comparison's shifted sites)
# ---------------------------------------------------------------------------------------------


def comparison_sites(compare_dir: Path) -> tuple[Path, list[str]]:
    """The comparison's sites root and its federated sites (every datalist but ``reference``)."""
    root = compare_dir / "data" / "acdc" / "sites"
    if not root.is_dir():
        return root, []
    return root, sorted(p.name for p in root.iterdir() if p.name != "reference" and (p / "datalist.json").is_file())


def read_federated(compare_dir: Path, methods: Sequence[str] = ACDC_METHODS) -> tuple[dict, list[str]]:
    """The per-case in-client scores kept in the finished ``seed<s>/<method>/done.json`` files.

    Returns:
        ``({method: {seed: {site: rows}}}, notes)``: only methods and seeds with scores; a
        ``done.json`` without ``per_case`` (the comparison adds it right after) is named in the notes.
    """
    found: dict[str, dict[str, Any]] = {}
    notes = []
    seed_dirs = sorted(
        (p for p in compare_dir.glob("seed*") if p.is_dir() and p.name[4:].isdigit()), key=lambda p: int(p.name[4:])
    )
    for folder in seed_dirs:
        for method in methods:
            done = folder / method / "done.json"
            if not done.is_file():
                continue
            res = json.loads(done.read_text())
            if "per_case" not in res:
                notes.append(f"{done} has no per-case scores yet")
                continue
            found.setdefault(method, {})[folder.name[4:]] = res["per_case"]
    return found, notes


def site_means(per_case_by_seed: Mapping[str, Mapping[str, Sequence[Mapping[str, Any]]]]) -> dict[str, dict]:
    """Per site: mean over its test cases of each structure's Dice and of the mean, then over seeds.

    Args:
        per_case_by_seed: ``{seed: {site: [{"dice": {structure: value}, "mean": value}]}}``
            (`lib.paired.per_case_scores` rows; None values are left out).

    Returns:
        ``{site: {"LV", "MYO", "RV", "mean", "seeds", "cases"}}`` (None where nothing was finite).
    """
    by_site: dict[str, dict[str, list]] = {}
    for per_case in per_case_by_seed.values():
        for site, rows in per_case.items():
            acc = by_site.setdefault(site, {k: [] for k in (*NAMES, "mean")} | {"cases": []})
            for k in NAMES:
                acc[k].append(_mean([r["dice"].get(k) for r in rows]))
            acc["mean"].append(_mean([r.get("mean") for r in rows]))
            acc["cases"].append(len(rows))
    return {
        site: {**{k: _mean(acc[k]) for k in (*NAMES, "mean")}, "seeds": len(acc["cases"]), "cases": max(acc["cases"])}
        for site, acc in sorted(by_site.items())
    }


def acdc_section(compare_dir: Path, profile: str) -> dict:
    """Base ("before") and federated ("after") in-client Dice on the comparison's shifted ACDC sites.

    Returns:
        ``{"status": "not_run", "message"}`` when the comparison has neither a base nor a finished
        method; else ``{"status": "ok", "sites", "base", "base_final", "methods", "seeds", "paired",
        "notes"}``.
    """
    sites_root, sites = comparison_sites(compare_dir)
    base = compare_dir / "base" / "model.pt"
    federated, notes = read_federated(compare_dir)
    if not sites or (not base.is_file() and not federated):
        return {
            "status": "not_run",
            "compare_dir": str(compare_dir),
            "message": f"Not run yet: {_shown(compare_dir)} holds no ACDC sites with a base model or a finished "
            f"method. `{COMPARE_COMMAND}` fills it (hours); then rerun this command.",
        }
    result: dict[str, Any] = {
        "status": "ok",
        "compare_dir": str(compare_dir),
        "sites": {s: _site_group(sites_root / s) for s in sites},
        "base_final": (compare_dir / "base" / "model_final.pt").is_file(),
        "notes": notes,
        "methods": {},
        "seeds": {m: sorted(by_seed, key=int) for m, by_seed in federated.items()},
    }
    before = None
    if base.is_file():
        logger.info("acdc: scoring the base %s on %s", base, sites)
        written = time.strftime("%Y-%m-%d %H:%M", time.localtime(base.stat().st_mtime))
        try:
            before = per_case_scores({s: base for s in sites}, sites_root, profile)
        except (ValueError, RuntimeError, OSError, EOFError) as err:  # e.g. a checkpoint being rewritten
            result["notes"].append(f"the base {_shown(base)} could not be scored: {err}")
        else:
            result["base"] = site_means({"base": before})
            result["base_written"] = written
    for method, by_seed in federated.items():
        result["methods"][method] = site_means(by_seed)
    if before is not None and "rate_my_lora" in federated:
        rml = patient_scores(list(federated["rate_my_lora"].values()))
        result["paired"] = paired_comparison(rml, patient_scores([before]))
    if not federated:
        result["notes"].append(
            f"no federated method finished yet in {_shown(compare_dir)} (seed<s>/<method>/done.json); "
            f"`{COMPARE_COMMAND}` fills it, then rerun this command"
        )
    return result


def _site_group(site_dir: Path) -> str:
    """The ACDC group(s) of a site's test cases, from its datalist."""
    groups = sorted({str(r.get("group")) for r in load_datalist(site_dir, "test")})
    return "+".join(groups)


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------


def _shown(path: str | Path) -> str:
    """`path` relative to the repository when it lies inside it (README lines stay short)."""
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def _f(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def render_phantoms(sec: Mapping[str, Any]) -> list[str]:
    """Markdown lines of the phantom-vendor table."""
    lines = [
        f"**Phantom vendors** ({sec['subjects']} subjects per vendor, seed {sec['seed']}, "
        f"{'generated in this run' if sec['generated'] else 'reused from an earlier run'}, ED and ES volumes; "
        "3D Dice, mean over the volumes; the last column splits the raw RV Dice by phase):",
        "",
        "| vendor profile | scanner look | volumes | raw mean | raw LV | raw MYO | raw RV "
        "| cleaned mean | cleaned LV | cleaned MYO | cleaned RV | raw RV at ED / ES |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for vendor, v in sec["vendors"].items():
        raw = " | ".join(_f(v["raw"][k]) for k in ("mean", *NAMES))
        clean = " | ".join(_f(v["cleaned"][k]) for k in ("mean", *NAMES))
        phases = " / ".join(_f(v["by_phase"][ph]["raw"]["RV"]) for ph in ("ED", "ES"))
        lines.append(f"| {vendor} | {v['scanner']} | {v['cases']} | {raw} | {clean} | {phases} |")
    return lines


def render_rvsc(sec: Mapping[str, Any]) -> list[str]:
    """Markdown lines of the RVSC table."""
    if sec["status"] != "ok":
        return [f"**RVSC**: skipped — {sec['reason']}."]
    lines = [
        f"**RVSC 2012, patient09** (real Siemens 1.5 T cine DICOM, `{Path(sec['folder']).name}`; each contoured "
        "image segmented as a one-slice stack; RV Dice = predicted label 3 vs the inside of the manual "
        "i-contour; the clean-up accepts a one-slice stack):",
        "",
        "| image | trigger ms | slice loc. mm | truth RV px | RV Dice raw | RV Dice cleaned | pred RV / LV / MYO px "
        "| truth RV labelled bg / LV / MYO / RV | best mirror (Dice) | clean-up notes |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sec["cases"]:
        px = r["pred_px"]
        shares = " / ".join(f"{100 * r['truth_rv_as'][n]:.0f}%" for n in ("background", "LV", "MYO", "RV"))
        flip, best = max(r["rv_dice_flipped"].items(), key=lambda kv: kv[1])
        lines.append(
            f"| {r['case_id']} | {_f(r['trigger_time_ms'], 0)} | {_f(r['slice_location_mm'], 1)} | {r['truth_rv_px']} "
            f"| {_f(r['rv_dice'])} | {_f(r['rv_dice_cleaned'])} | {px['RV']} / {px['LV']} / {px['MYO']} | {shares} "
            f"| {flip} ({best:.3f}) | {', '.join(r['notes']) or 'none'} |"
        )
    lines.append(
        f"| mean | | | | {_f(sec['mean_rv_dice'])} | {_f(sec['mean_rv_dice_cleaned'])} | | | | |",
    )
    lines += ["", f"Overlay: `{sec['overlay']}` (written locally; it shows real RVSC images, which stay out of git)."]
    return lines


def render_acdc(sec: Mapping[str, Any]) -> list[str]:
    """Markdown lines of the ACDC before / after table."""
    if sec["status"] != "ok":
        return [f"**ACDC appearance-shifted sites**: {sec['message']}"]
    models = (["base"] if "base" in sec else []) + list(sec["methods"])
    seeds = "; ".join(f"{METHOD_TITLES[m]}: seeds {', '.join(s)}" for m, s in sec["seeds"].items()) or "none"
    base_state = "finished" if sec["base_final"] else f"still training, checkpoint of {sec.get('base_written')}"
    lines = [
        f"**ACDC appearance-shifted sites** (`{_shown(sec['compare_dir'])}`; in-client 3D Dice on each site's "
        f"test split, raw labels; base {base_state}; finished seeds — {seeds}):",
        "",
        "| site | group | test volumes | "
        + " | ".join(f"{METHOD_TITLES[m]} {k}" for m in models for k in ("mean", *NAMES))
        + " |",
        "|---|---|---|" + "---|" * (4 * len(models)),
    ]
    for site, group in sec["sites"].items():
        src = [sec["base"] if m == "base" else sec["methods"][m] for m in models]
        n = max((s.get(site, {}).get("cases") or 0) for s in src) if src else 0
        cells = " | ".join(_f(s.get(site, {}).get(k)) for s in src for k in ("mean", *NAMES))
        lines.append(f"| {site} | {group} | {n} | {cells} |")
    p = sec.get("paired")
    if p:
        lines += [
            "",
            f"Rate-My-LoRA − base per test patient: {p['mean_diff']:+.4f} ± {p['std_diff']:.4f} "
            f"({p['wins']} better / {p['losses']} worse / {p['ties']} tied of {p['n']}; "
            f"Wilcoxon p {_f(p['wilcoxon_p'])}, sign-test p {_f(p['sign_p'])}).",
        ]
    notes = sec.get("notes", [])
    lines += ([""] if notes else []) + [f"- {n}" for n in notes]
    return lines


def render_markdown(result: Mapping[str, Any]) -> str:
    """The whole Markdown report: the command, the machine, the three sections."""
    lines = [
        f"`{result['command']}`",
        "",
        f"{result['machine']}; model `{result['model']}` (profile {result['profile']}); "
        f"whole run {result['seconds'] / 60:.1f} min.",
    ]
    renderers = {"phantoms": render_phantoms, "rvsc": render_rvsc, "acdc": render_acdc}
    for name in SECTIONS:
        if name in result:
            lines += ["", *renderers[name](result[name])]
    return "\n".join(lines) + "\n"


def ensure_block(text: str) -> str:
    """`text` with an empty ``robustness`` block under its heading, added before the M&Ms-2 results.

    Unchanged when the markers are there; appended at the end when the M&Ms-2 heading is absent.
    """
    start, end = f"<!-- {BLOCK}:start -->", f"<!-- {BLOCK}:end -->"
    if start in text and end in text:
        return text
    block = f"{HEADING}\n\n{start}\n{end}\n\n"
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if line.rstrip("\n") == BEFORE_HEADING:
            return "".join(lines[:i]) + block + "".join(lines[i:])
    return text.rstrip("\n") + "\n\n" + block.rstrip("\n") + "\n"


def update_readme(readme: Path, body: str) -> Path:
    """Add the block to `readme` when absent, then replace its content with `body`."""
    text = readme.read_text()
    new = ensure_block(text)
    if new != text:
        readme.write_text(new)
    return replace_block(readme, BLOCK, body)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="plain U-Net weights (model.pt)")
    p.add_argument("--profile", default="clinical", choices=list(PROFILES))
    p.add_argument("--workdir", default="runs/robustness")
    p.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=list(SECTIONS))
    p.add_argument("--subjects", type=int, default=3, help="phantom subjects per vendor")
    p.add_argument("--seed", type=int, default=0, help="phantom generation seed")
    p.add_argument("--rvsc", default=str(DEFAULT_RVSC), help="RVSC patient folder")
    p.add_argument("--compare", default=str(DEFAULT_COMPARE), help="workdir of the ACDC comparison")
    p.add_argument("--compare-profile", default="clinical", choices=list(PROFILES))
    p.add_argument("--no-readme", action="store_true", help="do not update benchmarks/README.md")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    logger.setLevel(logging.INFO)
    command = ".venv/bin/python benchmarks/robustness.py " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)
    )
    t0 = time.perf_counter()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "command": command,
        "machine": machine_line(),
        "model": args.model,
        "profile": args.profile,
    }
    try:
        net = load_model(args.model, args.profile)
        if "phantoms" in args.sections:
            result["phantoms"] = phantom_section(net, args.profile, work / "phantoms", args.subjects, args.seed)
        if "rvsc" in args.sections:
            result["rvsc"] = rvsc_section(net, args.profile, Path(args.rvsc), work)
        if "acdc" in args.sections:
            result["acdc"] = acdc_section(Path(args.compare), args.compare_profile)
    except (ValueError, FileNotFoundError, DataError) as err:
        print(f"robustness: {err}", file=sys.stderr)
        return 2
    result["seconds"] = time.perf_counter() - t0
    result = jsonable(result)
    write_json(result, work / "robustness.json")
    md = render_markdown(result)
    (work / "robustness.md").write_text(md)
    if not args.no_readme:
        update_readme(README, md)
    print(md)
    print(f"written: {work / 'robustness.json'}, {work / 'robustness.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
