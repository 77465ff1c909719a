"""Tests of cardiolora.atomic: atomic writes (no temporary file left, old file kept on failure) and
the JSON sanitiser."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from cardiolora.atomic import (
    atomic_path,
    atomic_torch_save,
    atomic_write_bytes,
    atomic_write_text,
    jsonable,
    save_dataset_atomic,
    write_json,
)


@dataclasses.dataclass
class _Point:
    x: float
    where: Path


@pytest.mark.parametrize(
    "value, expected",
    [
        (float("nan"), None),
        (float("-inf"), None),
        (np.float32(0.5), 0.5),
        (np.float64(np.inf), None),
        (np.int64(3), 3),
        (np.bool_(True), True),
        ((1, 2.5), [1, 2.5]),
        (np.array([[1, 2], [3, 4]], dtype=np.uint8), [[1, 2], [3, 4]]),
        (np.array([1.0, np.nan]), [1.0, None]),
        ({1: Path("/a/b")}, {"1": "/a/b"}),
        (_Point(math.nan, Path("c")), {"x": None, "where": "c"}),
        ({"s": "text", "n": None, "b": False}, {"s": "text", "n": None, "b": False}),
    ],
    ids=[
        "nan",
        "inf",
        "np_f32",
        "np_inf",
        "np_int",
        "np_bool",
        "tuple",
        "array",
        "array_nan",
        "path_key",
        "dataclass",
        "plain",
    ],
)
def test_jsonable(value, expected):
    got = jsonable(value)
    assert got == expected
    json.dumps(got, allow_nan=False)


@pytest.mark.parametrize(
    "kwargs, text",
    [
        ({}, '{\n "a": [\n  1,\n  null\n ]\n}'),
        ({"indent": 2, "trailing_newline": True}, '{\n  "a": [\n    1,\n    null\n  ]\n}\n'),
        ({"indent": None, "sort_keys": True}, '{"a": [1, null]}'),
    ],
    ids=["default", "indent2_newline", "one_line"],
)
def test_write_json_layout(tmp_path, kwargs, text):
    out = write_json({"a": (1, float("nan"))}, tmp_path / "sub" / "x.json", **kwargs)
    assert out == tmp_path / "sub" / "x.json" and out.read_text() == text
    assert [p.name for p in out.parent.iterdir()] == ["x.json"]


def test_write_json_unserialisable_names_file(tmp_path):
    with pytest.raises(TypeError, match=r"x\.json"):
        write_json({"a": object()}, tmp_path / "x.json")
    assert list(tmp_path.iterdir()) == []


def test_failed_write_keeps_old_file(tmp_path):
    path = tmp_path / "f.bin"
    atomic_write_bytes(b"old", path)
    with pytest.raises(RuntimeError, match="broke"), atomic_path(path) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("broke")
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["f.bin"]


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda p: atomic_write_bytes("text", p), r"`data` for .*must be bytes"),
        (lambda p: atomic_write_text(b"bytes", p), r"`text` for .*must be a str"),
    ],
    ids=["bytes_given_str", "text_given_bytes"],
)
def test_wrong_content_type(tmp_path, call, match):
    with pytest.raises(TypeError, match=match):
        call(tmp_path / "x")


def test_text_torch_and_dicom(tmp_path):
    assert atomic_write_text("é\n", tmp_path / "t.txt").read_bytes() == "é\n".encode()
    state = {"w": torch.arange(4.0)}
    assert torch.equal(torch.load(atomic_torch_save(state, tmp_path / "m.pt"), weights_only=True)["w"], state["w"])
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.PatientName = "Test^Atomic"
    out = save_dataset_atomic(ds, tmp_path / "d" / "x.dcm")
    assert pydicom.dcmread(out).PatientName == "Test^Atomic"
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["m.pt", "t.txt", "x.dcm"]


def test_save_figure_writes_a_png_in_a_new_folder_and_closes_the_figure(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cardiolora.atomic import save_figure

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    out = save_figure(fig, tmp_path / "new" / "plot.png")
    assert out == tmp_path / "new" / "plot.png"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and [p.name for p in out.parent.iterdir()] == ["plot.png"]
    assert not plt.fignum_exists(fig.number)
