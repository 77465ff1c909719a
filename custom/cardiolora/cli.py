"""The `cardiolora` command (placeholder while the subcommands land)."""

from __future__ import annotations

import sys

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `cardiolora` command."""
    print("cardiolora: no subcommands yet", file=sys.stderr)
    return 2
