"""Model-zoo readiness of the two bundles, checked with MONAI's own bundle tools.

``verify_metadata`` (the zoo's schema) and ``verify_net_in_out`` (the network accepts the declared
input shape and returns the declared channels and dtype) for every run profile, on the LoRA U-Net
bundle and the site-inference bundle; ``ckpt_export`` (TorchScript) of the ``quick`` network; the
version, license and large-file declarations the zoo expects.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from monai.bundle import ConfigParser, ckpt_export, verify_metadata, verify_net_in_out
from monai.data import load_net_with_metadata

import cardiolora
from cardiolora.bundle import config_files, meta_files
from cardiolora.paths import bundle_dir, inference_bundle_dir
from cardiolora.profiles import PROFILES

BUNDLE = bundle_dir()
SITE_BUNDLE = inference_bundle_dir()
SCHEMA = BUNDLE.parent / "schemas" / "meta_schema.json"
#: (bundle folder, the config holding its `network_def`) of both bundles.
BUNDLES = {
    "lora_unet": (BUNDLE, "train.json"),
    "site_inference": (SITE_BUNDLE, "inference.json"),
}
CASES = [(b, p) for b in BUNDLES for p in sorted(PROFILES)]


def _configs(bundle: str, profile: str) -> list[str]:
    """The config files defining `network_def` in `bundle` for `profile` (with its override in the LoRA bundle)."""
    root, config = BUNDLES[bundle]
    if bundle == "lora_unet":
        override = PROFILES[profile].train_override
        return config_files("train") + ([str(root / "configs" / override)] if override else [])
    return [str(root / "configs" / config)]


def _declared(profile: str, bundle: str = "lora_unet") -> dict:
    """The merged metadata of `bundle` for `profile`, as MONAI merges a list of meta files."""
    return ConfigParser.load_config_files(meta_files(profile, BUNDLES[bundle][0]))


def _multiple(shape_entry: str) -> int:
    """``"16*n"`` → 16."""
    factor, var = shape_entry.split("*")
    assert var == "n", shape_entry
    return int(factor)


@pytest.mark.parametrize("bundle, profile", CASES)
def test_metadata_of_every_profile_verifies_against_the_zoo_schema(bundle, profile):
    verify_metadata(meta_file=meta_files(profile, BUNDLES[bundle][0]), filepath=str(SCHEMA))


@pytest.mark.parametrize("bundle, profile", CASES)
def test_network_accepts_the_declared_shape_of_every_profile(bundle, profile):
    """At ``n = 1``, the smallest declared input (which ``8*n`` got wrong)."""
    root, _ = BUNDLES[bundle]
    overrides = {"profile": profile} if bundle == "site_inference" else {}
    verify_net_in_out(
        net_id="network_def",
        meta_file=meta_files(profile, root),
        config_file=_configs(bundle, profile),
        device="cpu",
        n=1,
        **overrides,
    )


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_the_declared_multiple_is_the_smallest_the_network_takes(profile):
    """The declared ``k*n`` is 2 pixels at the U-Net's bottom (``k = 2 · ∏ strides``): half of it fails,
    and the profile's inference window is a multiple of it."""
    prof = PROFILES[profile]
    fmt = _declared(profile)["network_data_format"]
    shapes = {fmt["inputs"]["image"]["spatial_shape"][0], fmt["outputs"]["pred"]["spatial_shape"][0]}
    assert len(shapes) == 1
    k = _multiple(shapes.pop())
    down = 1
    for s in prof.strides:
        down *= s
    assert k == 2 * down
    assert all(size % k == 0 for size in prof.spatial_size), (prof.spatial_size, k)
    parser = ConfigParser()
    parser.read_config(_configs("lora_unet", profile))
    net = parser.get_parsed_content("network_def").eval()
    with torch.no_grad(), pytest.raises(ValueError, match="more than 1 spatial element"):
        net(torch.rand(1, 1, k // 2, k // 2))


def test_the_site_bundle_declares_the_lora_bundles_network():
    for profile in PROFILES:
        site, lora = _declared(profile, "site_inference"), _declared(profile)
        assert site["network_data_format"] == lora["network_data_format"], profile


def test_monai_bundle_command_line_verifies_the_paper_profile():
    """The command of docs/README.md, through ``python -m monai.bundle`` (needs ``fire``)."""
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "monai.bundle",
            "verify_net_in_out",
            "network_def",
            "--meta_file",
            "['configs/metadata.json','configs/metadata_paper.json']",
            "--config_file",
            "['configs/train.json','configs/paper.json']",
            "--device",
            "cpu",
        ],
        cwd=BUNDLE,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "verified with no error" in run.stdout + run.stderr


def test_ckpt_export_gives_torchscript_equal_to_the_eager_network(tmp_path):
    """MONAI's ``ckpt_export`` of the quick network from a checkpoint written here; the TorchScript
    carries the metadata and gives the eager outputs (fp32, 1e-5)."""
    parser = ConfigParser()
    parser.read_config(config_files("train"))
    torch.manual_seed(0)
    eager = parser.get_parsed_content("network_def").eval()
    with torch.no_grad():  # non-zero biases and norms: a real checkpoint, not the initial state
        for p in eager.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ckpt = tmp_path / "model.pt"
    torch.save(eager.state_dict(), ckpt)
    ts = tmp_path / "model.ts"
    (meta,) = meta_files("quick")  # ckpt_export takes one meta file (no list, unlike verify_*)
    ckpt_export(
        net_id="network_def",
        filepath=str(ts),
        ckpt_file=str(ckpt),
        meta_file=meta,
        config_file=config_files("train"),
        bundle_root=str(BUNDLE),
    )
    scripted, meta, extra = load_net_with_metadata(str(ts), more_extra_files=("train.json",))
    assert meta["version"] == cardiolora.__version__
    assert json.loads(extra["train.json"])["profile"] == "quick"
    x = torch.rand(2, 1, *PROFILES["quick"].spatial_size)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), eager(x), rtol=1e-5, atol=1e-5)
