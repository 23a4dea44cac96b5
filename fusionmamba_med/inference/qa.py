"""QA montages: a PNG a person can judge a run by at a glance."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from fusionmamba_med.io.atomic import atomic_path

__all__ = ["qa_montage", "save_qa_montage"]


def _as_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def _to_rgb8(vol: np.ndarray, k: int) -> np.ndarray:
    """Slice k of a (C, X, Y, Z) volume in [0, 1] -> (Y, X, 3) uint8 (rows = second voxel axis)."""
    sl = vol[:, :, :, k]
    if sl.shape[0] == 1:
        sl = np.repeat(sl, 3, axis=0)
    img = np.clip(sl[:3], 0, 1).transpose(2, 1, 0)  # (Y, X, 3)
    return (img * 255 + 0.5).astype(np.uint8)


def qa_montage(columns: Sequence, titles: Sequence[str], n_slices: int = 4, weights=None) -> Image.Image:
    """A grid image: one column per volume ((C, X, Y, Z) in [0, 1], same X, Y, Z), one row per chosen slice.

    Slices are spread over the part of the volume where ``weights`` (default: the first column) has signal.
    """
    vols = [_as_numpy(v) for v in columns]
    z = vols[0].shape[-1]
    ref = _as_numpy(weights) if weights is not None else vols[0]
    signal = ref.reshape(-1, z).mean(0)
    idx = np.flatnonzero(signal > 0.1 * signal.max()) if signal.max() > 0 else np.arange(z)
    if idx.size == 0:
        idx = np.arange(z)
    ks = np.unique(np.linspace(idx[0], idx[-1], min(n_slices, idx.size) + 2).round().astype(int)[1:-1])
    if ks.size == 0:
        ks = np.array([z // 2])
    tiles = [[_to_rgb8(v, int(k)) for v in vols] for k in ks]
    h, w = tiles[0][0].shape[:2]
    scale = max(1, 192 // max(h, w))
    label = 16
    canvas = Image.new("RGB", (w * scale * len(vols), label + h * scale * len(ks)), "black")
    draw = ImageDraw.Draw(canvas)
    for c, title in enumerate(titles):
        draw.text((c * w * scale + 4, 2), title, fill="white")
    for r, row in enumerate(tiles):
        for c, tile in enumerate(row):
            im = Image.fromarray(tile).resize((w * scale, h * scale), Image.NEAREST)
            canvas.paste(im, (c * w * scale, label + r * h * scale))
        draw.text((2, label + r * h * scale + 2), f"z={int(ks[r])}", fill="yellow")
    return canvas


def save_qa_montage(path: str | Path, columns: Sequence, titles: Sequence[str], n_slices: int = 4) -> Path:
    """Write :func:`qa_montage` to ``path`` atomically (temporary name, then rename)."""
    path = Path(path)
    image = qa_montage(columns, titles, n_slices)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
    return path
