"""The ``cardiolora segment`` command: arguments, the site config file, the summary, the exit code.

Kept apart from :mod:`cardiolora.site.app` so that ``cardiolora --help`` does not import torch.
The options (their keys, types, help and the one default of each) are declared in the
site-inference bundle, ``inference/configs/inference.json`` (``segment_options`` and the top-level
keys); the flags are built from that declaration and passed to the bundle as overrides, the site
config file (``--config``) uses the same keys. The work itself is the bundle's workflow run by
:func:`cardiolora.site.app.run_segment`; exit codes are documented there.
"""

from __future__ import annotations

import importlib
import json
import logging
import sys
from pathlib import Path
from typing import Any

from cardiolora.paths import inference_bundle_dir
from cardiolora.site_file import read_section

__all__ = ["add_segment_arguments", "segment_command", "segment_options"]

#: Declaration types -> argparse types (``path`` values in a site config are relative to the file).
_TYPES: dict[str, Any] = {"str": str, "path": str, "int": int, "float": float}


def segment_options(config_file: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """The segment options as the site-inference bundle declares them (read as JSON, no torch).

    Args:
        config_file: the bundle config (default: the package's ``inference_bundle/configs/inference.json``).

    Returns:
        ``{key: {"type", "help", "default", ["choices"], ["positional"]}}`` in declaration order;
        ``default`` is the config's top-level value of the key, ``choices`` a list (a dotted name
        in the config, such as ``cardiolora.profiles.PROFILES``, is imported).

    Raises:
        ValueError: if a declared option has no top-level key, or an unknown type.
    """
    path = Path(config_file) if config_file is not None else inference_bundle_dir() / "configs" / "inference.json"
    config = json.loads(path.read_text())
    options: dict[str, dict[str, Any]] = {}
    for key, decl in config["segment_options"].items():
        if key not in config:
            raise ValueError(f"{path}: option `{key}` is declared in segment_options but has no default.")
        if decl.get("type") not in (*_TYPES, "bool"):
            raise ValueError(f"{path}: option `{key}` has type {decl.get('type')!r}; known: {[*_TYPES, 'bool']}.")
        choices = decl.get("choices")
        if isinstance(choices, str):
            module, _, name = choices.rpartition(".")
            choices = list(getattr(importlib.import_module(module), name))
        options[key] = {**decl, "default": config[key], **({"choices": choices} if choices is not None else {})}
    return options


def add_segment_arguments(q: Any) -> None:
    """Add the ``segment`` command's arguments to an ``argparse`` (sub)parser, built from the
    bundle's option declaration (:func:`segment_options`): ``--sw-batch-size`` for
    ``sw_batch_size``; a boolean that defaults to false is ``--<name>``, one that defaults to true
    ``--no-<name>``. Every flag defaults to ``None`` (unset: the config file's value, else the
    bundle's default wins).

    Args:
        q: the parser.
    """
    options = segment_options()
    for key, decl in options.items():
        default = decl["default"]
        shown = "" if default is None else f" (default {default})"
        if decl.get("positional"):
            q.add_argument(key, help=decl["help"])
            continue
        flag = "--" + key.replace("_", "-")
        if decl["type"] == "bool":
            if default:
                off = "--no-" + key.replace("_", "-")
                q.add_argument(off, dest=key, action="store_false", default=None, help=f"turn off: {decl['help']}")
            else:
                q.add_argument(flag, dest=key, action="store_true", default=None, help=decl["help"])
            continue
        extra = {"choices": decl["choices"]} if "choices" in decl else {}
        q.add_argument(flag, dest=key, type=_TYPES[decl["type"]], help=decl["help"] + shown, **extra)
    keys = [k for k, d in options.items() if not d.get("positional")]
    q.add_argument(
        "--config",
        help="the site file (cardiolora_site.json): its `inference` section, keys "
        + ", ".join(keys)
        + " (a file without sections: those keys at the top level); flags win",
    )


def _settings(args: Any) -> dict[str, Any]:
    """Flags over the config file; the bundle's defaults stay for what neither sets.

    Raises:
        ValueError: if the config file is unreadable, not a JSON object, or has unknown keys.
    """
    options = segment_options()
    keys = [k for k, d in options.items() if not d.get("positional")]
    config: dict[str, Any] = {}
    if getattr(args, "config", None):
        path = Path(args.config)
        try:
            config = read_section(path, "inference")
        except ValueError as err:
            raise ValueError(f"--config {err}") from None
        unknown = sorted(set(config) - set(keys))
        if unknown:
            raise ValueError(f"--config {path}: unknown keys {unknown}; known: {keys}.")
        for key, value in config.items():  # relative paths are relative to the config file
            if options[key]["type"] == "path" and value is not None and not Path(str(value)).is_absolute():
                config[key] = str(path.parent / str(value))
    merged = {k: v for k, v in config.items() if v is not None}
    for key in options:
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
    # here, not at the top: `cardiolora --help` imports this module and must not import torch (docstring)
    from cardiolora.site.app import run_segment
    from cardiolora.site.workflow import load_workflow

    logging.getLogger("highdicom").setLevel(logging.WARNING)  # one INFO line per copied module
    s = _settings(args)
    if not s.get("out"):
        raise ValueError("--out is required (or `out` in --config).")
    load_workflow(s, key="reader")  # bad reader options are refused before the input and the model are looked at
    if not Path(s["input"]).exists():
        raise ValueError(f"{s['input']}: no such file or folder.")
    workflow = load_workflow(s)
    result = run_segment(s["input"], s["out"], workflow)
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
        print(f"cardiolora segment: no study found in {s['input']}", file=sys.stderr)
    return result.exit_code
