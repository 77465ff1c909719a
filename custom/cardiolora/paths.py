"""Where the project's bundles and jobs live.

The MONAI bundles are package data: ``cardiolora/bundles`` is, in the source tree, a link to the
top-level ``bundles/`` folder, and a wheel (``pip install .``, not editable) carries a copy, so a
site with the package installed and no checkout finds them (`bundle_dir`). The FLARE jobs'
``job.py`` builders ship the same way (``cardiolora/jobs`` links to ``jobs/``; `cardiolora.fl.jobs`
imports them), and so does the site-inference bundle (``cardiolora/inference_bundle`` links to
``inference/``; `inference_bundle_dir`); `project_root` is the checkout, for what only a checkout has.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["project_root", "bundles_root", "bundle_dir", "inference_bundle_dir", "BUNDLE_NAME"]

#: The LoRA U-Net bundle.
BUNDLE_NAME = "cardiac_lora_unet"


def bundles_root() -> Path:
    """The folder of the bundles shipped with the package (``cardiolora/bundles``).

    Raises:
        FileNotFoundError: if the package has no bundles (a broken install; names the path).
    """
    root = Path(__file__).resolve().parent / "bundles"
    if not root.is_dir():
        raise FileNotFoundError(
            f"{root}: the package's bundles are missing; reinstall cardiolora (`pip install .` from a checkout)."
        )
    return root


def bundle_dir(name: str = BUNDLE_NAME) -> Path:
    """Path of a bundle shipped with the package.

    Args:
        name: the bundle's folder name.

    Returns:
        The bundle folder (holding ``configs/``).

    Raises:
        FileNotFoundError: if the bundle has no ``configs/`` folder (names the path).
    """
    path = bundles_root() / name
    if not (path / "configs").is_dir():
        raise FileNotFoundError(f"{path}: no bundle here (expected a configs/ folder).")
    return path


def inference_bundle_dir() -> Path:
    """The site-inference bundle shipped with the package (``cardiolora/inference_bundle``, in the
    source tree a link to the top-level ``inference/`` folder).

    Returns:
        The bundle folder (holding ``configs/inference.json``).

    Raises:
        FileNotFoundError: if it has no ``configs/inference.json`` (a broken install; names the path).
    """
    path = Path(__file__).resolve().parent / "inference_bundle"
    if not (path / "configs" / "inference.json").is_file():
        raise FileNotFoundError(
            f"{path}: the site-inference bundle is missing; reinstall cardiolora (`pip install .` from a checkout)."
        )
    return path


def project_root() -> Path:
    """The source checkout holding ``jobs/`` (FLARE job folders are not package data).

    Raises:
        FileNotFoundError: if this package was not installed from a checkout (names where it looked).
    """
    root = Path(__file__).resolve().parents[2]
    if not (root / "jobs").is_dir():
        raise FileNotFoundError(
            f"{root / 'jobs'}: not found; this is an installed package without a checkout — "
            "pass the job folder explicitly."
        )
    return root
