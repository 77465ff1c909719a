"""ONNX Runtime as an optional network backend for site inference on the CPU.

The site's merged, plain U-Net is exported once with ``torch.onnx.export`` (the dynamo exporter,
dynamic batch axis) and run by ONNX Runtime's CPU execution provider with every graph optimisation
on. The export is cached per network: the file name carries a hash of the weights actually run
(after any adapter merge), the profile's window, the opset and the torch version, so a folder of
studies, or the next run, loads the cached file instead of exporting again. It is written under a
temporary name and renamed into place, so a crash never leaves a half-written model for the next
run to load.

Before it is used, the session's output is compared with the PyTorch network's on one random
slice; any difference above :data:`CHECK_ATOL` (or a missing ``onnxruntime`` / ``onnx`` /
``onnxscript``, or a failed export) raises :class:`BackendUnavailable`, and
:func:`cardiolora.site.model.select_backend` then keeps the PyTorch path and logs why.

Whether ONNX Runtime is faster than PyTorch here is measured, not assumed:
``benchmarks/inference_bench.py`` (inference/docs/README.md, "Speed").
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import io
import logging
import os
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cardiolora.atomic import atomic_path
from cardiolora.fl.updates import state_checksum

__all__ = [
    "BACKENDS",
    "CHECK_ATOL",
    "ONNX_OPSET",
    "BackendUnavailable",
    "OnnxNetwork",
    "OnnxNotInstalled",
    "cached_onnx",
    "default_cache_dir",
    "export_onnx",
    "import_onnxruntime",
    "onnx_network",
    "state_sha256",
]

logger = logging.getLogger(__name__)

#: Backend names accepted by the site application (``--backend``).
BACKENDS: tuple[str, ...] = ("auto", "torch", "onnx")
#: ONNX opset of the export.
ONNX_OPSET = 18
#: Largest absolute difference of logits (ONNX Runtime vs PyTorch, fp32) accepted by the check.
#: Both compute in fp32 with different convolution algorithms and summation orders; differences
#: of about 1e-5 are normal for the paper U-Net, so 1e-3 only catches a wrong graph.
CHECK_ATOL = 1e-3


class BackendUnavailable(RuntimeError):
    """ONNX Runtime cannot be used: a package is missing, the export failed or the check did not pass."""


class OnnxNotInstalled(BackendUnavailable):
    """``onnxruntime``, ``onnx`` or ``onnxscript`` is not installed (the optional ``onnx`` extra)."""


def import_onnxruntime() -> Any:
    """Import and return ``onnxruntime``.

    Raises:
        BackendUnavailable: if it (or ``onnx`` / ``onnxscript``, which the export needs) is not installed.
    """
    try:
        ort = importlib.import_module("onnxruntime")
        importlib.import_module("onnx")
        importlib.import_module("onnxscript")
    except ImportError as err:
        raise OnnxNotInstalled(
            f"{err.name or err}: not installed (pip install 'cardiolora[onnx]' to use ONNX Runtime)."
        ) from err
    return ort


def state_sha256(network: torch.nn.Module) -> str:
    """sha256 over the network's state dict (:func:`cardiolora.fl.updates.state_checksum`).

    Args:
        network: the module.

    Returns:
        The hex digest; equal for equal weights whatever file they came from.
    """
    return state_checksum(network.state_dict())


def default_cache_dir() -> Path:
    """Where exports are cached: ``$CARDIOLORA_CACHE/onnx``, else ``$XDG_CACHE_HOME/cardiolora/onnx``,
    else ``~/.cache/cardiolora/onnx``."""
    if os.environ.get("CARDIOLORA_CACHE"):
        return Path(os.environ["CARDIOLORA_CACHE"]) / "onnx"
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "cardiolora" / "onnx"


def export_onnx(network: torch.nn.Module, spatial_size: tuple[int, int], path: str | os.PathLike) -> Path:
    """Export a 2D network ``(N, C, H, W) -> (N, C', H, W)`` to ONNX, atomically.

    The file is written as ``.<name>.<pid>.tmp`` beside `path` and renamed onto it
    (:func:`cardiolora.atomic.atomic_path`), so readers see either no file or a complete one.

    Args:
        network: the CPU network in eval mode.
        spatial_size: ``(H, W)`` of the example input (the batch axis is dynamic).
        path: the ``.onnx`` file to write.

    Returns:
        `path`.

    Raises:
        BackendUnavailable: if the exporter's packages are missing or the export fails.
    """
    import_onnxruntime()
    path = Path(path)
    in_channels = _in_channels(network)
    example = torch.zeros(2, in_channels, *spatial_size)
    quiet = [logging.getLogger(name) for name in ("onnx_ir", "onnxscript", "torch.onnx")]
    levels = [lg.level for lg in quiet]
    for lg in quiet:  # one INFO line per folded constant, a warning per missing torchvision op
        lg.setLevel(logging.ERROR)
    try:
        with (
            atomic_path(path) as tmp,
            torch.no_grad(),
            contextlib.redirect_stdout(io.StringIO()),
            warnings.catch_warnings(),
        ):
            warnings.simplefilter("ignore", FutureWarning)  # torch's own deprecations inside the exporter
            torch.onnx.export(
                network,
                (example,),
                str(tmp),
                input_names=["image"],
                output_names=["logits"],
                dynamic_shapes=({0: torch.export.Dim("slices")},),
                opset_version=ONNX_OPSET,
                dynamo=True,
                external_data=False,
                verbose=False,
            )
    except Exception as err:  # the exporter raises many types; all mean "no ONNX model"
        raise BackendUnavailable(f"ONNX export to {path} failed: {type(err).__name__}: {err}") from err
    finally:
        for lg, level in zip(quiet, levels, strict=True):
            lg.setLevel(level)
    return path


def _in_channels(network: torch.nn.Module) -> int:
    """Input channels of the first convolution (1 for the project's U-Net)."""
    for m in network.modules():
        if isinstance(m, torch.nn.modules.conv._ConvNd):
            return int(m.in_channels)
    return 1


def cached_onnx(
    network: torch.nn.Module, spatial_size: tuple[int, int], cache_dir: str | os.PathLike | None = None
) -> tuple[Path, float | None]:
    """The network's ONNX file from the cache, exported first if absent.

    Args:
        network: the CPU network in eval mode.
        spatial_size: ``(H, W)`` of the profile's window.
        cache_dir: the cache folder (``None``: :func:`default_cache_dir`).

    Returns:
        ``(path, export_seconds)``; `export_seconds` is ``None`` when the cached file was reused.

    Raises:
        BackendUnavailable: as :func:`export_onnx`, or if the cache folder cannot be written.
    """
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key = hashlib.sha256(
        f"{state_sha256(network)}|{tuple(spatial_size)}|opset{ONNX_OPSET}|torch{torch.__version__}".encode()
    ).hexdigest()
    path = folder / f"unet-{key[:24]}.onnx"
    if path.is_file():
        return path, None
    start = time.perf_counter()
    try:
        export_onnx(network, spatial_size, path)
    except OSError as err:
        raise BackendUnavailable(f"cannot write the ONNX cache {folder}: {err}") from err
    return path, time.perf_counter() - start


class OnnxNetwork(torch.nn.Module):
    """An ONNX Runtime session behind a module's ``forward``: ``(N, C, H, W)`` tensor in, logits out.

    ``forward`` may be called from several threads at once (ONNX Runtime sessions are thread-safe
    and release the GIL), which is how :class:`~cardiolora.site.model.SliceParallel` uses it.

    Args:
        path: the ``.onnx`` file.
        threads: intra-op threads of the session, >= 1 (1 when slice workers share the cores).

    Raises:
        BackendUnavailable: if ``onnxruntime`` is missing or cannot load the file.
        ValueError: if `threads` is not a positive integer.
    """

    def __init__(self, path: str | os.PathLike, threads: int = 1) -> None:
        super().__init__()
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"`threads` must be a positive integer, got {threads!r}.")
        ort = import_onnxruntime()
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # a spinning pool burns a core another job (or slice worker) could use
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own exception types
            raise BackendUnavailable(f"ONNX Runtime cannot load {path}: {err}") from err
        self.path = str(path)
        self.threads = threads
        self._input = self.session.get_inputs()[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for `x` (computed on the CPU, returned on the CPU)."""
        array = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(self.session.run(None, {self._input: array})[0])


def onnx_network(
    network: torch.nn.Module,
    spatial_size: tuple[int, int],
    threads: int = 1,
    cache_dir: str | os.PathLike | None = None,
) -> tuple[OnnxNetwork, dict[str, Any]]:
    """The network as a checked :class:`OnnxNetwork`, from the export cache.

    Args:
        network: the CPU network in eval mode (its weights key the cache).
        spatial_size: ``(H, W)`` of the profile's window (the check runs one such slice).
        threads: intra-op threads of the session.
        cache_dir: the export cache (``None``: :func:`default_cache_dir`).

    Returns:
        ``(module, info)`` with ``info = {"onnx_file", "export_seconds" (None: reused), "check_max_abs_diff"}``.

    Raises:
        BackendUnavailable: if a package is missing, the export or loading fails, or the session's
            logits differ from the network's by more than :data:`CHECK_ATOL`.
    """
    path, seconds = cached_onnx(network, spatial_size, cache_dir)
    module = OnnxNetwork(path, threads)
    x = torch.rand(1, _in_channels(network), *spatial_size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected = network(x)
    got = module(x)
    diff = float((got - expected).abs().max()) if got.shape == expected.shape else float("inf")
    if not diff <= CHECK_ATOL:
        raise BackendUnavailable(
            f"ONNX Runtime's logits differ from PyTorch's by {diff:.3g} (> {CHECK_ATOL:g}) on a test slice ({path})."
        )
    return module, {"onnx_file": str(path), "export_seconds": seconds, "check_max_abs_diff": diff}
