"""FL bandwidth: payload bytes per round and site, Rate-My-LoRA vs full-weight FedAvg.

    .venv/bin/python benchmarks/fl_bandwidth.py [--profile paper] [--ranks 32 16 32]

Computed from the real state dicts of the bundle's network (no training): what each task of the
protocol ships (:mod:`cardiolora.fl.common`), counted as FLARE ships it (fp32 numpy arrays,
tensor bytes only — no envelope). Per round, Rate-My-LoRA sends up a site's own adapter (``train``)
and down every accepted adapter (``validate``; the merge coefficients travel as a few numbers);
FedAvg sends the full weights up and down. One-time costs (``init``: ``W_0`` down; ``finalize``
and ``cross_eval``) are listed apart. Writes benchmarks/results/fl_bandwidth.json and the block
between the fl-bandwidth markers of jobs/README.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cardiolora.fl.common import bundle_network, pack_adapters, payload_bytes, to_numpy
from cardiolora.lora import lora_state_dict
from cardiolora.networks import plain_state_dict
from cardiolora.report import machine_line, replace_block

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "jobs" / "README.md"
COMMAND = ".venv/bin/python benchmarks/fl_bandwidth.py"


def bandwidth(profile: str, ranks: dict[str, int]) -> dict:
    """Bytes per round and site for both methods (see the module docstring).

    Args:
        profile: run profile of the bundle network.
        ranks: ``{site: r_c}``.

    Returns:
        A JSON-able dict with per-site rows and the upload saving at each rank.
    """
    full = payload_bytes(to_numpy(plain_state_dict(bundle_network(profile, 0))))
    adapters = {s: to_numpy(lora_state_dict(bundle_network(profile, r))) for s, r in ranks.items()}
    validate_down = payload_bytes(pack_adapters(adapters))
    sites = {}
    for s, r in ranks.items():
        up = payload_bytes(adapters[s])
        sites[s] = {
            "rank": r,
            "rml_up": up,
            "rml_down": validate_down,
            "fedavg_up": full,
            "fedavg_down": full,
            "upload_saving": 1 - up / full,
            "download_saving": 1 - validate_down / full,
        }
    return {
        "profile": profile,
        "full_model_bytes": full,
        "sites": sites,
        "one_time": {
            "init_down_per_site": full,
            "finalize_up_per_site": {s: payload_bytes(a) for s, a in adapters.items()},
            "cross_eval_down_per_site": validate_down,
        },
    }


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB"


def markdown(result: dict) -> str:
    """The per-round table as Markdown."""
    lines = [
        f"Profile `{result['profile']}`, full model {_mb(result['full_model_bytes'])} (fp32), per round and site:",
        "",
        "| site | rank | Rate-My-LoRA up | Rate-My-LoRA down | FedAvg up | FedAvg down | upload saved "
        "| download saved |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s, row in result["sites"].items():
        lines.append(
            f"| {s} | {row['rank']} | {_mb(row['rml_up'])} | {_mb(row['rml_down'])} | {_mb(row['fedavg_up'])} | "
            f"{_mb(row['fedavg_down'])} | {100 * row['upload_saving']:.1f}% | {100 * row['download_saving']:.1f}% |"
        )
    one = result["one_time"]
    lines += [
        "",
        f"Once per job: `init` sends W_0 down ({_mb(one['init_down_per_site'])} per site); `finalize` sends the "
        f"personal adapter up; `cross_eval` sends all personal adapters down ({_mb(one['cross_eval_down_per_site'])}).",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", default="paper", choices=["quick", "paper"])
    p.add_argument("--ranks", type=int, nargs=3, default=[32, 16, 32], help="ranks of site-1 site-2 site-3")
    p.add_argument("--no-readme", action="store_true", help="do not update jobs/README.md")
    args = p.parse_args(argv)
    result = bandwidth(args.profile, {f"site-{i + 1}": r for i, r in enumerate(args.ranks)})
    result["machine"] = machine_line()
    result["command"] = COMMAND + ("" if args.profile == "paper" else f" --profile {args.profile}")
    table = markdown(result)
    print(table)
    out = ROOT / "benchmarks" / "results" / f"fl_bandwidth{'' if args.profile == 'paper' else '_' + args.profile}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"\nwritten: {out}")
    if not args.no_readme and args.profile == "paper" and args.ranks == [32, 16, 32]:
        replace_block(README, "fl-bandwidth", f"`{result['command']}` ({result['machine']}):\n\n{table}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
