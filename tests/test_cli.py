"""The `cardiolora` command's habits: --version, help on every flag, the logging options."""

from __future__ import annotations

import argparse
import logging

import pytest
from ignite.engine import Engine
from monai.handlers import StatsHandler

import cardiolora
from cardiolora.cli import LIBRARY_LOGGERS, PROGRESS_LOGGERS, build_parser, configure_logging, main, version_text


def _parsers(parser: argparse.ArgumentParser, name: str = "cardiolora"):
    """(name, parser) of the command and of every subcommand."""
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _parsers(sub, f"{name} {sub_name}")


def test_every_flag_of_every_command_has_help():
    missing = []
    seen = 0
    for name, parser in _parsers(build_parser()):
        for action in parser._actions:
            seen += 1
            if not action.help or action.help == argparse.SUPPRESS:
                missing.append(f"{name}: {'/'.join(action.option_strings) or action.dest}")
    assert seen > 60 and missing == []


def test_version_is_the_package_and_bundle_version(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    out = capsys.readouterr().out.strip()
    assert out == version_text() and out.startswith(f"cardiolora {cardiolora.__version__} ")


@pytest.mark.parametrize(
    "argv, level, verbose",
    [
        ([], "INFO", False),
        (["-q"], "WARNING", False),
        (["-v"], "INFO", True),
        (["--log-level", "DEBUG"], "DEBUG", False),
        (["phantoms", "--out", "x", "-q"], "WARNING", False),  # after the command's name too
        (["--log-level", "ERROR", "phantoms", "--out", "x"], "ERROR", False),  # not reset by the command
        (["-v", "phantoms", "--out", "x", "--log-level", "DEBUG"], "DEBUG", True),
    ],
)
def test_logging_options_parse_before_and_after_the_command(argv, level, verbose):
    if "phantoms" not in argv:
        argv = [*argv, "phantoms", "--out", "x"]
    args = build_parser().parse_args(argv)
    assert (args.log_level, args.verbose) == (level, verbose)


def test_quiet_and_verbose_exclude_each_other(capsys):
    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args(["-q", "-v", "phantoms", "--out", "x"])
    assert stop.value.code == 2 and "not allowed with" in capsys.readouterr().err


@pytest.fixture
def logging_state():
    """Restore the logger levels and the progress loggers' handlers `configure_logging` changes
    (the suite shares one process; pytest's own handlers are left alone)."""
    names = ["", *LIBRARY_LOGGERS, *[n for n in logging.root.manager.loggerDict if n.split(".")[0] in LIBRARY_LOGGERS]]
    levels = {n: logging.getLogger(n).level for n in names}
    progress = {n: (list(logging.getLogger(n).handlers), logging.getLogger(n).propagate) for n in PROGRESS_LOGGERS}
    yield
    for n, level in levels.items():
        logging.getLogger(n).setLevel(level)
    for n, (handlers, propagate) in progress.items():
        log = logging.getLogger(n)
        for h in [h for h in log.handlers if h not in handlers and type(h).__module__ == "cardiolora.cli"]:
            log.removeHandler(h)
        log.propagate = propagate


def _run_engine() -> None:
    """One ignite epoch with MONAI's StatsHandler logging the iteration loss (INFO)."""
    engine = Engine(lambda _engine, _batch: 0.25)
    StatsHandler(iteration_log=True, epoch_log=False, output_transform=lambda loss: loss).attach(engine)
    engine.run([0], max_epochs=1)


@pytest.mark.parametrize(
    "flags, library_lines, progress_lines",
    [([], False, True), (["-v"], True, True), (["-q"], False, False)],
    ids=["default", "verbose", "quiet"],
)
def test_library_noise_is_held_at_warning_unless_verbose(
    flags, library_lines, progress_lines, logging_state, tmp_path, caplog, capsys
):
    """ignite's "Engine run ..." INFO lines only with -v; MONAI's metric lines follow the level (-q hides them)."""
    # a command that fails on its input still configures logging first (exit code 2)
    assert main([*flags, "datalist", "--source", str(tmp_path / "missing"), "--out", str(tmp_path / "out")]) == 2
    capsys.readouterr()
    caplog.clear()
    _run_engine()
    ignite_lines = [r for r in caplog.records if r.name.startswith("ignite") and r.levelno == logging.INFO]
    assert bool(ignite_lines) == library_lines
    err = capsys.readouterr().err
    assert ("Loss: 0.25" in err) == progress_lines
    monai_module = logging.getLogger("monai.bundle.workflows")  # made (level INFO) when monai was imported
    assert monai_module.getEffectiveLevel() == (logging.INFO if library_lines else logging.WARNING)


def test_an_unknown_level_is_refused():
    with pytest.raises(ValueError, match="`level` must be one of"):
        configure_logging("LOUD")
