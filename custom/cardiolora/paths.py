"""Where the project's bundles and jobs live (the repository checkout, or $CARDIOLORA_HOME)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["project_root", "bundle_dir", "BUNDLE_NAME"]

#: The LoRA U-Net bundle.
BUNDLE_NAME = "cardiac_lora_unet"


def project_root() -> Path:
    """The project checkout holding ``bundles/`` and ``jobs/``.

    ``$CARDIOLORA_HOME`` wins; otherwise the checkout this package was installed from (editable).

    Raises:
        FileNotFoundError: if no ``bundles/`` folder is found (names where it looked).
    """
    env = os.environ.get("CARDIOLORA_HOME")
    root = Path(env) if env else Path(__file__).resolve().parents[2]
    if not (root / "bundles").is_dir():
        raise FileNotFoundError(f"{root / 'bundles'}: not found; set CARDIOLORA_HOME to the project checkout.")
    return root


def bundle_dir(name: str = BUNDLE_NAME) -> Path:
    """Path of a bundle under ``bundles/``.

    Raises:
        FileNotFoundError: if the bundle has no ``configs/`` folder.
    """
    path = project_root() / "bundles" / name
    if not (path / "configs").is_dir():
        raise FileNotFoundError(f"{path}: no bundle here (expected a configs/ folder).")
    return path
