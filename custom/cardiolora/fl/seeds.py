"""The job seed of the federated runs and the per-round seed each site derives from it.

A FLARE job's ``seed`` (:data:`DEFAULT_SEED` unless the job sets it: ``build_job(seed=...)``,
``jobs/<name>/job.py --seed``, ``cardiolora.fl.run --seed``) reaches every site as the script
argument ``--seed`` of :mod:`cardiolora.fl.client`. There it is the bundle seed of the site's
workflows, and each local training run (a round's adapter or full-weight update, the personal
adapter at ``finalize``) seeds torch with :func:`round_seed` of (job seed, site, round).

Standard library only, so the command-line modules can import it without torch.
"""

from __future__ import annotations

import numbers
import zlib

__all__ = ["DEFAULT_SEED", "check_seed", "round_seed"]

#: The job seed when none is given; with it :func:`round_seed` gives the seeds of the runs made before jobs had one.
DEFAULT_SEED = 0
#: Multipliers of :func:`round_seed` (primes): the round's and the job seed's share.
_ROUND_STRIDE = 7919
_SEED_STRIDE = 104729


def check_seed(seed: object, name: str = "seed") -> int:
    """Validate a job seed: a non-negative integer (bool is refused).

    Args:
        seed: the value to check (an int or a numpy integer).
        name: the argument's name in the error message.

    Returns:
        `seed` as an int.

    Raises:
        ValueError: if `seed` is not an integer or is negative (the message names `name`).
    """
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise ValueError(f"`{name}` must be a non-negative int, got {seed!r} ({type(seed).__name__}).")
    if seed < 0:
        raise ValueError(f"`{name}` must be a non-negative int, got {seed}.")
    return int(seed)


def round_seed(seed: int, site: str, round_index: int) -> int:
    """The torch seed of one site's local training in one round.

    ``(crc32(site) + 7919·round + 104729·seed) mod 2³¹``. With ``seed`` 0 it is the per-round seed
    the sites always used (``crc32(site) + 7919·round``), so runs made before jobs had a seed are
    reproduced exactly; another job seed shifts the seed of every site in every round.

    Args:
        seed: the job seed (non-negative int).
        site: the site's name.
        round_index: the federated round (``finalize`` uses the last round's index).

    Returns:
        A seed in ``[0, 2³¹)``.

    Raises:
        ValueError: if `seed` is not a non-negative int.
    """
    seed = check_seed(seed)
    return (zlib.crc32(site.encode()) + _ROUND_STRIDE * int(round_index) + _SEED_STRIDE * seed) % (2**31)
