"""Run profiles: a typed view of the numbers the MONAI bundle's configs write.

The bundle is the single source of the model (zoo style): ``configs/train.json`` writes the
network (MONAI ``UNet`` channels, strides, residual units), the loss, optimiser, learning rate,
epochs, pixel spacing, crop size, intensity percentiles and every transform inline; it is the
``quick`` profile. The other profiles are override files beside it holding only their
differences, applied after ``train.json`` (``python -m monai.bundle run --config_file
"['configs/train.json','configs/clinical.json']"``; `cardiolora.bundle.make_workflow` adds the
file when given ``profile``):

* ``quick`` (``train.json``) — for the demo and CI on 2 CPU cores: 112×112 slices at 2.0 mm, a
  small U-Net.
* ``paper`` (``paper.json``) — Rate-My-LoRA's setting (He et al., arXiv 2501.03223): 224×224
  slices, a full-size 2D U-Net (channels 32…512, about 28 MB of fp32 weights), LoRA ranks 16/32.
* ``clinical`` (``clinical.json``) — the real-data recipe a site can run on CPU: 160×160 crops at
  1.5 mm (the myocardium, 6–12 mm thick, keeps 4–8 pixels), a five-level U-Net with residual
  units of two convolutions (16…256 channels, 1.6 M weights), vendor-shift and anatomy
  augmentation, warm-up + cosine learning rate, AdamW, best checkpoint by the case Dice (`val_case_dice`).
  Its 90 epochs come from a measured epoch time (42 s on 2 idle CPU cores for the 56 training
  patients of ACDC, ``benchmarks/clinical_pretrain.py time``), so that pretraining fits 90 min.

Python that needs these numbers (the site application's preprocessing, the FLARE jobs, the
harness) reads them here, and this module reads them from the bundle's JSON (`read_profiles`),
so no hyperparameter is written twice.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from cardiolora.paths import bundle_dir

__all__ = ["Profile", "PROFILES", "BASE_CONFIG", "read_profiles", "get_profile"]


@dataclass(frozen=True)
class Profile:
    """Network and preprocessing hyperparameters of one run profile.

    Attributes:
        name: profile name.
        spatial_size: in-plane size (H, W) every slice is cropped/padded to around the centre.
        pixel_spacing: in-plane spacing in mm every slice is resampled to.
        channels: U-Net feature channels per level (MONAI ``UNet``).
        strides: U-Net down-sampling strides (one fewer than `channels`).
        num_res_units: residual units per U-Net block.
        dropout: U-Net dropout.
        intensity_percentiles: (lower, upper) percentiles mapped to 0 and 1, per volume.
        batch_size: training batch size (slices).
        val_batch_size: validation batch size (slices).
        learning_rate: Adam learning rate for full-weight training.
        lora_learning_rate: Adam learning rate for LoRA fine-tuning.
        pretrain_epochs: epochs of base-model pretraining (the bundle's ``max_epochs``).
        local_epochs: local epochs per federated round.
        train_override: the profile's override file in the bundle's ``configs/``, applied
            after ``train.json`` (and ``lora.json``); ``None`` for ``train.json``'s own profile.
    """

    name: str
    spatial_size: tuple[int, int]
    pixel_spacing: float
    channels: tuple[int, ...]
    strides: tuple[int, ...]
    num_res_units: int
    dropout: float
    intensity_percentiles: tuple[float, float]
    batch_size: int
    val_batch_size: int
    learning_rate: float
    lora_learning_rate: float
    pretrain_epochs: int
    local_epochs: int
    train_override: str | None = None

    def to_dict(self) -> dict:
        """Return the profile as a JSON-able dict."""
        return asdict(self)


#: Profile field ← the bundle config id it is read from (the others have the same name).
_CONFIG_IDS: dict[str, str] = {"pretrain_epochs": "max_epochs"}
#: The base config (the ``quick`` profile); every other profile is an override file beside it.
BASE_CONFIG = "train.json"
#: The bundle's workflow configs, which are not profile override files.
WORKFLOW_CONFIGS: frozenset[str] = frozenset(
    {"train.json", "lora.json", "evaluate.json", "inference.json", "metadata.json"}
)


def _config_value(config: Mapping[str, Any], key: str, path: Path) -> Any:
    if key not in config:
        raise ValueError(f"{path}: the run profile needs the top-level id `{key}`, which is missing.")
    return config[key]


def read_profiles(configs_dir: str | os.PathLike | None = None) -> dict[str, Profile]:
    """Read every run profile from the bundle's configs (the single place their numbers are written).

    ``train.json`` is the ``quick`` profile; every other ``configs/*.json`` with a top-level
    ``"profile"`` id (workflow configs aside) is an override file holding a profile's differences (``paper.json``,
    ``clinical.json``), applied on top of ``train.json`` as MONAI merges a list of config files.
    Only literal top-level values are read here (numbers and lists, no expressions).

    Args:
        configs_dir: the bundle's ``configs/`` folder (default: the LoRA U-Net bundle's).

    Returns:
        ``{name: Profile}``.

    Raises:
        ValueError: if a file is not valid JSON, two files claim one profile name, or a needed id
            is missing or not a literal (the file and the id are named).
    """
    folder = Path(configs_dir) if configs_dir is not None else bundle_dir() / "configs"
    base_path = folder / BASE_CONFIG

    def load(path: Path) -> dict[str, Any]:
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err}).") from err

    base = load(base_path)
    files: dict[str, tuple[Path, dict[str, Any]]] = {str(base["profile"]): (base_path, {})}
    for path in sorted(folder.glob("*.json")):
        if path.name in WORKFLOW_CONFIGS:
            continue
        content = load(path)
        if "profile" not in content:
            continue
        name = str(content["profile"])
        if name in files:
            raise ValueError(f"{path}: profile `{name}` is already defined by {files[name][0]}.")
        files[name] = (path, content)
    out: dict[str, Profile] = {}
    for name, (path, override) in files.items():
        merged = {**base, **override}
        values: dict[str, Any] = {}
        for f in fields(Profile):
            if f.name in ("name", "train_override"):
                continue
            key = _CONFIG_IDS.get(f.name, f.name)
            value = _config_value(merged, key, path)
            if isinstance(value, str):
                raise ValueError(f"{path}: `{key}` must be a literal value for the run profile, got {value!r}.")
            values[f.name] = tuple(value) if isinstance(value, list) else value
        out[name] = Profile(name=name, train_override=None if path == base_path else path.name, **values)
    return out


#: The run profiles, read once from the bundle (`read_profiles`).
PROFILES: dict[str, Profile] = read_profiles()


def get_profile(profile: str | Profile) -> Profile:
    """Return a run profile by name (a `Profile` passes through).

    Args:
        profile: ``"quick"``, ``"paper"``, ``"clinical"`` or a `Profile`.

    Returns:
        The `Profile`.

    Raises:
        ValueError: if `profile` names no known profile.
    """
    if isinstance(profile, Profile):
        return profile
    if profile not in PROFILES:
        raise ValueError(f"`profile` must be one of {sorted(PROFILES)}, got {profile!r}.")
    return PROFILES[profile]
