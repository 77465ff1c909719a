"""MONAI datasets of 2D short-axis slices expanded from 3D stacks of any supported layout.

The bundle's ``train#dataset`` / ``validate#dataset`` are `CardiacSliceDataset` objects built
from a datalist (``datalist.json`` in the site's ``dataset_dir``: ``{"train": [...], "val": [...],
"test": [...]}``, each entry a `CaseRecord` dict with ``image`` and ``label`` paths), or from the
plain ``{"image": path, "label": path}`` items that MONAI Label's ``BundleTrainTask`` writes into
``train#dataset#data`` / ``validate#dataset#data`` (:func:`case_record` fills in the rest; the
labels' convention is the bundle's ``label_convention``, the project's by default).

Slices are given in the NIfTI in-plane order ``(X, Y)`` — the order ``monai.transforms.LoadImage``
gives for a NIfTI stack — so a model trained on these slices segments NIfTI/DICOM stacks in the
inference bundle without any transposition. Intensities are normalised per volume (percentiles of
the profile) before slicing, as the inference bundle does on the whole stack.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from monai.data import CacheDataset, MetaTensor
from monai.transforms import ScaleIntensityRangePercentiles

from cardiolora.atomic import write_json
from cardiolora.data.loaders import load_case
from cardiolora.data.records import CaseRecord

__all__ = [
    "LABEL_CONVENTIONS",
    "case_record",
    "CardiacSliceDataset",
    "expand_slices",
    "percentile_scaling",
    "load_datalist",
    "write_datalist",
    "DATALIST_NAME",
]

DATALIST_NAME = "datalist.json"

#: Label conventions of plain ``{"image", "label"}`` items → the `CaseRecord` source that reads them
#: (keys of :data:`cardiolora.labels.SOURCE_TO_PROJECT`): ``"project"`` / ``"mnms"`` 0 bg, 1 LV,
#: 2 MYO, 3 RV; ``"acdc"`` 1 RV, 2 MYO, 3 LV (remapped on loading).
LABEL_CONVENTIONS: dict[str, str] = {"project": "nifti", "mnms": "nifti", "acdc": "acdc"}

_IMAGE_SUFFIXES = (".nii.gz", ".nii", ".h5")


def _case_name(path: str) -> str:
    """The file name of `path` without its image suffix (``.nii.gz``, ``.nii``, ``.h5``)."""
    name = os.path.basename(path)
    for suffix in _IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def case_record(entry: CaseRecord | Mapping, label_convention: str = "project") -> CaseRecord:
    """Turn a datalist entry into a `CaseRecord`: a full record dict, or a plain item.

    A full record (an entry with ``case_id`` or ``source``) is read as it is and keeps its own
    source's label convention. A plain ``{"image": path, "label": path}`` item (MONAI Label's
    datastore items) gets ``case_id`` = ``patient_id`` = the image file name without suffix,
    ``phase`` ``None`` (unknown), and the source that reads `label_convention`:
    ``"project"``/``"mnms"`` → ``"nifti"``, ``"acdc"`` → ``"acdc"``; an HDF5 image (``.h5``) is the
    ``"acdc_h5"`` layout, which holds ACDC labels. Any other keys of a plain item go to ``meta``.

    Args:
        entry: a `CaseRecord`, its dict form, or a plain item.
        label_convention: convention of a plain item's label file, one of :data:`LABEL_CONVENTIONS`.

    Returns:
        The record.

    Raises:
        ValueError: if `label_convention` is unknown, the item has no ``image`` path, or an HDF5
            item is given a convention other than ``"acdc"``; from `CaseRecord.from_dict` for a bad
            full record.

    Example:
        >>> case_record({"image": "/d/case7.nii.gz", "label": "/d/labels/case7.nii.gz"}).case_id
        'case7'
    """
    if label_convention not in LABEL_CONVENTIONS:
        raise ValueError(f"`label_convention` must be one of {sorted(LABEL_CONVENTIONS)}, got {label_convention!r}.")
    if isinstance(entry, CaseRecord):
        return entry
    data = dict(entry)
    if "case_id" in data or "source" in data:
        return CaseRecord.from_dict(data)
    image = data.pop("image", None)
    if not isinstance(image, str) or not image:
        raise ValueError(
            f"datalist item {entry!r} has no `image` path; a plain item is {{'image': path, 'label': path}}."
        )
    label = data.pop("label", None)
    source = LABEL_CONVENTIONS[label_convention]
    if image.lower().endswith(".h5"):
        if label_convention != "acdc":
            raise ValueError(
                f"{image}: HDF5 items are the ACDC-HDF5 layout (ACDC labels); `label_convention` must be 'acdc', "
                f"got {label_convention!r}."
            )
        source = "acdc_h5"
    name = _case_name(image)
    return CaseRecord(name, name, None, image, label, source, meta=data)


def _slice_affine(spacing_x: float, spacing_y: float) -> torch.Tensor:
    """4×4 affine of a 2D slice in (X, Y) order with the given spacings (mm)."""
    return torch.diag(torch.tensor([spacing_x, spacing_y, 1.0, 1.0], dtype=torch.float64))


def percentile_scaling(lower: float = 1.0, upper: float = 99.0) -> ScaleIntensityRangePercentiles:
    """The default volume normalisation: the volume's `lower`/`upper` percentiles → 0/1, clipped.

    The bundle writes it in its configs (``volume_normalisation``); this default serves callers
    outside a bundle workflow.
    """
    return ScaleIntensityRangePercentiles(lower=lower, upper=upper, b_min=0.0, b_max=1.0, clip=True)


def expand_slices(
    record: CaseRecord | Mapping,
    volume_transform: Callable | None = None,
    default_spacing: float | None = None,
    label_convention: str = "project",
) -> list[dict]:
    """Load one case and cut it into 2D slice items ready for MONAI dictionary transforms.

    Each item holds ``image`` (float32 MetaTensor ``(1, X, Y)``, the volume after
    `volume_transform`), ``label`` (``(1, X, Y)``, project label
    convention), with an affine carrying the in-plane spacing so ``Spacingd`` can resample it, plus
    ``case_id``, ``patient_id`` and ``slice_index``.

    Args:
        record: a `CaseRecord`, its dict form, or a plain ``{"image", "label"}`` item (see
            `case_record`).
        volume_transform: array transform of the whole ``(1, Z, Y, X)`` volume before it is cut
            into slices (the bundle's ``volume_normalisation``); default `percentile_scaling`.
        default_spacing: in-plane spacing (mm) to assume when neither the file nor the record's
            ``meta["in_plane_spacing_mm"]`` gives one (the ACDC HDF5 layout has no spacing).
        label_convention: label convention of a plain item (see `case_record`).

    Returns:
        A list with one dict per slice, basal first.

    Raises:
        cardiolora.data.records.DataError: if the case cannot be loaded (the message names the file).
        ValueError: if the record has no label file, or no spacing is known for it; from `case_record`.
    """
    rec = case_record(record, label_convention)
    if rec.label is None:
        raise ValueError(f"{rec.image}: the case {rec.case_id} has no label file; training needs one.")
    case = load_case(rec)
    norm = volume_transform if volume_transform is not None else percentile_scaling()
    vol = np.asarray(norm(case.image[None]))[0].astype(np.float32)  # (Z, Y, X)
    if case.spacing_zyx is not None:
        sy, sx = float(case.spacing_zyx[1]), float(case.spacing_zyx[2])
    elif rec.meta.get("in_plane_spacing_mm") or default_spacing:
        sy = sx = float(rec.meta.get("in_plane_spacing_mm") or default_spacing)
    else:
        raise ValueError(
            f"{rec.image}: the file holds no voxel spacing; set `in_plane_spacing_mm` in the datalist "
            "entry's meta or pass `default_spacing`."
        )
    affine = _slice_affine(sx, sy)
    items = []
    for z in range(vol.shape[0]):
        img = np.ascontiguousarray(vol[z].T)[None]  # (1, X, Y)
        lab = np.ascontiguousarray(case.label[z].T)[None].astype(np.int64)
        items.append(
            {
                "image": MetaTensor(torch.from_numpy(img), affine=affine.clone()),
                "label": MetaTensor(torch.from_numpy(lab).to(torch.uint8), affine=affine.clone()),
                "case_id": rec.case_id,
                "patient_id": rec.patient_id,
                "slice_index": z,
            }
        )
    return items


class CardiacSliceDataset(CacheDataset):
    """A cached dataset of 2D slices from a datalist of 3D cases (any supported layout).

    Deterministic transforms are cached once (MONAI ``CacheDataset``); random augmentation runs
    on every access.

    Args:
        data: datalist entries: `CaseRecord` dicts, or plain ``{"image": path, "label": path}``
            items (MONAI Label's; see `case_record`).
        transform: slice-level MONAI transform (e.g. the bundle's ``train#preprocessing``).
        volume_transform: whole-volume transform before slicing (see `expand_slices`).
        default_spacing: in-plane spacing to assume for sources without one (see `expand_slices`).
        cache_rate: fraction of slices to cache.
        num_workers: workers for caching.
        progress: show a progress bar while caching.
        label_convention: label convention of plain items, one of :data:`LABEL_CONVENTIONS`
            (the bundle's ``label_convention``; full records keep their source's).

    Raises:
        ValueError: if `data` is empty or `label_convention` unknown.
        cardiolora.data.records.DataError: if a case cannot be loaded (names the file).
    """

    def __init__(
        self,
        data: Sequence[Mapping],
        transform: Callable | None = None,
        volume_transform: Callable | None = None,
        default_spacing: float | None = None,
        cache_rate: float = 1.0,
        num_workers: int | None = 0,
        progress: bool = False,
        label_convention: str = "project",
    ) -> None:
        if label_convention not in LABEL_CONVENTIONS:
            raise ValueError(
                f"`label_convention` must be one of {sorted(LABEL_CONVENTIONS)}, got {label_convention!r}."
            )
        if len(data) == 0:
            raise ValueError(
                "`data` is empty: the datalist split holds no case (under MONAI Label: a `val_split` that "
                "leaves no validation case)."
            )
        slices: list[dict] = []
        for entry in data:
            slices.extend(expand_slices(entry, volume_transform, default_spacing, label_convention))
        self.cases = [dict(entry) for entry in data]
        super().__init__(
            data=slices, transform=transform, cache_rate=cache_rate, num_workers=num_workers, progress=progress
        )


def load_datalist(dataset_dir: str | os.PathLike, key: str, filename: str = DATALIST_NAME) -> list[dict]:
    """Read one split of a site's datalist, resolving relative paths against `dataset_dir`.

    Args:
        dataset_dir: the site's data folder holding ``datalist.json``.
        key: split name (``"train"``, ``"val"`` or ``"test"``).
        filename: datalist file name inside `dataset_dir`.

    Returns:
        The list of entries with absolute ``image`` / ``label`` paths.

    Raises:
        FileNotFoundError: if the datalist file does not exist (the message names it).
        ValueError: if the file is not valid JSON, lacks `key`, or an entry lacks ``image``.
    """
    path = Path(dataset_dir) / filename
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no datalist here; create it with `cardiolora datalist --source ... --out {path}`."
        )
    try:
        content = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err}).") from err
    if key not in content:
        raise ValueError(f"{path}: no split `{key}` (found {sorted(content)}).")
    out = []
    for i, entry in enumerate(content[key]):
        if "image" not in entry:
            raise ValueError(f"{path}: entry {i} of `{key}` has no `image` field.")
        e = dict(entry)
        for field in ("image", "label"):
            if e.get(field) and not os.path.isabs(e[field]):
                e[field] = str((Path(dataset_dir) / e[field]).resolve())
        out.append(e)
    return out


def write_datalist(
    splits: Mapping[str, Sequence[CaseRecord | Mapping]], path: str | os.PathLike, meta: Mapping | None = None
) -> Path:
    """Write a datalist (``{"train": [...], "val": [...], "test": [...]}``) atomically.

    Args:
        splits: split name → records.
        path: the file to write (its folder is created).
        meta: extra information stored under ``"meta"`` (source, seed, ratios ...).

    Returns:
        The path written.
    """
    content: dict = {k: [r.to_dict() if isinstance(r, CaseRecord) else dict(r) for r in v] for k, v in splits.items()}
    if meta:
        content["meta"] = dict(meta)
    return write_json(content, path)
