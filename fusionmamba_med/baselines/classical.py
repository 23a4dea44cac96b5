"""Classical pixel, pyramid and wavelet fusion rules, as reference points for the network.

Each rule takes two 2D images A, B of one shape (numpy arrays or torch tensors, float, nominally in [0, 1]) and returns
the fused H x W image as the same kind of object as A (torch in, torch out on A's device). :class:`ClassicalFusionNet`
wraps a rule in the network contract (image [N, 2, H, W] -> pred [N, 1, H, W]) so it can run inside a MONAI inferer.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pywt
import torch
from monai.utils import convert_to_dst_type
from skimage.transform import pyramid_reduce, resize
from torch import nn

from fusionmamba_med.errors import FusionInputError

__all__ = [
    "BASELINES",
    "ClassicalFusionNet",
    "average_fusion",
    "laplacian_pyramid_fusion",
    "max_abs_fusion",
    "wavelet_fusion",
]


def _as_pair(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    """Two 2D images -> two float64 numpy arrays of one shape."""
    a_np = convert_to_dst_type(a, np.zeros(0), dtype=np.float64)[0]
    b_np = convert_to_dst_type(b, np.zeros(0), dtype=np.float64)[0]
    if a_np.ndim != 2 or a_np.shape != b_np.shape:
        raise FusionInputError(f"fusion rules take two H x W images of one shape, got {a_np.shape} and {b_np.shape}")
    return a_np, b_np


def _like(out: np.ndarray, a: Any) -> Any:
    """Fused numpy image -> the kind of object A is (float dtype kept, integer inputs give float32)."""
    if isinstance(a, torch.Tensor):
        return convert_to_dst_type(out, a, dtype=a.dtype if a.is_floating_point() else torch.float32)[0]
    a = np.asarray(a)
    return out.astype(a.dtype if np.issubdtype(a.dtype, np.floating) else np.float32)


def _choose_max_abs(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per element, the coefficient with the larger magnitude (x on ties)."""
    return np.where(np.abs(x) >= np.abs(y), x, y)


def _clip_to_sources(out: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Clip reconstruction overshoot to the joint intensity range of the sources."""
    return np.clip(out, min(a.min(), b.min()), max(a.max(), b.max()))


def average_fusion(a: Any, b: Any) -> Any:
    """(A + B) / 2."""
    a_np, b_np = _as_pair(a, b)
    return _like(0.5 * (a_np + b_np), a)


def max_abs_fusion(a: Any, b: Any) -> Any:
    """Per pixel the source value of larger magnitude (for images in [0, 1]: max(A, B))."""
    a_np, b_np = _as_pair(a, b)
    return _like(_choose_max_abs(a_np, b_np), a)


def _laplacian_pyramid(img: np.ndarray, levels: int) -> list[np.ndarray]:
    """Laplacian pyramid, finest detail first, Gaussian base last; any H, W (odd sizes halve with ceil)."""
    pyramid = []
    current = img
    for _ in range(levels):
        if min(current.shape) < 2:
            break
        smaller = pyramid_reduce(current, downscale=2, preserve_range=True)
        pyramid.append(current - _expand(smaller, current.shape))
        current = smaller
    pyramid.append(current)
    return pyramid


def _expand(img: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Bilinear upsampling to exactly ``shape``."""
    return resize(img, shape, order=1, mode="edge", anti_aliasing=False, preserve_range=True)


def laplacian_pyramid_fusion(a: Any, b: Any, levels: int = 4) -> Any:
    """Laplacian pyramid fusion: max-abs detail coefficients, averaged base, clipped to the sources' range.

    ``levels`` detail levels at most (fewer when the image becomes smaller than 2 pixels).
    """
    if levels < 1:
        raise ValueError(f"levels must be >= 1, got {levels}")
    a_np, b_np = _as_pair(a, b)
    pyr_a, pyr_b = _laplacian_pyramid(a_np, levels), _laplacian_pyramid(b_np, levels)
    fused = 0.5 * (pyr_a[-1] + pyr_b[-1])
    for detail_a, detail_b in zip(reversed(pyr_a[:-1]), reversed(pyr_b[:-1])):
        fused = _expand(fused, detail_a.shape) + _choose_max_abs(detail_a, detail_b)
    return _like(_clip_to_sources(fused, a_np, b_np), a)


def wavelet_fusion(a: Any, b: Any, wavelet: str = "db2", level: int = 3) -> Any:
    """Discrete wavelet fusion (pywt): mean approximation, max-abs details, cropped back to the input size.

    ``level`` is lowered to what the image size allows (at least 1); output clipped to the sources' range.
    """
    if level < 1:
        raise ValueError(f"level must be >= 1, got {level}")
    a_np, b_np = _as_pair(a, b)
    max_level = pywt.dwt_max_level(min(a_np.shape), pywt.Wavelet(wavelet).dec_len)
    level = max(1, min(level, max_level))
    with warnings.catch_warnings():
        if max_level < 1:  # image shorter than the filter: one level still works, with boundary effects
            warnings.simplefilter("ignore", UserWarning)
        coeffs_a = pywt.wavedec2(a_np, wavelet, level=level)
        coeffs_b = pywt.wavedec2(b_np, wavelet, level=level)
    fused = [0.5 * (coeffs_a[0] + coeffs_b[0])]
    for details_a, details_b in zip(coeffs_a[1:], coeffs_b[1:]):
        fused.append(tuple(_choose_max_abs(da, db) for da, db in zip(details_a, details_b)))
    out = pywt.waverec2(fused, wavelet)[: a_np.shape[0], : a_np.shape[1]]
    return _like(_clip_to_sources(out, a_np, b_np), a)


BASELINES: dict[str, Callable[..., Any]] = {
    "average": average_fusion,
    "max_abs": max_abs_fusion,
    "laplacian": laplacian_pyramid_fusion,
    "wavelet": wavelet_fusion,
}


class ClassicalFusionNet(nn.Module):
    """A classical rule behind the network contract: image [N, 2, H, W] -> pred [N, 1, H, W].

    ``method`` is a :data:`BASELINES` name or any ``rule(a, b, **kwargs)``; ``kwargs`` go to the rule
    (e.g. ``levels=4`` for ``"laplacian"``). No parameters; the output has the input's dtype and device.
    """

    def __init__(self, method: str | Callable[..., Any] = "average", **kwargs: Any) -> None:
        super().__init__()
        if isinstance(method, str):
            if method not in BASELINES:
                raise ValueError(f"unknown fusion baseline {method!r}; choose from {sorted(BASELINES)}")
            self.method_name, self.rule = method, BASELINES[method]
        else:
            self.method_name, self.rule = getattr(method, "__name__", "custom"), method
        self.kwargs = kwargs

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """image [N, 2, H, W] (channel 0 = A, channel 1 = B) -> fused [N, 1, H, W]."""
        if image.dim() != 4 or image.shape[1] != 2:
            raise ValueError(f"ClassicalFusionNet expects image [N, 2, H, W], got {tuple(image.shape)}")
        x = image.detach().cpu().double().numpy()
        fused = np.stack([self.rule(sample[0], sample[1], **self.kwargs) for sample in x])[:, None]
        return convert_to_dst_type(fused, image, dtype=image.dtype)[0]

    def extra_repr(self) -> str:
        return f"method={self.method_name!r}"
