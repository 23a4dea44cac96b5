"""Small synthetic volumes for the transform tests: a smooth, asymmetric head-like phantom sampled on any grid."""

from __future__ import annotations

import numpy as np
import torch
from monai.data import MetaTensor

_LPS = np.diag([-1.0, -1.0, 1.0])

# (centre LPS mm, semi-axes mm, added value): skull shell, brain, ventricles, an "eye", a lesion.
_ELLIPSOIDS = [
    ((0.0, 0.0, 0.0), (38.0, 46.0, 40.0), 1.0),
    ((0.0, 1.0, 2.0), (33.0, 41.0, 35.0), -0.45),
    ((-7.0, 4.0, 6.0), (4.0, 14.0, 7.0), -0.35),
    ((6.0, 6.0, 4.0), (5.0, 11.0, 6.0), -0.3),
    ((14.0, -38.0, -12.0), (7.0, 6.0, 6.0), 0.6),
    ((-15.0, 12.0, 18.0), (6.0, 5.0, 8.0), 0.4),
]


def phantom_lps(points: np.ndarray) -> np.ndarray:
    """Phantom value at LPS points (N, 3): sum of ellipsoids with ~2 mm smooth edges."""
    v = np.zeros(len(points))
    for i, (centre, axes, value) in enumerate(_ELLIPSOIDS):
        r = np.sqrt((((points - np.asarray(centre)) / np.asarray(axes)) ** 2).sum(axis=1))
        inside = 1.0 / (1.0 + np.exp(-(1.0 - r) * min(axes) / 1.0))
        v += value * inside
        if i == 1:  # "gyri": a smooth texture inside the brain, so that every region carries some structure
            x, y, z = points.T
            v += 0.12 * inside * np.sin(x / 4.0 + 0.3) * np.sin(y / 5.0) * np.cos(z / 4.5 - 0.2)
    return v


def grid_points_lps(affine: np.ndarray, shape) -> np.ndarray:
    """LPS physical points (N, 3) of all voxel centres of a grid with a RAS affine, in C order of ``shape``."""
    idx = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), axis=-1).reshape(-1, 3)
    ras = idx @ affine[:3, :3].T + affine[:3, 3]
    return ras @ _LPS.T


def ras_affine(spacing, origin, rotation: np.ndarray | None = None) -> np.ndarray:
    """A RAS affine with the given spacing, origin (RAS mm) and optional 3x3 rotation of the axes."""
    a = np.eye(4)
    rot = np.eye(3) if rotation is None else rotation
    a[:3, :3] = rot @ np.diag(spacing)
    a[:3, 3] = origin
    return a


def sample(affine: np.ndarray, shape, value_fn=lambda v: v, point_map=None, source_path: str | None = None
           ) -> MetaTensor:
    """MetaTensor (1, *shape) float32 of ``value_fn(phantom(point_map(p)))`` at the grid's voxel centres p (LPS)."""
    pts = grid_points_lps(affine, shape)
    if point_map is not None:
        pts = point_map(pts)
    arr = value_fn(phantom_lps(pts)).reshape(shape).astype(np.float32)
    meta = {"affine": torch.as_tensor(affine, dtype=torch.float64)}
    if source_path:
        meta["source_path"] = source_path
    return MetaTensor(torch.from_numpy(arr)[None], meta=meta)


def rotation_matrix(angles_deg) -> np.ndarray:
    """Rotation about x, then y, then z (degrees)."""
    ax, ay, az = np.radians(angles_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx
