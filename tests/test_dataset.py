"""Slice datasets: orientation equal to MONAI's NIfTI loading, normalisation, datalists."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from conftest import shared_data
from monai.transforms import LoadImage, ScaleIntensityRangePercentiles

from cardiolora.data.acdc_h5 import index_acdc_h5
from cardiolora.data.dataset import CardiacSliceDataset, expand_slices, load_datalist, write_datalist
from cardiolora.data.records import CaseRecord


def test_slices_match_monai_nifti_loading(tiny_sites):
    """A training slice equals the same slice of the stack as LoadImage gives it to inference."""
    root, _ = tiny_sites
    entry = load_datalist(root / "sites" / "site-1", "train")[0]
    items = expand_slices(entry)
    vol = LoadImage(image_only=True)(entry["image"])  # (X, Y, Z)
    norm = ScaleIntensityRangePercentiles(1, 99, 0.0, 1.0, clip=True)(vol[None])[0]
    assert len(items) == vol.shape[2]
    for z in (0, len(items) // 2):
        np.testing.assert_allclose(np.asarray(items[z]["image"][0]), np.asarray(norm[:, :, z]), atol=1e-5)
        lab = np.asarray(nib.load(entry["label"]).dataobj)[:, :, z]
        table = np.array([0, 3, 2, 1])  # ACDC layout on disk → project convention
        np.testing.assert_array_equal(np.asarray(items[z]["label"][0]), table[lab])
    spacing = nib.load(entry["image"]).header.get_zooms()
    np.testing.assert_allclose(np.diag(np.asarray(items[0]["image"].affine))[:2], spacing[:2], rtol=1e-6)


def test_dataset_caches_all_slices(tiny_sites):
    root, _ = tiny_sites
    data = load_datalist(root / "sites" / "site-2", "train")
    ds = CardiacSliceDataset(data, transform=None)
    assert len(ds) == sum(nib.load(e["image"]).shape[2] for e in data)
    assert {d["case_id"] for d in ds.data} == {e["case_id"] for e in data}


def test_hdf5_without_spacing_needs_one(tmp_path):
    root = shared_data("acdc_h5")
    rec = index_acdc_h5(root)[0]
    with pytest.raises(ValueError, match="no voxel spacing"):
        expand_slices(rec)
    items = expand_slices(CaseRecord.from_dict({**rec.to_dict(), "meta": {"in_plane_spacing_mm": 1.5}}))
    assert float(items[0]["image"].affine[0, 0]) == 1.5


@pytest.mark.parametrize(
    "content, key, exc, match",
    [
        (None, "train", FileNotFoundError, "no datalist here"),
        ("{not json", "train", ValueError, "not valid JSON"),
        ('{"val": []}', "train", ValueError, "no split `train`"),
        ('{"train": [{"label": "x"}]}', "train", ValueError, "entry 0 of `train` has no `image`"),
    ],
)
def test_load_datalist_errors(tmp_path, content, key, exc, match):
    if content is not None:
        (tmp_path / "datalist.json").write_text(content)
    with pytest.raises(exc, match=match):
        load_datalist(tmp_path, key)


def test_datalist_relative_paths_resolve(tmp_path):
    write_datalist(
        {"train": [{"image": "a/b.nii.gz", "label": "a/b_gt.nii.gz"}]}, tmp_path / "datalist.json", meta={"seed": 0}
    )
    entry = load_datalist(tmp_path, "train")[0]
    assert entry["image"] == str((tmp_path / "a" / "b.nii.gz").resolve())
    assert json.loads((tmp_path / "datalist.json").read_text())["meta"] == {"seed": 0}


def test_empty_split_is_refused():
    with pytest.raises(ValueError, match="`data` is empty"):
        CardiacSliceDataset([], transform=None)
