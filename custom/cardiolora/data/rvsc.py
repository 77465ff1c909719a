"""Reading the RVSC 2012 layout (MICCAI 2012 Right Ventricle Segmentation Challenge).

One patient folder of the challenge as it was published (e.g. ``patient09``)::

    patientNN/PNNdicom/PNN-MMMM.dcm                            one 2D cine image per file
    patientNN/PNNcontours-manual/PNN-MMMM-icontour-manual.txt  RV endocardium of image MMMM
    patientNN/PNNcontours-manual/PNN-MMMM-ocontour-manual.txt  RV epicardium of image MMMM
    patientNN/PNNlist.txt                                      the contour files (Windows paths)
    patientNN/*.mask                                           text masks (not read, see below)

``MMMM`` is a 4-digit image number: the files run through the phases of one slice position, then
the next position (on patient09: 0000-0019 one position, 20 phases; 0020-0021 a second, 0022-0023
a third). Manual contours exist only for some images (end-diastole and end-systole); a contour file
is paired with the DICOM file of the same number.

A contour file holds one ``x y`` point per line in pixel coordinates of its image: ``x`` is the
column, ``y`` the row, 0-based, a pixel's centre at integer coordinates (plotted over
``pixel_array`` the points outline the RV). The RV cavity is the inside of the i-contour; the RV
free wall and the septum's RV side lie between the i- and the o-contour. Only the RV is outlined,
so there is no LV truth. The ``*.mask`` files of the published folders are not aligned with the
images and are ignored.

Images are read as ``pixel_array`` in ``(row, column)`` order (times ``RescaleSlope`` plus
``RescaleIntercept`` when present), the orientation in which the site application reads DICOM:
row is the project's Y axis, column its X axis.

Example:
    >>> cases = rvsc_cases("../shared/data/rvsc_dicom/patient09")  # doctest: +SKIP
    >>> [c.case_id for c in cases]  # doctest: +SKIP
    ['P09-0020', 'P09-0022', 'P09-0023']
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from skimage.draw import polygon2mask

from cardiolora.data.records import DataError

__all__ = ["RvscCase", "read_contour", "contour_mask", "find_layout", "rvsc_cases", "MIN_CONTOUR_POINTS"]

#: A contour needs at least this many points to enclose an area.
MIN_CONTOUR_POINTS = 3

_ICONTOUR_RE = re.compile(r"^(P\d+)-(\d{4})-icontour-manual\.txt$")


@dataclass(frozen=True)
class RvscCase:
    """One contoured RVSC image with its masks.

    Attributes:
        case_id: ``PNN-MMMM`` (patient prefix and image number).
        number: the 4-digit image number as an integer.
        dicom_path: the image's DICOM file.
        icontour_path: its RV endocardium contour file.
        ocontour_path: its RV epicardium contour file, or None when there is none.
        image: float32 ``(rows, columns)`` intensities (rescaled when the header says so).
        pixel_spacing: ``(row, column)`` spacing in mm (DICOM ``PixelSpacing``).
        slice_thickness: ``SliceThickness`` in mm, or None when absent.
        trigger_time: ``TriggerTime`` in ms after the R wave, or None when absent.
        slice_location: ``SliceLocation`` in mm, or None when absent.
        rv_mask: bool ``(rows, columns)``, the RV cavity (inside the i-contour).
        wall_mask: bool ``(rows, columns)``, inside the o-contour and outside the i-contour (the RV
            wall and the septum's RV side), or None without an o-contour.
    """

    case_id: str
    number: int
    dicom_path: Path
    icontour_path: Path
    ocontour_path: Path | None
    image: np.ndarray
    pixel_spacing: tuple[float, float]
    slice_thickness: float | None
    trigger_time: float | None
    slice_location: float | None
    rv_mask: np.ndarray
    wall_mask: np.ndarray | None


def read_contour(path: str | os.PathLike) -> np.ndarray:
    """Read an RVSC contour file: one ``x y`` point per line (pixels; x column, y row).

    Blank lines are skipped.

    Args:
        path: the ``*-icontour-manual.txt`` or ``*-ocontour-manual.txt`` file.

    Returns:
        float64 array ``(N, 2)`` of ``(x, y)`` points, N >= ``MIN_CONTOUR_POINTS``.

    Raises:
        DataError: naming the file, if it is missing or unreadable, holds no point, a line is not
            two finite numbers (the line number is named), or it has fewer than
            ``MIN_CONTOUR_POINTS`` points.

    Example:
        >>> read_contour("P09-0020-icontour-manual.txt")[:1]  # doctest: +SKIP
        array([[104.35741 ,  57.984971]])
    """
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(path, f"cannot read the contour file ({type(exc).__name__}: {exc})") from exc
    points = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        points.append(_parse_point(path, lineno, line))
    if not points:
        raise DataError(path, "the contour file holds no point (expected one 'x y' pair per line)")
    if len(points) < MIN_CONTOUR_POINTS:
        raise DataError(
            path, f"a contour needs at least {MIN_CONTOUR_POINTS} points to enclose an area, got {len(points)}"
        )
    return np.asarray(points, dtype=np.float64)


def _parse_point(path: Path, lineno: int, line: str) -> tuple[float, float]:
    """One ``x y`` line as two finite floats.

    Raises:
        DataError: naming the file and the line if it is not two finite numbers.
    """
    tokens = line.split()
    try:
        values = [float(t) for t in tokens]
    except ValueError:
        values = []
    if len(tokens) != 2 or len(values) != 2 or not all(math.isfinite(v) for v in values):
        raise DataError(path, f"line {lineno} is not two finite numbers 'x y': {line.strip()!r}")
    return values[0], values[1]


def contour_mask(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Pixels of a ``(rows, columns)`` image whose centre lies inside (or on) a closed contour.

    Pixel ``(r, c)`` has its centre at ``x = c``, ``y = r``; the contour is closed from its last
    point to its first. Filling is `skimage.draw.polygon2mask` on the ``(y, x)`` vertices.

    Args:
        points: ``(N, 2)`` finite ``(x, y)`` points, N >= ``MIN_CONTOUR_POINTS`` (`read_contour`).
        shape: ``(rows, columns)`` of the image, two positive integers.

    Returns:
        bool array of `shape`.

    Raises:
        ValueError: if `points` is not ``(N, 2)`` finite with N >= 3, or `shape` is not two
            positive integers.

    Example:
        >>> square = np.array([[1.5, 1.5], [4.5, 1.5], [4.5, 4.5], [1.5, 4.5]])  # x, y
        >>> int(contour_mask(square, (8, 8)).sum())
        9
    """
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2 or pts.shape[0] < MIN_CONTOUR_POINTS:
        raise ValueError(f"`points` must be (N, 2) (x, y) with N >= {MIN_CONTOUR_POINTS}, got shape {pts.shape}.")
    if not np.all(np.isfinite(pts)):
        raise ValueError("`points` holds non-finite values.")
    if (
        len(shape) != 2
        or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in shape)
        or min(shape) < 1
    ):
        raise ValueError(f"`shape` must be two positive integers (rows, columns), got {shape!r}.")
    return polygon2mask((int(shape[0]), int(shape[1])), pts[:, ::-1])


def find_layout(patient_dir: str | os.PathLike) -> tuple[Path, Path]:
    """The DICOM folder (``*dicom``) and the contour folder (``*contours-manual``) of a patient.

    Args:
        patient_dir: an RVSC patient folder (e.g. ``.../patient09``).

    Returns:
        ``(dicom_dir, contour_dir)``.

    Raises:
        DataError: naming the folder, if it is not a folder or has not exactly one of each.
    """
    root = Path(patient_dir)
    if not root.is_dir():
        raise DataError(root, "not a folder (expected an RVSC patient folder such as patient09)")
    found = []
    for suffix in ("dicom", "contours-manual"):
        dirs = sorted(p for p in root.iterdir() if p.is_dir() and p.name.lower().endswith(suffix))
        if len(dirs) != 1:
            names = [p.name for p in dirs] or "none"
            raise DataError(root, f"expected one sub-folder named '<PNN>{suffix}', found {names}")
        found.append(dirs[0])
    return found[0], found[1]


def _read_dicom(path: Path) -> tuple[np.ndarray, dict]:
    """Pixels ``(rows, columns)`` as float32 and the header values of one RVSC image.

    Raises:
        DataError: naming the file, if it is unreadable, not one 2D grey image, or lacks a
            positive two-value ``PixelSpacing``.
    """
    try:
        ds = pydicom.dcmread(path)
        pixels = np.asarray(ds.pixel_array, dtype=np.float32)
    except Exception as exc:  # noqa: BLE001 - pydicom and its decoders raise many types
        raise DataError(path, f"unreadable DICOM image ({type(exc).__name__}: {exc})") from exc
    if pixels.ndim != 2:
        raise DataError(path, f"expected one 2D grey image, pixel data has shape {pixels.shape}")
    spacing = [float(v) for v in (ds.get("PixelSpacing") or [])]
    if len(spacing) != 2 or min(spacing) <= 0:
        raise DataError(path, f"PixelSpacing must be two positive values, got {spacing or 'none'}")
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    if slope is not None or intercept is not None:
        pixels = pixels * float(slope if slope is not None else 1.0) + float(intercept or 0.0)
    info = {
        "pixel_spacing": (spacing[0], spacing[1]),
        "slice_thickness": _optional_float(ds.get("SliceThickness")),
        "trigger_time": _optional_float(ds.get("TriggerTime")),
        "slice_location": _optional_float(ds.get("SliceLocation")),
    }
    return pixels, info


def _optional_float(value: object) -> float | None:
    """A header value as float, None when absent or empty."""
    if value is None or value == "":
        return None
    return float(value)


def _checked_mask(points: np.ndarray, shape: tuple[int, int], path: Path, dicom_path: Path) -> np.ndarray:
    """`contour_mask` of a contour after checking that its points lie on the image.

    Raises:
        DataError: naming the contour file, if a point lies off the image (beyond half a pixel)
            or the contour encloses no pixel centre.
    """
    rows, cols = shape
    x, y = points[:, 0], points[:, 1]
    if x.min() < -0.5 or y.min() < -0.5 or x.max() > cols - 0.5 or y.max() > rows - 0.5:
        raise DataError(
            path,
            f"contour points span x {x.min():.1f}..{x.max():.1f}, y {y.min():.1f}..{y.max():.1f}, outside "
            f"the {rows} x {cols} (rows x columns) image of {dicom_path.name}",
        )
    mask = contour_mask(points, shape)
    if not mask.any():
        raise DataError(path, "the contour encloses no pixel centre")
    return mask


def rvsc_cases(patient_dir: str | os.PathLike) -> list[RvscCase]:
    """Every image of an RVSC patient folder that has a manual i-contour, with its masks.

    Each ``PNN-MMMM-icontour-manual.txt`` is paired with ``PNN-MMMM.dcm`` (same 4-digit number)
    and, when present, ``PNN-MMMM-ocontour-manual.txt``.

    Args:
        patient_dir: an RVSC patient folder (see the module docstring).

    Returns:
        `RvscCase` records sorted by image number.

    Raises:
        DataError: naming the file or folder, if the layout is not found (`find_layout`), there is
            no i-contour file, the DICOM file of a contour is missing or unreadable, a contour
            cannot be read (`read_contour`) or lies off its image.
    """
    dicom_dir, contour_dir = find_layout(patient_dir)
    icontours = sorted(p for p in contour_dir.iterdir() if _ICONTOUR_RE.match(p.name))
    if not icontours:
        raise DataError(contour_dir, "holds no '<PNN>-<MMMM>-icontour-manual.txt' file")
    cases = []
    for ipath in icontours:
        prefix, digits = _ICONTOUR_RE.match(ipath.name).groups()
        dicom_path = dicom_dir / f"{prefix}-{digits}.dcm"
        if not dicom_path.is_file():
            raise DataError(dicom_path, f"missing: the DICOM image of contour {ipath.name} is not in {dicom_dir}")
        image, info = _read_dicom(dicom_path)
        rv_mask = _checked_mask(read_contour(ipath), image.shape, ipath, dicom_path)
        opath = contour_dir / ipath.name.replace("-icontour-", "-ocontour-")
        wall = None
        if opath.is_file():
            wall = _checked_mask(read_contour(opath), image.shape, opath, dicom_path) & ~rv_mask
        else:
            opath = None
        cases.append(
            RvscCase(
                case_id=f"{prefix}-{digits}",
                number=int(digits),
                dicom_path=dicom_path,
                icontour_path=ipath,
                ocontour_path=opath,
                image=image,
                rv_mask=rv_mask,
                wall_mask=wall,
                **info,
            )
        )
    return cases
