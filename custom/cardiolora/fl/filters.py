"""The site's task-result filter: only adapter tensors, counts and scalar metrics leave a site.

:class:`AdapterOnlyFilter` runs in the FLARE client after the Client API script answered a task
and before the answer is sent (``task_result_filters`` of the client app). It passes a result
only if

* its tensors (a ``WEIGHTS`` / ``WEIGHT_DIFF`` DXO) are all adapter keys and floating-point
  arrays: LoRA's ``<module>.lora_A.weight``, ``<module>.lora_B.weight``, ``<module>.lora_B_T.weight``,
  or the trainable TenVOO cores ``<module>.tenvoo.<core>`` / ``<module>.tenvoo_T.<core>`` of a job
  with ``adapter: tensor`` (:func:`cardiolora.fl.protocol.is_adapter_key`; a base weight, a frozen
  or unknown core, anything else is refused). In the ``dual_lora`` job this is what keeps the
  local adapters at the site: a local pair's key (``<module>.lora_A_local.weight``,
  ``<module>.lora_B[_T]_local.weight``) is refused with its own reason, so only global pairs travel;
* its metrics (a ``METRICS`` DXO) and its meta hold nothing but numbers, booleans, None, short
  strings and lists / dicts of those (no array, tensor or bytes can hide there);
* it is no other kind of DXO.

Anything else is blocked: the reason is logged, the site's audit file records it, and FLARE sends
the server a ``TASK_RESULT_FILTER_ERROR`` instead of the data. Every outgoing result — passed or
blocked — is appended to ``<site run folder>/outgoing_audit.jsonl`` (task, keys, shapes, bytes,
decision), so a site's administrator can see exactly what left.

The ``fedavg_full`` job (the paper's † baseline) sends full weights by design and does not use
this filter.

:class:`AdapterDPFilter` (optional, only in a job with ``dp_clip`` / ``dp_noise_multiplier``) runs
before it in the same chain and privatises the adapter of every ``train`` and ``finalize`` result:
the update relative to the round's start is clipped to ``C`` and Gaussian noise ``N(0, (zC)²)`` is
added per coordinate (:mod:`cardiolora.fl.privacy`); the result's meta gains ``dp`` (``ε``, ``δ``,
steps, ``z``, ``C``, the noise source) for the server's records. Its own audit (``dp_audit.jsonl``, never sent) holds
the update's norm before clipping.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from nvflare.apis.dxo import DataKind, from_shareable
from nvflare.apis.filter import ContentBlockedException, Filter
from nvflare.apis.fl_constant import FLContextKey, ReturnCode
from nvflare.apis.fl_context import FLContext
from nvflare.apis.shareable import ReservedHeaderKey, Shareable
from nvflare.app_common.app_constant import AppConstants
from torch import nn

from cardiolora.fl import privacy
from cardiolora.fl.network import bundle_network
from cardiolora.fl.protocol import (
    Meta,
    Task,
    check_adapter_type,
    is_adapter_key,
    is_local_adapter_key,
    to_numpy,
    to_torch,
)
from cardiolora.fl.seeds import DEFAULT_SEED, check_seed, round_seed
from cardiolora.lora import lora_state_dict, reset_lora, reset_tensor, tensor_state_dict

__all__ = ["AdapterOnlyFilter", "AdapterDPFilter", "check_result", "round_start_adapter"]

_SCALARS = (int, float, bool, type(None))


def _scalar_tree(obj: Any, where: str, max_string: int, depth: int = 0) -> list[str]:
    """Reasons why `obj` is not a tree of scalars and short strings (empty list if it is)."""
    if depth > 8:
        return [f"{where}: nested deeper than 8 levels"]
    if isinstance(obj, _SCALARS) or isinstance(obj, (np.integer, np.floating, np.bool_)):
        return []
    if isinstance(obj, str):
        return [] if len(obj) <= max_string else [f"{where}: a string of {len(obj)} characters (max {max_string})"]
    if isinstance(obj, Mapping):
        out = []
        for k, v in obj.items():
            if not isinstance(k, str):
                out.append(f"{where}: a non-string key {k!r}")
            out.extend(_scalar_tree(v, f"{where}.{k}", max_string, depth + 1))
        return out
    if isinstance(obj, (list, tuple)):
        out = []
        for i, v in enumerate(obj):
            out.extend(_scalar_tree(v, f"{where}[{i}]", max_string, depth + 1))
        return out
    return [f"{where}: a {type(obj).__name__} (only numbers, booleans, None and short strings may leave)"]


def _describe(value: Any) -> tuple[list[int] | None, str, int]:
    if isinstance(value, torch.Tensor):
        return list(value.shape), str(value.dtype), value.numel() * value.element_size()
    if isinstance(value, np.ndarray):
        return list(value.shape), str(value.dtype), int(value.nbytes)
    return None, type(value).__name__, 0


def check_result(
    data_kind: str, data: Any, meta: Mapping[str, Any] | None, max_string: int = 2000
) -> tuple[list[str], dict]:
    """Check one outgoing DXO; return (reasons to block — empty to pass, description for the audit).

    Args:
        data_kind: the DXO's data kind.
        data: the DXO's data.
        meta: the DXO's meta.
        max_string: longest string allowed in metrics and meta.

    Returns:
        ``(reasons, description)`` with ``description = {"data_kind", "tensors": {key: [shape, dtype]}, "bytes"}``.
    """
    reasons: list[str] = []
    desc: dict[str, Any] = {"data_kind": data_kind, "tensors": {}, "bytes": 0}
    if data_kind in (DataKind.WEIGHTS, DataKind.WEIGHT_DIFF):
        if not isinstance(data, Mapping):
            reasons.append(f"params are a {type(data).__name__}, expected a dict of adapter tensors")
        else:
            for key, value in data.items():
                shape, dtype, nbytes = _describe(value)
                desc["tensors"][str(key)] = [shape, dtype]
                desc["bytes"] += nbytes
                if is_local_adapter_key(key):
                    reasons.append(
                        f"`{key}` is a local adapter (Med-DualLoRA): local adapters stay at the site, only "
                        "global ones may leave"
                    )
                elif not is_adapter_key(key):
                    reasons.append(
                        f"`{key}` is not an adapter key (<module>.lora_A.weight / <module>.lora_B[_T].weight / "
                        "<module>.tenvoo[_T].<core>)"
                    )
                elif shape is None:
                    reasons.append(f"`{key}` is a {dtype}, expected a tensor")
                elif not ("float" in dtype or "bfloat" in dtype):
                    reasons.append(f"`{key}` has dtype {dtype}, expected floating point")
    elif data_kind == DataKind.METRICS:
        reasons.extend(_scalar_tree(data, "metrics", max_string))
    else:
        reasons.append(f"a `{data_kind}` DXO; only adapter weights and metrics may leave the site")
    reasons.extend(_scalar_tree(dict(meta or {}), "meta", max_string))
    return reasons, desc


class AdapterOnlyFilter(Filter):
    """Task-result filter of the adapter jobs' sites (see the module docstring).

    Args:
        audit_file: file name of the audit log in the site's run folder ("" to keep none).
        max_string: longest string allowed in metrics and meta.
    """

    def __init__(self, audit_file: str = "outgoing_audit.jsonl", max_string: int = 2000) -> None:
        super().__init__()
        self.audit_file = audit_file
        self.max_string = max_string

    def _audit(self, fl_ctx: FLContext, record: dict) -> None:
        if not self.audit_file:
            return
        try:
            ws = fl_ctx.get_engine().get_workspace()
            path = Path(ws.get_run_dir(fl_ctx.get_job_id())) / self.audit_file
            with open(path, "a") as fh:
                fh.write(json.dumps(record) + "\n")
        except Exception as err:  # the audit must not change what the filter decides
            self.log_warning(fl_ctx, f"could not write the audit record: {err}")

    def process(self, shareable: Shareable, fl_ctx: FLContext) -> Shareable:
        task = fl_ctx.get_prop(FLContextKey.TASK_NAME, "")
        record: dict[str, Any] = {"time": time.time(), "task": task, "site": fl_ctx.get_identity_name()}
        rc = shareable.get_return_code(ReturnCode.OK)
        payload = [k for k in shareable if k != ReservedHeaderKey.HEADERS]
        if rc != ReturnCode.OK and not payload:  # an error reply: headers only, nothing to leak
            record.update({"decision": "passed", "return_code": rc, "tensors": {}, "bytes": 0})
            self._audit(fl_ctx, record)
            return shareable
        try:
            dxo = from_shareable(shareable)
        except Exception as err:
            reasons, desc = [f"the result holds no readable DXO ({err})"], {"tensors": {}, "bytes": 0}
        else:
            reasons, desc = check_result(dxo.data_kind, dxo.data, dxo.meta, self.max_string)
        record.update(desc)
        record["decision"] = "blocked" if reasons else "passed"
        if reasons:
            record["reasons"] = reasons
        self._audit(fl_ctx, record)
        if reasons:
            msg = f"result of task `{task}` blocked: " + "; ".join(reasons[:10])
            self.log_error(fl_ctx, msg)
            raise ContentBlockedException(msg)
        return shareable


def round_start_adapter(net: nn.Module, adapter: str, seed: int) -> dict[str, torch.Tensor]:
    """The adapter a site starts a round from (``x_0``), as :class:`~cardiolora.fl.site_backend.BundleBackend`
    resets it.

    ``torch.manual_seed(seed)`` then :func:`cardiolora.lora.reset_lora` (``A_0`` Kaiming-uniform,
    ``B_0 = 0``) or :func:`cardiolora.lora.reset_tensor` (``θ_0`` from the bundle's ``tensor_seed``),
    inside :func:`torch.random.fork_rng` so the caller's random state is untouched. It depends on
    public job settings only (the network of profile and rank, the round's seed).

    Args:
        net: the bundle network with adapters at the site's rank (:func:`cardiolora.fl.network.bundle_network`).
        adapter: ``"lora"`` or ``"tensor"``.
        seed: the round's torch seed (:func:`cardiolora.fl.seeds.round_seed` of job seed, site, round).

    Returns:
        The adapter-only state dict (float32 copies).

    Raises:
        ValueError: for an unknown `adapter` or a network without adapters of that kind.
    """
    tensor = check_adapter_type(adapter) == "tensor"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        (reset_tensor if tensor else reset_lora)(net)
        state = (tensor_state_dict if tensor else lora_state_dict)(net)
    return {k: v.detach().cpu().to(torch.float32).clone() for k, v in state.items()}


class AdapterDPFilter(Filter):
    """Site-level DP of the adapters a site sends (``train``, ``finalize``); see :mod:`cardiolora.fl.privacy`.

    For a result of ``train`` (round ``t``) or ``finalize`` (round ``T``) with rank ``r`` (result meta
    ``rank``): ``x_0`` = :func:`round_start_adapter` of the bundle network at ``r`` and the round's
    seed; the sent tensors become ``x_0 + clip_C(x − x_0) + N(0, (zC)² I)`` in their dtype
    (:func:`cardiolora.fl.privacy.privatize`), the noise drawn from
    OS entropy (`secure_rng`, the default) or, for reproducible experiments only, from
    :func:`cardiolora.fl.privacy.noise_seed` (job seed, site, round, task: not private against
    anyone who knows the job seed). The meta gains ``dp = {"epsilon", "epsilon_replace", "delta", "steps",
    "noise_multiplier", "clip", "sample_rate", "noise"}``, ``ε`` from Opacus's RDP accountant after ``steps``
    releases: the larger of the releases this filter made in this job and the count a full run has
    made by then (``t`` in round ``t``, ``T + 1`` at ``finalize``), so a site restarted by a resumed job
    does not count from zero. Results of other tasks pass unchanged. Anything that goes wrong blocks
    the result (no adapter leaves unprivatised). The round comes from the result's ``current_round``
    header (the site script sets it, :func:`cardiolora.fl.client.main`).

    Args:
        profile: run profile (the network whose adapter starts the round).
        adapter: ``"lora"`` or ``"tensor"``.
        seed: the job seed (as the sites' ``--seed``).
        clip: ``C`` > 0.
        noise_multiplier: ``z`` > 0.
        delta: ``δ`` of the reported ``ε``.
        sample_rate: ``q`` of the accountant (1: every site in every round).
        secure_rng: draw the noise seed from OS entropy (default; not reproducible); False: from the
            job seed (reproducible runs; the record's ``noise`` says ``job-seed``).
        audit_file: the filter's own log in the site's run folder (norms before clipping; never sent).

    Raises:
        ValueError: naming the argument that is out of range.
    """

    #: Written into the exported job even when equal to the default, so the job file says them.
    _always_serialize_args = ("profile", "adapter", "seed", "clip", "noise_multiplier", "delta", "secure_rng")

    def __init__(
        self,
        profile: str = "quick",
        adapter: str = "lora",
        seed: int = DEFAULT_SEED,
        clip: float = 1.0,
        noise_multiplier: float = 1.0,
        delta: float = privacy.DEFAULT_DELTA,
        sample_rate: float = privacy.DEFAULT_SAMPLE_RATE,
        secure_rng: bool = True,
        audit_file: str = "dp_audit.jsonl",
    ) -> None:
        super().__init__()
        self.profile = profile
        self.adapter = check_adapter_type(adapter)
        self.seed = check_seed(seed)
        self.settings = privacy.dp_settings(clip, noise_multiplier, delta, sample_rate)
        self.clip, self.noise_multiplier, self.delta, self.sample_rate = clip, noise_multiplier, delta, sample_rate
        if not isinstance(secure_rng, bool):
            raise ValueError(f"`secure_rng` must be true or false, got {secure_rng!r}.")
        self.secure_rng = secure_rng
        self.noise = privacy.noise_source(not secure_rng)
        self.audit_file = audit_file
        self._nets: dict[int, nn.Module] = {}
        self._steps: dict[str, int] = {}

    def _network(self, rank: int) -> nn.Module:
        if rank not in self._nets:
            with torch.random.fork_rng(devices=[]):
                self._nets[rank] = bundle_network(self.profile, rank, self.adapter)
        return self._nets[rank]

    def privatize_result(
        self, site: str, task: str, round_index: int, rank: int, data: Mapping[str, Any]
    ) -> tuple[dict[str, np.ndarray], dict, dict]:
        """Privatise one adapter: ``(noisy arrays, the meta's dp record, the local audit record)``.

        Args:
            site: the site's name.
            task: ``"train"`` or ``"finalize"``.
            round_index: the round of the task.
            rank: the site's rank.
            data: the adapter tensors as the site would send them.

        Returns:
            The arrays to send (keys, shapes, dtypes of `data`), ``meta["dp"]`` and the audit record.

        Raises:
            ValueError: for an adapter that does not match the network at `rank`, or noise that
                does not fit the dtype.
        """
        reference = round_start_adapter(self._network(rank), self.adapter, round_seed(self.seed, site, round_index))
        seed = None if self.secure_rng else privacy.noise_seed(self.seed, site, round_index, task)
        noisy, info = privacy.privatize(to_torch(data), reference, self.settings, privacy.noise_generator(seed))
        self._steps[site] = self._steps.get(site, 0) + 1
        steps = max(self._steps[site], round_index + (1 if task == Task.FINALIZE else 0))
        s = self.settings
        eps = privacy.epsilon_after(steps, s.noise_multiplier, s.delta, s.sample_rate)
        eps_replace = privacy.epsilon_after(steps, s.noise_multiplier, s.delta, s.sample_rate, replace=True)
        record = {
            "epsilon": eps,
            "epsilon_replace": eps_replace,
            "delta": s.delta,
            "steps": steps,
            "noise_multiplier": s.noise_multiplier,
            "clip": s.clip,
            "sample_rate": s.sample_rate,
            "noise": self.noise,
        }
        audit = {
            **record,
            "site": site,
            "task": task,
            "round": round_index,
            "rank": rank,
            "norm": info["norm"],
            "clip_factor": info["clip_factor"],
            "reference_norm": privacy.update_norm(reference),
            "secure_rng": self.secure_rng,
        }
        return to_numpy(noisy), record, audit

    def _audit(self, fl_ctx: FLContext, record: dict) -> None:
        if not self.audit_file:
            return
        try:
            ws = fl_ctx.get_engine().get_workspace()
            path = Path(ws.get_run_dir(fl_ctx.get_job_id())) / self.audit_file
            with open(path, "a") as fh:
                fh.write(json.dumps({"time": time.time(), **record}) + "\n")
        except Exception as err:  # the log must not change what leaves
            self.log_warning(fl_ctx, f"could not write the DP audit record: {err}")

    def process(self, shareable: Shareable, fl_ctx: FLContext) -> Shareable:
        task = fl_ctx.get_prop(FLContextKey.TASK_NAME, "")
        if task not in (Task.TRAIN, Task.FINALIZE) or shareable.get_return_code(ReturnCode.OK) != ReturnCode.OK:
            return shareable
        site = fl_ctx.get_identity_name()
        try:
            dxo = from_shareable(shareable)
            if dxo.data_kind not in (DataKind.WEIGHTS, DataKind.WEIGHT_DIFF):
                return shareable  # no adapter in it (AdapterOnlyFilter judges the rest)
            round_index = shareable.get_header(AppConstants.CURRENT_ROUND)
            if isinstance(round_index, bool) or not isinstance(round_index, int):
                raise ValueError(f"the result has no `current_round` header (got {round_index!r})")
            rank = (dxo.meta or {}).get(Meta.RANK)
            if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
                raise ValueError(f"the result's meta `rank` is {rank!r}, expected an int >= 1")
            data, record, audit = self.privatize_result(site, task, round_index, rank, dxo.data)
        except Exception as err:
            msg = f"DP filter: result of task `{task}` blocked: {err}"
            self.log_error(fl_ctx, msg)
            raise ContentBlockedException(msg) from err
        dxo.data = data
        dxo.meta[Meta.DP] = record
        self._audit(fl_ctx, audit)
        self.log_info(
            fl_ctx,
            f"DP: {task} round {round_index}: clipped to C = {self.settings.clip}, noise z = "
            f"{self.settings.noise_multiplier}; ε = {record['epsilon']:.4g} at δ = {self.settings.delta} after "
            f"{record['steps']} release(s)",
        )
        return dxo.update_shareable(shareable)
