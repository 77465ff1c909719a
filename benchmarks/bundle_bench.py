"""Bundle benchmark: adapter vs full-model bytes, forward time base / LoRA / merged, domain gap.

    .venv/bin/python benchmarks/bundle_bench.py [--weights runs/demo/pretrain/model.pt]
        [--sites runs/demo/phantoms/sites] [--acdc-weights W --acdc-data DATASET_DIR]

Writes benchmarks/results/bundle.json and the block between the bundle-bench markers of
bundles/cardiac_lora_unet/docs/README.md. Ratios are taken within one run.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from cardiolora.lora import lora_state_dict, state_bytes
from cardiolora.networks import load_weights, lora_unet
from cardiolora.profiles import get_profile
from lib.readme_blocks import machine_line, replace_block

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "bundles" / "cardiac_lora_unet" / "docs" / "README.md"
COMMAND = ".venv/bin/python benchmarks/bundle_bench.py"


def sizes(profile: str = "paper", ranks: tuple[int, ...] = (4, 8, 16, 32)) -> dict:
    """Bytes of the full fp32 state dict and of the adapter-only state dict per rank."""
    full = state_bytes(lora_unet(profile).state_dict())
    out = {"profile": profile, "full_bytes": full, "ranks": {}}
    for r in ranks:
        a = state_bytes(lora_state_dict(lora_unet(profile, lora_rank=r)))
        out["ranks"][r] = {"adapter_bytes": a, "fraction": a / full}
    return out


def forward_times(profile: str = "paper", rank: int = 16, batch: int = 8, repeats: int = 7) -> dict:
    """Fastest CPU forward time of the base, the unmerged LoRA network and the merged one.

    The three are timed in turn within each repeat (interleaved) and the minimum over repeats is
    kept, so load from other processes on the machine affects all three alike.
    """
    import copy

    from cardiolora.lora import merge_lora

    torch.manual_seed(0)
    prof = get_profile(profile)
    x = torch.randn(batch, 1, *prof.spatial_size)
    base = lora_unet(profile).eval()
    lora = lora_unet(profile, lora_rank=rank).eval()
    load_weights(lora, base.state_dict())
    for n, p in lora.named_parameters():
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.01)
    merged = copy.deepcopy(lora)
    merge_lora(merged)
    nets = {"base": base, "lora_unmerged": lora, "merged": merged}
    times: dict[str, list[float]] = {k: [] for k in nets}
    with torch.inference_mode():
        for net in nets.values():
            net(x)  # warm-up
        for _ in range(repeats):
            for key, net in nets.items():
                t = time.perf_counter()
                net(x)
                times[key].append(time.perf_counter() - t)
    best = {k: min(v) for k, v in times.items()}
    return {
        "profile": profile,
        "rank": rank,
        "batch": batch,
        "threads": torch.get_num_threads(),
        "base_s": best["base"],
        "lora_unmerged_s": best["lora_unmerged"],
        "merged_s": best["merged"],
        "unmerged_over_base": best["lora_unmerged"] / best["base"],
        "merged_over_base": best["merged"] / best["base"],
    }


def score_split(net: torch.nn.Module, dataset_dir: Path, profile: str, split: str = "test") -> dict:
    """Mean paper metrics (over structures, then cases) of `net` on one split of a dataset folder."""
    from cardiolora.data.dataset import load_datalist
    from cardiolora.evaluation import evaluate_records
    from cardiolora.metrics import aggregate_scores

    rows = evaluate_records(net, load_datalist(dataset_dir, split), profile)
    agg = aggregate_scores([r["scores"] for r in rows])
    return {"n_cases": len(rows), **{m: agg["mean"][m]["mean"] for m in ("dice", "voe", "hd", "hd95", "assd")}}


def domain_gap(weights: Path, sites: Path, profile: str) -> dict:
    """Paper metrics of the base model on every phantom site's test split."""
    net = lora_unet(profile)
    load_weights(net, weights)
    names = sorted(p.name for p in sites.iterdir() if (p / "datalist.json").is_file())
    return {site: score_split(net, sites / site, profile) for site in names}


def markdown(res: dict) -> str:
    s = res["sizes"]
    lines = [
        f"Command: `{COMMAND}{res['args']}` — {res['machine']}",
        "",
        f"Adapter size vs full model ({s['profile']} profile, fp32 state dicts; the paper: 1.8 MB at "
        "rank 16 vs 28 MB):",
        "",
        "| rank | adapter MB | full model MB | adapter / full |",
        "|---|---|---|---|",
    ]
    for r, v in s["ranks"].items():
        lines.append(f"| {r} | {v['adapter_bytes'] / 1e6:.2f} | {s['full_bytes'] / 1e6:.2f} | {v['fraction']:.3f} |")
    f = res["forward"]
    lines += [
        "",
        f"CPU forward time, {f['profile']} profile, batch {f['batch']}, {f['threads']} threads, "
        f"rank {f['rank']} (fastest of interleaved runs):",
        "",
        "| model | seconds | / base |",
        "|---|---|---|",
        f"| base | {f['base_s']:.3f} | 1.00 |",
        f"| LoRA unmerged | {f['lora_unmerged_s']:.3f} | {f['unmerged_over_base']:.2f} |",
        f"| LoRA merged | {f['merged_s']:.3f} | {f['merged_over_base']:.2f} |",
    ]
    for key, title in (
        ("phantom_gap", "Base model (pretrained on the reference site) on each phantom site's test split"),
        ("acdc", "Base model trained on ACDC, on ACDC test patients"),
    ):
        if res.get(key):
            lines += [
                "",
                f"{title}:",
                "",
                "| site | cases | Dice | VOE % | HD mm | HD95 mm | ASSD mm |",
                "|---|---|---|---|---|---|---|",
            ]
            for site, v in res[key].items():
                lines.append(
                    f"| {site} | {v['n_cases']} | {v['dice']:.3f} | {v['voe']:.1f} | {v['hd']:.1f} | "
                    f"{v['hd95']:.1f} | {v['assd']:.2f} |"
                )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", type=Path, help="base weights pretrained on the reference phantom site")
    p.add_argument("--sites", type=Path, help="phantom sites folder (…/phantoms/sites)")
    p.add_argument("--profile", default="quick", help="profile of --weights")
    p.add_argument("--acdc-weights", type=Path)
    p.add_argument("--acdc-data", type=Path, help="ACDC dataset folder with datalist.json")
    p.add_argument("--no-docs", action="store_true", help="do not update the bundle docs")
    a = p.parse_args()
    args_text = "".join(f" --{k.replace('_', '-')} {v}" for k, v in vars(a).items() if v not in (None, False))
    res = {"machine": machine_line(), "args": args_text, "sizes": sizes(), "forward": forward_times()}
    if a.weights and a.sites:
        res["phantom_gap"] = domain_gap(a.weights, a.sites, a.profile)
    if a.acdc_weights and a.acdc_data:
        net = lora_unet(a.profile)
        load_weights(net, a.acdc_weights)
        res["acdc"] = {"ACDC test": score_split(net, a.acdc_data, a.profile)}
    out = ROOT / "benchmarks" / "results" / "bundle.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1, default=str))
    md = markdown(res)
    print(md)
    if not a.no_docs:
        replace_block(DOCS, "bundle-bench", md)


if __name__ == "__main__":
    main()
