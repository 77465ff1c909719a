"""The anatomical clean-up of predicted label maps (cardiolora.site.postprocess), rule by rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from cardiolora.site.postprocess import (
    CleanCardiacLabels,
    CleanCardiacLabelsd,
    clean_labels,
    fill_cavity_holes,
    keep_largest_components,
    myocardium_encloses_lv,
)

BG, LV, MYO, RV = 0, 1, 2, 3


def _ring_slice(size: int = 15) -> np.ndarray:
    """One slice: a myocardial ring (5 px radius band) around an LV cavity, an RV crescent beside it."""
    yy, xx = np.mgrid[0:size, 0:size]
    r = np.hypot(yy - 7, xx - 6)
    s = np.zeros((size, size), np.uint8)
    s[r <= 4.5] = MYO
    s[r <= 2.5] = LV
    s[(r > 4.5) & (r <= 6.5) & (xx >= 9)] = RV
    return s


def _stack(n: int = 3) -> np.ndarray:
    return np.stack([_ring_slice() for _ in range(n)])  # (Z, Y, X)


# --------------------------------------------------------------------------------------------
# rule 1: largest connected component per structure, 3D
# --------------------------------------------------------------------------------------------


def test_islands_are_removed_per_structure():
    lab = _stack()
    lab[1, 0, 0] = LV  # a distant LV island
    lab[0, 14, 14] = RV  # a distant RV island
    out = keep_largest_components(lab)
    assert out[1, 0, 0] == BG and out[0, 14, 14] == BG
    np.testing.assert_array_equal(out, _stack())


def test_components_connect_across_slices_diagonally():
    """26-connectivity: an apical blob touching the stack only diagonally stays."""
    lab = np.zeros((2, 5, 5), np.uint8)
    lab[0, 1:3, 1:3] = LV
    lab[1, 3, 3] = LV  # diagonal neighbour of (0, 2, 2)
    np.testing.assert_array_equal(keep_largest_components(lab), lab)


# --------------------------------------------------------------------------------------------
# rule 2: what the myocardium encloses is LV cavity
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "inside, expected",
    [
        ("rv", LV),  # an "RV" inside the ring is the LV blood pool
        ("bg", LV),  # background between ring and cavity joins the cavity
    ],
    ids=["rv-inside-ring", "gap-inside-ring"],
)
def test_regions_enclosed_by_myocardium_become_lv(inside, expected):
    s = _ring_slice()
    s[7, 6] = RV if inside == "rv" else BG  # the cavity centre
    out = myocardium_encloses_lv(s)
    assert out[7, 6] == expected
    np.testing.assert_array_equal(out[s != s[7, 6]], s[s != s[7, 6]])  # nothing else moved


def test_ring_full_of_rv_becomes_lv():
    """A closed ring holding only RV (the cavity mislabelled) is LV."""
    s = _ring_slice()
    s[s == LV] = RV
    out = myocardium_encloses_lv(s)
    np.testing.assert_array_equal(out == LV, _ring_slice() == LV)


def test_pinhole_in_the_wall_becomes_myocardium():
    s = np.zeros((9, 9), np.uint8)
    s[2:7, 2:7] = MYO
    s[4, 4] = BG  # enclosed background, no cavity: a hole in the wall
    assert myocardium_encloses_lv(s)[4, 4] == MYO


def test_open_ring_is_left_alone():
    s = _ring_slice()
    s[7, 1:4] = BG  # cut the ring open to the outside
    s[7, 4] = RV  # ... and put RV pixels in the opened cavity: not enclosed any more
    np.testing.assert_array_equal(myocardium_encloses_lv(s), s)


# --------------------------------------------------------------------------------------------
# rule 3: holes of the cavities
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cavity, hole_label, expected",
    [
        (LV, BG, LV),  # a background hole in the LV cavity
        (LV, MYO, LV),  # a papillary muscle labelled myocardium inside the cavity
        (LV, RV, LV),  # an RV speck inside the LV cavity
        (RV, BG, RV),  # a background hole in the RV
        (RV, MYO, RV),  # trabeculation labelled myocardium inside the RV
    ],
    ids=["lv-bg", "lv-papillary", "lv-rv-speck", "rv-bg", "rv-trabeculation"],
)
def test_cavity_holes_are_filled(cavity, hole_label, expected):
    s = np.zeros((9, 9), np.uint8)
    s[2:7, 2:7] = cavity
    s[4, 4] = hole_label
    assert fill_cavity_holes(s)[4, 4] == expected


def test_rv_never_swallows_the_lv():
    s = np.zeros((11, 11), np.uint8)
    s[1:10, 1:10] = RV
    s[4:7, 4:7] = LV  # an LV blob fully inside the RV: left as it is
    np.testing.assert_array_equal(fill_cavity_holes(s), s)


# --------------------------------------------------------------------------------------------
# all rules, axes, idempotence, transforms
# --------------------------------------------------------------------------------------------


def _messy() -> np.ndarray:
    lab = _stack(4)
    lab[0, 7, 6] = RV  # RV inside the ring
    lab[1, 6, 6] = BG  # hole in the cavity
    lab[2, 0, 0] = MYO  # island
    lab[3, 6:9, 5:8] = RV  # RV patch in the cavity
    return lab


def test_clean_labels_fixes_every_kind_of_mistake():
    np.testing.assert_array_equal(clean_labels(_messy(), slice_axis=0), _stack(4))


def test_clean_labels_is_idempotent():
    once = clean_labels(_messy(), slice_axis=0)
    np.testing.assert_array_equal(clean_labels(once, slice_axis=0), once)


@pytest.mark.parametrize("pad", [((0, 0), (5, 3), (2, 9)), ((1, 2), (0, 0), (0, 0))], ids=["in-plane", "slices"])
def test_background_around_the_heart_changes_nothing(pad):
    """Cleaning works on the labelled box: padding with background commutes with cleaning."""
    np.testing.assert_array_equal(
        clean_labels(np.pad(_messy(), pad), slice_axis=0), np.pad(clean_labels(_messy(), slice_axis=0), pad)
    )
    assert not clean_labels(np.zeros((2, 5, 5), np.uint8), slice_axis=0).any()


def test_slice_axis_follows_the_array_order():
    """(X, Y, Z) with slice_axis=-1 gives the transposed result of (Z, Y, X) with slice_axis=0."""
    zyx = _messy()
    xyz = zyx.transpose(2, 1, 0)
    np.testing.assert_array_equal(clean_labels(xyz, slice_axis=-1), clean_labels(zyx, slice_axis=0).transpose(2, 1, 0))


@pytest.mark.parametrize(
    "make",
    [
        lambda a: a,
        lambda a: a[None],
        lambda a: torch.as_tensor(a[None].astype(np.float32)),
        lambda a: MetaTensor(
            torch.as_tensor(a[None].astype(np.float32)), affine=torch.diag(torch.tensor([2.0, 2, 8, 1]))
        ),
    ],
    ids=["numpy-3d", "numpy-channel-first", "torch", "metatensor"],
)
def test_array_transform_keeps_type_shape_and_metadata(make):
    xyz = _messy().transpose(2, 1, 0)
    img = make(xyz)
    out = CleanCardiacLabels(slice_axis=-1)(img)
    assert type(out) is type(img) and tuple(out.shape) == tuple(img.shape) and out.dtype == img.dtype
    values = out.detach().cpu().numpy() if isinstance(out, torch.Tensor) else out
    np.testing.assert_array_equal(values.reshape(xyz.shape), _stack(4).transpose(2, 1, 0))
    if isinstance(img, MetaTensor):
        torch.testing.assert_close(out.affine, img.affine)


def test_dict_transform_cleans_its_keys_only():
    xyz = _messy().transpose(2, 1, 0)[None]
    out = CleanCardiacLabelsd(keys="pred")({"pred": xyz, "image": xyz})
    np.testing.assert_array_equal(out["pred"][0], _stack(4).transpose(2, 1, 0))
    np.testing.assert_array_equal(out["image"], xyz)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: clean_labels(np.zeros((4, 4), np.uint8)), "3D label map"),
        (lambda: clean_labels(np.full((2, 4, 4), 5, np.uint8)), r"values must be in 0\.\.3"),
        (lambda: clean_labels(np.full((2, 4, 4), 0.5)), "integer labels"),
        (lambda: clean_labels(np.zeros((2, 4, 4), np.uint8), slice_axis=3), "slice_axis"),
        (lambda: CleanCardiacLabels(slice_axis=5), "slice_axis"),
        (lambda: CleanCardiacLabels()(np.zeros((2, 3, 4, 4, 1))), r"\(1, H, W, D\)"),
    ],
    ids=["2d", "out-of-range", "fractional", "bad-axis", "bad-axis-transform", "5d"],
)
def test_ill_inputs_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()
