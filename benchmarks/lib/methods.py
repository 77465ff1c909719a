"""The methods of the federated comparison (`lib.harness`): what each row is and what runs it.

A method is data, not code: a `MethodSpec` names its runner (``local``, ``federated`` or
``centralised``, `lib.runners`), and a federated method names its FLARE job and the job keyword
arguments that `cardiolora.fl.jobs.build_job` gets beside rounds, profile, sites and seed
(e.g. ``adapter="tensor"``, ``aggregation="rated"``, ``dp_noise_multiplier=1.0``). Adding a row
that varies a job setting is one entry in `METHOD_SPECS`.

A spec whose job or job arguments this installation's ``build_job`` does not know (a job being
built elsewhere) is *unavailable* (`unavailable_reason`): it is left out of the default
``--methods`` and refused, with the reason, when selected.

Differential privacy rows (site-level DP on the adapter updates): each site clips its update to
L2 norm ``C`` (`DP_CLIP`) and adds Gaussian noise ``N(0, (z·C)² I)`` with noise multiplier ``z``
(`DP_NOISE_MULTIPLIERS`); the (ε, δ) spent is the job's accountant's, at ``δ`` = `DP_DELTA`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

__all__ = [
    "DP_CLIP",
    "DP_DELTA",
    "DP_NOISE_MULTIPLIERS",
    "MethodSpec",
    "METHOD_SPECS",
    "method_spec",
    "unavailable_reason",
    "available_methods",
]

#: Clip norm C of a site's adapter update per round (L2 over all its tensors), DP rows. Measured
#: (phantoms, quick, rank 32, `dp_audit.jsonl`): a site's unclipped update has norm ≈ 3.3 over
#: ≈ 105k factor entries. With C = 1 and z = 0.5 the noise (std 0.5 per entry) made every adapter's
#: ‖ΔW‖/‖W‖ 4-36 and the server rejected them all, finalize included (no cross-evaluation, the run
#: stops). C = 0.01 keeps z·C ≤ 0.01 per entry, under the server's ratio bound, at the price of
#: scaling each update by ≈ 0.003: what site-level DP costs with three sites.
DP_CLIP: float = 0.01
#: δ of the (ε, δ) the DP rows report.
DP_DELTA: float = 1e-5
#: Noise multipliers z of the two DP rows (noise std = z·C): ``{row suffix: z}``.
DP_NOISE_MULTIPLIERS: Mapping[str, float] = MappingProxyType({"low": 0.5, "high": 1.0})

RUNNERS = ("local", "federated", "centralised")


@dataclass(frozen=True)
class MethodSpec:
    """One row of the comparison.

    Attributes:
        title: the row's title in the tables and the plot.
        runner: ``local``, ``federated`` or ``centralised`` (`lib.runners`).
        job: the FLARE job (`cardiolora.fl.jobs.JOB_NAMES`) of a federated method, else None.
        job_kwargs: keyword arguments of `cardiolora.fl.jobs.build_job` beside the ones every run
            sets (``num_rounds``, ``profile``, ``n_clients``, ``min_clients``, ``seed``).
    """

    title: str
    runner: str
    job: str | None = None
    job_kwargs: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.runner not in RUNNERS:
            raise ValueError(f"`runner` must be one of {RUNNERS}, got {self.runner!r}.")
        if (self.runner == "federated") != (self.job is not None):
            raise ValueError(f"{self.title}: a `job` is given exactly for the federated runner.")
        if self.job_kwargs and self.runner != "federated":
            raise ValueError(f"{self.title}: `job_kwargs` only apply to a federated method.")
        object.__setattr__(self, "job_kwargs", MappingProxyType(dict(self.job_kwargs)))


def _dp(z: float) -> dict[str, float | bool]:
    # a benchmark is an experiment to reproduce: its noise comes from the job seed, not OS entropy
    return {"dp_clip": DP_CLIP, "dp_noise_multiplier": z, "dp_delta": DP_DELTA, "dp_reproducible_noise": True}


#: Every method, in table order: ``{method key (its folder name): spec}``.
METHOD_SPECS: Mapping[str, MethodSpec] = MappingProxyType(
    {
        "local": MethodSpec("Local only (LoRA)", "local"),
        "fedavg_full": MethodSpec("FedAvg (full weights)", "federated", "fedavg_full"),
        "fedpetuning": MethodSpec("FedPETuning", "federated", "fedpetuning"),
        "rate_my_lora": MethodSpec("Rate-My-LoRA", "federated", "rate_my_lora"),
        "rate_my_lora_tensor": MethodSpec("Rate-My-LoRA (tensor)", "federated", "rate_my_lora", {"adapter": "tensor"}),
        "dual_lora_size": MethodSpec("Med-DualLoRA (size)", "federated", "dual_lora", {"aggregation": "size"}),
        "dual_lora_rated": MethodSpec("Med-DualLoRA (rated)", "federated", "dual_lora", {"aggregation": "rated"}),
        **{
            f"rate_my_lora_dp_{level}": MethodSpec(
                f"Rate-My-LoRA + DP (z = {float(z)!r})", "federated", "rate_my_lora", _dp(z)
            )
            for level, z in DP_NOISE_MULTIPLIERS.items()
        },
        "centralised": MethodSpec("Centralised (upper bound)", "centralised"),
    }
)


def method_spec(method: str) -> MethodSpec:
    """The spec of `method`.

    Raises:
        ValueError: for an unknown method (the known ones are listed).
    """
    try:
        return METHOD_SPECS[method]
    except KeyError:
        raise ValueError(f"`method` {method!r} unknown; known: {list(METHOD_SPECS)}.") from None


def _build_job_parameters(build_job: Callable[..., Any]) -> tuple[set[str], bool]:
    params = inspect.signature(build_job).parameters
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    return set(params), var_kw


def unavailable_reason(
    spec: MethodSpec, job_names: Collection[str] | None = None, build_job: Callable[..., Any] | None = None
) -> str | None:
    """Why `spec` cannot run with this installation of ``cardiolora``, or None when it can.

    Args:
        spec: the method.
        job_names: the jobs there are (default `cardiolora.fl.jobs.JOB_NAMES`).
        build_job: the job builder whose keyword arguments are checked (default
            `cardiolora.fl.jobs.build_job`).

    Returns:
        None, or a sentence naming the missing job or job arguments.
    """
    if spec.runner != "federated":
        return None
    if job_names is None or build_job is None:
        from cardiolora.fl import jobs

        job_names = jobs.JOB_NAMES if job_names is None else job_names
        build_job = jobs.build_job if build_job is None else build_job
    if spec.job not in job_names:
        return f"{spec.title}: there is no FLARE job {spec.job!r} (cardiolora.fl.jobs.JOB_NAMES: {sorted(job_names)})."
    names, var_kw = _build_job_parameters(build_job)
    missing = sorted(k for k in spec.job_kwargs if k not in names)
    if missing and not var_kw:
        return f"{spec.title}: cardiolora.fl.jobs.build_job takes no {', '.join(f'`{k}`' for k in missing)}."
    return None


def available_methods(
    job_names: Collection[str] | None = None, build_job: Callable[..., Any] | None = None
) -> tuple[str, ...]:
    """The methods that can run here (the default ``--methods``), in table order."""
    return tuple(m for m, s in METHOD_SPECS.items() if unavailable_reason(s, job_names, build_job) is None)
