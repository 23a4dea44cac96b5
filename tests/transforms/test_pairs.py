"""2D pair transforms (fusionmamba_med.transforms.pairs): load a pair, build the network input, restore colour."""

import numpy as np
import pytest
import torch
from monai.transforms import Compose

from fusionmamba_med.errors import FusionInputError
from fusionmamba_med.transforms.colour import is_color, rgb_to_ycbcr
from fusionmamba_med.transforms.pairs import LoadImagePaird, PairToFusionInput, PairToFusionInputd, RestorePairColord
from tests.synthetic import random_colour, random_green, random_grey, save_image


def _load(a_path, b_path, **kwargs):
    pipeline = Compose([LoadImagePaird(), PairToFusionInputd(**kwargs)])
    return pipeline({"name": "p", "a": str(a_path), "b": str(b_path)})


def test_ir_vis_fuses_visible_luma_and_keeps_its_chroma(tmp_path):
    vis, ir = random_colour(), random_grey()
    out = _load(save_image(tmp_path / "vi.png", vis), save_image(tmp_path / "ir.png", ir), task="ir_vis")
    ycc = torch.as_tensor(rgb_to_ycbcr(torch.from_numpy(np.moveaxis(vis, -1, 0) / 255.0).float()))
    assert out["image"].shape == (2, 8, 10) and out["image"].dtype == torch.float32
    torch.testing.assert_close(out["image"][0], ycc[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(out["image"][1], torch.from_numpy(ir / 255.0).float(), atol=1e-6, rtol=0)
    assert out["colour_source"] == "a"
    torch.testing.assert_close(out["cbcr"], ycc[1:], atol=1e-5, rtol=0)
    assert out["a_meta"]["mode"] == "RGB" and out["b_meta"]["bit_depth"] == 8


def test_identity_fusion_restores_the_original_colour_image(tmp_path):
    vis = random_colour()
    data = _load(save_image(tmp_path / "vi.png", vis), save_image(tmp_path / "ir.png", random_grey()), task="ir_vis")
    data["pred"] = data["image"][0:1]  # a "fusion" that returns the visible luma
    rgb = RestorePairColord()(data)["pred"]
    assert rgb.shape == (3, 8, 10)
    np.testing.assert_allclose(rgb.numpy(), np.moveaxis(vis, -1, 0) / 255.0, atol=2e-3)


def test_gfp_pc_keeps_the_green_hue(tmp_path):
    gfp, pc = random_green(), random_grey()
    data = _load(save_image(tmp_path / "GFP.png", gfp), save_image(tmp_path / "PC.png", pc), task="gfp_pc")
    assert data["colour_source"] == "a"
    data["pred"] = data["image"].mean(0, keepdim=True)  # fused luma mixes in phase contrast
    rgb = RestorePairColord()(data)["pred"]
    fused_ycc = torch.as_tensor(rgb_to_ycbcr(rgb))
    # chroma (hue) is GFP's wherever the RGB result is not clipped; green is the dominant channel
    unclipped = ((rgb > 0.01) & (rgb < 0.99)).all(0)
    assert unclipped.sum() > 10
    torch.testing.assert_close(fused_ycc[1:, unclipped], data["cbcr"][:, unclipped], atol=2e-3, rtol=0)
    assert (rgb[1] >= rgb[0]).all() and (rgb[1] >= rgb[2]).all()


def test_grey_stored_as_rgb_counts_as_grey(tmp_path):
    grey_rgb = np.repeat(random_grey()[..., None], 3, axis=-1)  # like TNO's IR images
    assert not is_color(np.moveaxis(grey_rgb, -1, 0) / 255.0)
    assert is_color(np.moveaxis(random_colour(), -1, 0) / 255.0)
    data = _load(save_image(tmp_path / "a.png", random_grey()), save_image(tmp_path / "b.png", grey_rgb), task="auto")
    assert data["colour_source"] is None and "cbcr" not in data
    np.testing.assert_allclose(data["image"][1].numpy(), grey_rgb[..., 0] / 255.0, atol=1e-5)
    data["pred"] = data["image"][1:]
    assert RestorePairColord()(data)["pred"].shape == (1, 8, 10)  # grey stays grey


def test_auto_takes_colour_from_whichever_image_has_it(tmp_path):
    data = _load(save_image(tmp_path / "mri.png", random_grey()), save_image(tmp_path / "pet.png", random_colour()), task="auto")
    assert data["colour_source"] == "b" and data["cbcr"].shape == (2, 8, 10)
    grey = _load(tmp_path / "mri.png", tmp_path / "pet.png", task="grey")
    assert grey["colour_source"] is None and "cbcr" not in grey
    ir_vis = _load(tmp_path / "mri.png", tmp_path / "pet.png", task="ir_vis")  # visible (A) is grey: no colour
    assert ir_vis["colour_source"] is None


def test_size_mismatch_names_both_files_unless_resize(tmp_path, caplog):
    a = save_image(tmp_path / "vi" / "s.png", random_colour(8, 10))
    b = save_image(tmp_path / "ir" / "s.png", random_grey(16, 20))
    with pytest.raises(Exception) as info:
        _load(a, b)
    cause = info.value
    while not isinstance(cause, FusionInputError):
        cause = cause.__cause__
    assert str(a) in str(cause) and str(b) in str(cause) and cause.study == "p"
    with caplog.at_level("WARNING"):
        out = _load(a, b, resize=True)
    assert out["image"].shape == (2, 8, 10) and "resizing" in caplog.text
    assert 0.0 <= float(out["image"].min()) and float(out["image"].max()) <= 1.0


def test_load_names_the_pair_and_file(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"junk")
    with pytest.raises(FusionInputError) as info:
        LoadImagePaird()({"name": "scene7", "a": str(bad), "b": str(bad)})
    assert info.value.study == "scene7" and info.value.path == str(bad)


def test_unknown_task_is_rejected():
    with pytest.raises(ValueError, match="task"):
        PairToFusionInputd(task="rgb")


def test_array_transform_gives_the_same_input_as_its_dictionary_twin(tmp_path):
    a, b = tmp_path / "vi.png", tmp_path / "ir.png"
    save_image(a, random_colour())
    save_image(b, random_grey())
    d = _load(a, b, task="ir_vis")
    image, cbcr, source = PairToFusionInput(task="ir_vis")(d["a"], d["b"])
    assert source == "a" and torch.equal(image, d["image"]) and torch.equal(cbcr, d["cbcr"])
