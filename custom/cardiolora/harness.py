"""The experiment harness behind ``benchmarks/compare.py``: the paper's Tables 1 and 2.

On the same sites, splits and seeds it runs five methods and compares them:

* ``local`` — LoRA fine-tuning of the base at each site alone (the bundle's ``lora`` workflow), for
  the same number of local epochs a site spends in a federated run (``rounds × local_epochs + 1``:
  the federated sites train one more epoch for their personal adapter at ``finalize``);
* ``fedavg_full`` — the ``fedavg_full`` FLARE job (full weights travel); its final global model is
  scored on every site's test split with `cardiolora.evaluation.evaluate_records`;
* ``fedpetuning`` and ``rate_my_lora`` — the FLARE jobs of the same names (their own cross-site
  evaluation, ``cross_site_eval.json``);
* ``centralised`` — the upper bound: the train/val splits of all sites pooled into one datalist,
  full-weight fine-tuning of the base with the bundle's ``train`` workflow (``load_pretrain``) for
  the same number of epochs.

Every method runs through the existing entry points (`cardiolora.bundle.run_workflow`,
`cardiolora.fl.run.run_simulation`): there is no training or federation loop here. The seed of a
run is the bundle ``seed`` of the local and centralised workflows and the job ``seed`` of the FLARE
jobs (each site seeds its round-t training with `cardiolora.fl.seeds.round_seed` of seed, site, t). A method's
folder ``<workdir>/seed<s>/<method>/`` gets a ``done.json`` when it finished; a rerun reuses it.

The result of one method and seed is a *score matrix* ``{owner: {evaluator: {metric: value}}}``:
the model of site ``owner`` scored on the test split of site ``evaluator`` (mean over LV, MYO and RV
of the per-case means). A single-model method (FedAvg, centralised) gives every site the same model.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import shutil
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cardiolora.paired import (
    in_client_models,
    paired_summary,
    per_case_scores,
    rating_events,
    render_paired_markdown,
)

__all__ = [
    "METHODS",
    "FEDERATED_METHODS",
    "METHOD_TITLES",
    "TABLE_METRICS",
    "ACDC_APPEARANCE",
    "ACDC_SITES",
    "appearance_transform",
    "centralised_datalist",
    "reuse_or_run",
    "mean_std",
    "in_client_table",
    "cross_client_table",
    "bandwidth_from_history",
    "fedavg_bandwidth",
    "state_dict_bytes",
    "matrix_from_cross_eval",
    "evaluate_matrix",
    "render_markdown",
    "plot_curves",
    "prepare_phantoms",
    "prepare_acdc",
    "prepare_mnms2",
    "pretrain_base",
    "run_local",
    "run_federated",
    "run_centralised",
    "run_comparison",
]

logger = logging.getLogger(__name__)

#: The methods in table order.
METHODS: tuple[str, ...] = ("local", "fedavg_full", "fedpetuning", "rate_my_lora", "centralised")
#: The methods that run as FLARE jobs (`run_federated`).
FEDERATED_METHODS: tuple[str, ...] = ("fedavg_full", "fedpetuning", "rate_my_lora")
METHOD_TITLES: dict[str, str] = {
    "local": "Local only (LoRA)",
    "fedavg_full": "FedAvg (full weights)",
    "fedpetuning": "FedPETuning",
    "rate_my_lora": "Rate-My-LoRA",
    "centralised": "Centralised (upper bound)",
}
#: The metrics of the tables, as the paper reports them (HD95 is in the JSON too).
TABLE_METRICS: tuple[str, ...] = ("dice", "voe", "hd", "assd")
_METRIC_TITLES = {"dice": "DICE", "voe": "VOE (%)", "hd": "HD (mm)", "hd95": "HD95 (mm)", "assd": "ASSD (mm)"}
FL_SITES: tuple[str, ...] = ("site-1", "site-2", "site-3")

# ------------------------------------------------------------------------------------------------
# ACDC: three pathology groups seen through three fixed scanner-style appearance changes
# ------------------------------------------------------------------------------------------------

#: ACDC protocol: site name → (ACDC group, fraction of its patients kept, appearance parameters).
#: The base model is pretrained on groups NOR + MINF (untransformed).
ACDC_SITES: dict[str, tuple[str, float]] = {"site-1": ("DCM", 1.0), "site-2": ("HCM", 0.5), "site-3": ("RV", 1.0)}
#: Patient-level train/val/test ratios of the ACDC sites (16 patients → 10/2/4, the half HCM site's
#: 8 → 5/1/2): ten test patients in all for the paired per-patient comparison. The reference keeps
#: `REFERENCE_RATIOS`.
ACDC_SITE_RATIOS: tuple[float, float, float] = (0.6, 0.15, 0.25)
REFERENCE_RATIOS: tuple[float, float, float] = (0.8, 0.1, 0.1)
#: Per site: gamma on the [0, 1]-normalised image, contrast factor around the mean, a linear bias
#: field of this peak amplitude (multiplicative, ±), Gaussian blur sigma (pixels, in-plane) and
#: Gaussian noise std (fraction of the intensity range; seeded by the case id, so deterministic).
ACDC_APPEARANCE: dict[str, dict[str, float]] = {
    "site-1": {"gamma": 0.7, "contrast": 1.2, "bias": 0.15, "blur": 0.0, "noise": 0.02},
    "site-2": {"gamma": 1.4, "contrast": 0.8, "bias": 0.0, "blur": 1.0, "noise": 0.0},
    "site-3": {"gamma": 1.0, "contrast": 1.0, "bias": 0.3, "blur": 0.6, "noise": 0.05},
}


def appearance_transform(image: np.ndarray, params: Mapping[str, float], key: str) -> np.ndarray:
    """Apply a fixed scanner-style appearance change to one ``(Z, Y, X)`` image (labels untouched).

    With ``x`` the image min-max normalised to [0, 1] (per volume), ``b(y, x) = 1 + bias·(u + v)/2``
    a linear bias field over the normalised in-plane coordinates ``u, v ∈ [-1, 1]``:
    ``out = blur_σ(clip(contrast·(x^γ − mean) + mean, 0, 1) · b) + N(0, noise²)``, scaled back to the
    input range. The noise is drawn from a generator seeded with ``crc32(key)``: the same
    image and key always give the same result.

    Args:
        image: the image ``(Z, Y, X)`` (any real dtype).
        params: ``gamma`` (> 0), ``contrast`` (> 0), ``bias`` (in [0, 1)), ``blur`` (>= 0, pixels),
            ``noise`` (>= 0).
        key: seed key of the noise (e.g. the case id).

    Returns:
        The transformed image, ``float32``, same shape.

    Raises:
        ValueError: if `image` is not 3D or a parameter is out of range (named).
    """
    from scipy import ndimage

    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 3:
        raise ValueError(f"`image` must be 3D (Z, Y, X), got shape {img.shape}.")
    p = {"gamma": 1.0, "contrast": 1.0, "bias": 0.0, "blur": 0.0, "noise": 0.0, **dict(params)}
    for name, ok in (
        ("gamma", p["gamma"] > 0),
        ("contrast", p["contrast"] > 0),
        ("bias", 0 <= p["bias"] < 1),
        ("blur", p["blur"] >= 0),
        ("noise", p["noise"] >= 0),
    ):
        if not ok:
            raise ValueError(f"`params[{name!r}]` out of range: {p[name]}.")
    lo, hi = float(img.min()), float(img.max())
    x = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
    x = x ** p["gamma"]
    m = float(x.mean())
    x = np.clip(p["contrast"] * (x - m) + m, 0.0, 1.0)
    if p["bias"]:
        v, u = np.meshgrid(np.linspace(-1, 1, x.shape[1]), np.linspace(-1, 1, x.shape[2]), indexing="ij")
        x = x * (1.0 + p["bias"] * (u + v) / 2.0)[None]
    if p["blur"]:
        x = ndimage.gaussian_filter(x, sigma=(0.0, p["blur"], p["blur"]))
    if p["noise"]:
        rng = np.random.default_rng(zlib.crc32(key.encode()))
        x = x + rng.normal(0.0, p["noise"], size=x.shape)
    return (lo + x * (hi - lo if hi > lo else 1.0)).astype(np.float32)


def _write_nifti_case(rec, out_dir: Path, params: Mapping[str, float] | None, spacing_default: float):
    """Write one case (transformed image, labels in the ACDC convention) as NIfTI; return its record."""
    import nibabel as nib

    from cardiolora.data.loaders import CaseRecord, load_case

    case = load_case(rec)
    image = case.image if params is None else appearance_transform(case.image, params, rec.case_id)
    spacing = case.spacing_zyx or (
        float(rec.meta.get("slice_spacing_mm") or 10.0),
        float(rec.meta.get("in_plane_spacing_mm") or spacing_default),
        float(rec.meta.get("in_plane_spacing_mm") or spacing_default),
    )
    label = case.label.copy()
    acdc = label.copy()  # back to the ACDC convention (1 RV, 3 LV) so the record reads as `acdc`
    acdc[label == 1], acdc[label == 3] = 3, 1
    affine = np.diag([spacing[2], spacing[1], spacing[0], 1.0])
    pdir = out_dir / rec.patient_id
    pdir.mkdir(parents=True, exist_ok=True)
    img_path, lab_path = pdir / f"{rec.case_id}.nii.gz", pdir / f"{rec.case_id}_gt.nii.gz"
    nib.save(nib.Nifti1Image(image.transpose(2, 1, 0).astype(np.float32), affine), str(img_path))
    nib.save(nib.Nifti1Image(acdc.transpose(2, 1, 0).astype(np.uint8), affine), str(lab_path))
    meta = {k: v for k, v in rec.meta.items() if k != "in_plane_spacing_mm"}
    return CaseRecord.from_dict(
        {**rec.to_dict(), "image": str(img_path), "label": str(lab_path), "source": "acdc", "meta": meta}
    )


# ------------------------------------------------------------------------------------------------
# data sources
# ------------------------------------------------------------------------------------------------


def prepare_phantoms(workdir: Path, progress: bool = False) -> tuple[Path, list[str]]:
    """Generate the default phantom sites under ``<workdir>/data/phantoms``; returns (sites root, sites)."""
    from cardiolora.data.generate import DEFAULT_SITES, generate_sites

    out = Path(workdir) / "data" / "phantoms"
    generate_sites(out, DEFAULT_SITES, progress=progress)
    return out / "sites", [s.name for s in DEFAULT_SITES if s.name != "reference"]


def _half_patients(records: Sequence, fraction: float, seed: int) -> list:
    """Keep `fraction` of the patients (a fixed, seeded choice by crc32 rank); all of a patient's cases."""
    pids = sorted({r.patient_id for r in records}, key=lambda p: (zlib.crc32(f"{seed}:{p}".encode()), p))
    keep = set(pids[: max(1, round(len(pids) * fraction))])
    return [r for r in records if r.patient_id in keep]


def prepare_acdc(workdir: Path, source: str | os.PathLike, seed: int = 0) -> tuple[Path, list[str]]:
    """ACDC protocol: reference = NOR + MINF; sites DCM, HCM (half its patients), RV with appearance changes.

    Writes ``<workdir>/data/acdc/nifti/<site>/...`` (transformed NIfTI copies; reused when there)
    and ``<workdir>/data/acdc/sites/<site>/datalist.json``.

    Raises:
        ValueError: if a group has fewer than 3 patients (named).
    """
    from cardiolora.data.dataset import DATALIST_NAME
    from cardiolora.data.generate import site_datalist
    from cardiolora.data.loaders import index_dataset

    root = Path(workdir) / "data" / "acdc"
    sites_root = root / "sites"
    records = list(index_dataset(source))
    plan = {"reference": (("NOR", "MINF"), 1.0, None)}
    plan.update({s: ((g,), f, ACDC_APPEARANCE[s]) for s, (g, f) in ACDC_SITES.items()})
    for site, (groups, fraction, params) in plan.items():
        if (sites_root / site / DATALIST_NAME).is_file():
            continue
        recs = [r for r in records if (r.group or "").upper() in groups]
        recs = _half_patients(recs, fraction, seed) if fraction < 1 else recs
        if len({r.patient_id for r in recs}) < 3:
            raise ValueError(f"{source}: groups {groups} have fewer than 3 patients for site `{site}`.")
        written = [_write_nifti_case(r, root / "nifti" / site, params, 1.5) for r in recs]
        site_datalist(
            written,
            sites_root / site,
            seed,
            ratios=REFERENCE_RATIOS if site == "reference" else ACDC_SITE_RATIOS,
            meta={"source": str(source), "groups": list(groups), "appearance": params, "fraction": fraction},
        )
    return sites_root, list(ACDC_SITES)


def prepare_mnms2(
    workdir: Path, source: str | os.PathLike, reference: str | None = None, seed: int = 0
) -> tuple[Path, list[str]]:
    """M&Ms-2: one site per VENDOR; the vendor with most patients (or `reference`) pretrains the base.

    Sites are named ``site-1..`` in sorted vendor order (the mapping is in each datalist's meta).

    Raises:
        ValueError: if fewer than two vendors besides the reference are found.
    """
    from cardiolora.data.dataset import DATALIST_NAME
    from cardiolora.data.generate import site_datalist
    from cardiolora.data.loaders import index_dataset

    records = list(index_dataset(source, layout="mnms2"))
    by_vendor: dict[str, list] = {}
    for r in records:
        by_vendor.setdefault(str(r.vendor), []).append(r)
    ref = reference or max(sorted(by_vendor), key=lambda v: len({r.patient_id for r in by_vendor[v]}))
    if ref not in by_vendor:
        raise ValueError(f"{source}: `reference` vendor {ref!r} not found (vendors: {sorted(by_vendor)}).")
    others = [v for v in sorted(by_vendor) if v != ref]
    if len(others) < 2:
        raise ValueError(f"{source}: need at least two vendors besides {ref!r}, found {others}.")
    sites_root = Path(workdir) / "data" / "mnms2" / "sites"
    names = {"reference": ref, **{f"site-{i + 1}": v for i, v in enumerate(others)}}
    for site, vendor in names.items():
        if not (sites_root / site / DATALIST_NAME).is_file():
            site_datalist(by_vendor[vendor], sites_root / site, seed, meta={"source": str(source), "vendor": vendor})
    return sites_root, [s for s in names if s != "reference"]


def pretrain_base(workdir: Path, sites_root: Path, profile: str, progress: bool = False) -> Path:
    """Pretrain the base on ``<sites_root>/reference`` with the bundle (reused when finished)."""
    from cardiolora.bundle import run_workflow

    out = Path(workdir) / "base"
    if not ((out / "model_final.pt").is_file() and (out / "model.pt").is_file()):
        run_workflow(
            "train",
            {
                "dataset_dir": str((sites_root / "reference").resolve()),
                "output_dir": str(out.resolve()),
                "model_dir": str(out.resolve()),
                "profile": profile,
                "progress": progress,
            },
        )
    return out / "model.pt"


# ------------------------------------------------------------------------------------------------
# datalists, reuse
# ------------------------------------------------------------------------------------------------


def centralised_datalist(sites_root: str | os.PathLike, sites: Sequence[str], out_dir: str | os.PathLike) -> Path:
    """Pool the train and val splits of all sites into ``<out_dir>/datalist.json``.

    Every site's test split is kept apart under ``test_<site>`` (there is no pooled ``test``), so
    the centralised model is scored on exactly the cases the other methods are scored on.
    Paths are absolute. Each entry's ``meta["site"]`` names its site.

    Returns:
        The datalist path.
    """
    from cardiolora.data.dataset import DATALIST_NAME, load_datalist, write_datalist

    splits: dict[str, list] = {"train": [], "val": []}
    for site in sites:
        for key in ("train", "val", "test"):
            rows = [
                {**e, "meta": {**(e.get("meta") or {}), "site": site}}
                for e in load_datalist(Path(sites_root) / site, key)
            ]
            if key == "test":
                splits[f"test_{site}"] = rows
            else:
                splits[key].extend(rows)
    return write_datalist(splits, Path(out_dir) / DATALIST_NAME, meta={"pooled_sites": list(sites)})


def reuse_or_run(folder: str | os.PathLike, run: Callable[[Path], Mapping[str, Any]]) -> dict:
    """Return ``<folder>/done.json`` if it exists, else ``run(folder)`` written there as ``done.json``.

    A folder without ``done.json`` (an interrupted run) is run again; whatever `run` can resume
    (the bundle's checkpoints, the FLARE server state) it resumes.
    """
    from cardiolora.fl.history import write_json

    folder = Path(folder)
    done = folder / "done.json"
    if done.is_file():
        logger.info("reusing %s", done)
        return json.loads(done.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    result = dict(run(folder))
    result.setdefault("seconds", round(time.time() - t0, 1))
    write_json(result, done)
    return json.loads(done.read_text())


# ------------------------------------------------------------------------------------------------
# evaluation
# ------------------------------------------------------------------------------------------------


def evaluate_matrix(
    models: Mapping[str, str | os.PathLike],
    sites_root: str | os.PathLike,
    sites: Sequence[str],
    profile: str,
    test_dirs: Mapping[str, str | os.PathLike] | None = None,
) -> dict:
    """Score each owner's weights on every site's test split; the same file is evaluated once.

    Args:
        models: owner site → weights file (plain U-Net state dict).
        sites_root: folder of ``<site>/datalist.json``.
        sites: the evaluator sites.
        profile: run profile.
        test_dirs: where a site's datalist is, when not ``sites_root/<site>``.

    Returns:
        ``{owner: {evaluator: {metric: mean over structures}}}``.
    """
    from cardiolora.data.dataset import load_datalist
    from cardiolora.evaluation import evaluate_records
    from cardiolora.metrics import METRICS, aggregate_scores
    from cardiolora.networks import load_weights, lora_unet

    cache: dict[str, dict] = {}
    out: dict = {}
    for owner, path in models.items():
        key = str(Path(path).resolve())
        if key not in cache:
            net = lora_unet(profile)
            load_weights(net, path)
            net.eval()
            row = {}
            for ev in sites:
                folder = Path((test_dirs or {}).get(ev, Path(sites_root) / ev))
                rows = evaluate_records(net, load_datalist(folder, "test"), profile)
                agg = aggregate_scores([r["scores"] for r in rows])
                row[ev] = {m: agg["mean"][m]["mean"] for m in METRICS}
            cache[key] = row
        out[owner] = cache[key]
    return out


def matrix_from_cross_eval(cross: Mapping[str, Any], sites: Sequence[str]) -> dict:
    """Score matrix of the personalised models from a job's ``cross_site_eval.json``.

    ``mean_over_structures[metric][owner][evaluator]`` → ``{owner: {evaluator: {metric: value}}}``.
    """
    means = cross.get("mean_over_structures") or {}
    out: dict = {}
    for metric, by_model in means.items():
        for owner in sites:
            for ev, value in (by_model.get(owner) or {}).items():
                out.setdefault(owner, {}).setdefault(ev, {})[metric] = value
    return out


# ------------------------------------------------------------------------------------------------
# tables
# ------------------------------------------------------------------------------------------------


def mean_std(values: Sequence[float | None]) -> dict:
    """NaN-aware mean and population std over seeds: ``{"mean", "std", "n"}`` (NaN and n 0 if none)."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return {"mean": float("nan"), "std": float("nan"), "n": 0}
    return {"mean": float(np.mean(vals)), "std": float(np.std(vals)), "n": len(vals)}


def in_client_table(results: Mapping[str, Mapping[str, Mapping]], metrics: Sequence[str] = TABLE_METRICS) -> dict:
    """Table 1: each site's model on its own test split, mean ± std over seeds.

    Args:
        results: ``{method: {seed: score matrix}}`` (see the module docstring).
        metrics: the metrics to tabulate.

    Returns:
        ``{method: {site: {metric: {"mean", "std", "n"}}}}``.
    """
    table: dict = {}
    for method, by_seed in results.items():
        sites = sorted({s for m in by_seed.values() for s in m})
        table[method] = {
            s: {k: mean_std([(m.get(s) or {}).get(s, {}).get(k) for m in by_seed.values()]) for k in metrics}
            for s in sites
        }
    return table


def cross_client_table(results: Mapping[str, Mapping[str, Mapping]], metrics: Sequence[str] = TABLE_METRICS) -> dict:
    """Table 2: each site's model on the *other* sites' test splits (diagonal excluded).

    Per seed the owner's score is the mean over evaluators ≠ owner; then mean ± std over seeds.

    Returns:
        ``{method: {owner: {metric: {"mean", "std", "n"}}}}``.
    """
    table: dict = {}
    for method, by_seed in results.items():
        owners = sorted({s for m in by_seed.values() for s in m})
        table[method] = {}
        for owner in owners:
            row = {}
            for k in metrics:
                per_seed = []
                for m in by_seed.values():
                    vals = [
                        v.get(k)
                        for ev, v in (m.get(owner) or {}).items()
                        if ev != owner and v.get(k) is not None and math.isfinite(float(v.get(k)))
                    ]
                    per_seed.append(float(np.mean(vals)) if vals else None)
                row[k] = mean_std(per_seed)
            table[method][owner] = row
    return table


def _round_records(history: Sequence[Mapping[str, Any]] | Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The round records of an ``rml_history.json`` (the file's ``rounds`` list, or a bare list)."""
    if isinstance(history, Mapping):
        return list(history.get("rounds") or [])
    return list(history)


def bandwidth_from_history(history: Sequence[Mapping[str, Any]] | Mapping[str, Any]) -> dict:
    """Bytes per site from a LoRA job's ``rml_history.json`` (its ``rounds`` list, or the list itself).

    Training rounds are the records with ``round >= 1`` and no ``task`` field; ``per_round`` is
    the mean over them, ``total`` sums every record (init, rounds, finalize, cross-eval).

    Returns:
        ``{site: {"up_per_round", "down_per_round", "up_total", "down_total", "rounds"}}``.
    """
    out: dict = {}
    for rec in _round_records(history):
        training = int(rec.get("round") or 0) >= 1 and not rec.get("task")
        for site, v in (rec.get("sites") or {}).items():
            if not isinstance(v, Mapping):
                continue
            s = out.setdefault(site, {"up": [], "down": [], "up_total": 0, "down_total": 0})
            up, down = int(v.get("bytes_up") or 0), int(v.get("bytes_down") or 0)
            s["up_total"] += up
            s["down_total"] += down
            if training:
                s["up"].append(up)
                s["down"].append(down)
    return {
        site: {
            "up_per_round": float(np.mean(s["up"])) if s["up"] else 0.0,
            "down_per_round": float(np.mean(s["down"])) if s["down"] else 0.0,
            "up_total": s["up_total"],
            "down_total": s["down_total"],
            "rounds": len(s["up"]),
        }
        for site, s in out.items()
    }


def state_dict_bytes(state: Mapping[str, Any]) -> int:
    """Payload bytes of a state dict: ``Σ numel × element size`` over its tensors."""
    return int(sum(t.numel() * t.element_size() for t in state.values() if hasattr(t, "numel")))


def fedavg_bandwidth(model_bytes: int, sites: Sequence[str], rounds: int) -> dict:
    """FedAvg with full weights: every round each site gets the model down and sends it up.

    Returns:
        The same layout as `bandwidth_from_history` (totals = ``rounds × model_bytes``).
    """
    return {
        s: {
            "up_per_round": float(model_bytes),
            "down_per_round": float(model_bytes),
            "up_total": rounds * model_bytes,
            "down_total": rounds * model_bytes,
            "rounds": rounds,
        }
        for s in sites
    }


# ------------------------------------------------------------------------------------------------
# rendering
# ------------------------------------------------------------------------------------------------


def _fmt(cell: Mapping[str, Any], digits: int) -> str:
    m, s, n = cell.get("mean"), cell.get("std"), cell.get("n", 0)
    if not n or m is None or not math.isfinite(m):
        return "n/a"
    return f"{m:.{digits}f} ± {s:.{digits}f}" if n > 1 else f"{m:.{digits}f}"


def _score_table(table: Mapping[str, Mapping[str, Mapping]], metrics: Sequence[str]) -> list[str]:
    sites = sorted({s for rows in table.values() for s in rows})
    head = "| method | " + " | ".join(f"{s} {_METRIC_TITLES.get(k, k)}" for s in sites for k in metrics) + " |"
    lines = [head, "|---|" + "---|" * (len(sites) * len(metrics))]
    for method in [m for m in METHODS if m in table] + [m for m in table if m not in METHODS]:
        cells = [_fmt(table[method].get(s, {}).get(k, {}), 3 if k == "dice" else 2) for s in sites for k in metrics]
        lines.append(f"| {METHOD_TITLES.get(method, method)} | " + " | ".join(cells) + " |")
    return lines


def _mb(x: float | None) -> str:
    return "—" if x is None else f"{x / 1e6:.2f} MB"


def render_markdown(summary: Mapping[str, Any], metrics: Sequence[str] = TABLE_METRICS) -> str:
    """Markdown of a comparison: command, machine line, Table 1, Table 2, bandwidth, curves.

    Args:
        summary: ``{"command", "machine", "source", "seeds", "rounds", "profile", "in_client",
            "cross_client", "bandwidth": {method: {site: ...}}, "curves": png name or None,
            "notes": [str]}``.
        metrics: metrics in the tables.

    Returns:
        The Markdown text.
    """
    seeds = summary.get("seeds", [])
    lines = [
        f"`{summary.get('command', '')}` ({summary.get('machine', '')}):",
        "",
        f"Source `{summary.get('source')}`, profile `{summary.get('profile')}`, {summary.get('rounds')} rounds, "
        f"seeds {', '.join(str(s) for s in seeds)} (mean ± std over seeds when more than one). "
        "Scores: mean over LV, MYO and RV of the per-case means on each site's test split.",
        "",
        "**Table 1 — in-client** (each site's model on its own test split):",
        "",
        *_score_table(summary.get("in_client", {}), metrics),
        "",
        "**Table 2 — cross-client** (each site's model on the other sites' test splits, averaged):",
        "",
        *_score_table(summary.get("cross_client", {}), metrics),
        "",
        "**Bandwidth** (payload bytes as sent, per site: full weights and W_0 in float32, LoRA adapters in "
        "the jobs' transport dtype, float16 by default; per round = mean over training rounds; total = "
        "whole job incl. init / finalize / cross-evaluation):",
        "",
        "| method | site | up per round | down per round | up total | down total |",
        "|---|---|---|---|---|---|",
    ]
    for method in [m for m in METHODS if m in summary.get("bandwidth", {})]:
        for site, b in sorted(summary["bandwidth"][method].items()):
            if b is None:
                lines.append(f"| {METHOD_TITLES[method]} | {site} | — | — | — | — |")
                continue
            lines.append(
                f"| {METHOD_TITLES[method]} | {site} | {_mb(b['up_per_round'])} | {_mb(b['down_per_round'])} | "
                f"{_mb(b['up_total'])} | {_mb(b['down_total'])} |"
            )
    if summary.get("curves"):
        lines += ["", f"Per-round curves (validation Dice P_t per site, λ_t, w_t(c)): `{summary['curves']}`."]
    for note in summary.get("notes", []):
        lines += ["", note]
    return "\n".join(lines) + "\n"


def plot_curves(histories: Mapping[str, Sequence[Mapping[str, Any]]], path: str | os.PathLike) -> Path | None:
    """PNG of validation Dice P_t^c per site, λ_t and w_t(c) per round for each LoRA job."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not histories:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(14, 4), dpi=90)
    for method, hist in histories.items():
        rounds = [r for r in _round_records(hist) if r.get("task") in (None, "init")]  # init: P_0 of W_0
        sites = sorted({s for r in rounds for s in (r.get("sites") or {})})
        style = "-" if method == "rate_my_lora" else "--"
        for s in sites:
            pts = [(r["round"], (r["sites"].get(s) or {}).get("score")) for r in rounds if s in (r.get("sites") or {})]
            pts = [(t, v) for t, v in pts if v is not None]
            if pts:
                axes[0].plot(*zip(*pts, strict=True), style, marker="o", label=f"{method} {s}")
            pts = [(r["round"], (r["sites"].get(s) or {}).get("rating")) for r in rounds if s in (r.get("sites") or {})]
            pts = [(t, v) for t, v in pts if v is not None]
            if pts:
                axes[2].plot(*zip(*pts, strict=True), style, marker="o", label=f"{method} {s}")
        pts = [(r["round"], r.get("lambda")) for r in rounds if r.get("lambda") is not None]
        if pts:
            axes[1].plot(*zip(*pts, strict=True), style, marker="o", label=method)
    for ax, title in zip(axes, ("validation Dice P_t(c)", "λ_t", "rating w_t(c)"), strict=True):
        ax.set_title(title)
        ax.set_xlabel("round")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------------------
# method runners
# ------------------------------------------------------------------------------------------------


def _total_epochs(profile: str, rounds: int) -> int:
    from cardiolora.profiles import get_profile

    return rounds * get_profile(profile).local_epochs + 1


def run_local(
    folder: Path, sites_root: Path, sites: Sequence[str], base: Path, profile: str, rounds: int, seed: int
) -> dict:
    """Local only: the bundle's ``lora`` workflow at each site, ``rounds × local_epochs + 1`` epochs."""
    from cardiolora.bundle import run_workflow
    from cardiolora.data.dataset import load_datalist
    from cardiolora.networks import rank_for_dataset_size

    sizes = {s: len(load_datalist(sites_root / s, "train")) for s in sites}
    models, ranks = {}, {}
    epochs = _total_epochs(profile, rounds)
    for s in sites:
        out = folder / s
        ranks[s] = rank_for_dataset_size(sizes[s], max(sizes.values()))
        run_workflow(
            "lora",
            {
                "dataset_dir": str((sites_root / s).resolve()),
                "output_dir": str(out.resolve()),
                "model_dir": str(out.resolve()),
                "profile": profile,
                "max_epochs": epochs,
                "lora_rank": ranks[s],
                "pretrained_path": str(base.resolve()),
                "seed": seed,
                "progress": False,
            },
        )
        models[s] = out / "model.pt"
    matrix = evaluate_matrix(models, sites_root, sites, profile)
    bw = {s: {"up_per_round": 0.0, "down_per_round": 0.0, "up_total": 0, "down_total": 0, "rounds": 0} for s in sites}
    return {"matrix": matrix, "bandwidth": bw, "epochs": epochs, "ranks": ranks}


def run_federated(
    folder: Path, job: str, sites_root: Path, sites: Sequence[str], base: Path, profile: str, rounds: int, seed: int
) -> dict:
    """One FLARE job in the simulator; personalised models (LoRA jobs) or the global model (FedAvg) scored.

    `seed` is the job's ``seed`` (`cardiolora.fl.run.run_simulation`), so every site's local training
    depends on it.
    """
    from cardiolora.fl.run import run_simulation
    from cardiolora.networks import read_state_dict

    run = run_simulation(
        job,
        sites_root,
        base,
        folder,
        rounds=rounds,
        profile=profile,
        sites=list(sites),
        min_clients=len(sites),
        seed=seed,
    )
    results = folder / "results" / job
    out: dict = {"job": job, "seconds_simulator": run["seconds"], "seed": seed}
    if job == "fedavg_full":
        g = results / "global_model.pt"
        out["matrix"] = evaluate_matrix({s: g for s in sites}, sites_root, sites, profile)
        out["bandwidth"] = fedavg_bandwidth(state_dict_bytes(read_state_dict(g)), sites, rounds)
        out["history"] = []
    else:
        cross = json.loads((results / "cross_site_eval.json").read_text())
        history = json.loads((results / "rml_history.json").read_text())
        out["matrix"] = matrix_from_cross_eval(cross, sites)
        out["bandwidth"] = bandwidth_from_history(history)
        out["history"] = history
    return out


def run_centralised(
    folder: Path, sites_root: Path, sites: Sequence[str], base: Path, profile: str, rounds: int, seed: int
) -> dict:
    """Upper bound: pooled train/val, full-weight fine-tuning of the base through the ``train`` workflow."""
    from cardiolora.bundle import run_workflow

    data = folder / "data"
    centralised_datalist(sites_root, sites, data)
    epochs = _total_epochs(profile, rounds)
    run_workflow(
        "train",
        {
            "dataset_dir": str(data.resolve()),
            "output_dir": str(folder.resolve()),
            "model_dir": str(folder.resolve()),
            "profile": profile,
            "max_epochs": epochs,
            "load_pretrain": True,
            "pretrained_path": str(base.resolve()),
            "seed": seed,
            "progress": False,
        },
    )
    g = folder / "model.pt"
    return {
        "matrix": evaluate_matrix({s: g for s in sites}, sites_root, sites, profile),
        "bandwidth": None,
        "epochs": epochs,
    }


def _run_method(method: str, folder: Path, **kw: Any) -> dict:
    """Dispatch one method to its runner (`run_local`, `run_centralised` or `run_federated`)."""
    if method == "local":
        return run_local(folder, **kw)
    if method == "centralised":
        return run_centralised(folder, **kw)
    return run_federated(folder, method, **kw)


def _check_reusable(folder: Path, method: str, seed: int) -> None:
    """Refuse to reuse a FLARE result from before the jobs took the seed as a result of seed > 0.

    Such a ``done.json`` has a ``seed_note`` field: its sites trained with the per-round seeds of
    job seed 0 (`cardiolora.fl.seeds.round_seed`), so it is a valid result of seed 0 only.

    Args:
        folder: the method's folder (``<workdir>/seed<s>/<method>``).
        method: the method.
        seed: the seed the folder stands for.

    Raises:
        ValueError: if `folder` holds such a result and `seed` is not 0 (the message names the file).
    """
    from cardiolora.fl.seeds import DEFAULT_SEED

    done = folder / "done.json"
    if method not in FEDERATED_METHODS or seed == DEFAULT_SEED or not done.is_file():
        return
    if "seed_note" in json.loads(done.read_text()):
        raise ValueError(
            f"{done}: made when the FLARE jobs ignored the seed (its sites used the seeds of seed "
            f"{DEFAULT_SEED}), so it is no result of seed {seed}; delete {folder} to run it with seed {seed}."
        )


def _per_case(
    folder: Path, method: str, res: Mapping[str, Any], sites_root: Path, sites: Sequence[str], profile: str
) -> dict:
    """The run's per-case in-client scores: kept in its ``done.json``, computed once when missing."""
    from cardiolora.fl.history import write_json

    if "per_case" not in res:
        res = {**res, "per_case": per_case_scores(in_client_models(method, folder, sites), sites_root, profile)}
        write_json(res, folder / "done.json")
    return res["per_case"]


def run_comparison(
    source: str,
    workdir: str | os.PathLike,
    seeds: Sequence[int] = (0,),
    rounds: int = 2,
    profile: str = "quick",
    data: str | os.PathLike | None = None,
    methods: Sequence[str] = METHODS,
    command: str = "",
    readme: str | os.PathLike | None = None,
) -> dict:
    """Prepare the sites, pretrain the base, run every method and seed, write the summary files.

    Writes ``<workdir>/results.json``, ``results.md``, ``curves.png`` and, when `readme` is given,
    the block ``compare-<source>`` of that Markdown file.

    Raises:
        ValueError: for an unknown source or method (named), a seed that is not a non-negative int,
            or a FLARE result to reuse that was made before the jobs took the seed (`_check_reusable`).
    """
    from cardiolora.fl.history import write_json
    from cardiolora.fl.seeds import check_seed
    from cardiolora.report import machine_line, replace_block

    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"`methods` {unknown} unknown; known: {list(METHODS)}.")
    seeds = [check_seed(s, "seeds") for s in seeds]
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    if source == "phantoms":
        sites_root, sites = prepare_phantoms(workdir)
    elif source == "acdc":
        sites_root, sites = prepare_acdc(workdir, data or Path("../shared/data/acdc_h5"))
    elif source == "mnms2":
        if data is None:
            raise ValueError("`--data` is required for source `mnms2` (a folder in the M&Ms-2 layout).")
        sites_root, sites = prepare_mnms2(workdir, data)
    else:
        raise ValueError(f"`source` must be phantoms, acdc or mnms2, got {source!r}.")
    base = pretrain_base(workdir, sites_root, profile)
    results: dict = {m: {} for m in methods}
    per_case: dict = {}
    rating: dict = {}
    bandwidth: dict = {}
    histories: dict = {}
    for seed in seeds:
        for method in methods:
            folder = workdir / f"seed{seed}" / method
            logger.info("seed %s: %s in %s", seed, method, folder)
            fn = functools.partial(
                _run_method,
                method,
                sites_root=sites_root,
                sites=sites,
                base=base,
                profile=profile,
                rounds=rounds,
                seed=seed,
            )
            _check_reusable(folder, method, seed)
            res = reuse_or_run(folder, fn)
            results[method][str(seed)] = res["matrix"]
            per_case.setdefault(method, {})[str(seed)] = _per_case(folder, method, res, sites_root, sites, profile)
            if method == "rate_my_lora" and res.get("history"):
                rating[str(seed)] = rating_events(res["history"])
            if res.get("bandwidth") is not None:
                bandwidth.setdefault(method, res["bandwidth"])
            else:
                bandwidth.setdefault(method, {s: None for s in sites})
            if res.get("history"):
                histories.setdefault(method, res["history"])
    curves = plot_curves(histories, workdir / "curves.png")
    summary = {
        "command": command,
        "machine": machine_line(),
        "source": source,
        "profile": profile,
        "rounds": rounds,
        "seeds": list(seeds),
        "sites": list(sites),
        "in_client": in_client_table(results),
        "cross_client": cross_client_table(results),
        "bandwidth": bandwidth,
        "raw": results,
        **paired_summary(per_case, rating),
        "curves": str(curves) if curves else None,
        "notes": [
            f"Local only and centralised train {_total_epochs(profile, rounds)} epochs "
            "(rounds × local epochs + the federated personalisation epoch) and keep the best-validation "
            "weights; the federated sites' personalised models are those of the last round. `--seeds` "
            "is the bundle seed of the local and centralised runs and the job seed of the FLARE runs "
            "(each site's round-t seed is a function of seed, site and t).",
        ],
    }
    write_json(summary, workdir / "results.json")
    md = render_markdown(summary) + render_paired_markdown(summary, METHOD_TITLES)
    (workdir / "results.md").write_text(md)
    if readme is not None:
        body = md
        if curves:
            dest = Path(readme).parent / "results" / f"compare_{source}_curves.png"
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(curves, dest)
            body = md.replace(
                f"`{curves}`", f"![curves](results/{dest.name}) (`{dest.relative_to(Path(readme).parent)}`)"
            )
        replace_block(readme, f"compare-{source}", body)
    return summary
