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

from cardiolora.fl.protocol import is_adapter_key, is_local_adapter_key

__all__ = ["AdapterOnlyFilter", "check_result"]

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
