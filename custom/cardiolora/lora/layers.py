"""LoRA adapters for convolutions and transposed convolutions (Rate-My-LoRA, He et al. 2025).

Every adapted convolution computes with the weight ``W = W0 + (alpha / r) * ΔW(A, B)``: ``W0`` is
the frozen base weight and the adapter is two convolutions in a row, A (input channels → ``r``)
then B (``r`` → output channels). One of the two carries the base's kernel and geometry, the
other is pointwise (1×1(×1), stride 1). The model of the API is PEFT's ``tuners/lora/layer.py``;
unlike PEFT, the transposed convolutions that MONAI's U-Net upsamples with are covered too.

Which side carries the kernel. A rank-``r`` adapter of a layer with ``in`` input channels, ``out``
output channels and ``K = Π k`` kernel elements holds ``r·(in·K + out)`` numbers with the kernel
on the input side (A) and ``r·(in + out·K)`` with it on the output side (B). A site uploads these
numbers every round, so the cheaper side is used:

* regular convolutions keep the kernel on A (as PEFT): in the encoder ``in ≤ out``;
* transposed convolutions put it on B: MONAI's ``UNet`` upsamples from the concatenation of the
  skip and the deeper level to fewer channels, ``in ≥ 2·out`` (768 → 128, 256 → 64, 128 → 32,
  64 → 4 in the ``paper`` profile), so the output side costs 1/4 to 1/7 of the input side there.

The side is fixed per kind (not chosen per layer) so that the state-dict key alone tells a server
without a model the layout of every tensor: A is always a regular convolution (``lora_A``, layout
``[r, in, *k_A]``) and B is either a pointwise convolution (``lora_B``, ``[out, r, 1, ..]``) or a
transposed convolution (``lora_B_T``, ``[r, out, *k]``). For the networks of both profiles this
fixed rule gives the per-layer minimum of the two costs for every layer.

Why the factorisation is exact (no bias in A or B; the kernel-carrying factor has the base's
geometry, the pointwise one stride 1 and no padding, so it keeps the grid):

*Convolution* (weight layout ``[out, in, *k]``). A has weight ``A[r, in, *k]`` and
``z[r, p] = Σ_{in,k} A[r, in, k] · x[in, p + k]``; B has weight ``B[out, r, 1..]`` and maps
``y[out, p] = Σ_r B[out, r] · z[r, p]`` pointwise, so
``ΔW[out, in, k] = Σ_r B[out, r] · A[r, in, k]``.

*Transposed convolution* (weight layout ``[in, out, *k]``). Its output is
``y[out, q] = Σ_{in,k} W[in, out, k] · x[in, p]`` summed over the (p, k) with
``q = p·stride - padding + k·dilation`` (plus ``output_padding`` on the far border). A is a
pointwise convolution ``in → r`` with weight ``A[r, in, 1..]``: ``z[r, p] = Σ_in A[r, in] · x[in, p]``
on the input grid. B is a transposed convolution ``r → out`` with the base's kernel, stride,
padding, dilation and output_padding, weight ``B[r, out, *k]``, summing over the same (p, k) pairs
onto the same output grid, hence

    y[out, q] = Σ_{r,k} B[r, out, k] · z[r, p] = Σ_{in,k} (Σ_r A[r, in] · B[r, out, k]) · x[in, p]

which is a transposed convolution with ``ΔW[in, out, k] = Σ_r A[r, in] · B[r, out, k]`` in the
base's own layout. Both deltas are computed by :func:`lora_delta`.

Dual adapters (Med-DualLoRA, Perramon-Llussà et al., arXiv 2603.10967). A :class:`LoRAConv` built
with ``local_rank > 0`` holds a second pair beside the first, of the same layout: the *global*
pair ``(A, B)`` (keys ``lora_A`` / ``lora_B[_T]``, the one a federated site sends) and the *local*
pair ``(A_l, B_l)`` (keys ``lora_A_local`` / ``lora_B_local`` / ``lora_B_T_local``, which never
leave the site). The layer computes with

    W = W0 + s_g · ΔW(A, B) + s_l · ΔW(A_l, B_l),   s_g = alpha / r,  s_l = alpha_l / r_l

and both pairs train together (:func:`cardiolora.lora.mark_only_lora_trainable`); the two ranks
are set apart. ``local_rank = 0`` (the default) is plain LoRA, bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

__all__ = [
    "SUPPORTED_CONV_TYPES",
    "AdapterConv",
    "LORA_A",
    "LORA_B",
    "LORA_B_TRANSPOSED",
    "LOCAL_SUFFIX",
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

#: Attribute (and state-dict key part) of the down-projection A, a regular convolution in both
#: cases: ``[r, in, *k]`` with the base's kernel (conv base) or ``[r, in, 1, ..]`` (transposed base).
LORA_A = "lora_A"
#: Attribute of the up-projection B of a regular convolution: a 1×1(×1) convolution ``[out, r, 1, ..]``.
LORA_B = "lora_B"
#: Attribute of the up-projection B of a *transposed* convolution: a transposed convolution with the
#: base's kernel and geometry, ``[r, out, *k]``. A different name, because that layout cannot be told
#: from ``[out, r, 1, ..]`` by shape alone (1×1 kernel and ``out == r``); the key carries the kind
#: to a server that has A and B but no model.
LORA_B_TRANSPOSED = "lora_B_T"
#: Suffix of the local pair's attributes (dual adapters): ``lora_A_local``, ``lora_B_local``,
#: ``lora_B_T_local`` (state-dict keys ``<name>.lora_A_local.weight`` …). Never sent by a site.
LOCAL_SUFFIX = "_local"
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


def check_supported(module: nn.Module, name: str = "module", wrapper: str = "LoRAConv") -> None:
    """Check that :class:`LoRAConv` (or another adapter wrapper) can wrap `module`, without touching it.

    Args:
        module: the candidate base module.
        name: what to call it in the error message (its dotted name in the model).
        wrapper: the adapter class named in the message (``"LoRAConv"``, ``"TensorConv"``).

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
        raise ValueError(f"`{name}` is a {type(module).__name__}; {wrapper} supports only {supported}.")
    if isinstance(module.weight, nn.parameter.UninitializedParameter):
        raise ValueError(f"`{name}` has an uninitialised (lazy) weight; run a forward pass first.")
    if module.groups != 1:
        raise ValueError(f"`{name}` has groups={module.groups}; {wrapper} supports only groups=1.")
    if module.padding_mode != "zeros":
        raise ValueError(f"`{name}` has padding_mode={module.padding_mode!r}; {wrapper} supports only 'zeros'.")


def lora_delta(a: torch.Tensor, b: torch.Tensor, scaling: float, transposed: bool) -> torch.Tensor:
    """Full-size weight delta of one adapter from its A and B weights.

    Convolution: ``ΔW[o, i, k] = scaling · Σ_r B[o, r] · A[r, i, k]`` (A ``[r, in, *k]``, B ``[out, r, 1, ..]``).
    Transposed convolution: ``ΔW[i, o, k] = scaling · Σ_r A[r, i] · B[r, o, k]`` (A ``[r, in, 1, ..]``,
    B ``[r, out, *k]``). The result has the base weight's layout.

    Args:
        a: weight of A, 4-D (2-D conv) or 5-D (3-D conv); spatial sizes all 1 if `transposed`.
        b: weight of B, same number of dimensions as `a`; spatial sizes all 1 unless `transposed`.
        scaling: ``alpha / r``.
        transposed: True for the adapter of a transposed convolution (B in the layout ``[r, out, *k]``).

    Returns:
        ΔW with shape ``[out, in, *k]`` (conv) or ``[in, out, *k]`` (transposed conv).

    Raises:
        ValueError: if the shapes of `a` and `b` do not form an adapter (the message gives both).

    Example:
        >>> a, b = torch.ones(2, 3, 3, 3), torch.ones(5, 2, 1, 1)
        >>> lora_delta(a, b, 0.5, transposed=False).shape
        torch.Size([5, 3, 3, 3])
        >>> lora_delta(torch.ones(2, 8, 1, 1), torch.ones(2, 4, 2, 2), 1.0, transposed=True).shape
        torch.Size([8, 4, 2, 2])
    """
    if transposed:
        ok = a.dim() in (4, 5) and b.dim() == a.dim() and b.shape[0] == a.shape[0]
        ok = ok and all(s == 1 for s in a.shape[2:])
    else:
        ok = a.dim() in (4, 5) and b.dim() == a.dim() and b.shape[1] == a.shape[0]
        ok = ok and all(s == 1 for s in b.shape[2:])
    if not ok:
        a_layout, b_layout = ("[r, in, 1, ..]", "[r, out, *k]") if transposed else ("[r, in, *k]", "[out, r, 1, ..]")
        raise ValueError(
            f"`a` {tuple(a.shape)} (layout {a_layout}) and `b` {tuple(b.shape)} (layout {b_layout}) "
            "do not form a LoRA adapter."
        )
    if transposed:
        delta = (a.flatten(1).transpose(0, 1) @ b.flatten(1)).reshape(a.shape[1], *b.shape[1:])
    else:
        delta = (b.flatten(1) @ a.flatten(1)).reshape(b.shape[0], *a.shape[1:])
    return delta * scaling


class AdapterConv(nn.Module):
    """What every adapter wrapper of a convolution shares: merge and unmerge through ``delta_weight``.

    A subclass keeps the base convolution as ``self.base``, its dotted name as ``self.name``, a
    ``self.merged`` flag, and implements :meth:`delta_weight` (``ΔW`` in the base weight's layout).
    """

    base: nn.Module
    name: str
    merged: bool
    transposed: bool

    def delta_weight(self) -> torch.Tensor:
        """The full-size ``ΔW`` shaped like ``self.base.weight`` (keeping the autograd graph)."""
        raise NotImplementedError

    def base_args(self, x: torch.Tensor, output_size: Sequence[int] | None) -> tuple:
        """The positional arguments of the base convolution's ``forward`` for input `x`.

        Raises:
            ValueError: if `output_size` is given for a regular convolution.
        """
        if output_size is not None and not self.transposed:
            raise ValueError(f"`output_size` is only valid for transposed convolutions (`{self.name}`).")
        return (x, output_size) if self.transposed else (x,)

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
        relative in fp32), so do not retrain the adapter while merged.

        Raises:
            ValueError: if the module is not merged (naming it).
        """
        if not self.merged:
            raise ValueError(f"`{self.name}` is not merged; nothing to unmerge.")
        with torch.no_grad():
            self.base.weight.sub_(self.delta_weight())
        self.merged = False


class LoRAConv(AdapterConv):
    """A convolution or transposed convolution with a LoRA adapter: ``W = W0 + (alpha / r)·ΔW(A, B)``.

    The base module is kept as ``self.base`` (state-dict keys ``base.weight``, ``base.bias``), the
    adapter as ``self.lora_A`` and ``self.lora_B`` (regular conv: A with the base's kernel, B
    pointwise) or ``self.lora_B_T`` (transposed conv: A pointwise, B a transposed convolution with
    the base's kernel); see the module docstring for the choice and why both are exact.
    The base parameters are frozen (``requires_grad=False``). At construction A is kaiming-uniform
    (``a=sqrt(5)``) and B zero, so the module computes exactly what the base computes.

    Args:
        base: the ``nn.Conv2d``, ``nn.Conv3d``, ``nn.ConvTranspose2d`` or ``nn.ConvTranspose3d`` to
            adapt; ``groups == 1`` and ``padding_mode == "zeros"``.
        rank: adapter rank ``r``, an int ≥ 1.
        alpha: LoRA alpha > 0; ``None`` means ``alpha = rank`` (scaling 1).
        dropout: dropout probability in ``[0, 1)`` applied to the adapter's input only.
        name: what to call the module in error messages (its dotted name in the model).
        local_rank: rank ``r_l`` of a second, *local* pair (dual adapters, Med-DualLoRA); 0 (the
            default) for none. It has the global pair's layout, its own scaling ``alpha_l / r_l``,
            and starts at ``ΔW = 0`` (A kaiming, B zero) too.
        local_alpha: alpha of the local pair; ``None`` means ``alpha_l = r_l`` (scaling 1).

    Raises:
        ValueError: for an unsupported module type, ``groups != 1``, ``padding_mode != "zeros"``
            or an uninitialised (lazy) weight, naming the module; for a bad `rank`, `alpha`,
            `dropout`, `local_rank` or `local_alpha`, naming the argument.

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
        local_rank: int = 0,
        local_alpha: float | None = None,
    ) -> None:
        super().__init__()
        alpha = check_rank_alpha_dropout(rank, alpha, dropout)
        if isinstance(local_rank, bool) or not isinstance(local_rank, int) or local_rank < 0:
            raise ValueError(f"`local_rank` must be an int >= 0 (0: no local pair), got {local_rank!r}.")
        if local_rank:
            try:
                local_alpha = check_rank_alpha_dropout(local_rank, local_alpha, dropout)
            except ValueError as err:
                raise ValueError(str(err).replace("`alpha`", "`local_alpha`")) from err
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
        self.lora_A, lora_b = self._pair(rank, geometry, factory)
        setattr(self, self.b_name, lora_b)
        self.lora_dropout: nn.Module = nn.Dropout(p=dropout) if dropout > 0 else nn.Identity()
        self.reset_adapter()
        self.local_rank = local_rank
        self.local_alpha = float(local_alpha) if local_rank else None
        self.local_scaling = self.local_alpha / local_rank if local_rank else 0.0
        if local_rank:  # made after the global pair's draws: local_rank = 0 is plain LoRA, bit for bit
            a_local, b_local = self._pair(local_rank, geometry, factory)
            setattr(self, LORA_A + LOCAL_SUFFIX, a_local)
            setattr(self, self.b_name + LOCAL_SUFFIX, b_local)
            self.reset_local()

    def _pair(self, rank: int, geometry: dict, factory: dict) -> tuple[nn.Module, nn.Module]:
        """A fresh (A, B) pair of rank `rank` in this layer's layout (see the module docstring)."""
        base = self.base
        # the plain torch type, not type(base): a subclass may have another constructor
        conv_type = next(t for t in SUPPORTED_CONV_TYPES if isinstance(base, t))
        pointwise = _POINTWISE_CONV[base.weight.dim() - 2]
        if self.transposed:  # kernel on the output side: A pointwise in → r, B transposed r → out
            a = pointwise(base.in_channels, rank, kernel_size=1, bias=False, **factory)
            return a, conv_type(rank, base.out_channels, **geometry, **factory)
        # kernel on the input side: A conv in → r, B pointwise r → out
        a = conv_type(base.in_channels, rank, **geometry, **factory)
        return a, pointwise(rank, base.out_channels, kernel_size=1, bias=False, **factory)

    @property
    def b_name(self) -> str:
        """Attribute name of B: ``"lora_B_T"`` for a transposed base, else ``"lora_B"``."""
        return LORA_B_TRANSPOSED if self.transposed else LORA_B

    @property
    def lora_b(self) -> nn.Module:
        """The up-projection B, whichever attribute name it has."""
        return getattr(self, self.b_name)

    @property
    def lora_a_local(self) -> nn.Module | None:
        """A of the local pair (``lora_A_local``), or None without one."""
        return getattr(self, LORA_A + LOCAL_SUFFIX) if self.local_rank else None

    @property
    def lora_b_local(self) -> nn.Module | None:
        """B of the local pair (``lora_B_local`` / ``lora_B_T_local``), or None without one."""
        return getattr(self, self.b_name + LOCAL_SUFFIX) if self.local_rank else None

    def extra_repr(self) -> str:
        local = f", local_rank={self.local_rank}, local_scaling={self.local_scaling}" if self.local_rank else ""
        return f"rank={self.rank}, alpha={self.alpha}, scaling={self.scaling}{local}, merged={self.merged}"

    def forward(self, x: torch.Tensor, output_size: Sequence[int] | None = None) -> torch.Tensor:
        """``base(x) + s_g · B(A(dropout(x))) [+ s_l · B_l(A_l(dropout(x)))]``, or ``base(x)`` when merged.

        Args:
            x: input ``[N, in, *spatial]``.
            output_size: transposed convolutions only, as in ``nn.ConvTranspose2d.forward``.

        Returns:
            The output of the adapted convolution.

        Raises:
            ValueError: if `output_size` is given for a regular convolution.
        """
        y = self.base(*self.base_args(x, output_size))
        if self.merged:
            return y
        x = self.lora_dropout(x)
        y = y + self._branch(self.lora_A, self.lora_b, x, output_size) * self.scaling
        if self.local_rank:
            y = y + self._branch(self.lora_a_local, self.lora_b_local, x, output_size) * self.local_scaling
        return y

    def _branch(self, a: nn.Module, b: nn.Module, x: torch.Tensor, output_size: Sequence[int] | None) -> torch.Tensor:
        """``B(A(x))`` of one pair (the transposed B takes `output_size`)."""
        h = a(x)
        return b(h, output_size) if self.transposed else b(h)

    def delta_weight(self) -> torch.Tensor:
        """The full-size ``ΔW = (alpha / r) · B·A`` (plus the local pair's, if any) in the base weight's layout.

        Conv: ``ΔW[o, i, k] = s · Σ_r B[o, r] · A[r, i, k]``, shape ``[out, in, *k]``;
        transposed conv: ``ΔW[i, o, k] = s · Σ_r A[r, i] · B[r, o, k]``, shape ``[in, out, *k]``,
        with ``s = alpha / r``. With a local pair: ``ΔW = ΔW_global + ΔW_local``
        (:meth:`global_delta` + :meth:`local_delta`), so a merge gives ``W0 + global + local``.
        The result keeps the autograd graph (detach it to store it).

        Returns:
            A tensor shaped like ``self.base.weight``.
        """
        delta = self.global_delta()
        return delta + self.local_delta() if self.local_rank else delta

    def global_delta(self) -> torch.Tensor:
        """``s_g · B·A`` of the global pair (the only one a federated site sends)."""
        return lora_delta(self.lora_A.weight, self.lora_b.weight, self.scaling, self.transposed)

    def local_delta(self) -> torch.Tensor:
        """``s_l · B_l·A_l`` of the local pair; zeros without one."""
        if not self.local_rank:
            return torch.zeros_like(self.base.weight)
        return lora_delta(self.lora_a_local.weight, self.lora_b_local.weight, self.local_scaling, self.transposed)

    def reset_local(self) -> None:
        """Re-initialise the local pair (A kaiming-uniform, B zero): ``ΔW_local = 0``.

        Raises:
            ValueError: if the module is merged or has no local pair (naming it).
        """
        if not self.local_rank:
            raise ValueError(f"`{self.name}` has no local pair (local_rank = 0).")
        if self.merged:
            raise ValueError(f"`{self.name}` is merged; unmerge it before resetting the local pair.")
        with torch.no_grad():
            nn.init.kaiming_uniform_(self.lora_a_local.weight, a=math.sqrt(5))
            nn.init.zeros_(self.lora_b_local.weight)

    def reset_adapter(self) -> None:
        """Re-initialise the global A (kaiming-uniform, ``a=sqrt(5)``) and zero B: ``ΔW_global = 0``.

        The local pair of a dual adapter is left as it is (:meth:`reset_local` resets it).

        Draws from torch's global generator, so it is reproducible under ``torch.manual_seed``.
        If the module is merged, the merge becomes permanent (``W0`` keeps the folded update) and
        the module is unmerged with a fresh adapter: the federated round's update is committed and
        the next adapter starts from zero. A merged dual adapter is refused: ``W0`` would keep the
        local pair's update while the pair stays active, counting it twice.

        Raises:
            ValueError: if the module is merged and has a local pair (naming it).
        """
        if self.merged and self.local_rank:
            raise ValueError(f"`{self.name}` is a merged dual adapter; unmerge it before resetting the global pair.")
        with torch.no_grad():
            nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
            nn.init.zeros_(self.lora_b.weight)
        self.merged = False
