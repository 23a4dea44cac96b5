"""Reading and writing 2D images: PNG/JPG/BMP/TIFF, 8/16 bit, grey/RGB/palette/RGBA, atomic writes."""

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from fusionmamba_med.errors import FusionInputError
from fusionmamba_med.io.images2d import image_size2d, output_extension, read_image2d, write_image2d

RNG = np.random.default_rng(0)


def _grey8(h=12, w=10):
    return RNG.integers(0, 256, (h, w), dtype=np.uint8)


def _rgb8(h=12, w=10):
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("ext", [".png", ".bmp", ".tif"])
def test_grey_8bit_is_read_exactly(tmp_path, ext):
    pixels = _grey8()
    path = tmp_path / f"img{ext}"
    if ext == ".tif":
        tifffile.imwrite(path, pixels)
    else:
        Image.fromarray(pixels).save(path)
    image, info = read_image2d(path)
    assert image.shape == (1, 12, 10) and image.dtype == np.float32
    np.testing.assert_allclose(image[0], pixels / 255.0, atol=1e-7)
    assert info == {"path": str(path), "bit_depth": 8, "full_scale": 255, "mode": "L", "size": (12, 10)}


def test_rgb_png_is_channel_first(tmp_path):
    pixels = _rgb8()
    Image.fromarray(pixels).save(tmp_path / "rgb.png")
    image, info = read_image2d(tmp_path / "rgb.png")
    assert image.shape == (3, 12, 10) and info["mode"] == "RGB"
    np.testing.assert_allclose(image, np.moveaxis(pixels, -1, 0) / 255.0, atol=1e-7)


def test_jpeg_reads_close_to_source(tmp_path):
    pixels = np.tile(np.linspace(0, 255, 16, dtype=np.uint8), (16, 1))
    Image.fromarray(pixels).save(tmp_path / "img.jpg", quality=95)
    image, info = read_image2d(tmp_path / "img.jpg")
    assert info["bit_depth"] == 8 and image.shape == (1, 16, 16)
    assert np.abs(image[0] - pixels / 255.0).max() < 0.05


def test_rgba_drops_alpha_and_palette_becomes_rgb(tmp_path):
    rgba = np.dstack([_rgb8(), np.full((12, 10), 7, np.uint8)])
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    image, info = read_image2d(tmp_path / "rgba.png")
    assert info["mode"] == "RGB"
    np.testing.assert_allclose(image, np.moveaxis(rgba[..., :3], -1, 0) / 255.0, atol=1e-7)

    pal = Image.new("P", (4, 3))
    pal.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 9))
    pal.putdata([1, 2, 0, 1] * 3)
    pal.save(tmp_path / "pal.png")
    image, info = read_image2d(tmp_path / "pal.png")
    assert image.shape == (3, 3, 4) and info["mode"] == "RGB"
    np.testing.assert_array_equal(image[:, 0, 0], [1, 0, 0])  # index 1 = red
    np.testing.assert_array_equal(image[:, 0, 1], [0, 1, 0])  # index 2 = green


def test_16bit_grey_png_and_tiff_keep_full_precision(tmp_path):
    pixels = RNG.integers(0, 65536, (9, 7), dtype=np.uint16)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    tifffile.imwrite(tmp_path / "b.tif", pixels)
    for name in ("a.png", "b.tif"):
        image, info = read_image2d(tmp_path / name)
        assert info["bit_depth"] == 16 and info["mode"] == "L"
        np.testing.assert_allclose(image[0], pixels / 65535.0, atol=1e-7)


def test_16bit_planar_rgb_tiff(tmp_path):
    planes = RNG.integers(0, 65536, (3, 5, 6), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "rgb.tif", planes, photometric="rgb", planarconfig="separate")
    image, info = read_image2d(tmp_path / "rgb.tif")
    assert info == {"path": str(tmp_path / "rgb.tif"), "bit_depth": 16, "full_scale": 65535, "mode": "RGB",
                    "size": (5, 6)}
    np.testing.assert_allclose(image, planes / 65535.0, atol=1e-7)


@pytest.mark.parametrize("content", [b"", b"not an image at all", "truncated"])
def test_unreadable_files_raise_naming_the_file(tmp_path, content):
    path = tmp_path / "broken.png"
    if content == "truncated":
        Image.fromarray(_rgb8(64, 64)).save(path)
        path.write_bytes(path.read_bytes()[:200])
    else:
        path.write_bytes(content)
    with pytest.raises(FusionInputError, match="broken.png") as info:
        read_image2d(path)
    assert info.value.path == str(path)


def test_missing_file_raises(tmp_path):
    with pytest.raises(FusionInputError, match="not found"):
        read_image2d(tmp_path / "nope.png")


def test_image_size_reads_the_header(tmp_path):
    Image.fromarray(_grey8(13, 17)).save(tmp_path / "a.png")
    tifffile.imwrite(tmp_path / "b.tif", np.zeros((5, 6, 3), np.uint16), photometric="rgb")
    assert image_size2d(tmp_path / "a.png") == (13, 17)
    assert image_size2d(tmp_path / "b.tif") == (5, 6)
    (tmp_path / "c.png").write_bytes(b"xx")
    with pytest.raises(FusionInputError, match="c.png"):
        image_size2d(tmp_path / "c.png")


@pytest.mark.parametrize("channels,bit_depth", [(1, 8), (3, 8), (1, 16), (3, 16)])
def test_write_then_read_round_trip(tmp_path, channels, bit_depth):
    image = RNG.random((channels, 11, 13)).astype(np.float32)
    written = write_image2d(tmp_path / "out.png", image, bit_depth=bit_depth)
    assert written.suffix == output_extension(channels, bit_depth)
    assert written.suffix == (".tif" if (channels, bit_depth) == (3, 16) else ".png")
    back, info = read_image2d(written)
    assert info["bit_depth"] == bit_depth and back.shape == image.shape
    np.testing.assert_allclose(back, image, atol=0.5 / (2**bit_depth - 1) + 1e-6)
    assert [p.name for p in tmp_path.iterdir()] == [written.name]  # no temporary files left


def test_16bit_grey_png_is_a_16bit_png(tmp_path):
    written = write_image2d(tmp_path / "out.png", np.full((1, 3, 4), 0.5), bit_depth=16)
    with Image.open(written) as im:
        assert im.format == "PNG" and im.mode == "I;16"
        assert np.asarray(im)[0, 0] == 32768


def test_write_clips_and_accepts_tensors(tmp_path):
    torch = pytest.importorskip("torch")
    written = write_image2d(tmp_path / "t.png", torch.tensor([[[-1.0, 0.5, 2.0]]]), bit_depth=8)
    np.testing.assert_array_equal(np.asarray(Image.open(written)), [[0, 128, 255]])


def test_write_is_atomic(tmp_path, monkeypatch):
    write_image2d(tmp_path / "keep.png", np.zeros((1, 4, 4)), bit_depth=8)

    def broken_save(self, fp, *args, **kwargs):
        Path(fp).write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        write_image2d(tmp_path / "keep.png", np.ones((1, 4, 4)), bit_depth=8)
    assert [p.name for p in tmp_path.iterdir()] == ["keep.png"]  # old file intact, no partial file
    monkeypatch.undo()
    assert read_image2d(tmp_path / "keep.png")[0].max() == 0.0


def test_write_rejects_bad_requests(tmp_path):
    with pytest.raises(ValueError, match="bit_depth"):
        write_image2d(tmp_path / "a.png", np.zeros((1, 2, 2)), bit_depth=12)
    with pytest.raises(ValueError, match="16-bit"):
        write_image2d(tmp_path / "a.jpg", np.zeros((1, 2, 2)), bit_depth=16)
    with pytest.raises(ValueError, match="shape"):
        write_image2d(tmp_path / "a.png", np.zeros((2, 2, 2)), bit_depth=8)


def test_12bit_data_in_a_16bit_file_can_fill_the_range(tmp_path):
    """A 12-bit camera image in a 16-bit PNG: by the container it is dark (max 4000 / 65535); by its data it is
    divided by 4095, and written back with that full scale it keeps its units."""
    pixels = np.linspace(0, 4000, 12 * 16).reshape(12, 16).astype(np.uint16)
    Image.fromarray(pixels).save(tmp_path / "cam12.png")
    dark, info = read_image2d(tmp_path / "cam12.png")
    assert info["full_scale"] == 65535 and dark.max() == pytest.approx(4000 / 65535)
    full, info = read_image2d(tmp_path / "cam12.png", sixteen_bit_range="data")
    assert info["bit_depth"] == 16 and info["full_scale"] == 4095
    assert full.max() == pytest.approx(4000 / 4095)
    out = write_image2d(tmp_path / "back.png", full, bit_depth=16, full_scale=info["full_scale"])
    assert np.array_equal(np.asarray(Image.open(out)), pixels)  # the same 12-bit values, exactly
    assert read_image2d(out, sixteen_bit_range="data")[1]["full_scale"] == 4095
    with pytest.raises(ValueError, match="full_scale"):
        write_image2d(tmp_path / "bad.png", full, bit_depth=8, full_scale=4095)
    with pytest.raises(ValueError, match="sixteen_bit_range"):
        read_image2d(tmp_path / "cam12.png", sixteen_bit_range="auto")


def test_8bit_images_ignore_the_16bit_range(tmp_path):
    pixels = np.arange(0, 120, dtype=np.uint8).reshape(10, 12)
    Image.fromarray(pixels).save(tmp_path / "small.png")
    data, info = read_image2d(tmp_path / "small.png", sixteen_bit_range="data")
    assert info["full_scale"] == 255 and data.max() == pytest.approx(119 / 255)


def test_image_pair_writer_names_policies_and_inputs(tmp_path):
    from fusionmamba_med.io.images2d import ImagePairWriter

    fused = np.full((3, 4, 5), 0.5, np.float32)
    writer = ImagePairWriter(tmp_path, overwrite="error", output_bit_depth="auto")
    assert writer.output_path("../a b", 3, 16) == tmp_path / "a_b.tif" and not writer.exists("a_b")
    depth, scale = writer.bit_depth_and_scale([{"bit_depth": 16, "full_scale": 4095}, {"bit_depth": 8}, None])
    assert (depth, scale) == (16, 4095)
    path = writer(fused, "a_b", bit_depth=depth, full_scale=scale)
    assert path == tmp_path / "a_b.tif" and writer.existing("a_b") == path
    with pytest.raises(FusionInputError, match="overwrite='error'"):
        writer(fused, "a_b", bit_depth=depth, full_scale=scale)
    src = write_image2d(tmp_path / "in.png", fused[:1])
    with pytest.raises(FusionInputError, match="overwrite an input"):
        ImagePairWriter(tmp_path, overwrite="overwrite")(fused[:1], "in", input_paths=[src])
    assert ImagePairWriter(tmp_path, output_bit_depth=8).bit_depth_and_scale([{"bit_depth": 16}]) == (8, 255)
    with pytest.raises(ValueError):
        ImagePairWriter(tmp_path, overwrite="sometimes")
    with pytest.raises(ValueError):
        ImagePairWriter(tmp_path, output_bit_depth=12)
