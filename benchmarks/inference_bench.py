"""Site inference speed: the application's pipeline vs a plain MONAI SliceInferer loop.

    .venv/bin/python benchmarks/inference_bench.py [--phases 25] [--slices 10] [--repeats 2]

One study of ``--slices`` x ``--phases`` images of 224 x 224 pixels at 1.25 mm (the paper
profile's grid, so each slice is one 224 x 224 window) is segmented with the paper-profile U-Net
(random weights, seeded: the time does not depend on what the weights learned) by

* **baseline** — what a MONAI user writes first: per phase, the same preprocessing
  (``cardiolora.predict.volume_transforms``), ``SliceInferer(roi_size=(224, 224), spatial_dim=2)``
  with its default settings (``sw_batch_size=1``, overlap 0.25), ``torch.no_grad()``, the network
  in its default (contiguous) memory format, then softmax, ``Invertd`` and argmax;
* **pipeline** — the site application's path (``cardiolora.site.app.segment_labels`` without
  the clean-up, i.e. ``cardiolora.predict.predict_cine``): the same preprocessing per phase, the
  slices of all phases through one ``SliceInferer`` call with 32 slices per forward pass,
  ``torch.inference_mode()``, weights in channels-last memory format (plain merged weights: no
  adapter branch), the same restoration;

and the full application step (``segment_labels``: pipeline + anatomical clean-up) is timed too.
Both pipelines run in the same process on the same weights and input, alternately, ``--repeats``
times; the median is reported, with the labels' agreement (they must be equal) and the machine's
load average (other jobs on the 2 cores slow both). Writes benchmarks/results/inference.json and the
block between the inference-bench markers of inference/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from cardiolora.data.cine import CineStudy, nifti_affine
from cardiolora.networks import lora_unet
from cardiolora.predict import volume_transforms
from cardiolora.profiles import get_profile
from cardiolora.report import machine_line, replace_block

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "inference" / "README.md"
RESULTS = ROOT / "benchmarks" / "results" / "inference.json"
COMMAND = ".venv/bin/python benchmarks/inference_bench.py"
TARGET_SECONDS = 15.0
TARGET_SPEEDUP = 1.5


def synthetic_study(n_phases: int, n_slices: int, size: int, spacing: float, seed: int = 0) -> CineStudy:
    """A smooth random cine with a beating bright disc (content does not change the timing)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    image = rng.normal(100.0, 10.0, (n_phases, n_slices, size, size)).astype(np.float32)
    for t in range(n_phases):
        radius = 25 + 8 * np.cos(2 * np.pi * t / n_phases)
        image[t] += 300.0 * (np.hypot(yy - size / 2, xx - size / 2) < radius)
    affine = np.diag([spacing, spacing, 8.0, 1.0])
    return CineStudy(
        subject_id="bench",
        image=np.clip(image, 0, None),
        label=None,
        spacing_zyx=(8.0, spacing, spacing),
        affine_lps=affine,
        trigger_times_ms=np.arange(n_phases) * 35.0,
        ed_phase=0,
        es_phase=0,
    )


def baseline(net: torch.nn.Module, study: CineStudy, profile: str) -> np.ndarray:
    """Per phase: preprocessing, a default SliceInferer, softmax, Invertd, argmax."""
    from monai.data import MetaTensor
    from monai.inferers import SliceInferer
    from monai.transforms import Compose, Invertd

    prof = get_profile(profile)
    pre = Compose(volume_transforms(prof))
    inferer = SliceInferer(roi_size=list(prof.spatial_size), spatial_dim=2)
    affine = torch.as_tensor(nifti_affine(study.affine_lps))
    out = np.empty(study.image.shape, dtype=np.uint8)
    net.eval()
    for t in range(study.n_phases):
        img = torch.as_tensor(np.ascontiguousarray(study.image[t].transpose(2, 1, 0)))
        data = pre({"image": MetaTensor(img[None], affine=affine)})
        x = data["image"]
        with torch.no_grad():
            logits = inferer(x.as_tensor()[None], net)[0]
        pred = MetaTensor(torch.softmax(logits, 0), affine=x.affine, meta={k: v for k, v in x.meta.items() if k != "affine"})
        pred.applied_operations = list(x.applied_operations)
        data["pred"] = pred
        inv = Invertd(keys="pred", transform=pre, orig_keys="image", nearest_interp=False)(data)["pred"]
        out[t] = torch.as_tensor(inv).argmax(0).numpy().transpose(2, 1, 0)
    return out


def run(n_phases: int, n_slices: int, repeats: int) -> dict:
    """Time both pipelines alternately; return the measurements."""
    from cardiolora.site.app import SegmentOptions, segment_labels
    from cardiolora.site.model import SiteModel

    profile = "paper"
    prof = get_profile(profile)
    size = prof.spatial_size[0]
    study = synthetic_study(n_phases, n_slices, size, prof.pixel_spacing)
    torch.manual_seed(0)
    plain = lora_unet(profile).eval()
    fast = lora_unet(profile)
    fast.load_state_dict(plain.state_dict())
    fast = fast.eval().to(memory_format=torch.channels_last)
    model = SiteModel(network=fast, profile=prof, device=torch.device("cpu"), files={}, sha256={})
    raw_opts = SegmentOptions(progress=False, postprocess=False)
    full_opts = SegmentOptions(progress=False, postprocess=True)
    load_before = os.getloadavg()
    times: dict[str, list[float]] = {"baseline": [], "pipeline": [], "application": []}
    labels = {}
    for _ in range(repeats):
        t = time.perf_counter()
        labels["baseline"] = baseline(plain, study, profile)
        times["baseline"].append(time.perf_counter() - t)
        t = time.perf_counter()
        labels["pipeline"] = segment_labels(study, model, raw_opts)[0]
        times["pipeline"].append(time.perf_counter() - t)
        t = time.perf_counter()
        segment_labels(study, model, full_opts)
        times["application"].append(time.perf_counter() - t)
    med = {k: float(np.median(v)) for k, v in times.items()}
    return {
        "command": COMMAND,
        "machine": machine_line(),
        "threads": torch.get_num_threads(),
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "study": {"phases": n_phases, "slices": n_slices, "matrix": [size, size], "pixel_mm": prof.pixel_spacing},
        "profile": profile,
        "weights": "random (seeded); timing does not depend on what the weights learned",
        "repeats": repeats,
        "seconds": times,
        "median_seconds": med,
        "speedup": med["baseline"] / med["pipeline"],
        "labels_equal_fraction": float((labels["baseline"] == labels["pipeline"]).mean()),
        "targets": {"seconds_per_study": TARGET_SECONDS, "speedup": TARGET_SPEEDUP},
        "met": {
            "seconds_per_study": med["application"] <= TARGET_SECONDS,
            "speedup": med["baseline"] / med["pipeline"] >= TARGET_SPEEDUP,
        },
    }


def table(r: dict) -> str:
    """The Markdown block for inference/README.md."""
    m = r["median_seconds"]
    s = r["study"]
    lines = [
        f"Measured with `{r['command']}` ({r['machine']}; {r['threads']} PyTorch threads; load average "
        f"{r['load_average_before'][0]} before, {r['load_average_after'][0]} after: other jobs shared the cores). "
        f"One study of {s['slices']} slices x {s['phases']} phases, {s['matrix'][0]} x {s['matrix'][1]} at "
        f"{s['pixel_mm']} mm, paper-profile U-Net with random weights; median of {r['repeats']} alternating runs.",
        "",
        "| pipeline | seconds per study | vs baseline |",
        "|---|---:|---:|",
        f"| baseline: per-phase `SliceInferer` (defaults: 1 slice per pass), `no_grad` | {m['baseline']:.1f} | 1.00x |",
        f"| site pipeline: phases batched, 32 slices per pass, `inference_mode`, channels-last | {m['pipeline']:.1f} | "
        f"{m['baseline'] / m['pipeline']:.2f}x |",
        f"| site application step (pipeline + anatomical clean-up) | {m['application']:.1f} | "
        f"{m['baseline'] / m['application']:.2f}x |",
        "",
        f"Labels of the two pipelines agree on {100 * r['labels_equal_fraction']:.4f} % of the voxels. "
        f"Targets: <= {r['targets']['seconds_per_study']:g} s per study "
        f"({'met' if r['met']['seconds_per_study'] else 'NOT met'}), >= {r['targets']['speedup']:g}x "
        f"({'met' if r['met']['speedup'] else 'NOT met'}).",
    ]
    return "\n".join(lines)


def main() -> None:
    """Parse arguments, run, write the JSON and the README block."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--phases", type=int, default=25)
    p.add_argument("--slices", type=int, default=10)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--no-readme", action="store_true", help="do not update inference/README.md")
    args = p.parse_args()
    result = run(args.phases, args.slices, args.repeats)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["median_seconds"], indent=1), f"speedup {result['speedup']:.2f}x")
    if not args.no_readme:
        replace_block(README, "inference-bench", table(result))
        print(f"wrote {RESULTS} and the inference-bench block of {README}")


if __name__ == "__main__":
    main()
