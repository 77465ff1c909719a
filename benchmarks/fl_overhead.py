"""FL overhead: wall time of a Rate-My-LoRA round in the FLARE simulator vs the same work without FLARE.

    .venv/bin/python benchmarks/fl_overhead.py [--workdir runs/bench_fl] [--rounds 3]
        [--sites-root DIR --pretrained MODEL]

Per round every site trains its adapter for one local epoch (quick profile) and scores the
equal-rating candidate on its validation split. Both sides do exactly that work with the same
code (:class:`cardiolora.fl.site_backend.BundleBackend` through
:class:`cardiolora.fl.site_runner.SiteRunner`):

* FLARE: ``python -m cardiolora.fl.run`` with 3 simulated sites in parallel (1 torch thread
  each); a round's wall time is the controller's own measurement (``seconds`` of the round in
  ``rml_history.json``: train → validate → Eq. 1 / Eq. 2 → state saved);
* without FLARE: one worker process per site (1 torch thread each) runs the same ``train`` and
  ``validate`` calls, driven round by round by one process that rates and merges as the server does;
  rounds ≥ 2 (warm workflows) are timed on both sides.

The ratio FLARE / local is what the federation's machinery (transport, task scheduling, filters,
adapter validation, checksums, saved state, tracking) adds on this machine. Without ``--sites-root`` tiny phantom sites
are generated and an untrained base model is used (timing does not depend on the weights).
Writes benchmarks/results/fl_overhead.json and the fl-overhead block of jobs/README.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from lib.readme_blocks import machine_line, replace_block

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "jobs" / "README.md"
COMMAND = ".venv/bin/python benchmarks/fl_overhead.py"
SITES = ("site-1", "site-2", "site-3")


def tiny_sites(workdir: Path) -> Path:
    """Tiny phantom sites (as the tests use) under `workdir`; returns the sites folder."""
    from cardiolora.data.generate import SiteSpec, generate_sites

    specs = (SiteSpec("site-1", "ge", 4), SiteSpec("site-2", "philips", 3), SiteSpec("site-3", "siemens", 4))
    generate_sites(workdir / "phantoms", specs, seed=7, dicom_subjects=0, progress=False)
    return workdir / "phantoms" / "sites"


def base_model(workdir: Path) -> Path:
    from cardiolora.fl.network import bundle_network
    from cardiolora.networks import plain_state_dict

    torch.manual_seed(0)
    path = workdir / "base_model.pt"
    torch.save(plain_state_dict(bundle_network("quick", 0)), path)
    return path


_SITE = None  # the worker process's SiteRunner


def _worker_init(site: str, dataset_dir: str, output_dir: str) -> None:
    global _SITE
    torch.set_num_threads(1)
    from cardiolora.fl.site_config import SiteConfig
    from cardiolora.fl.site_runner import BundleBackend, SiteRunner

    cfg = SiteConfig(path=Path(output_dir), site=site, dataset_dir=Path(dataset_dir), output_dir=Path(output_dir))
    _SITE = SiteRunner(site, BundleBackend(cfg, "quick", cfg.output_dir), cfg.output_dir, 1, "quick")


def _worker_call(method: str, params: dict, meta: dict):
    reply = getattr(_SITE, method)(params, meta)
    return {
        "params": reply.params,
        "metrics": reply.metrics,
        "n": _SITE.backend.n_cases(),
        "scalings": _SITE.backend.scalings(_SITE.rank) if _SITE.rank else None,
    }


def local_rounds(sites_root: Path, pretrained: Path, rounds: int, workdir: Path) -> list[float]:
    """Wall time per round of the same site work without FLARE.

    One worker process per site (1 torch thread each, as the simulated sites), driven round by
    round from this process, which also rates and merges as the server does.
    """
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    from cardiolora.fl import rml, updates
    from cardiolora.fl.persistor import load_base_weights
    from cardiolora.fl.protocol import pack_adapters
    from cardiolora.networks import rank_for_dataset_size

    ctx = mp.get_context("spawn")
    pools = {
        s: ProcessPoolExecutor(
            1, mp_context=ctx, initializer=_worker_init, initargs=(s, str(sites_root / s), str(workdir / "local" / s))
        )
        for s in SITES
    }
    try:

        def call(method, params, meta):
            futures = {s: pool.submit(_worker_call, method, params(s), meta) for s, pool in pools.items()}
            return {s: f.result() for s, f in futures.items()}

        w0 = load_base_weights("quick", pretrained)
        init = call("on_init", lambda s: w0, {})
        sizes = {s: r["n"] for s, r in init.items()}
        scores = {s: r["metrics"]["score"] for s, r in init.items()}
        ranks = {s: rank_for_dataset_size(n, max(sizes.values())) for s, n in sizes.items()}
        weights, merge, times = dict(w0), None, []
        for t in range(1, rounds + 2):  # round 1 builds the workflows: not timed (rounds >= 2 in FLARE too)
            start = time.perf_counter()
            trained = call("on_train", lambda s: {}, {"round": t, "ranks": ranks, "local_epochs": 1, "merge": merge})
            adapters = {s: r["params"] for s, r in trained.items()}
            scalings = {s: r["scalings"] for s, r in trained.items()}
            meta = {"round": t, "coefficients": rml.candidate_coefficients(sizes), "scalings": scalings}
            packed = pack_adapters(adapters)
            validated = call("on_validate", lambda s, p=packed: p, meta)
            current = {s: r["metrics"]["score"] for s, r in validated.items()}
            coeffs = rml.merge_coefficients(sizes, rml.rate_sites(scores, current, rml.lambda_at_round(0.2, t)))
            weights = updates.apply_coefficients(weights, adapters, scalings, coeffs)
            scores.update(current)
            merge = {"round": t, "coefficients": coeffs, "scalings": scalings}
            if t > 1:
                times.append(time.perf_counter() - start)
        return times
    finally:
        for pool in pools.values():
            pool.shutdown(cancel_futures=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", default=str(ROOT / "runs" / "bench_fl"))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--sites-root")
    p.add_argument("--pretrained")
    p.add_argument("--no-readme", action="store_true")
    args = p.parse_args(argv)
    import os

    from cardiolora.fl.run import run_simulation

    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):  # as the simulated sites
        os.environ.setdefault(var, "1")
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    sites_root = Path(args.sites_root) if args.sites_root else tiny_sites(workdir)
    pretrained = Path(args.pretrained) if args.pretrained else base_model(workdir)

    t = time.perf_counter()
    summary = run_simulation("rate_my_lora", sites_root, pretrained, workdir / "sim", rounds=args.rounds, timeout=3600)
    total = time.perf_counter() - t
    history = json.loads(Path(summary["results"]["rml_history.json"]).read_text())
    fl = [r["seconds"] for r in history["rounds"] if r.get("task") is None and r["round"] >= 2]
    local = local_rounds(sites_root, pretrained, max(1, args.rounds - 1), workdir)
    result = {
        "machine": machine_line(),
        "command": COMMAND,
        "rounds": args.rounds,
        "fl_round_seconds": fl,
        "local_round_seconds": local,
        "fl_median": statistics.median(fl),
        "local_median": statistics.median(local),
        "ratio": statistics.median(fl) / statistics.median(local),
        "simulator_job_seconds": round(total, 1),
        "phases": {r.get("task") or f"round {r['round']}": r.get("seconds") for r in history["rounds"]},
    }
    table = "\n".join(
        [
            "| per round (rounds ≥ 2, 3 sites, quick profile, tiny sites) | median wall time |",
            "|---|---|",
            f"| FLARE simulator (train → validate → rate → merge → save) | {result['fl_median']:.1f} s |",
            f"| same site work, no FLARE (one process per site) | {result['local_median']:.1f} s |",
            f"| ratio FLARE / local | {result['ratio']:.2f} |",
            "",
            f"Whole simulator job ({args.rounds} rounds incl. start-up, init, finalize, cross-site evaluation): "
            f"{result['simulator_job_seconds']:.0f} s.",
        ]
    )
    print(table)
    out = ROOT / "benchmarks" / "results" / "fl_overhead.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"\nwritten: {out}")
    if not args.no_readme:
        replace_block(README, "fl-overhead", f"`{COMMAND}` ({result['machine']}):\n\n{table}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
