"""TenVOO-L tensor-network adapters for (transposed) convolutions (Li et al., MICCAI 2025).

TenVOO writes the update of a convolution weight as a contracted tensor network (paper Eq. 5)::

    W_eff = W + ΔW,   ΔW = T(θ) − T(θ0)                                              (paper Eq. 8)

``T(θ)`` is the network of trainable cores ``θ = {t_1, …, t_k}``; ``θ0`` is a frozen copy of the
cores as initialised (paper Eq. 7), so the adapted layer starts equal to the base while the cores
are non-zero (the paper's "frozen copy" initialisation, better than zero-initialising one core in
its Table 3). Here ``θ0`` is drawn from a seed and the module's dotted name
(:func:`initial_cores`), so a server rebuilds it without receiving it: only ``θ`` travels.

The network (TenVOO-L, paper Fig. 2(c) and Eq. 6). ``C_in = i1·i2·i3`` and ``C_out = o1·o2·o3``
(:func:`balanced_factors`); every spatial kernel dimension has its own core. With bond indices
``a, b, …`` of size ``r`` (the tensor rank) and ``K = (k_x, k_y[, k_z])``, the 3-D network is::

    T[(o12,o3), (i12,i3), x, y, z] = Σ_bonds  in12[i12; d,e] · in3[i3; e,f,g] · hub_in[f,d,q,h]
        · k0[x; g,h,i] · k1[y; i,j,k] · hub_k[j,q,r] · k2[z; k,l,m] · hub_out[l,r,p,n]
        · out3[o3; m,n,o] · out12[o12; o,p]

a chain input → kernel → output with three hubs (``r⁴``, ``r⁴``, ``r³``) that tie the spatial cores
to both channel sides. ``i1`` and ``i2`` only meet in one core, so that core is stored with the
merged index ``i12 = i1·i2`` (the same for ``o12``). Its size is paper Eq. 6::

    #P_L(3-D) = (i1·i2 + o1·o2)·r² + (i3 + o3 + k_x + k_y + k_z + 1)·r³ + 2·r⁴

For 2-D the middle spatial core ``k1`` goes (the paper: TenVOO-L "degenerates into the 2D
convolution" when one kernel dimension is removed); ``hub_k`` then only joins ``hub_in`` and
``hub_out`` by an ``r×r`` matrix that is absorbed into ``hub_in``, leaving one bond ``q``::

    T[(o12,o3), (i12,i3), x, y] = Σ  in12[i12; d,e] · in3[i3; e,f,g] · hub_in[f,d,q,h]
        · k0[x; g,h,i] · k1[y; i,l,m] · hub_out[l,q,p,n] · out3[o3; m,n,o] · out12[o12; o,p]
    #P_L(2-D) = (i1·i2 + o1·o2)·r² + (i3 + o3 + k_x + k_y)·r³ + 2·r⁴

``T`` is built in the regular-convolution layout ``[C_out, C_in, *K]``; for a transposed
convolution (weight ``[C_in, C_out, *K]``) the same network is transposed into that layout, so
``ΔW`` always has the base weight's layout and merges as ``W ← W + ΔW``.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn
from torch.func import functional_call

from cardiolora.lora.layers import AdapterConv, check_supported

__all__ = [
    "TENSOR_CORES",
    "TENSOR_CORES_TRANSPOSED",
    "TensorConv",
    "balanced_factors",
    "network_labels",
    "core_shapes",
    "tenvoo_l_param_count",
    "initial_std",
    "layer_seed",
    "initial_cores",
    "contract_network",
    "tensor_delta",
    "check_tensor_rank_seed",
]

#: Attribute (and state-dict key part) of the trainable cores of a regular convolution's adapter:
#: ``<name>.tenvoo.<core>``.
TENSOR_CORES = "tenvoo"
#: The same for a transposed convolution (``<name>.tenvoo_T.<core>``): ΔW's layout differs
#: (``[C_in, C_out, *K]``), and a server holding only the cores reads the kind from the key.
TENSOR_CORES_TRANSPOSED = "tenvoo_T"

# Core name -> index labels, in contraction order. Upper case: physical indices (I = i1·i2,
# J = i3, X/Y/Z = kernel, P = o3, Q = o1·o2); lower case: bonds of size r, each in exactly two cores.
_LABELS: dict[int, dict[str, str]] = {
    2: {
        "in12": "Ide",
        "in3": "Jefg",
        "hub_in": "fdqh",
        "k0": "Xghi",
        "k1": "Yilm",
        "hub_out": "lqpn",
        "out3": "Pmno",
        "out12": "Qop",
    },
    3: {
        "in12": "Ide",
        "in3": "Jefg",
        "hub_in": "fdqh",
        "k0": "Xghi",
        "k1": "Yijk",
        "hub_k": "jqr",
        "k2": "Zklm",
        "hub_out": "lrpn",
        "out3": "Pmno",
        "out12": "Qop",
    },
}
_OUTPUT: dict[int, str] = {2: "QPIJXY", 3: "QPIJXYZ"}


def check_tensor_rank_seed(rank: int, seed: int) -> None:
    """Validate the tensor adapter's hyper-parameters.

    Args:
        rank: tensor-network rank ``r``, an ``int`` ≥ 1 (``bool`` refused).
        seed: seed of the frozen initial cores ``θ0``, an ``int`` ≥ 0.

    Raises:
        ValueError: naming `tensor_rank` or `tensor_seed` when out of range.
    """
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"`tensor_rank` must be an int >= 1, got {rank!r}.")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"`tensor_seed` must be an int >= 0, got {seed!r}.")


def balanced_factors(n: int) -> tuple[int, int, int]:
    """The most balanced ordered factorisation ``n = f1·f2·f3`` with ``f1 ≥ f2 ≥ f3``.

    Balanced means: the smallest possible largest factor ``f1``; among those, the largest possible
    smallest factor ``f3`` (then ``f2 = n / (f1·f3)``). E.g. 64 → (4, 4, 4), 128 → (8, 4, 4),
    192 → (8, 6, 4), 4 → (2, 2, 1), 1 → (1, 1, 1), a prime p → (p, 1, 1). The smallest factor goes
    last: it is ``i3`` / ``o3``, the channel factor on an ``r³`` core, while ``f1·f2`` sits on an
    ``r²`` core.

    Args:
        n: a channel count, an int ≥ 1.

    Returns:
        ``(f1, f2, f3)``.

    Raises:
        ValueError: if `n` is not an int ≥ 1.

    Example:
        >>> balanced_factors(96)
        (6, 4, 4)
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"`n` must be an int >= 1, got {n!r}.")
    best: tuple[int, int, int] | None = None
    for f3 in range(1, n + 1):
        if f3**3 > n:
            break
        if n % f3:
            continue
        for f2 in range(f3, n // f3 + 1):
            if f2 * f2 > n // f3:
                break
            if (n // f3) % f2:
                continue
            f1 = n // (f3 * f2)
            if best is None or (f1, -f3) < (best[0], -best[2]):
                best = (f1, f2, f3)
    assert best is not None  # f3 = f2 = 1 always divides
    return best


def network_labels(spatial_dims: int) -> tuple[dict[str, str], str]:
    """The TenVOO-L network of a ``spatial_dims``-D convolution as einsum labels.

    Args:
        spatial_dims: 2 or 3.

    Returns:
        ``({core: labels}, output labels)``; cores in contraction order, see the module docstring.

    Raises:
        ValueError: if `spatial_dims` is not 2 or 3.
    """
    if spatial_dims not in _LABELS:
        raise ValueError(f"`spatial_dims` must be 2 or 3 for TenVOO-L, got {spatial_dims!r}.")
    return dict(_LABELS[spatial_dims]), _OUTPUT[spatial_dims]


def _physical_sizes(in_channels: int, out_channels: int, kernel_size: Sequence[int]) -> dict[str, int]:
    i1, i2, i3 = balanced_factors(in_channels)
    o1, o2, o3 = balanced_factors(out_channels)
    sizes = {"I": i1 * i2, "J": i3, "P": o3, "Q": o1 * o2}
    sizes.update(zip("XYZ"[: len(kernel_size)], (int(k) for k in kernel_size), strict=True))
    return sizes


def core_shapes(
    in_channels: int, out_channels: int, kernel_size: Sequence[int], rank: int
) -> dict[str, tuple[int, ...]]:
    """Shapes of the TenVOO-L cores of a convolution ``C_in → C_out`` with kernel ``K``.

    A core's shape follows its labels (:func:`network_labels`): the physical index first
    (``i1·i2``, ``i3``, ``k``, ``o3`` or ``o1·o2`` from :func:`balanced_factors`), then one ``r``
    per bond; hubs are ``r×r×r×r`` (``r×r×r`` for ``hub_k``).

    Args:
        in_channels: ``C_in`` ≥ 1 (of the convolution, also for a transposed one).
        out_channels: ``C_out`` ≥ 1.
        kernel_size: the 2 or 3 kernel sizes.
        rank: ``r`` ≥ 1.

    Returns:
        ``{core: shape}`` in contraction order.

    Raises:
        ValueError: for a bad channel count or `kernel_size` of a length other than 2 or 3.

    Example:
        >>> core_shapes(4, 8, (3, 3), 2)["in12"], core_shapes(4, 8, (3, 3), 2)["k0"]
        ((4, 2, 2), (3, 2, 2, 2))
    """
    labels, _ = network_labels(len(kernel_size))
    sizes = _physical_sizes(in_channels, out_channels, kernel_size)
    return {core: tuple(sizes.get(c, rank) for c in lab) for core, lab in labels.items()}


def tenvoo_l_param_count(in_channels: int, out_channels: int, kernel_size: Sequence[int], rank: int) -> int:
    """Trainable numbers of one TenVOO-L adapter (paper Eq. 6 and its 2-D form).

    ``#P = (i1·i2 + o1·o2)·r² + (i3 + o3 + Σ k + [3-D] 1)·r³ + 2·r⁴``; the ``+1`` is the 3-D
    ``hub_k`` (``r³``), which the 2-D network does not have.

    Args:
        in_channels: ``C_in``.
        out_channels: ``C_out``.
        kernel_size: the 2 or 3 kernel sizes.
        rank: ``r``.

    Returns:
        The number of elements of the trainable cores.

    Example:
        >>> tenvoo_l_param_count(64, 64, (3, 3, 3), 4)  # (16 + 16)·16 + (4 + 4 + 9 + 1)·64 + 2·256
        2176
    """
    i1, i2, i3 = balanced_factors(in_channels)
    o1, o2, o3 = balanced_factors(out_channels)
    hub_k = 1 if len(kernel_size) == 3 else 0
    r = rank
    return (i1 * i2 + o1 * o2) * r**2 + (i3 + o3 + sum(kernel_size) + hub_k) * r**3 + 2 * r**4


def initial_std(fan_in: int, rank: int, n_cores: int, n_bonds: int) -> float:
    """Standard deviation σ of the entries of every initial core.

    With independent zero-mean entries of variance σ², an entry of ``T`` is a sum of ``r^B``
    uncorrelated products of ``N`` entries (``B`` bonds, ``N`` cores), so
    ``Var T = r^B · σ^(2N)``. σ is chosen so that ``Var T = 1 / (3·fan_in)``, the variance of
    PyTorch's default convolution initialisation (kaiming-uniform with ``a = √5``)::

        σ = (1 / (3·fan_in·r^B))^(1 / (2N))

    This keeps ``T(θ0)`` at the scale of a freshly initialised weight whatever the rank.

    Args:
        fan_in: ``weight.shape[1] · Π K`` of the base weight (PyTorch's convention).
        rank: ``r``.
        n_cores: ``N``.
        n_bonds: ``B``.

    Returns:
        σ.

    Example:
        >>> round(initial_std(1, 1, 1, 0) ** 2 * 3, 6)
        1.0
    """
    log_var = -math.log(3.0 * fan_in) - n_bonds * math.log(rank)
    return math.exp(log_var / (2 * n_cores))


def layer_seed(seed: int, name: str) -> int:
    """Seed of one module's initial cores: ``int(sha256("<seed>:<name>")[:8])``.

    Stable across processes, machines and Python versions (unlike ``hash``), so a server and
    every site draw the same ``θ0`` for the module at dotted name `name`.

    Args:
        seed: the bundle's ``tensor_seed``.
        name: the module's dotted name in the plain network.

    Returns:
        A 63-bit non-negative seed.

    Example:
        >>> layer_seed(0, "model.0.conv") == layer_seed(0, "model.0.conv")
        True
    """
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def initial_cores(
    shapes: Mapping[str, tuple[int, ...]], seed: int, name: str, fan_in: int, rank: int
) -> dict[str, torch.Tensor]:
    """The initial cores ``θ0`` of one module: normal(0, σ²) in fp32 on the CPU, from a seed.

    One ``torch.Generator`` seeded with :func:`layer_seed` draws the cores in the order of
    `shapes`; σ is :func:`initial_std` for the network's numbers of cores and bonds.

    Args:
        shapes: ``{core: shape}`` as from :func:`core_shapes` (order matters).
        seed: the bundle's ``tensor_seed``.
        name: the module's dotted name.
        fan_in: the base weight's fan-in (see :func:`initial_std`).
        rank: ``r``.

    Returns:
        ``{core: tensor}`` in fp32, bit-identical wherever it is called.
    """
    labels, _ = network_labels(3 if "hub_k" in shapes else 2)
    n_bonds = len({c for lab in labels.values() for c in lab if c.islower()})
    std = initial_std(fan_in, rank, len(labels), n_bonds)
    gen = torch.Generator().manual_seed(layer_seed(seed, name))
    return {core: torch.randn(shape, generator=gen, dtype=torch.float32) * std for core, shape in shapes.items()}


def contract_network(cores: Mapping[str, torch.Tensor], spatial_dims: int) -> torch.Tensor:
    """``T(θ)`` in the regular-convolution layout ``[C_out, C_in, *K]``.

    The cores are contracted one after another in the order of :func:`network_labels`, each step an
    einsum that keeps only the indices still needed; the largest intermediate holds
    ``C_in·ΠK·r³`` (or ``C_in·ΠK·o3·r²``) numbers. The result is reshaped from
    ``[o12, o3, i12, i3, *K]`` to ``[C_out, C_in, *K]``.

    Args:
        cores: ``{core: tensor}`` with the shapes of :func:`core_shapes`.
        spatial_dims: 2 or 3.

    Returns:
        ``T``, keeping the autograd graph.

    Raises:
        ValueError: if the core names are not those of the network.
    """
    labels, output = network_labels(spatial_dims)
    if set(cores) != set(labels):
        raise ValueError(f"`cores` must be {list(labels)}, got {sorted(cores)}.")
    order = list(labels)
    acc, acc_labels = cores[order[0]], labels[order[0]]
    for step, core in enumerate(order[1:], start=1):
        needed = "".join(labels[c] for c in order[step + 1 :]) + output
        keep = "".join(dict.fromkeys(c for c in acc_labels + labels[core] if c in needed))
        acc = torch.einsum(f"{acc_labels},{labels[core]}->{keep}", acc, cores[core])
        acc_labels = keep
    t = torch.einsum(f"{acc_labels}->{output}", acc)
    c_out, c_in = t.shape[0] * t.shape[1], t.shape[2] * t.shape[3]
    return t.reshape(c_out, c_in, *t.shape[4:])


def tensor_delta(
    cores: Mapping[str, torch.Tensor], frozen: torch.Tensor | Mapping[str, torch.Tensor], transposed: bool
) -> torch.Tensor:
    """``ΔW = T(θ) − T(θ0)`` in the base weight's layout (paper Eq. 8).

    Args:
        cores: the trainable cores ``θ``.
        frozen: the initial cores ``θ0``, or ``T(θ0)`` already contracted (in the base layout).
        transposed: True for a transposed convolution: ``ΔW`` is ``[C_in, C_out, *K]``.

    Returns:
        ``ΔW``, keeping the autograd graph of `cores`.
    """
    spatial_dims = 3 if "hub_k" in cores else 2
    t = contract_network(cores, spatial_dims)
    if transposed:
        t = t.transpose(0, 1)
    if isinstance(frozen, Mapping):
        t0 = contract_network({k: v.to(t.dtype) for k, v in frozen.items()}, spatial_dims)
        frozen = t0.transpose(0, 1) if transposed else t0
    return t - frozen


class TensorConv(AdapterConv):
    """A convolution or transposed convolution with a TenVOO-L adapter: ``W + T(θ) − T(θ0)``.

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

    Raises:
        ValueError: unsupported base (named) or bad `rank` / `seed`.

    Example:
        >>> layer = TensorConv(nn.Conv2d(4, 8, 3, padding=1), rank=2)
        >>> x = torch.randn(1, 4, 6, 6)
        >>> torch.allclose(layer(x), layer.base(x))
        True
    """

    def __init__(self, base: nn.Module, rank: int, seed: int = 0, name: str = "module") -> None:
        super().__init__()
        check_tensor_rank_seed(rank, seed)
        check_supported(base, name, wrapper="TensorConv")
        self.name = name
        self.rank = rank
        self.seed = seed
        self.transposed = isinstance(base, (nn.ConvTranspose2d, nn.ConvTranspose3d))
        self.spatial_dims = base.weight.dim() - 2
        self.merged = False
        self.base = base
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.shapes = core_shapes(base.in_channels, base.out_channels, base.kernel_size, rank)
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
        return f"rank={self.rank}, seed={self.seed}, merged={self.merged}"

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
        if output_size is not None and not self.transposed:
            raise ValueError(f"`output_size` is only valid for transposed convolutions (`{self.name}`).")
        args = (x, output_size) if self.transposed else (x,)
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
            t0 = contract_network(self.frozen_cores(), self.spatial_dims)
            self.frozen_full.copy_(t0.transpose(0, 1) if self.transposed else t0)
        self.merged = False
