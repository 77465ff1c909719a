"""The `cardiolora` command: phantoms, datalists, pretraining, evaluation and the demo.

Exit codes: 0 success, 2 bad input (the message names the file or argument), 1 other failure.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import time
from pathlib import Path

from cardiolora.profiles import PROFILES

__all__ = ["main", "build_parser"]

logger = logging.getLogger("cardiolora")


def _site_arg(text: str):
    from cardiolora.data.generate import SiteSpec

    parts = text.split(":")
    if len(parts) != 3 or not parts[2].isdigit():
        raise argparse.ArgumentTypeError(f"--site must be NAME:PROFILE:N_SUBJECTS, got {text!r}")
    return SiteSpec(parts[0], parts[1], int(parts[2]))


def _cmd_phantoms(args: argparse.Namespace) -> int:
    from cardiolora.data.generate import DEFAULT_SITES, generate_sites

    sites = tuple(args.site) if args.site else DEFAULT_SITES
    manifest = generate_sites(
        args.out, sites, seed=args.seed, dicom_subjects=args.dicom_subjects, progress=not args.no_progress
    )
    out = Path(args.out)
    print(f"phantom sites in {out}:")
    for name, info in manifest["sites"].items():
        print(f"  {name:10s} profile={info['profile']:9s} subjects={info['n_subjects']:3d} ", end="")
        print(f"datalist={out / info['datalist']}")
    print(f"  layouts: {out / 'mnms2'}, {out / 'acdc'}, {out / 'dicom'}; truth: {out / 'truth.csv'}")
    print(f"  montage: {out / 'montage.png'}")
    return 0


#: Nominal in-plane spacing assumed for the ACDC HDF5 layout, whose files carry none (ACDC's
#: in-plane spacing is 1.37-1.88 mm; distances on those cases are in these nominal millimetres).
H5_NOMINAL_SPACING_MM = 1.5


def _write_stratified_datalist(records: list, out: Path, args: argparse.Namespace, meta: dict) -> Path:
    """Split `records` by patient, stratified by the `args.stratify` field, and write ``out/datalist.json``.

    The same datalist as ``cardiolora.data.generate.site_datalist`` (paths relative to `out`,
    split seed and ratios in ``meta``) with every stratum (e.g. ACDC group) spread over train,
    val and test in proportion (`cardiolora.data.splits.split_records`).
    """
    from cardiolora.data.dataset import DATALIST_NAME, write_datalist
    from cardiolora.data.splits import split_records

    out.mkdir(parents=True, exist_ok=True)
    parts = split_records(records, ratios=tuple(args.ratios), seed=args.seed, stratify=args.stratify)
    rows: dict[str, list[dict]] = {}
    for key, recs in parts.items():
        rows[key] = []
        for r in recs:
            d = r.to_dict()
            for field in ("image", "label"):
                if d.get(field):
                    d[field] = os.path.relpath(d[field], out)
            rows[key].append(d)
    info = {"split_seed": args.seed, "ratios": list(args.ratios), "stratify": args.stratify, **meta}
    return write_datalist(rows, out / DATALIST_NAME, meta=info)


def _build_datalist(args: argparse.Namespace, out: Path) -> Path:
    """Index `args.source`, filter by --split-by/--value, split by patient (stratified by
    --stratify when given) and write the datalist."""
    from cardiolora.data.generate import site_datalist
    from cardiolora.data.loaders import detect_layout, index_dataset
    from cardiolora.data.records import CaseRecord

    found = index_dataset(args.source, layout=args.layout, on_error="skip" if args.skip_bad else "raise")
    for p in found.problems:
        print(f"skipped: {p}", file=sys.stderr)
    records = list(found)
    if args.split_by:
        col = args.split_by.lower()
        keep = []
        for r in records:
            value = {"vendor": r.vendor, "group": r.group, "disease": r.group}.get(col, r.meta.get(col))
            if value is not None and str(value) in args.value:
                keep.append(r)
        records = keep
        if not records:
            raise ValueError(f"--split-by {args.split_by}: no case has a value in {args.value}.")
    spacing = args.in_plane_spacing
    if spacing is None and (
        args.layout == "acdc_h5" or (args.layout == "auto" and detect_layout(args.source) == "acdc_h5")
    ):
        spacing = H5_NOMINAL_SPACING_MM
        print(
            f"the HDF5 layout holds no voxel spacing: assuming {spacing} mm in-plane (--in-plane-spacing)",
            file=sys.stderr,
        )
    if spacing:
        records = [
            CaseRecord.from_dict({**r.to_dict(), "meta": {**r.meta, "in_plane_spacing_mm": spacing}}) for r in records
        ]
    if getattr(args, "stratify", None):
        return _write_stratified_datalist(records, out, args, {"source": str(args.source)})
    return site_datalist(records, out, args.seed, tuple(args.ratios), {"source": str(args.source)})


def _cmd_datalist(args: argparse.Namespace) -> int:
    path = _build_datalist(args, Path(args.out))
    content = json.loads(path.read_text())
    print(f"{path}: " + ", ".join(f"{k} {len(content[k])} cases" for k in ("train", "val", "test")))
    return 0


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from cardiolora.bundle import make_workflow
    from cardiolora.data.dataset import DATALIST_NAME

    out = Path(args.out)
    data = Path(args.data)
    if not (data / DATALIST_NAME).is_file():
        # a raw data folder (ACDC, ACDC-HDF5, M&Ms-2): index and split it into the run folder once
        data = out / "data"
        if not (data / DATALIST_NAME).is_file():
            args.source = args.data
            path = _build_datalist(args, data)
            print(f"datalist: {path}")
    overrides = {
        "dataset_dir": str(data.resolve()),
        "output_dir": str(out.resolve()),
        "model_dir": str(out.resolve()),
        "profile": args.profile,
        "progress": not args.no_progress,
    }
    if args.epochs is not None:
        overrides["max_epochs"] = args.epochs
    kind = "train"
    if args.lora_rank:
        kind = "lora"
        overrides["lora_rank"] = args.lora_rank
        overrides["pretrained_path"] = str(Path(args.pretrained).resolve())
    start = time.time()
    wf = make_workflow(kind, overrides)  # the profile's recipe file comes with it (`profile_configs`)
    wf.initialize()
    try:
        wf.run()
    finally:
        wf.finalize()
    digest = hashlib.sha256((out / "model.pt").read_bytes()).hexdigest()
    (out / "model.sha256").write_text(f"{digest}  model.pt\n")
    print(
        f"weights: {out / 'model.pt'} (best validation {wf.parser.get_parsed_content('val_key_metric')}), "
        f"sha256 {digest}; "
        f"curve: {out / 'val_curve.png'}; {time.time() - start:.0f} s"
    )
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    import torch

    from cardiolora.data.dataset import load_datalist
    from cardiolora.evaluation import evaluate_to_files
    from cardiolora.networks import load_weights, lora_unet

    net = lora_unet(args.profile)
    load_weights(net, args.weights)
    records = load_datalist(args.data, args.split)
    summary = evaluate_to_files(net, records, args.profile, args.out, device=torch.device(args.device))
    print(json.dumps({k: {m: round(v["mean"], 4) for m, v in d.items()} for k, d in summary.items()}, indent=1))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from cardiolora.demo import run_demo

    run_demo(Path(args.workdir), profile=args.profile, progress=not args.no_progress)
    return 0


def _cmd_segment(args: argparse.Namespace) -> int:
    from cardiolora.site.command import segment_command

    return segment_command(args)


def _data_options(q: argparse.ArgumentParser) -> None:
    """Options that select and split cases of a raw data folder."""
    q.add_argument("--layout", default="auto", choices=["auto", "acdc", "acdc_h5", "mnms2"])
    q.add_argument("--split-by", help="keep cases whose column (e.g. VENDOR, group) has one of --value")
    q.add_argument("--value", nargs="+", default=[])
    q.add_argument("--ratios", type=float, nargs=3, default=[0.8, 0.1, 0.1])
    q.add_argument("--seed", type=int, default=0)
    q.add_argument(
        "--stratify",
        help="spread every value of this field (e.g. group, vendor) over train/val/test in proportion",
    )
    q.add_argument(
        "--in-plane-spacing",
        type=float,
        help=f"mm, for sources without spacing (ACDC HDF5; default {H5_NOMINAL_SPACING_MM})",
    )
    q.add_argument("--skip-bad", action="store_true", help="report bad patients and go on")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `cardiolora` command."""
    p = argparse.ArgumentParser(prog="cardiolora", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    q = sub.add_parser("phantoms", help="generate multi-vendor phantom sites (NIfTI, ACDC, M&Ms-2, DICOM)")
    q.add_argument("--out", required=True, help="output folder")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument(
        "--site", type=_site_arg, action="append", help="NAME:PROFILE:N_SUBJECTS (repeat); default: reference + 3 sites"
    )
    q.add_argument("--dicom-subjects", type=int, default=1, help="subjects per site also written as DICOM cines")
    q.add_argument("--no-progress", action="store_true")
    q.set_defaults(func=_cmd_phantoms)

    q = sub.add_parser("datalist", help="index a data folder and write a patient-level split datalist")
    q.add_argument("--source", required=True, help="folder in the ACDC, ACDC-HDF5 or M&Ms-2 layout")
    q.add_argument("--out", required=True, help="the site's dataset folder (datalist.json is written there)")
    _data_options(q)
    q.set_defaults(func=_cmd_datalist)

    q = sub.add_parser("pretrain", help="train the base U-Net (or a local LoRA with --lora-rank) with the bundle")
    q.add_argument(
        "--data", required=True, help="dataset folder holding datalist.json, or a raw ACDC / ACDC-HDF5 / M&Ms-2 folder"
    )
    q.add_argument("--out", required=True, help="run folder (checkpoints, model.pt, curves)")
    _data_options(q)
    q.add_argument("--profile", default="quick", choices=sorted(PROFILES))
    q.add_argument("--epochs", type=int)
    q.add_argument("--lora-rank", type=int, default=0, help="fine-tune LoRA adapters of this rank instead")
    q.add_argument("--pretrained", help="base weights for --lora-rank")
    q.add_argument("--no-progress", action="store_true")
    q.set_defaults(func=_cmd_pretrain)

    q = sub.add_parser("evaluate", help="paper metrics (Dice, VOE, HD, HD95, ASSD) of weights on a split")
    q.add_argument("--data", required=True)
    q.add_argument("--weights", required=True)
    q.add_argument("--split", default="test")
    q.add_argument("--profile", default="quick", choices=sorted(PROFILES))
    q.add_argument("--out", required=True)
    q.add_argument("--device", default="cpu")
    q.set_defaults(func=_cmd_evaluate)

    q = sub.add_parser("demo", help="the end-to-end demo on the embedded phantom sites")
    q.add_argument("--workdir", default="runs/demo")
    q.add_argument("--profile", default="quick", choices=list(PROFILES))
    q.add_argument("--no-progress", action="store_true")
    q.set_defaults(func=_cmd_demo)

    q = sub.add_parser(
        "segment",
        help="segment DICOM / NIfTI cine studies: DICOM SEG, NIfTI, report and pictures (inference/README.md)",
        description="Exit codes: 0 all studies done; 3 a batch with skipped studies (see DIR/studies.csv); "
        "2 bad input or arguments; 1 unexpected error.",
    )
    from cardiolora.site.command import add_segment_arguments

    add_segment_arguments(q)
    q.set_defaults(func=_cmd_segment)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `cardiolora` command."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    args = build_parser().parse_args(argv)
    if getattr(args, "lora_rank", 0) and not getattr(args, "pretrained", None):
        print("cardiolora: --lora-rank needs --pretrained (the base weights)", file=sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as err:
        print(f"cardiolora {args.command}: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
