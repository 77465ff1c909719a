"""LoRA adapters for convolutions and transposed convolutions (Rate-My-LoRA, He et al. 2025).

Every adapted convolution computes with the weight ``W = W0 + (alpha / r) * B·A``: ``W0`` is
the frozen base weight, ``A`` a convolution of the base's type and geometry that maps the input
channels to ``r`` channels, and ``B`` a 1×1(×1) regular convolution from ``r`` channels to the
output channels. The model of the API is PEFT's ``tuners/lora/layer.py``; unlike PEFT, the
transposed convolutions that MONAI's U-Net upsamples with are covered too.

Why the factorisation is exact (no bias in A or B, same geometry in A as in the base):

*Convolution* (weight layout ``[out, in, *k]``). A has weight ``A[r, in, *k]`` and
``z[r] = Σ_{in,k} A[r, in, k] · x[in, p + k]``; B has weight ``B[out, r, 1..]`` and maps
``y[out] = Σ_r B[out, r] · z[r]`` pointwise, so
``ΔW[out, in, k] = Σ_r B[out, r] · A[r, in, k]``.

*Transposed convolution* (weight layout ``[in, out, *k]``). Its output is
``y[out, q] = Σ_{in,k} W[in, out, k] · x[in, p]`` summed over the (p, k) with
``q = p·stride - padding + k·dilation`` (plus ``output_padding`` on the far border). A is a
transposed convolution ``in → r`` with the base's kernel, stride, padding, dilation and
output_padding, weight ``A[in, r, *k]``, so ``z[r, q] = Σ_{in,k} A[in, r, k] · x[in, p]`` over
the same (p, k) pairs and on the same output grid. B is pointwise, hence

    y[out, q] = Σ_r B[out, r] · z[r, q] = Σ_{in,k} (Σ_r A[in, r, k] · B[out, r]) · x[in, p]

which is a transposed convolution with ``ΔW[in, out, k] = Σ_r A[in, r, k] · B[out, r]`` in the
base's own layout. Both deltas are computed by :func:`lora_delta`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

__all__ = [
    "SUPPORTED_CONV_TYPES",
    "LORA_A",
    "LORA_A_TRANSPOSED",
    "LORA_B",
    "BASE",
    "LoRAConv",
    "lora_delta",
    "check_rank_alpha_dropout",
    "check_supported",
]

#: Base module types a :class:`LoRAConv` can wrap.
SUPPORTED_CONV_TYPES: tuple[type[nn.Module], ...] = (
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)

#: Attribute (and state-dict key part) of the down-projection A of a regular convolution.
LORA_A = "lora_A"
#: Attribute of the down-projection A of a *transposed* convolution. A different name, because its
#: weight ``[in, r, *k]`` cannot be told from a convolution's ``[r, in, *k]`` by shape alone when
#: ``in == r``; the key therefore carries the kind to a server that has A and B but no model.
LORA_A_TRANSPOSED = "lora_A_T"
#: Attribute of the up-projection B (a 1×1(×1) regular convolution in both cases).
LORA_B = "lora_B"
#: Attribute under which the wrapper keeps the base convolution (``<name>.base.weight``).
BASE = "base"

_POINTWISE_CONV: dict[int, type[nn.Module]] = {2: nn.Conv2d, 3: nn.Conv3d}


def check_rank_alpha_dropout(rank: int, alpha: float | None, dropout: float) -> float:
    """Validate the LoRA hyper-parameters and return the effective ``alpha``.

    Args:
        rank: adapter rank ``r``; an ``int`` ≥ 1 (``bool`` is refused).
        alpha: LoRA ``alpha`` > 0 and finite, or ``None`` for ``alpha = rank`` (scaling 1).
        dropout: probability in ``[0, 1)`` of the dropout on the adapter input.

    Returns:
        The effective ``alpha`` as a float.

    Raises:
        ValueError: naming `rank`, `alpha` or `dropout` when it is out of range.

    Example:
        >>> check_rank_alpha_dropout(8, None, 0.0)
        8.0
    """
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"`rank` must be an int >= 1, got {rank!r}.")
    if alpha is None:
        alpha = float(rank)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha <= 0:
        raise ValueError(f"`alpha` must be a finite number > 0 (or None for alpha = rank), got {alpha!r}.")
    if (
        isinstance(dropout, bool)
        or not isinstance(dropout, (int, float))
        or not math.isfinite(dropout)
        or not 0.0 <= dropout < 1.0
    ):
        raise ValueError(f"`dropout` must be a probability in [0, 1), got {dropout!r}.")
    return float(alpha)


def check_supported(module: nn.Module, name: str = "module") -> None:
    """Check that :class:`LoRAConv` can wrap `module`, without touching it.

    Args:
        module: the candidate base module.
        name: what to call it in the error message (its dotted name in the model).

    Raises:
        ValueError: naming the module, if it is not one of :data:`SUPPORTED_CONV_TYPES`, has
            ``groups != 1``, ``padding_mode != "zeros"`` or an uninitialised (lazy) weight.

    Example:
        >>> check_supported(nn.Conv2d(4, 4, 3, groups=2), "enc.conv")
        Traceback (most recent call last):
            ...
        ValueError: `enc.conv` has groups=2; LoRAConv supports only groups=1.
    """
    if not isinstance(module, SUPPORTED_CONV_TYPES):
        supported = ", ".join(t.__name__ for t in SUPPORTED_CONV_TYPES)
        raise ValueError(f"`{name}` is a {type(module).__name__}; LoRAConv supports only {supported}.")
    if isinstance(module.weight, nn.parameter.UninitializedParameter):
        raise ValueError(f"`{name}` has an uninitialised (lazy) weight; run a forward pass first.")
    if module.groups != 1:
        raise ValueError(f"`{name}` has groups={module.groups}; LoRAConv supports only groups=1.")
    if module.padding_mode != "zeros":
        raise ValueError(f"`{name}` has padding_mode={module.padding_mode!r}; LoRAConv supports only 'zeros'.")


def lora_delta(a: torch.Tensor, b: torch.Tensor, scaling: float, transposed: bool) -> torch.Tensor:
    """Full-size weight delta of one adapter from its A and B weights.

    Convolution: ``ΔW[o, i, k] = scaling · Σ_r B[o, r] · A[r, i, k]`` (A ``[r, in, *k]``).
    Transposed convolution: ``ΔW[i, o, k] = scaling · Σ_r A[i, r, k] · B[o, r]`` (A ``[in, r, *k]``).
    B is ``[out, r, 1, ..]`` in both cases. The result has the base weight's layout.

    Args:
        a: weight of A, 4-D (2-D conv) or 5-D (3-D conv).
        b: weight of B, same number of dimensions as `a`, spatial sizes all 1.
        scaling: ``alpha / r``.
        transposed: True when `a` is in the transposed-convolution layout ``[in, r, *k]``.

    Returns:
        ΔW with shape ``[out, in, *k]`` (conv) or ``[in, out, *k]`` (transposed conv).

    Raises:
        ValueError: if the shapes of `a` and `b` do not form an adapter (the message gives both).

    Example:
        >>> a, b = torch.ones(2, 3, 3, 3), torch.ones(5, 2, 1, 1)
        >>> lora_delta(a, b, 0.5, transposed=False).shape
        torch.Size([5, 3, 3, 3])
    """
    rank = a.shape[1] if transposed else a.shape[0]
    if a.dim() not in (4, 5) or b.dim() != a.dim() or b.shape[1] != rank or any(s != 1 for s in b.shape[2:]):
        layout = "[in, r, *k]" if transposed else "[r, in, *k]"
        raise ValueError(
            f"`a` {tuple(a.shape)} (layout {layout}) and `b` {tuple(b.shape)} (layout [out, r, 1, ..]) "
            "do not form a LoRA adapter."
        )
    b2 = b.flatten(1)  # [out, r]
    if transposed:
        delta = torch.einsum("irk,or->iok", a.flatten(2), b2).reshape(a.shape[0], b.shape[0], *a.shape[2:])
    else:
        delta = (b2 @ a.flatten(1)).reshape(b.shape[0], *a.shape[1:])
    return delta * scaling


class LoRAConv(nn.Module):
    """A convolution or transposed convolution with a LoRA adapter: ``W = W0 + (alpha / r)·B·A``.

    The base module is kept as ``self.base`` (state-dict keys ``base.weight``, ``base.bias``), the
    adapter as ``self.lora_A`` (regular conv) or ``self.lora_A_T`` (transposed conv) and
    ``self.lora_B``; see the module docstring for why the factorisation is exact for both kinds.
    The base parameters are frozen (``requires_grad=False``). At construction A is kaiming-uniform
    (``a=sqrt(5)``) and B zero, so the module computes exactly what the base computes.

    Args:
        base: the ``nn.Conv2d``, ``nn.Conv3d``, ``nn.ConvTranspose2d`` or ``nn.ConvTranspose3d`` to
            adapt; ``groups == 1`` and ``padding_mode == "zeros"``.
        rank: adapter rank ``r``, an int ≥ 1.
        alpha: LoRA alpha > 0; ``None`` means ``alpha = rank`` (scaling 1).
        dropout: dropout probability in ``[0, 1)`` applied to the adapter's input only.
        name: what to call the module in error messages (its dotted name in the model).

    Raises:
        ValueError: for an unsupported module type, ``groups != 1``, ``padding_mode != "zeros"``
            or an uninitialised (lazy) weight, naming the module; for a bad `rank`, `alpha` or
            `dropout`, naming the argument.

    Example:
        >>> layer = LoRAConv(nn.Conv2d(3, 8, 3, padding=1), rank=2)
        >>> x = torch.randn(1, 3, 6, 6)
        >>> torch.equal(layer(x), layer.base(x))
        True
    """

    def __init__(
        self,
        base: nn.Module,
        rank: int,
        alpha: float | None = None,
        dropout: float = 0.0,
        name: str = "module",
    ) -> None:
        super().__init__()
        alpha = check_rank_alpha_dropout(rank, alpha, dropout)
        check_supported(base, name)
        self.name = name
        self.rank = rank
        self.alpha = alpha
        self.scaling = alpha / rank
        self.transposed = isinstance(base, (nn.ConvTranspose2d, nn.ConvTranspose3d))
        self.merged = False

        self.base = base
        for p in self.base.parameters():
            p.requires_grad_(False)
        factory = {"device": base.weight.device, "dtype": base.weight.dtype}
        geometry = {
            "kernel_size": base.kernel_size,
            "stride": base.stride,
            "padding": base.padding,
            "dilation": base.dilation,
            "bias": False,
        }
        if self.transposed:
            geometry["output_padding"] = base.output_padding
        # the plain torch type, not type(base): a subclass may have another constructor
        conv_type = next(t for t in SUPPORTED_CONV_TYPES if isinstance(base, t))
        lora_a = conv_type(base.in_channels, rank, **geometry, **factory)
        spatial_dims = base.weight.dim() - 2
        lora_b = _POINTWISE_CONV[spatial_dims](rank, base.out_channels, kernel_size=1, bias=False, **factory)
        setattr(self, self.a_name, lora_a)
        self.lora_B = lora_b
        self.lora_dropout: nn.Module = nn.Dropout(p=dropout) if dropout > 0 else nn.Identity()
        self.reset_adapter()

    @property
    def a_name(self) -> str:
        """Attribute name of A: ``"lora_A_T"`` for a transposed base, else ``"lora_A"``."""
        return LORA_A_TRANSPOSED if self.transposed else LORA_A

    @property
    def lora_a(self) -> nn.Module:
        """The down-projection A, whichever attribute name it has."""
        return getattr(self, self.a_name)

    def extra_repr(self) -> str:
        return f"rank={self.rank}, alpha={self.alpha}, scaling={self.scaling}, merged={self.merged}"

    def forward(self, x: torch.Tensor, output_size: Sequence[int] | None = None) -> torch.Tensor:
        """``base(x) + scaling · B(A(dropout(x)))``, or ``base(x)`` when merged.

        Args:
            x: input ``[N, in, *spatial]``.
            output_size: transposed convolutions only, as in ``nn.ConvTranspose2d.forward``.

        Returns:
            The output of the adapted convolution.

        Raises:
            ValueError: if `output_size` is given for a regular convolution.
        """
        if output_size is not None and not self.transposed:
            raise ValueError(f"`output_size` is only valid for transposed convolutions (`{self.name}`).")
        if self.transposed:
            y = self.base(x, output_size)
        else:
            y = self.base(x)
        if self.merged:
            return y
        h = self.lora_dropout(x)
        h = self.lora_a(h, output_size) if self.transposed else self.lora_a(h)
        return y + self.lora_B(h) * self.scaling

    def delta_weight(self) -> torch.Tensor:
        """The full-size ``ΔW = (alpha / r) · B·A`` in the base weight's layout and shape.

        Conv: ``ΔW[o, i, k] = s · Σ_r B[o, r] · A[r, i, k]``, shape ``[out, in, *k]``;
        transposed conv: ``ΔW[i, o, k] = s · Σ_r A[i, r, k] · B[o, r]``, shape ``[in, out, *k]``,
        with ``s = alpha / r``. The result keeps the autograd graph (detach it to store it).

        Returns:
            A tensor shaped like ``self.base.weight``.
        """
        return lora_delta(self.lora_a.weight, self.lora_B.weight, self.scaling, self.transposed)

    def merged_weight(self) -> torch.Tensor:
        """``W0 + ΔW`` as a new tensor (nothing is modified).

        Returns:
            A detached tensor shaped like ``self.base.weight``.
        """
        with torch.no_grad():
            return self.base.weight + self.delta_weight()

    def merge(self, safe: bool = True) -> None:
        """Fold the adapter into the base weight: ``W0 ← W0 + ΔW``; the forward then uses the base only.

        Args:
            safe: compute ``W0 + ΔW`` into a new tensor first and refuse it if it is not finite,
                leaving the weights untouched.

        Raises:
            ValueError: if already merged, or (`safe`) if the merged weight is not finite; both name
                the module.
        """
        if self.merged:
            raise ValueError(f"`{self.name}` is already merged; unmerge it first.")
        with torch.no_grad():
            if safe:
                merged = self.merged_weight()
                if not torch.isfinite(merged).all():
                    raise ValueError(
                        f"`{self.name}`: merging the adapter gives non-finite weights; weights left unchanged."
                    )
                self.base.weight.copy_(merged)
            else:
                self.base.weight.add_(self.delta_weight())
        self.merged = True

    def unmerge(self) -> None:
        """Take the adapter back out of the base weight: ``W0 ← W0 - ΔW``.

        ``(W0 + ΔW) - ΔW`` equals ``W0`` up to one rounding of ``|W0| + |ΔW|`` (about 1e-7
        relative in fp32), so do not retrain A or B while merged.

        Raises:
            ValueError: if the module is not merged (naming it).
        """
        if not self.merged:
            raise ValueError(f"`{self.name}` is not merged; nothing to unmerge.")
        with torch.no_grad():
            self.base.weight.sub_(self.delta_weight())
        self.merged = False

    def reset_adapter(self) -> None:
        """Re-initialise A (kaiming-uniform, ``a=sqrt(5)``) and zero B, so ``ΔW = 0`` again.

        Draws from torch's global generator, so it is reproducible under ``torch.manual_seed``.
        If the module is merged, the merge becomes permanent (``W0`` keeps the folded update) and
        the module is unmerged with a fresh adapter: the federated round's update is committed and
        the next adapter starts from zero.
        """
        with torch.no_grad():
            nn.init.kaiming_uniform_(self.lora_a.weight, a=math.sqrt(5))
            nn.init.zeros_(self.lora_B.weight)
        self.merged = False
