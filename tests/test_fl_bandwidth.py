"""benchmarks/fl_bandwidth.py: the byte counts per transport dtype (tiny hand-made adapters)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from cardiolora.fl.protocol import DEFAULT_TRANSPORT_DTYPE

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def fl_bandwidth():
    spec = importlib.util.spec_from_file_location("fl_bandwidth", REPO / "benchmarks" / "fl_bandwidth.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _adapter(rank: int) -> dict[str, torch.Tensor]:
    """A conv (3 → 8, 3×3) and a transposed conv (16 → 4, 2×2) adapter: rank·(27 + 8) + rank·(16 + 16) numbers."""
    return {
        "enc.lora_A.weight": torch.randn(rank, 3, 3, 3),
        "enc.lora_B.weight": torch.randn(8, rank, 1, 1),
        "up.lora_A.weight": torch.randn(rank, 16, 1, 1),
        "up.lora_B_T.weight": torch.randn(rank, 4, 2, 2),
    }


@pytest.mark.parametrize("dtype, itemsize", [("float32", 4), ("float16", 2)])
def test_bandwidth_counts(fl_bandwidth, dtype, itemsize):
    ranks = {"site-1": 4, "site-2": 2}
    full = 100_000
    res = fl_bandwidth.bandwidth_for(full, {s: _adapter(r) for s, r in ranks.items()}, ranks, dtype)
    up = {s: itemsize * r * (27 + 8 + 16 + 16) for s, r in ranks.items()}
    down = sum(up.values())
    for s, row in res["sites"].items():
        assert row["rml_up"] == up[s] and row["rml_down"] == down
        assert row["fedavg_up"] == row["fedavg_down"] == full
        assert row["upload_saving"] == pytest.approx(1 - up[s] / full)
        assert row["download_saving"] == pytest.approx(1 - down / full)
    assert res["total"]["rml_up"] == down and res["total"]["rml_down"] == 2 * down
    assert res["total"]["fedavg_up"] == 2 * full
    assert res["one_time"]["finalize_up_per_site"] == up and res["one_time"]["cross_eval_down_per_site"] == down


def test_reported_dtypes_and_markdown(fl_bandwidth):
    assert fl_bandwidth.transport_dtypes() == list(dict.fromkeys(["float32", DEFAULT_TRANSPORT_DTYPE]))
    ranks = {"site-1": 2}
    result = {
        "profile": "tiny",
        "full_model_bytes": 10_000,
        "default_transport_dtype": DEFAULT_TRANSPORT_DTYPE,
        "transport": {
            dt: fl_bandwidth.bandwidth_for(10_000, {"site-1": _adapter(2)}, ranks, dt)
            for dt in fl_bandwidth.transport_dtypes()
        },
    }
    md = fl_bandwidth.markdown(result)
    assert "Adapters in **float32**" in md and f"Adapters in **{DEFAULT_TRANSPORT_DTYPE}** (the jobs' default)" in md
    assert md.count("| all sites |") == len(result["transport"])
