"""2D image pairs: finding them on disk and turning them into the network's 2-channel input.

A pair item is ``{"name": str, "a": path, "b": path}``; ``a`` is network channel 0 (visible / GFP / MRI), ``b``
channel 1 (IR / PC / CT, PET, SPECT). Typical pipeline (inference and training)::

    items, errors = discover_pairs("data/vi", "data/ir")
    load = Compose([LoadImagePaird(), PairToFusionInputd(task="ir_vis")])
    data = load(items[0])          # data["image"]: (2, H, W) float32 in [0, 1]
    data["pred"] = net(data["image"][None])[0]                     # (1, H, W)
    data = RestorePairColourd()(data)  # (3, H, W) RGB when the pair had a colour image, else unchanged

Colour follows the YCbCr recipe of the FusionMamba paper: the colour image's luma Y (BT.601) is fused with the other
image (its luma, if it is stored as RGB), and the fused Y is recombined with the colour image's Cb, Cr. For IR-VIS the
colour image is the visible one (A); for GFP-PC it is the GFP image (A), so the fused image keeps GFP's green hue.
Images stored as RGB whose three channels are equal (common for IR) count as grey.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Resize

from fusionmamba_med.errors import FusionInputError
from fusionmamba_med.io.images2d import SIXTEEN_BIT_RANGES, read_image2d
from fusionmamba_med.transforms.colour import rgb_to_ycbcr, ycbcr_to_rgb

__all__ = [
    "IMAGE_EXTENSIONS",
    "PAIR_TASKS",
    "discover_pairs",
    "is_colour",
    "split_luma",
    "LoadImagePaird",
    "PairToFusionInputd",
    "RestorePairColourd",
]

logger = logging.getLogger(__name__)

#: file extensions (lower case) taken as images when pairing folders.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
#: what :class:`PairToFusionInputd` accepts as ``task``.
PAIR_TASKS = ("auto", "ir_vis", "gfp_pc", "grey")
#: an RGB image whose Cb and Cr stay within this distance of 0.5 everywhere counts as grey.
GREY_TOLERANCE = 2.0 / 255.0


# ---------------------------------------------------------------------------------------------------------------------
# discovery
# ---------------------------------------------------------------------------------------------------------------------
def _images_by_stem(folder: Path, errors: list[FusionInputError]) -> dict[str, Path]:
    """``{lower-case stem: path}`` of the images in ``folder``; a stem used twice (``01.png`` and ``01.jpg``) is an
    error for both files and is left out."""
    if not folder.is_dir():
        raise FusionInputError("image folder not found", path=folder)
    found: dict[str, list[Path]] = {}
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or not entry.is_file():
            continue
        if entry.suffix.lower() not in IMAGE_EXTENSIONS:
            logger.debug("not an image file, ignored: %s", entry)
            continue
        found.setdefault(entry.stem.lower(), []).append(entry)
    out = {}
    for key, paths in found.items():
        if len(paths) > 1:
            names = ", ".join(p.name for p in paths)
            for p in paths:
                errors.append(FusionInputError(f"several images share the name '{p.stem}' ({names}); rename all but "
                                               "one", study=p.stem, path=p))
            continue
        out[key] = paths[0]
    return out


def _pairs_from_folders(dir_a: Path, dir_b: Path) -> tuple[list[dict], list[FusionInputError]]:
    errors: list[FusionInputError] = []
    a_files = _images_by_stem(dir_a, errors)
    b_files = _images_by_stem(dir_b, errors)
    items = []
    for key, a in a_files.items():
        b = b_files.get(key)
        if b is None:
            errors.append(FusionInputError(f"no partner image named '{a.stem}.*' in {dir_b}", study=a.stem, path=a))
            continue
        items.append({"name": a.stem, "a": os.path.abspath(a), "b": os.path.abspath(b)})
    for key, b in b_files.items():
        if key not in a_files:
            errors.append(FusionInputError(f"no partner image named '{b.stem}.*' in {dir_a}", study=b.stem, path=b))
    return items, errors


def _pairs_from_datalist(datalist, datalist_key: str) -> tuple[list[dict], list[FusionInputError]]:
    from fusionmamba_med.io.studies import load_datalist

    if isinstance(datalist, (str, os.PathLike)):
        source: Path | None = Path(datalist)
        entries = load_datalist(source, datalist_key)
        base = source.resolve().parent
    else:
        source, base = None, Path.cwd()
        entries = datalist.get(datalist_key) if isinstance(datalist, Mapping) else datalist
        if not isinstance(entries, list):
            raise FusionInputError(f"a datalist must be a list of pair items or {{'{datalist_key}': [...]}}")
    items, errors = [], []
    for index, raw in enumerate(entries):
        if not isinstance(raw, Mapping):
            errors.append(FusionInputError(f"datalist item {index} is not an object", path=source))
            continue
        paths, problems = {}, []
        for key in ("a", "b"):
            value = raw.get(key)
            if not value or not isinstance(value, (str, os.PathLike)):
                problems.append(f"no '{key}' path given")
                continue
            p = Path(value).expanduser()
            p = p if p.is_absolute() else base / p
            if not p.is_file():
                problems.append(f"'{key}' image not found: {p}")
            paths[key] = os.path.abspath(p)
        name = str(raw.get("name") or (Path(paths["a"]).stem if "a" in paths else f"item{index + 1}"))
        if problems:
            bad = next((paths[k] for k in ("a", "b") if k in paths and not os.path.isfile(paths[k])), source)
            errors.append(FusionInputError("; ".join(problems), study=name, path=bad))
            continue
        items.append({**dict(raw), "name": name, **paths})
    return items, errors


def discover_pairs(
    dir_a: str | os.PathLike | None = None,
    dir_b: str | os.PathLike | None = None,
    datalist: str | os.PathLike | Sequence | Mapping | None = None,
    datalist_key: str = "testing",
) -> tuple[list[dict], list[FusionInputError]]:
    """Find image pairs: files of ``dir_a`` and ``dir_b`` with the same name stem (case-insensitive; the extensions
    may differ, e.g. ``vi/01.png`` + ``ir/01.bmp``), or the items of a datalist
    (``{"testing": [{"a": ..., "b": ..., "name"?: ...}]}``, a JSON file whose relative paths are relative to it, or
    the same structure in memory), which replaces the folders.

    Returns ``(items, errors)``: items ``{"name": stem, "a": abs path, "b": abs path}`` sorted by name, and one
    :class:`FusionInputError` per file without a partner (or missing datalist file), naming it. A missing folder or
    unreadable datalist raises :class:`FusionInputError`.
    """
    if datalist is not None:
        items, errors = _pairs_from_datalist(datalist, datalist_key)
    else:
        if dir_a is None or dir_b is None:
            raise FusionInputError("give both image folders (dir_a, dir_b) or a datalist")
        items, errors = _pairs_from_folders(Path(dir_a), Path(dir_b))
    items.sort(key=lambda item: (item["name"].lower(), item["name"]))
    return items, errors


# ---------------------------------------------------------------------------------------------------------------------
# array helpers
# ---------------------------------------------------------------------------------------------------------------------
def _as_tensor(x) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.as_tensor() if hasattr(x, "as_tensor") else x
    return torch.as_tensor(np.asarray(x))


def is_colour(image: torch.Tensor | np.ndarray, tolerance: float = GREY_TOLERANCE) -> bool:
    """Whether a (C, H, W) image in [0, 1] is really in colour: three channels whose Cb, Cr leave 0.5 by more than
    ``tolerance`` somewhere (so grey images stored as RGB count as grey)."""
    if image.shape[0] != 3:
        return False
    ycc = _as_tensor(rgb_to_ycbcr(_as_tensor(image).float()))
    return bool((ycc[1:] - 0.5).abs().max() > tolerance)


def split_luma(image: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(C, H, W) in [0, 1] -> (luma Y (1, H, W), CbCr (2, H, W) or None for grey input), float32 tensors."""
    x = _as_tensor(image).float()
    if x.shape[0] == 1:
        return x, None
    if x.shape[0] != 3:
        raise ValueError(f"expected 1 or 3 channels, got shape {tuple(x.shape)}")
    ycc = _as_tensor(rgb_to_ycbcr(x)).float()
    return ycc[0:1].contiguous(), ycc[1:3].contiguous()


# ---------------------------------------------------------------------------------------------------------------------
# dictionary transforms
# ---------------------------------------------------------------------------------------------------------------------
class LoadImagePaird(MapTransform):
    """Replace the image paths at ``keys`` by float32 (C, H, W) arrays in [0, 1] (:func:`read_image2d`) and keep
    each file's info ``{"path", "bit_depth", "full_scale", "mode", "size"}`` at ``f"{key}{meta_suffix}"``.

    ``sixteen_bit_range``: ``"container"`` (16-bit / 65535) or ``"data"`` (/ the full scale of the bits each image
    uses: 12-bit microscopy in 16-bit files then fills [0, 1]). A bad file raises :class:`FusionInputError` naming it
    and the pair (``data["name"]``).
    """

    def __init__(self, keys: KeysCollection = ("a", "b"), meta_suffix: str = "_meta",
                 sixteen_bit_range: str = "container", allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        if sixteen_bit_range not in SIXTEEN_BIT_RANGES:
            raise ValueError(f"sixteen_bit_range must be one of {SIXTEEN_BIT_RANGES}, not {sixteen_bit_range!r}")
        self.meta_suffix = meta_suffix
        self.sixteen_bit_range = sixteen_bit_range

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            try:
                d[key], d[f"{key}{self.meta_suffix}"] = read_image2d(d[key], self.sixteen_bit_range)
            except FusionInputError as err:
                raise err.with_study(str(d["name"])) if "name" in d else err
        return d


class PairToFusionInputd(MapTransform):
    """Build the network input from a loaded pair.

    Sets ``image_key`` (2, H, W) float32: channel 0 = A's luma (Y of YCbCr if RGB), channel 1 = B's luma.
    When the colour source (below) is an RGB image, ``cbcr_key`` (2, H, W) holds its Cb, Cr for
    :class:`RestorePairColourd`; ``colour_key`` is ``"a"``, ``"b"`` or ``None``.

    Args:
        task: which image gives the output its colour. ``"ir_vis"``: the visible image (A); ``"gfp_pc"``: the GFP
            image (A), so the fused image keeps GFP's green hue; ``"auto"``: whichever of A, B is in colour (A if
            both); ``"grey"``: none (grey output).
        resize: when the sizes differ, resize B to A's size (with a warning) instead of raising
            :class:`FusionInputError` naming both files.
    """

    def __init__(self, a_key: str = "a", b_key: str = "b", task: str = "auto", resize: bool = False,
                 image_key: str = "image", cbcr_key: str = "cbcr", colour_key: str = "colour_source",
                 meta_suffix: str = "_meta"):
        super().__init__([a_key, b_key])
        if task not in PAIR_TASKS:
            raise ValueError(f"unknown pair task {task!r}; choose one of {PAIR_TASKS}")
        self.a_key, self.b_key, self.task, self.resize = a_key, b_key, task, bool(resize)
        self.image_key, self.cbcr_key, self.colour_key, self.meta_suffix = image_key, cbcr_key, colour_key, meta_suffix

    def _path(self, d: Mapping, key: str) -> str:
        meta = d.get(f"{key}{self.meta_suffix}")
        return str(meta.get("path")) if isinstance(meta, Mapping) and meta.get("path") else key

    def _colour_source(self, a_colour: bool, b_colour: bool) -> str | None:
        if self.task in ("ir_vis", "gfp_pc"):
            return "a" if a_colour else None
        if self.task == "auto":
            return "a" if a_colour else ("b" if b_colour else None)
        return None

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        a, b = _as_tensor(d[self.a_key]).float(), _as_tensor(d[self.b_key]).float()
        for key, x in ((self.a_key, a), (self.b_key, b)):
            if x.ndim != 3 or x.shape[0] not in (1, 3):
                raise FusionInputError(f"expected a (1 | 3, H, W) image, got shape {tuple(x.shape)}",
                                       study=d.get("name"), path=self._path(d, key))
        if a.shape[1:] != b.shape[1:]:
            pa, pb = self._path(d, self.a_key), self._path(d, self.b_key)
            sizes = f"{pa} is {a.shape[1]}x{a.shape[2]}, {pb} is {b.shape[1]}x{b.shape[2]} (HxW)"
            if not self.resize:
                raise FusionInputError(f"the pair's images differ in size: {sizes}; fusion needs co-registered "
                                       "images of one size (resize=True resizes B to A)", study=d.get("name"),
                                       path=pb)
            logger.warning("pair %s: %s; resizing B to A's size", d.get("name", ""), sizes)
            resized = Resize(spatial_size=tuple(a.shape[1:]), mode="bilinear", anti_aliasing=True)(b)
            b = _as_tensor(resized).float().clamp(0.0, 1.0)
        source = self._colour_source(is_colour(a), is_colour(b))
        y_a, cbcr_a = split_luma(a)
        y_b, cbcr_b = split_luma(b)
        d[self.image_key] = torch.cat([y_a, y_b], dim=0).contiguous()
        d[self.colour_key] = source
        if source is not None:
            d[self.cbcr_key] = cbcr_a if source == "a" else cbcr_b
        else:
            d.pop(self.cbcr_key, None)
        return d


class RestorePairColourd(MapTransform):
    """Recombine a fused luma ``keys`` (1, H, W) with the stored Cb, Cr (``cbcr_key``, (2, H, W)) into RGB
    (3, H, W) in [0, 1]; unchanged when the pair had no colour image (``colour_key`` None / no CbCr)."""

    def __init__(self, keys: KeysCollection = "pred", cbcr_key: str = "cbcr", colour_key: str = "colour_source",
                 allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.cbcr_key, self.colour_key = cbcr_key, colour_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if d.get(self.colour_key) is None or d.get(self.cbcr_key) is None:
            return d
        cbcr = _as_tensor(d[self.cbcr_key]).float()
        for key in self.key_iterator(d):
            y = _as_tensor(d[key]).float()
            if y.shape[0] != 1 or y.shape[1:] != cbcr.shape[1:]:
                raise ValueError(f"'{key}' must be (1, H, W) matching CbCr {tuple(cbcr.shape)}, got {tuple(y.shape)}")
            rgb = _as_tensor(ycbcr_to_rgb(torch.cat([y, cbcr.to(y.device)], dim=0)))
            d[key] = rgb.float().clamp(0.0, 1.0)
        return d
