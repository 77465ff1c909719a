"""Shared fixtures: tiny phantom sites made by the project's own generator, the real-data path."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def shared_data(sub: str) -> Path:
    """Path of a real data set in ../shared/data, or skip the test with the reason."""
    path = SHARED_DATA / sub
    if not path.exists():
        pytest.skip(f"real data not available: {path} does not exist (it is never shipped with the project)")
    return path


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
