"""FL bandwidth: payload bytes per round and site, Rate-My-LoRA vs full-weight FedAvg.

    .venv/bin/python benchmarks/fl_bandwidth.py [--profile paper] [--ranks 32 16 32]

Computed from the real state dicts of the bundle's network (no training): what each task of the
protocol ships (:mod:`cardiolora.fl.protocol`), counted as FLARE ships it (numpy arrays, tensor bytes
only — no envelope), once per transport dtype of the adapters: ``float32`` and the jobs' default
(``float16``; :data:`cardiolora.fl.protocol.DEFAULT_TRANSPORT_DTYPE`). The adapters are rounded with
the same :func:`cardiolora.fl.protocol.to_transport` the sites and the server call. Per round,
Rate-My-LoRA sends up a site's own adapter (``train``) and down every accepted adapter
(``validate``; the merge coefficients travel as a few numbers); FedAvg sends the full float32
weights up and down. One-time costs (``init``: ``W_0`` down in float32; ``finalize`` and
``cross_eval``) are listed apart. Writes benchmarks/results/fl_bandwidth.json and the block between
the fl-bandwidth markers of jobs/README.md.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path

from cardiolora.fl.network import bundle_network
from cardiolora.fl.protocol import (
    DEFAULT_TRANSPORT_DTYPE,
    pack_adapters,
    payload_bytes,
    to_numpy,
    to_transport,
)
from cardiolora.lora import lora_state_dict
from cardiolora.networks import plain_state_dict
from cardiolora.profiles import PROFILES
from lib.readme_blocks import machine_line, replace_block

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "jobs" / "README.md"
COMMAND = ".venv/bin/python benchmarks/fl_bandwidth.py"
#: Upload saving at rank 32 that issue 4 asks for (paper profile).
TARGET_SAVING = 0.94


def transport_dtypes() -> list[str]:
    """The dtypes reported: float32 and the jobs' default (once if they are the same)."""
    return list(dict.fromkeys(["float32", DEFAULT_TRANSPORT_DTYPE]))


def bandwidth_for(full: int, adapters: Mapping[str, Mapping], ranks: Mapping[str, int], dtype: str) -> dict:
    """Per-round bytes of every site for one transport dtype.

    ``up_c = bytes(Q(A_c, B_c))``, ``down = Σ_c up_c`` (every accepted adapter goes to every site),
    ``saving = 1 − bytes / full`` against FedAvg's full float32 model, with ``Q`` the rounding of
    :func:`cardiolora.fl.protocol.to_transport`.

    Args:
        full: bytes of the full float32 model (FedAvg's upload and download per round).
        adapters: ``{site: adapter-only state dict}`` (float32, as trained).
        ranks: ``{site: r_c}``.
        dtype: transport dtype name.

    Returns:
        ``{"sites": {site: row}, "total": {...}, "one_time": {...}}`` (JSON-able).
    """
    sent = {s: to_numpy(to_transport(a, dtype)) for s, a in adapters.items()}
    down = payload_bytes(pack_adapters(sent))
    sites = {}
    for s, r in ranks.items():
        up = payload_bytes(sent[s])
        sites[s] = {
            "rank": r,
            "rml_up": up,
            "rml_down": down,
            "fedavg_up": full,
            "fedavg_down": full,
            "upload_saving": 1 - up / full,
            "download_saving": 1 - down / full,
        }
    n = len(ranks)
    total_up = sum(row["rml_up"] for row in sites.values())
    return {
        "sites": sites,
        "total": {
            "rml_up": total_up,
            "rml_down": n * down,
            "fedavg_up": n * full,
            "fedavg_down": n * full,
            "upload_saving": 1 - total_up / (n * full),
            "download_saving": 1 - down / full,
        },
        "one_time": {
            "init_down_per_site": full,
            "finalize_up_per_site": {s: payload_bytes(a) for s, a in sent.items()},
            "cross_eval_down_per_site": down,
        },
    }


def bandwidth(profile: str, ranks: dict[str, int]) -> dict:
    """Bytes per round and site for both methods and every reported transport dtype.

    Args:
        profile: run profile of the bundle network.
        ranks: ``{site: r_c}``.

    Returns:
        A JSON-able dict: ``full_model_bytes`` and, per dtype, per-site rows, totals, one-time costs.
    """
    full = payload_bytes(to_numpy(plain_state_dict(bundle_network(profile, 0))))
    adapters = {s: lora_state_dict(bundle_network(profile, r)) for s, r in ranks.items()}
    return {
        "profile": profile,
        "full_model_bytes": full,
        "default_transport_dtype": DEFAULT_TRANSPORT_DTYPE,
        "target_upload_saving_rank32": TARGET_SAVING,
        "transport": {dt: bandwidth_for(full, adapters, ranks, dt) for dt in transport_dtypes()},
    }


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB"


def markdown(result: dict) -> str:
    """The per-round tables as Markdown, one per transport dtype."""
    lines = [
        f"Profile `{result['profile']}`, full model {_mb(result['full_model_bytes'])} (float32; FedAvg sends it "
        "both ways). Per round and site:",
    ]
    for dt, res in result["transport"].items():
        default = " (the jobs' default)" if dt == result["default_transport_dtype"] else ""
        lines += [
            "",
            f"Adapters in **{dt}**{default}:",
            "",
            "| site | rank | Rate-My-LoRA up | Rate-My-LoRA down | FedAvg up | FedAvg down | upload saved "
            "| download saved |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for s, row in [*res["sites"].items(), ("all sites", {**res["total"], "rank": "—"})]:
            lines.append(
                f"| {s} | {row['rank']} | {_mb(row['rml_up'])} | {_mb(row['rml_down'])} | {_mb(row['fedavg_up'])} | "
                f"{_mb(row['fedavg_down'])} | {100 * row['upload_saving']:.1f}% | {100 * row['download_saving']:.1f}% |"
            )
    one = result["transport"][result["default_transport_dtype"]]["one_time"]
    lines += [
        "",
        f"Once per job: `init` sends W_0 down ({_mb(one['init_down_per_site'])} per site, float32); `finalize` sends "
        f"the personal adapter up; `cross_eval` sends all personal adapters down "
        f"({_mb(one['cross_eval_down_per_site'])} in {result['default_transport_dtype']}).",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", default="paper", choices=list(PROFILES))
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
