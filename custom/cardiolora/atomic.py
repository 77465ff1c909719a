"""Atomic file writes: bytes, text, JSON, ``torch.save`` and DICOM datasets, in one place.

Every writer goes through :func:`atomic_path`: the content is written to a hidden temporary file
in the destination's folder (``.<name>.<pid>.tmp``, so two processes never share one), which is
renamed onto the destination with :func:`os.replace` only once it is complete. A reader, or a run
that restarts after a crash, sees either the old file, no file, or the whole new one; a failed
write leaves no temporary file behind. The destination's folder is created. Files are not
``fsync``-ed (none of the writers this module replaced did).

JSON is strict (:func:`jsonable`): numpy scalars and arrays, paths, dataclasses and tuples become
plain JSON values and NaN / ±inf become ``null``. The text layout (indent, a final newline, key
order) is a parameter of :func:`write_json`, because the files it writes have different
established layouts (histories and datalists: ``indent=1``, no final newline; site reports:
``indent=1`` and a final newline; phantom truth tables: ``indent=2`` and a final newline).

Example::

    from cardiolora.atomic import write_json

    write_json({"dice": np.float32(0.91), "hd95": float("nan")}, "out/summary.json")
    # out/summary.json: {"dice": 0.9100000262260437, "hd95": null}
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydicom.dataset import Dataset

__all__ = [
    "atomic_path",
    "atomic_torch_save",
    "atomic_write_bytes",
    "atomic_write_text",
    "jsonable",
    "save_dataset_atomic",
    "save_figure",
    "write_json",
]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` when the block succeeds.

    For writers that take a file name (``fig.savefig``, ``torch.onnx.export``). The temporary
    name ends in ``.tmp``, so a writer that guesses the format from the suffix must be told the
    format (``fig.savefig(tmp, format="png")``).

    Args:
        path: the destination; its folder is created.

    Yields:
        The temporary path ``<folder>/.<name>.<pid>.tmp`` to write to.

    Raises:
        OSError: if the folder cannot be created or the rename fails. Whatever the block raises
            propagates; in every failing case the temporary file is removed and `path` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(data: bytes, path: str | os.PathLike) -> Path:
    """Write `data` to `path` atomically (see :func:`atomic_path`).

    Args:
        data: the file content.
        path: the destination; its folder is created, an existing file is replaced.

    Returns:
        `path` as a :class:`~pathlib.Path`.

    Raises:
        TypeError: if `data` is not bytes-like.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"`data` for {path} must be bytes, got {type(data).__name__}.")
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


def atomic_write_text(text: str, path: str | os.PathLike, encoding: str = "utf-8") -> Path:
    """Write `text` to `path` atomically, without newline translation.

    Args:
        text: the file content.
        path: the destination; its folder is created, an existing file is replaced.
        encoding: the text encoding.

    Returns:
        `path` as a :class:`~pathlib.Path`.

    Raises:
        TypeError: if `text` is not a string.
    """
    if not isinstance(text, str):
        raise TypeError(f"`text` for {path} must be a str, got {type(text).__name__}.")
    return atomic_write_bytes(text.encode(encoding), path)


def jsonable(value: Any) -> Any:
    """`value` as plain JSON values, recursively (the project's one JSON sanitiser).

    Mappings become dicts with ``str`` keys; lists and tuples become lists; numpy arrays become
    (nested) lists; numpy booleans, integers and floats become ``bool`` / ``int`` / ``float``;
    non-finite floats (NaN, ±inf, Python or numpy) become ``None``; :class:`~pathlib.Path`
    becomes ``str``; dataclass instances become dicts of their fields. Anything else (str, int,
    bool, None, ...) is returned as it is.

    Args:
        value: what to convert.

    Returns:
        A value that ``json.dumps(..., allow_nan=False)`` accepts when the leaves are of the
        types above.
    """
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(float(value)) else None
    if isinstance(value, Path):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable({f.name: getattr(value, f.name) for f in dataclasses.fields(value)})
    return value


def write_json(
    obj: Any,
    path: str | os.PathLike,
    indent: int | None = 1,
    trailing_newline: bool = False,
    sort_keys: bool = False,
) -> Path:
    """Write `obj` as strict JSON (through :func:`jsonable`: NaN → ``null``), atomically.

    Args:
        obj: what to write.
        path: the destination; its folder is created, an existing file is replaced.
        indent: ``json.dumps`` indent (``None``: one line).
        trailing_newline: end the file with ``"\\n"``.
        sort_keys: sort the keys of every object.

    Returns:
        `path` as a :class:`~pathlib.Path`.

    Raises:
        TypeError: if `obj` holds a value JSON cannot represent (the message names `path`).
    """
    try:
        text = json.dumps(jsonable(obj), indent=indent, sort_keys=sort_keys, allow_nan=False)
    except TypeError as err:
        raise TypeError(f"cannot write {path} as JSON: {err}") from err
    return atomic_write_text(text + "\n" if trailing_newline else text, path)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` `obj` to `path` atomically (see :func:`atomic_path`).

    Args:
        obj: what to save (a state dict, a checkpoint dict ...).
        path: the destination; its folder is created, an existing file is replaced.

    Returns:
        `path` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return path


def save_dataset_atomic(ds: Dataset, path: str | os.PathLike) -> Path:
    """Write a pydicom `ds` as a DICOM file (with its file meta) to `path`, atomically.

    Args:
        ds: the dataset (``ds.save_as(..., enforce_file_format=True)``).
        path: the destination; its folder is created, an existing file is replaced.

    Returns:
        `path` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    return path


def save_figure(fig: Any, path: str | os.PathLike) -> Path:
    """Write a matplotlib figure to `path` as a PNG, atomically (:func:`atomic_path`), and close it.

    Args:
        fig: the ``matplotlib.figure.Figure``.
        path: the PNG to write; its folder is created.

    Returns:
        `path` as a Path.
    """
    import matplotlib.pyplot as plt

    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    return path
