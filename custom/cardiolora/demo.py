"""The end-to-end demo on the embedded default data (the README's main command).

Stages, each reusing what an earlier run left in the work folder:

1. generate the phantom sites (reference vendor + three federated sites, one with half the cases);
2. pretrain the base U-Net on the reference site with the bundle (quick profile);
3. evaluate the base model on every site's test split (the domain gap federation has to close).

Later stages (federated Rate-My-LoRA rounds in the FLARE simulator, personalisation, site
inference on a DICOM study) are added by their issues.
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


def run_demo(workdir: Path, profile: str = "quick", progress: bool = True) -> dict:
    """Run the demo stages in `workdir`; returns a summary dict (also written as summary.json).

    Args:
        workdir: the demo's work folder (created; reused on reruns).
        profile: run profile.
        progress: show progress bars.

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
    _stage("1/3 phantom sites")
    phantoms = workdir / "phantoms"
    manifest = generate_sites(phantoms, DEFAULT_SITES, progress=progress)
    for name, info in manifest["sites"].items():
        print(f"  {name:10s} profile {info['profile']:9s} {info['n_subjects']:3d} subjects")
    print(f"montage: {phantoms / 'montage.png'}")

    _stage("2/3 pretrain the base U-Net on the reference site")
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

    _stage("3/3 base model on every site's test split")
    net = lora_unet(profile)
    load_weights(net, weights)
    base = {}
    for name in manifest["sites"]:
        rows = evaluate_records(
            net, load_datalist(phantoms / "sites" / name, "test"), profile, torch.device("cpu"), distances=False
        )
        base[name] = sum(r["mean_fg_dice"] for r in rows) / len(rows)
        print(f"  {name:10s} mean foreground Dice {base[name]:.3f} ({len(rows)} test cases)")
    summary = {
        "phantoms": str(phantoms),
        "pretrain": str(weights),
        "base_dice": base,
        "seconds": round(time.time() - t0, 1),
    }
    (workdir / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"\ndone in {summary['seconds']} s; summary: {workdir / 'summary.json'}")
    return summary
