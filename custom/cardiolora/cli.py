"""The `cardiolora` command: phantoms, datalists, pretraining, evaluation and the demo.

Exit codes: 0 success, 2 bad input (the message names the file or argument), 1 other failure.

Logging: ``--log-level`` (default INFO) sets the level of the project's messages; ``-q`` is
``--log-level WARNING``. The libraries' own INFO lines (MONAI's bundle and engine messages,
ignite's "Engine run ..." lines, NVIDIA FLARE, highdicom) repeat what the command reports, so their
loggers are held at WARNING unless ``-v`` lets them log at the chosen level too
(`configure_logging`). MONAI's per-epoch metric lines (``StatsHandler``) are the training's
progress and follow ``--log-level``; they go to stderr, with the project's log lines.
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

import cardiolora
from cardiolora.paths import bundle_dir, inference_bundle_dir
from cardiolora.profiles import PROFILES

__all__ = ["main", "build_parser", "configure_logging", "version_text", "LIBRARY_LOGGERS"]

logger = logging.getLogger("cardiolora")

#: Loggers of the libraries held at WARNING unless ``-v`` (they and every logger below them).
LIBRARY_LOGGERS: tuple[str, ...] = ("monai", "ignite", "nvflare", "highdicom")
#: Loggers below those that carry the run's progress and follow ``--log-level`` (MONAI's per-epoch metrics).
PROGRESS_LOGGERS: tuple[str, ...] = ("monai.handlers.StatsHandler",)
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


def configure_logging(level: str = "INFO", verbose: bool = False) -> None:
    """Set the command's log level, and hold the libraries' loggers at WARNING unless `verbose`.

    MONAI gives its module loggers their own level (INFO) and handler when the module is imported
    (``monai.apps.utils.get_logger``), which would undo a level set before; so ``monai`` is imported
    here first (every command but ``datalist`` imports it anyway; ``--help`` and ``--version`` exit
    before this runs), and the level is set on every existing logger of `LIBRARY_LOGGERS` (ignite
    creates its engine loggers later, below ``ignite``, which holds the level).

    Args:
        level: ``"DEBUG"``, ``"INFO"``, ``"WARNING"`` or ``"ERROR"``: the root logger's level (the
            ``cardiolora`` loggers and every other library follow it) and that of `PROGRESS_LOGGERS`.
        verbose: let `LIBRARY_LOGGERS` log at `level` too (else ``max(level, WARNING)``).

    Raises:
        ValueError: if `level` is not one of those names.
    """
    if level not in LOG_LEVELS:
        raise ValueError(f"`level` must be one of {LOG_LEVELS}, got {level!r}.")
    import monai  # noqa: F401  (documented above: its import sets its loggers' levels)

    value = logging.getLevelName(level)
    logging.basicConfig(format=LOG_FORMAT)
    logging.getLogger().setLevel(value)
    library = value if verbose else max(value, logging.WARNING)
    names = [n for n in logging.root.manager.loggerDict if n.split(".")[0] in LIBRARY_LOGGERS]
    for name in [*LIBRARY_LOGGERS, *names]:
        if name not in PROGRESS_LOGGERS:
            logging.getLogger(name).setLevel(library)
    for name in PROGRESS_LOGGERS:
        _progress_logger(name, value)


class _CurrentStderr(logging.StreamHandler):
    """A stream handler on the ``sys.stderr`` of the moment (as ``logging.lastResort``), so a
    redirected or captured stderr is followed."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def _progress_logger(name: str, level: int) -> None:
    """Make MONAI's `name` logger print at `level` on stderr, with the command's other log lines.

    MONAI makes the logger when a ``StatsHandler`` is built (``get_logger``: level INFO, and a
    stdout handler only if the logger does not exist yet), after this runs: the level set on the
    logger would be undone, the handlers' levels are not. So the logger is made here, with a
    handler carrying the level (once: a second call sets the level again).
    """
    log = logging.getLogger(name)
    if not any(isinstance(h, _CurrentStderr) for h in log.handlers):
        handler = _CurrentStderr()
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        log.addHandler(handler)
        log.propagate = False
    log.setLevel(level)
    for handler in log.handlers:
        handler.setLevel(level)


def version_text() -> str:
    """``cardiolora X (bundles: cardiac_lora_unet Y, site inference Z)``: the package and the bundles' metadata
    versions, which are one release (a mismatch shows here)."""
    versions = []
    for label, root in (("cardiac_lora_unet", bundle_dir()), ("site inference", inference_bundle_dir())):
        meta = json.loads((root / "configs" / "metadata.json").read_text())
        versions.append(f"{label} {meta.get('version', '?')}")
    return f"cardiolora {cardiolora.__version__} (bundles: {', '.join(versions)})"


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
    q.add_argument(
        "--layout",
        default="auto",
        choices=["auto", "acdc", "acdc_h5", "mnms2"],
        help="layout of the source folder (default: auto, detected from its files)",
    )
    q.add_argument("--split-by", help="keep cases whose column (e.g. VENDOR, group) has one of --value")
    q.add_argument("--value", nargs="+", default=[], help="the values of --split-by to keep")
    q.add_argument(
        "--ratios",
        type=float,
        nargs=3,
        default=[0.8, 0.1, 0.1],
        metavar=("TRAIN", "VAL", "TEST"),
        help="fractions of the patients in train, val and test (default 0.8 0.1 0.1)",
    )
    q.add_argument("--seed", type=int, default=0, help="seed of the patient split (default 0)")
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


def _profile_option(q: argparse.ArgumentParser, what: str) -> None:
    """``--profile``: one of the bundle's run profiles."""
    q.add_argument(
        "--profile",
        default="quick",
        choices=sorted(PROFILES),
        help=f"run profile {what} (bundle configs: train.json = quick, paper.json, clinical.json; default quick)",
    )


def _progress_option(q: argparse.ArgumentParser) -> None:
    q.add_argument("--no-progress", action="store_true", help="no progress bars (e.g. in logs and CI)")


def _logging_options(q: argparse.ArgumentParser, top: bool) -> None:
    """``--log-level``, ``-q`` and ``-v``, accepted before and after the command's name.

    On the top parser they carry the defaults; on a subcommand they default to ``SUPPRESS`` so that
    a value given before the command's name is not overwritten.
    """
    kw: dict = {} if top else {"default": argparse.SUPPRESS}
    q.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        help="level of the project's log messages (default INFO)",
        **({"default": "INFO"} if top else kw),
    )
    g = q.add_mutually_exclusive_group()
    g.add_argument(
        "-q",
        "--quiet",
        dest="log_level",
        action="store_const",
        const="WARNING",
        help="only warnings and errors (--log-level WARNING)",
        **kw,
    )
    g.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="also the INFO lines of MONAI, ignite, NVIDIA FLARE and highdicom (held at WARNING otherwise)",
        **({"default": False} if top else kw),
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `cardiolora` command."""
    p = argparse.ArgumentParser(prog="cardiolora", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=version_text(), help="print the version and exit")
    _logging_options(p, top=True)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", help="one of:")

    def command(name: str, **kwargs) -> argparse.ArgumentParser:
        q = sub.add_parser(name, **kwargs)
        _logging_options(q, top=False)
        return q

    q = command("phantoms", help="generate multi-vendor phantom sites (NIfTI, ACDC, M&Ms-2, DICOM)")
    q.add_argument("--out", required=True, help="output folder")
    q.add_argument("--seed", type=int, default=0, help="seed of the phantoms (same seed, same files; default 0)")
    q.add_argument(
        "--site", type=_site_arg, action="append", help="NAME:PROFILE:N_SUBJECTS (repeat); default: reference + 3 sites"
    )
    q.add_argument("--dicom-subjects", type=int, default=1, help="subjects per site also written as DICOM cines")
    _progress_option(q)
    q.set_defaults(func=_cmd_phantoms)

    q = command("datalist", help="index a data folder and write a patient-level split datalist")
    q.add_argument("--source", required=True, help="folder in the ACDC, ACDC-HDF5 or M&Ms-2 layout")
    q.add_argument("--out", required=True, help="the site's dataset folder (datalist.json is written there)")
    _data_options(q)
    q.set_defaults(func=_cmd_datalist)

    q = command("pretrain", help="train the base U-Net (or a local LoRA with --lora-rank) with the bundle")
    q.add_argument(
        "--data", required=True, help="dataset folder holding datalist.json, or a raw ACDC / ACDC-HDF5 / M&Ms-2 folder"
    )
    q.add_argument("--out", required=True, help="run folder (checkpoints, model.pt, curves)")
    _data_options(q)
    _profile_option(q, "to train")
    q.add_argument("--epochs", type=int, help="epochs (default: the profile's max_epochs)")
    q.add_argument("--lora-rank", type=int, default=0, help="fine-tune LoRA adapters of this rank instead")
    q.add_argument("--pretrained", help="base weights for --lora-rank")
    _progress_option(q)
    q.set_defaults(func=_cmd_pretrain)

    q = command("evaluate", help="paper metrics (Dice, VOE, HD, HD95, ASSD) of weights on a split")
    q.add_argument("--data", required=True, help="dataset folder holding datalist.json")
    q.add_argument("--weights", required=True, help="plain U-Net weights (model.pt)")
    q.add_argument("--split", default="test", help="datalist split to score (default test)")
    _profile_option(q, "the weights were trained with")
    q.add_argument("--out", required=True, help="output folder (case_scores.csv/json, summary.json)")
    q.add_argument("--device", default="cpu", help="torch device (default cpu)")
    q.set_defaults(func=_cmd_evaluate)

    q = command("demo", help="the end-to-end demo on the embedded phantom sites")
    q.add_argument("--workdir", default="runs/demo", help="working folder (default runs/demo)")
    _profile_option(q, "of the demo")
    _progress_option(q)
    q.set_defaults(func=_cmd_demo)

    q = command(
        "segment",
        help="segment DICOM / NIfTI cine studies: DICOM SEG, NIfTI, report and pictures (inference/docs/README.md)",
        description="Exit codes: 0 all studies done; 3 a batch with skipped studies (see DIR/studies.csv); "
        "2 bad input or arguments; 1 unexpected error.",
    )
    from cardiolora.site.command import add_segment_arguments

    add_segment_arguments(q)
    q.set_defaults(func=_cmd_segment)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `cardiolora` command."""
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level, args.verbose)
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
