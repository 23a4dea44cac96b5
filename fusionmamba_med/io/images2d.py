"""Reading and writing 2D images (PNG, JPEG, BMP, TIFF) as channel-first float arrays in [0, 1].

Reading (:func:`read_image2d`) returns ``(array, info)``: ``array`` is float32 ``(C, H, W)`` with C = 1 (grey) or
3 (RGB), rows first as stored in the file (EXIF orientation is *not* applied: fusion pairs are pixel-aligned as
stored); ``info`` is ``{"path", "bit_depth": 8 | 16, "full_scale", "mode": "L" | "RGB", "size": (H, W)}``.

- 8-bit data are divided by 255. 16-bit data are divided by 65535 (``sixteen_bit_range="container"``, the
  default), or by the full scale of the bits the image uses (``"data"``: ``2**k - 1`` for the smallest ``k`` that holds
  its largest value, e.g. 4095 for a 12-bit camera image in a 16-bit container, which would otherwise use only the
  lower sixteenth of [0, 1] and fuse dark). ``info["full_scale"]`` is the divisor; writing with
  ``write_image2d(..., full_scale=info["full_scale"])`` puts a result back in the input's units. Float TIFFs must
  already hold values in [0, 1] and are reported as 16-bit.
- Palette, CMYK, RGBA (alpha dropped) and the like become RGB; 1-bit and grey+alpha become grey.
- TIFF is read with ``tifffile`` (first page; multi-page files log a warning), everything else with Pillow.
- A missing, unreadable or truncated file raises :class:`~fusionmamba_med.errors.FusionInputError` naming it.

Writing (:func:`write_image2d`) is atomic: the image goes to a hidden temporary name in the target folder and is
renamed when complete. The format follows the extension; :func:`output_extension` gives the default one:

==============  ======  =========================================================
channels        bits    file
==============  ======  =========================================================
1 (grey)        8, 16   ``.png`` (16-bit grey PNG, Pillow mode ``I;16``)
3 (RGB)         8       ``.png``
3 (RGB)         16      ``.tif`` (PNG via Pillow cannot hold 16-bit RGB); a
                        ``.png`` path is changed to ``.tif`` and the real path
                        returned
==============  ======  =========================================================
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from fusionmamba_med.errors import FusionInputError
from fusionmamba_med.io.atomic import atomic_path

__all__ = ["read_image2d", "write_image2d", "output_extension", "image_size2d", "ImagePairWriter", "TIFF_EXTENSIONS"]

logger = logging.getLogger(__name__)

TIFF_EXTENSIONS = (".tif", ".tiff")
_PIL_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP"}


# ---------------------------------------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------------------------------------
SIXTEEN_BIT_RANGES = ("container", "data")


def _scale(arr: np.ndarray, path: Path, sixteen_bit_range: str = "container") -> tuple[np.ndarray, int, int]:
    """Integer/float pixel array -> (float32 in [0, 1], bit depth 8 | 16, full scale it was divided by)."""
    if arr.dtype == np.bool_:
        return arr.astype(np.float32), 8, 1
    if np.issubdtype(arr.dtype, np.integer):  # uint8, uint16, or Pillow "I" (int32) for some 16-bit files
        lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
        if lo < 0 or hi > 65535:
            raise FusionInputError(f"pixel values {lo}..{hi} ({arr.dtype}) do not fit 8 or 16 bits", path=path)
        depth = 8 if arr.dtype.itemsize == 1 else 16
        full = 255 if depth == 8 else 65535
        if depth == 16 and sixteen_bit_range == "data":
            full = max(2 ** max(hi, 1).bit_length() - 1, 1)
        return arr.astype(np.float32) / float(full), depth, full
    if np.issubdtype(arr.dtype, np.floating):
        finite = np.isfinite(arr).all()
        lo, hi = (float(arr.min()), float(arr.max())) if arr.size and finite else (0.0, 0.0)
        if not finite or lo < 0.0 or hi > 1.0:
            raise FusionInputError(f"float image with values outside [0, 1] ({lo:g}..{hi:g}) or not finite; "
                                   "save it as 8/16-bit or scale it to [0, 1]", path=path)
        return arr.astype(np.float32), 16, 65535
    raise FusionInputError(f"unsupported pixel type {arr.dtype}", path=path)


def _channels_first(arr: np.ndarray, path: Path) -> np.ndarray:
    """(H, W) | (H, W, C) -> (1 | 3, H, W); alpha dropped, grey+alpha -> grey."""
    if arr.ndim == 2:
        return arr[None]
    if arr.ndim == 3 and arr.shape[-1] in (1, 2, 3, 4):
        c = arr.shape[-1]
        keep = 1 if c <= 2 else 3
        return np.moveaxis(arr[..., :keep], -1, 0)
    raise FusionInputError(f"not a 2D grey or RGB image (array shape {arr.shape})", path=path)


def _read_pil(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        im.load()  # decode now: a truncated file fails here, not later
        mode = im.mode
        if mode in ("1", "L", "I;16", "I;16B", "I;16L", "I;16N", "I", "RGB"):
            pass
        elif mode == "LA":
            im = im.convert("L")
        elif mode in ("P", "PA"):
            im = im.convert("RGB")
        elif mode == "F":
            pass
        else:  # RGBA, CMYK, YCbCr, LAB, HSV, RGBX, ...
            im = im.convert("RGB")
        arr = np.asarray(im)
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return _channels_first(arr, path)


def _read_tiff(path: Path) -> np.ndarray | None:
    """First page as (C, H, W); None for palette images (left to Pillow)."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        if not tif.pages:
            raise FusionInputError("TIFF file without images", path=path)
        page = tif.pages[0]
        if len(tif.pages) > 1:
            logger.warning("%s holds %d pages; only the first is used", path, len(tif.pages))
        photometric = getattr(page.photometric, "name", str(page.photometric))
        if photometric == "PALETTE":
            return None  # Pillow applies the colour map
        arr = page.asarray()
        axes = page.axes
    if "S" in axes and axes.index("S") < axes.index("Y"):  # planar configuration: (S, Y, X)
        arr = np.moveaxis(arr, axes.index("S"), -1)
    arr = np.squeeze(arr) if arr.ndim > 3 else arr
    if photometric == "MINISWHITE":
        arr = (np.iinfo(arr.dtype).max - arr) if np.issubdtype(arr.dtype, np.integer) else 1.0 - arr
    return _channels_first(arr, path)


def read_image2d(path: str | os.PathLike, sixteen_bit_range: str = "container") -> tuple[np.ndarray, dict[str, Any]]:
    """Read a 2D image as float32 ``(C, H, W)`` in [0, 1] (C = 1 grey, 3 RGB) and its info
    ``{"path", "bit_depth": 8 | 16, "full_scale", "mode": "L" | "RGB", "size": (H, W)}``.

    ``sixteen_bit_range``: ``"container"`` (16-bit data / 65535) or ``"data"`` (/ the full scale of the bits the
    image uses, see the module docstring). Raises :class:`FusionInputError` naming the file when it is missing, not
    an image, truncated or of an unsupported kind.
    """
    if sixteen_bit_range not in SIXTEEN_BIT_RANGES:
        raise ValueError(f"sixteen_bit_range must be one of {SIXTEEN_BIT_RANGES}, not {sixteen_bit_range!r}")
    path = Path(path)
    if not path.is_file():
        raise FusionInputError("image file not found", path=path)
    try:
        arr = _read_tiff(path) if path.suffix.lower() in TIFF_EXTENSIONS else None
        if arr is None:
            arr = _read_pil(path)
    except FusionInputError:
        raise
    except Exception as err:  # PIL.UnidentifiedImageError, OSError (truncated), tifffile errors, ...
        raise FusionInputError(f"cannot read the image ({type(err).__name__}: {err})", path=path) from err
    data, depth, full_scale = _scale(arr, path, sixteen_bit_range)
    if data.shape[1] < 1 or data.shape[2] < 1:
        raise FusionInputError(f"empty image (shape {data.shape})", path=path)
    data = np.ascontiguousarray(data, dtype=np.float32)
    info = {"path": str(path), "bit_depth": depth, "full_scale": full_scale,
            "mode": "RGB" if data.shape[0] == 3 else "L", "size": (int(data.shape[1]), int(data.shape[2]))}
    return data, info


def image_size2d(path: str | os.PathLike) -> tuple[int, int]:
    """(H, W) of an image from its header only (cheap). Raises :class:`FusionInputError` naming the file."""
    path = Path(path)
    try:
        if path.suffix.lower() in TIFF_EXTENSIONS:
            import tifffile

            with tifffile.TiffFile(path) as tif:
                page = tif.pages[0]
                return int(page.imagelength), int(page.imagewidth)
        from PIL import Image

        with Image.open(path) as im:
            return int(im.height), int(im.width)
    except Exception as err:
        raise FusionInputError(f"cannot read the image header ({type(err).__name__}: {err})", path=path) from err


# ---------------------------------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------------------------------
def output_extension(channels: int, bit_depth: int) -> str:
    """Default file extension for an image of ``channels`` (1 | 3) at ``bit_depth`` (8 | 16): ``.png``, except
    16-bit RGB, which is ``.tif``."""
    return ".tif" if (channels == 3 and bit_depth == 16) else ".png"


def _to_hwc(array, bit_depth: int, full_scale: int | None = None) -> np.ndarray:
    if hasattr(array, "detach"):  # torch tensor
        array = array.detach().cpu().numpy()
    arr = np.asarray(array, dtype=np.float64)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[0] not in (1, 3):
        raise ValueError(f"expected a (1 | 3, H, W) image, got shape {arr.shape}")
    top = full_scale or (255 if bit_depth == 8 else 65535)
    arr = np.rint(np.clip(np.nan_to_num(arr, nan=0.0), 0.0, 1.0) * top)
    arr = arr.astype(np.uint8 if bit_depth == 8 else np.uint16)
    return arr[0] if arr.shape[0] == 1 else np.moveaxis(arr, 0, -1)


def write_image2d(path: str | os.PathLike, array, bit_depth: int = 8, full_scale: int | None = None) -> Path:
    """Write ``array`` ((C, H, W) or (H, W), C = 1 | 3, values in [0, 1], clipped) as an 8- or 16-bit image,
    atomically; 1.0 becomes ``full_scale`` (default 255 or 65535; e.g. 4095 for 12-bit data in a 16-bit file).
    The format follows the extension (.png, .tif/.tiff, .jpg/.jpeg, .bmp; JPEG/BMP 8-bit only). 16-bit RGB to a
    ``.png`` path is written as ``.tif`` instead. Returns the path written."""
    if bit_depth not in (8, 16):
        raise ValueError(f"bit_depth must be 8 or 16, not {bit_depth!r}")
    if full_scale is not None and not 1 <= int(full_scale) <= (255 if bit_depth == 8 else 65535):
        raise ValueError(f"full_scale {full_scale!r} does not fit {bit_depth}-bit pixels")
    path = Path(path)
    pixels = _to_hwc(array, bit_depth, None if full_scale is None else int(full_scale))
    ext = path.suffix.lower()
    if ext not in TIFF_EXTENSIONS and ext not in _PIL_FORMATS:
        raise ValueError(f"unsupported output extension {path.suffix!r} ({path})")
    if bit_depth == 16 and ext in (".jpg", ".jpeg", ".bmp"):
        raise ValueError(f"{path.suffix} cannot hold 16-bit data; use .png or .tif")
    if bit_depth == 16 and pixels.ndim == 3 and ext == ".png":
        path = path.with_suffix(".tif")
        ext = ".tif"
        logger.info("16-bit RGB is written as TIFF: %s", path)
    with atomic_path(path) as tmp:
        if ext in TIFF_EXTENSIONS:
            import tifffile

            tifffile.imwrite(tmp, pixels, photometric="rgb" if pixels.ndim == 3 else "minisblack")
        else:
            from PIL import Image

            Image.fromarray(pixels).save(tmp, format=_PIL_FORMATS[ext])
    return path


class ImagePairWriter:
    """Write fused 2D pairs as ``<output_dir>/<safe name>.png`` (``.tif`` for 16-bit RGB), shaped like
    :class:`fusionmamba_med.io.writers.FusedVolumeWriter` (``output_path``, ``exists``, ``overwrite``, never over an
    input).

    Args:
        output_dir: where the images go (created on the first write).
        overwrite: existing output: ``"skip"`` (keep it, write nothing), ``"overwrite"`` (replace it atomically) or
            ``"error"`` (raise :class:`FusionInputError`).
        output_bit_depth: ``"auto"`` (16 if either input is 16-bit, else 8), 8 or 16; see :meth:`bit_depth_and_scale`.
    """

    EXTENSIONS = (".png", ".tif")

    def __init__(self, output_dir: str | os.PathLike, overwrite: str = "skip", output_bit_depth: str | int = "auto"):
        from fusionmamba_med.io.writers import OVERWRITE_POLICIES

        if overwrite not in OVERWRITE_POLICIES:
            raise ValueError(f"overwrite must be one of {OVERWRITE_POLICIES}, not {overwrite!r}")
        if output_bit_depth not in ("auto", 8, 16):
            raise ValueError(f"output_bit_depth must be 'auto', 8 or 16, not {output_bit_depth!r}")
        self.output_dir = Path(output_dir)
        self.overwrite = overwrite
        self.output_bit_depth = output_bit_depth

    def output_path(self, name: str, channels: int = 1, bit_depth: int = 8) -> Path:
        """Final path of ``name``'s output for an image of ``channels`` at ``bit_depth``."""
        from fusionmamba_med.io.naming import safe_name

        return self.output_dir / f"{safe_name(name)}{output_extension(int(channels), int(bit_depth))}"

    def existing(self, name: str) -> Path | None:
        """The output already written for ``name`` (``.png`` or ``.tif``), if any."""
        from fusionmamba_med.io.naming import safe_name

        for ext in self.EXTENSIONS:
            path = self.output_dir / f"{safe_name(name)}{ext}"
            if path.exists():
                return path
        return None

    def exists(self, name: str) -> bool:
        return self.existing(name) is not None

    def bit_depth_and_scale(self, input_infos) -> tuple[int, int]:
        """Output bit depth and full scale (the pixel value of 1.0) from the inputs' ``read_image2d`` infos: 255 for
        8-bit output; for 16-bit output the largest full scale of the 16-bit inputs (65535, or e.g. 4095 when 12-bit
        inputs were read with ``sixteen_bit_range="data"``), so the result keeps their units."""
        infos = [i for i in input_infos if isinstance(i, dict)]
        depth = 16 if any(i.get("bit_depth") == 16 for i in infos) else 8
        if self.output_bit_depth != "auto":
            depth = int(self.output_bit_depth)
        if depth != 16:
            return depth, 255
        scales = [int(i["full_scale"]) for i in infos if i.get("bit_depth") == 16 and i.get("full_scale")]
        return 16, max(scales, default=65535)

    def __call__(self, fused, name: str, bit_depth: int = 8, full_scale: int | None = None,
                 input_paths=()) -> Path:
        """Write ``fused`` ((1 | 3, H, W) in [0, 1]) for ``name`` and return the path written."""
        path = self.output_path(name, int(fused.shape[0]), bit_depth)
        inputs = {os.path.realpath(str(p)) for p in input_paths if p}
        if os.path.realpath(path) in inputs:
            raise FusionInputError("the output would overwrite an input image; choose another output_dir",
                                   study=name, path=path)
        existing = self.existing(name)
        if existing is not None and self.overwrite == "skip":
            logger.info("pair '%s': output exists, skipped: %s", name, existing)
            return existing
        if existing is not None and self.overwrite == "error":
            raise FusionInputError("output exists (overwrite='error')", study=name, path=existing)
        return write_image2d(path, fused, bit_depth=bit_depth, full_scale=full_scale)
