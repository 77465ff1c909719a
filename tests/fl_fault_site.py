"""Test-only site script: the production site script whose runner fails at one task (fault injection).

A test names this file (absolute path) as the exported job's ``task_script_path`` and appends
``--fail-at <site>:<task>:<round>`` to its ``task_script_args``; every site then runs
:func:`cardiolora.fl.client.main` unchanged, with :class:`FailingSiteRunner` as its runner, and the
named site raises at that task as a site that crashes would. Nothing of this ships: production
code has no fault-injection key.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Mapping
from typing import Any

from cardiolora.fl import client
from cardiolora.fl.protocol import Meta
from cardiolora.fl.site_runner import Reply, SiteRunner

__all__ = ["FailingSiteRunner", "parse_fail_at", "main"]


class FailingSiteRunner(SiteRunner):
    """A :class:`SiteRunner` that raises when `fail_site` gets `fail_task` of round `fail_round`.

    Args:
        *args: the arguments of :class:`SiteRunner`.
        fail_site: the site that fails.
        fail_task: the task it fails at.
        fail_round: the round it fails in (the task meta's ``round``).
        **kwargs: the keyword arguments of :class:`SiteRunner`.
    """

    def __init__(self, *args: Any, fail_site: str, fail_task: str, fail_round: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fail_site = fail_site
        self.fail_task = fail_task
        self.fail_round = fail_round

    def handle(self, task: str, params: Mapping[str, Any] | None, meta: Mapping[str, Any] | None) -> Reply:
        """Raise at the chosen task, else answer as :meth:`SiteRunner.handle` does."""
        round_index = dict(meta or {}).get(Meta.ROUND)
        if self.site == self.fail_site and task == self.fail_task and round_index == self.fail_round:
            raise RuntimeError(
                f"{self.site}: test fault injection at `{task}` of round {round_index}: the site drops out."
            )
        return super().handle(task, params, meta)


def parse_fail_at(text: str) -> dict[str, Any]:
    """``"site-3:validate:1"`` → ``{"fail_site": "site-3", "fail_task": "validate", "fail_round": 1}``.

    Args:
        text: ``<site>:<task>:<round>``.

    Returns:
        The keyword arguments of :class:`FailingSiteRunner`.

    Raises:
        argparse.ArgumentTypeError: naming `--fail-at` if `text` is not of that form.
    """
    parts = text.split(":")
    if len(parts) != 3 or not parts[2].isdigit():
        raise argparse.ArgumentTypeError(f"`--fail-at` must be <site>:<task>:<round>, got {text!r}.")
    return {"fail_site": parts[0], "fail_task": parts[1], "fail_round": int(parts[2])}


def main(argv: list[str]) -> None:
    """Run :func:`cardiolora.fl.client.main` with a :class:`FailingSiteRunner` (``--fail-at`` is taken out)."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--fail-at", type=parse_fail_at, required=True)
    own, rest = p.parse_known_args(argv)
    client.main(rest, runner_factory=functools.partial(FailingSiteRunner, **own.fail_at))


if __name__ == "__main__":
    main(sys.argv[1:])
