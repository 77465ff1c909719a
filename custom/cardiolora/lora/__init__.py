"""Adapters for (transposed) convolutions, LoRA and TenVOO (L and Q), and the model-level helpers of Rate-My-LoRA.

LoRA: ``W = W0 + (alpha / r)·B·A`` for every adapted convolution; sites send the adapter-only
state dict (:func:`lora_state_dict`), the server turns it into full-size deltas with
:func:`adapter_delta_from_state`. See :mod:`cardiolora.lora.layers` for the factorisation of
transposed convolutions, :mod:`cardiolora.lora.model` for the key naming scheme and
:mod:`cardiolora.lora.state` for adapter state dicts without a model.

TenVOO-L / TenVOO-Q (:mod:`cardiolora.lora.tensor`, :mod:`cardiolora.lora.tensor_layer`,
:mod:`cardiolora.lora.tensor_model`):
``W = W0 + T(θ) − T(θ0)`` with a tensor network ``T`` of small cores; sites send the cores
(:func:`tensor_state_dict`), the server turns them into the same kind of full-size deltas with
:func:`tensor_delta_from_state`, redrawing the frozen ``θ0`` from the shared seed.
"""

from __future__ import annotations

from cardiolora.lora.adapters import ADAPTER_TYPES, adapter_modules, base_state_dict, unwrap_key, wrap_key
from cardiolora.lora.layers import (
    BASE,
    LOCAL_SUFFIX,
    LORA_A,
    LORA_B,
    LORA_B_TRANSPOSED,
    SUPPORTED_CONV_TYPES,
    LoRAConv,
    lora_delta,
)
from cardiolora.lora.model import (
    inject_lora,
    load_lora_local_state_dict,
    load_lora_state_dict,
    lora_delta_state_dict,
    lora_local_scalings,
    lora_local_state_dict,
    lora_modules,
    lora_param_count,
    lora_scalings,
    lora_state_dict,
    mark_only_lora_trainable,
    merge_lora,
    reset_lora,
    reset_lora_local,
    unmerge_lora,
)
from cardiolora.lora.state import adapter_delta_from_state, local_delta_from_state, state_bytes
from cardiolora.lora.tensor import (
    TENSOR_CORES,
    TENSOR_CORES_TRANSPOSED,
    TENSOR_VARIANTS,
    balanced_factors,
    tenvoo_l_param_count,
    tenvoo_q_param_count,
)
from cardiolora.lora.tensor_layer import TensorConv
from cardiolora.lora.tensor_model import (
    inject_tensor,
    load_tensor_state_dict,
    mark_only_tensor_trainable,
    merge_tensor,
    reset_tensor,
    tensor_delta_from_state,
    tensor_delta_state_dict,
    tensor_modules,
    tensor_param_count,
    tensor_state_dict,
    unmerge_tensor,
)

__all__ = [
    "ADAPTER_TYPES",
    "BASE",
    "LORA_A",
    "LORA_B",
    "LORA_B_TRANSPOSED",
    "LOCAL_SUFFIX",
    "SUPPORTED_CONV_TYPES",
    "LoRAConv",
    "lora_delta",
    "adapter_delta_from_state",
    "local_delta_from_state",
    "lora_local_state_dict",
    "load_lora_local_state_dict",
    "lora_local_scalings",
    "reset_lora_local",
    "base_state_dict",
    "inject_lora",
    "load_lora_state_dict",
    "lora_delta_state_dict",
    "lora_modules",
    "lora_param_count",
    "lora_scalings",
    "lora_state_dict",
    "mark_only_lora_trainable",
    "merge_lora",
    "reset_lora",
    "state_bytes",
    "unmerge_lora",
    "unwrap_key",
    "wrap_key",
    "adapter_modules",
    "TENSOR_CORES",
    "TENSOR_CORES_TRANSPOSED",
    "TensorConv",
    "balanced_factors",
    "tenvoo_l_param_count",
    "tenvoo_q_param_count",
    "TENSOR_VARIANTS",
    "inject_tensor",
    "load_tensor_state_dict",
    "mark_only_tensor_trainable",
    "merge_tensor",
    "reset_tensor",
    "tensor_delta_from_state",
    "tensor_delta_state_dict",
    "tensor_modules",
    "tensor_param_count",
    "tensor_state_dict",
    "unmerge_tensor",
]
