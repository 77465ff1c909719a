"""Site-level differential privacy of the adapter updates: clipping, Gaussian noise, the accountant.

Optional and off by default (a job without ``dp_clip`` sends exactly what it sent before). With it,
every adapter a site sends (``train`` in each round, the personal adapter at ``finalize``) is
privatised by :class:`cardiolora.fl.filters.AdapterDPFilter` before it leaves the site:

* **What is clipped.** The site's update is the vector of everything it trained this round, relative
  to where the round started: ``u = x − x_0`` over all adapter tensors of the message, concatenated.
  For LoRA ``x = (A, B)`` of every adapted module and ``x_0 = (A_0, 0)`` (``A_0`` the
  Kaiming-uniform draw of :func:`cardiolora.lora.reset_lora` under the round's torch seed
  :func:`cardiolora.fl.seeds.round_seed`, ``B_0 = 0``); for tensor adapters ``x`` = the TenVOO cores
  and ``x_0 = θ_0`` (the bundle's ``tensor_seed``). The factors are clipped, not the product
  ``ΔW = s·B·A``: the factors are what leaves the site, so only their norm bounds the sensitivity of
  the message; ``ΔW`` of the noisy factors is post-processing (its norm is *not* bounded by ``C``).
  ``x_0`` is a function of public job settings only (seeds, rank, profile), so releasing
  ``x_0 + ũ`` is as private as releasing ``ũ``; it keeps the random init out of the clipped norm.
* **Clipping** (:func:`clip_update`): ``ū = u · min(1, C / ‖u‖₂)``.
* **Noise** (:func:`add_gaussian_noise`): ``ũ = ū + N(0, (z·C)² I)``, one draw per coordinate.
  The generator is seeded from OS entropy (:data:`NOISE_OS_ENTROPY`, the default of the jobs:
  :func:`secrets.randbits`) or, for reproducible experiments only, from the job seed, site, round
  and task (:data:`NOISE_JOB_SEED`, :func:`noise_seed`; the job option ``dp_reproducible_noise``).
  Seeded noise protects nothing against anyone who knows the job seed — the server does, it is in
  the job — since they can draw the same noise and subtract it. The generator itself is torch's CPU
  generator, not a cryptographic one, and floating-point attacks on the Gaussian sampler are not
  addressed.
* **Accounting** (:func:`epsilon_after`): each release is one Gaussian-mechanism step with noise
  multiplier ``z`` and sampling rate ``q`` (1: every site takes part in every round, which is how the
  adapter jobs run; the server sees who sent, so no amplification by sampling is claimed);
  ``ε(δ)`` after ``n`` steps comes from Opacus's RDP accountant
  (:class:`opacus.accountants.RDPAccountant`, the extra ``cardiolora[dp]``), not re-derived here.
  For ``q = 1`` the RDP of one step at order ``α`` is ``α / (2 z²)`` and Opacus converts
  ``n·α/(2z²)`` to ``ε = min_α [n·α/(2z²) + log((α−1)/α) − (log δ + log α)/(α − 1)]``.

The guarantee is **site-level** (the unit is a site's whole training set), not record-level: it
bounds what one site's released adapters tell about that site's data, under the add/remove
convention of DP-FedAvg (an absent site's update is 0, sensitivity ``C``). Between two arbitrary
datasets of a site (replace adjacency) the sensitivity is ``2C``: the same accountant at ``z/2``
(:func:`epsilon_after` with ``replace=True``). Every release counts, so a run of ``T`` rounds spends
``T + 1`` steps (the personal adapter at ``finalize``). What is *not* protected: the scalars a site
sends beside its adapters — the validation scores ``P_t^c`` of Rate-My-LoRA's rating (``init``,
``validate``), ``|D_c|``, train losses and the cross-site metric tables — travel unchanged.
"""

from __future__ import annotations

import hashlib
import math
import numbers
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import torch

__all__ = [
    "DEFAULT_DELTA",
    "DEFAULT_SAMPLE_RATE",
    "ACCOUNTANT",
    "UNPROTECTED",
    "NOISE_OS_ENTROPY",
    "NOISE_JOB_SEED",
    "noise_source",
    "DPSettings",
    "dp_settings",
    "update_norm",
    "clip_update",
    "noise_seed",
    "noise_generator",
    "add_gaussian_noise",
    "privatize",
    "epsilon_after",
    "epsilon_per_step",
]

#: δ of the reported (ε, δ) unless the job sets ``dp_delta``.
DEFAULT_DELTA = 1e-5
#: Sampling rate of a site per round: every site takes part in every round of the adapter jobs.
DEFAULT_SAMPLE_RATE = 1.0
#: The accountant named in the records.
ACCOUNTANT = "opacus.accountants.RDPAccountant"
#: Noise seeded from OS entropy: the jobs' default, what a deployment needs.
NOISE_OS_ENTROPY = "os-entropy"
#: Noise seeded from the job seed, site, round and task (:func:`noise_seed`): reproducible runs only.
NOISE_JOB_SEED = "job-seed"


def noise_source(reproducible: object) -> str:
    """The noise source a job's ``dp_reproducible_noise`` names: :data:`NOISE_JOB_SEED` or :data:`NOISE_OS_ENTROPY`.

    Raises:
        ValueError: naming `dp_reproducible_noise` if it is not a bool.
    """
    if not isinstance(reproducible, bool):
        raise ValueError(f"`dp_reproducible_noise` must be true or false, got {reproducible!r}.")
    return NOISE_JOB_SEED if reproducible else NOISE_OS_ENTROPY


#: What a site sends beside its adapters, not privatised (the history's ``dp.unprotected``).
UNPROTECTED = (
    "validation scores P_t^c of the rating (init, validate)",
    "|D_c| (init, train)",
    "train losses (train, finalize)",
    "cross-site metric tables (cross_eval)",
)
#: Task codes in the noise seed (a site releases once in ``train`` and once in ``finalize`` of round T).
_TASK_CODES = ("train", "finalize")


def _positive(value: object, name: str, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"`{name}` must be a finite number, got {value!r}.")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"`{name}` must be {'>= 0' if allow_zero else '> 0'}, got {value!r}.")
    return float(value)


@dataclass(frozen=True)
class DPSettings:
    """The DP settings of a job (see the module docstring).

    Attributes:
        clip: ``C``, the L2 bound of a site's update per release (> 0).
        noise_multiplier: ``z``; the noise std per coordinate is ``z·C`` (> 0).
        delta: ``δ`` of the reported ``ε`` (in ``(0, 1)``).
        sample_rate: ``q`` of the accountant (in ``(0, 1]``; 1 for the adapter jobs).
    """

    clip: float
    noise_multiplier: float
    delta: float = DEFAULT_DELTA
    sample_rate: float = DEFAULT_SAMPLE_RATE

    @property
    def noise_std(self) -> float:
        """``σ = z·C``, the std of the noise per coordinate."""
        return self.noise_multiplier * self.clip

    def record(self) -> dict:
        """The settings as a JSON-able dict, with ``noise_std`` and the accountant's name."""
        return {**asdict(self), "noise_std": self.noise_std, "accountant": ACCOUNTANT}


def dp_settings(
    clip: float | None, noise_multiplier: float | None, delta: float = DEFAULT_DELTA, sample_rate: float = 1.0
) -> DPSettings | None:
    """Check a job's DP options; None when DP is off (no `clip` and no `noise_multiplier`).

    Args:
        clip: ``C`` (``--dp-clip``), or None.
        noise_multiplier: ``z`` (``--dp-noise-multiplier``), or None.
        delta: ``δ`` (``--dp-delta``).
        sample_rate: ``q`` of the accountant.

    Returns:
        The settings, or None if both `clip` and `noise_multiplier` are None.

    Raises:
        ValueError: naming the argument: only one of `clip` / `noise_multiplier` given, a value
            that is not a finite number > 0, `delta` outside ``(0, 1)``, `sample_rate` outside ``(0, 1]``.
    """
    if clip is None and noise_multiplier is None:
        return None
    if clip is None or noise_multiplier is None:
        missing = "dp_clip" if clip is None else "dp_noise_multiplier"
        raise ValueError(
            f"differential privacy needs both `dp_clip` and `dp_noise_multiplier`; `{missing}` is missing."
        )
    c = _positive(clip, "dp_clip")
    z = _positive(noise_multiplier, "dp_noise_multiplier")
    d = _positive(delta, "dp_delta")
    if not d < 1:
        raise ValueError(f"`dp_delta` must be in (0, 1), got {delta!r}.")
    q = _positive(sample_rate, "dp_sample_rate")
    if q > 1:
        raise ValueError(f"`dp_sample_rate` must be in (0, 1], got {sample_rate!r}.")
    return DPSettings(c, z, d, q)


def update_norm(update: Mapping[str, torch.Tensor]) -> float:
    """``‖u‖₂ = sqrt(Σ_k ‖u_k‖²_F)`` over all tensors of `update` (float64).

    Example:
        >>> update_norm({"a": torch.tensor([3.0]), "b": torch.tensor([4.0])})
        5.0
    """
    total = sum(float(torch.sum(torch.as_tensor(v).to(torch.float64) ** 2)) for v in update.values())
    return math.sqrt(total)


def clip_update(update: Mapping[str, torch.Tensor], clip: float) -> tuple[dict[str, torch.Tensor], float, float]:
    """Scale the whole update to L2 norm at most `clip`: ``ū = u · min(1, C / ‖u‖₂)``.

    One factor for all tensors (the update is one vector), so its direction is kept.

    Args:
        update: ``{key: u_k}`` (the site's update, every adapter tensor of the message).
        clip: ``C`` > 0.

    Returns:
        ``(ū in float64, ‖u‖₂, factor)``; an update with ``‖u‖₂ ≤ C`` comes back unchanged (factor 1).

    Raises:
        ValueError: if `clip` is not a finite number > 0 or `update` has non-finite values.

    Example:
        >>> clipped, norm, factor = clip_update({"a": torch.tensor([3.0, 4.0])}, 1.0)
        >>> clipped["a"].tolist(), norm, factor
        ([0.6000000000000001, 0.8], 5.0, 0.2)
    """
    c = _positive(clip, "clip")
    u = {k: torch.as_tensor(v).detach().cpu().to(torch.float64) for k, v in update.items()}
    bad = [k for k, v in u.items() if not torch.isfinite(v).all()]
    if bad:
        raise ValueError(f"the update has non-finite values in {bad[:5]}; it cannot be clipped.")
    norm = update_norm(u)
    factor = min(1.0, c / norm) if norm > 0 else 1.0
    return ({k: v * factor for k, v in u.items()} if factor < 1.0 else u), norm, factor


def noise_seed(seed: int, site: str, round_index: int, task: str) -> int:
    """The seed of one release's noise: ``sha256("cardiolora-dp/<seed>/<site>/<round>/<task>") mod 2⁶³``.

    Distinct from the training seed of :func:`cardiolora.fl.seeds.round_seed` (another stream), and
    distinct for ``train`` and ``finalize`` of the same round.

    Args:
        seed: the job seed (non-negative int).
        site: the site's name.
        round_index: the round of the release.
        task: ``"train"`` or ``"finalize"``.

    Returns:
        A seed in ``[0, 2⁶³)``.

    Raises:
        ValueError: for an unknown `task`.
    """
    if task not in _TASK_CODES:
        raise ValueError(f"`task` must be one of {sorted(_TASK_CODES)} (the tasks that send adapters), got {task!r}.")
    text = f"cardiolora-dp/{int(seed)}/{site}/{int(round_index)}/{task}".encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "big") % (2**63)


def noise_generator(seed: int | None) -> torch.Generator:
    """A CPU torch generator seeded with `seed`, or from OS entropy (:func:`secrets.randbits`) for None."""
    g = torch.Generator(device="cpu")
    g.manual_seed(int(seed) if seed is not None else secrets.randbits(63))
    return g


def add_gaussian_noise(
    update: Mapping[str, torch.Tensor], std: float, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """``ũ_k = ū_k + σ·ξ_k`` with ``ξ_k ~ N(0, I)`` drawn from `generator`, in sorted key order (float64).

    Args:
        update: ``{key: ū_k}``.
        std: ``σ = z·C`` ≥ 0.
        generator: the noise generator (:func:`noise_generator`).

    Returns:
        ``{key: ũ_k}`` in float64.

    Raises:
        ValueError: if `std` is negative or not finite.
    """
    s = _positive(std, "std", allow_zero=True)
    out = {}
    for key in sorted(update):
        v = torch.as_tensor(update[key]).detach().cpu().to(torch.float64)
        out[key] = v + s * torch.randn(v.shape, generator=generator, dtype=torch.float64)
    return {k: out[k] for k in update}


def privatize(
    state: Mapping[str, torch.Tensor],
    reference: Mapping[str, torch.Tensor],
    settings: DPSettings,
    generator: torch.Generator,
) -> tuple[dict[str, torch.Tensor], dict]:
    """One release: ``x̃ = x_0 + clip(x − x_0) + N(0, (zC)² I)``, cast back to each tensor's dtype.

    Args:
        state: the adapter tensors as the site would send them (``x``).
        reference: ``x_0`` with the same keys and shapes (the round's start; data-independent).
        settings: ``C``, ``z`` (:class:`DPSettings`).
        generator: the noise generator.

    Returns:
        ``(x̃ with the keys, shapes and dtypes of `state`, {"norm": ‖u‖₂, "clip_factor"})``. The
        norm is data-dependent: it is for the site's own log, never sent.

    Raises:
        ValueError: if the keys or shapes of `reference` differ from those of `state`, or the
            noisy values do not fit the dtype (e.g. float16's 65504).
    """
    if set(state) != set(reference):
        extra, missing = sorted(set(state) - set(reference)), sorted(set(reference) - set(state))
        raise ValueError(
            f"the update and its reference differ in keys: only in the update {extra[:5]}, only in the "
            f"reference {missing[:5]}."
        )
    wrong = [k for k in state if tuple(torch.as_tensor(state[k]).shape) != tuple(reference[k].shape)]
    if wrong:
        raise ValueError(f"the update and its reference differ in shape for {wrong[:5]}.")
    ref = {k: torch.as_tensor(reference[k]).detach().cpu().to(torch.float64) for k in state}
    update = {k: torch.as_tensor(state[k]).detach().cpu().to(torch.float64) - ref[k] for k in state}
    clipped, norm, factor = clip_update(update, settings.clip)
    noisy = add_gaussian_noise(clipped, settings.noise_std, generator)
    out = {}
    for k, v in state.items():
        dtype = torch.as_tensor(v).dtype
        t = (ref[k] + noisy[k]).to(dtype)
        if not torch.isfinite(t).all():
            raise ValueError(f"`{k}`: the noisy adapter does not fit in {dtype} (noise std {settings.noise_std}).")
        out[k] = t
    return out, {"norm": norm, "clip_factor": factor}


def _accountant():
    try:
        from opacus.accountants import RDPAccountant
    except ImportError as err:  # the extra is missing: say which
        raise ImportError(
            "differential privacy needs Opacus's RDP accountant: pip install 'cardiolora[dp]' (opacus==1.6.0)."
        ) from err
    return RDPAccountant()


def epsilon_after(
    steps: int,
    noise_multiplier: float,
    delta: float = DEFAULT_DELTA,
    sample_rate: float = DEFAULT_SAMPLE_RATE,
    replace: bool = False,
) -> float:
    """``ε(δ)`` of `steps` Gaussian-mechanism releases, from Opacus's RDP accountant.

    Each step is ``accountant.step(noise_multiplier=z, sample_rate=q)``; ``ε`` is
    ``accountant.get_epsilon(δ)`` (for ``q = 1``: ``min_α [n·α/(2z²) + log((α−1)/α) − (log δ + log α)/(α−1)]``
    over Opacus's default orders α). `replace` gives the replace-one-dataset bound (sensitivity
    ``2C``): the same accountant at ``z/2``.

    Args:
        steps: releases so far (≥ 0; 0 gives 0).
        noise_multiplier: ``z`` > 0.
        delta: ``δ`` in ``(0, 1)``.
        sample_rate: ``q`` in ``(0, 1]``.
        replace: replace adjacency instead of add/remove.

    Returns:
        ``ε``.

    Raises:
        ValueError: for `steps` < 0 or a value out of range.
        ImportError: if Opacus is not installed (the message names the extra).
    """
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 0:
        raise ValueError(f"`steps` must be an int >= 0, got {steps!r}.")
    settings = dp_settings(1.0, noise_multiplier, delta, sample_rate)
    if steps == 0:
        return 0.0
    z = settings.noise_multiplier / (2.0 if replace else 1.0)
    acc = _accountant()
    for _ in range(int(steps)):
        acc.step(noise_multiplier=z, sample_rate=settings.sample_rate)
    return float(acc.get_epsilon(delta=settings.delta))


def epsilon_per_step(settings: DPSettings, steps: Sequence[int] | int, replace: bool = False) -> list[float]:
    """``[ε after n steps for n in steps]`` (an int ``T`` means ``1..T``), :func:`epsilon_after` each.

    Args:
        settings: the job's DP settings.
        steps: step counts, or ``T`` for ``1, …, T``.
        replace: replace adjacency (sensitivity ``2C``).

    Returns:
        The ε values, in the order of `steps`.
    """
    counts = range(1, int(steps) + 1) if isinstance(steps, numbers.Integral) else list(steps)
    return [epsilon_after(n, settings.noise_multiplier, settings.delta, settings.sample_rate, replace) for n in counts]
