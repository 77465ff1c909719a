"""The reader's incomplete-positions policy (``incomplete_positions="drop"``), phantom and RVSC."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import shared_data

from cardiolora.data.phantom import make_subject
from cardiolora.dicom import (
    read_cine,
    read_short_axis_cine,
    rejection_reasons,
    scan_folder,
    select_short_axis_cine,
)
from cardiolora.dicom.mr_writer import write_dicom_cine
from cardiolora.errors import InputError as DicomInputError

RVSC_SLICE_MM = 8.4
RVSC_PIXEL_MM = 0.70140280561122


@pytest.fixture(scope="module")
def small():
    """4 slices x 3 phases x 40 x 48 of a phantom (cropped from index 0: the affine stays valid)."""
    s = make_subject(5, "ge", n_phases=3)
    return dataclasses.replace(s, image=np.ascontiguousarray(s.image[:, :4, :40, :48]), label=None)


def _folder(tmp_path: Path, study, remove: list[tuple[int, int]]) -> Path:
    """Write the study and delete the files of the given (slice, phase) pairs."""
    out = tmp_path / "study"
    write_dicom_cine(study, out, uid_seed="incomplete")
    for z, t in remove:
        (out / f"IM_{z:03d}_{t:03d}.dcm").unlink()
    return out


def test_default_refuses_incomplete_positions(tmp_path, small):
    folder = _folder(tmp_path, small, [(0, 1), (0, 2)])
    with pytest.raises(
        DicomInputError, match=r"1 of 4 slice positions hold fewer than 2 phases \(phases per position: 1, 3, 3, 3"
    ):
        read_short_axis_cine(folder)


def test_drop_keeps_the_complete_positions(tmp_path, small):
    folder = _folder(tmp_path, small, [(0, 1), (0, 2)])
    study = read_short_axis_cine(folder, incomplete_positions="drop")
    assert study.image.shape == (3, 3, 40, 48)
    np.testing.assert_allclose(study.image, small.image[:, 1:], atol=float(small.image.max()) * 1e-3)
    # slice 0 of the result is slice 1 of the phantom: the affine moved by one slice spacing
    np.testing.assert_allclose(study.affine_lps[:, 3], small.affine_lps @ [0, 0, 1, 1], atol=1e-3)
    np.testing.assert_allclose(study.affine_lps[:3, :3], small.affine_lps[:3, :3], atol=1e-4)
    assert study.meta["positions_dropped"] == [f"1 phase at {_proj(small, 0):.2f} mm (IM_000_000.dcm)"]


def _proj(study, z: int) -> float:
    """Slice position of slice z along the normal, as the reader reports it."""
    pos = (study.affine_lps @ [0, 0, z, 1])[:3]
    r, c = study.affine_lps[:3, 0], study.affine_lps[:3, 1]
    n = np.cross(r / np.linalg.norm(r), c / np.linalg.norm(c))
    return float(pos @ n)


def test_drop_refuses_a_gap_in_the_middle(tmp_path, small):
    folder = _folder(tmp_path, small, [(1, 2)])
    with pytest.raises(DicomInputError, match=r"not evenly spaced .*after dropping the incomplete positions: 2 phases"):
        read_short_axis_cine(folder, incomplete_positions="drop")


def test_drop_to_a_single_slice_uses_the_slice_thickness(tmp_path, small):
    folder = _folder(tmp_path, small, [(z, t) for z in (0, 1, 2) for t in (1, 2)])
    study = read_short_axis_cine(folder, incomplete_positions="drop")
    assert study.image.shape == (3, 1, 40, 48)
    assert study.spacing_zyx[0] == pytest.approx(small.slice_thickness_mm)
    assert len(study.meta["positions_dropped"]) == 3


def test_selection_follows_the_policy(tmp_path, small):
    folder = _folder(tmp_path, small, [(0, 1), (0, 2)])
    [info] = [s for s in scan_folder(folder).series]
    assert rejection_reasons(info) == [
        "1 of 4 slice positions hold fewer than 2 phases (phases per position: 1, 3, 3, 3; "
        "a cine needs >= 2 at every position)"
    ]
    assert rejection_reasons(info, "drop") == []
    assert select_short_axis_cine([info], incomplete_positions="drop").series is info


@pytest.mark.parametrize(
    "call",
    [
        lambda f: read_short_axis_cine(f, incomplete_positions="common"),
        lambda f: read_cine(sorted(f.iterdir()), incomplete_positions="keep"),
        lambda f: rejection_reasons(scan_folder(f).series[0], "nope"),
    ],
    ids=["read_short_axis_cine", "read_cine", "rejection_reasons"],
)
def test_unknown_policy_raises(tmp_path, small, call):
    folder = _folder(tmp_path, small, [])
    with pytest.raises(DicomInputError, match="`incomplete_positions` must be one of"):
        call(folder)


# --------------------------------------------------------------------------------------------
# the real RVSC series: 3 positions with 2, 2 and 20 phases
# --------------------------------------------------------------------------------------------


def test_rvsc_is_read_with_drop():
    """Only the 20-phase position is a cine: read as a one-slice 2D+t cine in DICOM geometry."""
    folder = shared_data("rvsc_dicom/patient09/P09dicom")
    study = read_short_axis_cine(folder, incomplete_positions="drop")
    assert study.image.shape == (20, 1, 256, 216)
    # slice spacing of a single slice = SliceThickness (7 mm); in-plane spacing from PixelSpacing
    assert study.spacing_zyx == pytest.approx((7.0, RVSC_PIXEL_MM, RVSC_PIXEL_MM), abs=1e-9)
    # phases in trigger-time order: 0, 48.75, ..., 926.25 ms (InstanceNumber 1..20)
    np.testing.assert_allclose(study.trigger_times_ms, np.arange(20) * 48.75)
    names = [Path(study.meta["source_files"][t][0]).name for t in range(20)]
    assert names == [f"P09-{n:04d}.dcm" for n in range(20)]
    assert study.meta["positions_dropped"] == [
        "2 phases at -39.25 mm (P09-0022.dcm)",
        "2 phases at -30.85 mm (P09-0020.dcm)",
    ]
    ds = pydicom.dcmread(study.meta["source_files"][0][0])
    o = np.asarray(ds.ImageOrientationPatient, dtype=float)
    normal = np.cross(o[:3], o[3:])
    np.testing.assert_allclose(study.affine_lps[:3, 3], np.asarray(ds.ImagePositionPatient, dtype=float), atol=1e-6)
    np.testing.assert_allclose(study.affine_lps[:3, 0], o[:3] * RVSC_PIXEL_MM, atol=1e-9)
    np.testing.assert_allclose(study.affine_lps[:3, 1], o[3:] * RVSC_PIXEL_MM, atol=1e-9)
    np.testing.assert_allclose(study.affine_lps[:3, 2], normal * 7.0, atol=1e-6)
    for t in (0, 19):
        pixels = pydicom.dcmread(study.meta["source_files"][t][0]).pixel_array
        np.testing.assert_array_equal(study.image[t, 0], pixels.astype(np.float32))


def test_rvsc_kept_position_is_the_most_apical_of_the_three():
    """Slice order: the kept position (-22.45 mm along the normal) is the last of the three."""
    folder = shared_data("rvsc_dicom/patient09/P09dicom")
    [info] = scan_folder(folder).series
    assert info.slice_positions_mm[-1] == pytest.approx(-22.4514, abs=1e-3)
    assert info.phases_per_position == (2, 2, 20)
    study = read_short_axis_cine(folder, incomplete_positions="drop")
    assert study.meta["slice_positions_mm"] == pytest.approx([-22.4514], abs=1e-3)
    assert np.diff(info.slice_positions_mm) == pytest.approx([RVSC_SLICE_MM, RVSC_SLICE_MM], abs=1e-4)
