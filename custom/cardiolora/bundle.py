"""Run the LoRA U-Net bundle's workflows from Python (what the `cardiolora` commands call).

Everything goes through MONAI's ``ConfigWorkflow`` on the bundle's own configs, with the run's
folders and flags given as overrides, so the command line, ``python -m monai.bundle run``, MONAI
Label and the FLARE clients all run the same definitions.

The metadata follows the profile too: ``configs/metadata.json`` describes the ``quick`` network
(input a multiple of 16 pixels), and a profile whose network differs in what it accepts has a
metadata override ``configs/metadata_<profile>.json`` holding only the changed ids (``paper``,
``clinical``: multiples of 32), merged after it as MONAI merges a list of meta files
(`meta_files`): ``python -m monai.bundle verify_net_in_out network_def --meta_file
"['configs/metadata.json','configs/metadata_paper.json']" --config_file
"['configs/train.json','configs/paper.json']"``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from monai.bundle import ConfigWorkflow

from cardiolora.paths import bundle_dir
from cardiolora.profiles import get_profile

__all__ = ["config_files", "profile_configs", "meta_files", "make_workflow", "run_workflow"]

_CONFIGS = {
    "train": ("train.json",),
    "lora": ("train.json", "lora.json"),
    "evaluate": ("train.json", "evaluate.json"),
    "inference": ("inference.json",),
}


def config_files(kind: str, bundle: str | os.PathLike | None = None) -> list[str]:
    """The config files of a workflow kind, in override order.

    Args:
        kind: ``"train"`` (full-weight pretraining), ``"lora"`` (LoRA fine-tuning),
            ``"evaluate"`` or ``"inference"``.
        bundle: bundle folder (default: the project's LoRA U-Net bundle).

    Returns:
        Absolute paths of the config files.

    Raises:
        ValueError: if `kind` is unknown.
    """
    if kind not in _CONFIGS:
        raise ValueError(f"`kind` must be one of {sorted(_CONFIGS)}, got {kind!r}.")
    root = Path(bundle) if bundle is not None else bundle_dir()
    return [str(root / "configs" / f) for f in _CONFIGS[kind]]


def profile_configs(kind: str, profile: Any, bundle: str | os.PathLike | None = None) -> list[str]:
    """The run profile's training-recipe override file for a training workflow, if it has one.

    A profile with a `cardiolora.profiles.Profile.train_override` (``clinical`` →
    ``configs/clinical.json``) brings its own loss, optimiser, schedule and augmentation; every
    training run of that profile (command line, harness, FLARE sites) applies the file after the
    kind's own configs, so the recipe is written once, in the bundle.

    Args:
        kind: the workflow kind (see `config_files`); only ``"train"`` and ``"lora"`` take it.
        profile: the ``profile`` override (a profile name; anything else: no file).
        bundle: bundle folder.

    Returns:
        ``[absolute path]`` or ``[]``.

    Raises:
        ValueError: if `profile` is a string naming no known profile.
    """
    if kind not in ("train", "lora") or not isinstance(profile, str):
        return []
    prof = get_profile(profile)
    if not prof.train_override:
        return []
    root = Path(bundle) if bundle is not None else bundle_dir()
    return [str(root / "configs" / prof.train_override)]


def meta_files(profile: Any = None, bundle: str | os.PathLike | None = None) -> list[str]:
    """The metadata files of a bundle for a run profile, in merge order.

    The bundle's ``configs/metadata.json``, then the profile's metadata override
    ``configs/metadata_<profile>.json`` when the profile has one: beside that metadata.json, or
    else the LoRA U-Net bundle's (the site-inference bundle runs the LoRA bundle's network, so
    the network's shapes are declared once, there).

    Args:
        profile: a profile name (anything else, e.g. ``None``: the base metadata alone).
        bundle: bundle folder (default: the project's LoRA U-Net bundle).

    Returns:
        Absolute paths: ``[metadata.json]`` or ``[metadata.json, metadata_<profile>.json]``.

    Raises:
        ValueError: if `profile` is a string naming no known profile.
    """
    root = Path(bundle) if bundle is not None else bundle_dir()
    files = [str(root / "configs" / "metadata.json")]
    if not isinstance(profile, str):
        return files
    name = f"metadata_{get_profile(profile).name}.json"
    for folder in (root / "configs", bundle_dir() / "configs"):
        if (folder / name).is_file():
            return [*files, str(folder / name)]
    return files


def make_workflow(
    kind: str,
    overrides: Mapping[str, Any] | None = None,
    bundle: str | os.PathLike | None = None,
    extra_configs: Sequence[str] = (),
) -> ConfigWorkflow:
    """Build (not run) a bundle workflow with overrides.

    Args:
        kind: see `config_files`.
        overrides: config ids → values (``{"dataset_dir": ..., "profile": "quick"}``).
        bundle: bundle folder.
        extra_configs: more override files applied last (after the profile's recipe file,
            `profile_configs`, which is added for ``train`` and ``lora``; a file named twice is
            read once).

    Returns:
        The ``ConfigWorkflow`` (``initialize()`` / ``run()`` / ``finalize()`` it).
    """
    root = Path(bundle) if bundle is not None else bundle_dir()
    files: list[str] = []
    recipe = profile_configs(kind, (overrides or {}).get("profile"), root)
    for f in [*config_files(kind, root), *recipe, *extra_configs]:
        if str(Path(f).resolve()) not in {str(Path(g).resolve()) for g in files}:
            files.append(str(f))
    wtype = "infer" if kind == "inference" else "train"
    ovr = {"bundle_root": str(root), **dict(overrides or {})}
    return ConfigWorkflow(
        config_file=files,
        meta_file=meta_files((overrides or {}).get("profile"), root),
        logging_file=False,
        workflow_type=wtype,
        **ovr,
    )


def run_workflow(kind: str, overrides: Mapping[str, Any] | None = None, bundle: str | os.PathLike | None = None) -> Any:
    """Build, initialise, run and finalise a bundle workflow; returns the workflow's run() result."""
    wf = make_workflow(kind, overrides, bundle)
    wf.initialize()
    try:
        return wf.run()
    finally:
        wf.finalize()
