"""The ONNX Runtime backend of site inference: same outputs as PyTorch, the export cache, the fallback."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest
import torch

from cardiolora.networks import lora_unet, plain_state_dict
from cardiolora.predict import predict_cine
from cardiolora.site import backend as backend_mod
from cardiolora.site.backend import BackendUnavailable, OnnxNetwork, cached_onnx, state_sha256
from cardiolora.site.model import ModelError, SliceParallel, load_site_model, select_backend

ort = pytest.importorskip("onnxruntime", reason="the optional `onnx` extra is not installed")
pytest.importorskip("onnxscript", reason="the optional `onnx` extra is not installed")


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx-weights")
    torch.manual_seed(0)
    torch.save(plain_state_dict(lora_unet("quick")), out / "model.pt")
    return out / "model.pt"


@pytest.fixture(scope="module")
def onnx_model(model_file, tmp_path_factory):
    """A quick-profile model on the ONNX backend, its export in a module-wide cache."""
    cache = tmp_path_factory.mktemp("onnx-cache")
    return load_site_model(model_file, profile="quick", backend="onnx", onnx_cache=cache, cpu_workers=2), cache


def _x(n: int = 3) -> torch.Tensor:
    return torch.randn(n, 1, 112, 112, generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("n", [1, 3], ids=["one-slice", "dynamic-batch"])
def test_onnx_logits_equal_torch(onnx_model, n):
    model, _ = onnx_model
    assert model.backend == "onnx" and isinstance(model.onnx, OnnxNetwork)
    with torch.inference_mode():
        expected = model.network(_x(n))
    # fp32 in both, different convolution algorithms and summation orders: 1e-4 on logits of order 1
    torch.testing.assert_close(model.onnx(_x(n)), expected, atol=1e-4, rtol=1e-4)


def test_onnx_labels_equal_torch_through_the_pipeline(onnx_model):
    model, _ = onnx_model
    cine = np.random.default_rng(0).random((2, 70, 90, 3)).astype(np.float32)
    affine = np.diag([1.1, 1.3, 8.0, 1.0])
    with model.runner() as runner:
        assert isinstance(runner, SliceParallel) and runner.network is model.onnx
        got = predict_cine(runner, cine, affine, "quick", sw_batch_size=4)
    expected = predict_cine(model.network, cine, affine, "quick", sw_batch_size=4)
    assert (got == expected).mean() >= 0.9999  # only near-ties of the logits may differ
    assert model.describe()["backend"] == "onnx"


def test_export_is_cached_per_weights(onnx_model, model_file, monkeypatch):
    model, cache = onnx_model
    files = sorted(cache.glob("*.onnx"))
    assert len(files) == 1 and not list(cache.glob(".*.tmp"))  # written atomically: no temp file left
    assert model.backend_info["onnx_file"] == str(files[0])
    stamp = files[0].stat().st_mtime_ns

    def no_export(*args, **kwargs):
        raise AssertionError("exported again although the cache holds this network")

    monkeypatch.setattr(backend_mod, "export_onnx", no_export)
    again = load_site_model(model_file, profile="quick", backend="onnx", onnx_cache=cache)
    assert again.backend == "onnx" and again.backend_info["export_seconds"] is None
    assert files[0].stat().st_mtime_ns == stamp

    other = lora_unet("quick").eval()  # other weights: another file
    assert state_sha256(other) != state_sha256(model.network)
    monkeypatch.setattr(backend_mod, "export_onnx", lambda net, size, path: path)
    path, seconds = cached_onnx(other, (112, 112), cache)
    assert path != files[0] and seconds is not None


def test_failed_export_leaves_no_file(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        (tmp_path / f".unet.onnx.{os.getpid()}.tmp").write_text("half")
        raise RuntimeError("exporter broke")

    monkeypatch.setattr(torch.onnx, "export", broken)
    with pytest.raises(BackendUnavailable, match="exporter broke"):
        backend_mod.export_onnx(lora_unet("quick").eval(), (112, 112), tmp_path / "unet.onnx")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("requested, level", [("onnx", logging.WARNING), ("auto", logging.INFO)])
def test_falls_back_to_torch_without_onnxruntime(model_file, tmp_path, monkeypatch, caplog, requested, level):
    real_import = backend_mod.importlib.import_module

    def no_onnxruntime(name, *args):
        if name == "onnxruntime":
            raise ImportError("No module named 'onnxruntime'", name="onnxruntime")
        return real_import(name, *args)

    monkeypatch.setattr(backend_mod.importlib, "import_module", no_onnxruntime)
    with caplog.at_level(logging.INFO, logger="cardiolora.site.model"):
        model = load_site_model(model_file, profile="quick", backend=requested, onnx_cache=tmp_path)
    assert model.backend == "torch" and model.onnx is None
    assert "onnxruntime: not installed" in model.backend_info["fallback"]
    record = next(r for r in caplog.records if "running the PyTorch network instead" in r.getMessage())
    assert record.levelno == level and "onnxruntime" in record.getMessage()
    with model.runner() as runner:  # the site application keeps working
        assert runner(_x(2)).shape == (2, 4, 112, 112)
    assert list(tmp_path.iterdir()) == []


def test_falls_back_when_the_check_fails(model_file, onnx_model, monkeypatch, caplog):
    monkeypatch.setattr(OnnxNetwork, "forward", lambda self, x: torch.zeros(x.shape[0], 4, *x.shape[2:]) + 1.0)
    with caplog.at_level(logging.WARNING, logger="cardiolora.site.model"):
        model = load_site_model(model_file, profile="quick", backend="onnx", onnx_cache=onnx_model[1])
    assert model.backend == "torch" and "differ from PyTorch's" in model.backend_info["fallback"]
    assert any("running the PyTorch network instead" in r.getMessage() for r in caplog.records)


def test_torch_backend_never_exports(model_file, tmp_path):
    model = load_site_model(model_file, profile="quick", backend="torch", onnx_cache=tmp_path)
    assert model.backend == "torch" and model.backend_info == {"requested": "torch"}
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("call", ["load", "select"])
def test_unknown_backend(model_file, call):
    with pytest.raises(ModelError, match="`backend` must be one of"):
        if call == "load":
            load_site_model(model_file, profile="quick", backend="tensorrt")
        else:
            select_backend(load_site_model(model_file, profile="quick"), "tensorrt")


def test_onnx_network_threads_must_be_positive(onnx_model):
    model, _ = onnx_model
    with pytest.raises(ValueError, match="`threads` must be a positive integer"):
        OnnxNetwork(model.backend_info["onnx_file"], threads=0)
