"""Tensor-adapter benchmark: TenVOO-L/-Q upload bytes vs LoRA and the full model, and CPU step time.

    .venv/bin/python benchmarks/tensor_bench.py [--no-docs]

Writes benchmarks/results/tensor.json and the block between the tensor-bench markers of
bundles/cardiac_lora_unet/docs/README.md. Sizes are exact counts of the adapter-only state dicts
(fp16, the wire dtype of the issue's goal); times are ratios within one run.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

from cardiolora.atomic import write_json
from cardiolora.lora import lora_state_dict, state_bytes, tensor_state_dict
from cardiolora.networks import lora_unet, plain_state_dict
from cardiolora.profiles import get_profile
from lib.readme_blocks import machine_line, replace_block

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "bundles" / "cardiac_lora_unet" / "docs" / "README.md"
COMMAND = ".venv/bin/python benchmarks/tensor_bench.py"
FP16 = torch.float16


def sizes(profile: str, lora_ranks: tuple[int, ...] = (16, 32), tensor_ranks: tuple[int, ...] = (2, 3, 4)) -> dict:
    """fp16 bytes per round of each adapter, as a fraction of the full model and of LoRA rank 32."""
    full = state_bytes(plain_state_dict(lora_unet(profile)), FP16)
    rows = {f"LoRA r{r}": state_bytes(lora_state_dict(lora_unet(profile, lora_rank=r)), FP16) for r in lora_ranks}
    for variant in ("L", "Q"):
        for r in tensor_ranks:
            net = lora_unet(profile, adapter="tensor", tensor_rank=r, tensor_seed=0, tensor_variant=variant)
            rows[f"TenVOO-{variant} r{r}"] = state_bytes(tensor_state_dict(net), FP16)
    ref = rows["LoRA r32"]
    return {
        "profile": profile,
        "full_bytes": full,
        "adapters": {k: {"bytes": b, "of_model": b / full, "of_lora32": b / ref} for k, b in rows.items()},
    }


def step_times(profile: str = "quick", batch: int = 8, repeats: int = 5) -> dict:
    """Fastest CPU training step (forward + backward) of full training, LoRA r32, TenVOO-L r2 / r4, TenVOO-Q r2.

    Interleaved within each repeat, the minimum over repeats kept (load from other processes
    affects all alike).
    """
    torch.manual_seed(0)
    x = torch.randn(batch, 1, *get_profile(profile).spatial_size)
    nets = {
        "full": lora_unet(profile),
        "LoRA r32": lora_unet(profile, lora_rank=32),
        "TenVOO-L r2": lora_unet(profile, adapter="tensor", tensor_rank=2, tensor_seed=0, tensor_variant="L"),
        "TenVOO-L r4": lora_unet(profile, adapter="tensor", tensor_rank=4, tensor_seed=0, tensor_variant="L"),
        "TenVOO-Q r2": lora_unet(profile, adapter="tensor", tensor_rank=2, tensor_seed=0, tensor_variant="Q"),
    }
    times: dict[str, list[float]] = {k: [] for k in nets}
    for rep in range(repeats + 1):  # the first round warms up
        for key, net in nets.items():
            t = time.perf_counter()
            net(x).square().mean().backward()
            if rep:
                times[key].append(time.perf_counter() - t)
            net.zero_grad(set_to_none=True)
    best = {k: min(v) for k, v in times.items()}
    return {
        "profile": profile,
        "batch": batch,
        "threads": torch.get_num_threads(),
        "load_average": os.getloadavg()[0],
        "seconds": best,
        "over_full": {k: v / best["full"] for k, v in best.items()},
    }


def markdown(res: dict) -> str:
    lines = [f"Command: `{COMMAND}` — {res['machine']}", ""]
    lines += [
        "Upload per site and round (adapter-only state dict, fp16), by profile:",
        "",
        "| profile | adapter | kB | / full model | / LoRA r32 |",
        "|---|---|---|---|---|",
    ]
    for s in res["sizes"]:
        for name, v in s["adapters"].items():
            lines.append(
                f"| {s['profile']} | {name} | {v['bytes'] / 1e3:.1f} | {100 * v['of_model']:.2f} % | "
                f"{100 * v['of_lora32']:.1f} % |"
            )
        lines.append(f"| {s['profile']} | full model | {s['full_bytes'] / 1e3:.1f} | 100 % | |")
    t = res["steps"]
    lines += [
        "",
        f"CPU training step (forward + backward), {t['profile']} profile, batch {t['batch']}, "
        f"{t['threads']} threads (fastest of interleaved runs; load average {t['load_average']:.1f} during the "
        "run: on a shared machine these times move by 2× between runs, take them as rough):",
        "",
        "| network | seconds | / full training |",
        "|---|---|---|",
    ]
    for k, v in t["seconds"].items():
        lines.append(f"| {k} | {v:.3f} | {t['over_full'][k]:.2f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--no-docs", action="store_true", help="do not update the bundle docs")
    a = p.parse_args()
    res = {
        "machine": machine_line(),
        "sizes": [sizes(prof) for prof in ("quick", "clinical", "paper")],
        "steps": step_times(),
    }
    out = ROOT / "benchmarks" / "results" / "tensor.json"
    write_json(res, out)
    md = markdown(res)
    print(md)
    if not a.no_docs:
        replace_block(DOCS, "tensor-bench", md)


if __name__ == "__main__":
    main()
