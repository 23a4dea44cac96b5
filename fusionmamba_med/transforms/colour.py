"""Colour handling for fusion: RGB <-> YCbCr (BT.601 full range), colour maps, and the split / restore transforms.

A colour image (pseudo-colour PET/SPECT slices, visible-light photos) is fused through its luma: ``SplitLumad`` keeps Y
(1, ...) for the network and stores Cb, Cr (2, ...) aside; ``RestoreColord`` recombines the fused Y with them. A grey
PET/SPECT volume gets a colour map first (``Colormapd``) when a colour output is wanted.

All functions take channel-first data in [0, 1]: numpy arrays or torch tensors (``MetaTensor`` meta kept), with the
channel axis ``dim`` (0 by default; 1 for a batch (N, C, ...)).
"""

from __future__ import annotations

from typing import Any, Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform, Transform
from monai.utils import convert_to_dst_type

__all__ = [
    "rgb_to_ycbcr",
    "ycbcr_to_rgb",
    "apply_colormap",
    "COLORMAPS",
    "Colormap",
    "Colormapd",
    "SplitLumad",
    "RestoreColord",
]

# BT.601 luma weights; full range ("JPEG") YCbCr: Y in [0, 1], Cb and Cr centred on 0.5.
_KR, _KB = 0.299, 0.114
_KG = 1.0 - _KR - _KB
_RGB2YCC = np.array([
    [_KR, _KG, _KB],
    [-0.5 * _KR / (1.0 - _KB), -0.5 * _KG / (1.0 - _KB), 0.5],
    [0.5, -0.5 * _KG / (1.0 - _KR), -0.5 * _KB / (1.0 - _KR)],
])
_YCC2RGB = np.linalg.inv(_RGB2YCC)
_OFFSET = np.array([0.0, 0.5, 0.5])


def _mix(x: NdarrayOrTensor, matrix: np.ndarray, pre: np.ndarray, post: np.ndarray, dim: int) -> NdarrayOrTensor:
    """``matrix @ (x - pre) + post`` along the channel axis ``dim`` of numpy or torch data."""
    if isinstance(x, torch.Tensor):
        plain = x.as_tensor() if hasattr(x, "as_tensor") else x
        dtype = plain.dtype if plain.is_floating_point() else torch.float32
        moved = torch.movedim(plain.to(dtype), dim, -1)
        m = torch.as_tensor(matrix, dtype=torch.float64, device=plain.device)
        out = (moved.double() - torch.as_tensor(pre, device=plain.device)) @ m.T + torch.as_tensor(post,
                                                                                                 device=plain.device)
        out = torch.movedim(out.to(dtype), -1, dim)
        return convert_to_dst_type(out, x, dtype=dtype)[0]
    arr = np.asarray(x)
    dtype = arr.dtype if np.issubdtype(arr.dtype, np.floating) else np.float32
    out = (np.moveaxis(arr, dim, -1).astype(np.float64) - pre) @ matrix.T + post
    return np.moveaxis(out, -1, dim).astype(dtype)


def _check_channels(x: NdarrayOrTensor, n: int, dim: int, what: str) -> None:
    if x.ndim == 0 or x.shape[dim] != n:
        raise ValueError(f"{what} needs {n} channels on axis {dim}, got shape {tuple(x.shape)}")


def rgb_to_ycbcr(x: NdarrayOrTensor, dim: int = 0) -> NdarrayOrTensor:
    """RGB (3, ...) in [0, 1] -> YCbCr (3, ...): Y in [0, 1], Cb and Cr in [0, 1] centred on 0.5 (BT.601 full
    range). Exact inverse of :func:`ycbcr_to_rgb` (up to float rounding)."""
    _check_channels(x, 3, dim, "rgb_to_ycbcr")
    return _mix(x, _RGB2YCC, np.zeros(3), _OFFSET, dim)


def ycbcr_to_rgb(x: NdarrayOrTensor, dim: int = 0) -> NdarrayOrTensor:
    """YCbCr (3, ...) -> RGB (3, ...) (BT.601 full range, not clipped). Exact inverse of :func:`rgb_to_ycbcr`."""
    _check_channels(x, 3, dim, "ycbcr_to_rgb")
    return _mix(x, _YCC2RGB, _OFFSET, np.zeros(3), dim)


# ---------------------------------------------------------------------------------------------------------------------
# colour maps
# ---------------------------------------------------------------------------------------------------------------------
def _segments(red, green, blue):
    """Piecewise-linear colour map from (position, value) nodes per channel (matplotlib's segment-data style)."""

    def f(v: np.ndarray) -> np.ndarray:
        return np.stack([np.interp(v, [p for p, _ in ch], [c for _, c in ch]) for ch in (red, green, blue)])

    return f


#: Built-in colour maps (value in [0, 1] -> RGB (3, ...) in [0, 1]); the same curves as matplotlib's maps of these
#: names (continuous, not quantised to 256 entries), so results do not depend on matplotlib being installed.
COLORMAPS = {
    "hot": _segments(
        [(0.0, 0.0416), (0.365079, 1.0), (1.0, 1.0)],
        [(0.0, 0.0), (0.365079, 0.0), (0.746032, 1.0), (1.0, 1.0)],
        [(0.0, 0.0), (0.746032, 0.0), (1.0, 1.0)],
    ),
    "jet": _segments(
        [(0.0, 0.0), (0.35, 0.0), (0.66, 1.0), (0.89, 1.0), (1.0, 0.5)],
        [(0.0, 0.0), (0.125, 0.0), (0.375, 1.0), (0.64, 1.0), (0.91, 0.0), (1.0, 0.0)],
        [(0.0, 0.5), (0.11, 1.0), (0.34, 1.0), (0.65, 0.0), (1.0, 0.0)],
    ),
    "rainbow": lambda v: np.stack([
        np.clip(np.abs(2.0 * v - 0.5), 0.0, 1.0), np.clip(np.sin(np.pi * v), 0.0, 1.0),
        np.clip(np.cos(0.5 * np.pi * v), 0.0, 1.0)]),
    "gray": lambda v: np.stack([v, v, v]),
}


def _matplotlib_map(name: str):
    try:
        import matplotlib
    except ImportError:
        raise ValueError(f"unknown colour map '{name}': built-in maps are {sorted(COLORMAPS)} (install matplotlib for "
                         "more)") from None
    try:
        cmap = matplotlib.colormaps[name]
    except KeyError:
        raise ValueError(f"unknown colour map '{name}' (neither built-in {sorted(COLORMAPS)} nor matplotlib's)"
                         ) from None
    return lambda v: np.moveaxis(cmap(v)[..., :3], -1, 0)


def apply_colormap(x: NdarrayOrTensor, name: str = "hot") -> NdarrayOrTensor:
    """Grey (1, ...) in [0, 1] (values outside are clipped) -> RGB (3, ...) in [0, 1] through the colour map ``name``:
    a built-in map of :data:`COLORMAPS` or, for other names, a matplotlib colour map."""
    _check_channels(x, 1, 0, "apply_colormap")
    lut = COLORMAPS.get(name.lower()) if isinstance(name, str) else None
    lut = lut or _matplotlib_map(name)
    if isinstance(x, torch.Tensor):
        plain = x.as_tensor() if hasattr(x, "as_tensor") else x
        v = plain[0].detach().cpu().double().clamp(0.0, 1.0).numpy()
        dtype = plain.dtype if plain.is_floating_point() else torch.float32
        out = torch.as_tensor(lut(v), dtype=dtype, device=plain.device)
        return convert_to_dst_type(out, x, dtype=dtype)[0]
    arr = np.asarray(x)
    dtype = arr.dtype if np.issubdtype(arr.dtype, np.floating) else np.float32
    return lut(np.clip(arr[0].astype(np.float64), 0.0, 1.0)).astype(dtype)


class Colormap(Transform):
    """Array transform of :func:`apply_colormap`: (1, ...) in [0, 1] -> RGB (3, ...)."""

    def __init__(self, name: str = "hot"):
        if not isinstance(name, str) or (name.lower() not in COLORMAPS):
            _matplotlib_map(name)  # fail early on unknown names
        self.name = name

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        return apply_colormap(img, self.name)


class Colormapd(MapTransform):
    """Dictionary wrapper of :class:`Colormap`: ``d[key]`` (1, ...) in [0, 1] -> RGB (3, ...), meta kept."""

    def __init__(self, keys: KeysCollection, name: str = "hot", allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.colormap = Colormap(name)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.colormap(d[key])
        return d


# ---------------------------------------------------------------------------------------------------------------------
# luma split / restore
# ---------------------------------------------------------------------------------------------------------------------
def _cat(parts: list[NdarrayOrTensor], like: NdarrayOrTensor) -> NdarrayOrTensor:
    if isinstance(like, torch.Tensor):
        plain = [p.as_tensor() if hasattr(p, "as_tensor") else p for p in parts]
        return convert_to_dst_type(torch.cat(plain, dim=0), like)[0]
    return np.concatenate(parts, axis=0)


class SplitLumad(MapTransform):
    """RGB ``d[key]`` (3, ...) -> its luma Y (1, ...) in ``d[key]`` and its chroma Cb, Cr (2, ...) in
    ``d[key + cbcr_suffix]``, for fusing the luma and restoring the colour with :class:`RestoreColord`.

    A grey ``d[key]`` (1, ...) is kept as Y, with neutral chroma (0.5), so that restoring gives a grey RGB image.
    """

    def __init__(self, keys: KeysCollection, cbcr_suffix: str = "_cbcr", allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.cbcr_suffix = cbcr_suffix

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            if img.shape[0] == 1:
                y = img
                cbcr = _cat([img * 0 + 0.5, img * 0 + 0.5], img)
            else:
                ycc = rgb_to_ycbcr(img)
                y, cbcr = ycc[0:1], ycc[1:3]
            d[key] = y
            d[f"{key}{self.cbcr_suffix}"] = cbcr
        return d


class RestoreColord(MapTransform):
    """Y ``d[key]`` (1, ...) + chroma ``d[cbcr_key]`` (2, ...) -> RGB (3, ...) in ``d[key]``, clipped to [0, 1].

    The output keeps ``d[key]``'s type, dtype, device and meta (affine); the chroma must have the same spatial shape.
    """

    def __init__(self, keys: KeysCollection, cbcr_key: str, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.cbcr_key = cbcr_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        if self.cbcr_key not in d:
            raise KeyError(f"RestoreColord: no chroma under key '{self.cbcr_key}' (was SplitLumad applied?)")
        cbcr = d[self.cbcr_key]
        for key in self.key_iterator(d):
            y = d[key]
            if y.shape[0] != 1 or cbcr.shape[0] != 2 or tuple(y.shape[1:]) != tuple(cbcr.shape[1:]):
                raise ValueError(f"RestoreColord: expected Y (1, ...) and chroma (2, ...) of one spatial shape, got "
                                 f"{tuple(y.shape)} and {tuple(cbcr.shape)}")
            if isinstance(y, torch.Tensor):
                c = cbcr if isinstance(cbcr, torch.Tensor) else torch.as_tensor(np.asarray(cbcr))
                c = c.as_tensor() if hasattr(c, "as_tensor") else c
                ycc = _cat([y, c.to(device=y.device, dtype=y.dtype if y.is_floating_point() else torch.float32)], y)
                rgb = ycbcr_to_rgb(ycc).clamp(0.0, 1.0)
            else:
                c = cbcr.detach().cpu().numpy() if isinstance(cbcr, torch.Tensor) else np.asarray(cbcr)
                rgb = np.clip(ycbcr_to_rgb(np.concatenate([np.asarray(y), c.astype(np.asarray(y).dtype)], 0)), 0, 1)
            d[key] = rgb
        return d
