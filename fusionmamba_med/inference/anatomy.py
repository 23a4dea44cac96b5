"""Fuse only where there is anatomy: the box (in-plane and slices) where either input has signal, widened by a margin,
goes through the network; the rest of the grid is filled as the full-grid fusion fills its background.

The network is global along each slice (its selective scan runs over every token), so a voxel's fused value depends
a little on the whole slice; the margin keeps what lies inside the anatomy equal to the full-grid result within a
small, measured difference (``benchmarks/bench_anatomy_crop.py``). Outside the box the full-grid network sees only
background and gives its base (the mean of the two inputs, for ``residual="mean"``) plus a nearly constant residual:
the fill is that base plus the residual measured in the box's own background, clamped to [0, 1].
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

__all__ = ["anatomy_box", "anatomy_mask", "fuse_within_anatomy"]


def anatomy_mask(image: torch.Tensor, threshold: float = 0.1, block: int = 4) -> torch.Tensor:
    """(X, Y, Z) bool: where any channel of ``image`` (C, X, Y, Z), averaged over ``block`` x ``block`` in-plane
    blocks, exceeds ``threshold`` (the averaging keeps isolated background noise out)."""
    x = image.float().amax(dim=0, keepdim=True).permute(0, 3, 1, 2)  # (1, Z, X, Y): slices as channels
    pooled = torch.nn.functional.avg_pool2d(x, block, stride=block, ceil_mode=True)
    mask = pooled > threshold
    mask = mask.repeat_interleave(block, dim=2).repeat_interleave(block, dim=3)[..., :image.shape[1], :image.shape[2]]
    return mask[0].permute(1, 2, 0)


def anatomy_box(image: torch.Tensor, threshold: float = 0.1, margin: int = 32, multiple: int = 1
                ) -> tuple[slice, ...] | None:
    """The (X, Y, Z) box of ``image`` (C, X, Y, Z) where any channel has signal (:func:`anatomy_mask`), widened by ``margin``
    voxels in-plane and one slice along Z, its in-plane sides grown to multiples of ``multiple`` where the grid
    allows; ``None`` when nothing exceeds the threshold."""
    mask = anatomy_mask(image, threshold)
    if not bool(mask.any()):
        return None
    box = []
    for axis, size in enumerate(mask.shape):
        along = mask
        for other in sorted((a for a in range(3) if a != axis), reverse=True):
            along = along.any(dim=other)
        hits = torch.nonzero(along).flatten()
        pad = margin if axis < 2 else 1
        lo, hi = max(0, int(hits[0]) - pad), min(size, int(hits[-1]) + 1 + pad)
        if axis < 2 and multiple > 1:
            length = -(-(hi - lo) // multiple) * multiple
            if length >= size:
                lo, hi = 0, size
            else:
                hi = min(size, lo + length)
                lo = hi - length
        box.append(slice(lo, hi))
    return tuple(box)


def fuse_within_anatomy(image: torch.Tensor, fuse: Callable[[torch.Tensor], torch.Tensor], threshold: float = 0.1,
                        margin: int = 32, multiple: int = 1) -> tuple[torch.Tensor, dict]:
    """``fuse`` ((2, x, y, z) -> (1, x, y, z)) run on the anatomy box of ``image`` (2, X, Y, Z) only; returns the
    fused (1, X, Y, Z) and ``{"box": [[lo, hi] x 3], "fraction": voxels fused / all voxels, "fill_residual"}``.

    Without anatomy (nothing above ``threshold``), or when the box is the whole grid, the whole grid is fused.
    """
    box = anatomy_box(image, threshold, margin, multiple)
    full = tuple(slice(0, s) for s in image.shape[1:])
    if box is None or box == full:
        return fuse(image), {"box": [[0, s] for s in image.shape[1:]], "fraction": 1.0, "fill_residual": None}
    crop = image[(slice(None),) + box]
    fused_crop = fuse(crop)
    base = 0.5 * (image[0:1] + image[1:2])
    # the network's residual over background: in the box, where neither input has signal
    background = ~anatomy_mask(crop, threshold)[None]
    residual = (fused_crop - 0.5 * (crop[0:1] + crop[1:2]))[background]
    fill_residual = float(residual.median()) if residual.numel() else 0.0
    out = (base + fill_residual).clamp(0.0, 1.0)
    out[(slice(None),) + box] = fused_crop
    voxels = float(np.prod([s.stop - s.start for s in box]))
    return out, {"box": [[s.start, s.stop] for s in box], "fraction": voxels / float(np.prod(image.shape[1:])),
                 "fill_residual": fill_residual}
