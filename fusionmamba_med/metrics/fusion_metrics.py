"""No-reference and source-referenced metrics for 2D image fusion, computed once, in float64 (numpy; Qabf in torch,
the same code as the loss's edge term).

Every metric takes 2D grey images. Inputs go through :func:`to_uint8_grey` first, so every score is on the
8-bit 0-255 scale the fusion literature reports:

- floats are taken to lie in [0, 1] and are scaled by 255 and rounded (values within 1e-3 outside are clipped;
  floats further out raise :class:`~fusionmamba_med.errors.FusionInputError`: divide 0-255 floats by 255 first);
- uint8 is used as is; uint16 is scaled by 255 / 65535; bool gives 0 / 255;
- H x W x 3 (or x 4, alpha dropped) RGB becomes luma Y = 0.299 R + 0.587 G + 0.114 B (ITU-R BT.601);
- leading singleton axes ((1, H, W), (1, 1, H, W) tensors) are dropped.

F is the fused image, A and B the sources. Definitions (those of the common fusion toolboxes, e.g. the MATLAB code
behind VIFB and the Python evaluator of CDDFuse / MMIF):

- ``EN``  entropy of the 256-bin grey histogram, in bits: ``-sum p log2 p``.
- ``SD``  standard deviation of F (population, ddof = 0).
- ``SF``  spatial frequency ``sqrt(RF^2 + CF^2)``, ``RF^2 = mean (F[i, j] - F[i, j-1])^2`` over the M (N-1) horizontal
  differences, ``CF^2`` likewise over the (M-1) N vertical ones.
- ``AG``  average gradient ``mean sqrt((Gx^2 + Gy^2) / 2)`` with ``Gx, Gy`` from ``numpy.gradient`` (central differences
  inside, one-sided at the border, like MATLAB ``gradient``).
- ``MI``  ``MI(F, A) + MI(F, B)`` in bits from 256 x 256 joint histograms.
- ``SCD`` sum of the correlations of differences, ``corr(F - B, A) + corr(F - A, B)`` (Aslantas & Bendes 2015).
- ``VIF`` ``VIF_p(A, F) + VIF_p(B, F)``: the pixel-domain visual information fidelity of Sheikh & Bovik (4 scales,
  Gaussian windows 17/9/5/3, noise variance 2), once per source, summed. This is the "VIF" (sometimes named VIFF)
  of the CDDFuse / MMIF evaluators; it is *not* Han et al.'s multi-resolution VIFF. F = A = B gives 2.
- ``Qabf`` Xydeas & Petrovic edge preservation with Sobel edges and the standard constants Tg = 0.9994, kg = -15,
  Dg = 0.5, Ta = 0.9879, ka = -22, Da = 0.8, weights = gradient strength (L = 1). Its maximum (F = A = B) is about
  0.975, not 1. The strength ratio is ``min(gA, gF) / max(gA, gF)`` (1 where both are 0).
- ``SSIM`` mean of ``SSIM(F, A)`` and ``SSIM(F, B)`` from ``skimage.metrics.structural_similarity`` with data range 255,
  Wang et al.'s settings (Gaussian window sigma 1.5, population covariances); images must be at least 11 x 11.
- ``PSNR`` ``10 log10(255^2 / ((MSE(F, A) + MSE(F, B)) / 2))``; ``inf`` when F equals both sources.
- ``CC``  mean of the Pearson correlations ``corr(F, A)`` and ``corr(F, B)``.

A correlation with a constant image is undefined; ``SCD`` and ``CC`` count it as 0. ``Qabf`` is 0 when neither source
has an edge, and a constant source counts as VIF 1 (as in the reference code).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
from scipy.signal import convolve2d
from skimage.metrics import structural_similarity

from fusionmamba_med.errors import FusionInputError
from fusionmamba_med.metrics.edge_preservation import qabf_batch

__all__ = [
    "METRICS",
    "ag",
    "cc",
    "en",
    "evaluate_fusion",
    "mi",
    "psnr",
    "qabf",
    "scd",
    "sd",
    "sf",
    "ssim",
    "to_uint8_grey",
    "vif",
]

_BT601 = np.array([0.299, 0.587, 0.114])
_FLOAT_TOLERANCE = 1e-3


def to_uint8_grey(x: Any) -> np.ndarray:
    """numpy array or torch tensor, H x W or H x W x 3 (RGB), [0, 1] float / uint8 / uint16 -> H x W uint8."""
    if hasattr(x, "detach"):  # torch.Tensor / MetaTensor
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    while arr.ndim > 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 3 and arr.shape[-1] not in (3, 4):
        raise FusionInputError(f"expected a H x W or H x W x 3 image, got shape {arr.shape}")
    if arr.ndim not in (2, 3) or min(arr.shape[:2]) < 1:
        raise FusionInputError(f"expected a H x W or H x W x 3 image, got shape {arr.shape}")

    if arr.dtype == np.bool_:
        scaled = arr.astype(np.float64) * 255.0
    elif arr.dtype == np.uint8:
        scaled = arr.astype(np.float64)
    elif arr.dtype == np.uint16:
        scaled = arr.astype(np.float64) * (255.0 / 65535.0)
    elif np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float64)
        if not np.all(np.isfinite(arr)):
            raise FusionInputError("image holds NaN or infinite values")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < -_FLOAT_TOLERANCE or hi > 1.0 + _FLOAT_TOLERANCE:
            raise FusionInputError(
                f"float images must lie in [0, 1], got [{lo:.4g}, {hi:.4g}]; divide 0-255 data by 255 or pass uint8"
            )
        scaled = np.clip(arr, 0.0, 1.0) * 255.0
    else:
        raise FusionInputError(f"unsupported image dtype {arr.dtype}; use float in [0, 1], uint8 or uint16")

    if scaled.ndim == 3:
        scaled = scaled[..., :3] @ _BT601
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _grey(x: Any) -> np.ndarray:
    """Image -> float64 H x W on the 0-255 scale."""
    return to_uint8_grey(x).astype(np.float64)


def _triple(f: Any, a: Any, b: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fused and sources -> three float64 0-255 images of one shape."""
    f, a, b = _grey(f), _grey(a), _grey(b)
    if not f.shape == a.shape == b.shape:
        raise FusionInputError(f"fused {f.shape} and sources {a.shape}, {b.shape} must have one shape")
    return f, a, b


def _entropy(counts: np.ndarray) -> float:
    """Shannon entropy in bits of a histogram of counts."""
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum()) + 0.0  # + 0.0 turns -0.0 into 0.0


def _corr(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation; 0 where either image is constant."""
    xc, yc = x - x.mean(), y - y.mean()
    den = math.sqrt(float((xc * xc).sum()) * float((yc * yc).sum()))
    return float((xc * yc).sum() / den) if den > 0 else 0.0


def en(f: Any) -> float:
    """Entropy (bits) of the 256-bin histogram of F."""
    return _entropy(np.bincount(to_uint8_grey(f).ravel(), minlength=256))


def sd(f: Any) -> float:
    """Standard deviation (ddof = 0) of F on the 0-255 scale."""
    return float(_grey(f).std())


def sf(f: Any) -> float:
    """Spatial frequency ``sqrt(RF^2 + CF^2)`` of F (mean squared horizontal / vertical neighbour differences)."""
    g = _grey(f)
    rf2 = float(np.mean(np.diff(g, axis=1) ** 2)) if g.shape[1] > 1 else 0.0
    cf2 = float(np.mean(np.diff(g, axis=0) ** 2)) if g.shape[0] > 1 else 0.0
    return math.sqrt(rf2 + cf2)


def ag(f: Any) -> float:
    """Average gradient ``mean sqrt((Gx^2 + Gy^2) / 2)``, gradients as MATLAB ``gradient`` computes them."""
    g = _grey(f)
    if min(g.shape) < 2:
        raise FusionInputError(f"AG needs an image of at least 2 x 2, got {g.shape}")
    gy, gx = np.gradient(g)
    return float(np.mean(np.sqrt((gx * gx + gy * gy) / 2.0)))


def _mutual_information(x: np.ndarray, y: np.ndarray) -> float:
    """MI in bits of two uint8 images from their 256 x 256 joint histogram."""
    joint = np.bincount(x.ravel().astype(np.int64) * 256 + y.ravel(), minlength=256 * 256).reshape(256, 256)
    return _entropy(joint.sum(axis=1)) + _entropy(joint.sum(axis=0)) - _entropy(joint.ravel())


def mi(f: Any, a: Any, b: Any) -> float:
    """Mutual information ``MI(F, A) + MI(F, B)`` in bits."""
    f, a, b = (x.astype(np.uint8) for x in _triple(f, a, b))
    return _mutual_information(f, a) + _mutual_information(f, b)


def scd(f: Any, a: Any, b: Any) -> float:
    """Sum of the correlations of differences ``corr(F - B, A) + corr(F - A, B)``."""
    f, a, b = _triple(f, a, b)
    return _corr(f - b, a) + _corr(f - a, b)


def _matlab_gaussian(size: int, sigma: float) -> np.ndarray:
    """Normalised size x size Gaussian window, as MATLAB ``fspecial('gaussian')``."""
    r = (size - 1) / 2.0
    y, x = np.ogrid[-r : r + 1, -r : r + 1]
    h = np.exp(-(x * x + y * y) / (2.0 * sigma * sigma))
    h[h < np.finfo(h.dtype).eps * h.max()] = 0
    return h / h.sum()


def _vif_p(ref: np.ndarray, dist: np.ndarray, sigma_nsq: float = 2.0, eps: float = 1e-10) -> float:
    """Pixel-domain VIF of ``dist`` against ``ref`` (Sheikh & Bovik), 4 scales."""
    num = den = 0.0
    for scale in range(1, 5):
        size = 2 ** (4 - scale + 1) + 1
        win = _matlab_gaussian(size, size / 5.0)
        if scale > 1:
            if min(ref.shape) < size:
                break
            ref = convolve2d(ref, win, mode="valid")[::2, ::2]
            dist = convolve2d(dist, win, mode="valid")[::2, ::2]
        if min(ref.shape) < size:
            break
        mu1, mu2 = convolve2d(ref, win, mode="valid"), convolve2d(dist, win, mode="valid")
        sigma1_sq = np.maximum(convolve2d(ref * ref, win, mode="valid") - mu1 * mu1, 0.0)
        sigma2_sq = np.maximum(convolve2d(dist * dist, win, mode="valid") - mu2 * mu2, 0.0)
        sigma12 = convolve2d(ref * dist, win, mode="valid") - mu1 * mu2

        g = sigma12 / (sigma1_sq + eps)
        sv_sq = sigma2_sq - g * sigma12
        flat1 = sigma1_sq < eps
        g[flat1] = 0
        sv_sq[flat1] = sigma2_sq[flat1]
        sigma1_sq[flat1] = 0
        flat2 = sigma2_sq < eps
        g[flat2] = 0
        sv_sq[flat2] = 0
        neg = g < 0
        sv_sq[neg] = sigma2_sq[neg]
        g[neg] = 0
        sv_sq[sv_sq <= eps] = eps

        num += float(np.sum(np.log10(1.0 + g * g * sigma1_sq / (sv_sq + sigma_nsq))))
        den += float(np.sum(np.log10(1.0 + sigma1_sq / sigma_nsq)))
    return num / den if den > 0 else 1.0


def vif(f: Any, a: Any, b: Any) -> float:
    """Fusion VIF: ``VIF_p(A, F) + VIF_p(B, F)`` (pixel-domain VIF per source, summed; F = A = B gives 2)."""
    f, a, b = _triple(f, a, b)
    return _vif_p(a, f) + _vif_p(b, f)


def qabf(f: Any, a: Any, b: Any) -> float:
    """Xydeas-Petrovic edge-information preservation Q^{AB/F} (about 0.975 at best), computed in float64 by
    :func:`~fusionmamba_med.metrics.edge_preservation.qabf_batch` (the same code as the loss's edge term)."""
    f, a, b = (torch.from_numpy(x)[None, None] for x in _triple(f, a, b))
    return float(qabf_batch(f, a, b)[0])


def _ssim(x: np.ndarray, y: np.ndarray) -> float:
    return float(
        structural_similarity(x, y, data_range=255.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    )


def ssim(f: Any, a: Any, b: Any) -> float:
    """Mean of ``SSIM(F, A)`` and ``SSIM(F, B)`` (data range 255, Gaussian window sigma 1.5)."""
    f, a, b = _triple(f, a, b)
    if min(f.shape) < 11:
        raise FusionInputError(f"SSIM needs images of at least 11 x 11, got {f.shape}")
    return 0.5 * (_ssim(f, a) + _ssim(f, b))


def psnr(f: Any, a: Any, b: Any) -> float:
    """``10 log10(255^2 / mean(MSE(F, A), MSE(F, B)))`` in dB; ``inf`` if F equals both sources."""
    f, a, b = _triple(f, a, b)
    mse = 0.5 * (float(np.mean((f - a) ** 2)) + float(np.mean((f - b) ** 2)))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def cc(f: Any, a: Any, b: Any) -> float:
    """Mean Pearson correlation of F with A and with B."""
    f, a, b = _triple(f, a, b)
    return 0.5 * (_corr(f, a) + _corr(f, b))


METRICS: OrderedDict[str, Callable[[Any, Any, Any], float]] = OrderedDict(
    [
        ("EN", lambda f, a, b: en(f)),
        ("SD", lambda f, a, b: sd(f)),
        ("SF", lambda f, a, b: sf(f)),
        ("AG", lambda f, a, b: ag(f)),
        ("MI", mi),
        ("SCD", scd),
        ("VIF", vif),
        ("Qabf", qabf),
        ("SSIM", ssim),
        ("PSNR", psnr),
        ("CC", cc),
    ]
)


def evaluate_fusion(f: Any, a: Any, b: Any, metrics: Iterable[str] | None = None) -> dict[str, float]:
    """Score one fused image against its two sources: ``{metric name: value}`` in :data:`METRICS` order.

    ``metrics`` picks a subset by name (case-insensitive); unknown names raise ``KeyError``.
    """
    f, a, b = (to_uint8_grey(x) for x in (f, a, b))
    if not f.shape == a.shape == b.shape:
        raise FusionInputError(f"fused {f.shape} and sources {a.shape}, {b.shape} must have one shape")
    if metrics is None:
        names = list(METRICS)
    else:
        by_lower = {name.lower(): name for name in METRICS}
        names = []
        for name in metrics:
            if name.lower() not in by_lower:
                raise KeyError(f"unknown fusion metric {name!r}; choose from {list(METRICS)}")
            names.append(by_lower[name.lower()])
    return {name: float(METRICS[name](f, a, b)) for name in names}
