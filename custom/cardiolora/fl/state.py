"""The Rate-My-LoRA server's resumable state: ``<state_dir>/<state_name>/state.pt`` (+ ``state.json``).

After every round the controller saves the round ``t``, ``W_t`` and its checksum, the sites'
dataset sizes and ranks, their last scores ``P_t^c`` and the history of the run, together with the
configuration that produced them (profile, ``λ_0``, decay, ranks, rank threshold, method).
Submitting the job again resumes after the last saved round, if the configuration is the same; a
state whose run finished is archived (``state.done-<time>.pt``) and a new run starts. The state
names the job id that saved it, so a resumed job says which job it continues; a job with
``fresh: true`` archives an unfinished state (:func:`archive_state`, ``state.replaced-by-<job id>-<time>.pt``)
instead of resuming it.

``state.pt`` is written atomically (:func:`cardiolora.atomic.atomic_torch_save`);
``state.json`` holds the same fields without ``W_t``, for people and tests.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from cardiolora.atomic import atomic_torch_save, write_json
from cardiolora.fl import updates
from cardiolora.fl.site_config import load_site_config

__all__ = ["STATE_VERSION", "STATE_FILE", "state_dir", "run_config", "save_state", "load_state", "archive_state"]

#: Version of the state file's layout; a state of another version is refused.
STATE_VERSION = 1
#: File name of the state in its folder.
STATE_FILE = "state.pt"


def state_dir(server_root: str | os.PathLike, state_name: str) -> Path:
    """``<state_dir>/<state_name>``: the server config's ``state_dir`` or ``<server workspace>/cardiolora_state``.

    Args:
        server_root: the server's workspace root.
        state_name: sub-folder of the state directory (one per job kind).

    Returns:
        The folder (it may not exist).

    Raises:
        ValueError: if the server's config file exists but is invalid (it names the file and field).
    """
    root = Path(server_root)
    base = root / "cardiolora_state"
    try:
        cfg = load_site_config("server", required=(), workspace=root)
    except FileNotFoundError:
        cfg = None
    if cfg is not None and cfg.state_dir is not None:
        base = cfg.state_dir
    return base / state_name


def run_config(
    profile: str, lambda0: float, decay: float, ranks: Sequence[int], rank_threshold: float, method: str
) -> dict[str, Any]:
    """The configuration a state belongs to: a saved run resumes only if every field is the same.

    Args:
        profile: run profile of the bundle network.
        lambda0: ``λ_0``.
        decay: the decay of ``λ`` per round.
        ranks: ``(small-site rank, large-site rank)``.
        rank_threshold: the dataset-size fraction below which a site gets the small rank.
        method: ``"rate_my_lora"`` or ``"fedpetuning"``.

    Returns:
        ``{"profile", "lambda0", "decay", "ranks", "rank_threshold", "method"}`` (the ``config`` of
        :func:`save_state`, compared by :func:`load_state`).
    """
    return {
        "profile": profile,
        "lambda0": lambda0,
        "decay": decay,
        "ranks": list(ranks),
        "rank_threshold": rank_threshold,
        "method": method,
    }


def save_state(
    folder: str | os.PathLike,
    status: str,
    config: Mapping[str, Any],
    round_index: int,
    weights: Mapping[str, torch.Tensor],
    checksum: str,
    sizes: Mapping[str, int],
    ranks: Mapping[str, int],
    scores: Mapping[str, float],
    history: Sequence[dict],
    job_id: str | None = None,
) -> Path:
    """Persist the server state (atomically) to ``<folder>/state.pt`` and, without ``W``, ``state.json``.

    Args:
        folder: the state folder (:func:`state_dir`).
        status: ``"running"`` or ``"done"`` (a ``"done"`` state is archived, not resumed).
        config: the run's configuration (compared field by field on resume).
        round_index: the last completed round ``t``.
        weights: ``W_t``.
        checksum: :func:`cardiolora.fl.updates.state_checksum` of ``W_t``.
        sizes: ``{site: |D_c|}``.
        ranks: ``{site: r_c}``.
        scores: ``{site: P_t^c}``.
        history: the round records (:mod:`cardiolora.fl.ledger`).
        job_id: FLARE's id of the job that saved the state (None outside FLARE).

    Returns:
        The path of ``state.pt``.
    """
    folder = Path(folder)
    state = {
        "version": STATE_VERSION,
        "status": status,
        "config": dict(config),
        "round": round_index,
        "weights": {k: v.clone() for k, v in weights.items()},
        "checksum": checksum,
        "sizes": dict(sizes),
        "ranks": dict(ranks),
        "scores": dict(scores),
        "history": list(history),
        "job_id": job_id,
    }
    path = atomic_torch_save(state, folder / STATE_FILE)
    write_json({k: v for k, v in state.items() if k != "weights"}, folder / "state.json")
    return path


def load_state(
    folder: str | os.PathLike, config: Mapping[str, Any], log: Callable[[str], None] | None = None
) -> dict | None:
    """The persisted state to resume from, or None (no state, or the last run finished).

    A finished run's state is renamed to ``state.done-<YYYYmmdd-HHMMSS>.pt`` (logged through `log`).

    Args:
        folder: the state folder (:func:`state_dir`).
        config: the configuration of the job now (every field the saved run recorded must match).
        log: where to say that a finished run was archived (default: nowhere).

    Returns:
        The state dict (see :func:`save_state`) or None.

    Raises:
        RuntimeError: naming the file and the field if the state belongs to another
            configuration (profile, λ_0, decay, ranks, method) or is corrupt.
    """
    path = Path(folder) / STATE_FILE
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise RuntimeError(f"{path}: cannot read the server state to resume from ({err}).") from err
    if state.get("version") != STATE_VERSION:
        raise RuntimeError(f"{path}: state version {state.get('version')} != {STATE_VERSION}.")
    if state.get("status") == "done":
        archived = path.with_name(f"state.done-{time.strftime('%Y%m%d-%H%M%S')}.pt")
        os.replace(path, archived)
        if log is not None:
            log(f"{path}: the previous run finished; archived as {archived.name}, starting afresh.")
        return None
    for key, value in state.get("config", {}).items():
        if config.get(key) != value:
            raise RuntimeError(
                f"{path}: cannot resume: field `{key}` was {value!r} in the saved run but the job says "
                f"{config.get(key)!r}. Use another `state_name` or remove the state folder."
            )
    if updates.state_checksum(state["weights"]) != state["checksum"]:
        raise RuntimeError(f"{path}: the saved W_t does not match its checksum; the state is corrupt.")
    return state


def archive_state(folder: str | os.PathLike, tag: str, log: Callable[[str], None] | None = None) -> Path | None:
    """Move ``state.pt`` (and ``state.json``) aside as ``state.<tag>-<YYYYmmdd-HHMMSS>.pt``, so no run resumes it.

    Args:
        folder: the state folder (:func:`state_dir`).
        tag: what the name says about it (e.g. ``replaced-by-<job id>``).
        log: where to say what was archived (default: nowhere).

    Returns:
        The archived ``.pt`` path, or None if there was no state.
    """
    path = Path(folder) / STATE_FILE
    if not path.is_file():
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    archived = path.with_name(f"state.{tag}-{stamp}.pt")
    os.replace(path, archived)
    if path.with_suffix(".json").is_file():
        os.replace(path.with_suffix(".json"), archived.with_suffix(".json"))
    if log is not None:
        log(f"{path}: archived as {archived.name}; this job starts afresh (fresh: true).")
    return archived
