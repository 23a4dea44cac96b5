"""Synthetic 2D pairs: infrared / visible street scenes and GFP fluorescence / phase-contrast cells, with the
sizes, bit depths and colour modes real pairs come in.

Used by :mod:`fusionmamba_med.data.sample_data` (the ``sample_data/generic_2d`` folder) and by tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from fusionmamba_med.io.atomic import atomic_path

__all__ = ["make_ir_vis_pairs", "make_gfp_pc_pairs"]

# ---------------------------------------------------------------------------------------------------------------------
# 2D pairs: infrared / visible street scenes
# ---------------------------------------------------------------------------------------------------------------------
def _smooth_noise(rng: np.random.Generator, shape, sigma: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    n = gaussian_filter(rng.standard_normal(shape), sigma)
    return n / (n.std() + 1e-9)


class _Scene:
    """Objects drawn once into an instance map (2x supersampled); each instance has a VIS colour and an IR level."""

    def __init__(self, width: int, height: int):
        from PIL import Image, ImageDraw

        self.w, self.h = 2 * width, 2 * height
        self.ids = Image.new("I", (self.w, self.h), 0)
        self.draw = ImageDraw.Draw(self.ids)
        self.shadow = Image.new("L", (self.w, self.h), 0)
        self.shadow_draw = ImageDraw.Draw(self.shadow)
        self.vis: list[tuple[float, float, float]] = [(0.0, 0.0, 0.0)]
        self.ir: list[float] = [0.0]
        self.texture: list[float] = [0.0]

    def _new(self, vis, ir, texture) -> int:
        self.vis.append(tuple(c / 255.0 for c in vis))
        self.ir.append(float(ir))
        self.texture.append(float(texture))
        return len(self.vis) - 1

    def _xy(self, box):
        return [v * (self.w if i % 2 == 0 else self.h) for i, v in enumerate(box)]

    def rect(self, box, vis, ir, texture=0.05, radius=0.0):
        i = self._new(vis, ir, texture)
        xy = self._xy(box)
        if radius > 0:
            self.draw.rounded_rectangle(xy, radius=radius * self.h, fill=i)
        else:
            self.draw.rectangle(xy, fill=i)

    def ellipse(self, box, vis, ir, texture=0.05):
        self.draw.ellipse(self._xy(box), fill=self._new(vis, ir, texture))

    def polygon(self, points, vis, ir, texture=0.05):
        self.draw.polygon([tuple(self._xy(p)) for p in points], fill=self._new(vis, ir, texture))

    def cast_shadow(self, points, strength=140):
        self.shadow_draw.polygon([tuple(self._xy(p)) for p in points], fill=strength)

    def render(self, rng: np.random.Generator, horizon: float) -> tuple[np.ndarray, np.ndarray]:
        """-> (visible RGB uint8 (H, W, 3), infrared uint8 (H, W)) at the requested size."""
        from scipy.ndimage import gaussian_filter

        ids = np.asarray(self.ids, dtype=np.int64)
        vis = np.asarray(self.vis, float)[ids]
        ir = np.asarray(self.ir, float)[ids]
        tex = np.asarray(self.texture, float)[ids]
        vis *= (1.0 + tex * _smooth_noise(rng, ids.shape, 1.2))[..., None]
        ir += 0.25 * tex * _smooth_noise(rng, ids.shape, 3.0)
        v = np.linspace(0.0, 1.0, self.h)[:, None]
        sky = ids == 1
        grad = np.clip(v / horizon, 0.0, 1.0)
        vis[sky] = (np.array([0.42, 0.62, 0.85]) * (1 - grad) + np.array([0.80, 0.85, 0.90]) * grad)[
            np.nonzero(sky)[0]]
        ir[sky] = (0.06 + 0.14 * grad)[np.nonzero(sky)[0], 0]
        shade = gaussian_filter(np.asarray(self.shadow, float) / 255.0, 2.0)  # soft shadow edges
        vis *= (1.0 - 0.6 * shade)[..., None]
        ir -= 0.05 * shade

        def down(a):  # 2x2 box average: anti-aliasing
            return a.reshape(a.shape[0] // 2, 2, a.shape[1] // 2, 2, *a.shape[2:]).mean(axis=(1, 3))

        vis, ir = down(vis), down(ir)
        vis = vis + rng.normal(0.0, 0.01, vis.shape)
        # Infrared optics: blur, vignetting, column fixed-pattern noise, sensor noise.
        ir = gaussian_filter(ir, 0.9)
        yy, xx = np.mgrid[0:ir.shape[0], 0:ir.shape[1]]
        r2 = ((xx - ir.shape[1] / 2) / ir.shape[1]) ** 2 + ((yy - ir.shape[0] / 2) / ir.shape[0]) ** 2
        ir = ir * (1.0 - 0.25 * r2) + rng.normal(0.0, 0.006, ir.shape[1])[None, :] + rng.normal(0.0, 0.012, ir.shape)
        to8 = lambda a: np.clip(np.round(a * 255.0), 0, 255).astype(np.uint8)  # noqa: E731
        return to8(vis), to8(ir)


def _street_scene(width: int, height: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A small street: sky, buildings with windows and a billboard, road, trees, cars and people (some in shade)."""
    s = _Scene(width, height)
    hz = 0.42 + rng.uniform(-0.04, 0.04)  # horizon
    s.rect((0, 0, 1, 1), (0, 0, 0), 0.1, texture=0.0)  # sky (coloured at render time)
    s.rect((0, hz, 1, 1), (110, 125, 95), 0.36, texture=0.12)  # ground / verges
    # Buildings along the horizon.
    x = -0.05
    palette = [(150, 82, 62), (128, 128, 134), (190, 170, 138), (96, 108, 128), (170, 150, 120)]
    billboard = int(rng.integers(1, 3))
    n = 0
    while x < 1.0:
        bw = rng.uniform(0.12, 0.24)
        top = hz - rng.uniform(0.12, 0.32)
        colour = palette[int(rng.integers(len(palette)))]
        level = rng.uniform(0.36, 0.46)
        s.rect((x, top, x + bw, hz + 0.04), colour, level, texture=0.06)
        wy = top + 0.03
        while wy < hz - 0.04:
            wx = x + 0.02
            while wx < x + bw - 0.04:
                lit = rng.random() < 0.25
                s.rect((wx, wy, wx + 0.025, wy + 0.035), (235, 212, 120) if lit else (48, 58, 78),
                       0.62 if lit else 0.28, texture=0.02)
                wx += 0.045
            wy += 0.065
        n += 1
        if n == billboard:  # visible-only detail: same temperature as the wall
            bx, by = x + 0.015, top + 0.01
            for k, c in enumerate([(220, 40, 40), (250, 220, 40), (40, 90, 200), (250, 250, 250)]):
                s.rect((bx + k * 0.025, by, bx + (k + 1) * 0.025, by + 0.05), c, level, texture=0.01)
        x += bw
    # Road in perspective, lane markings, pavements.
    vx = 0.5 + rng.uniform(-0.12, 0.12)
    top_y = hz + 0.04
    s.polygon([(vx - 0.04, top_y), (vx + 0.04, top_y), (0.98, 1.0), (0.02, 1.0)], (88, 88, 92), 0.52, texture=0.08)
    for k in range(6):
        t0, t1 = (k + 0.2) / 6.0, (k + 0.6) / 6.0
        y0, y1 = top_y + (1 - top_y) * t0**1.6, top_y + (1 - top_y) * t1**1.6
        w0, w1 = 0.003 + 0.012 * t0**1.6, 0.003 + 0.012 * t1**1.6
        cx0, cx1 = vx + (0.5 - vx) * t0**1.6, vx + (0.5 - vx) * t1**1.6
        s.polygon([(cx0 - w0, y0), (cx0 + w0, y0), (cx1 + w1, y1), (cx1 - w1, y1)], (235, 232, 215), 0.45, 0.02)

    def road_x(y, side):  # road edge at height y
        t = (y - top_y) / (1 - top_y)
        return (vx - 0.04) + (0.02 - (vx - 0.04)) * t if side < 0 else (vx + 0.04) + (0.98 - (vx + 0.04)) * t

    # Trees on the verges, with shadows.
    for _ in range(int(rng.integers(2, 4))):
        ty = rng.uniform(hz + 0.12, 0.8)
        sc = (ty - hz) / (1 - hz)
        side = -1 if rng.random() < 0.5 else 1
        tx = road_x(ty, side) + side * rng.uniform(0.04, 0.1) * (0.5 + sc)
        tw, th = 0.012 + 0.02 * sc, 0.1 + 0.25 * sc
        s.cast_shadow([(tx, ty), (tx + 0.25 * sc, ty + 0.04 * sc), (tx + 0.28 * sc, ty + 0.08 * sc),
                       (tx - 0.02, ty + 0.01)], strength=120)
        s.rect((tx - tw / 2, ty - th, tx + tw / 2, ty), (92, 64, 42), 0.40, texture=0.08)
        cr = 0.05 + 0.1 * sc
        for dx, dy in ((0, 0), (-0.5, 0.3), (0.5, 0.35)):
            s.ellipse((tx + dx * cr - cr, ty - th - cr + dy * cr, tx + dx * cr + cr, ty - th + cr + dy * cr),
                      (52, 112, 48), 0.29, texture=0.18)
    # Cars on the road.
    for _ in range(int(rng.integers(1, 3))):
        cy = rng.uniform(hz + 0.15, 0.92)
        sc = (cy - hz) / (1 - hz)
        left, right = road_x(cy, -1), road_x(cy, 1)
        cw, ch = 0.22 * sc + 0.03, 0.10 * sc + 0.015
        cx = rng.uniform(left + cw / 2, max(left + cw / 2, right - cw / 2))
        colour = [(178, 32, 30), (222, 222, 226), (38, 70, 150), (30, 30, 34)][int(rng.integers(4))]
        s.cast_shadow([(cx - cw / 2, cy), (cx + cw / 2, cy), (cx + cw / 2 + 0.03, cy + 0.02),
                       (cx - cw / 2 + 0.03, cy + 0.02)], strength=180)
        s.rect((cx - cw / 2, cy - ch, cx + cw / 2, cy - 0.15 * ch), colour, 0.40, texture=0.03, radius=0.01)
        s.rect((cx - 0.3 * cw, cy - 1.6 * ch, cx + 0.3 * cw, cy - 0.9 * ch), colour, 0.38, texture=0.03,
               radius=0.01)
        s.rect((cx - 0.25 * cw, cy - 1.5 * ch, cx + 0.25 * cw, cy - 1.0 * ch), (60, 72, 88), 0.28, texture=0.02)
        s.rect((cx - cw / 2, cy - 0.8 * ch, cx - 0.15 * cw, cy - 0.2 * ch), colour, 0.80, texture=0.04)  # warm engine
        for wx in (cx - 0.33 * cw, cx + 0.33 * cw):
            r = 0.2 * ch
            s.ellipse((wx - r, cy - 1.2 * r, wx + r, cy + 0.6 * r), (22, 22, 24), 0.72, texture=0.02)
    # People: hot in the infrared; one wears dark clothes and stands in shade (hard to see in the visible image).
    n_people = int(rng.integers(2, 4))
    for k in range(n_people):
        py = rng.uniform(hz + 0.1, 0.95)
        sc = (py - hz) / (1 - hz)
        side = -1 if k % 2 == 0 else 1
        px = road_x(py, side) + side * rng.uniform(0.01, 0.05) + rng.uniform(-0.02, 0.02)
        ph_, pw = 0.12 + 0.35 * sc, 0.02 + 0.045 * sc
        hidden = k == n_people - 1
        cloth = (28, 28, 32) if hidden else [(200, 40, 40), (40, 120, 200), (230, 200, 60), (90, 60, 120)][
            int(rng.integers(4))]
        if hidden:
            s.cast_shadow([(px - 2 * pw, py - ph_ * 1.1), (px + 2 * pw, py - ph_ * 1.1), (px + 2 * pw, py + 0.02),
                           (px - 2 * pw, py + 0.02)], strength=210)
        s.rect((px - pw * 0.45, py - 0.45 * ph_, px - 0.05 * pw, py), (40, 40, 60), 0.80, texture=0.03)
        s.rect((px + 0.05 * pw, py - 0.45 * ph_, px + 0.45 * pw, py), (40, 40, 60), 0.80, texture=0.03)
        s.rect((px - pw / 2, py - 0.85 * ph_, px + pw / 2, py - 0.42 * ph_), cloth, 0.84, texture=0.03,
               radius=0.004)
        s.ellipse((px - 0.3 * pw, py - ph_, px + 0.3 * pw, py - 0.84 * ph_), (214, 170, 140), 0.95, texture=0.02)
    return s.render(rng, hz)


def make_ir_vis_pairs(out_dir: str | Path, sizes: Sequence[tuple[int, int]] = ((200, 150), (257, 193), (224, 168)),
                      seed: int = 0) -> list[Path]:
    """Write ``out_dir/generic_2d/ir_vis/{vi,ir}/NN.png``: visible RGB and infrared grey street scenes.

    ``sizes`` are (width, height) per pair; both images of a pair share their size and scene geometry.
    """
    from PIL import Image

    folder = Path(out_dir) / "generic_2d" / "ir_vis"
    files = []
    for n, (w, h) in enumerate(sizes, start=1):
        rng = np.random.default_rng([seed, 2, n])
        vis, ir = _street_scene(int(w), int(h), rng)
        for sub, arr in (("vi", vis), ("ir", ir)):
            path = folder / sub / f"{n:02d}.png"
            with atomic_path(path) as tmp:
                Image.fromarray(arr).save(tmp, format="PNG")
            files.append(path)
    return files


# ---------------------------------------------------------------------------------------------------------------------
# 2D pairs: GFP fluorescence / phase contrast
# ---------------------------------------------------------------------------------------------------------------------
def _cells(width: int, height: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """-> (GFP RGB float (H, W, 3) in [0, 1], phase contrast float (H, W) in [0, 1]) of the same cells."""
    from scipy.ndimage import gaussian_filter

    yy, xx = np.mgrid[0:height, 0:width].astype(float)
    n_target = int(width * height / 1400)
    centres: list[tuple[float, float, float]] = []
    for _ in range(40 * n_target):
        if len(centres) >= n_target:
            break
        r = rng.uniform(7.0, 14.0)
        c = (rng.uniform(r, width - r), rng.uniform(r, height - r), r)
        if all((c[0] - o[0]) ** 2 + (c[1] - o[1]) ** 2 > (0.85 * (c[2] + o[2])) ** 2 for o in centres):
            centres.append(c)
    phase = np.zeros((height, width))
    gfp = np.zeros((height, width))
    for cx, cy, r in centres:
        a, b, t = r * rng.uniform(1.0, 1.5), r * rng.uniform(0.7, 1.0), rng.uniform(0, np.pi)
        dx, dy = xx - cx, yy - cy
        u = (dx * np.cos(t) + dy * np.sin(t)) / a
        v = (-dx * np.sin(t) + dy * np.cos(t)) / b
        rho = np.sqrt(u**2 + v**2)
        cell = np.clip((1.0 - rho) * min(a, b), 0.0, 1.0)  # 1-pixel soft edge
        nuc = np.clip((0.45 - np.sqrt((u - 0.15) ** 2 + v**2)) * min(a, b), 0.0, 1.0)
        phase = np.maximum(phase, cell * (0.8 + 0.2 * rng.random()) + 0.4 * nuc)
        if rng.random() < 0.7:  # this cell expresses GFP
            level = rng.uniform(0.35, 1.0)
            gfp = np.maximum(gfp, level * (cell * (0.7 + 0.3 * np.clip(1 - rho, 0, 1)) + 0.35 * nuc))
    # Debris: visible in phase contrast only.
    for _ in range(max(2, n_target // 6)):
        cx, cy, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(1.5, 3.5)
        phase = np.maximum(phase, np.clip(r - np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2), 0.0, 1.0) * 0.7)
    granules = _smooth_noise(rng, (height, width), 1.0)
    gfp = gaussian_filter(gfp * (1.0 + 0.15 * granules), 0.8) + 0.18 * gaussian_filter(gfp, 5.0)
    gfp = np.clip(gfp + np.abs(rng.normal(0.0, 0.012, gfp.shape)), 0.0, 1.0)
    rgb = np.stack([0.10 * gfp, gfp, 0.14 * gfp], axis=-1)
    # Phase contrast: grey background, dark cell bodies with texture, bright halos around their edges.
    body = gaussian_filter(phase * (1.0 + 0.25 * granules), 0.8)
    halo = np.clip(gaussian_filter(phase, 3.0) - gaussian_filter(phase, 0.8), 0.0, None)
    illum = 0.52 + 0.05 * (xx / width - 0.5) - 0.04 * (yy / height - 0.5)
    pc = illum - 0.30 * body + 1.3 * halo + rng.normal(0.0, 0.012, phase.shape)
    return rgb, np.clip(pc, 0.0, 1.0)


def make_gfp_pc_pairs(out_dir: str | Path, sizes: Sequence[tuple[int, int]] = ((192, 192), (160, 224)),
                      seed: int = 0) -> list[Path]:
    """Write ``out_dir/generic_2d/gfp_pc/{GFP,PC}/``: pair 001 as 8-bit PNGs; pair 002 with a 16-bit TIFF PC.

    ``sizes`` are (width, height) per pair (pairs from the third on are written like pair 001). GFP images are RGB,
    PC images grey; the two images of a pair have the same size.
    """
    import tifffile
    from PIL import Image

    folder = Path(out_dir) / "generic_2d" / "gfp_pc"
    files = []
    for n, (w, h) in enumerate(sizes, start=1):
        rgb, pc = _cells(int(w), int(h), np.random.default_rng([seed, 3, n]))
        gfp_path = folder / "GFP" / f"{n:03d}.png"
        with atomic_path(gfp_path) as tmp:
            Image.fromarray(np.round(rgb * 255).astype(np.uint8)).save(tmp, format="PNG")
        if n == 2:
            pc_path = folder / "PC" / f"{n:03d}.tif"
            with atomic_path(pc_path) as tmp:
                tifffile.imwrite(tmp, np.round(pc * 65535).astype(np.uint16), photometric="minisblack")
        else:
            pc_path = folder / "PC" / f"{n:03d}.png"
            with atomic_path(pc_path) as tmp:
                Image.fromarray(np.round(pc * 255).astype(np.uint8)).save(tmp, format="PNG")
        files += [gfp_path, pc_path]
    return files
