"""Volume inference shared by evaluation, the federated clients and the site application.

A stack is segmented slice by slice with the profile's 2D U-Net exactly as the bundle's
``inference.json`` does it: intensities mapped per volume (percentiles → 0..1), in-plane resampling
to the profile's spacing (``Spacingd`` with the slice axis kept), MONAI's ``SliceInferer``
(sliding window over each slice), inversion of the resampling on the class probabilities
(``Invertd``), argmax. Arrays are in the NIfTI order ``(X, Y, Z)`` the bundle sees.

:func:`predict_cine` runs the same three steps on every phase of a cine but sends the slices of
many phases through one sliding-window call (bigger batches, one pass instead of T; the slices
stacked as a 2D batch, so every window is contiguous in memory), which is what makes site
inference fast on CPU; each slice is still inferred on its own, so its result equals
:func:`predict_volume` phase by phase (tested). Percentiles are taken with ``np.percentile``
(:class:`NumpyPercentileScaled`: MONAI's transform sorts volumes below 1M voxels with
``torch.quantile``, several times slower for the same values).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from monai.data import MetaTensor
from monai.inferers import SliceInferer, SlidingWindowInferer
from monai.transforms import (
    Compose,
    Invertd,
    MapTransform,
    ScaleIntensityRangePercentiles,
    ScaleIntensityRangePercentilesd,
)

from cardiolora.profiles import Profile, get_profile
from cardiolora.transforms import PathSafeSpacingd

__all__ = [
    "NumpyPercentileScaled",
    "volume_transforms",
    "make_inferer",
    "predict_volume",
    "predict_zyx",
    "predict_cine",
    "channel_argmax",
]


class _NumpyPercentileScale(ScaleIntensityRangePercentiles):
    """``ScaleIntensityRangePercentiles`` with the percentiles taken by ``np.percentile``.

    MONAI computes percentiles of tensors below 1M voxels with ``torch.quantile``, which sorts the
    whole volume (about 0.3 s for a 224 x 224 x 10 phase on one core); ``np.percentile`` selects
    instead and returns the same linear-interpolation percentiles (MONAI itself switches to it above
    1M voxels). The scaling is MONAI's.
    """

    def _normalize(self, img: torch.Tensor | np.ndarray) -> torch.Tensor:
        if isinstance(img, torch.Tensor):
            img = img.detach().cpu().numpy()
        return super()._normalize(img)


class NumpyPercentileScaled(ScaleIntensityRangePercentilesd):
    """``ScaleIntensityRangePercentilesd`` whose percentiles are computed with ``np.percentile``.

    Same arguments and results as MONAI's transform (same linear-interpolation percentiles, up to
    float rounding); faster on CPU for volumes below 1M voxels, where MONAI uses ``torch.quantile``.
    """

    def __init__(self, keys: str, lower: float, upper: float, b_min: float, b_max: float, clip: bool = False) -> None:
        super().__init__(keys=keys, lower=lower, upper=upper, b_min=b_min, b_max=b_max, clip=clip)
        self.scaler = _NumpyPercentileScale(lower, upper, b_min, b_max, clip)


def volume_transforms(profile: str | Profile, keys: str = "image") -> list[MapTransform]:
    """The deterministic preprocessing of a ``(1, X, Y, Z)`` stack for the profile's network.

    Args:
        profile: run profile (name or `Profile`).
        keys: the image key.

    Returns:
        ``[NumpyPercentileScaled, PathSafeSpacingd]``: percentiles → [0, 1] clipped (MONAI's
        ``ScaleIntensityRangePercentilesd`` with faster percentiles), then in-plane resampling to
        ``profile.pixel_spacing`` (slice spacing kept: pixdim -1) by MONAI's ``Spacingd`` that
        leaves string entries such as MONAI Label's ``image_path`` alone
        (`cardiolora.transforms.PathSafeSpacingd`).
    """
    prof = get_profile(profile)
    lo, hi = prof.intensity_percentiles
    return [
        NumpyPercentileScaled(keys=keys, lower=lo, upper=hi, b_min=0.0, b_max=1.0, clip=True),
        PathSafeSpacingd(keys=keys, pixdim=[prof.pixel_spacing, prof.pixel_spacing, -1.0], mode="bilinear"),
    ]


def make_inferer(profile: str | Profile, sw_batch_size: int = 16, overlap: float = 0.25) -> SliceInferer:
    """MONAI ``SliceInferer`` running the 2D network over every slice (last spatial axis).

    Args:
        profile: run profile; its ``spatial_size`` is the sliding-window size.
        sw_batch_size: windows per forward pass.
        overlap: sliding-window overlap in [0, 1).

    Returns:
        The inferer.
    """
    prof = get_profile(profile)
    return SliceInferer(
        roi_size=list(prof.spatial_size), spatial_dim=2, sw_batch_size=sw_batch_size, overlap=overlap, progress=False
    )


def predict_volume(
    network: torch.nn.Module,
    image_xyz: np.ndarray | torch.Tensor,
    affine: np.ndarray | torch.Tensor,
    profile: str | Profile,
    device: str | torch.device = "cpu",
    sw_batch_size: int = 16,
    return_probabilities: bool = False,
) -> np.ndarray:
    """Segment one stack ``(X, Y, Z)``; the label map is on the input's grid.

    Args:
        network: the 2D network (eval mode is set here).
        image_xyz: the stack, NIfTI order ``(X, Y, Z)``.
        affine: its 4×4 voxel-to-world affine (only the voxel sizes along X and Y matter).
        profile: run profile the network was built with.
        device: where to run.
        sw_batch_size: windows per forward pass.
        return_probabilities: return ``(4, X, Y, Z)`` float32 probabilities instead of labels.

    Returns:
        ``uint8`` labels ``(X, Y, Z)`` (0 bg, 1 LV, 2 MYO, 3 RV), or the probabilities.

    Raises:
        ValueError: if `image_xyz` is not 3D or holds non-finite values, or `affine` is not 4×4.
    """
    pre = Compose(volume_transforms(profile))
    data = _preprocess(pre, image_xyz, affine)
    network.eval()
    inferer = make_inferer(profile, sw_batch_size=sw_batch_size)
    with torch.inference_mode():
        logits = inferer(data["image"].as_tensor()[None].to(device), network)[0]
    return _restore(pre, data, logits, return_probabilities)


def _preprocess(pre: Compose, image_xyz: np.ndarray | torch.Tensor, affine: np.ndarray | torch.Tensor) -> dict:
    """Check one ``(X, Y, Z)`` stack and run the profile's preprocessing on it.

    Raises:
        ValueError: if `image_xyz` is not 3D or holds non-finite values, or `affine` is not 4×4.
    """
    img = torch.as_tensor(np.asarray(image_xyz, dtype=np.float32))
    if img.ndim != 3:
        raise ValueError(f"`image_xyz` must be a 3D stack (X, Y, Z), got shape {tuple(img.shape)}.")
    if not torch.isfinite(img).all():
        raise ValueError("`image_xyz` holds non-finite values.")
    aff = torch.as_tensor(np.asarray(affine, dtype=np.float64))
    if aff.shape != (4, 4):
        raise ValueError(f"`affine` must be 4x4, got {tuple(aff.shape)}.")
    return pre({"image": MetaTensor(img[None], affine=aff)})


def _restore(pre: Compose, data: dict, logits: torch.Tensor, return_probabilities: bool) -> np.ndarray:
    """Softmax the ``(C, X', Y', Z)`` logits of one stack, invert the resampling, argmax."""
    x = data["image"]
    probs = torch.softmax(logits.float(), dim=0).cpu()
    pred = MetaTensor(probs, affine=x.affine, meta={k: v for k, v in x.meta.items() if k != "affine"})
    pred.applied_operations = list(x.applied_operations)
    data["pred"] = pred
    out = Invertd(keys="pred", transform=pre, orig_keys="image", nearest_interp=False)(data)["pred"]
    out = torch.as_tensor(out)
    if return_probabilities:
        return out.numpy().astype(np.float32)
    return channel_argmax(out).numpy()


def channel_argmax(probs: torch.Tensor) -> torch.Tensor:
    """``probs.argmax(dim=0)`` as uint8, computed plane by plane (the same result, ties included).

    ``torch.argmax`` over the leading (strided) axis of a ``(C, X, Y, Z)`` map is slow on the CPU;
    comparing the C contiguous planes in order, keeping the first maximum, gives the same index
    (ties go to the lowest channel, as ``torch.argmax`` documents) in a fraction of the time.

    Args:
        probs: ``(C, ...)`` finite values, ``1 <= C <= 255``.

    Returns:
        uint8 indices of shape ``probs.shape[1:]``.
    """
    best = probs[0].clone()
    index = torch.zeros(probs.shape[1:], dtype=torch.uint8)
    for c in range(1, probs.shape[0]):
        better = probs[c] > best
        index[better] = c
        best = torch.where(better, probs[c], best)
    return index


def predict_cine(
    network: torch.nn.Module,
    image_txyz: np.ndarray | torch.Tensor,
    affine: np.ndarray | torch.Tensor,
    profile: str | Profile,
    device: str | torch.device = "cpu",
    sw_batch_size: int = 32,
    max_slices_per_pass: int = 64,
    progress: Callable[[int], object] | None = None,
    phase_workers: int = 1,
) -> np.ndarray:
    """Segment every phase of a cine ``(T, X, Y, Z)``, batching the slices of many phases.

    Each phase is preprocessed on its own exactly as in :func:`predict_volume` (the intensity
    percentiles are per phase volume), the preprocessed phases are concatenated along the slice
    axis and run through one sliding-window call per chunk of at most `max_slices_per_pass`
    slices (MONAI's ``SlidingWindowInferer`` on the slices as a 2D batch: the windows, weights and
    padding of :func:`make_inferer`'s ``SliceInferer``, with contiguous windows), and each phase's
    logits are restored onto its grid (softmax, ``Invertd``, argmax). A slice is inferred on its
    own in either path, so the labels equal :func:`predict_volume` run phase by phase (up to
    floating-point ties).

    Args:
        network: the 2D network (eval mode is set here).
        image_txyz: the cine, phases first, each phase in NIfTI order ``(X, Y, Z)``.
        affine: the 4×4 voxel-to-world affine shared by all phases.
        profile: run profile the network was built with.
        device: where to run.
        sw_batch_size: slices (windows) per forward pass.
        max_slices_per_pass: bound on the slices sent through the inferer at once (memory:
            about ``4 × classes × X' × Y' × 4`` bytes per slice); whole phases are grouped.
        progress: called with the number of phases finished after each pass (e.g.
            ``tqdm.update``).
        phase_workers: threads that preprocess and restore the phases of a pass in parallel
            (each with one intra-op thread; the per-phase steps are independent, so the result
            does not depend on it). 1: in the calling thread.

    Returns:
        ``uint8`` labels ``(T, X, Y, Z)`` (0 bg, 1 LV, 2 MYO, 3 RV).

    Raises:
        ValueError: if `image_txyz` is not 4D, a phase holds non-finite values, `affine` is not
            4×4, or `sw_batch_size` / `max_slices_per_pass` / `phase_workers` is not a positive
            integer.
    """
    cine = np.asarray(image_txyz, dtype=np.float32)
    if cine.ndim != 4:
        raise ValueError(f"`image_txyz` must be a cine (T, X, Y, Z), got shape {cine.shape}.")
    for name, value in (
        ("sw_batch_size", sw_batch_size),
        ("max_slices_per_pass", max_slices_per_pass),
        ("phase_workers", phase_workers),
    ):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
    pre = Compose(volume_transforms(profile))
    network.eval()
    prof = get_profile(profile)
    # the 2D form of make_inferer's SliceInferer (the same windows, constant weights, padding):
    # slices stacked along the batch axis keep each window contiguous in memory, where the
    # SliceInferer gathers and scatters every window along the strided last axis
    inferer = SlidingWindowInferer(
        roi_size=list(prof.spatial_size), sw_batch_size=sw_batch_size, overlap=0.25, progress=False
    )
    n_phases, n_slices = cine.shape[0], cine.shape[3]
    per_pass = max(1, int(max_slices_per_pass) // max(1, n_slices))
    out = np.empty(cine.shape, dtype=np.uint8)
    pool = None
    if phase_workers > 1:
        pool = ThreadPoolExecutor(int(phase_workers), initializer=torch.set_num_threads, initargs=(1,))
    caller_threads = torch.get_num_threads()
    run = pool.map if pool is not None else map
    try:
        for start in range(0, n_phases, per_pass):
            phases = range(start, min(n_phases, start + per_pass))
            datas = list(run(lambda t: _preprocess(pre, cine[t], affine), phases))
            # (1, X', Y', Z) per phase -> (slices, 1, X', Y'): a 2D batch, each slice contiguous
            batch = torch.cat([d["image"].as_tensor()[0].permute(2, 0, 1) for d in datas])[:, None].contiguous()
            with torch.inference_mode():
                logits = inferer(batch.to(device), network).permute(1, 2, 3, 0)  # (C, X', Y', slices)
            pieces = [logits[..., k * n_slices : (k + 1) * n_slices].contiguous() for k in range(len(datas))]
            restored = run(lambda dp: _restore(pre, dp[0], dp[1], False), zip(datas, pieces, strict=True))
            for t, labels in zip(phases, restored, strict=True):
                out[t] = labels
            if progress is not None:
                progress(len(phases))
    finally:
        if pool is not None:
            pool.shutdown(wait=True)
            torch.set_num_threads(caller_threads)  # the workers' setting also set the default for new threads
    return out


def predict_zyx(
    network: torch.nn.Module,
    image_zyx: np.ndarray,
    spacing_zyx: Sequence[float],
    profile: str | Profile,
    device: str | torch.device = "cpu",
    sw_batch_size: int = 16,
) -> np.ndarray:
    """Segment a ``(Z, Y, X)`` stack given its spacing; returns ``(Z, Y, X)`` uint8 labels.

    Args:
        network: the 2D network.
        image_zyx: the stack in the project's array order.
        spacing_zyx: voxel spacing (slice, row, column) in mm.
        profile: run profile the network was built with.
        device: where to run.
        sw_batch_size: windows per forward pass.

    Returns:
        Label map ``(Z, Y, X)``.
    """
    sz, sy, sx = (float(s) for s in spacing_zyx)
    affine = np.diag([sx, sy, sz, 1.0])
    lab = predict_volume(network, np.transpose(image_zyx, (2, 1, 0)), affine, profile, device, sw_batch_size)
    return np.ascontiguousarray(np.transpose(lab, (2, 1, 0)))
