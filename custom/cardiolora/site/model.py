"""The site's model: plain U-Net weights, or base weights plus the site's LoRA adapter merged once.

A site runs the network that federated fine-tuning left it: ``W = W0 + (alpha / r)·B·A`` for every
adapted convolution. Both ways of shipping it are accepted:

* ``model.pt`` — plain U-Net weights, as the bundle's ``CheckpointSaver`` (through
  :class:`~cardiolora.networks.ExportView`) and the FL jobs write them: the adapter is already
  folded in, inference costs what the base costs;
* ``base.pt`` + ``adapter.pt`` — base weights and an adapter-only state dict
  (:func:`cardiolora.lora.lora_state_dict`); the adapter is injected, loaded, merged with
  :func:`cardiolora.lora.merge_lora` (which refuses non-finite results) and the merged weights are
  loaded into a plain network, so inference again runs a plain U-Net.

The rank is read from the adapter's shapes (every module must share it); ``alpha`` is not stored
in an adapter state dict and defaults to the rank (scaling 1, the project's default), or is given.

CPU inference. On a CPU the slices of a forward pass are split across ``cpu_workers`` Python
threads that each run the network with one intra-op thread (:class:`SliceParallel` under
:func:`intra_op_threads`): no OpenMP barrier spans the cores, so a core taken by another job
delays one worker instead of stalling every convolution (measured in
``benchmarks/inference_bench.py``). Each slice is still computed on its own: outputs equal the
plain network's up to float rounding.

Backends. ``backend="torch"`` runs the PyTorch network; ``"onnx"`` runs its ONNX export with ONNX
Runtime on the CPU (:mod:`cardiolora.site.backend`: exported once per weights and cached, checked
against PyTorch before use); ``"auto"`` takes ONNX Runtime when it is installed and the device is
the CPU. Whenever ONNX Runtime cannot be used (not installed, export or check failed, a GPU), the
PyTorch network runs and a warning says why (:func:`select_backend`); the report records the
backend that ran.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch

from cardiolora.errors import InputError
from cardiolora.lora import base_state_dict, load_lora_state_dict, merge_lora
from cardiolora.networks import load_weights, lora_unet, read_state_dict
from cardiolora.profiles import Profile, get_profile
from cardiolora.site.backend import BACKENDS, BackendUnavailable, OnnxNotInstalled, onnx_network
from cardiolora.site.command import segment_options

__all__ = [
    "DEFAULT_BACKEND",
    "ModelError",
    "SiteModel",
    "SliceParallel",
    "adapter_rank",
    "file_sha256",
    "intra_op_threads",
    "load_site_model",
    "pick_device",
    "select_backend",
]

logger = logging.getLogger(__name__)

#: The site application's default backend, as the site-inference bundle declares it
#: (``backend`` of ``inference/configs/inference.json``; inference/docs/README.md, "Speed", says why).
DEFAULT_BACKEND: str = segment_options()["backend"]["default"]


class ModelError(InputError):
    """A model or adapter file is missing, unreadable or does not fit the profile's network."""


class SliceParallel(torch.nn.Module):
    """Run a 2D network on a batch of slices split across worker threads.

    ``forward(x)`` cuts the batch into at most `workers` contiguous chunks, runs the network on
    each chunk in a thread pool whose threads each use one intra-op thread (PyTorch's OpenMP
    thread count is per thread: the caller keeps its own for the rest of the pipeline), and
    concatenates the outputs in order: the workers, not OpenMP, share the cores.

    Args:
        network: the network (any module mapping ``(N, C, H, W)`` to ``(N, C', H, W)``).
        workers: number of worker threads, >= 1.

    Raises:
        ValueError: if `workers` is not a positive integer.
    """

    def __init__(self, network: torch.nn.Module, workers: int) -> None:
        super().__init__()
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"`workers` must be a positive integer, got {workers!r}.")
        self.network = network
        self.workers = workers
        self._pool: ThreadPoolExecutor | None = None
        self._caller_threads = torch.get_num_threads()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The network's output for `x`, computed in up to `workers` chunks."""
        n = int(x.shape[0])
        if self.workers == 1 or n < 2:
            return self.network(x)
        if self._pool is None:  # each worker runs its convolutions with one intra-op thread
            self._caller_threads = torch.get_num_threads()
            self._pool = ThreadPoolExecutor(
                self.workers, thread_name_prefix="cardiolora-slices", initializer=torch.set_num_threads, initargs=(1,)
            )
        chunks = torch.tensor_split(x, min(self.workers, n))
        # grad and inference modes are thread-local: carry the caller's into the workers
        inference, grad = torch.is_inference_mode_enabled(), torch.is_grad_enabled()

        def run(chunk: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode(inference), torch.set_grad_enabled(grad):
                return self.network(chunk)

        return torch.cat(list(self._pool.map(run, chunks)))

    def close(self) -> None:
        """Shut the worker threads down (a later call starts new ones)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
            torch.set_num_threads(self._caller_threads)  # the workers' setting also set the default for new threads

    def __del__(self) -> None:
        if getattr(self, "_pool", None) is not None:
            self._pool.shutdown(wait=False)


@contextlib.contextmanager
def intra_op_threads(n: int) -> Iterator[None]:
    """Set PyTorch's intra-op thread count to `n` for the block, then restore it.

    Args:
        n: threads, >= 1.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class SiteModel:
    """A ready-to-run plain network and where it came from.

    Attributes:
        network: the plain U-Net in eval mode on `device`.
        profile: the run profile it was built with.
        device: where it runs.
        files: ``{"model": path}`` or ``{"base": path, "adapter": path}``.
        sha256: sha256 of each file in `files`, same keys.
        lora: ``{"rank": r, "alpha": a}`` when an adapter was merged, else empty.
        cpu_workers: slice-parallel worker threads on the CPU (1: plain intra-op threading).
        backend: the backend that runs: ``"torch"``, or ``"onnx"`` with `onnx` set
            (:func:`select_backend`).
        onnx: the ONNX Runtime module when `backend` is ``"onnx"``.
        backend_info: how the backend was chosen (asked for, fallback reason, ONNX file, export
            seconds), for the report.
    """

    network: torch.nn.Module
    profile: Profile
    device: torch.device
    files: dict[str, str]
    sha256: dict[str, str]
    lora: dict[str, float] = field(default_factory=dict)
    cpu_workers: int = 1
    backend: str = "torch"
    onnx: torch.nn.Module | None = None
    backend_info: dict[str, object] = field(default_factory=dict)

    @contextlib.contextmanager
    def runner(self) -> Iterator[torch.nn.Module]:
        """The module to infer with: the backend's network (PyTorch, or ONNX Runtime), wrapped in
        :class:`SliceParallel` on a CPU with ``cpu_workers > 1`` (its worker threads are shut
        down on exit)."""
        network = self.onnx if self.backend == "onnx" and self.onnx is not None else self.network
        if self.device.type != "cpu" or self.cpu_workers <= 1:
            yield network
            return
        runner = SliceParallel(network, self.cpu_workers)
        try:
            yield runner
        finally:
            runner.close()

    @property
    def model_sha256(self) -> str:
        """The hash the report leads with: of ``model.pt``, or of the adapter file."""
        return self.sha256.get("model") or self.sha256.get("adapter", "")

    def describe(self) -> dict[str, object]:
        """JSON-able description for the report."""
        return {
            "profile": self.profile.name,
            "device": str(self.device),
            "files": dict(self.files),
            "sha256": dict(self.sha256),
            "model_sha256": self.model_sha256,
            "lora_merged": dict(self.lora),
            "cpu_workers": self.cpu_workers,
            "backend": self.backend,
            "backend_info": dict(self.backend_info),
        }


def select_backend(
    model: SiteModel, backend: str = DEFAULT_BACKEND, cache_dir: str | os.PathLike | None = None
) -> SiteModel:
    """The model set up to run on `backend`, falling back to PyTorch (with a warning) when ONNX
    Runtime cannot be used.

    Args:
        model: a model on the PyTorch backend.
        backend: ``"torch"``; ``"onnx"`` (ONNX Runtime on the CPU); ``"auto"`` (ONNX Runtime when
            installed and the device is the CPU, else PyTorch).
        cache_dir: the ONNX export cache (``None``:
            :func:`cardiolora.site.backend.default_cache_dir`).

    Returns:
        A copy of `model` with ``backend``, ``onnx`` and ``backend_info`` set.

    Raises:
        ModelError: if `backend` is not one of :data:`cardiolora.site.backend.BACKENDS`.
    """
    if backend not in BACKENDS:
        raise ModelError(f"`backend` must be one of {list(BACKENDS)}, got {backend!r}.")
    info: dict[str, object] = {"requested": backend}
    if backend == "torch":
        return dataclasses.replace(model, backend="torch", onnx=None, backend_info=info)
    expected = backend == "auto"  # auto without ONNX Runtime or on a GPU: PyTorch is the plan, not a failure
    if model.device.type != "cpu":
        reason = f"ONNX Runtime is used on the CPU only; the device is {model.device}"
    else:
        threads = 1 if model.cpu_workers > 1 else max(1, os.cpu_count() or 1)
        try:
            module, details = onnx_network(model.network, tuple(model.profile.spatial_size), threads, cache_dir)
        except BackendUnavailable as err:
            reason = str(err)
            expected = expected and isinstance(err, OnnxNotInstalled)
        else:
            info.update(details)
            return dataclasses.replace(model, backend="onnx", onnx=module, backend_info=info)
    info["fallback"] = reason
    log = logger.info if expected else logger.warning
    log("backend %r: running the PyTorch network instead (%s).", backend, reason)
    return dataclasses.replace(model, backend="torch", onnx=None, backend_info=info)


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """sha256 of a file, read in chunks.

    Args:
        path: the file.
        chunk: bytes per read.

    Returns:
        The hex digest.

    Raises:
        ModelError: if the file does not exist.
    """
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"{p}: no such weights file.")
    h = hashlib.sha256()
    with open(p, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """The device to run on: the one given, else CUDA when present, else the CPU.

    Args:
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` ... or ``None`` for automatic.

    Returns:
        The ``torch.device``.

    Raises:
        ModelError: if the device string is malformed or CUDA is asked for and absent.
    """
    if device is None or str(device) == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ModelError(f"`device` {device!r} is not a torch device ({err}).") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(f"`device` {device!r}: CUDA is not available on this machine; use --device cpu.")
    return dev


def _read(path: str | os.PathLike, role: str) -> dict[str, torch.Tensor]:
    """A state dict from `path` with errors that say which file and role failed."""
    try:
        return read_state_dict(path)
    except FileNotFoundError as err:
        raise ModelError(
            f"{role} file {path}: no such file (weights are never shipped; see inference/docs/README.md)."
        ) from err
    except ValueError as err:
        raise ModelError(f"{role} file {err}") from err


def adapter_rank(state: Mapping[str, torch.Tensor], where: str = "adapter") -> int:
    """The LoRA rank of an adapter-only state dict (the same for every module).

    ``lora_A.weight`` is ``[r, in, *k]`` (or ``[r, in, 1, ..]`` for a transposed convolution).

    Args:
        state: the adapter state dict.
        where: what to call it in messages (its file).

    Returns:
        The rank r.

    Raises:
        ModelError: if it holds no ``lora_A`` key, holds keys of the earlier ``lora_A_T`` layout, or
            the modules have different ranks.
    """
    old_layout = [k for k in state if k.endswith(".lora_A_T.weight")]
    if old_layout:
        raise ModelError(
            f"{where}: `{old_layout[0]}` is the adapter layout of earlier versions (transposed convolutions "
            "adapted on the input side); this version keeps their kernel in `<name>.lora_B_T.weight`. "
            "Retrain the adapter, or use the merged plain model (personalised_model.pt)."
        )
    ranks = set()
    for key, value in state.items():
        if key.endswith(".lora_A.weight"):
            ranks.add(int(value.shape[0]))
    if not ranks:
        raise ModelError(f"{where}: no `<name>.lora_A.weight` keys; not an adapter-only state dict.")
    if len(ranks) > 1:
        raise ModelError(f"{where}: modules have different ranks {sorted(ranks)}; one rank per adapter expected.")
    return ranks.pop()


def _merged_plain_state(
    base: Mapping[str, torch.Tensor],
    adapter: Mapping[str, torch.Tensor],
    prof: Profile,
    alpha: float | None,
    where: str,
) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Inject an adapter into the base network, merge it, return the plain weights and (rank, alpha)."""
    rank = adapter_rank(adapter, where)
    net = lora_unet(prof, lora_rank=rank, lora_alpha=alpha)
    load_weights(net, base)
    try:
        load_lora_state_dict(net, adapter)
        merge_lora(net, safe=True)
    except ValueError as err:
        raise ModelError(f"{where}: {err}") from err
    return base_state_dict(net), {"rank": rank, "alpha": float(alpha if alpha is not None else rank)}


def load_site_model(
    model: str | os.PathLike | None = None,
    *,
    base: str | os.PathLike | None = None,
    adapter: str | os.PathLike | None = None,
    profile: str | Profile = "quick",
    device: str | torch.device | None = None,
    lora_alpha: float | None = None,
    channels_last: bool = False,
    cpu_workers: int | None = None,
    backend: str = DEFAULT_BACKEND,
    onnx_cache: str | os.PathLike | None = None,
    network: torch.nn.Module | None = None,
) -> SiteModel:
    """Build the profile's plain U-Net with the site's weights, ready for inference.

    Args:
        model: plain weights (``model.pt``); give either this or `base` + `adapter`.
        base: base weights the adapter was trained on.
        adapter: adapter-only state dict file.
        profile: run profile the weights belong to (``"quick"`` or ``"paper"``).
        device: ``None`` for CUDA when present else CPU, or a device string.
        lora_alpha: the adapter's alpha (``None``: alpha = rank, scaling 1).
        channels_last: store the weights in channels-last memory format (same results up to
            float rounding; measured no faster on the 2-core AVX2 CPU of the benchmark, so off).
        cpu_workers: slice-parallel threads on the CPU (module docstring); ``None``: the number of
            CPU cores (``os.cpu_count()``); 1 turns it off.
        backend: ``"torch"``, ``"onnx"`` or ``"auto"`` (:func:`select_backend`; ONNX Runtime
            falls back to PyTorch with a warning when it cannot be used).
        onnx_cache: folder of cached ONNX exports (``None``: ``~/.cache/cardiolora/onnx`` or
            ``$CARDIOLORA_CACHE/onnx``).
        network: the plain network to load the weights into (the LoRA bundle's ``network_def``,
            ``cardiolora.networks.lora_unet(profile)``, as the inference bundle passes it);
            ``None``: built here from `profile`.

    Returns:
        The :class:`SiteModel`.

    Raises:
        ModelError: naming the file, if the arguments do not name exactly one of the two forms,
            a file is missing or unreadable, the weights do not fit the profile's network (e.g. a
            paper-profile file with ``profile="quick"``), the adapter does not fit, or the merge
            gives non-finite weights, or `backend` is unknown.
    """
    if backend not in BACKENDS:
        raise ModelError(f"`backend` must be one of {list(BACKENDS)}, got {backend!r}.")

    if (model is None) == (base is None and adapter is None):
        raise ModelError("give either `model` (model.pt) or both `base` and `adapter`, not both and not neither.")
    if model is None and (base is None or adapter is None):
        raise ModelError("`base` and `adapter` go together: the adapter is merged into the base weights.")
    try:
        prof = get_profile(profile)
    except ValueError as err:
        raise ModelError(str(err)) from err
    dev = pick_device(device)
    net = lora_unet(prof) if network is None else network
    lora: dict[str, float] = {}
    if model is not None:
        files = {"model": str(model)}
        state = _read(model, "model")
        where = f"model file {model}"
    else:
        files = {"base": str(base), "adapter": str(adapter)}
        base_state = _read(base, "base")
        adapter_state = _read(adapter, "adapter")
        try:
            state, lora = _merged_plain_state(base_state, adapter_state, prof, lora_alpha, f"adapter file {adapter}")
        except ModelError:
            raise
        except ValueError as err:
            raise ModelError(f"base file {base}: {err}") from err
        where = f"base file {base} + adapter file {adapter}"
    try:
        load_weights(net, state)
    except ValueError as err:
        raise ModelError(f"{where} does not fit the {prof.name!r} profile's network: {err}") from err
    sha = {role: file_sha256(path) for role, path in files.items()}
    net = net.to(dev).eval()
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    for p in net.parameters():
        p.requires_grad_(False)
    workers = int(cpu_workers) if cpu_workers is not None else max(1, os.cpu_count() or 1)
    if workers < 1:
        raise ModelError(f"`cpu_workers` must be >= 1, got {cpu_workers!r}.")
    site = SiteModel(network=net, profile=prof, device=dev, files=files, sha256=sha, lora=lora, cpu_workers=workers)
    return select_backend(site, backend, onnx_cache)
