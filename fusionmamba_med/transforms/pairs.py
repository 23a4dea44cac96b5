"""Transforms of 2D image pairs: load both images, build the network's 2-channel input, restore the colour.

Typical pipeline (inference and training)::

    items, errors = discover_pairs("data/vi", "data/ir")     # fusionmamba_med.io.pairs
    load = Compose([LoadImagePaird(), PairToFusionInputd(task="ir_vis")])
    data = load(items[0])          # data["image"]: (2, H, W) float32 in [0, 1]
    data["pred"] = net(data["image"][None])[0]                     # (1, H, W)
    data = RestorePairColord()(data)  # (3, H, W) RGB when the pair had a colour image, else unchanged

Colour follows the YCbCr recipe of the FusionMamba paper, with the package's one luma split / restore
(:class:`~fusionmamba_med.transforms.colour.SplitLuma`, :class:`~fusionmamba_med.transforms.colour.RestoreColor`):
the colour image's luma Y (BT.601) is fused with the other image (its luma, if it is stored as RGB), and the fused Y
is recombined with the colour image's Cb, Cr. For IR-VIS the colour image is the visible one (A); for GFP-PC it is the
GFP image (A), so the fused image keeps GFP's green hue. Images stored as RGB whose three channels are equal (common
for IR) count as grey.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Resize, Transform
from monai.utils import TransformBackends

from fusionmamba_med.errors import FusionInputError
from fusionmamba_med.io.images2d import SIXTEEN_BIT_RANGES, read_image2d
from fusionmamba_med.transforms.colour import RestoreColord, SplitLuma, is_color

__all__ = [
    "PAIR_TASKS",
    "LoadImage2D",
    "LoadImagePaird",
    "PairToFusionInput",
    "PairToFusionInputd",
    "RestorePairColord",
    "RestorePairColourd",
]

logger = logging.getLogger(__name__)

#: what :class:`PairToFusionInput` accepts as ``task``.
PAIR_TASKS = ("auto", "ir_vis", "gfp_pc", "grey")


def _as_tensor(x) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.as_tensor() if hasattr(x, "as_tensor") else x
    return torch.as_tensor(np.asarray(x))


class LoadImage2D(Transform):
    """Read a 2D image file as float32 (C, H, W) in [0, 1] with its info ``{"path", "bit_depth", "full_scale",
    "mode", "size"}`` (:func:`~fusionmamba_med.io.images2d.read_image2d`; palette images are decoded through PIL).

    ``sixteen_bit_range``: ``"container"`` (16-bit / 65535) or ``"data"`` (/ the full scale of the bits each image
    uses: 12-bit microscopy in 16-bit files then fills [0, 1]). A bad file raises :class:`FusionInputError` naming it.
    """

    def __init__(self, sixteen_bit_range: str = "container") -> None:
        if sixteen_bit_range not in SIXTEEN_BIT_RANGES:
            raise ValueError(f"sixteen_bit_range must be one of {SIXTEEN_BIT_RANGES}, not {sixteen_bit_range!r}")
        self.sixteen_bit_range = sixteen_bit_range

    def __call__(self, path) -> tuple[np.ndarray, dict]:
        return read_image2d(path, self.sixteen_bit_range)


class LoadImagePaird(MapTransform):
    """Dictionary-based wrapper of :class:`LoadImage2D`: replace the image paths at ``keys`` by float32 (C, H, W)
    arrays in [0, 1] and keep each file's info at ``f"{key}{meta_suffix}"``. A bad file raises
    :class:`FusionInputError` naming it and the pair (``data["name"]``).
    """

    def __init__(self, keys: KeysCollection = ("a", "b"), meta_suffix: str = "_meta",
                 sixteen_bit_range: str = "container", allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.meta_suffix = meta_suffix
        self.loader = LoadImage2D(sixteen_bit_range)

    @property
    def sixteen_bit_range(self) -> str:
        return self.loader.sixteen_bit_range

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            try:
                d[key], d[f"{key}{self.meta_suffix}"] = self.loader(d[key])
            except FusionInputError as err:
                raise err.with_study(str(d["name"])) if "name" in d else err
        return d


class PairToFusionInput(Transform):
    """Build the network input from two loaded images A, B (each (1 | 3, H, W) in [0, 1]).

    Returns ``(image, cbcr, colour_source)``: ``image`` (2, H, W) float32, channel 0 = A's luma (Y of YCbCr if RGB),
    channel 1 = B's luma; ``cbcr`` (2, H, W) the colour source's Cb, Cr, or ``None``; ``colour_source`` ``"a"``,
    ``"b"`` or ``None``.

    Args:
        task: which image gives the output its colour. ``"ir_vis"``: the visible image (A); ``"gfp_pc"``: the GFP
            image (A), so the fused image keeps GFP's green hue; ``"auto"``: whichever of A, B is in colour (A if
            both); ``"grey"``: none (grey output).
        resize: when the sizes differ, resize B to A's size (with a warning) instead of raising
            :class:`FusionInputError` naming both files.
    """

    backend = [TransformBackends.TORCH]

    def __init__(self, task: str = "auto", resize: bool = False) -> None:
        if task not in PAIR_TASKS:
            raise ValueError(f"unknown pair task {task!r}; choose one of {PAIR_TASKS}")
        self.task, self.resize = task, bool(resize)
        self.splitter = SplitLuma(grey_chroma="none")

    def _colour_source(self, a_colour: bool, b_colour: bool) -> str | None:
        if self.task in ("ir_vis", "gfp_pc"):
            return "a" if a_colour else None
        if self.task == "auto":
            return "a" if a_colour else ("b" if b_colour else None)
        return None

    def __call__(self, a, b, name: str | None = None, path_a: str = "a", path_b: str = "b"
                 ) -> tuple[torch.Tensor, torch.Tensor | None, str | None]:
        a, b = _as_tensor(a).float(), _as_tensor(b).float()
        for path, x in ((path_a, a), (path_b, b)):
            if x.ndim != 3 or x.shape[0] not in (1, 3):
                raise FusionInputError(f"expected a (1 | 3, H, W) image, got shape {tuple(x.shape)}",
                                       study=name, path=path)
        if a.shape[1:] != b.shape[1:]:
            sizes = f"{path_a} is {a.shape[1]}x{a.shape[2]}, {path_b} is {b.shape[1]}x{b.shape[2]} (HxW)"
            if not self.resize:
                raise FusionInputError(f"the pair's images differ in size: {sizes}; fusion needs co-registered "
                                       "images of one size (resize=True resizes B to A)", study=name, path=path_b)
            logger.warning("pair %s: %s; resizing B to A's size", name or "", sizes)
            resized = Resize(spatial_size=tuple(a.shape[1:]), mode="bilinear", anti_aliasing=True)(b)
            b = _as_tensor(resized).float().clamp(0.0, 1.0)
        source = self._colour_source(is_color(a), is_color(b))
        y_a, cbcr_a = self.splitter(a)
        y_b, cbcr_b = self.splitter(b)
        cbcr = None if source is None else (cbcr_a if source == "a" else cbcr_b)
        cbcr = None if cbcr is None else _as_tensor(cbcr).float().contiguous()
        image = torch.cat([_as_tensor(y_a).float(), _as_tensor(y_b).float()], dim=0).contiguous()
        return image, cbcr, source


class PairToFusionInputd(MapTransform):
    """Dictionary-based wrapper of :class:`PairToFusionInput`: sets ``image_key`` (2, H, W), ``colour_key``
    (``"a"``, ``"b"`` or ``None``) and, when the colour source is an RGB image, ``cbcr_key`` (2, H, W) for
    :class:`RestorePairColord`. Errors name the pair (``data["name"]``) and the file."""

    backend = PairToFusionInput.backend

    def __init__(self, a_key: str = "a", b_key: str = "b", task: str = "auto", resize: bool = False,
                 image_key: str = "image", cbcr_key: str = "cbcr", colour_key: str = "colour_source",
                 meta_suffix: str = "_meta"):
        super().__init__([a_key, b_key])
        self.converter = PairToFusionInput(task=task, resize=resize)
        self.a_key, self.b_key = a_key, b_key
        self.image_key, self.cbcr_key, self.colour_key, self.meta_suffix = image_key, cbcr_key, colour_key, meta_suffix

    @property
    def task(self) -> str:
        return self.converter.task

    def _path(self, d: Mapping, key: str) -> str:
        meta = d.get(f"{key}{self.meta_suffix}")
        return str(meta.get("path")) if isinstance(meta, Mapping) and meta.get("path") else key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        image, cbcr, source = self.converter(d[self.a_key], d[self.b_key], name=d.get("name"),
                                             path_a=self._path(d, self.a_key), path_b=self._path(d, self.b_key))
        d[self.image_key], d[self.colour_key] = image, source
        if cbcr is not None:
            d[self.cbcr_key] = cbcr
        else:
            d.pop(self.cbcr_key, None)
        return d


class RestorePairColord(RestoreColord):
    """:class:`~fusionmamba_med.transforms.colour.RestoreColord` for 2D pairs: recombine the fused luma ``keys``
    (1, H, W) with the stored Cb, Cr (``cbcr_key``) into RGB (3, H, W) in [0, 1]; unchanged when the pair had no
    colour image (``colour_key`` ``None`` / no CbCr)."""

    def __init__(self, keys: KeysCollection = "pred", cbcr_key: str = "cbcr", colour_key: str = "colour_source",
                 allow_missing_keys: bool = False):
        super().__init__(keys, cbcr_key=cbcr_key, skip_without_chroma=True, allow_missing_keys=allow_missing_keys)
        self.colour_key = colour_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        if data.get(self.colour_key) is None:
            return dict(data)
        d = super().__call__(data)
        for key in self.key_iterator(d):
            d[key] = _as_tensor(d[key]).float()
        return d


#: British-spelling alias.
RestorePairColourd = RestorePairColord
