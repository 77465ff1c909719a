"""Site-level differential privacy as an option of the adapter jobs (``rate_my_lora``, ``fedpetuning``, ``dual_lora``).

Off by default: ``dp_clip`` ``C``, ``dp_noise_multiplier`` ``z`` and ``dp_delta`` ``δ`` (and,
for reproducible experiments only, ``dp_reproducible_noise``: noise seeded from the job seed instead
of OS entropy, which is no privacy against anyone who knows the job seed) put
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
from cardiolora.fl.privacy import DEFAULT_DELTA, dp_settings, noise_source
from cardiolora.fl.protocol import Task

__all__ = ["DEFAULT_DELTA", "dp_options", "add_dp_filter", "add_dp_arguments"]


def dp_options(
    clip: float | None,
    noise_multiplier: float | None,
    delta: float = DEFAULT_DELTA,
    reproducible_noise: bool = False,
) -> dict:
    """The DP keyword arguments of a job's ``build`` (``{}`` when DP is off), checked.

    Args:
        clip: ``C`` or None.
        noise_multiplier: ``z`` or None.
        delta: ``δ``.
        reproducible_noise: seed the sites' noise from the job seed (reproducible runs, benchmarks)
            instead of OS entropy (default, what a deployment needs).

    Returns:
        ``{"dp_clip", "dp_noise_multiplier", "dp_delta", "dp_reproducible_noise"}``, or ``{}`` if both
        `clip` and `noise_multiplier` are None.

    Raises:
        ValueError: as :func:`cardiolora.fl.privacy.dp_settings`; naming `dp_reproducible_noise` if it
            is not a bool or is true with DP off.
    """
    noise_source(reproducible_noise)  # a bool
    settings = dp_settings(clip, noise_multiplier, delta)
    if settings is None:
        if reproducible_noise:
            raise ValueError(
                "`dp_reproducible_noise` is an option of DP: give `dp_clip` and `dp_noise_multiplier` too."
            )
        return {}
    return {
        "dp_clip": settings.clip,
        "dp_noise_multiplier": settings.noise_multiplier,
        "dp_delta": settings.delta,
        "dp_reproducible_noise": reproducible_noise,
    }


def add_dp_filter(
    job: FedJob,
    profile: str,
    adapter: str,
    seed: int,
    dp_clip: float | None = None,
    dp_noise_multiplier: float | None = None,
    dp_delta: float = DEFAULT_DELTA,
    dp_reproducible_noise: bool = False,
) -> bool:
    """Put the sites' DP filter on `job` (before the adapter filter; call this first), if DP is on.

    Args:
        job: the FedJob.
        profile: run profile.
        adapter: ``"lora"`` or ``"tensor"``.
        seed: the job seed (the round's start adapter ``x_0`` derives from it, and with
            `dp_reproducible_noise` the noise too).
        dp_clip: ``C`` or None (off).
        dp_noise_multiplier: ``z`` or None (off).
        dp_delta: ``δ``.
        dp_reproducible_noise: noise seeded from the job seed instead of OS entropy (default).

    Returns:
        True if the filter was added.

    Raises:
        ValueError: as :func:`dp_options`.
    """
    dp = dp_options(dp_clip, dp_noise_multiplier, dp_delta, dp_reproducible_noise)
    if not dp:
        return False
    dp_filter = AdapterDPFilter(
        profile=profile,
        adapter=adapter,
        seed=seed,
        clip=dp["dp_clip"],
        noise_multiplier=dp["dp_noise_multiplier"],
        delta=dp["dp_delta"],
        secure_rng=not dp["dp_reproducible_noise"],
    )
    job.to_clients(dp_filter, tasks=list(Task.ALL), filter_type=FilterType.TASK_RESULT)
    return True


def add_dp_arguments(parser: argparse.ArgumentParser) -> None:
    """``--dp-clip``, ``--dp-noise-multiplier``, ``--dp-delta``, ``--dp-reproducible-noise`` on a job's command line.

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
    parser.add_argument(
        "--dp-reproducible-noise",
        action="store_true",
        help="seed the DP noise from the job seed (reproducible experiments only: no privacy against "
        "anyone who knows the job seed, the server included); default: OS entropy",
    )
