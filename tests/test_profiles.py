"""The bundle is the single source of the model: profiles are read from its JSON, not written in Python."""

from __future__ import annotations

import json
import shutil

import pytest

from cardiolora.bundle import make_workflow
from cardiolora.networks import lora_unet, with_lora
from cardiolora.paths import bundle_dir
from cardiolora.profiles import PROFILES, read_profiles

CONFIGS = bundle_dir() / "configs"


def _shapes(net) -> dict:
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def test_every_profile_comes_from_a_config_file():
    assert set(PROFILES) == {"quick", "paper", "clinical"}
    train = json.loads((CONFIGS / "train.json").read_text())
    assert PROFILES["quick"].train_override is None and train["profile"] == "quick"
    assert tuple(train["channels"]) == PROFILES["quick"].channels
    for name in ("paper", "clinical"):
        override = json.loads((CONFIGS / f"{name}.json").read_text())
        assert PROFILES[name].train_override == f"{name}.json"
        assert tuple(override["spatial_size"]) == PROFILES[name].spatial_size
        assert override["max_epochs"] == PROFILES[name].pretrain_epochs
    # no hidden numbers: the configs no longer read a Python profile object
    for path in CONFIGS.glob("*.json"):
        assert "@prof." not in path.read_text(), path


def test_an_edit_of_the_override_file_is_the_profile(tmp_path):
    configs = tmp_path / "configs"
    shutil.copytree(CONFIGS, configs)
    clinical = json.loads((configs / "clinical.json").read_text())
    clinical["channels"] = [8, 16, 32, 64, 128]
    (configs / "clinical.json").write_text(json.dumps(clinical))
    assert read_profiles(configs)["clinical"].channels == (8, 16, 32, 64, 128)


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda d: d.pop("pixel_spacing"), "needs the top-level id `pixel_spacing`"),
        (lambda d: d.update(batch_size="$8"), "`batch_size` must be a literal value"),
    ],
)
def test_a_broken_base_config_is_named(tmp_path, edit, match):
    configs = tmp_path / "configs"
    shutil.copytree(CONFIGS, configs)
    train = json.loads((configs / "train.json").read_text())
    edit(train)
    (configs / "train.json").write_text(json.dumps(train))
    with pytest.raises(ValueError, match=match):
        read_profiles(configs)


def test_two_files_for_one_profile_are_refused(tmp_path):
    configs = tmp_path / "configs"
    shutil.copytree(CONFIGS, configs)
    shutil.copy(configs / "paper.json", configs / "paper_copy.json")
    with pytest.raises(ValueError, match=r"paper_copy.json: profile `paper` is already defined by .*paper.json"):
        read_profiles(configs)


@pytest.mark.parametrize("profile", sorted(PROFILES))
@pytest.mark.parametrize("kind, rank", [("train", 0), ("lora", 8)])
def test_the_workflow_network_is_the_python_network(profile, kind, rank, tmp_path):
    """`lora_unet(profile, rank)` parses the bundle: the same modules as the workflow's `network`."""
    wf = make_workflow(
        kind,
        {"profile": profile, "lora_rank": rank, "dataset_dir": str(tmp_path), "device": "$torch.device('cpu')"},
    )
    net = wf.parser.get_parsed_content("network")
    assert _shapes(net) == _shapes(lora_unet(profile, rank))
    assert wf.parser.get_parsed_content("spatial_size") == list(PROFILES[profile].spatial_size)


def test_with_lora_rank_zero_is_the_network_and_bad_rank_named():
    net = lora_unet("quick")
    assert with_lora(net, 0) is net
    with pytest.raises(ValueError, match="`lora_rank` must be an integer >= 0"):
        with_lora(net, -1)


def test_percentile_scaling_is_a_transform_in_the_config(tmp_path):
    from monai.transforms import ScaleIntensityRangePercentiles

    wf = make_workflow("train", {"profile": "clinical", "dataset_dir": str(tmp_path)})
    norm = wf.parser.get_parsed_content("volume_normalisation")
    assert isinstance(norm, ScaleIntensityRangePercentiles)
    assert (norm.lower, norm.upper) == PROFILES["clinical"].intensity_percentiles
    train = json.loads((CONFIGS / "train.json").read_text())
    assert train["train"]["dataset"]["volume_transform"] == "@volume_normalisation"
    assert train["validate"]["dataset"]["volume_transform"] == "@volume_normalisation"
