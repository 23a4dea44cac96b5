"""Exact conversion between MONAI ``MetaTensor`` volumes (RAS affine) and SimpleITK images (LPS geometry).

A ``MetaTensor`` (C, X, Y, Z) maps voxel index ``(i, j, k)`` to RAS millimetres through its 4x4 affine. A
SimpleITK image maps the same index to LPS millimetres through ``origin + direction @ diag(spacing) @ index`` and
stores its array as (Z, Y, X). The two describe the same physical grid when
``diag(-1, -1, 1, 1) @ affine == [[direction @ diag(spacing), origin], [0, 0, 0, 1]]``; this module converts one
into the other without resampling, for any affine with a non-degenerate 3x3 part (oblique, flipped, left-handed).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import SimpleITK as sitk
import torch
from monai.data import MetaTensor

from fusionmamba_med.io.geometry import lps_geometry_to_ras_affine, ras_affine_to_lps_geometry

__all__ = ["metatensor_to_sitk", "sitk_to_metatensor", "lps_geometry_to_ras_affine"]

def _affine_np(aff: Any) -> np.ndarray:
    """A 4x4 float64 numpy affine from a tensor/array (the first of a batch); identity for ``None``."""
    if aff is None:
        return np.eye(4)
    a = aff.detach().cpu().numpy() if isinstance(aff, torch.Tensor) else np.asarray(aff)
    a = a.astype(np.float64)
    if a.ndim == 3:  # a batched affine
        a = a[0]
    if a.shape != (4, 4):
        raise ValueError(f"expected a 4x4 affine, got shape {a.shape}")
    return a


def metatensor_to_sitk(x: torch.Tensor | np.ndarray, affine: Any = None, dtype: Any = np.float32) -> sitk.Image:
    """A (1, X, Y, Z) or (X, Y, Z) volume with a RAS affine -> ``sitk.Image`` with the same voxels and LPS geometry.

    Args:
        x: a ``MetaTensor`` (its affine is used) or a plain tensor/array (then ``affine`` is used, identity if None).
            A (C, X, Y, Z) array with C > 1 becomes a vector image with C components.
        affine: a RAS 4x4 affine that overrides ``x.affine``.
        dtype: numpy dtype of the pixels (``None`` keeps the input's).
    """
    aff = _affine_np(getattr(x, "affine", None) if affine is None else affine)
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if dtype is not None:
        arr = arr.astype(dtype, copy=False)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4:
        raise ValueError(f"expected a (C, X, Y, Z) or (X, Y, Z) volume, got shape {tuple(arr.shape)}")
    if arr.shape[0] == 1:
        img = sitk.GetImageFromArray(np.ascontiguousarray(arr[0].transpose(2, 1, 0)), isVector=False)
    else:  # (C, X, Y, Z) -> (Z, Y, X, C)
        img = sitk.GetImageFromArray(np.ascontiguousarray(arr.transpose(3, 2, 1, 0)), isVector=True)
    spacing, direction, origin = ras_affine_to_lps_geometry(aff)
    img.SetSpacing([float(s) for s in spacing])
    img.SetDirection([float(v) for v in direction.reshape(-1)])
    img.SetOrigin([float(o) for o in origin])
    return img


def sitk_to_metatensor(img: sitk.Image, like: MetaTensor | None = None, dtype: torch.dtype | None = torch.float32
                       ) -> MetaTensor:
    """``sitk.Image`` (3D, scalar or vector) -> ``MetaTensor`` (C, X, Y, Z) with the image's grid as a RAS affine.

    Args:
        img: a 3D SimpleITK image.
        like: if given, the output copies its meta dictionary (e.g. ``source_path``); the affine always comes from
            ``img``.
        dtype: torch dtype of the output (``None`` keeps the pixel type).
    """
    if img.GetDimension() != 3:
        raise ValueError(f"expected a 3D image, got {img.GetDimension()}D")
    arr = sitk.GetArrayFromImage(img)  # (Z, Y, X) or (Z, Y, X, C)
    arr = arr.transpose(2, 1, 0)[None] if arr.ndim == 3 else arr.transpose(3, 2, 1, 0)
    t = torch.from_numpy(np.ascontiguousarray(arr))
    if dtype is not None:
        t = t.to(dtype)
    aff = torch.as_tensor(lps_geometry_to_ras_affine(img.GetSpacing(), img.GetDirection(), img.GetOrigin()),
                          dtype=torch.float64)
    meta = dict(like.meta) if isinstance(like, MetaTensor) else {}
    meta["affine"] = aff
    meta["spatial_shape"] = np.asarray(t.shape[1:])
    meta.setdefault("space", "RAS")
    return MetaTensor(t, meta=meta)
