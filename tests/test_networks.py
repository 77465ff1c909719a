"""The bundle's network_def: profiles, LoRA injection, weight loading and the export view."""

from __future__ import annotations

import pytest
import torch

from cardiolora.lora import lora_modules
from cardiolora.networks import ExportView, load_weights, lora_unet, plain_state_dict, rank_for_dataset_size
from cardiolora.profiles import PROFILES, get_profile


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_profile_network_shapes(profile):
    prof = get_profile(profile)
    net = lora_unet(profile).eval()
    x = torch.zeros(1, 1, *prof.spatial_size)
    assert net(x).shape == (1, 4, *prof.spatial_size)


def test_lora_network_starts_equal_to_base_and_trains_only_adapters():
    torch.manual_seed(0)
    base = lora_unet("quick").eval()
    lora = lora_unet("quick", lora_rank=4).eval()
    load_weights(lora, base.state_dict())
    x = torch.randn(2, 1, 64, 64)
    assert torch.equal(base(x), lora(x))
    trainable = [n for n, p in lora.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_" in n for n in trainable)
    n_convs = sum(isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)) for m in base.modules())
    assert len(lora_modules(lora)) == n_convs


def test_export_view_is_the_merged_plain_network():
    torch.manual_seed(1)
    lora = lora_unet("quick", lora_rank=4).eval()
    for name, p in lora.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.05)
    plain = lora_unet("quick").eval()
    plain.load_state_dict(ExportView(lora).state_dict())
    x = torch.randn(2, 1, 64, 64)
    # fp32 sums of ~10 layers: 1e-5 relative to outputs of order 1
    assert torch.allclose(plain(x), lora(x), atol=1e-4)
    assert set(plain_state_dict(lora)) == set(plain.state_dict())


def test_load_weights_refuses_other_profile(tmp_path):
    path = tmp_path / "paper.pt"
    torch.save(lora_unet("paper").state_dict(), path)
    with pytest.raises(ValueError, match="paper.pt: weights do not fit"):
        load_weights(lora_unet("quick"), path)


def test_load_weights_missing_file_says_how_to_make_weights(tmp_path):
    with pytest.raises(FileNotFoundError, match="cardiolora pretrain"):
        load_weights(lora_unet("quick"), tmp_path / "none.pt")


@pytest.mark.parametrize(
    "n, largest, expected",
    [("half", 12, 16), ("equal", 24, 32), ("three_quarters", 18, 32), ("just_below", 17, 16)],
)
def test_rank_for_dataset_size(n, largest, expected):
    sizes = {"half": 6, "equal": 24, "three_quarters": 18, "just_below": 17}
    largest_sizes = {"half": 12, "equal": 24, "three_quarters": 24, "just_below": 24}
    assert rank_for_dataset_size(sizes[n], largest_sizes[n]) == expected


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_cases": 0, "largest": 3}, "must be positive"),
        ({"n_cases": 5, "largest": 3}, "cannot exceed"),
        ({"n_cases": 1, "largest": 3, "threshold": 0.0}, "threshold"),
    ],
)
def test_rank_for_dataset_size_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        rank_for_dataset_size(**kwargs)


@pytest.mark.parametrize("kwargs, match", [({"lora_rank": -1}, "lora_rank"), ({"profile": "huge"}, "profile")])
def test_lora_unet_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        lora_unet(**kwargs)
