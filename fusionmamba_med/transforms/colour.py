"""Colour handling for fusion: RGB <-> YCbCr (BT.601 full range), colour maps, and the split / restore transforms.

A colour image (pseudo-colour PET/SPECT slices, visible-light photos, GFP micrographs) is fused through its luma:
``SplitLuma`` / ``SplitLumad`` keep Y (1, ...) for the network and set Cb, Cr (2, ...) aside; ``RestoreColor`` /
``RestoreColord`` recombine the fused Y with them. Volumes and 2D pairs use these same transforms. Public names use
MONAI's US spelling ("Color"); British aliases (``is_colour``, ``RestoreColour(d)``) are kept. A grey
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
from monai.utils import TransformBackends, convert_to_dst_type

__all__ = [
    "rgb_to_ycbcr",
    "ycbcr_to_rgb",
    "apply_colormap",
    "COLORMAPS",
    "Colormap",
    "Colormapd",
    "GREY_TOLERANCE",
    "is_color",
    "is_colour",
    "SplitLuma",
    "SplitLumad",
    "RestoreColor",
    "RestoreColord",
    "RestoreColour",
    "RestoreColourd",
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


#: an RGB image whose Cb and Cr stay within this distance of 0.5 everywhere counts as grey.
GREY_TOLERANCE = 2.0 / 255.0


def is_color(image: NdarrayOrTensor, tolerance: float = GREY_TOLERANCE) -> bool:
    """Whether a (C, ...) image in [0, 1] is really in colour: three channels whose Cb, Cr leave 0.5 by more than
    ``tolerance`` somewhere (so grey images stored as RGB count as grey)."""
    if image.shape[0] != 3:
        return False
    ycc = rgb_to_ycbcr(image.float() if isinstance(image, torch.Tensor) else np.asarray(image, dtype=np.float32))
    chroma = ycc[1:] - 0.5
    return bool((chroma.abs() if isinstance(chroma, torch.Tensor) else np.abs(chroma)).max() > tolerance)


class SplitLuma(Transform):
    """Split a (1 | 3, ...) image in [0, 1] into its luma Y (1, ...) and its chroma Cb, Cr (2, ...), for fusing the
    luma and restoring the colour with :class:`RestoreColor`.

    Args:
        grey_chroma: what a grey (1-channel) image gives as chroma: ``"neutral"`` (0.5 everywhere, so that restoring
            gives a grey RGB image) or ``"none"`` (``None``: the output stays grey).

    Returns ``(y, cbcr)`` of the input's type (``MetaTensor`` meta kept).
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]
    GREY_CHROMA = ("neutral", "none")

    def __init__(self, grey_chroma: str = "neutral") -> None:
        if grey_chroma not in self.GREY_CHROMA:
            raise ValueError(f"grey_chroma must be one of {self.GREY_CHROMA}, got {grey_chroma!r}")
        self.grey_chroma = grey_chroma

    def __call__(self, img: NdarrayOrTensor) -> tuple[NdarrayOrTensor, NdarrayOrTensor | None]:
        if img.shape[0] == 1:
            if self.grey_chroma == "none":
                return img, None
            return img, _cat([img * 0 + 0.5, img * 0 + 0.5], img)
        if img.shape[0] != 3:
            raise ValueError(f"SplitLuma expects 1 or 3 channels, got shape {tuple(img.shape)}")
        ycc = rgb_to_ycbcr(img)
        return ycc[0:1], ycc[1:3]


class RestoreColor(Transform):
    """Luma Y (1, ...) + chroma Cb, Cr (2, ...) -> RGB (3, ...), clipped to [0, 1].

    The output keeps ``y``'s type, dtype, device and meta (affine); the chroma must have the same spatial shape.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __call__(self, y: NdarrayOrTensor, cbcr: NdarrayOrTensor) -> NdarrayOrTensor:
        if y.shape[0] != 1 or cbcr.shape[0] != 2 or tuple(y.shape[1:]) != tuple(cbcr.shape[1:]):
            raise ValueError(f"RestoreColor: expected Y (1, ...) and chroma (2, ...) of one spatial shape, got "
                             f"{tuple(y.shape)} and {tuple(cbcr.shape)}")
        if isinstance(y, torch.Tensor):
            c = cbcr if isinstance(cbcr, torch.Tensor) else torch.as_tensor(np.asarray(cbcr))
            c = c.as_tensor() if hasattr(c, "as_tensor") else c
            ycc = _cat([y, c.to(device=y.device, dtype=y.dtype if y.is_floating_point() else torch.float32)], y)
            return ycbcr_to_rgb(ycc).clamp(0.0, 1.0)
        c = cbcr.detach().cpu().numpy() if isinstance(cbcr, torch.Tensor) else np.asarray(cbcr)
        return np.clip(ycbcr_to_rgb(np.concatenate([np.asarray(y), c.astype(np.asarray(y).dtype)], 0)), 0, 1)


class SplitLumad(MapTransform):
    """Dictionary-based wrapper of :class:`SplitLuma`: ``d[key]`` (1 | 3, ...) -> its luma Y in ``d[key]`` and its
    chroma in ``d[key + cbcr_suffix]`` (neutral 0.5 for a grey image, so that restoring gives a grey RGB image)."""

    backend = SplitLuma.backend

    def __init__(self, keys: KeysCollection, cbcr_suffix: str = "_cbcr", allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.cbcr_suffix = cbcr_suffix
        self.splitter = SplitLuma(grey_chroma="neutral")

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key], d[f"{key}{self.cbcr_suffix}"] = self.splitter(d[key])
        return d


class RestoreColord(MapTransform):
    """Dictionary-based wrapper of :class:`RestoreColor`: Y ``d[key]`` (1, ...) + chroma ``d[cbcr_key]`` (2, ...)
    -> RGB (3, ...) in ``d[key]``.

    ``skip_without_chroma``: leave ``d[key]`` unchanged (grey) when ``d[cbcr_key]`` is absent or ``None`` (a 2D pair
    without a colour image) instead of raising ``KeyError``.
    """

    backend = RestoreColor.backend

    def __init__(self, keys: KeysCollection, cbcr_key: str, skip_without_chroma: bool = False,
                 allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.cbcr_key = cbcr_key
        self.skip_without_chroma = bool(skip_without_chroma)
        self.restorer = RestoreColor()

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        if d.get(self.cbcr_key) is None:
            if self.skip_without_chroma:
                return d
            raise KeyError(f"RestoreColord: no chroma under key '{self.cbcr_key}' (was SplitLumad applied?)")
        for key in self.key_iterator(d):
            d[key] = self.restorer(d[key], d[self.cbcr_key])
        return d


#: British-spelling aliases of the public names.
is_colour = is_color
RestoreColour = RestoreColor
RestoreColourd = RestoreColord
