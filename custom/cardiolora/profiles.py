"""Run profiles: the one place where network and preprocessing hyperparameters are written.

Three profiles:

* ``quick`` — for the demo and CI on 2 CPU cores: 112×112 slices at 2.0 mm, a small U-Net.
* ``paper`` — Rate-My-LoRA's setting (He et al., arXiv 2501.03223): 224×224 slices, a full-size
  2D U-Net (MONAI ``UNet`` with channels 32…512, about 28 MB of fp32 weights), LoRA ranks 16/32.
* ``clinical`` — the real-data recipe a site can run on CPU: 160×160 crops at 1.5 mm (the
  myocardium, 6–12 mm thick, keeps 4–8 pixels), a five-level U-Net with residual units of two
  convolutions (16…256 channels, 1.6 M weights), and the training recipe of the bundle override
  ``configs/clinical.json`` (vendor-shift and anatomy augmentation, warm-up + cosine learning
  rate, AdamW, best checkpoint by the per-case 3D Dice). Its 90 epochs come from a measured
  epoch time (42 s on 2 idle CPU cores, up to 57 s with light load from other processes, for the
  56 training patients of ACDC, ``benchmarks/clinical_pretrain.py time``), so that pretraining
  fits 90 min.

The MONAI bundle's configs only name the profile (``"profile": "quick"``) and read every number
from here through ``get_profile``; FLARE jobs build their model from the bundle's ``network_def``,
so no hyperparameter is written twice. The numbers of a profile's training recipe that are not
network or preprocessing numbers (augmentation, schedule, validation metric) live in its bundle
override file (`Profile.train_override`), written there once.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["Profile", "PROFILES", "get_profile"]


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
        pretrain_epochs: epochs of base-model pretraining.
        local_epochs: local epochs per federated round.
        train_override: bundle config file (in the bundle's ``configs/``) with the profile's
            training recipe, applied after ``train.json`` (and ``lora.json``); ``None``: the
            recipe of ``train.json`` itself.
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


PROFILES: dict[str, Profile] = {
    "quick": Profile(
        name="quick",
        spatial_size=(112, 112),
        pixel_spacing=2.0,
        channels=(16, 32, 64, 128),
        strides=(2, 2, 2),
        num_res_units=1,
        dropout=0.0,
        intensity_percentiles=(1.0, 99.0),
        batch_size=16,
        val_batch_size=32,
        learning_rate=2e-3,
        lora_learning_rate=2e-3,
        pretrain_epochs=12,
        local_epochs=1,
    ),
    "paper": Profile(
        name="paper",
        spatial_size=(224, 224),
        pixel_spacing=1.25,
        channels=(32, 64, 128, 256, 512),
        strides=(2, 2, 2, 2),
        num_res_units=2,
        dropout=0.0,
        intensity_percentiles=(1.0, 99.0),
        batch_size=16,
        val_batch_size=32,
        learning_rate=1e-3,
        lora_learning_rate=1e-3,
        pretrain_epochs=100,
        local_epochs=5,
    ),
    "clinical": Profile(
        name="clinical",
        spatial_size=(160, 160),
        pixel_spacing=1.5,
        channels=(16, 32, 64, 128, 256),
        strides=(2, 2, 2, 2),
        num_res_units=2,
        dropout=0.0,
        intensity_percentiles=(1.0, 99.0),
        batch_size=16,
        val_batch_size=32,
        learning_rate=2e-3,
        lora_learning_rate=1e-3,
        pretrain_epochs=90,
        local_epochs=2,
        train_override="clinical.json",
    ),
}


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
