"""Full-weight FedAvg weighted by dataset size (the paper's † baseline) for FLARE's own ``FedAvg``.

FLARE's built-in FedAvg weighting uses the step count a client reports; the paper weights by the
number of training cases. :class:`DatasetSizeAggregator` is the ``ModelAggregator`` given to
``FedAvg(aggregator=...)``: each site puts ``|D_c|`` in its result's meta (``n_cases``) and the
global model is ``W = Σ_c |D_c| W_c / Σ_c |D_c|``. What arrives is validated: a result without a
positive ``n_cases``, with other keys or shapes than the first accepted one, or with non-finite
values is rejected with a logged reason.
"""

from __future__ import annotations

import numpy as np
from nvflare.app_common.abstract.fl_model import FLModel, ParamsType
from nvflare.app_common.aggregators.model_aggregator import ModelAggregator

from cardiolora.fl.protocol import Meta

__all__ = ["DatasetSizeAggregator"]


class DatasetSizeAggregator(ModelAggregator):
    """``W = Σ_c |D_c| W_c / Σ_c |D_c|`` over the accepted results of a round (float64 accumulation)."""

    def __init__(self) -> None:
        super().__init__()
        self.reset_stats()

    def reset_stats(self) -> None:
        self._sum: dict[str, np.ndarray] = {}
        self._dtypes: dict[str, np.dtype] = {}
        self._total = 0
        self._sites: list[str] = []

    def accept_model(self, model: FLModel) -> None:
        site = (model.meta or {}).get("client_name", "?")
        n = (model.meta or {}).get(Meta.N_CASES)
        params = model.params or {}
        reason = None
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            reason = f"meta `{Meta.N_CASES}` = {n!r}, expected the site's positive number of training cases"
        elif not params:
            reason = "no parameters"
        elif self._sum and set(params) != set(self._sum):
            reason = f"keys differ from the first result's ({len(params)} vs {len(self._sum)})"
        else:
            arrays = {k: np.asarray(v) for k, v in params.items()}
            wrong = [k for k, a in arrays.items() if self._sum and a.shape != self._sum[k].shape]
            bad = [k for k, a in arrays.items() if not np.issubdtype(a.dtype, np.floating) or not np.isfinite(a).all()]
            if wrong:
                reason = f"wrong shapes for {wrong[:5]}"
            elif bad:
                reason = f"non-finite or non-float values in {bad[:5]}"
        if reason:
            self.error(f"{site}: result rejected from aggregation: {reason}.")
            return
        for k, a in arrays.items():
            self._dtypes.setdefault(k, a.dtype)
            self._sum[k] = self._sum.get(k, 0) + float(n) * a.astype(np.float64)
        self._total += n
        self._sites.append(site)

    def aggregate_model(self) -> FLModel:
        if not self._total:
            raise RuntimeError("no valid result to aggregate this round.")
        params = {k: (v / self._total).astype(self._dtypes[k]) for k, v in self._sum.items()}
        self.info(f"FedAvg weighted by |D_c|: {self._sites}, Σ|D| = {self._total}")
        out = FLModel(params=params, params_type=ParamsType.FULL, meta={"sites": list(self._sites)})
        self.reset_stats()
        return out
