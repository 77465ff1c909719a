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
    clean_labels_with_notes,
    fill_cavity_holes,
    keep_largest_components,
    keep_rv_next_to_myocardium,
    lv_cavity_inside_ring,
    myocardial_coverage,
    myocardium_encloses_lv,
    trim_lv_cavity,
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


# --------------------------------------------------------------------------------------------
# rule 2: the RV is kept where it lies on the septum, not because it is the largest
# --------------------------------------------------------------------------------------------


def _heart_slice(size: int = 40, rv_gap: int = 0) -> np.ndarray:
    """A larger slice: LV cavity (r <= 4.5) in a myocardium (r <= 7.5) centred at (20, 14), and an
    RV crescent (131 px) on the septal side, `rv_gap` pixels off the wall."""
    yy, xx = np.mgrid[0:size, 0:size]
    r = np.hypot(yy - 20, xx - 14)
    s = np.zeros((size, size), np.uint8)
    s[r <= 7.5] = MYO
    s[r <= 4.5] = LV
    s[(r > 7.5 + rv_gap) & (r <= 12.5 + rv_gap) & (xx >= 17)] = RV
    return s


def _heart(n: int = 4, rv_gap: int = 0) -> np.ndarray:
    return np.stack([_heart_slice(rv_gap=rv_gap) for _ in range(n)])


FAR_BLOB = (slice(0, 11), slice(26, 40))  # 154 px per slice, 12+ px from the wall and the RV


@pytest.mark.parametrize(
    "blob_slices",
    [range(4), range(2), [3]],
    ids=["far-blob-larger-on-every-slice", "far-blob-on-two-slices", "far-blob-on-one-slice"],
)
def test_far_rv_blob_goes_and_septal_rv_stays_even_when_smaller(blob_slices):
    lab = _heart()
    for z in blob_slices:
        lab[(z, *FAR_BLOB)] = RV
    if len(blob_slices) == 4:
        assert (lab[(slice(None), *FAR_BLOB)] == RV).sum() > (_heart() == RV).sum()  # the blob is the largest
    out, notes = clean_labels_with_notes(lab, slice_axis=0)
    np.testing.assert_array_equal(out, _heart())
    assert [n["name"] for n in notes] == ["rv_components_removed"]
    assert notes[0]["value"] == (lab != _heart()).sum()
    np.testing.assert_array_equal(keep_rv_next_to_myocardium(lab, slice_axis=0), _heart())


@pytest.mark.parametrize(
    "gap, kept",
    [(0, True), (1, True), (2, True), (4, False)],
    ids=["touching", "gap-1px", "gap-2px", "gap-4px"],
)
def test_rv_contact_band_is_two_pixels(gap, kept):
    lab = _heart(rv_gap=gap)
    out, notes = clean_labels_with_notes(lab, slice_axis=0)
    assert bool((out == RV).sum() == (lab == RV).sum()) is kept
    if not kept:
        assert not (out == RV).any() and [n["name"] for n in notes] == ["rv_removed"]
        np.testing.assert_array_equal(out[lab != RV], lab[lab != RV])


def test_every_rv_piece_on_the_septum_is_kept():
    """Two RV components, both on the septum (an apical RV piece): both stay."""
    lab = _heart()
    lab[3][lab[3] == RV] = BG
    lab[3, 16:24, 22:24] = RV  # a small apical piece on the wall, not touching the RV above
    lab[2][(lab[2] == RV)] = BG
    lab[2, 10:14, 17:22] = RV
    assert (clean_labels(lab, slice_axis=0) == RV).sum() == (lab == RV).sum()


def test_rv_over_the_myocardium_of_the_next_slice_is_next_to_it():
    """3D contact: an RV piece on a slice without myocardium, right above the wall of the next
    slice (the wall of slice 1 runs through x 19..21 at y 19..21), is kept."""
    lab = _heart(3)
    lab[0] = BG
    lab[0, 19:22, 19:22] = RV
    assert (lab[1, 19:22, 19:22] == MYO).all()
    assert (keep_rv_next_to_myocardium(lab, slice_axis=0) == RV).sum() == (lab == RV).sum()
    far = np.concatenate([lab[:1], np.zeros_like(lab[:1]), _heart(2)])  # one empty slice between
    out = keep_rv_next_to_myocardium(far, slice_axis=0)
    assert not (out[0] == RV).any()
    np.testing.assert_array_equal(out[1:], far[1:])


def test_without_myocardium_the_largest_rv_is_kept():
    lab = np.zeros((2, 20, 20), np.uint8)
    lab[:, 2:8, 2:8] = RV
    lab[:, 14:16, 14:16] = RV
    out = keep_rv_next_to_myocardium(lab, slice_axis=0)
    assert (out[:, 2:8, 2:8] == RV).all() and not (out[:, 14:16, 14:16] == RV).any()


# --------------------------------------------------------------------------------------------
# rule 5: the LV cavity inside its ring
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "leak, removed",
    [
        ((slice(18, 23), slice(3, 6)), True),  # LV beside the outer wall (15 px) of a closed ring
        ((slice(0, 40), slice(0, 6)), False),  # more cavity outside than inside: left alone
    ],
    ids=["small-leak-removed", "large-outside-left-alone"],
)
def test_cavity_outside_a_closed_ring(leak, removed):
    s = _heart_slice()
    s[leak] = LV
    out = lv_cavity_inside_ring(s)
    expected = _heart_slice() if removed else s
    np.testing.assert_array_equal(out, expected)


def test_cavity_leaking_out_of_an_open_ring_is_left_alone():
    s = _heart_slice()
    s[20, 6:11] = LV  # open the ring: the cavity runs out through the wall (the outflow tract)
    s[18:23, 3:6] = LV
    np.testing.assert_array_equal(lv_cavity_inside_ring(s), s)


def _leaky_heart() -> tuple[np.ndarray, np.ndarray]:
    """Slice 0: the cavity runs out through the wall (an open ring, the outflow tract); slice 1: a
    closed ring with 20 px of cavity beside it, joined in 3D to slice 0's. Returns the map and
    what the clean-up should make of it (slice 1's outside cavity removed, slice 0 left alone)."""
    lab = _heart()
    lab[0, 18:23, 3:10] = LV
    lab[1, 18:23, 3:7] = LV
    expected = lab.copy()
    expected[1, 18:23, 3:7] = BG
    return lab, expected


def test_clean_labels_cuts_the_leak_and_says_so():
    lab, expected = _leaky_heart()
    out, notes = clean_labels_with_notes(lab, slice_axis=0)
    np.testing.assert_array_equal(out, expected)
    assert [(n["name"], n["value"]) for n in notes] == [("lv_cavity_outside_ring_removed", 20)]


# --------------------------------------------------------------------------------------------
# rule 6: the cavity is trimmed beyond the base and the apex
# --------------------------------------------------------------------------------------------


def _arc_slice(fraction: float) -> np.ndarray:
    """A cavity (r <= 4.5) with myocardium on `fraction` of the circle around it (no RV)."""
    yy, xx = np.mgrid[0:40, 0:40]
    r = np.hypot(yy - 20, xx - 14)
    angle = (np.arctan2(yy - 20, xx - 14) + 2 * np.pi) % (2 * np.pi)
    s = np.zeros((40, 40), np.uint8)
    s[(r > 4.5) & (r <= 7.5) & (angle < 2 * np.pi * fraction)] = MYO
    s[r <= 4.5] = LV
    return s


@pytest.mark.parametrize(
    "fraction, low, high",
    [(1.0, 1.0, 1.0), (0.75, 0.6, 0.9), (0.25, 0.1, 0.4), (0.0, 0.0, 0.0)],
    ids=["ring", "three-quarters", "quarter", "none"],
)
def test_myocardial_coverage(fraction, low, high):
    assert low <= myocardial_coverage(_arc_slice(fraction)) <= high


def test_coverage_without_cavity_is_nan():
    assert np.isnan(myocardial_coverage(np.zeros((5, 5), np.uint8)))


def _stack_with_ends(first: np.ndarray | None, last: np.ndarray | None, n_mid: int = 3) -> np.ndarray:
    mid = [_heart_slice() for _ in range(n_mid)]
    return np.stack(([first] if first is not None else []) + mid + ([last] if last is not None else []))


def _cavity_only() -> np.ndarray:
    return _arc_slice(0.0)


@pytest.mark.parametrize(
    "first, last, trimmed",
    [
        (_cavity_only(), None, [0]),  # blood above the base, no wall: trimmed
        (None, _cavity_only(), [3]),  # blood below the apex: trimmed
        (_cavity_only(), _cavity_only(), [0, 4]),  # both ends
        (_arc_slice(0.25), _arc_slice(0.75), [0]),  # a quarter ring goes, three quarters stay (>= 50 %)
        (_arc_slice(1.0), None, []),  # a closed ring is never trimmed
    ],
    ids=["above-base", "below-apex", "both-ends", "quarter-vs-three-quarter", "closed-ring-kept"],
)
def test_trimming_beyond_base_and_apex(first, last, trimmed):
    lab = _stack_with_ends(first, last)
    out, notes = clean_labels_with_notes(lab, slice_axis=0)
    has_cavity = [bool((out[z] == LV).any()) for z in range(len(out))]
    assert [z for z in range(len(out)) if not has_cavity[z]] == trimmed
    assert [n["value"] for n in notes if n["name"] == "lv_slices_trimmed"] == ([trimmed] if trimmed else [])
    for z in trimmed:  # only the cavity goes: the wall of a trimmed slice stays
        np.testing.assert_array_equal(out[z] == MYO, lab[z] == MYO)
    np.testing.assert_array_equal(trim_lv_cavity(lab, slice_axis=0), out)


def test_a_poor_ring_between_good_slices_is_kept():
    lab = _stack_with_ends(None, None, n_mid=5)
    lab[2] = _cavity_only()  # mid-ventricle, the network missed the wall: not trimmed
    out = clean_labels(lab, slice_axis=0)
    assert (out[2] == LV).sum() == (lab[2] == LV).sum()


def test_no_anchored_slice_leaves_the_cavity_alone():
    lab = np.stack([_cavity_only()] * 3)
    np.testing.assert_array_equal(trim_lv_cavity(lab, slice_axis=0), lab)


def test_trimmed_slice_indices_follow_the_slice_axis_and_padding():
    lab = _stack_with_ends(_cavity_only(), None)
    padded = np.pad(lab, ((2, 1), (0, 0), (0, 0)))
    _, notes = clean_labels_with_notes(padded.transpose(2, 1, 0), slice_axis=-1)
    assert [n["value"] for n in notes if n["name"] == "lv_slices_trimmed"] == [[2]]


def test_apical_myocardium_touching_only_the_cavity_above_is_kept():
    """The apical cap lies under the cavity of the slice above, not under its wall (ACDC ground
    truth has it in 12 of 160 volumes): it is part of the LV, not an island."""
    lab = _heart(3)
    apex = np.zeros((40, 40), np.uint8)
    apex[19:22, 13:16] = MYO  # under the cavity (r <= 4.5) of slice 2, 2+ px from its wall
    lab = np.concatenate([lab, apex[None]])
    np.testing.assert_array_equal(clean_labels(lab, slice_axis=0), lab)


# --------------------------------------------------------------------------------------------
# all rules together: idempotence, notes
# --------------------------------------------------------------------------------------------


def _all_new_mistakes() -> tuple[np.ndarray, np.ndarray]:
    """Every new rule's mistake in one map, and the expected clean map."""
    lab, expected = _leaky_heart()
    lab[(slice(0, 4), *FAR_BLOB)] = RV  # far, larger "RV"
    lab[2, 0, 0] = MYO  # island
    lab = np.concatenate([_cavity_only()[None], lab])  # blood above the base
    return lab, np.concatenate([np.zeros((1, 40, 40), np.uint8), expected])


@pytest.mark.parametrize(
    "make",
    [
        _messy,
        lambda: _all_new_mistakes()[0],
        lambda: _heart(4, rv_gap=4),
        lambda: _stack_with_ends(_arc_slice(0.25), None),
    ],
    ids=["old-mistakes", "new-mistakes", "rv-off-the-wall", "quarter-ring"],
)
def test_idempotent(make):
    once, notes = clean_labels_with_notes(make(), slice_axis=0)
    twice, notes_again = clean_labels_with_notes(once, slice_axis=0)
    np.testing.assert_array_equal(twice, once)
    assert notes_again == []


@pytest.mark.parametrize("seed", range(4))
def test_idempotent_on_random_noise(seed):
    rng = np.random.default_rng(seed)
    lab = _heart(5)
    noise = rng.random(lab.shape) < 0.1
    lab[noise] = rng.integers(0, 4, int(noise.sum()))
    once = clean_labels(lab, slice_axis=0)
    np.testing.assert_array_equal(clean_labels(once, slice_axis=0), once)


def test_all_new_mistakes_fixed_with_notes():
    lab, expected = _all_new_mistakes()
    out, notes = clean_labels_with_notes(lab, slice_axis=0)
    np.testing.assert_array_equal(out, expected)
    assert sorted(n["name"] for n in notes) == [
        "lv_cavity_outside_ring_removed",
        "lv_slices_trimmed",
        "rv_components_removed",
    ]
    assert all(set(n) == {"name", "message", "value"} for n in notes)
