"""Site-level differential privacy as an option of the adapter jobs (``rate_my_lora``, ``fedpetuning``, ``dual_lora``).

Off by default: ``dp_clip`` ``C``, ``dp_noise_multiplier`` ``z`` and ``dp_delta`` ``δ`` put
:class:`~cardiolora.fl.filters.AdapterDPFilter` in front of every site's result filter
(:func:`add_dp_filter`) and tell the controller to record ``ε``; :func:`dp_options` checks them
(:func:`cardiolora.fl.privacy.dp_settings`) and :func:`add_dp_arguments` puts them on a job's
command line. The mechanism, the accountant and what leaks anyway: :mod:`cardiolora.fl.privacy`.
"""

from __future__ import annotations

import argparse

from nvflare.job_config.api import FedJob
from nvflare.job_config.defs import FilterType

from cardiolora.fl.filters import AdapterDPFilter
from cardiolora.fl.privacy import DEFAULT_DELTA, dp_settings
from cardiolora.fl.protocol import Task

__all__ = ["DEFAULT_DELTA", "dp_options", "add_dp_filter", "add_dp_arguments"]


def dp_options(clip: float | None, noise_multiplier: float | None, delta: float = DEFAULT_DELTA) -> dict:
    """The DP keyword arguments of a job's ``build`` (``{}`` when DP is off), checked.

    Args:
        clip: ``C`` or None.
        noise_multiplier: ``z`` or None.
        delta: ``δ``.

    Returns:
        ``{"dp_clip", "dp_noise_multiplier", "dp_delta"}``, or ``{}`` if both `clip` and
        `noise_multiplier` are None.

    Raises:
        ValueError: as :func:`cardiolora.fl.privacy.dp_settings`.
    """
    settings = dp_settings(clip, noise_multiplier, delta)
    if settings is None:
        return {}
    return {"dp_clip": settings.clip, "dp_noise_multiplier": settings.noise_multiplier, "dp_delta": settings.delta}


def add_dp_filter(
    job: FedJob,
    profile: str,
    adapter: str,
    seed: int,
    dp_clip: float | None = None,
    dp_noise_multiplier: float | None = None,
    dp_delta: float = DEFAULT_DELTA,
) -> bool:
    """Put the sites' DP filter on `job` (before the adapter filter; call this first), if DP is on.

    Args:
        job: the FedJob.
        profile: run profile.
        adapter: ``"lora"`` or ``"tensor"``.
        seed: the job seed (the filter's noise seeds derive from it).
        dp_clip: ``C`` or None (off).
        dp_noise_multiplier: ``z`` or None (off).
        dp_delta: ``δ``.

    Returns:
        True if the filter was added.

    Raises:
        ValueError: as :func:`cardiolora.fl.privacy.dp_settings`.
    """
    dp = dp_options(dp_clip, dp_noise_multiplier, dp_delta)
    if not dp:
        return False
    dp_filter = AdapterDPFilter(
        profile=profile,
        adapter=adapter,
        seed=seed,
        clip=dp["dp_clip"],
        noise_multiplier=dp["dp_noise_multiplier"],
        delta=dp["dp_delta"],
    )
    job.to_clients(dp_filter, tasks=list(Task.ALL), filter_type=FilterType.TASK_RESULT)
    return True


def add_dp_arguments(parser: argparse.ArgumentParser) -> None:
    """``--dp-clip``, ``--dp-noise-multiplier``, ``--dp-delta`` on a job's command line.

    Args:
        parser: the job.py (or ``cardiolora.fl.run``) parser.
    """
    parser.add_argument(
        "--dp-clip",
        type=float,
        help="site-level DP: L2 bound C of each site's adapter update per round (off unless given)",
    )
    parser.add_argument(
        "--dp-noise-multiplier",
        type=float,
        help="site-level DP: Gaussian noise of std z*C per coordinate (with --dp-clip)",
    )
    parser.add_argument(
        "--dp-delta", type=float, default=DEFAULT_DELTA, help=f"δ of the reported ε (default {DEFAULT_DELTA})"
    )
