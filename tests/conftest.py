"""Shared fixtures: tiny phantom sites made by the project's own generator, the real-data path."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

#: tests/monailabel_env runs in its own environment (monailabel, numpy < 2): `make test-monailabel`.
collect_ignore = ["monailabel_env"]

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def shared_data(sub: str) -> Path:
    """Path of a real data set in ../shared/data, or skip the test with the reason."""
    path = SHARED_DATA / sub
    if not path.exists():
        pytest.skip(f"real data not available: {path} does not exist (it is never shipped with the project)")
    return path


def dciodvfy(path: Path) -> tuple[list[str], list[str]]:
    """(error lines, warning lines) of Debian's ``dciodvfy`` (dicom3tools) on `path`.

    Skips the test, saying why, when dciodvfy is not installed (``.ci/run`` installs it).
    """
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy (Debian package dicom3tools) is not installed: cannot check the DICOM IOD")
    run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=120)
    lines = (run.stdout + run.stderr).splitlines()
    return [x for x in lines if x.startswith("Error")], [x for x in lines if x.startswith("Warning")]


@pytest.fixture(scope="session")
def tiny_sites(tmp_path_factory):
    """Four tiny phantom sites (reference + 3 vendors), ED/ES NIfTI + one DICOM cine per site."""
    from cardiolora.data.generate import SiteSpec, generate_sites

    out = tmp_path_factory.mktemp("phantoms")
    sites = (
        SiteSpec("reference", "reference", 6),
        SiteSpec("site-1", "ge", 4),
        SiteSpec("site-2", "philips", 3),
        SiteSpec("site-3", "siemens", 4),
    )
    manifest = generate_sites(out, sites, seed=7, dicom_subjects=1, progress=False)
    return out, manifest
