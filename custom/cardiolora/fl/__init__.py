"""Federated Rate-My-LoRA on NVIDIA FLARE 2.9 (He et al., arXiv 2501.03223).

* :mod:`cardiolora.fl.rml` — the mathematics (Eq. 1, Eq. 2, λ schedule, checksums, adapter
  validation) as small pure functions;
* :mod:`cardiolora.fl.controller` — the server workflow (``ModelController`` with its own ``run()``);
* :mod:`cardiolora.fl.site` — what a site does with the tasks, FLARE-free (the bundle's workflows);
* :mod:`cardiolora.fl.client` — the FLARE Client API script that drives :mod:`cardiolora.fl.site`;
* :mod:`cardiolora.fl.filters` — the site's result filter that lets only adapters and numbers out;
* :mod:`cardiolora.fl.common` — site-local configuration, the bundle network, the task protocol;
* :mod:`cardiolora.fl.seeds` — the job seed and each site's per-round seed;
* :mod:`cardiolora.fl.persistor` — the server's ``W_0`` from the bundle and the server's config;
* :mod:`cardiolora.fl.aggregators` — FedAvg weighted by dataset size (the full-weight baseline);
* :mod:`cardiolora.fl.history` — per-round JSON and curves;
* :mod:`cardiolora.fl.jobs` — the FedJob builders behind ``jobs/<name>/job.py``;
* :mod:`cardiolora.fl.run` — run a job in the FLARE simulator on phantom sites.
"""

from __future__ import annotations

__all__: list[str] = []
