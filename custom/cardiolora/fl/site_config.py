"""The site-local configuration file every participant (the server too) reads.

Where a site keeps its data is the site's business, not the job's: one job folder serves every
site. Each participant reads a JSON file:

1. ``$CARDIOLORA_SITE_CONFIG`` if set: a file, or a folder holding ``<site name>.json`` (this is
   how the simulator, where all sites share one environment, gives each site its own file);
2. otherwise ``<site workspace>/local/cardiolora_site.json`` (the FLARE convention for site-local
   settings; in POC / production the site admin writes it next to ``resources.json``).

The participant reads the file's ``fl`` section (the same file's ``inference`` section holds the
``cardiolora segment`` options: :mod:`cardiolora.site_file`; a file without sections is read as
the ``fl`` section). Fields (relative paths are resolved against the file's folder):

* sites: ``dataset_dir`` (folder with ``datalist.json``; required), ``output_dir`` (required:
  global and personalised models, logs), ``num_threads`` (optional: torch CPU threads);
* server: ``pretrained_path`` (required: the base model ``W_0``), ``state_dir`` (optional:
  where the server keeps its resumable state; default ``<server workspace>/cardiolora_state``).

A missing file, invalid JSON, a missing required field or a field of the wrong type stops the
participant with an error that names the file and the field (:func:`load_site_config`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from cardiolora.site_file import read_section

__all__ = ["SITE_CONFIG_ENV", "SITE_CONFIG_NAME", "SiteConfig", "site_config_path", "load_site_config"]

#: Environment variable naming the site config file, or a folder of ``<site>.json`` files.
SITE_CONFIG_ENV = "CARDIOLORA_SITE_CONFIG"
#: File name of the site config in ``<site workspace>/local/``.
SITE_CONFIG_NAME = "cardiolora_site.json"

_SITE_FIELDS = {"dataset_dir", "output_dir", "num_threads", "pretrained_path", "state_dir"}


@dataclass(frozen=True)
class SiteConfig:
    """A participant's local settings (see the module docstring for the file format).

    Attributes:
        path: the file they were read from.
        site: the participant's name.
        dataset_dir: data folder with ``datalist.json`` (sites).
        output_dir: where models and reports are written.
        pretrained_path: the base model ``W_0`` (server).
        state_dir: the server's resumable state folder.
        num_threads: torch CPU threads, or None to leave torch's default.
        extra: fields this version does not know (kept, and named in a warning by the caller).
    """

    path: Path
    site: str
    dataset_dir: Path | None = None
    output_dir: Path | None = None
    pretrained_path: Path | None = None
    state_dir: Path | None = None
    num_threads: int | None = None
    extra: dict = field(default_factory=dict)


def site_config_path(site: str, workspace: str | os.PathLike | None = None) -> Path:
    """Where participant `site` reads its config (``$CARDIOLORA_SITE_CONFIG`` or the workspace's ``local/``).

    Args:
        site: the FLARE site name (``"server"`` for the server).
        workspace: the participant's workspace root (default: the current directory, which is the
            workspace root for FLARE client and server job processes).

    Returns:
        The path (it may not exist).
    """
    env = os.environ.get(SITE_CONFIG_ENV)
    if env:
        p = Path(env)
        return p / f"{site}.json" if p.is_dir() else p
    return Path(workspace if workspace is not None else os.getcwd()) / "local" / SITE_CONFIG_NAME


def load_site_config(
    site: str,
    required: Iterable[str] = ("dataset_dir", "output_dir"),
    workspace: str | os.PathLike | None = None,
) -> SiteConfig:
    """Read and check a participant's local config.

    Args:
        site: the site name.
        required: fields that must be present.
        workspace: the workspace root (see :func:`site_config_path`).

    Returns:
        The config with absolute paths.

    Raises:
        FileNotFoundError: if the file does not exist (the message names it and shows the format).
        ValueError: naming the file and the field: invalid JSON, a required field missing, a
            field of the wrong type, a ``dataset_dir`` without ``datalist.json``, a missing
            ``pretrained_path`` file.
    """
    path = site_config_path(site, workspace)
    example = '{"fl": {"dataset_dir": "/data/cardiac", "output_dir": "/data/cardiolora_out"}}'
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no site config for `{site}`. Write it as JSON, e.g. {example} (sites) or "
            f'{{"fl": {{"pretrained_path": "/models/base.pt"}}}} (server), or point ${SITE_CONFIG_ENV} at it.'
        )
    raw = read_section(path, "fl")
    for name in required:
        if raw.get(name) in (None, ""):
            raise ValueError(f"{path}: field `{name}` is required for `{site}` (e.g. {example}).")

    def as_path(name: str) -> Path | None:
        value = raw.get(name)
        if value in (None, ""):
            return None
        if not isinstance(value, str):
            raise ValueError(f"{path}: field `{name}` must be a path string, got {value!r}.")
        p = Path(value).expanduser()
        return (path.parent / p).resolve() if not p.is_absolute() else p

    threads = raw.get("num_threads")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"{path}: field `num_threads` must be an integer >= 1, got {threads!r}.")
    cfg = SiteConfig(
        path=path,
        site=site,
        dataset_dir=as_path("dataset_dir"),
        output_dir=as_path("output_dir"),
        pretrained_path=as_path("pretrained_path"),
        state_dir=as_path("state_dir"),
        num_threads=threads,
        extra={k: v for k, v in raw.items() if k not in _SITE_FIELDS},
    )
    if cfg.dataset_dir is not None and not (cfg.dataset_dir / "datalist.json").is_file():
        raise ValueError(
            f"{path}: field `dataset_dir` = {cfg.dataset_dir} holds no datalist.json "
            "(make one with `cardiolora datalist`)."
        )
    if cfg.pretrained_path is not None and not cfg.pretrained_path.is_file():
        raise ValueError(f"{path}: field `pretrained_path` = {cfg.pretrained_path} does not exist.")
    return cfg
