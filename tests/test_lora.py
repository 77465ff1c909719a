"""Tests of cardiolora.lora: LoRAConv, injection into MONAI's UNet, state dicts and deltas."""

from __future__ import annotations

import copy
import doctest
import math

import pytest
import torch
from monai.networks.nets import UNet
from torch import nn

import cardiolora.lora.layers as layers_module
import cardiolora.lora.model as model_module
import cardiolora.lora.state as state_module
from cardiolora.lora import (
    LoRAConv,
    adapter_delta_from_state,
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
    state_bytes,
    unmerge_lora,
    unwrap_key,
    wrap_key,
)

TOL = {"atol": 1e-5, "rtol": 1e-5}  # fp32 house tolerance

# name, conv type, constructor kwargs, input shape, rank
LAYER_CASES = [
    (
        "conv2d_k3",
        nn.Conv2d,
        {"in_channels": 3, "out_channels": 5, "kernel_size": 3, "padding": 1},
        (2, 3, 7, 7),
        2,
    ),
    (
        "conv2d_k3_s2_p2_d2",
        nn.Conv2d,
        {"in_channels": 3, "out_channels": 4, "kernel_size": 3, "stride": 2, "padding": 2, "dilation": 2},
        (1, 3, 9, 9),
        3,  # rank == in_channels: A's shape alone would not tell conv from transposed conv
    ),
    (
        "conv2d_k1_nobias",
        nn.Conv2d,
        {"in_channels": 4, "out_channels": 2, "kernel_size": 1, "bias": False},
        (1, 4, 5, 5),
        1,
    ),
    (
        "conv2d_rect",
        nn.Conv2d,
        {"in_channels": 2, "out_channels": 3, "kernel_size": (3, 1), "stride": (2, 1), "padding": (1, 0)},
        (1, 2, 7, 6),
        4,  # rank > in_channels is allowed
    ),
    pytest.param(
        "conv2d_same_even_k",  # asymmetric "same" padding; torch warns that it pads a copy of the input
        nn.Conv2d,
        {"in_channels": 2, "out_channels": 3, "kernel_size": 4, "padding": "same"},
        (1, 2, 6, 6),
        2,
        marks=pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel"),
    ),
    (
        "conv3d_k3_s2",
        nn.Conv3d,
        {"in_channels": 2, "out_channels": 3, "kernel_size": 3, "stride": 2, "padding": 1},
        (1, 2, 5, 5, 5),
        2,
    ),
    (
        "conv3d_k2_d2",
        nn.Conv3d,
        {"in_channels": 3, "out_channels": 2, "kernel_size": 2, "dilation": 2, "bias": False},
        (1, 3, 5, 5, 5),
        1,
    ),
    (
        "convT2d_k3_s2_op1",
        nn.ConvTranspose2d,
        {
            "in_channels": 3,
            "out_channels": 5,
            "kernel_size": 3,
            "stride": 2,
            "padding": 1,
            "output_padding": 1,
        },
        (2, 3, 4, 4),
        3,  # rank == in_channels
    ),
    (
        "convT2d_k2_s2",
        nn.ConvTranspose2d,
        {"in_channels": 4, "out_channels": 2, "kernel_size": 2, "stride": 2},
        (1, 4, 3, 3),
        2,
    ),
    (
        "convT2d_k3_s2_d2_op1",
        nn.ConvTranspose2d,
        {
            "in_channels": 2,
            "out_channels": 3,
            "kernel_size": 3,
            "stride": 2,
            "padding": 2,
            "dilation": 2,
            "output_padding": 1,
        },
        (1, 2, 4, 5),
        2,
    ),
    (
        "convT2d_rect",
        nn.ConvTranspose2d,
        {
            "in_channels": 2,
            "out_channels": 3,
            "kernel_size": (3, 2),
            "stride": (2, 1),
            "padding": (1, 0),
            "output_padding": (1, 0),
            "bias": False,
        },
        (1, 2, 3, 4),
        5,
    ),
    (
        "convT3d_k3_s2_op1",
        nn.ConvTranspose3d,
        {
            "in_channels": 2,
            "out_channels": 3,
            "kernel_size": 3,
            "stride": 2,
            "padding": 1,
            "output_padding": 1,
        },
        (1, 2, 3, 3, 3),
        2,
    ),
    (
        "convT3d_k2_s2",
        nn.ConvTranspose3d,
        {"in_channels": 3, "out_channels": 2, "kernel_size": 2, "stride": 2},
        (1, 3, 2, 3, 2),
        1,
    ),
]
LAYER_IDS = [c.values[0] if hasattr(c, "values") else c[0] for c in LAYER_CASES]

UNET_ARGS = {
    "spatial_dims": 2,
    "in_channels": 1,
    "out_channels": 4,
    "channels": (8, 16, 32),
    "strides": (2, 2),
    "num_res_units": 2,
}


def _make_layer(conv_type: type[nn.Module], kwargs: dict, rank: int, alpha: float | None = None, seed: int = 0):
    torch.manual_seed(seed)
    base = conv_type(**kwargs)
    reference = copy.deepcopy(base)
    return LoRAConv(base, rank=rank, alpha=alpha, name="layer"), reference


def _randomise_b(module: nn.Module, seed: int = 1, std: float = 0.2) -> None:
    gen = torch.Generator().manual_seed(seed)
    layers = [module] if isinstance(module, LoRAConv) else list(lora_modules(module).values())
    with torch.no_grad():
        for layer in layers:
            layer.lora_b.weight.copy_(torch.randn(layer.lora_b.weight.shape, generator=gen) * std)


def _input(shape: tuple[int, ...], seed: int = 2) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def unet_pair() -> tuple[nn.Module, nn.Module]:
    """(plain UNet, injected copy with rank 4)."""
    torch.manual_seed(0)
    plain = UNet(**UNET_ARGS).eval()
    injected = copy.deepcopy(plain)
    inject_lora(injected, rank=4)
    return plain, injected


# --------------------------------------------------------------------------------------------- layer


@pytest.mark.parametrize("name, conv_type, kwargs, shape, rank", LAYER_CASES, ids=LAYER_IDS)
def test_identity_at_init(name, conv_type, kwargs, shape, rank):
    layer, reference = _make_layer(conv_type, kwargs, rank)
    x = _input(shape)
    assert torch.count_nonzero(layer.lora_b.weight) == 0
    assert torch.equal(layer(x), reference(x))
    assert torch.equal(layer.delta_weight(), torch.zeros_like(reference.weight))


@pytest.mark.parametrize("name, conv_type, kwargs, shape, rank", LAYER_CASES, ids=LAYER_IDS)
def test_layout_and_names(name, conv_type, kwargs, shape, rank):
    layer, reference = _make_layer(conv_type, kwargs, rank)
    transposed = conv_type in (nn.ConvTranspose2d, nn.ConvTranspose3d)
    assert layer.transposed is transposed
    assert layer.b_name == ("lora_B_T" if transposed else "lora_B")
    # the factor with the base's kernel and geometry: B (transposed conv, output side) or A (conv, input side)
    shaped, pointwise = (layer.lora_b, layer.lora_A) if transposed else (layer.lora_A, layer.lora_b)
    assert type(shaped) is conv_type and shaped.bias is None
    assert shaped.kernel_size == reference.kernel_size and shaped.stride == reference.stride
    assert shaped.padding == reference.padding and shaped.dilation == reference.dilation
    if transposed:
        assert shaped.output_padding == reference.output_padding
        assert layer.lora_b.weight.shape == (rank, reference.out_channels, *reference.kernel_size)
    else:
        assert layer.lora_A.weight.shape == (rank, reference.in_channels, *reference.kernel_size)
    ones = (1,) * (len(shape) - 2)
    assert type(pointwise) in (nn.Conv2d, nn.Conv3d) and pointwise.bias is None
    assert pointwise.kernel_size == ones and pointwise.stride == ones and pointwise.padding == (0,) * len(ones)
    assert layer.lora_A.weight.shape[0] == rank  # the rank is A.shape[0] for both kinds
    assert layer.delta_weight().shape == reference.weight.shape
    assert not any(p.requires_grad for p in layer.base.parameters())


@pytest.mark.parametrize("alpha", [None, 0.5, 16.0])
@pytest.mark.parametrize("name, conv_type, kwargs, shape, rank", LAYER_CASES, ids=LAYER_IDS)
def test_merged_equals_unmerged(name, conv_type, kwargs, shape, rank, alpha):
    layer, _ = _make_layer(conv_type, kwargs, rank, alpha=alpha)
    assert layer.scaling == pytest.approx((alpha if alpha is not None else rank) / rank)
    _randomise_b(layer)
    x = _input(shape)
    unmerged = layer(x)
    assert not torch.allclose(unmerged, layer.base(x))  # the adapter does something
    layer.merge()
    assert layer.merged
    torch.testing.assert_close(layer(x), unmerged, **TOL)


@pytest.mark.parametrize("name, conv_type, kwargs, shape, rank", LAYER_CASES, ids=LAYER_IDS)
def test_delta_matches_functional_conv(name, conv_type, kwargs, shape, rank):
    """An independent check of the factorisation: F.conv*(x, W0 + ΔW) equals the unmerged output."""
    layer, reference = _make_layer(conv_type, kwargs, rank, alpha=3.0)
    _randomise_b(layer)
    x = _input(shape)
    with torch.no_grad():
        reference.weight += layer.delta_weight()
    torch.testing.assert_close(reference(x), layer(x), **TOL)


@pytest.mark.parametrize("name, conv_type, kwargs, shape, rank", LAYER_CASES, ids=LAYER_IDS)
def test_merge_unmerge_restores_and_delta_is_difference(name, conv_type, kwargs, shape, rank):
    layer, _ = _make_layer(conv_type, kwargs, rank)
    _randomise_b(layer)
    w0 = layer.base.weight.detach().clone()
    layer.merge()
    merged = layer.base.weight.detach().clone()
    torch.testing.assert_close(merged - w0, layer.delta_weight().detach(), **TOL)
    layer.unmerge()
    assert not layer.merged
    torch.testing.assert_close(layer.base.weight.detach(), w0, atol=1e-6, rtol=0.0)


@pytest.mark.parametrize(
    "name, conv_type, kwargs, shape, rank",
    [LAYER_CASES[LAYER_IDS.index("conv2d_k3")], LAYER_CASES[LAYER_IDS.index("convT2d_k3_s2_op1")]],
    ids=["conv", "convT"],
)
def test_reset_adapter_is_deterministic_and_commits_a_merge(name, conv_type, kwargs, shape, rank):
    layer, _ = _make_layer(conv_type, kwargs, rank)
    _randomise_b(layer)
    torch.manual_seed(5)
    layer.reset_adapter()
    a1 = layer.lora_A.weight.detach().clone()
    torch.manual_seed(5)
    layer.reset_adapter()
    assert torch.equal(layer.lora_A.weight, a1)
    assert torch.count_nonzero(layer.lora_b.weight) == 0

    _randomise_b(layer)
    x = _input(shape)
    adapted = layer(x)
    layer.merge()
    layer.reset_adapter()  # the round's update stays in W0, the new adapter starts at zero
    assert not layer.merged
    torch.testing.assert_close(layer(x), adapted, **TOL)
    torch.testing.assert_close(layer.base(x), adapted, **TOL)


@pytest.mark.parametrize("conv_type", [nn.ConvTranspose2d, nn.ConvTranspose3d])
def test_transposed_output_size(conv_type):
    dims = 2 if conv_type is nn.ConvTranspose2d else 3
    layer, reference = _make_layer(conv_type, {"in_channels": 2, "out_channels": 3, "kernel_size": 3, "stride": 2}, 2)
    x = _input((1, 2) + (3,) * dims)
    size = (8,) * dims  # 7 without output_size; 8 needs output_padding 1
    assert torch.equal(layer(x, output_size=size), reference(x, output_size=size))
    _randomise_b(layer)
    unmerged = layer(x, output_size=size)
    assert unmerged.shape[2:] == size
    layer.merge()
    torch.testing.assert_close(layer(x, output_size=size), unmerged, **TOL)


def test_dropout_only_on_adapter_path():
    torch.manual_seed(0)
    layer = LoRAConv(nn.Conv2d(2, 3, 3, padding=1), rank=2, dropout=0.5)
    assert isinstance(layer.lora_dropout, nn.Dropout) and layer.lora_dropout.p == 0.5
    assert isinstance(LoRAConv(nn.Conv2d(2, 3, 3), rank=2).lora_dropout, nn.Identity)
    x = _input((1, 2, 6, 6))
    layer.train()
    assert torch.equal(layer(x), layer.base(x))  # B = 0: dropout cannot change the output at init
    _randomise_b(layer)
    layer.eval()
    eval_out = layer(x)
    layer.train()
    assert not torch.allclose(layer(x), eval_out)


def test_gradients_reach_only_the_adapter():
    net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.PReLU(), nn.ConvTranspose2d(3, 2, 2, stride=2))
    inject_lora(net, rank=2)
    net(_input((1, 1, 6, 6))).square().sum().backward()
    grads = {n: p.grad for n, p in net.named_parameters()}
    assert grads["2.lora_B_T.weight"] is not None and grads["2.lora_B_T.weight"].abs().sum() > 0
    assert all(g is None for n, g in grads.items() if "lora_" not in n)


# ------------------------------------------------------------------------------------ layer ill cases


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"rank": 0}, "`rank`"),
        ({"rank": -2}, "`rank`"),
        ({"rank": 2.0}, "`rank`"),
        ({"rank": True}, "`rank`"),
        ({"rank": 2, "alpha": 0.0}, "`alpha`"),
        ({"rank": 2, "alpha": -1.0}, "`alpha`"),
        ({"rank": 2, "alpha": math.nan}, "`alpha`"),
        ({"rank": 2, "alpha": math.inf}, "`alpha`"),
        ({"rank": 2, "dropout": -0.1}, "`dropout`"),
        ({"rank": 2, "dropout": 1.0}, "`dropout`"),
        ({"rank": 2, "dropout": math.nan}, "`dropout`"),
    ],
    ids=[
        "rank0",
        "rank_neg",
        "rank_float",
        "rank_bool",
        "alpha0",
        "alpha_neg",
        "alpha_nan",
        "alpha_inf",
        "dropout_neg",
        "dropout_1",
        "dropout_nan",
    ],
)
def test_bad_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LoRAConv(nn.Conv2d(2, 3, 3), **kwargs)
    net = nn.Sequential(nn.Conv2d(2, 3, 3))
    with pytest.raises(ValueError, match=match):
        inject_lora(net, **kwargs)
    assert not lora_modules(net)


@pytest.mark.parametrize(
    "module, match",
    [
        (nn.Conv2d(4, 4, 3, groups=2), "groups=2"),
        (nn.ConvTranspose2d(4, 4, 3, groups=4), "groups=4"),
        (nn.Conv2d(2, 3, 3, padding=1, padding_mode="reflect"), "padding_mode='reflect'"),
        (nn.Conv1d(2, 3, 3), "Conv1d"),
        (nn.Linear(2, 3), "Linear"),
        (nn.LazyConv2d(3, 3), "lazy"),
    ],
    ids=["groups", "groups_transposed", "padding_mode", "conv1d", "linear", "lazy"],
)
def test_unsupported_module(module, match):
    with pytest.raises(ValueError, match=rf"`enc\.conv`.*{match}|{match}.*`enc\.conv`|`enc\.conv` has {match}"):
        LoRAConv(module, rank=2, name="enc.conv")


def test_merge_twice_and_unmerge_unmerged():
    layer = LoRAConv(nn.Conv2d(2, 3, 3), rank=2, name="enc.conv")
    with pytest.raises(ValueError, match=r"`enc\.conv` is not merged"):
        layer.unmerge()
    layer.merge()
    with pytest.raises(ValueError, match=r"`enc\.conv` is already merged"):
        layer.merge()


def test_output_size_on_regular_conv():
    layer = LoRAConv(nn.Conv2d(2, 3, 3), rank=2, name="enc.conv")
    with pytest.raises(ValueError, match="`output_size`"):
        layer(_input((1, 2, 5, 5)), output_size=(3, 3))


@pytest.mark.parametrize("bad", [math.inf, math.nan], ids=["inf", "nan"])
def test_safe_merge_refuses_non_finite(bad):
    layer = LoRAConv(nn.ConvTranspose2d(2, 3, 3, stride=2), rank=2, name="dec.up")
    with torch.no_grad():
        layer.lora_b.weight[0, 0] = bad
    w0 = layer.base.weight.detach().clone()
    with pytest.raises(ValueError, match=r"`dec\.up`.*non-finite"):
        layer.merge(safe=True)
    assert torch.equal(layer.base.weight, w0) and not layer.merged
    layer.merge(safe=False)  # the unsafe merge does what it is told
    assert not torch.isfinite(layer.base.weight).all()


def test_lora_delta_bad_shapes():
    with pytest.raises(ValueError, match=r"\(2, 3, 3, 3\).*\(5, 4, 1, 1\)"):
        layers_module.lora_delta(torch.ones(2, 3, 3, 3), torch.ones(5, 4, 1, 1), 1.0, transposed=False)


# --------------------------------------------------------------------------------------- model: UNet


def test_unet_every_conv_replaced(unet_pair):
    plain, injected = unet_pair
    expected = [n for n, m in plain.named_modules() if type(m) in (nn.Conv2d, nn.ConvTranspose2d)]
    n_transposed = sum(type(m) is nn.ConvTranspose2d for m in plain.modules())
    assert len(expected) == 13 and n_transposed == 2  # counted independently of inject_lora
    assert list(lora_modules(injected)) == expected
    assert sum(m.transposed for m in lora_modules(injected).values()) == n_transposed
    # no bare convolution is left outside a wrapper
    wrapped = {id(m) for w in lora_modules(injected).values() for m in (w.base, w.lora_A, w.lora_b)}
    assert all(id(m) in wrapped for m in injected.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)))


def test_inject_returns_names_and_freezes(unet_pair):
    plain, _ = unet_pair
    net = copy.deepcopy(plain)
    names = inject_lora(net, rank=2, alpha=4.0)
    assert names == list(lora_modules(net))
    assert set(lora_scalings(net).values()) == {2.0}
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    assert trainable == set(lora_state_dict(net))
    for p in net.parameters():
        p.requires_grad_(True)
    mark_only_lora_trainable(net)
    assert {n for n, p in net.named_parameters() if p.requires_grad} == trainable


def test_unet_identity_at_init_and_shape(unet_pair):
    plain, injected = unet_pair
    x = _input((2, 1, 16, 16))
    out = injected(x)
    assert out.shape == (2, 4, 16, 16)
    assert torch.equal(out, plain(x))


def test_unet_base_state_dict_loads_into_plain_unet(unet_pair):
    plain, injected = unet_pair
    state = base_state_dict(injected)
    assert list(state) == list(plain.state_dict())
    fresh = UNet(**UNET_ARGS).eval()
    fresh.load_state_dict(state, strict=True)
    for key, value in plain.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key


def test_unet_merged_export_matches_adapted_model(unet_pair):
    """merge → base_state_dict → plain UNet computes what the adapted model computes."""
    plain, injected = unet_pair
    _randomise_b(injected, std=0.05)
    x = _input((1, 1, 16, 16))
    adapted = injected(x)
    deltas = lora_delta_state_dict(injected)
    merge_lora(injected)
    exported = UNet(**UNET_ARGS).eval()
    exported.load_state_dict(base_state_dict(injected), strict=True)
    torch.testing.assert_close(exported(x), adapted, **TOL)
    # the merged weight is W0 + ΔW, key for key
    for key, delta in deltas.items():
        torch.testing.assert_close(exported.state_dict()[key], plain.state_dict()[key] + delta, **TOL)
    unmerge_lora(injected)
    torch.testing.assert_close(injected(x), adapted, **TOL)


def test_unet_delta_keys_are_plain_weight_keys(unet_pair):
    plain, injected = unet_pair
    deltas = lora_delta_state_dict(injected)
    plain_state = plain.state_dict()
    assert "model.0.conv.unit0.conv.weight" in deltas
    assert list(deltas) == [f"{n}.weight" for n in lora_modules(injected)]
    for key, delta in deltas.items():
        assert delta.shape == plain_state[key].shape, key


@pytest.mark.parametrize("per_module", [False, True], ids=["float", "mapping"])
def test_adapter_delta_from_state_equals_model_delta(unet_pair, per_module):
    _, injected = unet_pair
    _randomise_b(injected)
    state = lora_state_dict(injected)
    scaling = lora_scalings(injected) if per_module else 1.0
    server = adapter_delta_from_state(state, scaling)
    local = lora_delta_state_dict(injected)
    assert list(server) == list(local)
    for key in local:
        assert torch.equal(server[key], local[key]), key


@pytest.mark.parametrize("name, conv_type, kwargs, shape, rank", LAYER_CASES, ids=LAYER_IDS)
def test_adapter_delta_from_state_per_layer(name, conv_type, kwargs, shape, rank):
    torch.manual_seed(0)
    net = nn.Sequential(conv_type(**kwargs))
    inject_lora(net, rank=rank, alpha=2.0)
    _randomise_b(net)
    server = adapter_delta_from_state(lora_state_dict(net), lora_scalings(net))
    assert torch.equal(server["0.weight"], lora_delta_state_dict(net)["0.weight"])


@pytest.mark.parametrize("name, conv_type, kwargs, shape, rank", LAYER_CASES, ids=LAYER_IDS)
def test_state_dict_round_trip(name, conv_type, kwargs, shape, rank):
    torch.manual_seed(0)
    plain = nn.Sequential(conv_type(**kwargs), nn.PReLU())
    sender, receiver = copy.deepcopy(plain), copy.deepcopy(plain)
    inject_lora(sender, rank=rank)
    torch.manual_seed(99)  # a different A in the receiver
    inject_lora(receiver, rank=rank)
    _randomise_b(sender)
    x = _input(shape)
    assert not torch.allclose(receiver(x), sender(x))
    state = lora_state_dict(sender)
    assert all(v.device.type == "cpu" and not v.requires_grad for v in state.values())
    load_lora_state_dict(receiver, state)
    assert torch.equal(receiver(x), sender(x))


def test_reset_lora_restores_identity(unet_pair):
    plain, injected = unet_pair
    _randomise_b(injected)
    x = _input((1, 1, 16, 16))
    torch.manual_seed(3)
    reset_lora(injected)
    a_first = lora_state_dict(injected)
    assert torch.equal(injected(x), plain(x))
    torch.manual_seed(3)
    reset_lora(injected)
    for key, value in lora_state_dict(injected).items():
        assert torch.equal(value, a_first[key]), key


def test_param_count_and_bytes(unet_pair):
    plain, injected = unet_pair
    counts = lora_param_count(injected)
    plain_params = sum(p.numel() for p in plain.parameters())
    adapter_numel = sum(v.numel() for v in lora_state_dict(injected).values())
    assert counts["base_params"] == plain_params
    assert counts["adapter_params"] == counts["trainable_params"] == adapter_numel
    assert counts["adapter_bytes"] == 4 * adapter_numel
    assert counts["model_bytes"] == 4 * sum(v.numel() for v in plain.state_dict().values())
    assert counts["adapter_fraction"] == pytest.approx(counts["adapter_bytes"] / counts["model_bytes"])


@pytest.mark.parametrize(
    "state, dtype, expected",
    [
        ({"w": torch.zeros(2, 3)}, None, 24),
        ({"w": torch.zeros(2, 3, dtype=torch.float16)}, None, 12),
        ({"w": torch.zeros(2, 3, dtype=torch.float16)}, torch.float32, 24),
        ({"w": torch.zeros(4), "n": torch.zeros((), dtype=torch.int64)}, torch.float32, 24),
        ({}, torch.float32, 0),
    ],
    ids=["fp32", "fp16", "fp16_as_fp32", "int_kept", "empty"],
)
def test_state_bytes(state, dtype, expected):
    assert state_bytes(state, dtype) == expected


@pytest.mark.parametrize(
    "key, plain",
    [
        ("model.0.conv.base.weight", "model.0.conv.weight"),
        ("model.0.conv.base.bias", "model.0.conv.bias"),
        ("model.0.conv.lora_A.weight", None),
        ("model.0.conv.lora_B.weight", None),
        ("model.1.up.lora_B_T.weight", None),
        ("model.0.conv1.base.weight", "model.0.conv1.base.weight"),  # not an adapted module
        ("model.2.adn.A.weight", "model.2.adn.A.weight"),
    ],
    ids=["base_weight", "base_bias", "lora_A", "lora_B", "lora_B_T", "prefix_lookalike", "other"],
)
def test_key_mapping(key, plain):
    names = {"model.0.conv", "model.1.up"}
    assert unwrap_key(key, names) == plain
    if plain is not None and key.split(".base.")[0] in names:
        assert wrap_key(plain, names) == key


def test_target_and_exclude_patterns(unet_pair):
    plain, _ = unet_pair
    net = copy.deepcopy(plain)
    names = inject_lora(net, rank=2, target_modules=("model.1.*",), exclude_modules=("*.residual",))
    assert names and all(n.startswith("model.1.") and not n.endswith("residual") for n in names)
    assert "model.1.submodule.2.0.conv" in names  # a transposed conv
    assert "model.0.conv.unit0.conv" not in lora_modules(net)


# ------------------------------------------------------------------------------------ model ill cases


def test_inject_no_match_lists_names(unet_pair):
    plain, _ = unet_pair
    with pytest.raises(ValueError, match=r"No convolution matched.*available: model\.0\.conv\.unit0\.conv"):
        inject_lora(copy.deepcopy(plain), rank=2, target_modules=("decoder.*",))
    with pytest.raises(ValueError, match="No convolution matched"):
        inject_lora(copy.deepcopy(plain), rank=2, exclude_modules=("*",))


def test_inject_twice(unet_pair):
    _, injected = unet_pair
    with pytest.raises(ValueError, match="already has LoRA adapters"):
        inject_lora(injected, rank=2)


@pytest.mark.parametrize(
    "net, match",
    [
        (nn.Sequential(nn.Conv2d(2, 4, 3), nn.Conv1d(4, 2, 3)), r"`1` is a Conv1d"),
        (nn.Sequential(nn.Conv2d(2, 4, 3), nn.Conv2d(4, 4, 3, groups=2)), r"`1` has groups=2"),
        (
            nn.Sequential(nn.Conv2d(2, 4, 3), nn.Conv2d(4, 4, 3, padding_mode="circular", padding=1)),
            r"`1` has padding_mode='circular'",
        ),
    ],
    ids=["conv1d", "groups", "padding_mode"],
)
def test_inject_unsupported_leaves_model_untouched(net, match):
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(ValueError, match=match):
        inject_lora(net, rank=2)
    assert not lora_modules(net)
    assert all(torch.equal(net.state_dict()[k], v) for k, v in before.items())
    assert all(p.requires_grad for p in net.parameters())


@pytest.mark.parametrize(
    "model, kwargs, match",
    [
        (nn.Sequential(nn.Conv2d(1, 2, 3)), {"target_modules": "0"}, "`target_modules`"),
        (nn.Sequential(nn.Conv2d(1, 2, 3)), {"target_modules": ()}, "`target_modules` is empty"),
        (nn.Sequential(nn.Conv2d(1, 2, 3)), {"exclude_modules": "0"}, "`exclude_modules`"),
        (nn.Sequential(nn.Sequential(nn.Conv2d(1, 2, 3))), {"target_modules": ("0",)}, "`0`, a Sequential"),
        (nn.Conv2d(1, 2, 3), {}, "`model` is itself a Conv2d"),
    ],
    ids=["str_target", "empty_target", "str_exclude", "non_conv_named", "root_conv"],
)
def test_inject_bad_arguments(model, kwargs, match):
    with pytest.raises(ValueError, match=match):
        inject_lora(model, rank=2, **kwargs)


def test_inject_shared_module():
    conv = nn.Conv2d(2, 2, 3, padding=1)
    with pytest.raises(ValueError, match="shared under several names"):
        inject_lora(nn.Sequential(conv, conv), rank=2)


@pytest.mark.parametrize(
    "fn",
    [
        lora_state_dict,
        lora_delta_state_dict,
        base_state_dict,
        merge_lora,
        unmerge_lora,
        reset_lora,
        mark_only_lora_trainable,
        lora_scalings,
        lora_param_count,
        lambda m: load_lora_state_dict(m, {}),
    ],
    ids=["state", "delta", "base", "merge", "unmerge", "reset", "mark", "scalings", "count", "load"],
)
def test_model_without_adapters(fn):
    with pytest.raises(ValueError, match="no LoRAConv modules"):
        fn(nn.Sequential(nn.Conv2d(1, 2, 3)))


def test_model_merge_twice_and_unmerge_unmerged(unet_pair):
    _, injected = unet_pair
    with pytest.raises(ValueError, match=r"model\.0\.conv\.unit0\.conv.*not merged"):
        unmerge_lora(injected)
    merge_lora(injected)
    with pytest.raises(ValueError, match="already merged"):
        merge_lora(injected)
    with pytest.raises(ValueError, match="unmerge before loading"):
        load_lora_state_dict(injected, lora_state_dict(injected))


def test_model_safe_merge_is_all_or_nothing(unet_pair):
    _, injected = unet_pair
    _randomise_b(injected)
    with torch.no_grad():
        lora_modules(injected)["model.2.0.conv"].lora_b.weight[0, 0] = math.inf
    before = base_state_dict(injected)
    with pytest.raises(ValueError, match=r"model\.2\.0\.conv.*non-finite"):
        merge_lora(injected, safe=True)
    after = base_state_dict(injected)
    assert all(torch.equal(after[k], v) for k, v in before.items())
    assert not any(m.merged for m in lora_modules(injected).values())


def _corrupt(state: dict, how: str) -> tuple[dict, str]:
    state = dict(state)
    a_key, b_key = "model.0.conv.unit0.conv.lora_A.weight", "model.2.0.conv.lora_B_T.weight"
    if how == "missing":
        del state[b_key]
        return state, r"missing keys: model\.2\.0\.conv\.lora_B_T\.weight"
    if how == "unexpected":
        state["model.0.conv.unit0.conv.lora_C.weight"] = torch.zeros(1)
        return state, r"unexpected keys: model\.0\.conv\.unit0\.conv\.lora_C\.weight"
    if how == "shape":
        state[a_key] = torch.zeros(3, 1, 3, 3)
        return (
            state,
            r"model\.0\.conv\.unit0\.conv\.lora_A\.weight \(expected \(4, 1, 3, 3\), got \(3, 1, 3, 3\)\)",
        )
    if how == "nan":
        state[b_key] = torch.full_like(state[b_key], math.nan)
        return state, r"non-finite values: model\.2\.0\.conv\.lora_B_T\.weight"
    if how == "not_tensor":
        state[b_key] = [0.0]
        return state, r"not floating-point tensors: model\.2\.0\.conv\.lora_B_T\.weight"
    raise AssertionError(how)


@pytest.mark.parametrize("how", ["missing", "unexpected", "shape", "nan", "not_tensor"])
def test_load_refuses_bad_state_and_changes_nothing(unet_pair, how):
    _, injected = unet_pair
    other = copy.deepcopy(injected)
    _randomise_b(other)
    state, match = _corrupt(lora_state_dict(other), how)
    before = lora_state_dict(injected)
    with pytest.raises(ValueError, match=match):
        load_lora_state_dict(injected, state)
    after = lora_state_dict(injected)
    assert all(torch.equal(after[k], v) for k, v in before.items())


def _small_state() -> dict[str, torch.Tensor]:
    return {
        "enc.lora_A.weight": torch.ones(2, 3, 3, 3),
        "enc.lora_B.weight": torch.ones(4, 2, 1, 1),
        "up.lora_A.weight": torch.ones(2, 4, 1, 1),
        "up.lora_B_T.weight": torch.ones(2, 3, 2, 2),
    }


@pytest.mark.parametrize(
    "change, scaling, match",
    [
        ({"enc.lora_X.weight": torch.ones(1)}, 1.0, r"not adapter keys.*enc\.lora_X\.weight"),
        ({"enc.lora_B.weight": None}, 1.0, r"exactly one A and one B: enc"),
        ({"up.lora_B.weight": torch.ones(3, 2, 1, 1)}, 1.0, r"exactly one A and one B: up"),
        (
            {"enc.lora_B.weight": torch.ones(4, 3, 1, 1)},
            1.0,
            r"`enc\.lora_A\.weight`.*\(2, 3, 3, 3\).*\(4, 3, 1, 1\)",
        ),
        ({"up.lora_B_T.weight": torch.ones(3, 2, 2, 2)}, 1.0, r"`up\.lora_B_T\.weight`.*\[r, out, \*k\]"),
        ({"up.lora_A.weight": torch.ones(2, 4, 2, 2)}, 1.0, r"`up\.lora_A\.weight`.*\[r, in, 1, \.\.\]"),
        ({"enc.lora_B.weight": torch.ones(4, 2, 3, 3)}, 1.0, r"`enc\.lora_A\.weight`"),
        ({"enc.lora_B.weight": torch.full((4, 2, 1, 1), math.inf)}, 1.0, r"not finite.*enc\.lora_B\.weight"),
        (
            {"enc.lora_B.weight": torch.ones(4, 2, 1, 1, dtype=torch.int64)},
            1.0,
            r"floating.*enc\.lora_B\.weight",
        ),
        ({}, 0.0, "`scaling`"),
        ({}, math.nan, "`scaling`"),
        ({}, True, "`scaling`"),
        ({}, {"enc": 1.0}, r"missing: up"),
        ({}, {"enc": 1.0, "up": 1.0, "dec": 1.0}, r"unexpected: dec"),
        ({}, {"enc": 1.0, "up": -1.0}, r"`scaling\['up'\]`"),
    ],
    ids=[
        "unknown_key",
        "missing_b",
        "two_bs",
        "rank_mismatch",
        "wrong_kind_layout",
        "transposed_a_not_pointwise",
        "b_not_pointwise",
        "non_finite",
        "int_dtype",
        "scaling0",
        "scaling_nan",
        "scaling_bool",
        "scaling_missing",
        "scaling_extra",
        "scaling_negative",
    ],
)
def test_adapter_delta_from_state_refuses(change, scaling, match):
    state = _small_state()
    for key, value in change.items():
        if value is None:
            del state[key]
        else:
            state[key] = value
    with pytest.raises(ValueError, match=match):
        adapter_delta_from_state(state, scaling)


def test_adapter_delta_from_state_empty():
    with pytest.raises(ValueError, match="no adapter"):
        adapter_delta_from_state({}, 1.0)


def test_adapter_delta_kind_comes_from_the_key():
    """With a 1×1 kernel and out == r the two B layouts have the same shape; the key decides, and it matters."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 3, 1), nn.ConvTranspose2d(3, 3, 1))
    inject_lora(net, rank=3, target_modules=("0",))
    _randomise_b(net)
    state = lora_state_dict(net)
    assert state["0.lora_A.weight"].shape == state["0.lora_B.weight"].shape == (3, 3, 1, 1)
    relabelled = {k.replace("lora_B.", "lora_B_T."): v for k, v in state.items()}
    right = adapter_delta_from_state(state, 1.0)["0.weight"]
    wrong = adapter_delta_from_state(relabelled, 1.0)["0.weight"]
    torch.testing.assert_close(right, lora_delta_state_dict(net)["0.weight"], **TOL)
    assert right.shape == wrong.shape and not torch.allclose(right, wrong)


@pytest.mark.parametrize(
    "base, rank, expected",
    [
        (nn.Conv2d(4, 6, 3), 2, {"lora_A": (2, 4, 3, 3), "lora_B": (6, 2, 1, 1)}),
        (nn.ConvTranspose2d(8, 4, 2, stride=2), 2, {"lora_A": (2, 8, 1, 1), "lora_B_T": (2, 4, 2, 2)}),
        (nn.ConvTranspose3d(6, 3, 3, stride=2), 2, {"lora_A": (2, 6, 1, 1, 1), "lora_B_T": (2, 3, 3, 3, 3)}),
    ],
    ids=["conv2d", "convT2d", "convT3d"],
)
def test_state_dict_key_layout(base, rank, expected):
    """The keys tell the layout: A ``[r, in, *k_A]``; ``lora_B`` ``[out, r, 1..]`` or ``lora_B_T`` ``[r, out, *k]``."""
    net = nn.Sequential(base)
    inject_lora(net, rank=rank)
    state = lora_state_dict(net)
    assert {k: tuple(v.shape) for k, v in state.items()} == {f"0.{n}.weight": s for n, s in expected.items()}


def test_transposed_adapter_is_the_cheaper_side():
    """For an up-sampling layer (in > out) the kernel sits on B: r·(in + out·K) numbers, not r·(in·K + out)."""
    net = nn.Sequential(nn.ConvTranspose2d(64, 16, 3, stride=2))
    inject_lora(net, rank=4)
    assert lora_param_count(net)["adapter_params"] == 4 * (64 + 16 * 9) < 4 * (64 * 9 + 16)


def test_state_bytes_refuses_non_tensor():
    with pytest.raises(ValueError, match=r"`state`.*\bw\b"):
        state_bytes({"w": [1.0]})


@pytest.mark.parametrize("module", [layers_module, model_module, state_module], ids=["layers", "model", "state"])
def test_docstring_examples(module):
    result = doctest.testmod(module, extraglobs={"torch": torch, "nn": nn})
    assert result.failed == 0 and result.attempted > 0  # a module without examples would pass unseen
