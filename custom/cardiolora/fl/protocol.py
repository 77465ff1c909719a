"""The wire protocol of the cardiolora jobs: task names, meta keys, transport dtype, adapter keys.

Tasks (names and payloads) — see :mod:`cardiolora.fl.controller` for the sequence:

* ``init``: down ``W`` (full, once); up ``|D_c|``, ``P_0^c`` and the checksum of the loaded ``W``;
* ``train``: down the previous round's merge instruction (coefficients, scalings; no tensor); up
  the site's adapter, ``|D_c|``, train loss and the checksum of ``W_{t-1}`` after the merge;
* ``validate``: down every accepted adapter + equal-rating coefficients; up ``P_t^c``;
* ``sync``: down ``W`` (full) to a site whose checksum disagreed; up the new checksum;
* ``finalize``: down the last merge; up the checksum of ``W_T`` and the personal adapter;
* ``cross_eval``: down all personal adapters; up the metric tables of every model on the test split.

Transport dtype. Adapters travel (both ways) in the job's ``transport_dtype`` (``float16`` by
default, or ``float32``), which the server names in every task's meta. All mathematics is done in
float32 / float64 on the values as they travelled (:func:`from_transport`), and the site rounds its
*own* adapter with :func:`to_transport` before it uses it anywhere (the reply and its personalised
model), so server and sites compute with the same numbers: ``float32(fp16(x))`` rounded again is
itself, and the merged ``W_t`` stays bit-identical everywhere (checked by the checksum). FLARE's
``ModelQuantizer`` / ``ModelDequantizer`` filters are not used for this: they round after the site
script has answered (the site would keep the unrounded adapter), they restore float32 on the server
(so its downloads would travel in float32 unless a second filter pair were configured on the
task-data side), and their float16 mode clamps out-of-range values silently; here an adapter that
does not fit in float16 is refused with the keys named.

Adapters of several sites travel in one flat params dict keyed ``"<site>/<adapter key>"``
(:func:`pack_adapters` / :func:`unpack_adapters`); only keys that :func:`is_adapter_key` accepts are
shipped: LoRA's ``<module>.lora_A.weight`` / ``<module>.lora_B[_T].weight`` or, for a job with
``adapter: tensor``, TenVOO's trainable cores ``<module>.tenvoo[_T].<core>`` (:data:`TENSOR_CORE_NAMES`;
:func:`adapter_kind` tells the two apart). The local pairs of dual adapters (``dual_lora`` job,
keys ``<module>.lora_*_local.weight``, :func:`is_local_adapter_key`) are never adapter keys of the wire.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from cardiolora.lora.adapters import ADAPTER_TYPES
from cardiolora.lora.tensor import TENSOR_CORES, TENSOR_CORES_TRANSPOSED, TENSOR_VARIANTS, network_labels

__all__ = [
    "Task",
    "Meta",
    "TRANSPORT_DTYPES",
    "DEFAULT_TRANSPORT_DTYPE",
    "check_transport_dtype",
    "to_transport",
    "from_transport",
    "ADAPTER_KEY",
    "ADAPTER_TYPES",
    "TENSOR_CORE_NAMES",
    "TENSOR_KEY",
    "check_adapter_type",
    "LOCAL_ADAPTER_KEY",
    "is_local_adapter_key",
    "is_adapter_key",
    "adapter_kind",
    "pack_adapters",
    "unpack_adapters",
    "payload_bytes",
    "to_numpy",
    "to_torch",
]


class Task:
    """Task names of the Rate-My-LoRA protocol (and ``train`` for FedAvg)."""

    INIT = "init"
    TRAIN = "train"
    VALIDATE = "validate"
    SYNC = "sync"
    FINALIZE = "finalize"
    CROSS_EVAL = "cross_eval"
    ALL = (INIT, TRAIN, VALIDATE, SYNC, FINALIZE, CROSS_EVAL)


class Meta:
    """Keys of FLModel ``meta`` in the protocol."""

    METHOD = "method"  # "rml" (Rate-My-LoRA / FedPETuning) or "fedavg"
    ROUND = "round"
    PROFILE = "profile"
    LOCAL_EPOCHS = "local_epochs"
    RANKS = "ranks"  # {site: r_c}
    MERGE = "merge"  # {"round", "coefficients": {site: a}, "scalings": {site: s}} or None
    COEFFICIENTS = "coefficients"
    SCALINGS = "scalings"
    N_CASES = "n_cases"  # |D_c| (training cases)
    RANK = "rank"
    CHECKSUM = "checksum"  # sha256 of the site's plain W
    STATUS = "status"
    SCORE = "score"  # P^c (mean case Dice on the validation split, `evaluation.mean_case_dice`)
    TRAIN_LOSS = "train_loss"
    TRANSPORT_DTYPE = "transport_dtype"  # dtype adapters travel in ("float16" / "float32")
    DP = "dp"  # {"epsilon", "delta", "steps", ...} of a privatised adapter (cardiolora.fl.privacy)
    ERROR = "error"  # why the site could not do the task (it is then dropped; the reason is in the summary)
    SEED = "seed"  # the job seed the site runs with (`init` answer)
    VERSIONS = "versions"  # {package: version} of the site (`init` answer)
    RESUMED_FROM = "resumed_from"  # `init` of a resumed run: the job id whose saved state the server resumes


#: Dtypes adapters may travel in, by the name a job gives.
TRANSPORT_DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float16": torch.float16}
#: The LoRA jobs' default: half the bytes of float32 (relative rounding error ≤ 2⁻¹¹ per number).
DEFAULT_TRANSPORT_DTYPE = "float16"


def check_transport_dtype(name: object) -> torch.dtype:
    """The torch dtype of a transport dtype name.

    Args:
        name: ``"float16"`` or ``"float32"`` (:data:`TRANSPORT_DTYPES`).

    Returns:
        ``torch.float16`` or ``torch.float32``.

    Raises:
        ValueError: naming `transport_dtype` if `name` is not one of them.

    Example:
        >>> check_transport_dtype("float16")
        torch.float16
    """
    if not isinstance(name, str) or name not in TRANSPORT_DTYPES:
        raise ValueError(f"`transport_dtype` must be one of {sorted(TRANSPORT_DTYPES)}, got {name!r}.")
    return TRANSPORT_DTYPES[name]


def to_transport(state: Mapping[str, Any], transport_dtype: str) -> dict[str, torch.Tensor]:
    """Round every floating tensor of `state` to the transport dtype: ``Q(x) = dtype(x)``.

    Rounding is IEEE round-to-nearest-even; for float16 the relative error of each number is at
    most ``2⁻¹¹`` (numbers below ``2⁻¹⁴ ≈ 6.1e-5`` in magnitude lose relative precision, as
    subnormals). ``Q(float32(Q(x))) = Q(x)``: rounding values that already travelled changes
    nothing, so server and sites can both apply it.

    Args:
        state: ``{key: tensor or array}``.
        transport_dtype: ``"float16"`` or ``"float32"``.

    Returns:
        CPU tensors in the transport dtype (non-floating tensors unchanged).

    Raises:
        ValueError: naming `transport_dtype` if unknown, or the keys whose finite values do not
            fit in the transport dtype (``|x| > 65504`` for float16) or are not finite.

    Example:
        >>> to_transport({"w": torch.tensor([1 / 3])}, "float16")["w"].dtype
        torch.float16
    """
    dtype = check_transport_dtype(transport_dtype)
    out: dict[str, torch.Tensor] = {}
    bad: list[str] = []
    for key, value in state.items():
        t = torch.as_tensor(value).detach().cpu()
        if t.is_floating_point():
            t = t.to(dtype)
            if not torch.isfinite(t).all():
                bad.append(str(key))
        out[key] = t
    if bad:
        raise ValueError(
            f"values of {', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''} are not finite in "
            f"`transport_dtype` {transport_dtype} (float16 holds |x| <= 65504)."
        )
    return out


def from_transport(state: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Float32 CPU copies of received tensors (float16 → float32 is exact), for all mathematics.

    Args:
        state: ``{key: tensor or array}`` as it arrived.

    Returns:
        ``{key: tensor}``: floating tensors as float32, others unchanged (copies).

    Example:
        >>> from_transport({"w": torch.ones(2, dtype=torch.float16)})["w"].dtype
        torch.float32
    """
    out = to_torch(state)
    return {k: v.to(torch.float32) if v.is_floating_point() else v for k, v in out.items()}


#: LoRA keys: ``<module>.lora_A.weight``, ``<module>.lora_B.weight``, ``<module>.lora_B_T.weight``.
ADAPTER_KEY = re.compile(r"^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*\.(lora_A|lora_B|lora_B_T)\.weight$")
#: Every core name of the TenVOO networks (L and Q, 2-D and 3-D), from :mod:`cardiolora.lora.tensor`.
TENSOR_CORE_NAMES = tuple(sorted({c for v in TENSOR_VARIANTS for d in (2, 3) for c in network_labels(d, v)[0]}))
#: Tensor-adapter keys: ``<module>.tenvoo.<core>`` / ``<module>.tenvoo_T.<core>`` with a known core name.
TENSOR_KEY = re.compile(
    r"^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*\."
    rf"({re.escape(TENSOR_CORES)}|{re.escape(TENSOR_CORES_TRANSPOSED)})\.({'|'.join(TENSOR_CORE_NAMES)})$"
)
#: Keys of a dual adapter's *local* pair (Med-DualLoRA): ``<module>.lora_A_local.weight``,
#: ``<module>.lora_B_local.weight``, ``<module>.lora_B_T_local.weight``. Never an adapter key of the
#: wire: a site keeps them, and its filter refuses a result that holds one.
LOCAL_ADAPTER_KEY = re.compile(r"^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*\.(lora_A|lora_B|lora_B_T)_local\.weight$")
_SEP = "/"


def check_adapter_type(name: object) -> str:
    """Check a job's adapter type.

    Args:
        name: ``"lora"`` or ``"tensor"`` (:data:`ADAPTER_TYPES`).

    Returns:
        `name`.

    Raises:
        ValueError: naming `adapter` if `name` is not one of them.
    """
    if not isinstance(name, str) or name not in ADAPTER_TYPES:
        raise ValueError(f"`adapter` must be one of {list(ADAPTER_TYPES)}, got {name!r}.")
    return name


def adapter_kind(key: object) -> str | None:
    """``"lora"`` / ``"tensor"`` for a LoRA / tensor-adapter key, ``None`` for anything else.

    Example:
        >>> adapter_kind("model.0.conv.tenvoo.hub_in"), adapter_kind("model.0.conv.weight")
        ('tensor', None)
    """
    if not isinstance(key, str):
        return None
    if ADAPTER_KEY.match(key):
        return "lora"
    if TENSOR_KEY.match(key):
        return "tensor"
    return None


def is_local_adapter_key(key: object) -> bool:
    """True if `key` names a tensor of a dual adapter's local pair (:data:`LOCAL_ADAPTER_KEY`).

    Example:
        >>> is_local_adapter_key("model.0.conv.lora_B_local.weight"), is_adapter_key("model.0.conv.lora_B_local.weight")
        (True, False)
    """
    return isinstance(key, str) and LOCAL_ADAPTER_KEY.match(key) is not None


def is_adapter_key(key: object) -> bool:
    """True if `key` names an adapter tensor: ``<module>.lora_A.weight`` / ``<module>.lora_B[_T].weight``
    or a TenVOO core ``<module>.tenvoo[_T].<core>`` (:func:`adapter_kind`)."""
    return adapter_kind(key) is not None


def pack_adapters(adapters: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """``{site: {key: t}}`` → ``{"<site>/<key>": t}`` (one flat FLModel params dict).

    Raises:
        ValueError: if a site name contains ``/`` or a key is not an adapter key.
    """
    out = {}
    for site, state in adapters.items():
        if _SEP in site:
            raise ValueError(f"site name {site!r} must not contain {_SEP!r}.")
        for key, value in state.items():
            if not is_adapter_key(key):
                raise ValueError(f"{site}: `{key}` is not an adapter key; only adapters are shipped.")
            out[f"{site}{_SEP}{key}"] = value
    return out


def unpack_adapters(params: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Inverse of :func:`pack_adapters`.

    Raises:
        ValueError: naming keys that are not ``<site>/<adapter key>``.
    """
    out: dict[str, dict[str, Any]] = {}
    bad = []
    for k, v in params.items():
        site, sep, key = str(k).partition(_SEP)
        if not sep or not site or not is_adapter_key(key):
            bad.append(str(k))
            continue
        out.setdefault(site, {})[key] = v
    if bad:
        raise ValueError(
            f"params are not packed adapters (<site>/<module>.lora_*.weight, <site>/<module>.tenvoo[_T].<core>): "
            f"{bad[:5]}."
        )
    return out


def payload_bytes(params: Mapping[str, Any] | None) -> int:
    """Bytes of the tensors in a params dict (``Σ numel · itemsize``; numpy arrays or torch tensors)."""
    total = 0
    for v in (params or {}).values():
        if isinstance(v, torch.Tensor):
            total += v.numel() * v.element_size()
        elif isinstance(v, np.ndarray):
            total += int(v.nbytes)
    return total


def to_numpy(state: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Torch tensors → numpy arrays (what FLARE ships to a server expecting NUMPY)."""
    return {k: v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v) for k, v in state.items()}


def to_torch(state: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Numpy arrays (or tensors) → CPU torch tensors (copies, so later in-place ops are safe)."""
    return {
        k: torch.as_tensor(np.array(v, copy=True)) if not isinstance(v, torch.Tensor) else v.detach().cpu().clone()
        for k, v in state.items()
    }
