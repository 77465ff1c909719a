"""What an FL admin reads about one job: versions, per-job site folders, the job summary, progress.

* :func:`versions` — the package, bundle, FLARE, torch and MONAI versions of a participant (the
  sites send theirs with ``init``; the server adds its own to the summary);
* :func:`job_output_dir` / :func:`mark_latest` / :func:`latest_dir` — a site's outputs live in
  ``<output_dir>/<job name>/<job id>/``; ``<output_dir>/<job name>/latest`` (a relative symbolic
  link) and ``latest.json`` name the last job whose final models were written there, so an aborted
  job's files never mix with a later job's and a reader always finds the newest models;
* :func:`job_summary` — ``job_summary.json`` in the server's run folder: job id, seed, versions,
  bytes per site, last Dice per site, failed sites with their reasons, where the state came from;
* :func:`progress` — the same numbers for the round in progress, which the controller hands to
  FLARE's ``show_stats`` (``show_stats <job id> server`` in the admin console).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from cardiolora.atomic import write_json

__all__ = [
    "SUMMARY_FILE",
    "LATEST",
    "LATEST_FILE",
    "versions",
    "error_reason",
    "job_output_dir",
    "check_folder_name",
    "mark_latest",
    "latest_dir",
    "byte_totals",
    "last_scores",
    "progress",
    "job_summary",
]

#: The job summary in the server's run folder.
SUMMARY_FILE = "job_summary.json"
#: The link to a site's newest finished job folder, in ``<output_dir>/<job name>/``.
LATEST = "latest"
#: The same pointer as JSON (for readers that do not follow links, and with the time it was set).
LATEST_FILE = "latest.json"
#: Longest failure reason a site sends (the site's result filter caps strings at 2000 characters).
MAX_REASON = 1500


def _dist_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def versions() -> dict[str, str | None]:
    """The versions this participant runs.

    Returns:
        ``{"cardiolora", "bundle", "nvflare", "torch", "monai"}``: the package's ``__version__``,
        the bundle's ``metadata.json`` ``version``, and the installed distributions' versions (None
        for one that is not installed).
    """
    import cardiolora
    from cardiolora.paths import bundle_dir

    try:
        bundle = json.loads((bundle_dir() / "configs" / "metadata.json").read_text()).get("version")
    except (OSError, ValueError):
        bundle = None
    return {
        "cardiolora": cardiolora.__version__,
        "bundle": bundle,
        "nvflare": _dist_version("nvflare"),
        "torch": _dist_version("torch"),
        "monai": _dist_version("monai"),
    }


def error_reason(where: str, err: BaseException) -> str:
    """One line saying why a site failed: ``"<where>: <ErrorType>: <message>"``, at most 1500 characters.

    Args:
        where: what the site was doing (e.g. ``"site-3: starting the job"``).
        err: the exception.

    Returns:
        The reason.

    Example:
        >>> error_reason("site-3: `init`", FileNotFoundError("no datalist"))
        'site-3: `init`: FileNotFoundError: no datalist'
    """
    text = f"{where}: {type(err).__name__}: {err}".replace("\n", " ")
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 3] + "..."


def job_output_dir(output_root: str | os.PathLike, job_name: str, job_id: str) -> Path:
    """``<output_root>/<job_name>/<job_id>``: one folder per submitted job.

    Args:
        output_root: the site config's ``output_dir``.
        job_name: the job's name (``rate_my_lora``, ...).
        job_id: FLARE's job id.

    Returns:
        The folder (not created).

    Raises:
        ValueError: if `job_name` or `job_id` is empty, contains a path separator, or is ``latest``.
    """
    return Path(output_root) / check_folder_name("job_name", job_name) / check_folder_name("job_id", job_id)


def check_folder_name(arg: str, value: object) -> str:
    """`value` as one folder name of the per-job site folders: not empty, no path separator, not ``latest``.

    Args:
        arg: the argument's name, for the message.
        value: the job name or job id.

    Returns:
        ``str(value)``.

    Raises:
        ValueError: naming `arg` if `value` is empty, contains a path separator, or is ``latest``,
            ``.`` or ``..``.
    """
    text = "" if value is None else str(value)
    if not text or os.sep in text or "/" in text or text in (LATEST, ".", ".."):
        raise ValueError(f"`{arg}` must be a plain folder name other than {LATEST!r}, got {value!r}.")
    return text


def mark_latest(folder: str | os.PathLike) -> Path:
    """Point ``<folder's parent>/latest`` (relative link) and ``latest.json`` at `folder`.

    The link is replaced atomically (a new link renamed over the old one).

    Args:
        folder: a job folder of :func:`job_output_dir`.

    Returns:
        The link.
    """
    folder = Path(folder)
    link = folder.parent / LATEST
    tmp = folder.parent / f".{LATEST}.{os.getpid()}"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(folder.name, target_is_directory=True)
    os.replace(tmp, link)
    write_json(
        {"job_id": folder.name, "folder": str(folder), "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
        folder.parent / LATEST_FILE,
    )
    return link


def latest_dir(job_root: str | os.PathLike) -> Path:
    """The folder ``<job_root>/latest`` points at (``<output_dir>/<job name>`` as `job_root`).

    Args:
        job_root: ``<output_dir>/<job name>``.

    Returns:
        The job folder (resolved through ``latest.json``, so it also works where links do not).

    Raises:
        FileNotFoundError: naming the folder if no job finished there yet.
    """
    pointer = Path(job_root) / LATEST_FILE
    if not pointer.is_file():
        raise FileNotFoundError(f"{pointer}: no finished job in {job_root} yet (no `latest` pointer).")
    return Path(job_root) / json.loads(pointer.read_text())["job_id"]


def byte_totals(rounds: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, int]]:
    """Payload bytes per site summed over every record: ``{site: {"up", "down"}}`` and ``"all"``.

    Args:
        rounds: the ledger's records (:mod:`cardiolora.fl.history`).

    Returns:
        The totals.

    Example:
        >>> byte_totals([{"sites": {"a": {"bytes_up": 2, "bytes_down": 5}}}, {"sites": {"a": {"bytes_up": 1}}}])
        {'a': {'up': 3, 'down': 5}, 'all': {'up': 3, 'down': 5}}
    """
    out: dict[str, dict[str, int]] = {}
    for record in rounds:
        for site, rec in record.get("sites", {}).items():
            tot = out.setdefault(site, {"up": 0, "down": 0})
            tot["up"] += int(rec.get("bytes_up") or 0)
            tot["down"] += int(rec.get("bytes_down") or 0)
    out["all"] = {k: sum(v[k] for v in out.values()) for k in ("up", "down")}
    return out


def last_scores(rounds: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Each site's last validation score ``P_t^c`` (mean case Dice) in the records."""
    scores: dict[str, float] = {}
    for record in rounds:
        for site, rec in record.get("sites", {}).items():
            if isinstance(rec.get("score"), (int, float)):
                scores[site] = float(rec["score"])
    return scores


def progress(
    job_id: str | None,
    method: str,
    round_index: int,
    num_rounds: int,
    rounds: Sequence[Mapping[str, Any]],
    active: Sequence[str],
    failures: Mapping[str, Mapping[str, Any]],
) -> dict[str, Any]:
    """The numbers ``show_stats`` returns while a job runs.

    Args:
        job_id: FLARE's job id.
        method: ``rate_my_lora`` / ``fedpetuning``.
        round_index: the round in progress (0: ``init``).
        num_rounds: rounds of the job.
        rounds: the ledger's records so far.
        active: the sites still in the job.
        failures: ``{site: {"task", "round", "reason"}}`` of the sites that failed.

    Returns:
        ``{"job_id", "method", "round", "num_rounds", "lambda", "active", "failed", "last_round": {site:
        {"score", "rating", "bytes_up", "bytes_down", "accepted"}}, "bytes": byte_totals}`` (last_round is the
        last completed training round, or ``init``).
    """
    trained = [r for r in rounds if r.get("task") in (None, "init") and "seconds" in r]
    last = trained[-1] if trained else {}
    keys = ("score", "rating", "bytes_up", "bytes_down", "accepted")
    return {
        "job_id": job_id,
        "method": method,
        "round": round_index,
        "num_rounds": num_rounds,
        "lambda": last.get("lambda"),
        "last_round": {
            "round": last.get("round"),
            "sites": {s: {k: rec.get(k) for k in keys} for s, rec in last.get("sites", {}).items()},
        },
        "active": list(active),
        "failed": {s: dict(f) for s, f in failures.items()},
        "bytes": byte_totals(rounds),
    }


def job_summary(
    job_id: str | None,
    job_name: str,
    status: str,
    header: Mapping[str, Any],
    rounds: Sequence[Mapping[str, Any]],
    site_info: Mapping[str, Mapping[str, Any]],
    failures: Mapping[str, Mapping[str, Any]],
    resumed_from: Mapping[str, Any] | None,
    rounds_completed: int,
) -> dict[str, Any]:
    """The job summary (``job_summary.json``).

    Args:
        job_id: FLARE's job id.
        job_name: the job's name.
        status: ``running``, ``finished`` or ``failed: <reason>``.
        header: the run's description (method, adapter, profile, λ_0, decay, ranks, sizes).
        rounds: the ledger's records.
        site_info: ``{site: {"seed", "versions"}}`` as the sites reported them at ``init``.
        failures: ``{site: {"task", "round", "reason"}}``.
        resumed_from: ``{"job_id", "round"}`` of the saved state this job resumed, or None.
        rounds_completed: the last completed round.

    Returns:
        ``{"job_id", "job_name", "status", "rounds_completed", "resumed_from", "seed", "versions": {"server",
        "sites"}, "bytes", "dice", "failed_sites", **header}``; ``seed`` is the job seed the sites
        report (one number) or ``{site: seed}`` if they disagree.
    """
    seeds = {s: info.get("seed") for s, info in site_info.items()}
    distinct = set(seeds.values())
    return {
        "job_id": job_id,
        "job_name": job_name,
        "status": status,
        "rounds_completed": rounds_completed,
        "resumed_from": dict(resumed_from) if resumed_from else None,
        **dict(header),
        "seed": next(iter(distinct)) if len(distinct) == 1 else seeds,
        "versions": {"server": versions(), "sites": {s: info.get("versions") for s, info in site_info.items()}},
        "bytes": byte_totals(rounds),
        "dice": last_scores(rounds),
        "failed_sites": {s: dict(f) for s, f in failures.items()},
    }
