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
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser, ckpt_export, verify_metadata, verify_net_in_out
from monai.data import load_net_with_metadata

import cardiolora
import clinical_pretrain  # benchmarks/ (pytest's pythonpath): the command that measures eval_metrics
from cardiolora.bundle import config_files, meta_files, profile_configs
from cardiolora.paths import bundle_dir, inference_bundle_dir
from cardiolora.profiles import PROFILES

REPO = Path(__file__).resolve().parents[1]
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
        return config_files("train") + profile_configs("train", profile)
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


@pytest.mark.parametrize("bundle", sorted(BUNDLES))
def test_bundle_version_is_the_package_version(bundle):
    meta = json.loads((BUNDLES[bundle][0] / "configs" / "metadata.json").read_text())
    assert meta["version"] == cardiolora.__version__ and meta["version"] in meta["changelog"]
    assert meta["required_packages_version"]["cardiolora"] == cardiolora.__version__


def test_the_code_license_is_apache_2_everywhere():
    """pyproject's SPDX license, the root LICENSE and each bundle's LICENSE say the same (the zoo's license)."""
    pyproject = (REPO / "pyproject.toml").read_text().splitlines()  # no tomllib on Python 3.10
    assert 'license = "Apache-2.0"' in pyproject and 'license-files = ["LICENSE"]' in pyproject
    text = (REPO / "LICENSE").read_text()
    assert text.split()[:4] == ["Apache", "License", "Version", "2.0,"] and "END OF TERMS AND CONDITIONS" in text
    for root, _ in BUNDLES.values():
        assert (root / "LICENSE").read_text() == text, root


@pytest.mark.parametrize("bundle", sorted(BUNDLES))
def test_data_license_names_the_terms_and_the_default_data(bundle):
    text = " ".join((BUNDLES[bundle][0] / "docs" / "data_license.txt").read_text().split())
    for needed in ("synthetic", "cardiolora phantoms", "ACDC", "CC BY-NC-SA 4.0", "Bernard", "M&Ms-2", "Martin-Isla"):
        assert needed in text, needed
    assert "non-commercial" in text.lower()


def test_large_files_declare_the_weights_the_commands_make():
    """large_files.yml in the zoo's format; the weights are not in git and the file says how to make them."""
    path = BUNDLE / "large_files.yml"
    entries = ConfigParser.load_config_file(str(path))["large_files"]
    assert [e["path"] for e in entries] == ["models/model.pt", "models/model.ts"]
    for e in entries:
        assert set(e) == {"path", "url", "hash_val", "hash_type"}, e
    model = entries[0]
    assert model["hash_type"] == "sha256" and len(model["hash_val"]) == 64 and int(model["hash_val"], 16) >= 0
    text = path.read_text()
    assert "make clinical-pretrain" in text and "ckpt_export" in text
    tracked = subprocess.run(
        ["git", "ls-files", "--", "bundles/*/models"], cwd=REPO, capture_output=True, text=True, check=False
    ).stdout.split()
    assert all(t.endswith(".gitignore") for t in tracked), tracked


def _report(split: str = "test", lv: float = 0.9195) -> dict:
    """A held-out report as `clinical_pretrain.report` writes it (two tables with an "all" row and a group row)."""
    row = {"subset": "all", "n": 32, "LV": lv, "MYO": 0.8596, "RV": 0.8381, "mean": 0.8724}
    group = {"subset": "DCM", "n": 6, "LV": 0.5, "MYO": 0.5, "RV": 0.5, "mean": 0.5}
    raw = {**row, "LV": 0.907, "mean": 0.8601}
    return {"split": split, "profile": "clinical", "table": [row, group], "table_raw": [raw, group]}


@pytest.mark.parametrize("bundle", sorted(BUNDLES))
def test_the_bundle_eval_metrics_are_numbers(bundle):
    metrics = json.loads((BUNDLES[bundle][0] / "configs" / "metadata.json").read_text())["eval_metrics"]
    assert metrics and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in metrics.values())


def test_eval_metrics_command_writes_the_held_out_numbers_into_a_metadata_copy(tmp_path):
    """``clinical_pretrain.py eval-metrics``: only the eval_metrics block changes; the result still verifies."""
    meta = tmp_path / "metadata.json"
    original = (BUNDLE / "configs" / "metadata.json").read_text()
    meta.write_text(original)
    run = tmp_path / "run"
    run.mkdir()
    (run / "test_report.json").write_text(json.dumps(_report(lv=0.5)))  # not the committed 0.9195
    assert clinical_pretrain.main(["eval-metrics", "--run", str(run), "--metadata", str(meta)]) == 0
    new = json.loads(meta.read_text())
    assert new["eval_metrics"] == {
        "case_dice": 0.8724,
        "dice_lv": 0.5,
        "dice_myo": 0.8596,
        "dice_rv": 0.8381,
        "case_dice_raw": 0.8601,
        "test_cases": 32,
    }
    old = json.loads(original)
    assert {k: v for k, v in new.items() if k != "eval_metrics"} == {
        k: v for k, v in old.items() if k != "eval_metrics"
    }
    assert '"spatial_shape": ["16*n", "16*n"]' in meta.read_text()  # the file's own layout is kept
    verify_metadata(meta_file=str(meta), filepath=str(SCHEMA))


@pytest.mark.parametrize(
    "report, match",
    [
        (_report(split="val"), "split` must be 'test'"),
        (_report(lv=float("nan")), "column `LV` must be a finite number"),
        ({"split": "test", "table": [], "table_raw": []}, "one row with subset 'all'"),
    ],
)
def test_eval_metrics_refuse_a_report_that_is_not_held_out_numbers(report, match):
    with pytest.raises(ValueError, match=match):
        clinical_pretrain.eval_metrics(report)


def test_write_eval_metrics_names_a_file_without_the_block(tmp_path):
    meta = tmp_path / "metadata.json"
    meta.write_text(json.dumps({"version": "0"}))
    with pytest.raises(ValueError, match="expected one flat `eval_metrics` object"):
        clinical_pretrain.write_eval_metrics(meta, {"case_dice": 0.5})
    with pytest.raises(FileNotFoundError, match="no such metadata file"):
        clinical_pretrain.write_eval_metrics(tmp_path / "missing.json", {"case_dice": 0.5})
