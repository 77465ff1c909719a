"""Stage 3 of the site-inference bundle: the inferer (every slice of every phase through the network).

:class:`CineInferer` is the ``inferer`` of ``inference/configs/inference.json``: it runs
:func:`cardiolora.predict.predict_cine` (the LoRA bundle's preprocessing and sliding-window
inferer, the phases batched) with the site's model (:func:`~cardiolora.site.model.load_site_model`).
"""

from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from cardiolora.data.cine import CineStudy, nifti_affine
from cardiolora.predict import predict_cine
from cardiolora.site.model import SiteModel

__all__ = ["CineInferer"]


class CineInferer:
    """Segment every slice of every phase of a cine (raw network labels).

    Args:
        model: the site model (``network`` of the bundle).
        sw_batch_size: slices per forward pass, >= 1.
        progress: show a tqdm bar per study (phases).

    Raises:
        ValueError: if `sw_batch_size` is not a positive integer.

    Example:
        >>> raw = CineInferer(model, sw_batch_size=8, progress=False)(cine)  # doctest: +SKIP
    """

    def __init__(self, model: SiteModel, sw_batch_size: int, progress: bool = True) -> None:
        if isinstance(sw_batch_size, bool) or not isinstance(sw_batch_size, int) or sw_batch_size < 1:
            raise ValueError(f"`sw_batch_size` must be a positive integer, got {sw_batch_size!r}.")
        self.model = model
        self.sw_batch_size = sw_batch_size
        self.progress = bool(progress)

    def __call__(self, cine: CineStudy, desc: str = "") -> np.ndarray:
        """uint8 labels ``(T, Z, Y, X)`` of `cine` (before the clean-up)."""
        model = self.model
        image_txyz = np.transpose(cine.image, (0, 3, 2, 1))
        bar = tqdm(total=cine.n_phases, desc=desc or cine.subject_id, unit="phase", disable=not self.progress)
        with bar, model.runner() as network:
            raw_txyz = predict_cine(
                network,
                image_txyz,
                nifti_affine(cine.affine_lps),
                model.profile,
                device=model.device,
                sw_batch_size=self.sw_batch_size,
                progress=bar.update,
                phase_workers=model.cpu_workers if model.device.type == "cpu" else 1,
            )
        return np.ascontiguousarray(np.transpose(raw_txyz, (0, 3, 2, 1)))
