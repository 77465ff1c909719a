"""Federated Rate-My-LoRA on NVIDIA FLARE 2.9 (He et al., arXiv 2501.03223).

* :mod:`cardiolora.fl.rml` — the rating mathematics (Eq. 1, Eq. 2's coefficients, λ schedule) as
  small pure functions;
* :mod:`cardiolora.fl.updates` — the weight update on full-size deltas (``W_t = W_{t−1} + Σ a_c ΔW_c``),
  checksums and adapter validation;
* :mod:`cardiolora.fl.controller` — the server workflow (``ModelController`` with its own ``run()``):
  the round sequence only;
* :mod:`cardiolora.fl.exchange` — the server's side of every task: send, count bytes, drop silent
  sites, compare checksums and re-synchronise, validate adapters (the controller's base class);
* :mod:`cardiolora.fl.state` — the server's resumable state (``state.pt``);
* :mod:`cardiolora.fl.ledger` — the per-round, per-site records and bytes, and the outputs written
  from them (``rml_history.json``, ``rml_curves.png``, TensorBoard scalars);
* :mod:`cardiolora.fl.cross_eval` — the cross-site evaluation table (``cross_site_eval.json``);
* :mod:`cardiolora.fl.site_runner` — what a site does with the tasks, FLARE-free (the bundle's workflows);
* :mod:`cardiolora.fl.client` — the FLARE Client API script that drives :mod:`cardiolora.fl.site_runner`;
* :mod:`cardiolora.fl.filters` — the site's result filters: only adapters and numbers out, and the
  optional DP filter that clips and noises each adapter update;
* :mod:`cardiolora.fl.privacy` — site-level DP: clipping, Gaussian noise, Opacus's RDP accountant;
* :mod:`cardiolora.fl.protocol` — task names, meta keys, transport dtype, adapter keys (the wire);
* :mod:`cardiolora.fl.site_config` — each participant's local config file (data and output folders);
* :mod:`cardiolora.fl.network` — the bundle's ``network_def`` and the adapter reference built from it;
* :mod:`cardiolora.fl.seeds` — the job seed and each site's per-round seed;
* :mod:`cardiolora.fl.persistor` — the server's ``W_0`` from the bundle and the server's config;
* :mod:`cardiolora.fl.aggregators` — FedAvg weighted by dataset size (the full-weight baseline);
* :mod:`cardiolora.fl.history` — strict JSON and the curves of the round records;
* :mod:`cardiolora.fl.jobs` — the FedJob builders behind ``jobs/<name>/job.py``;
* :mod:`cardiolora.fl.run` — run a job in the FLARE simulator on phantom (or any) sites;
* :mod:`cardiolora.fl.job_info` — what the admin reads: the job summary, ``show_stats`` progress,
  versions, the sites' per-job folders with their ``latest`` pointer;
* :mod:`cardiolora.fl.provision` — a provisioned deployment: ``project.yml``, ``nvflare provision``,
  the participants started from their kits, the admin's session.
"""

from __future__ import annotations

__all__: list[str] = []
