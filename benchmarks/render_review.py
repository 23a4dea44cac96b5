"""Render what a reviewer sees when a study's review scene opens in 3D Slicer: the scene's six slice views, blended by
Slicer's own slice logic (slicer-core, off-screen), as one PNG (top row: fused; bottom row: MRI + registered overlay).

    pip install -e ".[slicer]"
    python -m monai.bundle run --config_file bundles/pet_mri/inference.json
    python benchmarks/render_review.py bundles/pet_mri/eval/study01/study01_review.mrml --out docs/images/review_pet_mri.png

Prints Slicer's messages while importing the scene (none expected) and the PNG's path.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from fusionmamba_med.io.slicer_scene import VIEW_TAGS, SlicerScene

ROW_TITLES = ("fused", "MRI + registered overlay")


def render_review(scene_path: str | Path, size: int = 256) -> tuple[np.ndarray, list[str]]:
    """The 2 x 3 montage of a review scene's views, (2 * size + margins, 3 * size, 3) uint8, and Slicer's messages."""
    scene = SlicerScene()
    if not scene.import_scene(scene_path):
        raise SystemExit(f"Slicer could not import {scene_path}: {scene.messages}")
    views = scene.render_views(VIEW_TAGS, size)
    band = 18
    canvas = Image.new("RGB", (3 * size, 2 * (size + band)), "black")
    draw = ImageDraw.Draw(canvas)
    for row in range(2):
        draw.text((4, row * (size + band) + 3), ROW_TITLES[row], fill="white")
        for col in range(3):
            tag = VIEW_TAGS[3 * row + col]
            canvas.paste(Image.fromarray(views[tag]), (col * size, row * (size + band) + band))
            draw.text((col * size + size - 8 - int(draw.textlength(tag)), row * (size + band) + 3), tag, fill="yellow")
    return np.asarray(canvas), scene.messages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scene", help="a <study>_review.mrml or .mrb")
    parser.add_argument("--out", required=True, help="PNG to write")
    parser.add_argument("--size", type=int, default=256, help="pixels per view")
    args = parser.parse_args()
    montage, messages = render_review(args.scene, args.size)
    for m in messages:
        print("slicer:", m)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(montage).save(args.out)
    print(args.out)


if __name__ == "__main__":
    main()
