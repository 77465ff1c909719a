"""The demo's site-inference stage (stage 5): a new phantom DICOM study through the site application.

The stage's accuracy depends on the trained model (measured by ``make demo``); here a seeded
random-weight quick-profile network checks what the stage does: the study is new (in no split),
deterministic and written once, the site application writes every output, the truth it is scored
against is the phantom's, and a rerun reuses the finished output.
"""

from __future__ import annotations

import json

import numpy as np
import pydicom
import pytest
import torch

from cardiolora.data.generate import DEFAULT_SITES, subject_seed
from cardiolora.demo import DEMO_SUBJECT_INDEX, demo_study, site_inference
from cardiolora.networks import lora_unet, plain_state_dict


@pytest.fixture(scope="module")
def random_model(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "model.pt"
    torch.save(plain_state_dict(lora_unet("quick")), path)
    return path


def test_demo_study_is_new_deterministic_and_written_once(tmp_path):
    folder, study = demo_study(tmp_path, "site-2", n_phases=3)
    assert folder.name == "site-2-demo" and study.n_phases == 3
    assert DEMO_SUBJECT_INDEX >= max(s.n_subjects for s in DEFAULT_SITES)  # beyond every site's subjects
    assert subject_seed(0, 2, DEMO_SUBJECT_INDEX) not in {subject_seed(0, 2, k) for k in range(12)}
    sa = sorted((folder / "SA").glob("*.dcm"))
    assert len(sa) == 3 * study.n_slices
    ds = pydicom.dcmread(sa[0])
    assert ds.Manufacturer and ds.CardiacNumberOfImages == 3
    assert any((folder / "other").rglob("*.dcm"))  # localiser / long-axis series beside the cine
    stamp = sa[0].stat().st_mtime_ns
    folder2, study2 = demo_study(tmp_path, "site-2", n_phases=3)
    assert folder2 == folder and sa[0].stat().st_mtime_ns == stamp  # reused, not rewritten
    np.testing.assert_array_equal(study2.image, study.image)


def test_demo_study_rewrites_an_interrupted_one(tmp_path):
    folder, _ = demo_study(tmp_path, "site-1", n_phases=2)
    (folder / ".complete").unlink()
    first = sorted((folder / "SA").glob("*.dcm"))[0]
    first.write_bytes(b"truncated")
    demo_study(tmp_path, "site-1", n_phases=2)
    assert pydicom.dcmread(first).Modality == "MR"


def test_demo_study_unknown_site(tmp_path):
    with pytest.raises(ValueError, match="`site` must be one of"):
        demo_study(tmp_path, "site-9")


def test_site_inference_writes_every_output_and_reuses_it(tmp_path, random_model):
    result = site_inference(tmp_path, random_model, "quick", "site-3", progress=False, n_phases=3)
    _, study = demo_study(tmp_path / "site_study", "site-3", n_phases=3)
    assert result["status"] == "done"
    [seg] = result["seg"]  # one SEG object for the whole cine
    assert pydicom.dcmread(seg).Modality == "SEG" and int(pydicom.dcmread(seg).NumberOfFrames) % 3 == 0
    assert pydicom.dcmread(result["sr"]).Modality == "SR"
    assert [p.rsplit("/", 1)[1] for p in result["pictures"]] == ["overlay_ed_es.png", "volume_curve.png"]
    report = json.loads(open(result["report_json"]).read())
    assert report["outputs"]["dicom_seg"] and open(result["report_csv"]).read().count("\n") == 2
    assert set(result["dice_vs_truth"]) == {"LV", "MYO", "RV"}
    assert all(0.0 <= v <= 1.0 for v in result["dice_vs_truth"].values())
    assert result["truth"]["lv_ef_pct"] == pytest.approx(study.truth["lv_ef_pct"])
    assert result["truth"]["es_phase"] == study.es_phase
    assert result["measured"]["lv_edv_ml"] == report["function"]["lv_edv_ml"]
    again = site_inference(tmp_path, random_model, "quick", "site-3", progress=False, n_phases=3)
    assert again["status"] == "exists" and again["dice_vs_truth"] == result["dice_vs_truth"]


def test_site_inference_names_a_missing_model(tmp_path):
    from cardiolora.site.model import ModelError

    with pytest.raises(ModelError, match="nope.pt"):
        site_inference(tmp_path, tmp_path / "nope.pt", "quick", "site-1", progress=False, n_phases=2)
