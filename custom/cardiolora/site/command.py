"""The ``cardiolora segment`` command: arguments, the site config file, the summary, the exit code.

Kept apart from :mod:`cardiolora.site.app` so that ``cardiolora --help`` does not import torch.
The options (their keys, types, help and the one default of each) are declared in the
site-inference bundle, ``inference/configs/inference.json`` (``segment_options`` and the top-level
keys); the flags are built from that declaration and passed to the bundle as overrides, the site
config file (``--config``) uses the same keys. The work itself is the bundle's workflow run by
:func:`cardiolora.site.app.run_segment`; exit codes are documented there. The PACS flags
(``--dicomweb`` ..., :func:`add_dicomweb_arguments`) are the command's own: they choose where the
studies come from and where SEG and SR go (:mod:`cardiolora.site.pacs`), not how the bundle
processes one.
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

#: The PACS state file's default name (:data:`cardiolora.site.pacs.STATE_FILE`; here to keep torch out).
_STATE_FILE = "dicomweb_state.json"
#: PACS flags that need --dicomweb.
_PACS_FLAGS = ("study", "patient_id", "study_date", "watch", "max_polls", "once", "state", "retry_failed")

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
        if decl.get("positional"):  # optional: --dicomweb takes its place
            q.add_argument(key, nargs="?", help=decl["help"] + " (not with --dicomweb)")
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
    add_dicomweb_arguments(q)


def add_dicomweb_arguments(q: Any) -> None:
    """The PACS flags of ``segment`` (:mod:`cardiolora.site.pacs`): where studies come from and
    results go to, not options of the bundle's workflow (so not declared in the bundle).

    Args:
        q: the parser.
    """
    g = q.add_argument_group("PACS over DICOMweb (inference/docs/README.md)")
    g.add_argument(
        "--dicomweb",
        metavar="URL",
        help="DICOMweb root of the PACS (e.g. http://host:8042/dicom-web): "
        "retrieve the studies by QIDO-RS / WADO-RS, store SEG and SR back by STOW-RS",
    )
    g.add_argument(
        "--study", action="append", default=None, metavar="UID", help="StudyInstanceUID to process (repeatable)"
    )
    g.add_argument(
        "--patient-id",
        help="process the studies of this PatientID (QIDO-RS; whether * ? are wildcards is up to the server)",
    )
    g.add_argument(
        "--study-date",
        metavar="RANGE",
        help="process the studies of this StudyDate: YYYYMMDD, YYYYMMDD-YYYYMMDD, YYYYMMDD- or -YYYYMMDD",
    )
    g.add_argument(
        "--watch",
        action="store_true",
        default=None,
        help="poll the PACS for new studies matching the query until SIGINT / SIGTERM",
    )
    g.add_argument("--interval", type=float, default=60.0, help="seconds between polls in --watch (default 60)")
    g.add_argument("--max-polls", type=int, help="--watch: stop after this many polls")
    g.add_argument("--once", action="store_true", default=None, help="--watch: one poll (= --max-polls 1)")
    g.add_argument("--state", metavar="FILE", help=f"state file of processed studies (default OUT/{_STATE_FILE})")
    g.add_argument(
        "--retry-failed",
        action="store_true",
        default=None,
        help="process once more the studies the state file records as not done",
    )
    g.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait for the PACS per request (default 30; 3 attempts)"
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
    logging.getLogger("dicomweb_client").setLevel(logging.WARNING)  # one INFO line per request
    s = _settings(args)
    if not s.get("out"):
        raise ValueError("--out is required (or `out` in --config).")
    load_workflow(s, key="reader")  # bad reader options are refused before the input and the model are looked at
    if getattr(args, "dicomweb", None):
        return _dicomweb_command(args, s)
    given = [f"--{k.replace('_', '-')}" for k in _PACS_FLAGS if getattr(args, k, None)]
    if given:
        raise ValueError(f"{', '.join(given)} need --dicomweb URL.")
    if not s.get("input"):
        raise ValueError("give a study or folder of studies (INPUT), or --dicomweb URL with --study / a query.")
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


def _dicomweb_command(args: Any, s: dict[str, Any]) -> int:
    """``segment --dicomweb``: the studies of a PACS (:func:`cardiolora.site.pacs.run_pacs`).

    Returns:
        The exit code: as for local studies; a failed study search (server down ...) is 1.

    Raises:
        ValueError: bad PACS flags (with INPUT, a bad date range, --max-polls without --watch).
    """
    import signal
    import threading

    from cardiolora.site.dicomweb import DicomWebError, DicomWebServer, check_date_range
    from cardiolora.site.pacs import PacsQuery, exit_status, run_pacs, summary_line
    from cardiolora.site.workflow import load_workflow

    if s.get("input"):
        raise ValueError(f"INPUT {s['input']!r} and --dicomweb exclude each other: the studies come from the PACS.")
    watch = bool(args.watch)
    max_polls = 1 if args.once else args.max_polls
    if (args.once or args.max_polls is not None) and not watch:
        raise ValueError("--once / --max-polls go with --watch.")
    query = PacsQuery(tuple(args.study or ()), args.patient_id, check_date_range(args.study_date))
    server = DicomWebServer(args.dicomweb, timeout=args.timeout)
    workflow = load_workflow(s)
    stop = threading.Event()
    previous = {}
    if watch:  # a signal ends the watch after the current study; the state file stays consistent

        def _stop(signum: int, _frame: Any) -> None:
            print(
                f"cardiolora segment: {signal.Signals(signum).name}: stopping after the current study", file=sys.stderr
            )
            stop.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, _stop)

    def _print(outcome: Any) -> None:
        print(summary_line(outcome), file=sys.stdout if outcome.status == "done" else sys.stderr, flush=True)

    try:
        outcomes = run_pacs(
            server,
            query,
            workflow,
            s["out"],
            args.state,
            watch=watch,
            interval=args.interval,
            max_polls=max_polls,
            retry_failed=bool(args.retry_failed),
            stop=stop,
            report=_print,
        )
    except DicomWebError as err:
        print(f"cardiolora segment: {err}", file=sys.stderr)
        return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not outcomes and not watch:
        print(f"cardiolora segment: no study of {args.dicomweb} matches {query.describe()}", file=sys.stderr)
    return exit_status(outcomes, watch)
