import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from fusionmamba_med.transforms.colour import (
    COLORMAPS,
    Colormapd,
    RestoreColord,
    SplitLumad,
    apply_colormap,
    rgb_to_ycbcr,
    ycbcr_to_rgb,
)

AFFINE = torch.tensor([[0.0, 0.0, 2.0, -10.0], [-0.9, 0.0, 0.0, 5.0], [0.0, 0.9, 0.0, 3.0], [0, 0, 0, 1.0]],
                      dtype=torch.float64)


def test_round_trip_numpy_and_torch():
    rgb = np.random.default_rng(0).random((3, 4, 5, 6))
    np.testing.assert_allclose(ycbcr_to_rgb(rgb_to_ycbcr(rgb)), rgb, atol=1e-12)
    t = torch.rand(3, 7, 8)
    back = ycbcr_to_rgb(rgb_to_ycbcr(t))
    assert back.dtype == torch.float32
    torch.testing.assert_close(back, t, atol=1e-6, rtol=0)


def test_known_values():
    grey = np.full((3, 2, 2), 0.3)
    ycc = rgb_to_ycbcr(grey)
    np.testing.assert_allclose(ycc[0], 0.3)
    np.testing.assert_allclose(ycc[1:], 0.5, atol=1e-12)  # no chroma
    red = np.array([1.0, 0.0, 0.0]).reshape(3, 1)
    np.testing.assert_allclose(rgb_to_ycbcr(red).ravel(), [0.299, 0.5 - 0.168736, 1.0], atol=1e-6)
    blue = np.array([0.0, 0.0, 1.0]).reshape(3, 1)
    np.testing.assert_allclose(rgb_to_ycbcr(blue).ravel(), [0.114, 1.0, 0.5 - 0.081312], atol=1e-6)
    np.testing.assert_allclose(ycbcr_to_rgb(np.array([0.5, 0.5, 1.0]).reshape(3, 1)).ravel(),
                               [0.5 + 0.701, 0.5 - 0.357068, 0.5], atol=1e-5)


def test_channel_axis_of_a_batch():
    batch = torch.rand(2, 3, 4, 4)
    ycc = rgb_to_ycbcr(batch, dim=1)
    torch.testing.assert_close(ycc[1], rgb_to_ycbcr(batch[1]))
    with pytest.raises(ValueError):
        rgb_to_ycbcr(torch.rand(1, 4, 4))


def test_hot_colormap_values_and_type():
    x = MetaTensor(torch.tensor([0.0, 0.5, 1.0, 2.0]).reshape(1, 4, 1, 1), affine=AFFINE)
    rgb = apply_colormap(x, "hot")
    assert isinstance(rgb, MetaTensor) and rgb.shape == (3, 4, 1, 1) and torch.equal(rgb.affine, AFFINE)
    np.testing.assert_allclose(rgb[:, 0].flatten().numpy(), [0.0416, 0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(rgb[:, 2].flatten().numpy(), [1.0, 1.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(rgb[:, 3].flatten().numpy(), [1.0, 1.0, 1.0], atol=1e-6)  # clipped input
    luma = rgb_to_ycbcr(apply_colormap(np.linspace(0, 1, 50)[None], "hot"))[0]
    assert np.all(np.diff(luma) >= -1e-9)  # "hot" brightens monotonically


@pytest.mark.parametrize("name", ["hot", "jet", "rainbow", "gray"])
def test_builtin_maps_match_matplotlib(name):
    matplotlib = pytest.importorskip("matplotlib")
    v = np.arange(256) / 255.0  # exactly matplotlib's 256 table entries
    ours = apply_colormap(v[None], name)
    theirs = matplotlib.colormaps[name](v)[:, :3].T
    np.testing.assert_allclose(ours, theirs, atol=1e-6)
    assert name in COLORMAPS


def test_unknown_colormap_is_refused():
    with pytest.raises(ValueError, match="unknown colour map"):
        Colormapd(keys="moving", name="no_such_map")


def test_split_and_restore_colour_keep_geometry():
    rgb = MetaTensor(torch.rand(3, 4, 5, 6), affine=AFFINE, meta={"source_path": "/data/p01/pet.nii.gz"})
    d = SplitLumad(keys="moving")({"moving": rgb})
    y, cbcr = d["moving"], d["moving_cbcr"]
    assert y.shape == (1, 4, 5, 6) and cbcr.shape == (2, 4, 5, 6)
    assert isinstance(y, MetaTensor) and torch.equal(y.affine, AFFINE)
    torch.testing.assert_close(y.as_tensor()[0], (0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]).as_tensor())
    restored = RestoreColord(keys="pred", cbcr_key="moving_cbcr")({"pred": y.clone(), "moving_cbcr": cbcr})["pred"]
    assert isinstance(restored, MetaTensor) and restored.shape == (3, 4, 5, 6)
    assert torch.equal(restored.affine, AFFINE) and restored.meta["source_path"] == "/data/p01/pet.nii.gz"
    torch.testing.assert_close(restored.as_tensor(), rgb.as_tensor(), atol=1e-5, rtol=0)


def test_restore_clips_and_checks_shapes():
    cbcr = torch.full((2, 3, 3), 0.5)
    cbcr[1] = 1.0  # strongly red
    out = RestoreColord(keys="pred", cbcr_key="c")({"pred": torch.full((1, 3, 3), 0.9), "c": cbcr})["pred"]
    assert out.min() >= 0.0 and out.max() <= 1.0 and torch.all(out[0] == 1.0)
    with pytest.raises(ValueError, match="spatial shape"):
        RestoreColord(keys="pred", cbcr_key="c")({"pred": torch.rand(1, 4, 3), "c": cbcr})
    with pytest.raises(KeyError, match="SplitLumad"):
        RestoreColord(keys="pred", cbcr_key="missing")({"pred": torch.rand(1, 3, 3)})


def test_grey_input_gets_neutral_chroma():
    grey = np.random.default_rng(1).random((1, 4, 4)).astype(np.float32)
    d = SplitLumad(keys="img", cbcr_suffix="_c")({"img": grey})
    np.testing.assert_array_equal(d["img"], grey)
    np.testing.assert_allclose(d["img_c"], 0.5)
    rgb = RestoreColord(keys="img", cbcr_key="img_c")(d)["img"]
    np.testing.assert_allclose(rgb, np.repeat(grey, 3, axis=0), atol=1e-6)


def test_colour_pipeline_of_the_bundle():
    """Colormapd -> SplitLumad -> (network) -> RestoreColord gives the colour-mapped image back when the fused Y is
    the input Y."""
    pet = MetaTensor(torch.rand(1, 5, 5, 3), affine=AFFINE)
    d = Colormapd(keys="moving", name="hot")({"moving": pet})
    coloured = d["moving"].clone()
    d = SplitLumad(keys="moving")(d)
    d["pred"] = d["moving"].clone()
    out = RestoreColord(keys="pred", cbcr_key="moving_cbcr")(d)["pred"]
    torch.testing.assert_close(out.as_tensor(), coloured.as_tensor(), atol=1e-5, rtol=0)
    assert torch.equal(out.affine, AFFINE)
