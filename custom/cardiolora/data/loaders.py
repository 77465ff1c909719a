"""Index and load real cardiac short-axis data sets of any supported layout.

Two steps, kept apart so that a data list can be built (and split, and written as a MONAI bundle
datalist in JSON) without reading a single voxel:

1. **Indexing** scans a folder and returns one :class:`~cardiolora.data.records.CaseRecord` per
   labelled frame (ED and ES of each patient): :func:`index_dataset` detects the layout
   (:func:`detect_layout`) and calls the indexer of its format module.
2. **Loading** reads the voxels of a record into a :class:`~cardiolora.data.records.LoadedCase`:
   image ``float32`` ``(Z, Y, X)``, label ``uint8`` ``(Z, Y, X)`` in the project convention
   (0 background, 1 LV, 2 MYO, 3 RV; ACDC files are remapped), voxel spacing and the NIfTI affine
   (:func:`load_case`, :func:`load_many`).

Supported layouts, one module each (index, and for NIfTI layouts write, in one place):

* ``"acdc"`` -- the official ACDC download, :mod:`cardiolora.data.acdc`
  (``patientNNN/Info.cfg`` + ``patientNNN_frameXX[_gt].nii.gz``);
* ``"acdc_h5"`` -- the SSL4MIS / WSL4MIS HDF5 layout, :mod:`cardiolora.data.acdc_h5`
  (``patients.csv`` + ``patientNNN_frameXX.h5``; no voxel spacing);
* ``"mnms2"`` -- the M&Ms-2 download, :mod:`cardiolora.data.mnms2`
  (``dataset_information.csv`` + ``dataset/NNN/NNN_SA_ED[_gt].nii.gz``).

The records, :class:`~cardiolora.data.records.DataError` and the ``on_error`` = ``"raise"`` /
``"skip"`` behaviour shared by every indexer and :func:`load_many` are in
:mod:`cardiolora.data.records`; NIfTI reading is :mod:`cardiolora.data.nifti_io`.

Axes follow :mod:`cardiolora.data.cine`: arrays are ``(Z, Y, X)``; NIfTI stores ``(X, Y, Z)``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from cardiolora.data.acdc import index_acdc, is_acdc
from cardiolora.data.acdc_h5 import ACDC_H5_CSV, index_acdc_h5, is_acdc_h5, read_h5
from cardiolora.data.mnms2 import MNMS2_CSV, index_mnms2, is_mnms2
from cardiolora.data.nifti_io import read_nifti
from cardiolora.data.records import (
    ON_ERROR,
    CaseRecord,
    Collector,
    DataError,
    IndexResult,
    LoadedCase,
    LoadResult,
    check_root,
)
from cardiolora.labels import NUM_CLASSES, remap_labels

__all__ = ["detect_layout", "index_dataset", "load_case", "load_many"]

#: Label convention of each source, as a key of :data:`cardiolora.labels.SOURCE_TO_PROJECT`.
_LABEL_CONVENTION: dict[str, str] = {"acdc": "acdc", "acdc_h5": "acdc", "mnms2": "mnms", "nifti": "project"}

#: Geometry tolerance between an image and its label file (mm).
_GEOMETRY_ATOL_MM = 1e-3


# --------------------------------------------------------------------------------------------
# layout detection


def _looks_like(root: Path) -> list[str]:
    """Names of the layouts whose signature files are present in `root`."""
    checks = (("acdc", is_acdc), ("acdc_h5", is_acdc_h5), ("mnms2", is_mnms2))
    return [name for name, check in checks if check(root)]


def detect_layout(root: str | Path) -> str:
    """Tell which layout a data folder has.

    Args:
        root: the data folder.

    Returns:
        ``"acdc"`` (``patientNNN/Info.cfg``), ``"acdc_h5"`` (``patients.csv`` +
        ``patientNNN_frameXX.h5``) or ``"mnms2"`` (``dataset_information.csv`` + numbered subject
        folders, in `root` or ``root/dataset``).

    Raises:
        DataError: if `root` is not a folder, matches no layout (the message lists what the
            folder holds) or matches several.
    """
    root = check_root(root)
    found = _looks_like(root)
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        raise DataError(root, f"folder matches several layouts {found}; pass `layout` explicitly")
    entries = sorted(root.iterdir())
    dirs = [p.name for p in entries if p.is_dir()]
    files = [p.name for p in entries if p.is_file()]

    def _show(names: list[str]) -> str:
        return ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")

    raise DataError(
        root,
        f"cannot detect the data layout: found {len(dirs)} folder(s) [{_show(dirs)}] and {len(files)} "
        f"file(s) [{_show(files)}]; expected ACDC (patientNNN/Info.cfg), ACDC-HDF5 "
        f"({ACDC_H5_CSV} + patientNNN_frameXX.h5) or M&Ms-2 ({MNMS2_CSV} + dataset/NNN/NNN_SA_ED.nii.gz)",
    )


def index_dataset(root: str | Path, layout: str = "auto", on_error: str = "raise") -> IndexResult:
    """Index a data folder of any supported layout.

    Args:
        root: the data folder.
        layout: ``"auto"`` (detect with :func:`detect_layout`) or one of :data:`SOURCES`.
        on_error: ``"raise"`` or ``"skip"``, passed to the indexer.

    Returns:
        The :class:`IndexResult` of :func:`index_acdc`, :func:`index_acdc_h5` or :func:`index_mnms2`.

    Raises:
        ValueError: if `layout` or `on_error` is not an accepted value.
        DataError: if the layout cannot be detected, or from the indexer.
    """
    indexers = {"acdc": index_acdc, "acdc_h5": index_acdc_h5, "mnms2": index_mnms2}
    if layout not in ("auto", *indexers):
        raise ValueError(f"`layout` must be 'auto' or one of {tuple(indexers)}, got {layout!r}.")
    if on_error not in ON_ERROR:
        raise ValueError(f"`on_error` must be one of {ON_ERROR}, got {on_error!r}.")
    if layout == "auto":
        layout = detect_layout(root)
    return indexers[layout](root, on_error=on_error)


# --------------------------------------------------------------------------------------------
# loading voxels


def _to_project_labels(label: np.ndarray, source: str, path: str) -> np.ndarray:
    """Check the label values and map them onto the project convention.

    Raises:
        DataError: for a non-numeric dtype, non-integer values or values outside 0..3.
    """
    convention = _LABEL_CONVENTION[source]
    if label.dtype.kind not in "iubf":
        raise DataError(path, f"label array has dtype {label.dtype}, expected integers")
    values = np.unique(label)
    fractional = values[values != np.round(values)]
    bad = fractional if fractional.size else values[(values < 0) | (values >= NUM_CLASSES)]
    if bad.size:
        shown = f"{bad[:10].tolist()}{' ...' if bad.size > 10 else ''}"
        what = "are not integers" if fractional.size else "are out of range"
        raise DataError(
            path,
            f"label values {shown} {what}; expected integers 0..{NUM_CLASSES - 1} ({convention} convention); "
            f"values present: {values[:20].tolist()}",
        )
    return remap_labels(label, convention, name=path)


def load_case(record: CaseRecord, check: bool = True) -> LoadedCase:
    """Read the voxels of one record.

    Args:
        record: the record to load (from an indexer or :meth:`CaseRecord.from_dict`).
        check: run the consistency checks: image values finite, image and label of the same
            shape and (NIfTI) the same geometry (affines within 1e-3 mm, same ``pixdim``).
            Label values are always checked (remapping needs them in 0..3).

    Returns:
        A :class:`LoadedCase`: image ``float32`` ``(Z, Y, X)``, label ``uint8`` ``(Z, Y, X)`` in
        the project convention (ACDC's 1 RV / 3 LV swapped), `spacing_zyx` from the NIfTI
        header (``None`` for HDF5), the NIfTI affine (``None`` for HDF5).

    Raises:
        DataError: naming the file, if a file is missing, unreadable (corrupt, truncated, not
            HDF5), not 3D, lacks an ``image``/``label`` dataset, has non-finite image values,
            label values outside 0..3 (listed), or if image and label differ in shape (both
            shapes given) or geometry.

    Example:
        >>> case = load_case(index_acdc("../shared/data/acdc")[0])  # doctest: +SKIP
        >>> case.image.shape, case.spacing_zyx  # doctest: +SKIP
        ((10, 256, 216), (10.0, 1.5625, 1.5625))
    """
    if record.source == "acdc_h5":
        image = read_h5(record.image, "image")
        if image.ndim != 3:
            raise DataError(record.image, f"dataset 'image' must be 3D (Z, Y, X), got shape {image.shape}")
        spacing = None
        affine = None
    else:
        image_xyz, affine, zooms = read_nifti(record.image)
        image = image_xyz.transpose(2, 1, 0)
        spacing = (zooms[2], zooms[1], zooms[0])
    image = np.ascontiguousarray(image, dtype=np.float32)
    if check:
        n_bad = int(image.size - np.count_nonzero(np.isfinite(image)))
        if n_bad:
            raise DataError(record.image, f"{n_bad} non-finite image value(s) (NaN or inf)")
    if record.label is None:
        return LoadedCase(record=record, image=image, label=None, spacing_zyx=spacing, affine=affine)

    label_path = record.label
    if record.source == "acdc_h5":
        label_raw = read_h5(label_path, "label")
    else:
        label_xyz, label_affine, label_zooms = read_nifti(label_path)
        label_raw = label_xyz.transpose(2, 1, 0)
        if check and label_raw.shape == image.shape and affine is not None:
            diff = float(np.max(np.abs(label_affine - affine)))
            if diff > _GEOMETRY_ATOL_MM:
                raise DataError(
                    label_path,
                    f"label affine differs from the image affine of {record.image} by up to {diff:.4g} mm "
                    f"(tolerance {_GEOMETRY_ATOL_MM} mm): label {label_affine.round(4).tolist()}, "
                    f"image {affine.round(4).tolist()}",
                )
            zdiff = float(np.max(np.abs(np.subtract(label_zooms, zooms))))
            if zdiff > _GEOMETRY_ATOL_MM:
                raise DataError(
                    label_path,
                    f"label voxel size (pixdim x, y, z) {label_zooms} differs from the image's {zooms} "
                    f"of {record.image}",
                )
    if check and label_raw.shape != image.shape:
        raise DataError(
            label_path,
            f"label shape {tuple(label_raw.shape)} (Z, Y, X) differs from image shape {tuple(image.shape)} "
            f"of {record.image}",
        )
    label = np.ascontiguousarray(_to_project_labels(label_raw, record.source, label_path), dtype=np.uint8)
    return LoadedCase(record=record, image=image, label=label, spacing_zyx=spacing, affine=affine)


def load_many(records: Iterable[CaseRecord], on_error: str = "raise", check: bool = True) -> LoadResult:
    """Load several records, stopping at the first bad one or skipping the bad ones.

    Args:
        records: the records to load, in order.
        on_error: ``"raise"`` to re-raise the first :class:`DataError`; ``"skip"`` to leave the
            case out, record a :class:`Problem` and go on.
        check: passed to :func:`load_case`.

    Returns:
        A :class:`LoadResult`: the loaded cases in input order, with ``problems`` for the skipped.

    Raises:
        DataError: with ``on_error="raise"``, the first error of :func:`load_case`.
        ValueError: if `on_error` is not ``"raise"`` or ``"skip"``.
    """
    collector = Collector(on_error)
    cases: list[LoadedCase] = []
    for record in records:
        try:
            cases.append(load_case(record, check=check))
        except DataError as err:
            collector.report(err.path, err.reason, record.case_id)
    return LoadResult(cases, collector.problems)
