"""The one site-local settings file: an ``fl`` section (the FLARE participant) and an
``inference`` section (``cardiolora segment``).

A site keeps one JSON file, by FLARE's convention ``<site workspace>/local/cardiolora_site.json``::

    {
      "fl":        {"dataset_dir": "/data/cardiac", "output_dir": "/data/cardiolora_out"},
      "inference": {"model": "/data/cardiolora_out/personalised_model.pt", "profile": "paper",
                    "out": "/data/segmentations"}
    }

The FL participant reads ``fl`` (:func:`cardiolora.fl.site_config.load_site_config`), the segment
command reads ``inference`` (``cardiolora segment --config FILE``); relative paths in either are
resolved against the file's folder. A file without sections (the earlier flat layouts: the FL
fields, or the segment options, at the top level) is still read as the section its reader asks
for, so existing kits keep working.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["SECTIONS", "read_section"]

#: The sections of the site file.
SECTIONS = ("fl", "inference")
_COMMENTS = ("comment", "_comment")


def read_section(path: str | Path, section: str) -> dict[str, Any]:
    """The `section` of the site file at `path` (comment keys dropped).

    Args:
        path: the JSON file.
        section: ``"fl"`` or ``"inference"``.

    Returns:
        The section's fields: ``{}`` when a sectioned file lacks it; the whole object for a flat
        (section-less) file.

    Raises:
        ValueError: naming the file: unreadable or invalid JSON, not an object, a section that is
            not an object, or top-level keys beside the sections in a sectioned file; or an unknown
            `section`.
    """
    if section not in SECTIONS:
        raise ValueError(f"`section` must be one of {list(SECTIONS)}, got {section!r}.")
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: cannot read it as JSON ({err}).") from err
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(raw).__name__}.")
    raw = {k: v for k, v in raw.items() if k not in _COMMENTS}
    if not any(k in SECTIONS for k in raw):
        return raw
    stray = sorted(k for k in raw if k not in SECTIONS)
    if stray:
        raise ValueError(
            f"{path}: keys {stray} sit beside the sections {list(SECTIONS)}; put them inside `fl` or `inference`."
        )
    body = raw.get(section, {})
    if not isinstance(body, dict):
        raise ValueError(f"{path}: section `{section}` must be a JSON object, got {type(body).__name__}.")
    return {k: v for k, v in body.items() if k not in _COMMENTS}
