"""The ``cardiolora segment`` command: arguments, the site config file, the summary, the exit code.

Kept apart from :mod:`cardiolora.site.app` so that ``cardiolora --help`` does not import torch.
The work itself is :func:`cardiolora.site.app.run_segment`; exit codes are documented there.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

from cardiolora.dicom import DEFAULT_MAX_BYTES, INCOMPLETE_POSITION_POLICIES
from cardiolora.profiles import PROFILES

__all__ = ["CONFIG_KEYS", "add_segment_arguments", "segment_command"]

#: Keys a site config file (``--config``, JSON) may set; the command line wins over the file.
CONFIG_KEYS: tuple[str, ...] = (
    "out",
    "model",
    "base",
    "adapter",
    "lora_alpha",
    "profile",
    "device",
    "series",
    "series_rules",
    "seg_per_phase",
    "incomplete_positions",
    "max_gb",
    "sw_batch_size",
    "cpu_workers",
    "backend",
    "onnx_cache",
)


def add_segment_arguments(q: Any) -> None:
    """Add the ``segment`` command's arguments to an ``argparse`` (sub)parser.

    Args:
        q: the parser.
    """
    q.add_argument("input", help="a study (DICOM folder or file, NIfTI file) or a folder of studies")
    q.add_argument("--out", help="output folder (one subfolder per study)")
    q.add_argument("--config", help="site config JSON (keys: " + ", ".join(CONFIG_KEYS) + "); flags win")
    q.add_argument("--model", help="plain U-Net weights (model.pt, adapter already merged)")
    q.add_argument("--base", help="base weights, with --adapter")
    q.add_argument("--adapter", help="adapter-only LoRA state dict, merged into --base once at load")
    q.add_argument("--lora-alpha", type=float, help="the adapter's alpha (default: its rank, scaling 1)")
    q.add_argument("--profile", choices=list(PROFILES), help="run profile of the weights (default quick)")
    q.add_argument("--series", help="SeriesInstanceUID, SeriesNumber or SeriesDescription of the cine")
    q.add_argument(
        "--series-rules",
        help="series-selection rules JSON (default: the package's dicom/series_rules.json; inference/README.md)",
    )
    q.add_argument(
        "--seg-per-phase",
        action="store_true",
        default=None,
        help="write one DICOM SEG instance per phase instead of one SEG object per study",
    )
    q.add_argument(
        "--incomplete-positions",
        choices=list(INCOMPLETE_POSITION_POLICIES),
        help="slice positions with fewer phases: raise (default) or drop them (inference/README.md)",
    )
    q.add_argument(
        "--max-gb", type=float, help=f"pixel memory limit per study in GiB (default {DEFAULT_MAX_BYTES / 1024**3:g})"
    )
    q.add_argument("--device", help="cpu, cuda, cuda:N (default: CUDA when present, else CPU)")
    q.add_argument("--sw-batch-size", type=int, help="slices per forward pass (default 8)")
    q.add_argument("--cpu-workers", type=int, help="CPU: slice-parallel threads (default: the number of cores)")
    q.add_argument(
        "--backend",
        choices=["auto", "torch", "onnx"],
        help="network backend: torch (PyTorch; the default, measured fastest), onnx (ONNX Runtime on the CPU; "
        "falls back to PyTorch with a warning when it cannot be used), or auto (ONNX Runtime when installed and "
        "the device is the CPU)",
    )
    q.add_argument("--onnx-cache", help="folder of cached ONNX exports (default ~/.cache/cardiolora/onnx)")
    q.add_argument("--overwrite", action="store_true", help="replace finished outputs (atomically)")
    q.add_argument("--no-postprocess", action="store_true", help="keep the raw network labels")
    q.add_argument("--no-progress", action="store_true")


def _settings(args: Any) -> dict[str, Any]:
    """Flags over the config file over the defaults.

    Raises:
        ValueError: if the config file is unreadable, not a JSON object, or has unknown keys.
    """
    config: dict[str, Any] = {}
    if getattr(args, "config", None):
        path = Path(args.config)
        try:
            config = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise ValueError(f"--config {path}: cannot read it as JSON ({err}).") from err
        if not isinstance(config, dict):
            raise ValueError(f"--config {path}: expected a JSON object, got {type(config).__name__}.")
        unknown = sorted(set(config) - set(CONFIG_KEYS) - {"comment", "_comment"})
        if unknown:
            raise ValueError(f"--config {path}: unknown keys {unknown}; known: {list(CONFIG_KEYS)}.")
        base = path.parent
        # relative paths are relative to the config file
        for key in ("out", "model", "base", "adapter", "onnx_cache", "series_rules"):
            if config.get(key) is not None and not Path(str(config[key])).is_absolute():
                config[key] = str(base / str(config[key]))
    from cardiolora.site.app import SegmentOptions

    defaults = {"profile": "quick", "incomplete_positions": "raise", "sw_batch_size": SegmentOptions.sw_batch_size}
    merged = {**defaults, **{k: v for k, v in config.items() if k in CONFIG_KEYS}}
    for key in CONFIG_KEYS:
        value = getattr(args, key, None)
        if value is not None:
            merged[key] = value
    return merged


def segment_command(args: Any) -> int:
    """Run ``cardiolora segment`` from parsed arguments; print a summary; return the exit code.

    Args:
        args: the ``argparse`` namespace (see :func:`add_segment_arguments`).

    Returns:
        The exit code (module docstring).

    Raises:
        ValueError: (exit code 2 in the CLI) for bad arguments, a bad config file, or a missing /
            incompatible model (:class:`~cardiolora.site.model.ModelError`).
    """
    from cardiolora.site.app import SegmentOptions, run_segment
    from cardiolora.site.model import DEFAULT_BACKEND, load_site_model

    logging.getLogger("highdicom").setLevel(logging.WARNING)  # one INFO line per copied module
    s = _settings(args)
    if not s.get("out"):
        raise ValueError("--out is required (or `out` in --config).")
    max_bytes = DEFAULT_MAX_BYTES
    if s.get("max_gb") is not None:
        if not float(s["max_gb"]) > 0:
            raise ValueError(f"--max-gb must be positive, got {s['max_gb']}.")
        max_bytes = max(1, int(float(s["max_gb"]) * 1024**3))
    options = SegmentOptions(
        series=None if s.get("series") is None else str(s["series"]),
        incomplete_positions=s["incomplete_positions"],
        max_bytes=max_bytes,
        overwrite=bool(args.overwrite),
        progress=not args.no_progress,
        sw_batch_size=int(s["sw_batch_size"]),
        postprocess=not args.no_postprocess,
        series_rules=s.get("series_rules"),
        seg_per_phase=bool(s.get("seg_per_phase")),
    )
    if not Path(args.input).exists():
        raise ValueError(f"{args.input}: no such file or folder.")
    model = load_site_model(
        s.get("model"),
        base=s.get("base"),
        adapter=s.get("adapter"),
        profile=s["profile"],
        device=s.get("device"),
        lora_alpha=s.get("lora_alpha"),
        cpu_workers=s.get("cpu_workers"),
        backend=s.get("backend") or DEFAULT_BACKEND,
        onnx_cache=s.get("onnx_cache"),
    )
    result = run_segment(args.input, s["out"], model, options)
    for o in result.outcomes:
        where = f" -> {o.output}" if o.output else ""
        line = f"{o.status:8s} {o.study.name}{where}"
        if o.reason:
            line += f": {o.reason}"
        print(line, file=sys.stdout if o.status == "done" else sys.stderr)
    partial = [o for o in result.outcomes if o.status == "partial"]
    if partial:
        print(
            f"{len(partial)} of {len(result.outcomes)} studies are partial: a promised output is missing (see above)",
            file=sys.stderr,
        )
    flagged = [o for o in result.outcomes if o.row.get("flags")]
    if flagged:
        print(f"{len(flagged)} of {len(result.outcomes)} studies have plausibility flags (check before use):")
        for o in flagged:
            print(f"  {o.study.name}: {', '.join(o.row['flags'])}")
    if result.csv is not None:
        print(f"report of all studies: {result.csv}")
    if not result.outcomes:
        print(f"cardiolora segment: no study found in {args.input}", file=sys.stderr)
    return result.exit_code
