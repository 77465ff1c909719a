"""LoRA adapters for (transposed) convolutions and the model-level helpers of Rate-My-LoRA.

``W = W0 + (alpha / r)·B·A`` for every adapted convolution; sites send the adapter-only state dict
(:func:`lora_state_dict`), the server turns it into full-size deltas with
:func:`adapter_delta_from_state`. See :mod:`cardiolora.lora.layers` for the factorisation of
transposed convolutions, :mod:`cardiolora.lora.model` for the key naming scheme and
:mod:`cardiolora.lora.state` for adapter state dicts without a model.
"""

from __future__ import annotations

from cardiolora.lora.layers import (
    BASE,
    LORA_A,
    LORA_B,
    LORA_B_TRANSPOSED,
    SUPPORTED_CONV_TYPES,
    LoRAConv,
    lora_delta,
)
from cardiolora.lora.model import (
    base_state_dict,
    inject_lora,
    load_lora_state_dict,
    lora_delta_state_dict,
    lora_modules,
    lora_param_count,
    lora_scalings,
    lora_state_dict,
    mark_only_lora_trainable,
    merge_lora,
    reset_lora,
    unmerge_lora,
    unwrap_key,
    wrap_key,
)
from cardiolora.lora.state import adapter_delta_from_state, state_bytes

__all__ = [
    "BASE",
    "LORA_A",
    "LORA_B",
    "LORA_B_TRANSPOSED",
    "SUPPORTED_CONV_TYPES",
    "LoRAConv",
    "lora_delta",
    "adapter_delta_from_state",
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
]
