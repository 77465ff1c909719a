"""The end-to-end demo on the embedded default data (the README's main command).

Stages, each reusing what an earlier run left in the work folder:

1. generate the phantom sites (reference vendor + three federated sites, one with half the cases);
2. pretrain the base U-Net on the reference site with the bundle (quick profile);
3. evaluate the base model on every site's test split (the domain gap federation has to close);
4. run Rate-My-LoRA in the NVIDIA FLARE simulator with the three sites (adapters only travel),
   personalise one local epoch at each site, cross-site evaluation;
5. print Dice per site before and after federation.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

__all__ = ["run_demo"]

logger = logging.getLogger(__name__)


def _stage(title: str) -> None:
    print(f"\n=== {title} ===", flush=True)


FL_SITES = ("site-1", "site-2", "site-3")


def federation_table(results: Path, base: dict[str, float]) -> dict[str, dict[str, float | None]]:
    """Print and return mean Dice per site: base, global W_T and personalised (from cross_site_eval.json)."""
    cross = json.loads((results / "cross_site_eval.json").read_text())
    dice = cross["mean_over_structures"]["dice"]
    after = {s: {"global": dice.get("global", {}).get(s), "personalised": dice.get(s, {}).get(s)} for s in FL_SITES}

    def fmt(v: float | None) -> str:
        return "   n/a" if v is None else f"{v:6.3f}"

    print("\nmean foreground Dice on each site's test split")
    print(f"  {'site':10s} {'base':>6s} {'global':>6s} {'personalised':>12s}")
    for s in FL_SITES:
        print(f"  {s:10s} {fmt(base.get(s))} {fmt(after[s]['global'])} {fmt(after[s]['personalised']):>12s}")
    history = json.loads((results / "rml_history.json").read_text())
    up = sum(
        (v or {}).get("bytes_up", 0) or 0
        for r in history.get("rounds", [])
        if isinstance(r.get("sites"), dict)
        for v in r["sites"].values()
    )
    print(f"bytes sent up by all sites over the job: {up / 1e6:.2f} MB")
    print(f"round curves: {results / 'rml_curves.png'}; tables: {results / 'cross_site_eval.json'}")
    print(f"site models: {results.parents[1] / 'sites'}/<site>/rate_my_lora/personalised_model.pt")
    return after


def run_demo(workdir: Path, profile: str = "quick", progress: bool = True, rounds: int = 3) -> dict:
    """Run the demo stages in `workdir`; returns a summary dict (also written as summary.json).

    Args:
        workdir: the demo's work folder (created; reused on reruns).
        profile: run profile.
        progress: show progress bars.
        rounds: federated rounds.

    Returns:
        ``{"phantoms": ..., "pretrain": ..., "base_dice": {site: mean Dice}}``.
    """
    import torch

    from cardiolora.bundle import run_workflow
    from cardiolora.data.dataset import load_datalist
    from cardiolora.data.generate import DEFAULT_SITES, generate_sites
    from cardiolora.evaluation import evaluate_records
    from cardiolora.networks import load_weights, lora_unet

    workdir = Path(workdir).resolve()
    t0 = time.time()
    _stage("1/4 phantom sites")
    phantoms = workdir / "phantoms"
    manifest = generate_sites(phantoms, DEFAULT_SITES, progress=progress)
    for name, info in manifest["sites"].items():
        print(f"  {name:10s} profile {info['profile']:9s} {info['n_subjects']:3d} subjects")
    print(f"montage: {phantoms / 'montage.png'}")

    _stage("2/4 pretrain the base U-Net on the reference site")
    pre_dir = workdir / "pretrain"
    weights = pre_dir / "model.pt"
    if (pre_dir / "model_final.pt").is_file() and weights.is_file():
        print(f"reusing {weights}")
    else:
        run_workflow(
            "train",
            {
                "dataset_dir": str(phantoms / "sites" / "reference"),
                "output_dir": str(pre_dir),
                "model_dir": str(pre_dir),
                "profile": profile,
                "progress": progress,
            },
        )
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    (pre_dir / "model.sha256").write_text(f"{digest}  model.pt\n")
    print(f"weights: {weights} (sha256 {digest[:16]}...); validation curve: {pre_dir / 'val_curve.png'}")

    _stage("3/4 base model on every site's test split")
    net = lora_unet(profile)
    load_weights(net, weights)
    base = {}
    for name in manifest["sites"]:
        rows = evaluate_records(
            net, load_datalist(phantoms / "sites" / name, "test"), profile, torch.device("cpu"), distances=False
        )
        base[name] = sum(r["mean_fg_dice"] for r in rows) / len(rows)
        print(f"  {name:10s} mean foreground Dice {base[name]:.3f} ({len(rows)} test cases)")
    _stage(f"4/4 Rate-My-LoRA in the FLARE simulator ({len(FL_SITES)} sites, {rounds} rounds)")
    from cardiolora.fl.run import run_simulation

    fl_dir = workdir / "fl"
    results = fl_dir / "results" / "rate_my_lora"
    if (results / "cross_site_eval.json").is_file():
        print(f"reusing {results}")
    else:
        out = run_simulation(
            "rate_my_lora",
            phantoms / "sites",
            weights,
            fl_dir,
            rounds=rounds,
            profile=profile,
            sites=list(FL_SITES),
            min_clients=len(FL_SITES),
        )
        print(f"simulator finished in {out['seconds']:.0f} s (log: {fl_dir / 'simulator.log'})")
    after = federation_table(results, base)
    summary = {
        "phantoms": str(phantoms),
        "pretrain": str(weights),
        "base_dice": base,
        "after": after,
        "fl_results": str(results),
        "seconds": round(time.time() - t0, 1),
    }
    (workdir / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"\ndone in {summary['seconds']} s; summary: {workdir / 'summary.json'}")
    return summary
