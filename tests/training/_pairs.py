"""Small generated image pairs for the training tests: A grey (anatomy), B RGB pseudo-colour (function)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def make_pairs(root: Path, names, size=(40, 44), seed: int = 0) -> tuple[Path, Path]:
    """Write ``root/A/<name>.png`` (grey) and ``root/B/<name>.png`` (RGB) for each name; returns (dir_a, dir_b)."""
    rng = np.random.default_rng(seed)
    dir_a, dir_b = root / "A", root / "B"
    dir_a.mkdir(parents=True, exist_ok=True)
    dir_b.mkdir(parents=True, exist_ok=True)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    for name in names:
        cy, cx, r = rng.uniform(0.3 * h, 0.7 * h), rng.uniform(0.3 * w, 0.7 * w), rng.uniform(0.2, 0.35) * min(h, w)
        disc = ((yy - cy) ** 2 + (xx - cx) ** 2 < r**2).astype(float)
        anatomy = 0.6 * disc + 0.3 * xx / w + 0.05 * rng.random((h, w))
        hot = np.exp(-((yy - cy) ** 2 + (xx - cx - r / 2) ** 2) / (2 * (r / 2) ** 2))
        rgb = np.stack([hot, hot**2, 0.3 * hot**4], axis=-1)
        Image.fromarray((255 * np.clip(anatomy, 0, 1)).astype(np.uint8)).save(dir_a / f"{name}.png")
        Image.fromarray((255 * np.clip(rgb, 0, 1)).astype(np.uint8)).save(dir_b / f"{name}.png")
    return dir_a, dir_b
