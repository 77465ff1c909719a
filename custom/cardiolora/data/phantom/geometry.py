"""Geometry of the phantom: patient (LPS) orientation and affine, the scene grid, ellipses.

The scene is the image plane in mm (x right, y down), turned by the subject's in-plane rotation;
:func:`sax_orientation` and :func:`_affine` place the stack in DICOM's LPS frame (slice normal from
base to apex, ``row × col = normal``), as :mod:`cardiolora.data.cine` states.
"""

from __future__ import annotations

import math

import numpy as np

from cardiolora.data.phantom.anatomy import _Subject

__all__ = ["ellipse_mask", "sax_orientation"]


def ellipse_mask(
    x: np.ndarray,
    y: np.ndarray,
    centre: tuple[float, float],
    semi_axes: tuple[float, float],
    angle: float = 0.0,
) -> np.ndarray:
    """Points strictly inside an ellipse: ``(x'/a)^2 + (y'/b)^2 < 1`` in the ellipse's frame.

    Args:
        x: x coordinates (any shape).
        y: y coordinates, broadcastable with `x`.
        centre: ``(cx, cy)``.
        semi_axes: ``(a, b)`` along the ellipse's own x and y axes, both > 0.
        angle: rotation of the ellipse's x axis from the x axis (radians, towards +y).

    Returns:
        Boolean array of the broadcast shape.

    Raises:
        ValueError: if a semi-axis is not positive.
    """
    a, b = semi_axes
    if not (a > 0 and b > 0):
        raise ValueError(f"`semi_axes` must be positive, got {semi_axes}.")
    dx = x - centre[0]
    dy = y - centre[1]
    if angle:
        c, s = math.cos(angle), math.sin(angle)
        dx, dy = c * dx + s * dy, -s * dx + c * dy
    return (dx / a) ** 2 + (dy / b) ** 2 < 1.0


def sax_orientation(
    azimuth_deg: float, elevation_deg: float, inplane_deg: float = 0.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Direction cosines of a double-oblique short-axis plane in DICOM's LPS frame.

    The slice normal (base to apex) is ``n = (cos(el) cos(az), -cos(el) sin(az), sin(el))``:
    ``az`` turns from patient left towards anterior, ``el < 0`` tilts inferiorly. The column
    direction (image down) is posterior projected onto the plane, ``row = col × n`` (so that
    ``row × col = n``), and both are then turned by `inplane_deg` about ``n``.

    Args:
        azimuth_deg: azimuth of the long axis (typically 30-60°).
        elevation_deg: elevation of the long axis (typically -45 to -20°).
        inplane_deg: in-plane rotation of the image axes.

    Returns:
        ``(row_cos, col_cos, normal)``: orthonormal unit 3-vectors with ``row × col = normal``.

    Raises:
        ValueError: if the normal is (almost) parallel to the posterior axis.
    """
    az, el, rho = (math.radians(v) for v in (azimuth_deg, elevation_deg, inplane_deg))
    n = np.array([math.cos(el) * math.cos(az), -math.cos(el) * math.sin(az), math.sin(el)])
    posterior = np.array([0.0, 1.0, 0.0])
    col_c = posterior - np.dot(posterior, n) * n
    norm = np.linalg.norm(col_c)
    if norm < 1e-3:
        raise ValueError("`azimuth_deg`/`elevation_deg` give a normal parallel to the posterior axis.")
    col_c /= norm
    row_c = np.cross(col_c, n)
    row = math.cos(rho) * row_c - math.sin(rho) * col_c
    col = math.sin(rho) * row_c + math.cos(rho) * col_c
    return row, col, np.cross(row, col)


def _scene_grid(ny: int, nx: int, pixel: float, factor: int, rotation: float) -> tuple[np.ndarray, np.ndarray]:
    """Scene coordinates (mm, x right, y down, rotated by `rotation`) of a supersampled grid."""
    offs = (np.arange(factor, dtype=np.float32) + 0.5) / factor - 0.5
    cols = ((np.arange(nx, dtype=np.float32)[:, None] + offs[None, :]).ravel() - (nx - 1) / 2) * pixel
    rows = ((np.arange(ny, dtype=np.float32)[:, None] + offs[None, :]).ravel() - (ny - 1) / 2) * pixel
    x, y = np.meshgrid(cols, rows)
    c, s = np.float32(math.cos(rotation)), np.float32(math.sin(rotation))
    return c * x + s * y, -s * x + c * y


def _scene_to_index(subj: _Subject, point: tuple[float, float]) -> tuple[float, float]:
    """Native (row, column) index of a scene point."""
    c, s = math.cos(subj.rotation), math.sin(subj.rotation)
    x = c * point[0] - s * point[1]
    y = s * point[0] + c * point[1]
    ny, nx = subj.matrix
    return y / subj.pixel + (ny - 1) / 2, x / subj.pixel + (nx - 1) / 2


def _affine(subj: _Subject) -> np.ndarray:
    """Voxel ``(x, y, z)`` to LPS affine of the stack (cine convention)."""
    row, col, normal = sax_orientation(subj.azimuth, subj.elevation, math.degrees(subj.rotation))
    ny, nx = subj.matrix
    p = subj.pixel
    origin = subj.origin_centre - row * (nx - 1) / 2 * p - col * (ny - 1) / 2 * p
    aff = np.eye(4)
    aff[:3, 0] = row * p
    aff[:3, 1] = col * p
    aff[:3, 2] = normal * subj.spacing
    aff[:3, 3] = origin
    return aff
