"""The site model (plain weights, or base + adapter merged once) and the batched cine predictor."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from cardiolora.lora import lora_modules, lora_state_dict
from cardiolora.networks import lora_unet, plain_state_dict
from cardiolora.predict import predict_cine, predict_volume
from cardiolora.site.model import (
    ModelError,
    SliceParallel,
    adapter_rank,
    intra_op_threads,
    load_site_model,
    pick_device,
)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Plain quick weights, and base + rank-2 adapter files of a network with non-zero adapters."""
    out = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    plain = lora_unet("quick")
    torch.save(plain_state_dict(plain), out / "model.pt")
    adapted = lora_unet("quick", lora_rank=2, lora_alpha=4.0)
    with torch.no_grad():
        for m in lora_modules(adapted).values():
            m.lora_b.weight.normal_(0, 0.05)
    torch.save(plain_state_dict(adapted), out / "base.pt")
    torch.save(lora_state_dict(adapted), out / "adapter.pt")
    return out, plain.eval(), adapted.eval()


def _x() -> torch.Tensor:
    return torch.randn(2, 1, 112, 112, generator=torch.Generator().manual_seed(1))


def test_plain_model_loads_with_its_hash(weights):
    out, plain, _ = weights
    m = load_site_model(out / "model.pt", profile="quick", device="cpu")
    assert m.sha256 == {"model": hashlib.sha256((out / "model.pt").read_bytes()).hexdigest()}
    assert m.model_sha256 == m.sha256["model"] and not m.network.training
    assert not any(p.requires_grad for p in m.network.parameters())
    with torch.inference_mode():
        torch.testing.assert_close(m.network(_x()), plain(_x()), atol=1e-5, rtol=1e-5)  # channels_last: same


def test_adapter_is_merged_once_into_a_plain_network(weights):
    """base + adapter (alpha 4, rank 2: scaling 2) gives the adapted network's outputs."""
    out, _, adapted = weights
    m = load_site_model(base=out / "base.pt", adapter=out / "adapter.pt", profile="quick", lora_alpha=4.0)
    assert not lora_modules(m.network), "the site network must be plain (adapters folded in)"
    assert m.lora == {"rank": 2, "alpha": 4.0}
    assert set(m.sha256) == {"base", "adapter"} and m.model_sha256 == m.sha256["adapter"]
    with torch.inference_mode():
        torch.testing.assert_close(m.network(_x()), adapted(_x()), atol=1e-5, rtol=1e-5)
    default = load_site_model(base=out / "base.pt", adapter=out / "adapter.pt", profile="quick")
    assert default.lora == {"rank": 2, "alpha": 2.0}  # alpha defaults to the rank (scaling 1)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({}, "either `model`"),
        ({"model": "model.pt", "base": "base.pt", "adapter": "adapter.pt"}, "either `model`"),
        ({"base": "base.pt"}, "go together"),
        ({"model": "absent.pt"}, r"model file .*absent\.pt: no such file"),
        ({"model": "garbage.pt"}, r"model file .*garbage\.pt: cannot read the checkpoint"),
        ({"model": "model.pt", "profile": "paper"}, r"model\.pt does not fit the 'paper' profile"),
        ({"model": "model.pt", "profile": "huge"}, "`profile` must be one of"),
        ({"base": "base.pt", "adapter": "model.pt"}, r"adapter file .*model\.pt: no `<name>\.lora_A\.weight`"),
        ({"base": "base.pt", "adapter": "nan_adapter.pt"}, r"adapter file .*non-finite"),
        ({"model": "model.pt", "device": "cuda:7"}, "CUDA is not available|not a torch device"),
    ],
    ids=[
        "neither",
        "both",
        "base-alone",
        "missing",
        "corrupt",
        "wrong-profile",
        "unknown-profile",
        "not-an-adapter",
        "non-finite-adapter",
        "absent-gpu",
    ],  # fmt: skip
)
def test_bad_model_files_raise_naming_the_file(weights, kwargs, match):
    out, _, _ = weights
    (out / "garbage.pt").write_bytes(b"not a checkpoint")
    bad = {k: v * float("nan") for k, v in torch.load(out / "adapter.pt", weights_only=True).items()}
    torch.save(bad, out / "nan_adapter.pt")
    if torch.cuda.is_available() and kwargs.get("device") == "cuda:7":
        pytest.skip("a GPU is present")
    paths = {k: (out / v if k in ("model", "base", "adapter") else v) for k, v in kwargs.items()}
    with pytest.raises(ModelError, match=match):
        load_site_model(**paths)


@pytest.mark.parametrize(
    "workers, batch", [(1, 5), (2, 5), (3, 2), (2, 1)], ids=["one", "two", "more-than-slices", "single"]
)
def test_slice_parallel_equals_the_network(workers, batch):
    torch.manual_seed(0)
    net = lora_unet("quick").eval()
    x = torch.randn(batch, 1, 64, 64)
    with torch.inference_mode(), intra_op_threads(1):
        out = SliceParallel(net, workers)(x)
        assert out.is_inference()  # the caller's inference mode reached the worker threads
        torch.testing.assert_close(out, net(x), atol=1e-5, rtol=1e-5)


def test_slice_parallel_keeps_grad_mode_and_checks_workers():
    net = lora_unet("quick")
    with torch.no_grad():
        assert not SliceParallel(net, 2)(torch.randn(2, 1, 32, 32)).requires_grad
    with pytest.raises(ValueError, match="`workers` must be a positive integer"):
        SliceParallel(net, 0)


def test_runner_uses_slice_workers_on_cpu(weights):
    out, plain, _ = weights
    before = torch.get_num_threads()
    m = load_site_model(out / "model.pt", cpu_workers=2)
    with m.runner() as runner:
        assert isinstance(runner, SliceParallel)
        with torch.inference_mode():
            runner(torch.randn(2, 1, 32, 32))
        assert torch.get_num_threads() == before  # only the workers run single-threaded
    assert runner._pool is None
    with load_site_model(out / "model.pt", cpu_workers=1).runner() as runner:
        assert runner is not None and not isinstance(runner, SliceParallel)


def test_channel_argmax_equals_torch_argmax_ties_included():
    from cardiolora.predict import channel_argmax

    probs = torch.rand(4, 30, 20, 3)
    probs[:, 0, 0, 0] = 0.25  # a four-way tie: channel 0
    probs[1, 1, 0, 0] = probs[3, 1, 0, 0] = 2.0  # a tie of 1 and 3: channel 1
    np.testing.assert_array_equal(channel_argmax(probs).numpy(), probs.argmax(dim=0).numpy())
    assert channel_argmax(probs).dtype == torch.uint8


def test_adapter_rank_must_be_unique():
    state = {"a.lora_A.weight": torch.zeros(2, 1, 3, 3), "b.lora_A.weight": torch.zeros(3, 4, 1, 1)}
    with pytest.raises(ModelError, match=r"different ranks \[2, 3\]"):
        adapter_rank(state)


def test_adapter_rank_names_the_earlier_layout():
    state = {"a.lora_A.weight": torch.zeros(2, 1, 3, 3), "b.lora_A_T.weight": torch.zeros(4, 2, 2, 2)}
    with pytest.raises(ModelError, match=r"`b\.lora_A_T\.weight` is the adapter layout of earlier versions"):
        adapter_rank(state)


def test_pick_device_defaults_to_cpu_without_gpu():
    assert pick_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert pick_device("cpu") == torch.device("cpu")


# --------------------------------------------------------------------------------------------
# predict_cine: the bundle's steps, phases batched, same labels as predict_volume
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "per_pass, workers, xy",
    [(256, 1, (70, 90)), (4, 1, (70, 90)), (1, 1, (70, 90)), (256, 2, (70, 90)), (4, 1, (260, 230))],
    ids=["all-phases", "two-phases-per-pass", "one-slice-per-pass", "phase-workers", "several-windows"],
)
def test_predict_cine_equals_predict_volume_per_phase(per_pass, workers, xy):
    torch.manual_seed(0)
    net = lora_unet("quick")
    rng = np.random.default_rng(0)
    cine = rng.random((3, *xy, 2)).astype(np.float32) * np.array([1.0, 5.0, 20.0])[:, None, None, None]
    affine = np.diag([1.1, 1.3, 8.0, 1.0])
    done = []
    before = torch.get_num_threads()
    labels = predict_cine(
        net, cine, affine, "quick", max_slices_per_pass=per_pass, progress=done.append, phase_workers=workers
    )
    assert torch.get_num_threads() == before
    expected = np.stack([predict_volume(net, phase, affine, "quick") for phase in cine])
    np.testing.assert_array_equal(labels, expected)
    assert sum(done) == 3 and labels.dtype == np.uint8


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"image_txyz": np.zeros((4, 4, 2))}, "cine"),
        ({"sw_batch_size": 0}, "sw_batch_size"),
        ({"max_slices_per_pass": True}, "max_slices_per_pass"),
        ({"image_txyz": np.full((1, 8, 8, 2), np.inf)}, "non-finite"),
        ({"affine": np.eye(3)}, "4x4"),
        ({"phase_workers": 0}, "phase_workers"),
    ],
    ids=["3d", "batch", "per-pass", "non-finite", "affine", "workers"],
)
def test_predict_cine_errors(kwargs, match):
    args = {"image_txyz": np.zeros((1, 8, 8, 2), np.float32), "affine": np.eye(4), **kwargs}
    with pytest.raises(ValueError, match=match):
        predict_cine(lora_unet("quick"), profile="quick", **args)
