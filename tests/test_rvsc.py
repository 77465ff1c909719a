"""cardiolora.data.rvsc: contour files, polygon masks, and the RVSC 2012 patient layout."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from cardiolora.data.records import DataError
from cardiolora.data.rvsc import contour_mask, find_layout, read_contour, rvsc_cases

RVSC = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "rvsc_dicom" / "patient09"


def rvsc_folder() -> Path:
    """The real RVSC patient09 folder, or skip the test saying why."""
    if not RVSC.is_dir():
        pytest.skip(f"real data not available: {RVSC} does not exist (it is never shipped with the project)")
    return RVSC


# ------------------------------------------------------------------------------ read_contour


def test_read_contour_reads_x_y_and_skips_blank_lines(tmp_path):
    path = tmp_path / "P01-0001-icontour-manual.txt"
    path.write_text("1.5 2.0\n\n3.25 4.0\n5 6\n")
    pts = read_contour(path)
    np.testing.assert_allclose(pts, [[1.5, 2.0], [3.25, 4.0], [5.0, 6.0]], atol=1e-12)
    assert pts.dtype == np.float64


@pytest.mark.parametrize(
    "name, text, expected",
    [
        ("empty", "", "no point"),
        ("blank lines only", "\n  \n", "no point"),
        ("non-numeric", "1 2\n3 x\n5 6\n", "line 2"),
        ("three numbers", "1 2\n3 4 5\n5 6\n", "line 2"),
        ("one number", "1 2\n3\n5 6\n", "line 2"),
        ("not finite", "1 2\nnan 4\n5 6\n", "line 2"),
        ("two points", "1 2\n3 4\n", "at least 3 points"),
    ],
)
def test_read_contour_errors_name_the_file(tmp_path, name, text, expected):
    path = tmp_path / "P01-0001-icontour-manual.txt"
    path.write_text(text)
    with pytest.raises(DataError, match=expected) as err:
        read_contour(path)
    assert str(path) in str(err.value)


def test_read_contour_missing_file_is_named(tmp_path):
    path = tmp_path / "absent.txt"
    with pytest.raises(DataError, match="cannot read") as err:
        read_contour(path)
    assert str(path) in str(err.value)


# ------------------------------------------------------------------------------ contour_mask


@pytest.mark.parametrize(
    "name, points, shape, rows, cols",
    [
        # corners between pixel centres: no centre on the boundary, the count is exact
        ("square 4x4", [[1.5, 1.5], [5.5, 1.5], [5.5, 5.5], [1.5, 5.5]], (10, 10), slice(2, 6), slice(2, 6)),
        # x spans columns 3..6, y spans rows 2..6: x is the column, y the row
        (
            "rectangle 5 rows x 4 columns",
            [[2.5, 1.5], [6.5, 1.5], [6.5, 6.5], [2.5, 6.5]],
            (9, 12),
            slice(2, 7),
            slice(3, 7),
        ),
        ("clockwise order", [[2.5, 1.5], [2.5, 6.5], [6.5, 6.5], [6.5, 1.5]], (9, 12), slice(2, 7), slice(3, 7)),
        ("non-square image", [[0.5, 10.5], [3.5, 10.5], [3.5, 12.5], [0.5, 12.5]], (20, 5), slice(11, 13), slice(1, 4)),
    ],
)
def test_contour_mask_exact_pixels(name, points, shape, rows, cols):
    mask = contour_mask(np.array(points, dtype=float), shape)
    expected = np.zeros(shape, dtype=bool)
    expected[rows, cols] = True
    assert mask.dtype == bool and mask.shape == shape
    np.testing.assert_array_equal(mask, expected)


def test_contour_mask_triangle_area_close_to_polygon_area():
    # right triangle with legs of 60 px: area 1800 px^2; pixel-centre counts differ by about the edge length
    tri = np.array([[10.3, 10.3], [70.3, 10.3], [10.3, 70.3]])
    count = int(contour_mask(tri, (100, 100)).sum())
    assert abs(count - 1800) < 60


@pytest.mark.parametrize(
    "name, points, shape, match",
    [
        ("three columns", np.zeros((4, 3)), (5, 5), "`points`"),
        ("two points", np.zeros((2, 2)), (5, 5), "`points`"),
        ("nan", np.array([[0, 0], [1, np.nan], [2, 2]]), (5, 5), "non-finite"),
        ("3D shape", np.array([[0, 0], [1, 0], [1, 1]]), (5, 5, 5), "`shape`"),
        ("zero rows", np.array([[0, 0], [1, 0], [1, 1]]), (0, 5), "`shape`"),
        ("float shape", np.array([[0, 0], [1, 0], [1, 1]]), (5.0, 5), "`shape`"),
    ],
)
def test_contour_mask_ill_cases(name, points, shape, match):
    with pytest.raises(ValueError, match=match):
        contour_mask(points, shape)


def test_find_layout_names_the_folder(tmp_path):
    with pytest.raises(DataError, match="dicom") as err:
        find_layout(tmp_path)
    assert str(tmp_path) in str(err.value)
    with pytest.raises(DataError, match="not a folder"):
        find_layout(tmp_path / "absent")


# ------------------------------------------------------------------------------ the real folder


def test_rvsc_cases_on_patient09():
    cases = rvsc_cases(rvsc_folder())
    assert [c.case_id for c in cases] == ["P09-0020", "P09-0022", "P09-0023"]
    for c in cases:
        assert c.image.shape == (256, 216) and c.image.dtype == np.float32
        assert c.rv_mask.shape == c.image.shape and c.rv_mask.dtype == bool
        np.testing.assert_allclose(c.pixel_spacing, (0.7014028, 0.7014028), atol=1e-5)
        assert c.slice_thickness == pytest.approx(7.0)
        assert c.dicom_path.name == f"{c.case_id}.dcm"
        # RV cavity area in one short-axis slice: 5-60 cm^2 is plausible (here 22-35 cm^2, a large RV)
        area_cm2 = c.rv_mask.sum() * c.pixel_spacing[0] * c.pixel_spacing[1] / 100.0
        assert 5.0 < area_cm2 < 60.0, (c.case_id, area_cm2)
        assert c.wall_mask is not None and c.wall_mask.any()
        assert not np.any(c.wall_mask & c.rv_mask)
        # the RV lies on the image's left, where the contour points are
        assert np.nonzero(c.rv_mask)[1].mean() < c.image.shape[1] / 2
    by_id = {c.case_id: c for c in cases}
    # same slice position (0022, 0023): the end-diastolic RV (trigger 0 ms) is larger than the later phase
    assert by_id["P09-0022"].slice_location == pytest.approx(by_id["P09-0023"].slice_location)
    assert by_id["P09-0022"].trigger_time == 0.0 and by_id["P09-0023"].trigger_time > 0
    assert by_id["P09-0022"].rv_mask.sum() > by_id["P09-0023"].rv_mask.sum()


def _copy_patient(tmp_path: Path) -> Path:
    dest = tmp_path / "patient09"
    shutil.copytree(rvsc_folder(), dest, ignore=shutil.ignore_patterns("*.mask"))
    return dest


def test_rvsc_cases_missing_dicom_is_named(tmp_path):
    patient = _copy_patient(tmp_path)
    (patient / "P09dicom" / "P09-0022.dcm").unlink()
    with pytest.raises(DataError, match="P09-0022-icontour-manual.txt") as err:
        rvsc_cases(patient)
    assert "P09-0022.dcm" in str(err.value)


def test_rvsc_cases_contour_off_the_image_is_named(tmp_path):
    patient = _copy_patient(tmp_path)
    bad = patient / "P09contours-manual" / "P09-0023-ocontour-manual.txt"
    bad.write_text("10 10\n300 10\n300 40\n")
    with pytest.raises(DataError, match="outside the 256 x 216") as err:
        rvsc_cases(patient)
    assert str(bad) in str(err.value)


def test_rvsc_cases_without_ocontour_has_no_wall(tmp_path):
    patient = _copy_patient(tmp_path)
    (patient / "P09contours-manual" / "P09-0020-ocontour-manual.txt").unlink()
    cases = rvsc_cases(patient)
    assert cases[0].ocontour_path is None and cases[0].wall_mask is None
    assert cases[1].wall_mask is not None
