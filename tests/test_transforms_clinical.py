"""The clinical profile's training recipe (configs/clinical.json): augmentation, schedule, case Dice, bundle."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events
from monai.bundle import ConfigParser, ConfigWorkflow
from monai.data import MetaTensor
from monai.transforms import Compose, Flipd

from cardiolora.bundle import config_files, make_workflow
from cardiolora.handlers import CaseDice, LearningRateSchedule, schedule_factor
from cardiolora.labels import LV, MYO, RV
from cardiolora.paths import bundle_dir
from cardiolora.profiles import get_profile

BUNDLE = bundle_dir()
CLINICAL = str(BUNDLE / "configs" / "clinical.json")
PROF = get_profile("clinical")


@pytest.fixture(scope="module")
def parser() -> ConfigParser:
    """train.json + clinical.json, as `cardiolora pretrain --profile clinical` reads them."""
    p = ConfigParser()
    p.read_config([*config_files("train"), CLINICAL])
    p["bundle_root"] = str(BUNDLE)
    return p


def transforms(parser: ConfigParser, key: str, prob: float | None = None, seed: int = 0) -> Compose:
    """A fresh, seeded instance of a transform list of the config (`prob` overrides every probability)."""
    items = parser.get_parsed_content(key, instantiate=True, lazy=False)
    items = [copy.deepcopy(t) for t in items]
    if prob is not None:
        for t in items:
            if hasattr(t, "prob"):
                t.prob = prob
    comp = Compose(items)
    comp.set_random_state(seed)
    return comp


def heart(size: tuple[int, int] = (150, 140)) -> np.ndarray:
    """A short-axis-like label map: LV cavity in a myocardial ring, a crescent-ish RV on one side."""
    yy, xx = np.mgrid[: size[0], : size[1]]
    cy, cx = size[0] // 2, size[1] // 2 + 8
    r = np.hypot(yy - cy, xx - cx)
    lab = np.zeros(size, dtype=np.uint8)
    lab[r < 20] = MYO
    lab[r < 13] = LV
    rv = (np.hypot(yy - cy + 4, xx - cx + 33) < 16) & (r >= 20)
    lab[rv] = RV
    return lab


def item(label: np.ndarray, image: np.ndarray | None = None) -> dict:
    """A cached-slice dict as the dataset gives it: (1, X, Y) MetaTensors with a 1.5 mm affine."""
    aff = torch.diag(torch.tensor([PROF.pixel_spacing, PROF.pixel_spacing, 1.0, 1.0], dtype=torch.float64))
    img = image if image is not None else 0.2 + 0.2 * label.astype(np.float32)
    return {
        "image": MetaTensor(torch.as_tensor(img, dtype=torch.float32)[None], affine=aff.clone()),
        "label": MetaTensor(torch.as_tensor(label.astype(np.uint8))[None], affine=aff.clone()),
        "case_id": "c0",
    }


def first(out: dict | list) -> dict:
    return out[0] if isinstance(out, list) else out


def centroid(mask: np.ndarray) -> np.ndarray:
    return np.argwhere(mask).mean(0)


# --------------------------------------------------------------------------------------------
# augmentation
# --------------------------------------------------------------------------------------------


def test_recipe_lists_the_expected_augmentation(parser):
    names = [type(t).__name__ for t in parser.get_parsed_content("train#random_transforms")]
    expected = {
        "RandCropByPosNegLabeld",
        "Rand2DElasticd",
        "RandBiasFieldd",
        "RandAdjustContrastd",
        "RandGaussianSmoothd",
        "RandSimulateLowResolutiond",
        "RandGaussianNoised",
        "RandRicianNoised",
        "RandGibbsNoised",
        "RandKSpaceSpikeNoised",
    }
    assert expected <= set(names)
    assert not [n for n in names if "Flip" in n], "a flip mirrors the heart (LV and RV swap sides)"
    for raw in parser["train"]["spatial_augmentation"]:  # image bilinear, label nearest neighbour
        assert raw["keys"] == ["image", "label"]
        if "mode" in raw:
            assert raw["mode"] == ["bilinear", "nearest"], raw["_target_"]
    for t in parser.get_parsed_content("train#intensity_augmentation"):
        assert list(t.keys) == ["image"], f"{type(t).__name__} must not touch the label"


@pytest.mark.parametrize("prob", [None, 1.0], ids=["as_configured", "every_transform"])
def test_labels_stay_labels_and_images_finite(parser, prob):
    comp = transforms(parser, "train#random_transforms", prob, seed=1)
    lab = heart()
    for _ in range(24):
        out = first(comp(item(lab)))
        img, seg = torch.as_tensor(out["image"]), torch.as_tensor(out["label"])
        assert tuple(img.shape) == (1, *PROF.spatial_size) == tuple(seg.shape)
        assert torch.isfinite(img).all()
        assert set(torch.unique(seg).tolist()) <= {0, 1, 2, 3}


def test_spatial_augmentation_keeps_image_and_label_aligned(parser):
    """An image equal to the label ends with the label's geometry.

    With the image equal to the label map (as floats), the two agree to 1e-4 inside each region
    (pixels whose 3×3 neighbourhood holds one label). With the image equal to one structure's mask,
    the transformed image thresholded at 0.5 overlaps the transformed label of that structure
    with Dice > 0.97 and the same centroid to 0.5 pixel (bilinear vs nearest neighbour
    interpolation may differ by one pixel along edges).
    """
    lab = heart()
    for trial in range(8):
        seed = 100 + trial
        out = first(
            transforms(parser, "train#spatial_augmentation", prob=1.0, seed=seed)(item(lab, lab.astype(np.float32)))
        )
        img = np.asarray(out["image"])[0]
        seg = np.asarray(out["label"])[0].astype(np.int64)
        windows = np.lib.stride_tricks.sliding_window_view(np.pad(seg, 1, mode="edge"), (3, 3))
        inner = windows.min(axis=(-1, -2)) == windows.max(axis=(-1, -2))
        assert inner.sum() > 0.8 * seg.size
        assert np.mean(np.abs(img[inner] - seg[inner]) < 1e-4) > 0.995
        for s in (LV, MYO, RV):
            comp = transforms(parser, "train#spatial_augmentation", prob=1.0, seed=seed)  # the same draws
            out_s = first(comp(item(lab, (lab == s).astype(np.float32))))
            np.testing.assert_array_equal(np.asarray(out_s["label"])[0], seg)
            mask_img = np.asarray(out_s["image"])[0] > 0.5
            mask_seg = seg == s
            assert 2 * (mask_img & mask_seg).sum() / (mask_img.sum() + mask_seg.sum()) > 0.97
            assert np.linalg.norm(centroid(mask_img) - centroid(mask_seg)) < 0.5


def _turn(label: np.ndarray) -> float:
    """Signed area of the triangle (LV centroid, RV centroid, marker centroid) -- its sign is the
    handedness of the picture: rotations and scalings keep it, a reflection changes it."""
    lv, rv, mark = (centroid(label == k) for k in (LV, RV, MYO))
    a, b = rv - lv, mark - lv
    return float(a[0] * b[1] - a[1] * b[0])


def chiral_label(size: tuple[int, int] = (150, 140)) -> np.ndarray:
    """Three non-collinear blobs: LV at the centre, RV to its side, a 'myocardium' blob above."""
    yy, xx = np.mgrid[: size[0], : size[1]]
    cy, cx = size[0] // 2, size[1] // 2
    lab = np.zeros(size, dtype=np.uint8)
    lab[np.hypot(yy - cy, xx - cx) < 12] = LV
    lab[np.hypot(yy - cy, xx - cx + 32) < 10] = RV
    lab[np.hypot(yy - cy + 28, xx - cx) < 8] = MYO
    return lab


def test_augmentation_never_mirrors_the_heart(parser):
    lab = chiral_label()
    before = _turn(lab)
    flipped = first(Flipd(keys=["image", "label"], spatial_axis=1)(item(lab)))
    assert np.sign(_turn(np.asarray(flipped["label"])[0])) == -np.sign(before)  # the test sees a flip
    for prob in (None, 1.0):
        comp = transforms(parser, "train#spatial_augmentation", prob, seed=3)
        for _ in range(30):
            out = np.asarray(first(comp(item(lab)))["label"])[0]
            assert all((out == k).any() for k in (LV, MYO, RV))
            assert np.sign(_turn(out)) == np.sign(before)


# --------------------------------------------------------------------------------------------
# schedule and metric
# --------------------------------------------------------------------------------------------

SCHEDULE_CASES = [
    # step, total, schedule, warmup, min_factor, expected
    ("warmup_first", 0, 100, "cosine", 10, 0.0, 0.1),
    ("warmup_last", 9, 100, "cosine", 10, 0.0, 1.0),
    ("cosine_start", 10, 100, "cosine", 10, 0.0, 1.0),
    ("cosine_middle", 55, 100, "cosine", 10, 0.0, 0.5),
    ("cosine_floor", 99, 100, "cosine", 10, 0.01, 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * 89 / 90))),
    ("poly_middle", 50, 100, "poly", 0, 0.0, 0.5**0.9),
    ("constant", 70, 100, "constant", 5, 0.0, 1.0),
    ("past_the_end", 500, 100, "cosine", 0, 0.0, 0.5 * (1 + math.cos(math.pi * 99 / 100))),
]


@pytest.mark.parametrize(
    "name,step,total,schedule,warmup,floor,expected", SCHEDULE_CASES, ids=[c[0] for c in SCHEDULE_CASES]
)
def test_schedule_factor(name, step, total, schedule, warmup, floor, expected):
    assert schedule_factor(step, total, schedule, warmup, floor) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"schedule": "step"}, "`schedule`"),
        ({"total": 0}, "`total`"),
        ({"step": -1}, "`step`"),
        ({"warmup": 100}, "`warmup`"),
        ({"min_factor": 2.0}, "`min_factor`"),
    ],
)
def test_schedule_factor_ill(kwargs, match):
    args = {"step": 0, "total": 100, "schedule": "cosine", "warmup": 0, "min_factor": 0.0, **kwargs}
    with pytest.raises(ValueError, match=match):
        schedule_factor(**args)


def test_learning_rate_schedule_follows_the_iteration_and_survives_a_resume():
    """The rate is a function of the trainer's iteration only: a run resumed at epoch 3 sees the same rates."""
    net = torch.nn.Linear(2, 2)

    def rates(start_epoch: int) -> list[float]:
        opt = torch.optim.SGD(net.parameters(), lr=123.0)  # the optimizer's own rate is overwritten
        seen: list[float] = []
        engine = Engine(lambda e, b: seen.append(opt.param_groups[0]["lr"]))
        LearningRateSchedule(opt, base_lr=0.01, schedule="cosine", warmup_epochs=1, min_factor=0.0).attach(engine)

        @engine.on(Events.STARTED)
        def _resume(e):
            e.state.epoch = start_epoch
            e.state.iteration = start_epoch * 4

        engine.run(range(4), max_epochs=5)
        return seen

    full, resumed = rates(0), rates(3)
    assert len(full) == 20 and len(resumed) == 8
    assert full[0] == pytest.approx(0.0025) and full[3] == pytest.approx(0.01)
    assert all(a >= b for a, b in zip(full[3:], full[4:], strict=False))  # decays after the warm-up
    np.testing.assert_allclose(resumed, full[12:], rtol=1e-12)


def test_constant_schedule_leaves_the_optimizer_alone():
    opt = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.5)
    engine = Engine(lambda e, b: None)
    LearningRateSchedule(opt, base_lr=0.01).attach(engine)
    engine.run(range(3), max_epochs=2)
    assert opt.param_groups[0]["lr"] == 0.5


def onehot(label: np.ndarray) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.as_tensor(label, dtype=torch.long), 4).permute(2, 0, 1).float()


def test_case_dice_pools_the_slices_of_each_case():
    """Two cases of two slices: the case Dice pools voxels over a case's slices, then averages the cases."""
    metric = CaseDice()
    gt = np.zeros((8, 8), dtype=np.int64)
    gt[:4, :4] = LV
    gt[4:, 4:] = MYO
    gt[:4, 4:] = RV
    half = gt.copy()
    half[:2, :4] = 0  # LV: 8 of 16 voxels found on this slice
    empty = np.zeros_like(gt)
    # case a: slice 1 perfect, slice 2 has no structure in truth nor prediction
    # case b: slice 1 misses half the LV, slice 2 perfect
    batch = [
        ("a", gt, gt),
        ("a", empty, empty),
        ("b", half, gt),
        ("b", gt, gt),
    ]
    metric.reset()
    metric.update(([c for c, _, _ in batch], [onehot(p) for _, p, _ in batch], [onehot(g) for _, _, g in batch]))
    lv_b = 2 * 24 / (24 + 32)
    per = metric.per_structure()
    assert per["LV"] == pytest.approx((1.0 + lv_b) / 2)
    assert per["MYO"] == pytest.approx(1.0) and per["RV"] == pytest.approx(1.0)
    assert metric.compute() == pytest.approx(((1.0 + lv_b) / 2 + 2) / 3)


def test_case_dice_counts_a_structure_absent_from_both_as_one():
    metric = CaseDice()
    metric.reset()
    lab = np.zeros((6, 6), dtype=np.int64)
    lab[1:3, 1:3] = LV
    metric.update((["x"], [onehot(lab)], [onehot(lab)]))
    assert metric.per_structure() == {"LV": 1.0, "MYO": 1.0, "RV": 1.0}
    metric.reset()
    with pytest.raises(ValueError, match="saw no case"):
        metric.compute()


# --------------------------------------------------------------------------------------------
# the bundle
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["train", "lora"])
def test_clinical_override_passes_the_workflow_properties(kind, tiny_sites, tmp_path):
    root, _ = tiny_sites
    wf = ConfigWorkflow(
        config_file=[*config_files(kind), CLINICAL],
        meta_file=str(BUNDLE / "configs" / "metadata.json"),
        logging_file=False,
        workflow_type="train",
        dataset_dir=str(root / "sites" / "site-1"),
        output_dir=str(tmp_path),
        model_dir=str(tmp_path),
        load_pretrain=False,
    )
    wf.initialize()
    assert wf.check_properties() in (None, [])
    assert wf.parser.get_parsed_content("profile") == "clinical"
    net = wf.parser.get_parsed_content("network")
    assert net(torch.zeros(1, 1, *PROF.spatial_size)).shape == (1, 4, *PROF.spatial_size)


def test_one_training_iteration_on_a_tiny_synthetic_batch(parser):
    torch.manual_seed(0)
    comp = transforms(parser, "train#random_transforms", seed=4)
    samples = [first(comp(item(heart()))) for _ in range(2)]
    x = torch.stack([torch.as_tensor(s["image"]) for s in samples]).float()
    y = torch.stack([torch.as_tensor(s["label"]) for s in samples]).long()
    net = parser.get_parsed_content("network_def", instantiate=True, lazy=False)
    loss_fn = parser.get_parsed_content("loss", instantiate=True, lazy=False)
    opt = torch.optim.AdamW(net.parameters(), lr=PROF.learning_rate, weight_decay=parser["weight_decay"])
    before = [p.detach().clone() for p in net.parameters()]
    net.train()
    loss = loss_fn(net(x), y)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    assert any(not torch.equal(b, p) for b, p in zip(before, net.parameters(), strict=True))


def test_clinical_pretraining_runs_and_selects_by_case_dice(tiny_sites, tmp_path):
    """Two epochs of the clinical recipe on the tiny phantom site: weights, case Dice curve, schedule."""
    root, _ = tiny_sites
    wf = make_workflow(
        "train",
        {
            "dataset_dir": str(root / "sites" / "reference"),
            "output_dir": str(tmp_path),
            "model_dir": str(tmp_path),
            "max_epochs": 2,
            "warmup_epochs": 1,
            "progress": False,
        },
        extra_configs=[CLINICAL],
    )
    wf.initialize()
    wf.run()
    wf.finalize()
    curve = json.loads((tmp_path / "val_curve.json").read_text())
    assert [r["epoch"] for r in curve] == [1, 2]
    assert all(0.0 <= r["val_case_dice"] <= 1.0 for r in curve)
    metrics = wf.parser.get_parsed_content("validate#evaluator").state.metrics
    assert {"val_case_dice_LV", "val_case_dice_MYO", "val_case_dice_RV"} <= set(metrics)
    lr = wf.parser.get_parsed_content("optimizer").param_groups[0]["lr"]
    assert 0 < lr < PROF.learning_rate  # cosine decay after the warm-up
    for name in ("model.pt", "checkpoint.pt", "val_curve.png"):
        assert (tmp_path / name).is_file(), name


@pytest.mark.parametrize(
    "kind, profile, schedule",
    [("train", "clinical", "cosine"), ("lora", "clinical", "cosine"), ("train", "quick", "constant")],
)
def test_the_profile_brings_its_recipe_without_naming_the_file(kind, profile, schedule, tmp_path):
    """Harness, FLARE sites and the command line name only the profile; its recipe file comes with it."""
    from cardiolora.bundle import profile_configs

    wf = make_workflow(kind, {"profile": profile, "dataset_dir": str(tmp_path), "output_dir": str(tmp_path)})
    assert wf.parser.get_parsed_content("lr_schedule") == schedule
    assert profile_configs("evaluate", "clinical") == [] and profile_configs("train", "quick") == []
    assert profile_configs("lora", "clinical") == [CLINICAL]
    with pytest.raises(ValueError, match="nope"):
        profile_configs("train", "nope")
