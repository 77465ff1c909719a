"""The site application on real-world folder layouts: studies by patient, SEG and SR or a partial
status, and series selection by a rules file.

The network is an untrained quick-profile U-Net (seeded): these tests are about what is read,
written and reported, not about accuracy (tests/test_site_app.py measures that).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from conftest import dciodvfy

from cardiolora.cli import main
from cardiolora.data.phantom import make_subject
from cardiolora.dicom import read_short_axis_cine
from cardiolora.dicom.mr_writer import write_dicom_cine, write_dicom_localizers
from cardiolora.dicom.sr import read_measurement_sr
from cardiolora.networks import lora_unet, plain_state_dict
from cardiolora.plausibility import plausibility_flags
from cardiolora.site.app import EXIT_PARTIAL, find_studies


def _small(seed: int, subject_id: str):
    s = make_subject(seed, "siemens", subject_id=subject_id, n_phases=3)
    return dataclasses.replace(s, image=np.ascontiguousarray(s.image[:, :3, :32, :32]), label=None)


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    """Two patients' studies mixed in one flat folder, and a model file."""
    root = tmp_path_factory.mktemp("studies")
    mixed = root / "mixed"
    for seed, pid in ((21, "PAT-A"), (22, "PAT-B")):
        files = write_dicom_cine(_small(seed, pid), root / "tmp" / pid, uid_seed=pid, file_prefix=pid)
        write_dicom_localizers(_small(seed, pid), root / "tmp" / pid, files[0], uid_seed=pid, n_lax_phases=2)
    mixed.mkdir()
    for p in sorted((root / "tmp").rglob("*.dcm")):
        shutil.copy(p, mixed / f"{p.parent.name}_{p.name}")  # one flat folder, as a PACS export
    (mixed / "notes.txt").write_text("not an image")
    torch.manual_seed(0)
    torch.save(plain_state_dict(lora_unet("quick")), root / "model.pt")
    return root


def _segment(layouts, source, out, *extra):
    args = ["segment", str(source), "--out", str(out), "--model", str(layouts / "model.pt"), "--no-progress"]
    return main([*args, *extra])


def test_a_folder_of_two_patients_gives_one_outcome_per_study(layouts, capsys):
    studies, batch = find_studies(layouts / "mixed")
    assert batch and len(studies) == 2
    assert sorted(s.scan.patient_id for s in studies) == ["PAT-A", "PAT-B"]
    out = layouts / "out-mixed"
    assert _segment(layouts, layouts / "mixed", out) == 0
    printed = capsys.readouterr().out
    rows = list(csv.DictReader((out / "studies.csv").open()))
    assert sorted(r["status"] for r in rows) == ["done", "done"]
    for study in studies:
        folder = out / study.name
        report = json.loads((folder / "report.json").read_text())
        assert report["status"] == "done" and report["missing_outputs"] == {}
        assert report["series"]["patient_id"] == study.scan.patient_id
        [seg_file] = report["outputs"]["dicom_seg"]
        seg = hd.seg.segread(folder / seg_file)
        assert seg.PatientID == study.scan.patient_id and int(seg.NumberOfFrames) == 3 * 3 * 3  # T x Z x segments
        sr = pydicom.dcmread(folder / report["outputs"]["dicom_sr"])
        assert sr.Modality == "SR" and sr.PatientID == study.scan.patient_id
        refs = [r.ReferencedSOPInstanceUID for item in sr.CurrentRequestedProcedureEvidenceSequence
                for s in item.ReferencedSeriesSequence for r in s.ReferencedSOPSequence]  # fmt: skip
        assert seg.SOPInstanceUID in refs
        # plausibility flags: the report's are those of its own labels, and the SR carries them
        labels = np.asarray(nib.load(folder / "nifti" / "labels.nii.gz").dataobj).transpose(3, 2, 1, 0)
        spacing = report["geometry"]["spacing_zyx_mm"]
        expected = [f["name"] for f in plausibility_flags(report["function"], labels, spacing)]
        assert report["flags"] == expected
        assert read_measurement_sr(folder / report["outputs"]["dicom_sr"])["flags"] == expected
        if expected:  # the untrained network's labels usually are implausible
            assert f"  {study.name}: {', '.join(expected)}" in printed


def test_a_missing_seg_makes_the_study_partial_never_done(layouts, monkeypatch, capsys):
    import cardiolora.site.outputs as outputs_module

    def broken(*args, **kwargs):
        raise ValueError("no room for frames")

    monkeypatch.setattr(outputs_module, "write_study_seg", broken)
    source = layouts / "tmp" / "PAT-A"
    out = layouts / "out-partial"
    assert _segment(layouts, source, out) == EXIT_PARTIAL == 4
    err = capsys.readouterr().err
    assert "partial" in err and "dicom_seg not written: ValueError: no room for frames" in err
    assert "dicom_sr not written: it references the DICOM SEG" in err
    assert "done" not in err.split("partial", 1)[0]
    report = json.loads((out / "PAT-A" / "report.json").read_text())
    assert report["status"] == "partial" and set(report["missing_outputs"]) == {"dicom_seg", "dicom_sr"}
    assert (out / "PAT-A" / "nifti" / "labels.nii.gz").exists(), "what was written is kept"


def test_series_rules_file_picks_and_is_named(layouts, tmp_path):
    study = tmp_path / "two-stacks"
    s = _small(23, "PAT-C")
    write_dicom_cine(s, study, uid_seed="c", series_number=5, series_description="SA cine", file_prefix="SA")
    study_uid = pydicom.dcmread(next(study.glob("SA_*"))).StudyInstanceUID
    write_dicom_cine(s, study, uid_seed="c2", series_number=9, series_description="research stack",
                     file_prefix="RS", study_uid=study_uid)  # fmt: skip
    rules = tmp_path / "rules.json"
    rules.write_text(
        json.dumps({"rules": [{"name": "research-first", "conditions": {"SeriesDescription": "^research"}}]})
    )
    out = tmp_path / "out"
    assert _segment(layouts, study, out) == 0
    default = json.loads((out / "two-stacks" / "report.json").read_text())["series"]
    assert default["series_number"] == 5 and default["series_rule"] == "short-axis-cine-by-name"
    assert _segment(layouts, study, out, "--overwrite", "--series-rules", str(rules)) == 0
    chosen = json.loads((out / "two-stacks" / "report.json").read_text())["series"]
    assert chosen["series_number"] == 9 and chosen["series_rule"] == "research-first"


@pytest.mark.parametrize(
    "rules, message",
    [
        ({"rules": []}, "`rules` must be a non-empty list"),
        (
            {"rules": [{"name": "x", "conditions": {"SeriesDescription": "("}}]},
            "rule 'x': condition `SeriesDescription` has an invalid regular",
        ),
        (
            {"rules": [{"name": "x", "conditions": {"n_positions": {"least": 3}}}]},
            "condition `n_positions` has unknown keys ['least']",
        ),
        ({"rules": [{"conditions": {}}]}, "rule 1: each rule needs a `name`"),
    ],
    ids=["empty", "bad-regex", "bad-range", "no-name"],
)
def test_bad_rules_file_exits_2_naming_the_field(layouts, tmp_path, capsys, rules, message):
    path = tmp_path / "rules.json"
    path.write_text(json.dumps(rules))
    assert _segment(layouts, layouts / "tmp" / "PAT-A", tmp_path / "out", "--series-rules", str(path)) == 2
    err = capsys.readouterr().err
    assert str(path) in err and message in err
    assert not (tmp_path / "out").exists(), "nothing is written for a refused rules file"


def test_seg_per_phase_option_writes_one_instance_per_phase(layouts, tmp_path):
    out = tmp_path / "out"
    assert _segment(layouts, layouts / "tmp" / "PAT-B", out, "--seg-per-phase") == 0
    report = json.loads((out / "PAT-B" / "report.json").read_text())
    segs = report["outputs"]["dicom_seg"]
    assert len(segs) == 3 and all(pydicom.dcmread(out / "PAT-B" / p).Modality == "SEG" for p in segs)
    assert len({pydicom.dcmread(out / "PAT-B" / p).SeriesInstanceUID for p in segs}) == 1
    assert report["status"] == "done" and "dicom_sr" in report["outputs"]


@pytest.mark.parametrize(
    "variant",
    ["build_anonymised", "build_per_file_frame_of_reference", "build_legacy_converted", "build_leading_zero_uids",
     "build_series_per_position", "build_osirix_empty_groups", "build_rle"],
)  # fmt: skip
def test_real_world_variants_get_every_output(layouts, tmp_path, variant):
    """Anonymised values, a frame of reference per file, Enhanced MR sources, invalid UIDs, one
    series per slice, OsiriX-style headers, compressed pixels: the study is `done`, with a SEG
    that reads back as the labels of every phase and an SR that references it."""
    import dicom_corpus as corpus

    source = tmp_path / "source"
    s = _small(24, "PAT-V")
    write_dicom_cine(s, source, uid_seed="v")
    study = getattr(corpus, variant)(source, tmp_path / "variant")
    out = tmp_path / "out"
    assert _segment(layouts, study, out) == 0
    folder = out / study.name
    report = json.loads((folder / "report.json").read_text())
    assert report["status"] == "done" and report["missing_outputs"] == {}
    labels = np.asarray(nib.load(folder / "nifti" / "labels.nii.gz").dataobj).transpose(3, 2, 1, 0)
    seg = hd.seg.segread(folder / report["outputs"]["dicom_seg"][0])
    cine = read_short_axis_cine(study)
    for t in range(labels.shape[0]):
        uids = cine.meta["source_sop_instance_uids"][t]
        if cine.meta["sop_class_uid"] == pydicom.uid.MRImageStorage:
            got = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, combine_segments=True)
        else:  # one multi-frame source: frames by number
            got = seg.get_pixels_by_source_frame(
                source_sop_instance_uid=uids[0], source_frame_numbers=cine.meta["source_frame_numbers"][t],
                combine_segments=True,
            )  # fmt: skip
        np.testing.assert_array_equal(got, labels[t])
    sr = read_measurement_sr(folder / report["outputs"]["dicom_sr"])
    assert {ref["sop_instance_uid"] for ref in sr["segments"]} == {seg.SOPInstanceUID}
    for uid in (seg.SOPInstanceUID, seg.SeriesInstanceUID):
        assert pydicom.uid.UID(uid).is_valid, "new objects get valid UIDs"
    for path in (folder / report["outputs"]["dicom_seg"][0], folder / report["outputs"]["dicom_sr"]):
        errors, _ = dciodvfy(path)
        if variant == "build_leading_zero_uids":  # only the source's own UIDs, referenced as they are
            errors = [
                e
                for e in errors
                if not ("UID" in e and "Leading zeroes" in e)
                and e != "Error - Dicom dataset contains invalid data values for Value Representations"
            ]
        assert errors == [], (path.name, errors)
    if variant == "build_per_file_frame_of_reference":
        assert any("FrameOfReferenceUID" in n for n in report["dicom_notes"])
        assert any("different FrameOfReferenceUIDs" in w for w in report["warnings"])
