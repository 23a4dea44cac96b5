"""Xydeas-Petrovic edge preservation Q^{AB/F} on torch tensors: the one implementation behind the ``Qabf`` metric
(float64, 0-255 scale) and the differentiable edge term of :class:`~fusionmamba_med.losses.FusionLoss` (any scale:
strength ratios and orientations do not depend on it)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["SOBEL_KERNELS", "edge_preservation", "qabf_batch", "sobel_edges"]

#: the standard sigmoid constants (Tg, kg, Dg) for strength and (Ta, ka, Da) for orientation
STRENGTH_CONSTANTS = (0.9994, -15.0, 0.5)
ORIENTATION_CONSTANTS = (0.9879, -22.0, 0.8)

#: the Sobel x and y correlation kernels (2, 3, 3), equal to scipy's convolve2d with the flipped textbook masks (the
#: Qabf reference's orientation convention); the fusion loss's gradient term uses them too
SOBEL_KERNELS = torch.tensor([[[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]],
                              [[-1.0, -2.0, -1.0], [0.0, 0.0, 0.0], [1.0, 2.0, 1.0]]])


def _safe_where(mask: torch.Tensor, value: torch.Tensor, fill: float) -> torch.Tensor:
    return torch.where(mask, value, torch.full_like(value, fill))


def sobel_edges(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 1, H, W) -> Sobel strength ``sqrt(Sx^2 + Sy^2)`` and orientation ``arctan(Sy / Sx)`` (``pi / 2`` where
    ``Sx = 0``), zero padding, both (N, 1, H, W). Gradients are finite everywhere (flat pixels give zero)."""
    kernel = SOBEL_KERNELS.unsqueeze(1).to(device=x.device, dtype=x.dtype)  # (2, 1, 3, 3)
    s = F.conv2d(x, kernel, padding=1)
    sx, sy = s[:, 0:1], s[:, 1:2]
    sq = sx * sx + sy * sy
    strength = _safe_where(sq > 0, torch.sqrt(_safe_where(sq > 0, sq, 1.0)), 0.0)
    nz = sx != 0
    angle = _safe_where(nz, torch.atan(sy / _safe_where(nz, sx, 1.0)), math.pi / 2)
    return strength, angle


def edge_preservation(g_src: torch.Tensor, a_src: torch.Tensor, g_f: torch.Tensor, a_f: torch.Tensor) -> torch.Tensor:
    """Per-pixel ``Q^{XF} = Q_g Q_a`` from the source's and the fused image's Sobel strength and orientation."""
    tg, kg, dg = STRENGTH_CONSTANTS
    ta, ka, da = ORIENTATION_CONSTANTS
    hi = torch.maximum(g_src, g_f)
    ratio = _safe_where(hi > 0, torch.minimum(g_src, g_f) / _safe_where(hi > 0, hi, 1.0), 1.0)
    orient = 1.0 - (a_src - a_f).abs() / (math.pi / 2)
    return tg / (1.0 + torch.exp(kg * (ratio - dg))) * ta / (1.0 + torch.exp(ka * (orient - da)))


def qabf_batch(f: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Q^{AB/F} of each image in a batch: fused ``f`` and sources ``a``, ``b`` (N, 1, H, W) -> (N,). Edge strength
    weights the sum (L = 1); an image where neither source has an edge scores 0. About 0.975 for F = A = B."""
    ga, aa = sobel_edges(a)
    gb, ab = sobel_edges(b)
    gf, af = sobel_edges(f)
    kept = edge_preservation(ga, aa, gf, af) * ga + edge_preservation(gb, ab, gf, af) * gb
    weight = (ga + gb).sum(dim=(1, 2, 3))
    return _safe_where(weight > 0, kept.sum(dim=(1, 2, 3)) / _safe_where(weight > 0, weight, 1.0), 0.0)
