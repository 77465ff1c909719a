"""Site inference speed: the application's pipeline vs a plain MONAI SliceInferer loop.

    .venv/bin/python benchmarks/inference_bench.py [--phases 25] [--slices 10] [--repeats 2]

(needs the optional ONNX Runtime backend: ``pip install -e '.[onnx]'``)

One study of ``--slices`` x ``--phases`` images of 224 x 224 pixels at 1.25 mm (the paper
profile's grid, so each slice is one 224 x 224 window) is segmented with the paper-profile U-Net
(random weights, seeded: the time does not depend on what the weights learned) by

* **baseline** — what a MONAI user writes first: per phase, the same preprocessing in MONAI's
  stock transforms (``ScaleIntensityRangePercentilesd``, ``Spacingd``),
  ``SliceInferer(roi_size=(224, 224), spatial_dim=2)`` with its default settings
  (``sw_batch_size=1``, overlap 0.25), ``torch.no_grad()``, the network in its default
  (contiguous) memory format, then softmax, ``Invertd`` and argmax;
* **pipeline** — the site application's path (the site-inference bundle's inferer,
  ``cardiolora.site.inferer.CineInferer``, i.e. ``cardiolora.predict.predict_cine`` through
  ``SiteModel.runner()``): the same preprocessing per phase, the slices of all phases through one
  ``SliceInferer`` call with ``sw_batch_size`` slices per forward pass, ``torch.inference_mode()``,
  plain (merged) weights, and on the CPU the slices of each pass split across one worker thread per core, each with one
  intra-op thread (``cardiolora.site.model.SliceParallel``), then the same restoration. Variants:
  batching alone (32 slices per pass, 2 intra-op threads, no slice workers), and the network run by
  ONNX Runtime (``--backend onnx``: its export, cached per weights; with slice workers, or with
  ONNX Runtime's own 2 threads). The one-time cost of the ONNX export and of loading it from the
  cache is timed apart;

and **the site-inference bundle itself**: ``inference/configs/inference.json`` parsed with its
default options (``cardiolora.site.workflow.load_workflow``), its ``inferer`` stage timed alone (the
headline: seconds per study and the ratio to the baseline, targets <= 5 s and >= 2x) and with its
``postprocessing`` stage (the application step).
The DICOM side of a study is timed on the same study written as classic MR files
(``cardiolora.dicom.mr_writer``): reading it (scan, series selection, pixels), the DICOM SEG as
one object for the whole cine (the default) and as one instance per phase (the earlier layout;
the ratio of the two is printed), and the DICOM SR; their sum with the application step is the
site's whole step per study.
Both pipelines run in the same process on the same weights and input, alternately, ``--repeats``
times; the median is reported, with the labels' agreement (they must be equal) and the machine's
load average (other jobs on the 2 cores slow both); the command fails if any pipeline's labels
agree with the baseline's on fewer than 99.99 % of the voxels. Writes benchmarks/results/inference.json and the
block between the inference-bench markers of inference/docs/README.md.
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
from cardiolora.networks import lora_unet, plain_state_dict
from cardiolora.profiles import Profile, get_profile
from lib.readme_blocks import machine_line, replace_block

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "inference" / "docs" / "README.md"
RESULTS = ROOT / "benchmarks" / "results" / "inference.json"
COMMAND = ".venv/bin/python benchmarks/inference_bench.py"
TARGET_SECONDS = 5.0  # the site bundle's inferer, one 10 x 25 study, 2 cores (architecture issue)
TARGET_SPEEDUP = 2.0  # the same against the baseline, in the same run
MIN_AGREEMENT = 0.9999  # fraction of voxels whose label must equal the baseline's, in every pipeline


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


def stock_transforms(prof: Profile) -> list:
    """The profile's preprocessing (``cardiolora.predict.volume_transforms``) in MONAI's stock transforms."""
    from monai.transforms import ScaleIntensityRangePercentilesd, Spacingd

    lo, hi = prof.intensity_percentiles
    return [
        ScaleIntensityRangePercentilesd(keys="image", lower=lo, upper=hi, b_min=0.0, b_max=1.0, clip=True),
        Spacingd(keys="image", pixdim=[prof.pixel_spacing, prof.pixel_spacing, -1.0], mode="bilinear"),
    ]


def baseline(net: torch.nn.Module, study: CineStudy, profile: str) -> np.ndarray:
    """Per phase: preprocessing, a default SliceInferer, softmax, Invertd, argmax."""
    from monai.data import MetaTensor
    from monai.inferers import SliceInferer
    from monai.transforms import Compose, Invertd

    prof = get_profile(profile)
    pre = Compose(stock_transforms(prof))
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
        pred = MetaTensor(
            torch.softmax(logits, 0), affine=x.affine, meta={k: v for k, v in x.meta.items() if k != "affine"}
        )
        pred.applied_operations = list(x.applied_operations)
        data["pred"] = pred
        inv = Invertd(keys="pred", transform=pre, orig_keys="image", nearest_interp=False)(data)["pred"]
        out[t] = torch.as_tensor(inv).argmax(0).numpy().transpose(2, 1, 0)
    return out


PIPELINES: dict[str, tuple[int, int, str]] = {
    # name: (sw_batch_size, cpu_workers (0: one per core; 1: plain intra-op threading), backend)
    "pipeline sw8": (8, 0, "torch"),
    "batching only sw32": (32, 1, "torch"),
    "onnx sw8": (8, 0, "onnx"),
    "onnx sw8 ort threads": (8, 1, "onnx"),
}
BUNDLE = "site bundle"  # the `inferer` stage built from inference/configs/inference.json
DEFAULT = "pipeline sw8"  # the application's default (sw_batch_size, backend of inference/configs/inference.json)


def dicom_io_times(study: CineStudy, labels: np.ndarray, repeats: int) -> dict[str, list[float]]:
    """Seconds to read `study` from DICOM files and to write its SEG (both layouts) and SR."""
    import tempfile

    from cardiolora.clinical import cardiac_function
    from cardiolora.dicom import read_short_axis_cine
    from cardiolora.dicom.mr_writer import write_dicom_cine
    from cardiolora.dicom.seg import write_study_seg
    from cardiolora.dicom.sr import write_measurement_sr

    root = Path(tempfile.mkdtemp(prefix="cardiolora-dicom-bench-"))
    write_dicom_cine(study, root / "study", uid_seed="bench")
    cleaned = np.clip(labels, 0, 3).astype(np.uint8)
    function = cardiac_function(cleaned, study.spacing_zyx)
    times: dict[str, list[float]] = {"dicom read": [], "seg one object": [], "seg per phase": [], "sr": []}
    for i in range(repeats + 1):  # the first round warms up imports and caches: not kept
        t = time.perf_counter()
        cine = read_short_axis_cine(root / "study")
        times["dicom read"].append(time.perf_counter() - t)
        files, frames = cine.meta["source_files"], cine.meta["source_frame_numbers"]
        t = time.perf_counter()
        seg = write_study_seg(cleaned, files, frames, root / f"seg{i}" / "seg.dcm", version="bench")
        times["seg one object"].append(time.perf_counter() - t)
        t = time.perf_counter()
        write_study_seg(cleaned, files, frames, root / f"phases{i}" / "seg.dcm", version="bench", per_phase=True)
        times["seg per phase"].append(time.perf_counter() - t)
        ed, es = int(function["ed_phase"]), int(function["es_phase"])
        t = time.perf_counter()
        write_measurement_sr(
            list(seg.paths), sorted({*files[ed], *files[es]}), function, root / f"sr{i}.dcm", version="bench",
            trigger_times_ms=cine.trigger_times_ms,
        )  # fmt: skip
        times["sr"].append(time.perf_counter() - t)
    import shutil

    shutil.rmtree(root, ignore_errors=True)
    return {k: v[1:] for k, v in times.items()}


def run(n_phases: int, n_slices: int, repeats: int) -> dict:
    """Time the baseline and the pipeline variants alternately; return the measurements."""
    import tempfile

    from cardiolora.site.backend import import_onnxruntime
    from cardiolora.site.cleanup import clean_cine
    from cardiolora.site.command import segment_options
    from cardiolora.site.inferer import CineInferer
    from cardiolora.site.model import SiteModel, select_backend
    from cardiolora.site.workflow import load_workflow

    declared = segment_options()
    if (
        PIPELINES[DEFAULT][0] != declared["sw_batch_size"]["default"]
        or PIPELINES[DEFAULT][2] != (declared["backend"]["default"])
    ):
        raise RuntimeError(f"{DEFAULT} is not the application's default sw_batch_size / backend; update PIPELINES.")
    import_onnxruntime()  # the ONNX rows need it: fail here, not after the baseline ran
    profile = "paper"
    prof = get_profile(profile)
    size = prof.spatial_size[0]
    study = synthetic_study(n_phases, n_slices, size, prof.pixel_spacing)
    torch.manual_seed(0)
    net = lora_unet(profile).eval()
    cores = max(1, os.cpu_count() or 1)
    cache = Path(tempfile.mkdtemp(prefix="cardiolora-onnx-"))  # empty: the first export is timed

    def site_model(workers: int, backend: str) -> SiteModel:
        plain = SiteModel(net, prof, torch.device("cpu"), files={}, sha256={}, cpu_workers=workers or cores)
        model = select_backend(plain, backend, cache)
        if model.backend != backend:
            raise RuntimeError(f"backend {backend!r} unavailable: {model.backend_info.get('fallback')}")
        return model

    once: dict[str, float] = {}
    t = time.perf_counter()
    first = site_model(0, "onnx")
    once["onnx first load (export + session + check)"] = time.perf_counter() - t
    once["onnx export alone"] = float(first.backend_info["export_seconds"])
    t = time.perf_counter()
    site_model(0, "onnx")
    once["onnx cached load (session + check)"] = time.perf_counter() - t
    models = {name: site_model(workers, backend) for name, (_, workers, backend) in PIPELINES.items()}
    # the site-inference bundle itself: inference/configs/inference.json parsed with the segment
    # options at their defaults, its `inferer` and `postprocessing` stages built by the bundle
    weights = cache / "model.pt"
    torch.save(plain_state_dict(net), weights)
    options = {"model": str(weights), "profile": profile, "device": "cpu", "progress": False}
    bundle_inferer = load_workflow(options, key="inferer")
    bundle_cleanup = load_workflow(options, key="postprocessing")

    warm = synthetic_study(1, 2, size, prof.pixel_spacing)  # first calls build oneDNN kernels: not timed
    baseline(net, warm, profile)
    for name, (sw, _, _) in PIPELINES.items():
        CineInferer(models[name], sw, progress=False)(warm)
    bundle_inferer(warm)
    load_before = os.getloadavg()
    times: dict[str, list[float]] = {"baseline": [], **{k: [] for k in PIPELINES}, BUNDLE: [], "application": []}
    labels = {}
    for _ in range(repeats):
        t = time.perf_counter()
        labels["baseline"] = baseline(net, study, profile)
        times["baseline"].append(time.perf_counter() - t)
        for name, (sw, _, _) in PIPELINES.items():
            t = time.perf_counter()
            labels[name] = CineInferer(models[name], sw, progress=False)(study)
            times[name].append(time.perf_counter() - t)
        t = time.perf_counter()
        labels[BUNDLE] = bundle_inferer(study)
        times[BUNDLE].append(time.perf_counter() - t)
        t = time.perf_counter()
        bundle_cleanup(bundle_inferer(study))
        times["application"].append(time.perf_counter() - t)
    # The clean-up's cost depends on the labels: random weights label noise (its worst case); a
    # trained network labels one heart, as in the phantom's ground truth timed here.
    from cardiolora.data.phantom import make_subject

    truth = make_subject(0, "reference", n_phases=n_phases).label
    times["clean-up of phantom labels"] = []
    for _ in range(repeats):
        t = time.perf_counter()
        clean_cine(truth)
        times["clean-up of phantom labels"].append(time.perf_counter() - t)
    times.update(dicom_io_times(study, labels[DEFAULT], repeats))
    times["whole site step (read + application + SEG + SR)"] = [
        sum(times[k][i] for k in ("dicom read", "application", "seg one object", "sr")) for i in range(repeats)
    ]
    med = {k: float(np.median(v)) for k, v in times.items()}
    import shutil

    shutil.rmtree(cache, ignore_errors=True)
    import onnxruntime

    return {
        "command": COMMAND,
        "machine": machine_line(),
        "torch_threads": torch.get_num_threads(),
        "onnxruntime": onnxruntime.__version__,
        "cpu_cores": cores,
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "study": {"phases": n_phases, "slices": n_slices, "matrix": [size, size], "pixel_mm": prof.pixel_spacing},
        "phantom_labels_shape": list(truth.shape),
        "profile": profile,
        "weights": "random (seeded); timing does not depend on what the weights learned",
        "repeats": repeats,
        "pipelines": {
            k: {"sw_batch_size": sw, "cpu_workers": w or cores, "backend": b} for k, (sw, w, b) in PIPELINES.items()
        },
        "default": DEFAULT,
        "one_time_seconds": once,
        "seconds": times,
        "median_seconds": med,
        "speedup": med["baseline"] / med[BUNDLE],
        "labels_equal_fraction": {k: float((labels["baseline"] == labels[k]).mean()) for k in [*PIPELINES, BUNDLE]},
        "targets": {"seconds_per_study": TARGET_SECONDS, "speedup": TARGET_SPEEDUP},
        "met": {
            "seconds_per_study": med[BUNDLE] <= TARGET_SECONDS,
            "speedup": med["baseline"] / med[BUNDLE] >= TARGET_SPEEDUP,
        },
    }


def table(r: dict) -> str:
    """The Markdown block for inference/docs/README.md."""
    m = r["median_seconds"]
    s = r["study"]
    base = m["baseline"]
    rows = [
        f"| baseline: per-phase `SliceInferer` (defaults: 1 slice per pass), MONAI's stock transforms, `no_grad`, "
        f"PyTorch, {r['torch_threads']} intra-op threads | {base:.1f} | 1.00x |",
    ]
    for name, cfg in r["pipelines"].items():
        engine = "PyTorch" if cfg["backend"] == "torch" else f"ONNX Runtime {r['onnxruntime']}"
        threads = r["torch_threads"] if cfg["backend"] == "torch" else r["cpu_cores"]
        how = (
            f"{cfg['cpu_workers']} slice workers x 1 thread"
            if cfg["cpu_workers"] > 1
            else f"{threads} intra-op threads, no slice workers"
        )
        mark = " **(default)**" if name == r["default"] else ""
        rows.append(
            f"| site pipeline{mark}: {engine}, phases batched, {cfg['sw_batch_size']} slices per pass, {how} "
            f"| {m[name]:.1f} | {base / m[name]:.2f}x |"
        )
    rows.append(
        f"| **site-inference bundle** (`inference/configs/inference.json` parsed with its defaults: its `inferer` "
        f"stage) | {m[BUNDLE]:.1f} | {base / m[BUNDLE]:.2f}x |"
    )
    rows.append(
        "| site application step (the bundle's `inferer` + `postprocessing` stages; the clean-up of noisy "
        f"random-weight labels) "
        f"| {m['application']:.1f} | {base / m['application']:.2f}x |"
    )
    rows.append(f"| DICOM read: scan, series selection, pixels ({s['slices'] * s['phases']} classic MR files) "
                f"| {m['dicom read']:.1f} | |")  # fmt: skip
    rows.append(
        f"| DICOM SEG, one object for the whole cine (default) | {m['seg one object']:.1f} | "
        f"{m['seg per phase'] / m['seg one object']:.2f}x faster than per phase |"
    )
    rows.append(f"| DICOM SEG, one instance per phase (`--seg-per-phase`) | {m['seg per phase']:.1f} | |")
    rows.append(f"| DICOM SR (TID 1500) | {m['sr']:.2f} | |")
    whole = m["whole site step (read + application + SEG + SR)"]
    rows.append(f"| **whole site step**: DICOM read + application step + SEG + SR | {whole:.1f} | |")
    shape = "x".join(str(n) for n in r["phantom_labels_shape"])
    rows.append(
        f"| anatomical clean-up alone, phantom ground-truth labels ({shape}) "
        f"| {m['clean-up of phantom labels']:.1f} | |"
    )
    once = r["one_time_seconds"]
    agree = min(r["labels_equal_fraction"].values())
    lines = [
        f"Measured with `{r['command']}` ({r['machine']}; load average {r['load_average_before'][0]} before, "
        f"{r['load_average_after'][0]} after: a load above 0 means other jobs shared the cores). One study of "
        f"{s['slices']} slices x {s['phases']} phases, {s['matrix'][0]} x {s['matrix'][1]} at {s['pixel_mm']} mm "
        f"(one 224 x 224 window per slice), paper-profile U-Net with random weights (the time does not depend on "
        f"what the weights learned); median of {r['repeats']} alternating runs. The site pipelines use "
        "`inference_mode`, plain (merged) weights, the 2D sliding-window batch and numpy percentiles; the "
        "baseline is MONAI's stock `SliceInferer` and transforms with the same weights.",
        "",
        "| pipeline | seconds per study | vs baseline |",
        "|---|---:|---:|",
        *rows,
        "",
        f"ONNX Runtime, once per model file (not in the rows above): export "
        f"{once['onnx export alone']:.1f} s, first load with export, session and check "
        f"{once['onnx first load (export + session + check)']:.1f} s, later loads from the cache "
        f"{once['onnx cached load (session + check)']:.1f} s.",
        "",
        f"Labels of every pipeline agree with the baseline on at least {100 * agree:.4f} % of the voxels. "
        f"Targets for the site-inference bundle's inferer: <= {r['targets']['seconds_per_study']:g} s per study "
        f"({'met' if r['met']['seconds_per_study'] else 'NOT met'}) and >= {r['targets']['speedup']:g}x the baseline "
        f"({'met' if r['met']['speedup'] else 'NOT met'}).",
    ]
    return "\n".join(lines)


def main() -> None:
    """Parse arguments, run, write the JSON and the README block."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--phases", type=int, default=25)
    p.add_argument("--slices", type=int, default=10)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--no-readme", action="store_true", help="do not update inference/docs/README.md")
    args = p.parse_args()
    result = run(args.phases, args.slices, args.repeats)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    med = result["median_seconds"]
    print(json.dumps(med, indent=1), f"speedup {result['speedup']:.2f}x")
    print(
        f"SEG one object / per phase: {med['seg one object']:.2f} s / {med['seg per phase']:.2f} s = "
        f"{med['seg one object'] / med['seg per phase']:.2f}; whole site step "
        f"{med['whole site step (read + application + SEG + SR)']:.1f} s"
    )
    disagree = {k: v for k, v in result["labels_equal_fraction"].items() if v < MIN_AGREEMENT}
    if disagree:  # a faster pipeline that labels differently is not a result: no README block
        raise SystemExit(f"labels differ from the baseline on more than {100 * (1 - MIN_AGREEMENT):g} %: {disagree}")
    if not args.no_readme:
        replace_block(README, "inference-bench", table(result))
        print(f"wrote {RESULTS} and the inference-bench block of {README}")


if __name__ == "__main__":
    main()
