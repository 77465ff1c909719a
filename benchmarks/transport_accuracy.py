"""What float16 transport costs in accuracy: the same Rate-My-LoRA simulator run, adapters in float32 vs float16.

    .venv/bin/python benchmarks/transport_accuracy.py [--workdir runs/transport_accuracy] [--rounds 2]

Small phantom sites (reference 8, site-1 6, site-2 4, site-3 6 subjects; seed 7), a quick-profile
base model pretrained on the reference site for a few epochs, then ``rate_my_lora`` in the FLARE
simulator (:func:`cardiolora.fl.run.run_simulation`) once per transport dtype with everything else
equal. Reported: mean case Dice (LV, MYO, RV) of the global model ``W_T`` and of each site's
personalised model on each site's test split (``cross_site_eval.json``), the bytes each site sent
up per round (``rml_history.json``, counted by the server from what arrived) and whether every
checksum agreed. Writes benchmarks/results/transport_accuracy.json and the block between the
transport-accuracy markers of jobs/README.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from cardiolora.fl.protocol import TRANSPORT_DTYPES
from cardiolora.fl.run import run_simulation
from lib.readme_blocks import machine_line, replace_block

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "jobs" / "README.md"
COMMAND = ".venv/bin/python benchmarks/transport_accuracy.py"
SITES = ("reference:reference:8", "site-1:ge:6", "site-2:philips:4", "site-3:siemens:6")


def _cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "cardiolora.cli", *args], check=True)


def summarise(results: dict) -> dict:
    """Dice, bytes and checksum agreement of one simulator run.

    Args:
        results: ``{file name: path}`` of :func:`run_simulation`'s summary.

    Returns:
        ``{"global_dice": {site: d}, "personal_dice": {site: d}, "bytes_up_per_round": {site: b},
        "checksums_agree": bool, "ranks": {site: r}}`` (Dice = mean over LV, MYO, RV on the site's test split).
    """
    table = json.loads(Path(results["cross_site_eval.json"]).read_text())["mean_over_structures"]["dice"]
    history = json.loads(Path(results["rml_history.json"]).read_text())
    rounds = [r for r in history["rounds"] if r.get("task") is None]
    return {
        "global_dice": table["global"],
        "personal_dice": {site: table[site][site] for site in table if site != "global"},
        "bytes_up_per_round": {s: v["bytes_up"] for s, v in rounds[-1]["sites"].items()},
        "checksums_agree": all(v.get("checksum_ok", True) for r in history["rounds"] for v in r["sites"].values()),
        "ranks": history["ranks"],
    }


def markdown(result: dict) -> str:
    """One row per transport dtype and site."""
    lines = [
        "| transport | site | rank | bytes up per round | Dice of W_T | Dice personalised | checksums agree |",
        "|---|---|---|---|---|---|---|",
    ]
    for dt, run in result["runs"].items():
        for site in sorted(run["global_dice"]):
            lines.append(
                f"| {dt} | {site} | {run['ranks'][site]} | {run['bytes_up_per_round'][site]:,} | "
                f"{run['global_dice'][site]:.4f} | {run['personal_dice'][site]:.4f} | {run['checksums_agree']} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", default=str(ROOT / "runs" / "transport_accuracy"))
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--pretrain-epochs", type=int, default=6)
    p.add_argument("--no-readme", action="store_true", help="do not update jobs/README.md")
    args = p.parse_args(argv)
    work = Path(args.workdir).resolve()
    phantoms, pretrain = work / "phantoms", work / "pretrain"
    if not (phantoms / "sites" / "reference" / "datalist.json").is_file():
        _cli("phantoms", "--out", str(phantoms), "--seed", "7", "--dicom-subjects", "0", "--no-progress",
             *[a for s in SITES for a in ("--site", s)])  # fmt: skip
    if not (pretrain / "model.pt").is_file():
        _cli("pretrain", "--data", str(phantoms / "sites" / "reference"), "--out", str(pretrain),
             "--profile", "quick", "--epochs", str(args.pretrain_epochs), "--no-progress")  # fmt: skip
    runs = {}
    for dt in TRANSPORT_DTYPES:
        summary = run_simulation(
            "rate_my_lora", phantoms / "sites", pretrain / "model.pt", work / f"fl_{dt}", rounds=args.rounds,
            profile="quick", transport_dtype=dt,
        )  # fmt: skip
        runs[dt] = summarise(summary["results"])
        runs[dt]["seconds"] = summary["seconds"]
    result = {"rounds": args.rounds, "pretrain_epochs": args.pretrain_epochs, "runs": runs}
    result["machine"] = machine_line()
    result["command"] = COMMAND
    table = markdown(result)
    print(table)
    out = ROOT / "benchmarks" / "results" / "transport_accuracy.json"
    out.write_text(json.dumps(result, indent=1))
    print(f"\nwritten: {out}")
    if not args.no_readme and args.rounds == 2 and args.pretrain_epochs == 6:
        replace_block(README, "transport-accuracy", f"`{result['command']}` ({result['machine']}):\n\n{table}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
