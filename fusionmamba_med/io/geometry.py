"""Voxel-to-world geometry conversions between MONAI/NIfTI (RAS) and ITK/DICOM/NRRD (LPS) conventions.

One home for the sign flip: RAS and LPS differ by negating the first two world axes, so the same 4x4 matrix
``diag(-1, -1, 1, 1)`` converts in both directions.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "LPS_RAS_FLIP",
    "lps_to_ras",
    "ras_to_lps",
    "ras_affine_to_lps_geometry",
    "lps_geometry_to_ras_affine",
    "is_orthogonal",
    "max_axis_cosine",
]

#: the matrix that flips the first two world axes: RAS <-> LPS (it is its own inverse).
LPS_RAS_FLIP = np.diag([-1.0, -1.0, 1.0, 1.0])


def lps_to_ras(affine) -> np.ndarray:
    """4x4 voxel -> LPS affine to voxel -> RAS (float64)."""
    return LPS_RAS_FLIP @ np.asarray(affine, dtype=np.float64).reshape(4, 4)


def ras_to_lps(affine) -> np.ndarray:
    """4x4 voxel -> RAS affine to voxel -> LPS (float64)."""
    return LPS_RAS_FLIP @ np.asarray(affine, dtype=np.float64).reshape(4, 4)


def ras_affine_to_lps_geometry(affine) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RAS 4x4 affine -> (spacing (3,), direction (3, 3) with unit columns, origin (3,)) in LPS (ITK/DICOM)."""
    a = ras_to_lps(affine)
    m = a[:3, :3]
    spacing = np.linalg.norm(m, axis=0)
    if np.any(spacing <= 0):
        raise ValueError(f"degenerate affine {a.tolist()}")
    return spacing, m / spacing, a[:3, 3].copy()


def lps_geometry_to_ras_affine(spacing, direction, origin) -> np.ndarray:
    """ITK geometry (spacing (3,), direction (9,) row-major or (3, 3), origin (3,)) -> RAS 4x4 affine (float64)."""
    d = np.asarray(direction, dtype=np.float64).reshape(3, 3)
    lps = np.eye(4)
    lps[:3, :3] = d * np.asarray(spacing, dtype=np.float64)[None, :]
    lps[:3, 3] = np.asarray(origin, dtype=np.float64)
    return lps_to_ras(lps)


def max_axis_cosine(affine) -> float:
    """The largest |cosine| between two voxel axes of a 4x4 affine: 0 without shear, 1 for a degenerate axis."""
    m = np.asarray(affine, dtype=np.float64).reshape(4, 4)[:3, :3]
    norms = np.linalg.norm(m, axis=0)
    if np.any(norms <= 0):
        return 1.0
    u = m / norms
    return float(np.max(np.abs(u.T @ u - np.eye(3))))


def is_orthogonal(affine, tol: float = 1e-4) -> bool:
    """True when the 3 voxel axes of a 4x4 affine are mutually perpendicular (no shear), to ``tol`` in cosine."""
    return max_axis_cosine(affine) <= tol
