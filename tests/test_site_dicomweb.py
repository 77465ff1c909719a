"""`cardiolora segment --dicomweb` against a real Orthanc PACS with its DICOMweb plugin on 127.0.0.1.

The fixture starts a private Orthanc (tests/orthanc_server.py: own config, free ports, storage in
a temporary folder) and stops it at the end; the tests skip, saying why, only when Orthanc is not
installed (``.ci/run`` installs the Debian packages ``orthanc`` and ``orthanc-dicomweb``). Phantom
studies are uploaded through Orthanc's own REST API; what the command stores is read back by
QIDO-RS / WADO-RS and compared with what the site application gives on the same study locally.
Faulty servers (HTTP 500, a server that does not answer, no server) are small local HTTP servers;
a partial study is Orthanc behind a proxy whose QIDO-RS answers list one instance more than exist.

The network is an untrained quick-profile U-Net (seeded): these tests are about what travels and
what is recorded, not about accuracy.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from orthanc_server import ServerProcess, free_port, start_orthanc

from cardiolora.cli import main
from cardiolora.data.phantom import make_subject
from cardiolora.dicom import read_short_axis_cine
from cardiolora.dicom.mr_writer import write_dicom_cine
from cardiolora.dicom.sr import read_measurement_sr
from cardiolora.networks import lora_unet, plain_state_dict
from cardiolora.site.dicomweb import check_date_range
from cardiolora.site.pacs import INPUT_FOLDER, STATE_FILE, PacsQuery

REPO = Path(__file__).resolve().parents[1]
PATIENTS = ("PAT-A", "PAT-W1", "PAT-W2", "PAT-P", "PAT-I", "PAT-S")


def _small(seed: int, subject_id: str):
    s = make_subject(seed, "siemens", subject_id=subject_id, n_phases=3)
    return dataclasses.replace(s, image=np.ascontiguousarray(s.image[:, :3, :32, :32]), label=None)


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    """One small phantom cine study per patient (3 phases x 3 slices x 32 x 32), and a model file."""
    root = tmp_path_factory.mktemp("phantoms")
    studies = {}
    for seed, pid in enumerate(PATIENTS, start=31):
        patient = "PAT-W" if pid.startswith("PAT-W") else pid  # the watch test's two studies: one patient
        files = write_dicom_cine(_small(seed, pid), root / pid, uid_seed=pid, file_prefix=pid, patient_id=patient)
        studies[pid] = {"folder": root / pid, "files": files, "uid": str(pydicom.dcmread(files[0]).StudyInstanceUID)}
    torch.manual_seed(0)
    torch.save(plain_state_dict(lora_unet("quick")), root / "model.pt")
    return root, studies


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    server = start_orthanc(tmp_path_factory.mktemp("orthanc"))
    yield server
    server.stop()


def _segment(phantoms, out, *extra):
    root, _ = phantoms
    return main(["segment", "--out", str(out), "--model", str(root / "model.pt"), "--no-progress", *extra])


def _retrieve(orthanc, study_uid: str, modality: str, folder: Path) -> list[Path]:
    """The study's instances of `modality` from Orthanc by WADO-RS, written to `folder`."""
    from dicomweb_client.api import DICOMwebClient

    client = DICOMwebClient(orthanc.dicomweb)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for s in orthanc.series_of(study_uid):
        if s["modality"] == modality:
            for ds in client.retrieve_series(study_uid, s["series_uid"]):
                paths.append(folder / f"{ds.SOPInstanceUID}.dcm")
                ds.save_as(paths[-1], enforce_file_format=True)
    return paths


def _modalities(orthanc, study_uid: str) -> list[str]:
    return sorted(s["modality"] for s in orthanc.series_of(study_uid))


def test_a_study_from_orthanc_gets_its_seg_and_sr_stored_back(orthanc, phantoms, tmp_path, capsys):
    """Round trip: retrieve, segment, STOW; the SEG read back from Orthanc holds the labels the
    local site application gives on the same study, and the SR stored beside it references it."""
    root, studies = phantoms
    study = studies["PAT-A"]
    orthanc.upload(study["files"])
    out = tmp_path / "out"
    assert _segment(phantoms, out, "--dicomweb", orthanc.dicomweb, "--study", study["uid"]) == 0
    assert capsys.readouterr().out.startswith(f"done     {study['uid']}")
    assert _modalities(orthanc, study["uid"]) == ["MR", "SEG", "SR"]
    [seg_path] = _retrieve(orthanc, study["uid"], "SEG", tmp_path / "back")
    [sr_path] = _retrieve(orthanc, study["uid"], "SR", tmp_path / "back")
    # the same study through the local site application
    local = tmp_path / "local"
    assert _segment(phantoms, local, str(study["folder"])) == 0
    labels = np.asarray(nib.load(local / "PAT-A" / "nifti" / "labels.nii.gz").dataobj).transpose(3, 2, 1, 0)
    seg = hd.seg.segread(seg_path)
    assert seg.StudyInstanceUID == study["uid"] and seg.PatientID == "PAT-A"
    cine = read_short_axis_cine(study["folder"])
    for t in range(labels.shape[0]):
        got = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=cine.meta["source_sop_instance_uids"][t], combine_segments=True
        )
        np.testing.assert_array_equal(got, labels[t])
    sr = read_measurement_sr(sr_path)
    assert sr["study_instance_uid"] == study["uid"]
    assert {ref["sop_instance_uid"] for ref in sr["segments"]} == {seg.SOPInstanceUID}
    local_sr = read_measurement_sr(local / "PAT-A" / "sr" / "measurements.dcm")
    assert sr["values"].keys() == local_sr["values"].keys()
    np.testing.assert_allclose([sr["values"][k] for k in sorted(sr["values"])],
                               [local_sr["values"][k] for k in sorted(sr["values"])])  # fmt: skip
    # what was done is recorded: the state file and the report's dicomweb block name the stored UIDs
    entry = json.loads((out / STATE_FILE).read_text())["studies"][study["uid"]]
    assert entry["status"] == "done" and entry["attempts"] == 1
    assert entry["stored"] == {"seg": [seg.SOPInstanceUID], "sr": sr["sop_instance_uid"]}
    report = json.loads((Path(entry["output"]) / "report.json").read_text())
    assert report["status"] == "done" and report["dicomweb"]["stored"] == entry["stored"]
    assert report["dicomweb"]["retrieved_instances"] == 9 and report["dicomweb"]["url"] == orthanc.dicomweb
    assert not (out / INPUT_FOLDER).exists(), "the retrieved input is removed"
    # a second run processes nothing again: nothing stored twice
    assert _segment(phantoms, out, "--dicomweb", orthanc.dicomweb, "--study", study["uid"]) == 2
    assert "exists" in capsys.readouterr().err
    assert _modalities(orthanc, study["uid"]) == ["MR", "SEG", "SR"]
    assert [s["n"] for s in orthanc.series_of(study["uid"]) if s["modality"] != "MR"] == [1, 1]


def test_watch_processes_each_new_study_once_across_a_restart(orthanc, phantoms, tmp_path):
    _, studies = phantoms
    query = ["--dicomweb", orthanc.dicomweb, "--patient-id", "PAT-W", "--study-date", "20240101-20241231", "--watch"]
    out = tmp_path / "out"
    orthanc.upload(studies["PAT-W1"]["files"])
    assert _segment(phantoms, out, *query, "--once") == 0
    state = json.loads((out / STATE_FILE).read_text())
    assert list(state["studies"]) == [studies["PAT-W1"]["uid"]]
    orthanc.upload(studies["PAT-W2"]["files"])  # a new study arrives while the watcher is down
    assert _segment(phantoms, out, *query, "--max-polls", "2", "--interval", "0.2") == 0  # the restart
    state = json.loads((out / STATE_FILE).read_text())
    assert state["query"]["patient_id"] == "PAT-W"
    for pid in ("PAT-W1", "PAT-W2"):
        entry = state["studies"][studies[pid]["uid"]]
        assert (entry["status"], entry["attempts"]) == ("done", 1), pid
        assert [s["n"] for s in orthanc.series_of(studies[pid]["uid"]) if s["modality"] != "MR"] == [1, 1], pid


def test_an_interrupted_study_is_marked_failed_and_redone_only_on_request(orthanc, phantoms, tmp_path, capsys):
    """A study whose entry still says `started` (the process was killed) is never redone silently;
    --retry-failed processes it once more."""
    _, studies = phantoms
    uid = studies["PAT-I"]["uid"]
    orthanc.upload(studies["PAT-I"]["files"])
    out = tmp_path / "out"
    (out).mkdir()
    killed = {"server": orthanc.dicomweb, "studies": {uid: {"status": "started", "time": "then", "attempts": 1}}}
    (out / STATE_FILE).write_text(json.dumps(killed))
    args = ["--dicomweb", orthanc.dicomweb, "--patient-id", "PAT-I"]
    assert _segment(phantoms, out, *args) == 2
    assert "exists" in capsys.readouterr().err
    entry = json.loads((out / STATE_FILE).read_text())["studies"][uid]
    assert entry["status"] == "failed" and entry["reason"].startswith("interrupted")
    assert _modalities(orthanc, uid) == ["MR"], "nothing was processed"
    assert _segment(phantoms, out, *args, "--retry-failed") == 0
    entry = json.loads((out / STATE_FILE).read_text())["studies"][uid]
    assert (entry["status"], entry["attempts"]) == ("done", 2)
    assert entry["history"][0]["status"] == "failed"
    assert _modalities(orthanc, uid) == ["MR", "SEG", "SR"]


def test_an_unknown_study_is_a_named_404_and_nothing_is_written(orthanc, phantoms, tmp_path, capsys):
    out, uid = tmp_path / "out", "1.2.826.0.1.3680043.8.498.404"
    assert _segment(phantoms, out, "--dicomweb", orthanc.dicomweb, "--study", uid) == 1
    err = capsys.readouterr().err
    assert f"StudyNotFoundError: {orthanc.dicomweb}: study {uid}: study not found (HTTP 404)" in err
    assert sorted(p.name for p in out.iterdir()) == [STATE_FILE]
    entry = json.loads((out / STATE_FILE).read_text())["studies"][uid]
    assert entry["status"] == "failed" and "HTTP 404" in entry["reason"]


def test_a_partial_study_is_refused_and_nothing_is_stored(orthanc, phantoms, tmp_path, capsys):
    _, studies = phantoms
    uid = studies["PAT-P"]["uid"]
    orthanc.upload(studies["PAT-P"]["files"])
    proxy = ServerProcess(tmp_path, "proxy", orthanc.dicomweb, "extra")
    try:
        out = tmp_path / "out"
        assert _segment(phantoms, out, "--dicomweb", proxy.url, "--study", uid) == 1
        err = capsys.readouterr().err
        assert f"PartialStudyError: {proxy.url}: study {uid}: partial study (HTTP 200)" in err
        assert "WADO-RS returned 9 of the 10 instances QIDO-RS lists" in err
        assert "POST" not in proxy.methods(), "nothing is stored for a refused study"
        assert sorted(p.name for p in out.iterdir()) == [STATE_FILE], "no partial writes"
        assert _modalities(orthanc, uid) == ["MR"]
    finally:
        proxy.stop()


def test_a_refused_stow_makes_the_study_partial_never_done(orthanc, phantoms, tmp_path, capsys):
    _, studies = phantoms
    uid = studies["PAT-S"]["uid"]
    orthanc.upload(studies["PAT-S"]["files"])
    proxy = ServerProcess(tmp_path, "proxy", orthanc.dicomweb, "refuse")
    try:
        out = tmp_path / "out"
        assert _segment(phantoms, out, "--dicomweb", proxy.url, "--study", uid) == 4
        err = capsys.readouterr().err
        assert f"partial  {uid}" in err and "dicomweb_store not done: ServerError" in err and "HTTP 500" in err
        entry = json.loads((out / STATE_FILE).read_text())["studies"][uid]
        assert entry["status"] == "partial" and entry["stored"] == {}
        report = json.loads((Path(entry["output"]) / "report.json").read_text())
        assert report["status"] == "partial" and "HTTP 500" in report["missing_outputs"]["dicomweb_store"]
        assert (Path(entry["output"]) / "seg" / "seg.dcm").exists(), "the local outputs stay"
    finally:
        proxy.stop()


def test_the_watcher_stops_cleanly_on_sigterm(orthanc, phantoms, tmp_path):
    root, _ = phantoms
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "custom"), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "cardiolora.cli", "segment", "--out", str(out), "--model", str(root / "model.pt"),
           "--dicomweb", orthanc.dicomweb, "--patient-id", "NOBODY", "--watch", "--interval", "60"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (out / STATE_FILE).exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert (out / STATE_FILE).exists(), proc.stderr.read() if proc.poll() is not None else "no state file"
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0 and time.monotonic() - start < 10, err
    assert "SIGTERM: stopping after the current study" in err
    assert json.loads((out / STATE_FILE).read_text())["studies"] == {}


# --- bad servers and bad flags: no Orthanc needed -------------------------------------------------


@pytest.mark.parametrize(
    "server, message",
    [
        (("500", "0"), "ServerError: {url}: study {uid}: server error (HTTP 500)"),
        (("200", "5"), "ServerTimeoutError: {url}: study {uid}: timed out (no HTTP answer)"),
        (None, "ServerUnreachableError: {url}: study {uid}: server unreachable (no HTTP answer)"),
    ],
    ids=["http-500", "timeout", "refused"],
)
def test_bad_servers_give_named_errors_and_nothing_is_written(phantoms, tmp_path, capsys, server, message):
    fake = ServerProcess(tmp_path, "faulty", *server) if server else None
    url = fake.url if fake else f"http://127.0.0.1:{free_port()}/dicom-web"
    uid, out = "1.2.826.0.1.3680043.8.498.1", tmp_path / "out"
    try:
        assert _segment(phantoms, out, "--dicomweb", url, "--study", uid, "--timeout", "0.5") == 1
    finally:
        if fake:
            fake.stop()
    err = capsys.readouterr().err
    assert message.format(url=url, uid=uid) in err
    if fake:
        assert fake.methods() and set(fake.methods()) == {"GET"}, "nothing stored"
    assert sorted(p.name for p in out.iterdir()) == [STATE_FILE]


def test_a_failed_study_search_is_named_and_exits_1(phantoms, tmp_path, capsys):
    fake = ServerProcess(tmp_path, "faulty", "500", "0")
    try:
        assert _segment(phantoms, tmp_path / "out", "--dicomweb", fake.url, "--patient-id", "X") == 1
    finally:
        fake.stop()
    assert f"ServerError: {fake.url}: study search: server error (HTTP 500)" in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--study", "1.2.3"], "--study need --dicomweb URL"),
        (["--dicomweb", "http://127.0.0.1:9/dicom-web"], "--dicomweb needs --study UID or a query"),
        (["--dicomweb", "ftp://pacs/dicom-web", "--study", "1.2"], "--dicomweb 'ftp://pacs/dicom-web': expected"),
        (["--dicomweb", "http://127.0.0.1:9/x", "--study-date", "2024"], "--study-date '2024': expected YYYYMMDD"),
        (["--dicomweb", "http://127.0.0.1:9/x", "--study", "1.2", "--once"], "--once / --max-polls go with --watch"),
        (["--dicomweb", "http://127.0.0.1:9/x", "--study", "1.2", "study-folder"], "and --dicomweb exclude"),
        (["--dicomweb", "http://127.0.0.1:9/x", "--study", "../1.2"], "--study '../1.2' is not a valid UID"),
    ],
    ids=["no-url", "no-query", "bad-url", "bad-date", "once-without-watch", "input-too", "bad-uid"],
)
def test_bad_pacs_flags_exit_2_naming_the_flag(phantoms, tmp_path, capsys, extra, message):
    assert _segment(phantoms, tmp_path / "out", *extra) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_study_date_forms():
    for good in ("20240101", "20240101-20241231", "20240101-", "-20241231"):
        assert check_date_range(good) == good
    for bad in ("2024", "20240101-2024", "20241231-20240101", "-", "2024010120241231"):
        with pytest.raises(ValueError, match="--study-date"):
            check_date_range(bad)
    with pytest.raises(ValueError, match="needs --study UID or a query"):
        PacsQuery()
