"""Write measured numbers into Markdown files between markers, with the command that made them."""

from __future__ import annotations

import os
import platform
import re
import time
from pathlib import Path

__all__ = ["replace_block", "machine_line"]


def machine_line() -> str:
    """One line naming the machine kind and the date, for result tables."""
    cores = os.cpu_count()
    return f"{platform.machine()}, {cores} CPU cores, Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}"


def replace_block(path: str | os.PathLike, name: str, body: str) -> Path:
    """Replace the text between ``<!-- name:start -->`` and ``<!-- name:end -->`` in `path`.

    Args:
        path: the Markdown file.
        name: block name.
        body: new content (the command that produced it should be part of it).

    Returns:
        The path.

    Raises:
        ValueError: if the file lacks the two markers (the message names the file and markers).
    """
    path = Path(path)
    text = path.read_text()
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise ValueError(f"{path}: markers {start} ... {end} not found.")
    new = pattern.sub(lambda _: f"{start}\n{body.rstrip()}\n{end}", text)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(new)
    os.replace(tmp, path)
    return path
