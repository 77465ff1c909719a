"""Tests of the TenVOO tensor adapters, L and Q (cardiolora.lora.tensor, tensor_layer, tensor_model)."""

from __future__ import annotations

import doctest

import pytest
import torch
import torch.nn.functional as F
from monai.networks.nets import UNet
from torch import nn

import cardiolora.lora.adapters as adapters_module
import cardiolora.lora.tensor as tensor_module
import cardiolora.lora.tensor_layer as tensor_layer_module
import cardiolora.lora.tensor_model as tensor_model_module
from cardiolora.bundle import make_workflow
from cardiolora.fl.updates import apply_delta, combine_deltas
from cardiolora.lora import (
    LoRAConv,
    TensorConv,
    adapter_modules,
    balanced_factors,
    inject_lora,
    inject_tensor,
    load_tensor_state_dict,
    lora_param_count,
    lora_state_dict,
    merge_tensor,
    reset_tensor,
    state_bytes,
    tensor_delta_from_state,
    tensor_delta_state_dict,
    tensor_modules,
    tensor_param_count,
    tensor_state_dict,
    tenvoo_l_param_count,
    tenvoo_q_param_count,
    unmerge_tensor,
)
from cardiolora.lora.tensor import core_shapes, initial_cores, network_labels, network_of
from cardiolora.networks import ExportView, bundle_network_def, load_weights, lora_unet, plain_state_dict, with_lora

TOL = {"atol": 1e-5, "rtol": 1e-5}  # fp32 house tolerance

# name, base convolution, input shape, rank
LAYER_CASES = [
    ("conv2d", lambda: nn.Conv2d(6, 8, 3, padding=1), (2, 6, 7, 7), 2),
    ("conv2d_s2_d2_nobias", lambda: nn.Conv2d(4, 12, 3, stride=2, padding=2, dilation=2, bias=False), (1, 4, 9, 9), 3),
    ("conv2d_k1", lambda: nn.Conv2d(16, 4, 1), (1, 16, 5, 5), 2),
    ("convT2d", lambda: nn.ConvTranspose2d(12, 4, 3, stride=2, padding=1, output_padding=1), (2, 12, 5, 5), 2),
    ("conv3d", lambda: nn.Conv3d(4, 8, 3, padding=1), (1, 4, 5, 6, 4), 2),
    ("convT3d", lambda: nn.ConvTranspose3d(8, 4, 2, stride=2), (1, 8, 3, 3, 3), 2),
]
CASE_IDS = [c[0] for c in LAYER_CASES]
VARIANTS = ["L", "Q"]


def _perturb(model: nn.Module, scale: float = 0.05, seed: int = 1) -> None:
    """A stand-in for training: add noise to every trainable core."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in tensor_modules(model).values() if not isinstance(model, TensorConv) else [model]:
            for p in m.cores.values():
                p.add_(torch.randn(p.shape, generator=gen) * scale * p.abs().mean())


def _dense(base: nn.Module, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The base convolution computed directly with another weight."""
    geo = {"stride": base.stride, "padding": base.padding, "dilation": base.dilation}
    if isinstance(base, nn.ConvTranspose2d):
        return F.conv_transpose2d(x, weight, base.bias, output_padding=base.output_padding, **geo)
    if isinstance(base, nn.ConvTranspose3d):
        return F.conv_transpose3d(x, weight, base.bias, output_padding=base.output_padding, **geo)
    conv = F.conv3d if isinstance(base, nn.Conv3d) else F.conv2d
    return conv(x, weight, base.bias, **geo)


def test_doctests():
    for module in (tensor_module, tensor_layer_module, tensor_model_module, adapters_module):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0 and result.attempted > 0, module.__name__


@pytest.mark.parametrize(
    "n, factors",
    [
        (1, (1, 1, 1)),
        (2, (2, 1, 1)),
        (4, (2, 2, 1)),
        (16, (4, 2, 2)),
        (64, (4, 4, 4)),
        (96, (6, 4, 4)),
        (128, (8, 4, 4)),
        (192, (8, 6, 4)),
        (512, (8, 8, 8)),
        (7, (7, 1, 1)),
        (12, (3, 2, 2)),
    ],
)
def test_balanced_factors(n, factors):
    assert balanced_factors(n) == factors
    f1, f2, f3 = factors
    assert f1 * f2 * f3 == n and f1 >= f2 >= f3


@pytest.mark.parametrize("bad", [0, -3, 2.0, True])
def test_balanced_factors_ill(bad):
    with pytest.raises(ValueError, match="`n` must be an int >= 1"):
        balanced_factors(bad)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_every_bond_joins_two_cores(spatial_dims, variant):
    labels, output = network_labels(spatial_dims, variant)
    text = "".join(labels.values())
    bonds = {c for c in text if c.islower()}
    assert all(text.count(b) == 2 for b in bonds)
    assert sorted(c for c in text if c.isupper()) == sorted(output)
    assert len(labels) == {("L", 2): 8, ("L", 3): 10, ("Q", 2): 9, ("Q", 3): 10}[variant, spatial_dims]
    assert network_of(labels) == (variant, spatial_dims)


def test_network_of_unknown_cores():
    with pytest.raises(ValueError, match="form no TenVOO network"):
        network_of(["in12", "k0"])


@pytest.mark.parametrize(
    "c_in, c_out, kernel, rank",
    [(64, 64, (3, 3, 3), 4), (32, 128, (3, 3, 3), 2), (1, 16, (3, 3), 4), (192, 32, (3, 3), 2), (4, 4, (1, 1), 1)],
)
def test_param_count_is_eq6_and_the_core_sizes(c_in, c_out, kernel, rank):
    i1, i2, i3 = balanced_factors(c_in)
    o1, o2, o3 = balanced_factors(c_out)
    r = rank
    hub_k = 1 if len(kernel) == 3 else 0  # paper Eq. 6 is the 3-D case; 2-D has no hub_k
    eq6 = (i1 * i2 + o1 * o2) * r**2 + (i3 + o3 + sum(kernel) + hub_k) * r**3 + 2 * r**4
    shapes = core_shapes(c_in, c_out, kernel, rank)
    assert tenvoo_l_param_count(c_in, c_out, kernel, rank) == eq6
    assert sum(torch.Size(s).numel() for s in shapes.values()) == eq6
    # TenVOO-Q, paper Eq. 6: the middle kernel size on an r² core in 3-D, three r⁴ gates
    k = list(kernel)
    middle = k.pop(1) if len(k) == 3 else 0
    eq6_q = (i1 * i2 + o1 * o2 + middle) * r**2 + (i3 + o3 + sum(k)) * r**3 + 3 * r**4
    shapes_q = core_shapes(c_in, c_out, kernel, rank, "Q")
    assert tenvoo_q_param_count(c_in, c_out, kernel, rank) == eq6_q
    assert sum(torch.Size(s).numel() for s in shapes_q.values()) == eq6_q


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("name, make, shape, rank", LAYER_CASES, ids=CASE_IDS)
def test_zero_start_with_non_zero_cores(name, make, shape, rank, variant):
    torch.manual_seed(0)
    base = make()
    layer = TensorConv(base, rank=rank, seed=3, name=name, variant=variant)
    x = torch.randn(shape)
    assert all(p.abs().sum() > 0 for p in layer.cores.values())
    assert layer.frozen_full.abs().sum() > 0
    assert torch.equal(layer.delta_weight(), torch.zeros_like(base.weight))
    torch.testing.assert_close(layer(x), base(x), **TOL)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("name, make, shape, rank", LAYER_CASES, ids=CASE_IDS)
def test_forward_is_the_dense_conv_and_merge_unmerge_are_exact(name, make, shape, rank, variant):
    torch.manual_seed(0)
    base = make()
    w0 = base.weight.detach().clone()
    layer = TensorConv(base, rank=rank, seed=0, name=name, variant=variant)
    _perturb(layer)
    x = torch.randn(shape)
    delta = layer.delta_weight().detach()
    assert delta.shape == w0.shape and delta.abs().max() > 0
    y = layer(x)
    torch.testing.assert_close(y, _dense(base, x, w0 + delta), **TOL)
    layer.merge()
    torch.testing.assert_close(base.weight, w0 + delta, **TOL)
    torch.testing.assert_close(layer(x), y, **TOL)
    layer.unmerge()
    torch.testing.assert_close(base.weight, w0, **TOL)
    torch.testing.assert_close(layer(x), y, **TOL)


def test_transposed_output_size_and_conv_refuses_it():
    torch.manual_seed(0)
    layer = TensorConv(nn.ConvTranspose2d(4, 2, 3, stride=2, padding=1), rank=2)
    _perturb(layer)
    x = torch.randn(1, 4, 5, 5)
    y = layer(x, output_size=[10, 10])
    assert y.shape == (1, 2, 10, 10)
    expected = F.conv_transpose2d(x, layer.merged_weight(), layer.base.bias, stride=2, padding=1, output_padding=1)
    torch.testing.assert_close(y, expected, **TOL)
    with pytest.raises(ValueError, match="`output_size` is only valid"):
        TensorConv(nn.Conv2d(2, 2, 3), rank=1)(torch.zeros(1, 2, 5, 5), output_size=[3, 3])


def test_theta0_reproducible_from_the_seed():
    a, b, c = (nn.Sequential(nn.Conv2d(4, 8, 3), nn.ConvTranspose2d(8, 4, 2, stride=2)) for _ in range(3))
    torch.manual_seed(0)
    inject_tensor(a, rank=2, seed=7)
    torch.manual_seed(123)  # the global generator plays no part
    inject_tensor(b, rank=2, seed=7)
    inject_tensor(c, rank=2, seed=8)
    for name in ("0", "1"):
        ma, mb, mc = a.get_submodule(name), b.get_submodule(name), c.get_submodule(name)
        for core, t in ma.frozen_cores().items():
            assert torch.equal(t, mb.frozen_cores()[core])
            assert not torch.equal(t, mc.frozen_cores()[core])
    # different modules draw different cores from one seed
    assert not torch.equal(a[0].frozen_cores()["hub_in"], a[1].frozen_cores()["hub_in"])
    shapes = core_shapes(4, 8, (3, 3), 2)
    first, again = initial_cores(shapes, 7, "0", 36, 2), initial_cores(shapes, 7, "0", 36, 2)
    assert all(torch.equal(first[k], again[k]) and torch.equal(first[k], a[0].frozen_cores()[k]) for k in shapes)


def test_theta0_is_in_no_state_dict():
    net = nn.Sequential(nn.Conv2d(4, 8, 3))
    inject_tensor(net, rank=2)
    assert not any("theta0" in k or "frozen" in k for k in net.state_dict())
    labels, _ = network_labels(2)
    assert list(tensor_state_dict(net)) == [f"0.tenvoo.{c}" for c in labels]


def test_gradients_reach_only_the_trained_cores():
    torch.manual_seed(0)
    net = lora_unet("quick", adapter="tensor", tensor_rank=2, tensor_seed=0)
    net(torch.randn(2, 1, 48, 48)).square().mean().backward()
    cores = {id(p) for m in tensor_modules(net).values() for p in m.cores.values()}
    for name, p in net.named_parameters():
        if id(p) in cores:
            assert p.requires_grad and p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert not p.requires_grad and p.grad is None, name
    for m in tensor_modules(net).values():
        assert all(not t.requires_grad for t in m.frozen_cores().values()) and not m.frozen_full.requires_grad


def test_counts_and_bytes():
    net = bundle_network_def("quick")
    plain_bytes = state_bytes(net.state_dict(), torch.float32)
    names = inject_tensor(net, rank=2)
    counts = tensor_param_count(net)
    convs = {n: m.base for n, m in tensor_modules(net).items()}
    formula = sum(tenvoo_l_param_count(c.in_channels, c.out_channels, c.kernel_size, 2) for c in convs.values())
    assert len(names) == len(convs) and counts["adapter_params"] == formula
    assert counts["trainable_params"] == counts["adapter_params"]
    assert counts["adapter_bytes"] == 4 * formula
    assert counts["model_bytes"] == plain_bytes
    assert counts["base_params"] == sum(p.numel() for p in bundle_network_def("quick").parameters())
    assert state_bytes(tensor_state_dict(net), torch.float16) == 2 * formula


def test_quick_unet_upload_vs_lora_rank32():
    """The bundle's tensor_rank meets the issue's goal (≤ 2 % of the model per round, fp16) on `quick`."""
    tensor = lora_unet("quick", adapter="tensor")  # tensor_rank / tensor_seed from the bundle
    lora = lora_unet("quick", lora_rank=32)
    t_fp16 = state_bytes(tensor_state_dict(tensor), torch.float16)
    l_fp16 = state_bytes(lora_state_dict(lora), torch.float16)
    model_fp16 = state_bytes(plain_state_dict(tensor), torch.float16)
    fraction_of_model = t_fp16 / model_fp16
    fraction_of_lora = t_fp16 / l_fp16
    print(
        f"quick: tensor {t_fp16} B, LoRA r32 {l_fp16} B, model {model_fp16} B (fp16); "
        f"tensor/model {fraction_of_model:.4f}, tensor/LoRA {fraction_of_lora:.4f}"
    )
    assert fraction_of_model <= 0.02
    assert fraction_of_model == pytest.approx(tensor_param_count(tensor)["adapter_fraction"])
    assert fraction_of_lora == pytest.approx(
        tensor_param_count(tensor)["adapter_bytes"] / lora_param_count(lora)["adapter_bytes"]
    )


@pytest.mark.parametrize("variant", VARIANTS)
def test_server_delta_from_cores_and_seed_only(variant):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(4, 8, 3), nn.ConvTranspose2d(8, 4, 2, stride=2), nn.Conv2d(4, 1, 1))
    inject_tensor(net, rank=2, seed=5, variant=variant)
    _perturb(net)
    site = tensor_delta_state_dict(net)
    server = tensor_delta_from_state({k: v.double() for k, v in tensor_state_dict(net).items()}, seed=5)
    assert list(server) == list(site) == ["0.weight", "1.weight", "2.weight"]
    for k in site:
        assert server[k].dtype == torch.float64 and server[k].shape == site[k].shape
        torch.testing.assert_close(server[k].float(), site[k], **TOL)
    wrong_seed = tensor_delta_from_state(tensor_state_dict(net), seed=6)
    assert not torch.allclose(wrong_seed["0.weight"], site["0.weight"])


def test_mean_of_full_size_deltas_from_two_sites_is_the_dense_mean():
    """Two sites, same seed, different training: the existing aggregator on ΔW equals the dense mean."""
    torch.manual_seed(0)
    plain = nn.Sequential(nn.Conv2d(2, 8, 3, padding=1), nn.ConvTranspose2d(8, 4, 2, stride=2))
    weights = plain_state_dict(plain)
    sites = {}
    for i, site in enumerate(("site-a", "site-b")):
        net = nn.Sequential(nn.Conv2d(2, 8, 3, padding=1), nn.ConvTranspose2d(8, 4, 2, stride=2))
        net.load_state_dict(weights)
        inject_tensor(net, rank=2, seed=0)
        _perturb(net, seed=10 + i)
        sites[site] = net
    uploads = {s: {k: v.double() for k, v in tensor_state_dict(n).items()} for s, n in sites.items()}
    deltas = {s: tensor_delta_from_state(u, seed=0) for s, u in uploads.items()}
    mean = combine_deltas(deltas, {"site-a": 0.5, "site-b": 0.5})
    merged = apply_delta(weights, mean)
    for name in ("0", "1"):
        dense = sum(n.get_submodule(name).delta_weight().detach().double() for n in sites.values()) / 2
        torch.testing.assert_close(mean[f"{name}.weight"], dense, atol=1e-6, rtol=1e-6)
        expected = weights[f"{name}.weight"].double() + dense
        torch.testing.assert_close(merged[f"{name}.weight"].double(), expected, **TOL)
    # merging the mean into every site and resetting gives the same network everywhere
    for net in sites.values():
        load_weights(net, merged)
        reset_tensor(net)
    x = torch.randn(1, 2, 6, 6)
    torch.testing.assert_close(sites["site-a"](x), sites["site-b"](x), **TOL)


@pytest.mark.parametrize("variant", VARIANTS)
def test_unet_3d_forward_backward(variant):
    torch.manual_seed(0)
    net = UNet(spatial_dims=3, in_channels=1, out_channels=3, channels=(4, 8, 16), strides=(2, 2), num_res_units=1)
    x = torch.randn(1, 1, 16, 16, 16)
    y0 = net(x).detach()
    names = inject_tensor(net, rank=2, seed=0, variant=variant)
    assert any(isinstance(net.get_submodule(n).base, nn.ConvTranspose3d) for n in names)
    assert all(network_of(net.get_submodule(n).cores) == (variant, 3) for n in names)  # the 3-D network
    y = net(x)
    torch.testing.assert_close(y, y0, **TOL)
    y.square().mean().backward()
    grads = [p.grad for m in tensor_modules(net).values() for p in m.cores.values()]
    assert all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)
    torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=1e-2).step()
    assert not torch.allclose(net(x), y0, **TOL)


def test_model_merge_unmerge_reset():
    torch.manual_seed(0)
    net = lora_unet("quick", adapter="tensor", tensor_rank=2, tensor_seed=0)
    _perturb(net)
    x = torch.randn(1, 1, 32, 32)
    before = {k: v.clone() for k, v in plain_state_dict(net).items()}
    y = net(x)
    merge_tensor(net)
    torch.testing.assert_close(net(x), y, **TOL)
    with pytest.raises(ValueError, match="already merged"):
        merge_tensor(net)
    unmerge_tensor(net)
    after = plain_state_dict(net)
    assert all(torch.allclose(after[k], before[k], **TOL) for k in before)
    with pytest.raises(ValueError, match="not merged"):
        unmerge_tensor(net)
    merge_tensor(net)
    reset_tensor(net)  # the update stays folded in W, the adapter starts again from ΔW = 0
    assert not any(m.merged for m in tensor_modules(net).values())
    assert all(d.abs().max() == 0 for d in tensor_delta_state_dict(net).values())
    torch.testing.assert_close(net(x), y, **TOL)


def test_export_view_and_checkpoint_round_trip():
    torch.manual_seed(0)
    net = lora_unet("quick", adapter="tensor", tensor_rank=2, tensor_seed=0)
    _perturb(net)
    x = torch.randn(1, 1, 32, 32)
    plain = lora_unet("quick")
    plain.load_state_dict(ExportView(net).state_dict())
    torch.testing.assert_close(plain(x), net(x), **TOL)
    # a training checkpoint (base + cores, no θ0) restores the network built from the same seed
    again = lora_unet("quick", adapter="tensor", tensor_rank=2, tensor_seed=0)
    load_weights(again, net.state_dict())
    torch.testing.assert_close(again(x), net(x), **TOL)
    # plain weights load into a tensor network (adapter keys are not required)
    fresh = lora_unet("quick", adapter="tensor", tensor_rank=2, tensor_seed=0)
    load_weights(fresh, plain_state_dict(plain))
    torch.testing.assert_close(fresh(x), plain(x), **TOL)


def test_load_tensor_state_dict_round_trip_and_ill_cases():
    a = nn.Sequential(nn.Conv2d(4, 8, 3))
    b = nn.Sequential(nn.Conv2d(4, 8, 3))
    inject_tensor(a, rank=2)
    inject_tensor(b, rank=2)
    _perturb(a)
    load_tensor_state_dict(b, tensor_state_dict(a))
    assert all(torch.equal(v, tensor_state_dict(b)[k]) for k, v in tensor_state_dict(a).items())
    state = tensor_state_dict(a)
    state["0.tenvoo.in12"] = torch.zeros(3, 3, 3)
    with pytest.raises(ValueError, match=r"wrong shapes: 0.tenvoo.in12"):
        load_tensor_state_dict(b, state)
    with pytest.raises(ValueError, match="missing keys"):
        load_tensor_state_dict(b, {})


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda s: s.update({"0.lora_A.weight": torch.zeros(1)}), "not tensor-adapter keys"),
        (lambda s: s.pop("0.tenvoo.hub_out"), "form no TenVOO network"),
        (lambda s: s.update({"0.tenvoo.in3": torch.zeros(3, 2, 2, 2)}), "do not form a TenVOO network"),
        (lambda s: s.update({"0.tenvoo.k0": torch.full((3, 2, 2, 2), float("nan"))}), "not finite"),
        (lambda s: s.clear(), "holds no tensor adapter"),
    ],
    ids=["foreign_key", "missing_core", "wrong_shape", "nan", "empty"],
)
def test_tensor_delta_from_state_ill(edit, match):
    net = nn.Sequential(nn.Conv2d(4, 8, 3))
    inject_tensor(net, rank=2)
    state = tensor_state_dict(net)
    edit(state)
    with pytest.raises(ValueError, match=match):
        tensor_delta_from_state(state, seed=0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"rank": 0}, "`tensor_rank` must be an int >= 1"),
        ({"rank": 2, "seed": -1}, "`tensor_seed` must be an int >= 0"),
    ],
)
def test_inject_tensor_ill(kwargs, match):
    with pytest.raises(ValueError, match=match):
        inject_tensor(nn.Sequential(nn.Conv2d(2, 2, 3)), **kwargs)


def test_unsupported_and_double_injection():
    with pytest.raises(ValueError, match="groups=2; TensorConv supports only groups=1"):
        TensorConv(nn.Conv2d(4, 4, 3, groups=2), rank=1, name="g")
    net = nn.Sequential(nn.Conv2d(2, 2, 3))
    inject_lora(net, rank=1)
    with pytest.raises(ValueError, match="already has LoRA adapters"):
        inject_tensor(net, rank=1)


def test_with_lora_adapter_option():
    lora = with_lora(bundle_network_def("quick"), 4)
    assert adapter_modules(lora) and all(isinstance(m, LoRAConv) for m in adapter_modules(lora).values())
    assert not tensor_modules(lora)
    tensor = with_lora(bundle_network_def("quick"), 0, adapter="tensor", tensor_rank=2, tensor_seed=0)
    assert tensor_modules(tensor) and not any(isinstance(m, LoRAConv) for m in tensor.modules())
    plain = bundle_network_def("quick")
    assert with_lora(plain, 0, adapter="tensor", tensor_rank=0, tensor_seed=0) is plain and not tensor_modules(plain)
    with pytest.raises(ValueError, match="`adapter_type` must be one of"):
        with_lora(bundle_network_def("quick"), 4, adapter="lokr")
    with pytest.raises(ValueError, match="`tensor_rank` must be an integer >= 0"):
        with_lora(bundle_network_def("quick"), 0, adapter="tensor", tensor_seed=0)
    q = with_lora(bundle_network_def("quick"), 0, adapter="tensor", tensor_rank=2, tensor_seed=0, tensor_variant="Q")
    assert all(m.variant == "Q" and "gate_k" in m.cores for m in tensor_modules(q).values())
    with pytest.raises(ValueError, match="`tensor_variant` must be one of"):
        with_lora(bundle_network_def("quick"), 0, adapter="tensor", tensor_rank=2, tensor_seed=0, tensor_variant="X")


def test_bundle_workflow_builds_the_tensor_network(tmp_path):
    """`adapter_type: tensor` in the bundle gives the network `lora_unet(adapter="tensor")` gives."""
    overrides = {"adapter_type": "tensor", "dataset_dir": str(tmp_path), "device": "$torch.device('cpu')"}
    net = make_workflow("lora", overrides).parser.get_parsed_content("network")
    ref = lora_unet("quick", adapter="tensor")
    assert {k: v.shape for k, v in net.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    assert tensor_modules(net) and list(tensor_state_dict(net)) == list(tensor_state_dict(ref))
    default = make_workflow("lora", {"dataset_dir": str(tmp_path), "device": "$torch.device('cpu')"})
    assert not tensor_modules(default.parser.get_parsed_content("network"))  # LoRA stays the default
    q = make_workflow("lora", {**overrides, "tensor_variant": "Q"}).parser.get_parsed_content("network")
    assert list(tensor_state_dict(q)) == list(
        tensor_state_dict(lora_unet("quick", adapter="tensor", tensor_variant="Q"))
    )
