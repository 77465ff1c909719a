"""Compare local LoRA, FedAvg (full weights), FedPETuning, Rate-My-LoRA (LoRA, tensor, DP), Med-DualLoRA, centralised.

::

    .venv/bin/python benchmarks/compare.py --source phantoms --profile quick --seeds 0 --rounds 2 \\
        --workdir runs/compare

Writes ``<workdir>/results.json``, ``results.md``, ``curves.png`` and ``bandwidth_dice.png`` and the block
``compare-<source>`` of ``benchmarks/README.md`` (unless ``--no-readme``). Finished method runs
(``<workdir>/seed<s>/<method>/done.json``) are reused. The logic is in `lib.harness`
(``benchmarks/lib``).
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path

from cardiolora.profiles import PROFILES
from lib.harness import run_comparison
from lib.methods import available_methods
from lib.tables import METHODS

README = Path(__file__).resolve().parent / "README.md"


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", default="phantoms", choices=["phantoms", "acdc", "mnms2"])
    p.add_argument(
        "--data",
        help="acdc: ACDC folder (official or HDF5 layout; default ../shared/data/acdc_h5); "
        "mnms2: a folder in the M&Ms-2 layout",
    )
    p.add_argument("--profile", default="quick", choices=list(PROFILES))
    p.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[0],
        help="bundle seed of the local and centralised runs, job seed of the FLARE runs; one run of every method each",
    )
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--workdir", default="runs/compare")
    p.add_argument(
        "--methods",
        nargs="+",
        default=list(available_methods()),
        choices=list(METHODS),
        help="default: every method whose FLARE job and job arguments this installation has",
    )
    p.add_argument("--no-readme", action="store_true", help="do not update benchmarks/README.md")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("lib").setLevel(logging.INFO)  # one line per method and seed
    command = ".venv/bin/python benchmarks/compare.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    try:
        summary = run_comparison(
            args.source,
            args.workdir,
            args.seeds,
            args.rounds,
            args.profile,
            args.data,
            args.methods,
            command=command,
            readme=None if args.no_readme else README,
        )
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"compare: {err}", file=sys.stderr)
        return 2
    print(Path(args.workdir) / "results.md")
    print((Path(args.workdir) / "results.md").read_text())
    for method, by_seed in (summary.get("failures") or {}).items():
        for seed, f in by_seed.items():
            print(f"compare: {method} seed {seed} failed: {f['error']} ({f['folder']}/failed.json)", file=sys.stderr)
    return 0 if summary and not summary.get("failures") else 1


if __name__ == "__main__":
    sys.exit(main())
