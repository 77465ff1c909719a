"""Tests of cardiolora.metrics: hand-computed cases, the empty-structure policy, MONAI cross-checks."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from scipy import ndimage

from cardiolora.labels import LV, MYO, RV
from cardiolora.metrics import (
    METRICS,
    aggregate_scores,
    assd,
    dice,
    hausdorff,
    mean_foreground_dice,
    segmentation_scores,
    surface,
    surface_distances,
    voe,
)

TOL = 1e-5
NAN = float("nan")


def _square(shape: tuple[int, int], rows: slice, cols: slice) -> np.ndarray:
    m = np.zeros(shape, dtype=bool)
    m[rows, cols] = True
    return m


def _voxel(shape: tuple[int, ...], idx: tuple[int, ...]) -> np.ndarray:
    m = np.zeros(shape, dtype=bool)
    m[idx] = True
    return m


def _close(a: float, b: float, tol: float = TOL) -> bool:
    return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= tol


# --------------------------------------------------------------------------------------------
# hand-computed binary cases
# --------------------------------------------------------------------------------------------

# 4x4 squares at rows 2..5, spacing (row 2.0 mm, column 0.5 mm).
# * shift_x2: B = A shifted by 2 columns. |A ∩ B| = 4*2 = 8, |A ∪ B| = 24 -> Dice 16/32, VOE 200/3.
#   Surfaces are the 12-pixel rings; the same-row neighbours are always the nearest (a row step
#   costs 2 mm). A->B per ring pixel: top/bottom rows 1.0, 0.5, 0, 0; middle rows (cols 2, 5)
#   1.0, 0.5 -> sum 6 over 12; B->A the mirror image. HD 1.0, ASSD 12/24, HD95 1.0 (pooled sorted:
#   8 zeros, 8 x 0.5, 8 x 1.0; position 0.95*23 = 21.85 falls among the 1.0 values).
# * shift_y1: B = A shifted by 1 row. |A ∩ B| = 12, |A ∪ B| = 20 -> Dice 24/32, VOE 40.
#   A->B: top row 4 x 2.0 (one row step), middle rows 4 x 0, bottom row 0, 0.5, 0.5, 0 -> sum 9;
#   B->A mirror. HD 2.0, ASSD 18/24, HD95 2.0 (pooled: 12 zeros, 4 x 0.5, 8 x 2.0).
# * line_outlier: 1-row arrays (every voxel is surface). A = cols 0..9, B = cols 0..9 and 20,
#   spacing (1.0, 0.5). Distances: A->B ten zeros; B->A ten zeros and 11 * 0.5 = 5.5.
#   Dice 20/21, VOE 100/11, HD 5.5, ASSD 5.5/21, HD95 pooled: 21 values, position 0.95*20 = 19 ->
#   0.0 (MONAI's max of the directed 95th percentiles: position 9.5 of B->A -> 2.75).
# * voxel_3d: single voxels (1, 2, 3) and (3, 0, 4), spacing (10, 1.5, 0.7): every distance is
#   sqrt(20**2 + 3**2 + 0.7**2); Dice 0, VOE 100.
_D3 = math.sqrt(20.0**2 + 3.0**2 + 0.7**2)
BINARY_CASES = [
    pytest.param(
        _square((12, 12), slice(2, 6), slice(2, 6)),
        _square((12, 12), slice(2, 6), slice(4, 8)),
        (2.0, 0.5),
        {"dice": 0.5, "voe": 200.0 / 3.0, "hd": 1.0, "hd95": 1.0, "assd": 0.5},
        id="2d_squares_shift_x2_aniso",
    ),
    pytest.param(
        _square((12, 12), slice(2, 6), slice(2, 6)),
        _square((12, 12), slice(3, 7), slice(2, 6)),
        (2.0, 0.5),
        {"dice": 0.75, "voe": 40.0, "hd": 2.0, "hd95": 2.0, "assd": 0.75},
        id="2d_squares_shift_y1_aniso",
    ),
    pytest.param(
        _square((1, 30), slice(0, 1), slice(0, 10)),
        _square((1, 30), slice(0, 1), slice(0, 10)) | _voxel((1, 30), (0, 20)),
        (1.0, 0.5),
        {"dice": 20.0 / 21.0, "voe": 100.0 / 11.0, "hd": 5.5, "hd95": 0.0, "assd": 5.5 / 21.0},
        id="2d_line_with_outlier",
    ),
    pytest.param(
        _voxel((5, 5, 5), (1, 2, 3)),
        _voxel((5, 5, 5), (3, 0, 4)),
        (10.0, 1.5, 0.7),
        {"dice": 0.0, "voe": 100.0, "hd": _D3, "hd95": _D3, "assd": _D3},
        id="3d_single_voxels_aniso",
    ),
    pytest.param(
        _square((10, 10), slice(1, 7), slice(2, 9)),
        _square((10, 10), slice(1, 7), slice(2, 9)),
        (1.7, 0.3),
        {"dice": 1.0, "voe": 0.0, "hd": 0.0, "hd95": 0.0, "assd": 0.0},
        id="2d_identical",
    ),
    pytest.param(
        np.zeros((3, 6, 6), dtype=bool),
        np.zeros((3, 6, 6), dtype=bool),
        (10.0, 1.0, 1.0),
        {"dice": 1.0, "voe": 0.0, "hd": 0.0, "hd95": 0.0, "assd": 0.0},
        id="3d_both_empty",
    ),
    pytest.param(
        np.zeros((8, 8), dtype=bool),
        _square((8, 8), slice(2, 5), slice(2, 5)),
        (1.0, 1.0),
        {"dice": 0.0, "voe": 100.0, "hd": NAN, "hd95": NAN, "assd": NAN},
        id="2d_pred_empty",
    ),
    pytest.param(
        _square((8, 8), slice(2, 5), slice(2, 5)),
        np.zeros((8, 8), dtype=bool),
        (1.0, 1.0),
        {"dice": 0.0, "voe": 100.0, "hd": NAN, "hd95": NAN, "assd": NAN},
        id="2d_gt_empty",
    ),
]


@pytest.mark.parametrize("pred, gt, spacing, expected", BINARY_CASES)
def test_binary_metrics_hand_computed(pred, gt, spacing, expected):
    got = {
        "dice": dice(pred, gt),
        "voe": voe(pred, gt),
        "hd": hausdorff(pred, gt, spacing),
        "hd95": hausdorff(pred, gt, spacing, percentile=95),
        "assd": assd(pred, gt, spacing),
    }
    for m in METRICS:
        assert _close(got[m], expected[m]), (m, got[m], expected[m])
        assert not math.isinf(got[m])


@pytest.mark.parametrize("pred, gt, spacing, expected", BINARY_CASES)
def test_segmentation_scores_match_binary_functions(pred, gt, spacing, expected):
    """The same masks placed as the MYO label of a label map give the same scores."""
    pred_label = np.where(pred, MYO, 0).astype(np.uint8)
    gt_label = np.where(gt, MYO, 0).astype(np.uint8)
    s = segmentation_scores(pred_label, gt_label, spacing, structures=(MYO,))
    assert list(s) == ["MYO", "mean"]
    for m in METRICS:
        assert _close(s["MYO"][m], expected[m]), (m, s["MYO"][m], expected[m])
    assert s["MYO"]["both_empty"] == (not pred.any() and not gt.any())


SURFACE_DISTANCE_CASES = [
    # single voxels: one distance each way, sqrt((2*10)^2 + (2*1.5)^2 + (1*0.7)^2)
    pytest.param(
        _voxel((5, 5, 5), (1, 2, 3)),
        _voxel((5, 5, 5), (3, 0, 4)),
        (10.0, 1.5, 0.7),
        [_D3],
        [_D3],
        id="voxels",
    ),
    # 2x2 squares, B shifted 1 column: every pixel is surface; A->B: col 1 -> 0, col 0 -> 1 px
    pytest.param(
        _square((4, 5), slice(1, 3), slice(0, 2)),
        _square((4, 5), slice(1, 3), slice(1, 3)),
        (3.0, 0.25),
        [0.25, 0.0, 0.25, 0.0],
        [0.0, 0.25, 0.0, 0.25],
        id="squares_shift",
    ),
    pytest.param(np.zeros((4, 4)), np.zeros((4, 4)), (1.0, 1.0), [], [], id="both_empty"),
    pytest.param(np.zeros((4, 4)), _voxel((4, 4), (1, 1)), (1.0, 1.0), [], [NAN], id="pred_empty"),
]


@pytest.mark.parametrize("pred, gt, spacing, d_ab, d_ba", SURFACE_DISTANCE_CASES)
def test_surface_distances_directed(pred, gt, spacing, d_ab, d_ba):
    got_ab, got_ba = surface_distances(pred, gt, spacing)
    np.testing.assert_allclose(got_ab, d_ab, atol=TOL)
    np.testing.assert_allclose(got_ba, d_ba, atol=TOL)


SURFACE_CASES = [
    # 4x4 square inside the array: the 12-pixel ring (face-connectivity erosion leaves 2x2)
    pytest.param(_square((8, 8), slice(2, 6), slice(2, 6)), 12, id="square_inside"),
    # the full array: outside counts as background, so the border ring is surface
    pytest.param(np.ones((5, 5), dtype=bool), 16, id="full_array_border"),
    # a plus shape: its centre has all 4 face neighbours -> interior; face (not full)
    # connectivity is what makes it so (full connectivity would erode the centre away)
    pytest.param(np.pad(np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=bool), 1), 4, id="plus_face"),
    # a 3x3x3 cube in 3D: 27 - 1 interior voxel
    pytest.param(np.pad(np.ones((3, 3, 3), dtype=bool), 1), 26, id="cube_3d"),
    pytest.param(np.zeros((4, 4), dtype=bool), 0, id="empty"),
]


@pytest.mark.parametrize("mask, n_surface", SURFACE_CASES)
def test_surface_voxel_count(mask, n_surface):
    s = surface(mask)
    assert s.shape == mask.shape
    assert int(s.sum()) == n_surface
    assert not (s & ~mask).any()


def test_torch_inputs_give_the_numpy_result():
    gt = np.zeros((2, 10, 10), dtype=np.uint8)
    gt[:, 2:7, 2:7] = LV
    gt[:, 7, 2:7] = MYO
    pred = np.roll(gt, 1, axis=2)
    spacing = (8.0, 1.2, 1.2)
    ref = segmentation_scores(pred, gt, spacing)
    got = segmentation_scores(torch.as_tensor(pred), torch.as_tensor(gt).float(), torch.tensor(spacing))
    for name in ("LV", "MYO", "RV"):
        for m in METRICS:
            assert _close(got[name][m], ref[name][m])
    assert dice(torch.as_tensor(pred == LV), torch.as_tensor(gt == LV)) == dice(pred == LV, gt == LV)


# --------------------------------------------------------------------------------------------
# label maps: empty-structure policy and the mean entry
# --------------------------------------------------------------------------------------------


def test_segmentation_scores_empty_policy_and_nan_aware_mean():
    """LV identical, MYO present only in the prediction, RV absent from both."""
    gt = np.zeros((10, 10), dtype=np.uint8)
    gt[2:6, 2:6] = LV
    pred = gt.copy()
    pred[8, 1:4] = MYO
    s = segmentation_scores(pred, gt, (1.5, 1.5))
    assert list(s) == ["LV", "MYO", "RV", "mean"]
    assert s["LV"] == {"dice": 1.0, "voe": 0.0, "hd": 0.0, "hd95": 0.0, "assd": 0.0, "both_empty": False}
    assert s["MYO"]["dice"] == 0.0 and s["MYO"]["voe"] == 100.0 and not s["MYO"]["both_empty"]
    assert all(math.isnan(s["MYO"][m]) for m in ("hd", "hd95", "assd"))
    assert s["RV"] == {"dice": 1.0, "voe": 0.0, "hd": 0.0, "hd95": 0.0, "assd": 0.0, "both_empty": True}
    # overlap means take all three structures; distance means skip the NaN of MYO
    assert _close(s["mean"]["dice"], 2.0 / 3.0)
    assert _close(s["mean"]["voe"], 100.0 / 3.0)
    assert s["mean"]["hd"] == 0.0 and s["mean"]["assd"] == 0.0
    assert s["mean"]["n"] == {"dice": 3, "voe": 3, "hd": 2, "hd95": 2, "assd": 2}


def test_segmentation_scores_all_distances_undefined_gives_nan_without_warning():
    gt = np.zeros((6, 6), dtype=np.uint8)
    gt[1:3, 1:3] = LV
    pred = np.zeros_like(gt)
    pred[4, 4] = MYO
    with np.errstate(all="raise"), warnings.catch_warnings():
        warnings.simplefilter("error")
        s = segmentation_scores(pred, gt, (1.0, 1.0), structures=(LV, MYO))
    assert math.isnan(s["mean"]["hd"]) and s["mean"]["n"]["hd"] == 0
    assert s["mean"]["dice"] == 0.0 and s["mean"]["n"]["dice"] == 2


def test_aggregate_scores_hand_computed():
    a = {
        "LV": {"dice": 0.8, "voe": 20.0, "hd": 4.0, "hd95": 3.0, "assd": 1.0, "both_empty": False},
        "mean": {"dice": 0.8, "voe": 20.0, "hd": 4.0, "hd95": 3.0, "assd": 1.0, "n": {}},
    }
    b = {
        "LV": {"dice": 0.0, "voe": 100.0, "hd": NAN, "hd95": NAN, "assd": NAN, "both_empty": False},
        "mean": {"dice": 0.0, "voe": 100.0, "hd": NAN, "hd95": NAN, "assd": NAN, "n": {}},
    }
    c = {
        "LV": {"dice": 0.6, "voe": 40.0, "hd": 8.0, "hd95": 5.0, "assd": 3.0, "both_empty": False},
        "mean": {"dice": 0.6, "voe": 40.0, "hd": 8.0, "hd95": 5.0, "assd": 3.0, "n": {}},
    }
    agg = aggregate_scores([a, b, c])
    assert list(agg) == ["LV", "mean"]
    lv = agg["LV"]
    assert lv["dice"]["n"] == 3 and _close(lv["dice"]["mean"], 1.4 / 3.0)
    # population std of (0.8, 0, 0.6): mean 1.4/3, sum of squares 1.0 - 3 * (1.4/3)^2
    assert _close(lv["dice"]["std"], math.sqrt((1.0 - 1.96 / 3.0) / 3.0))
    assert lv["hd"] == {"mean": 6.0, "std": 2.0, "n": 2}
    assert _close(aggregate_scores([a, b, c], ddof=1)["LV"]["hd"]["std"], math.sqrt(8.0))
    # a single valid value: sample std undefined -> NaN, population std 0
    single = aggregate_scores([a, b], ddof=1)["LV"]["assd"]
    assert single["mean"] == 1.0 and single["n"] == 1 and math.isnan(single["std"])
    # no valid value at all
    none = aggregate_scores([b])["mean"]["hd"]
    assert math.isnan(none["mean"]) and math.isnan(none["std"]) and none["n"] == 0


def test_aggregate_scores_of_segmentation_scores():
    gt = np.zeros((12, 12), dtype=np.uint8)
    gt[2:8, 2:8] = LV
    gt[9, 2:8] = RV
    cases = [segmentation_scores(np.roll(gt, k, axis=1), gt, (1.0, 1.0)) for k in range(3)]
    agg = aggregate_scores(cases)
    assert set(agg) == {"LV", "MYO", "RV", "mean"}
    np.testing.assert_allclose(agg["LV"]["dice"]["mean"], np.mean([c["LV"]["dice"] for c in cases]), atol=TOL)
    assert agg["MYO"]["hd"] == {"mean": 0.0, "std": 0.0, "n": 3}  # both empty in every case


# --------------------------------------------------------------------------------------------
# mean_foreground_dice
# --------------------------------------------------------------------------------------------


def _batch() -> tuple[np.ndarray, np.ndarray]:
    gt = np.zeros((3, 8, 8), dtype=np.int64)
    gt[:, 1:5, 1:5] = LV
    gt[:, 5, 1:5] = MYO
    gt[0, 6:8, 0:8] = RV  # RV only in sample 0
    pred = gt.copy()
    pred[1, 1:5, 1:3] = 0  # sample 1: LV half missing -> Dice 2*8/(8+16) = 2/3
    pred[2, 7, 7] = RV  # sample 2: spurious RV voxel -> RV Dice 0
    return pred, gt


# sample 0: 1, 1, 1; sample 1: 2/3, 1, 1 (RV both empty); sample 2: 1, 1, 0
_EXPECTED_MFD = (3.0 + (2.0 / 3.0 + 2.0) + 2.0) / 9.0


def _one_hot(lab: np.ndarray) -> np.ndarray:
    return np.moveaxis(np.eye(4, dtype=np.float32)[lab], -1, 1)


MFD_CASES = [
    pytest.param(lambda x: x, lambda x: x, id="numpy_labels"),
    pytest.param(torch.as_tensor, torch.as_tensor, id="torch_labels_BHW"),
    pytest.param(
        lambda x: torch.as_tensor(_one_hot(x)),
        lambda x: torch.as_tensor(_one_hot(x)),
        id="torch_one_hot_BCHW",
    ),
    pytest.param(lambda x: torch.as_tensor(x)[:, None].float(), torch.as_tensor, id="torch_B1HW_vs_BHW"),
    pytest.param(lambda x: torch.as_tensor(_one_hot(x) * 5.0 - 1.0), lambda x: x[:, None], id="scores_vs_numpy_B1HW"),
]


@pytest.mark.parametrize("to_pred, to_gt", MFD_CASES)
def test_mean_foreground_dice_forms(to_pred, to_gt):
    pred, gt = _batch()
    assert _close(mean_foreground_dice(to_pred(pred), to_gt(gt)), _EXPECTED_MFD)


def test_mean_foreground_dice_agrees_with_segmentation_scores():
    pred, gt = _batch()
    per_case = [segmentation_scores(p, g, (1.0, 1.0))["mean"]["dice"] for p, g in zip(pred, gt, strict=True)]
    assert _close(mean_foreground_dice(pred, gt), float(np.mean(per_case)))


def test_mean_foreground_dice_3d_channel_first_and_all_empty():
    vol = np.zeros((2, 1, 3, 6, 6), dtype=np.int64)
    assert mean_foreground_dice(vol, vol) == 1.0  # every structure absent from both -> 1
    vol[0, 0, 1, 2:4, 2:4] = RV
    assert _close(mean_foreground_dice(vol, np.zeros_like(vol)), 5.0 / 6.0)


# --------------------------------------------------------------------------------------------
# cross-check against MONAI on random blobs
# --------------------------------------------------------------------------------------------


def _blobs(shape: tuple[int, ...], seed: int, sigma: tuple[float, ...]) -> np.ndarray:
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    return np.digitize(field, np.quantile(field, [0.55, 0.7, 0.85])).astype(np.uint8)


MONAI_CASES = [
    pytest.param((48, 40), (2.0, 0.5), (3.0, 3.0), id="2d_aniso"),
    pytest.param((6, 32, 28), (10.0, 1.3, 0.9), (1.0, 3.0, 3.0), id="3d_aniso"),
]


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")
@pytest.mark.parametrize("shape, spacing, sigma", MONAI_CASES)
def test_cross_check_with_monai(shape, spacing, sigma):
    """Dice, HD, ASSD and MONAI's HD95 agree to 1e-5.

    Exact (not within a voxel) because both use the same surface (face-connectivity erosion,
    outside = background) and exact Euclidean distances with the spacing (MONAI: a KD-tree on
    the surface coordinates; here: the EDT). The residual is MONAI's float32 output. HD95 is
    compared as MONAI defines it (max of the directed 95th percentiles, from our directed
    distances), since our HD95 pools both directions (the two definitions differ in general, see
    the outlier test below).
    """
    from monai.metrics import compute_average_surface_distance, compute_dice, compute_hausdorff_distance
    from monai.networks.utils import one_hot

    gt, pred = _blobs(shape, 0, sigma), _blobs(shape, 1, sigma)
    yp = one_hot(torch.as_tensor(pred)[None, None].long(), 4)
    y = one_hot(torch.as_tensor(gt)[None, None].long(), 4)
    kw = {"include_background": False, "spacing": list(spacing)}
    m_dice = compute_dice(yp, y, include_background=False, ignore_empty=False)[0]
    m_hd = compute_hausdorff_distance(yp, y, **kw)[0]
    m_hd95 = compute_hausdorff_distance(yp, y, percentile=95, **kw)[0]
    m_assd = compute_average_surface_distance(yp, y, symmetric=True, **kw)[0]

    s = segmentation_scores(pred, gt, spacing)
    for i, name in enumerate(("LV", "MYO", "RV")):
        assert abs(s[name]["dice"] - m_dice[i].item()) <= TOL
        assert abs(s[name]["hd"] - m_hd[i].item()) <= TOL
        assert abs(s[name]["assd"] - m_assd[i].item()) <= TOL
        d_ab, d_ba = surface_distances(pred == i + 1, gt == i + 1, spacing)
        directed_max = max(np.percentile(d_ab, 95), np.percentile(d_ba, 95))
        assert abs(directed_max - m_hd95[i].item()) <= TOL


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")
def test_hd95_definition_differs_from_monai_on_outlier():
    """The line-with-outlier case: pooled HD95 0.0 here, MONAI's directed-max HD95 2.75."""
    from monai.metrics import compute_hausdorff_distance

    a = _square((1, 30), slice(0, 1), slice(0, 10))
    b = a | _voxel((1, 30), (0, 20))
    to_t = lambda m: torch.as_tensor(m)[None, None].float()  # noqa: E731
    monai95 = compute_hausdorff_distance(to_t(a), to_t(b), spacing=[1.0, 0.5], percentile=95).item()
    assert abs(monai95 - 2.75) <= TOL
    assert abs(hausdorff(a, b, (1.0, 0.5), percentile=95) - 0.0) <= TOL


# --------------------------------------------------------------------------------------------
# ill cases: one per ValueError
# --------------------------------------------------------------------------------------------

_M2 = np.zeros((4, 4), dtype=bool)
_L2 = np.zeros((4, 4), dtype=np.uint8)
_OK_SCORES = segmentation_scores(_L2, _L2, (1.0, 1.0))

ILL_CASES = [
    pytest.param(lambda: dice(_M2, np.zeros((4, 5))), r"same shape, got \(4, 4\) and \(4, 5\)", id="dice_shape"),
    pytest.param(lambda: voe(_M2, np.zeros((3, 4))), r"same shape, got \(4, 4\) and \(3, 4\)", id="voe_shape"),
    pytest.param(lambda: dice(_L2 + 2, _M2), r"`pred` must be a binary mask", id="dice_not_binary"),
    pytest.param(lambda: dice(_M2, np.full((4, 4), 0.5)), r"`gt` must hold integer values", id="dice_non_integer"),
    pytest.param(lambda: dice(np.full((4, 4), "a"), _M2), r"`pred` has dtype", id="dice_bad_dtype"),
    pytest.param(lambda: surface(np.full((3, 3), 2)), r"`mask` must be a binary mask", id="surface_not_binary"),
    pytest.param(
        lambda: surface_distances(_M2, np.zeros((2, 4, 4)), (1.0, 1.0)),
        r"`pred` and `gt` must have the same shape, got \(4, 4\) and \(2, 4, 4\)",
        id="surface_distances_shape",
    ),
    pytest.param(
        lambda: surface_distances(np.zeros(4), np.zeros(4), (1.0,)), r"must be 2D \(Y, X\) or 3D", id="ndim_1"
    ),
    pytest.param(
        lambda: hausdorff(_M2, _M2, (1.0, 1.0, 1.0)),
        r"`spacing` must have one value per axis \(2",
        id="spacing_len",
    ),
    pytest.param(lambda: assd(_M2, _M2, 1.0), r"`spacing` must have one value per axis", id="spacing_scalar"),
    pytest.param(lambda: assd(_M2, _M2, (1.0, 0.0)), r"`spacing` values must be positive", id="spacing_zero"),
    pytest.param(lambda: assd(_M2, _M2, (-1.0, 1.0)), r"`spacing` values must be positive", id="spacing_negative"),
    pytest.param(
        lambda: assd(_M2, _M2, (np.inf, 1.0)),
        r"`spacing` values must be positive and finite",
        id="spacing_inf",
    ),
    pytest.param(
        lambda: hausdorff(_M2, _M2, (1.0, 1.0), percentile=0),
        r"`percentile` must be in \(0, 100\]",
        id="pct_0",
    ),
    pytest.param(lambda: hausdorff(_M2, _M2, (1.0, 1.0), percentile=100.5), r"`percentile`", id="pct_above"),
    pytest.param(lambda: hausdorff(_M2, _M2, (1.0, 1.0), percentile=-5), r"`percentile`", id="pct_negative"),
    pytest.param(
        lambda: segmentation_scores(_L2, np.zeros((4, 3)), (1.0, 1.0)),
        r"`pred_label` and `gt_label` must have the same shape, got \(4, 4\) and \(4, 3\)",
        id="scores_shape",
    ),
    pytest.param(
        lambda: segmentation_scores(_L2 + 4, _L2, (1.0, 1.0)),
        r"`pred_label` holds label values \[4\]",
        id="label_4",
    ),
    pytest.param(
        lambda: segmentation_scores(_L2, _L2.astype(int) - 1, (1.0, 1.0)),
        r"`gt_label` holds label values \[-1\]",
        id="label_neg",
    ),
    pytest.param(
        lambda: segmentation_scores(_L2 + 0.5, _L2, (1.0, 1.0)),
        r"`pred_label` must hold integer values",
        id="label_float",
    ),
    pytest.param(
        lambda: segmentation_scores(_L2, _L2, (1.0,)),
        r"`spacing` must have one value per axis",
        id="scores_spacing",
    ),
    pytest.param(
        lambda: segmentation_scores(_L2, _L2, (1.0, 1.0), structures=(0,)),
        r"`structures` must be distinct",
        id="struct_bg",
    ),
    pytest.param(
        lambda: segmentation_scores(_L2, _L2, (1.0, 1.0), structures=(1, 1)),
        r"`structures` must be distinct",
        id="struct_repeat",
    ),
    pytest.param(
        lambda: segmentation_scores(_L2, _L2, (1.0, 1.0), structures=()),
        r"`structures` must name at least",
        id="struct_empty",
    ),
    pytest.param(lambda: aggregate_scores([]), r"`scores` must hold at least one case", id="agg_empty"),
    pytest.param(
        lambda: aggregate_scores([_OK_SCORES, {"LV": _OK_SCORES["LV"]}]),
        r"`scores` cases must have the same entries",
        id="agg_keys",
    ),
    pytest.param(
        lambda: aggregate_scores([{"LV": {"dice": 1.0}}]),
        r"`scores` case 0 entry 'LV' lacks metrics",
        id="agg_metric",
    ),
    pytest.param(lambda: aggregate_scores([_OK_SCORES], ddof=2), r"`ddof` must be 0 or 1", id="agg_ddof"),
    pytest.param(
        lambda: mean_foreground_dice(np.zeros((2, 3, 4, 4)), np.zeros((2, 3, 4, 4))),
        r"`pred_label` of shape \(2, 3, 4, 4\) is read as channel-first",
        id="mfd_channels",
    ),
    pytest.param(
        lambda: mean_foreground_dice(np.zeros((4, 4)), np.zeros((4, 4))),
        r"`pred_label` must be \(B, H, W\)",
        id="mfd_ndim",
    ),
    pytest.param(
        lambda: mean_foreground_dice(torch.zeros(2, 4, 4), torch.zeros(3, 4, 4)),
        r"same batch and spatial shape, got \(2, 4, 4\) and \(3, 4, 4\)",
        id="mfd_shape",
    ),
    pytest.param(
        lambda: mean_foreground_dice(torch.full((1, 4, 4), 7), torch.zeros(1, 4, 4)),
        r"`pred_label` holds label values \[7\]",
        id="mfd_label",
    ),
    pytest.param(
        lambda: mean_foreground_dice(np.zeros((0, 4, 4)), np.zeros((0, 4, 4))),
        r"at least one non-empty sample",
        id="mfd_empty",
    ),
]


@pytest.mark.parametrize("call, match", ILL_CASES)
def test_ill_cases(call, match):
    with pytest.raises(ValueError, match=match):
        call()
