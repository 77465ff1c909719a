"""TenVOO tensor-network adapters (L and Q) for (transposed) convolutions (Li et al., MICCAI 2025).

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

TenVOO-Q (paper Fig. 2(d), after QuanTA): the same chain of channel and kernel cores, but the
three hubs are replaced by three ``r⁴`` "gates" joined in a triangle, each gate on one side
(input channels, kernel, output channels), and in 3-D the middle kernel core is a matrix-product
core ``[k_y; r, r]`` between the other two::

    T = Σ  in12[i12; d,e] · in3[i3; e,f,g] · gate_in[d,f,t,r] · k0[x; g,h,i] · k1[y; i,j]
        · gate_k[h,l,s,t] · k2[z; j,l,m] · gate_out[o,q,r,s] · out3[o3; m,o,p] · out12[o12; p,q]
    #P_Q(3-D) = (i1·i2 + o1·o2 + k_y)·r² + (i3 + o3 + k_x + k_z)·r³ + 3·r⁴     (paper Eq. 6)

In 2-D the ``r²`` middle kernel core goes and ``k0[x; g,h,j]`` meets ``k1[y; j,l,m]`` directly:
``#P_Q(2-D) = (i1·i2 + o1·o2)·r² + (i3 + o3 + k_x + k_y)·r³ + 3·r⁴``. (The published code stores
that middle core with a size-1 bond to ``k0`` and one bond summed inside itself; here it is the
plain ``[k_y; r, r]`` link the parameter count of Eq. 6 describes.)

``T`` is built in the regular-convolution layout ``[C_out, C_in, *K]``; for a transposed
convolution (weight ``[C_in, C_out, *K]``) the same network is transposed into that layout, so
``ΔW`` always has the base weight's layout and merges as ``W ← W + ΔW``.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence

import torch

__all__ = [
    "TENSOR_CORES",
    "TENSOR_CORES_TRANSPOSED",
    "balanced_factors",
    "TENSOR_VARIANTS",
    "check_tensor_variant",
    "network_labels",
    "network_of",
    "core_shapes",
    "tenvoo_l_param_count",
    "tenvoo_q_param_count",
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

#: The tensor networks: TenVOO-L (paper Fig. 2(c)) and TenVOO-Q (Fig. 2(d)).
TENSOR_VARIANTS = ("L", "Q")

# (variant, spatial dims) -> {core: index labels}, in contraction order. Upper case: physical
# indices (I = i1·i2, J = i3, X/Y/Z = kernel, P = o3, Q = o1·o2); lower case: bonds of size r,
# each in exactly two cores. The order keeps every intermediate at most C_in·ΠK·r⁴ numbers.
_LABELS: dict[tuple[str, int], dict[str, str]] = {
    ("L", 2): {
        "in12": "Ide",
        "in3": "Jefg",
        "hub_in": "fdqh",
        "k0": "Xghi",
        "k1": "Yilm",
        "hub_out": "lqpn",
        "out3": "Pmno",
        "out12": "Qop",
    },
    ("L", 3): {
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
    ("Q", 2): {
        "in12": "Ide",
        "in3": "Jefg",
        "gate_in": "dftr",
        "k0": "Xghj",
        "gate_k": "hlst",
        "k1": "Yjlm",
        "gate_out": "oqrs",
        "out3": "Pmop",
        "out12": "Qpq",
    },
    ("Q", 3): {
        "in12": "Ide",
        "in3": "Jefg",
        "gate_in": "dftr",
        "k0": "Xghi",
        "k1": "Yij",
        "gate_k": "hlst",
        "k2": "Zjlm",
        "gate_out": "oqrs",
        "out3": "Pmop",
        "out12": "Qpq",
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


def check_tensor_variant(variant: str) -> None:
    """Validate the tensor network's name.

    Args:
        variant: ``"L"`` (TenVOO-L) or ``"Q"`` (TenVOO-Q).

    Raises:
        ValueError: naming `tensor_variant` otherwise.
    """
    if variant not in TENSOR_VARIANTS:
        raise ValueError(f"`tensor_variant` must be one of {list(TENSOR_VARIANTS)}, got {variant!r}.")


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


def network_labels(spatial_dims: int, variant: str = "L") -> tuple[dict[str, str], str]:
    """The TenVOO network of a ``spatial_dims``-D convolution as einsum labels.

    Args:
        spatial_dims: 2 or 3.
        variant: ``"L"`` or ``"Q"``.

    Returns:
        ``({core: labels}, output labels)``; cores in contraction order, see the module docstring.

    Raises:
        ValueError: if `spatial_dims` is not 2 or 3 or `variant` is unknown.
    """
    check_tensor_variant(variant)
    if spatial_dims not in _OUTPUT:
        raise ValueError(f"`spatial_dims` must be 2 or 3 for TenVOO, got {spatial_dims!r}.")
    return dict(_LABELS[variant, spatial_dims]), _OUTPUT[spatial_dims]


def network_of(core_names: Iterable[str]) -> tuple[str, int]:
    """Which network a set of core names belongs to (the names tell it apart: ``hub_*`` vs ``gate_*``).

    Args:
        core_names: the cores of one module.

    Returns:
        ``(variant, spatial_dims)``.

    Raises:
        ValueError: if the names are those of no network (the message lists the networks' cores).

    Example:
        >>> network_of(core_shapes(4, 4, (3, 3, 3), 1, "Q"))
        ('Q', 3)
    """
    names = set(core_names)
    for key, labels in _LABELS.items():
        if names == set(labels):
            return key
    known = "; ".join(f"{v}/{d}-D: {list(lab)}" for (v, d), lab in _LABELS.items())
    raise ValueError(f"cores {sorted(names)} form no TenVOO network (expected one of {known}).")


def _physical_sizes(in_channels: int, out_channels: int, kernel_size: Sequence[int]) -> dict[str, int]:
    i1, i2, i3 = balanced_factors(in_channels)
    o1, o2, o3 = balanced_factors(out_channels)
    sizes = {"I": i1 * i2, "J": i3, "P": o3, "Q": o1 * o2}
    sizes.update(zip("XYZ"[: len(kernel_size)], (int(k) for k in kernel_size), strict=True))
    return sizes


def core_shapes(
    in_channels: int, out_channels: int, kernel_size: Sequence[int], rank: int, variant: str = "L"
) -> dict[str, tuple[int, ...]]:
    """Shapes of the TenVOO cores of a convolution ``C_in → C_out`` with kernel ``K``.

    A core's shape follows its labels (:func:`network_labels`): the physical index first
    (``i1·i2``, ``i3``, ``k``, ``o3`` or ``o1·o2`` from :func:`balanced_factors`), then one ``r``
    per bond; hubs and gates are ``r×r×r×r`` (``r×r×r`` for ``hub_k``).

    Args:
        in_channels: ``C_in`` ≥ 1 (of the convolution, also for a transposed one).
        out_channels: ``C_out`` ≥ 1.
        kernel_size: the 2 or 3 kernel sizes.
        rank: ``r`` ≥ 1.
        variant: ``"L"`` or ``"Q"``.

    Returns:
        ``{core: shape}`` in contraction order.

    Raises:
        ValueError: for a bad channel count, `kernel_size` of a length other than 2 or 3 or an
            unknown `variant`.

    Example:
        >>> core_shapes(4, 8, (3, 3), 2)["in12"], core_shapes(4, 8, (3, 3), 2)["k0"]
        ((4, 2, 2), (3, 2, 2, 2))
    """
    labels, _ = network_labels(len(kernel_size), variant)
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


def tenvoo_q_param_count(in_channels: int, out_channels: int, kernel_size: Sequence[int], rank: int) -> int:
    """Trainable numbers of one TenVOO-Q adapter (paper Eq. 6 and its 2-D form).

    3-D: ``#P_Q = (i1·i2 + o1·o2 + k_y)·r² + (i3 + o3 + k_x + k_z)·r³ + 3·r⁴`` (the middle kernel
    core is a matrix-product core ``[k_y; r, r]``); 2-D, without it:
    ``(i1·i2 + o1·o2)·r² + (i3 + o3 + k_x + k_y)·r³ + 3·r⁴``.

    Args:
        in_channels: ``C_in``.
        out_channels: ``C_out``.
        kernel_size: the 2 or 3 kernel sizes.
        rank: ``r``.

    Returns:
        The number of elements of the trainable cores.

    Example:
        >>> tenvoo_q_param_count(64, 64, (3, 3, 3), 4)  # (16 + 16 + 3)·16 + (4 + 4 + 3 + 3)·64 + 3·256
        2224
    """
    i1, i2, i3 = balanced_factors(in_channels)
    o1, o2, o3 = balanced_factors(out_channels)
    r, k = rank, list(kernel_size)
    middle = [k.pop(1)] if len(k) == 3 else []
    return (i1 * i2 + o1 * o2 + sum(middle)) * r**2 + (i3 + o3 + sum(k)) * r**3 + 3 * r**4


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
    labels, _ = network_labels(*reversed(network_of(shapes)))
    n_bonds = len({c for lab in labels.values() for c in lab if c.islower()})
    std = initial_std(fan_in, rank, len(labels), n_bonds)
    gen = torch.Generator().manual_seed(layer_seed(seed, name))
    return {core: torch.randn(shape, generator=gen, dtype=torch.float32) * std for core, shape in shapes.items()}


def contract_network(cores: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """``T(θ)`` in the regular-convolution layout ``[C_out, C_in, *K]``.

    The network is told by the core names (:func:`network_of`). The cores are contracted one
    after another in the order of :func:`network_labels`, each step an einsum that keeps only the
    indices still needed (at most ``C_in·ΠK·r⁴`` numbers at a time). The result is reshaped from
    ``[o12, o3, i12, i3, *K]`` to ``[C_out, C_in, *K]``.

    Args:
        cores: ``{core: tensor}`` with the shapes of :func:`core_shapes`.

    Returns:
        ``T``, keeping the autograd graph.

    Raises:
        ValueError: if the core names are those of no network.
    """
    labels, output = network_labels(*reversed(network_of(cores)))
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
    t = contract_network(cores)
    if transposed:
        t = t.transpose(0, 1)
    if isinstance(frozen, Mapping):
        t0 = contract_network({k: v.to(t.dtype) for k, v in frozen.items()})
        frozen = t0.transpose(0, 1) if transposed else t0
    return t - frozen
