"""The TenVOO adapter layer: a (transposed) convolution run with ``W + T(θ) − T(θ0)``.

The mathematics (networks, factorisation, initial cores, contraction) is in
:mod:`cardiolora.lora.tensor`; this module holds the ``nn.Module`` that keeps the trainable cores
``θ``, the frozen copy ``θ0`` and the base convolution, as :class:`~cardiolora.lora.layers.LoRAConv`
does for LoRA.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.func import functional_call

from cardiolora.lora.layers import AdapterConv, check_supported
from cardiolora.lora.tensor import (
    TENSOR_CORES,
    TENSOR_CORES_TRANSPOSED,
    check_tensor_rank_seed,
    check_tensor_variant,
    contract_network,
    core_shapes,
    initial_cores,
    tensor_delta,
)

__all__ = ["TensorConv"]


class TensorConv(AdapterConv):
    """A convolution or transposed convolution with a TenVOO adapter: ``W + T(θ) − T(θ0)``.

    The base module is kept as ``self.base`` (keys ``base.weight`` / ``base.bias``, frozen); the
    trainable cores as ``self.tenvoo`` (``self.tenvoo_T`` for a transposed base), an
    ``nn.ParameterDict``; ``θ0`` as non-persistent buffers (not in any state dict: they are rebuilt
    from `seed` and `name`), and ``T(θ0)`` cached as one more non-persistent buffer. At
    construction ``θ = θ0``, so the module computes what the base computes. The forward runs the
    base once with the weight ``W + ΔW`` (the paper's dense form; no dropout).

    Args:
        base: ``nn.Conv2d``, ``nn.Conv3d``, ``nn.ConvTranspose2d`` or ``nn.ConvTranspose3d``;
            ``groups == 1``, ``padding_mode == "zeros"``.
        rank: tensor rank ``r`` ≥ 1.
        seed: the seed of ``θ0`` (the bundle's ``tensor_seed``).
        name: the module's dotted name: part of ``θ0``'s seed and of error messages.
        variant: ``"L"`` (TenVOO-L, default) or ``"Q"`` (TenVOO-Q).

    Raises:
        ValueError: unsupported base (named) or bad `rank` / `seed` / `variant`.

    Example:
        >>> layer = TensorConv(nn.Conv2d(4, 8, 3, padding=1), rank=2)
        >>> x = torch.randn(1, 4, 6, 6)
        >>> torch.allclose(layer(x), layer.base(x))
        True
    """

    def __init__(self, base: nn.Module, rank: int, seed: int = 0, name: str = "module", variant: str = "L") -> None:
        super().__init__()
        check_tensor_rank_seed(rank, seed)
        check_tensor_variant(variant)
        check_supported(base, name, wrapper="TensorConv")
        self.name = name
        self.rank = rank
        self.seed = seed
        self.variant = variant
        self.transposed = isinstance(base, (nn.ConvTranspose2d, nn.ConvTranspose3d))
        self.spatial_dims = base.weight.dim() - 2
        self.merged = False
        self.base = base
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.shapes = core_shapes(base.in_channels, base.out_channels, base.kernel_size, rank, variant)
        self.fan_in = base.weight.shape[1] * math.prod(base.kernel_size)
        factory = {"device": base.weight.device, "dtype": base.weight.dtype}
        cores = nn.ParameterDict([(c, nn.Parameter(torch.empty(s, **factory))) for c, s in self.shapes.items()])
        setattr(self, self.cores_name, cores)
        for c, s in self.shapes.items():
            self.register_buffer(f"theta0_{c}", torch.empty(s, **factory), persistent=False)
        self.register_buffer("frozen_full", torch.empty_like(base.weight), persistent=False)
        self.reset_adapter()

    @property
    def cores_name(self) -> str:
        """Attribute name of the cores: ``"tenvoo_T"`` for a transposed base, else ``"tenvoo"``."""
        return TENSOR_CORES_TRANSPOSED if self.transposed else TENSOR_CORES

    @property
    def cores(self) -> nn.ParameterDict:
        """The trainable cores ``θ``."""
        return getattr(self, self.cores_name)

    def frozen_cores(self) -> dict[str, torch.Tensor]:
        """The initial cores ``θ0`` (buffers)."""
        return {c: getattr(self, f"theta0_{c}") for c in self.shapes}

    def extra_repr(self) -> str:
        return f"variant={self.variant}, rank={self.rank}, seed={self.seed}, merged={self.merged}"

    def delta_weight(self) -> torch.Tensor:
        """``ΔW = T(θ) − T(θ0)`` shaped like ``self.base.weight``, keeping the autograd graph."""
        return tensor_delta(dict(self.cores), self.frozen_full, self.transposed)

    def forward(self, x: torch.Tensor, output_size: Sequence[int] | None = None) -> torch.Tensor:
        """The base with weight ``W + ΔW`` (``W`` alone when merged).

        Args:
            x: input ``[N, C_in, *spatial]``.
            output_size: transposed convolutions only, as in ``nn.ConvTranspose2d.forward``.

        Returns:
            The output of the adapted convolution.

        Raises:
            ValueError: if `output_size` is given for a regular convolution.
        """
        args = self.base_args(x, output_size)
        if self.merged:
            return self.base(*args)
        weight = self.base.weight + self.delta_weight()
        return functional_call(self.base, {"weight": weight}, args)

    def reset_adapter(self, seed: int | None = None) -> None:
        """Redraw ``θ0`` from the seed (optionally a new one), set ``θ ← θ0``: ``ΔW = 0`` again.

        A merged module's update stays folded into ``W`` and the module is unmerged, as
        :meth:`cardiolora.lora.LoRAConv.reset_adapter` does.

        Args:
            seed: a new ``tensor_seed``; ``None`` keeps the current one.

        Raises:
            ValueError: for a bad `seed`.
        """
        if seed is not None:
            check_tensor_rank_seed(self.rank, seed)
            self.seed = seed
        theta0 = initial_cores(self.shapes, self.seed, self.name, self.fan_in, self.rank)
        with torch.no_grad():
            for c, t in theta0.items():
                getattr(self, f"theta0_{c}").copy_(t)
                self.cores[c].copy_(t)
            t0 = contract_network(self.frozen_cores())
            self.frozen_full.copy_(t0.transpose(0, 1) if self.transposed else t0)
        self.merged = False
