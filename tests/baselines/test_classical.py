"""Classical fusion baselines: shapes, ranges, identity, and the detail each rule keeps."""

import numpy as np
import pytest
import torch

from fusionmamba_med.baselines import (
    BASELINES,
    ClassicalFusionNet,
    average_fusion,
    laplacian_pyramid_fusion,
    max_abs_fusion,
    wavelet_fusion,
)
from fusionmamba_med.errors import FusionInputError


def _pair(shape=(33, 47), seed=0):
    rng = np.random.default_rng(seed)
    return rng.random(shape), rng.random(shape)


def test_registry_names_the_four_rules():
    assert BASELINES == {
        "average": average_fusion,
        "max_abs": max_abs_fusion,
        "laplacian": laplacian_pyramid_fusion,
        "wavelet": wavelet_fusion,
    }


@pytest.mark.parametrize("name", sorted(BASELINES))
@pytest.mark.parametrize("shape", [(33, 47), (64, 64), (7, 5), (2, 9)])
def test_rules_keep_shape_and_range(name, shape):
    a, b = _pair(shape)
    fused = BASELINES[name](a, b)
    assert isinstance(fused, np.ndarray) and fused.shape == shape and fused.dtype == np.float64
    assert fused.min() >= 0.0 and fused.max() <= 1.0
    assert np.isfinite(fused).all()


@pytest.mark.parametrize("name", sorted(BASELINES))
@pytest.mark.parametrize("shape", [(33, 47), (7, 5)])
def test_fusing_an_image_with_itself_returns_it(name, shape):
    a, _ = _pair(shape, seed=1)
    np.testing.assert_allclose(BASELINES[name](a, a), a, atol=1e-9)


def test_pixel_rules_known_values():
    a = np.array([[0.0, 0.2], [0.9, 0.5]])
    b = np.array([[1.0, 0.4], [0.1, 0.5]])
    np.testing.assert_allclose(average_fusion(a, b), [[0.5, 0.3], [0.5, 0.5]])
    np.testing.assert_allclose(max_abs_fusion(a, b), [[1.0, 0.4], [0.9, 0.5]])
    np.testing.assert_allclose(max_abs_fusion(np.array([[-0.8]]), np.array([[0.3]])), [[-0.8]])  # signed data


def test_torch_in_torch_out():
    a, b = (torch.from_numpy(x).float() for x in _pair((16, 20)))
    for rule in BASELINES.values():
        out = rule(a, b)
        assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and out.shape == (16, 20)
    torch.testing.assert_close(average_fusion(a, b), (a + b) / 2)


def _step_and_blob(size=64):
    yy, xx = np.mgrid[:size, :size]
    step = np.where(xx < size // 2, 0.2, 0.8)  # vertical edge in A
    blob = 0.5 + 0.4 * np.exp(-((xx - 16) ** 2 + (yy - 40) ** 2) / (2 * 3.0**2))  # small bright blob in B
    return step, blob


@pytest.mark.parametrize("rule", [laplacian_pyramid_fusion, wavelet_fusion])
def test_multiscale_rules_keep_the_step_from_a_and_the_blob_from_b(rule):
    a, b = _step_and_blob()
    fused = rule(a, b)
    averaged = average_fusion(a, b)

    def edge(img):
        return float(np.mean(img[:, 34] - img[:, 29]))

    def blob(img):
        return float(img[40, 16] - img[40, 6])

    assert edge(a) == pytest.approx(0.6) and blob(b) == pytest.approx(0.4, abs=0.01)
    assert edge(averaged) == pytest.approx(0.3, abs=1e-3)  # averaging halves both
    assert edge(fused) > 0.8 * edge(a)
    if rule is laplacian_pyramid_fusion:
        assert blob(fused) > 0.8 * blob(b)
    else:  # db2 details of a 3-pixel blob spread into the approximation, which is averaged
        assert blob(fused) > blob(averaged)


def test_levels_are_validated_and_mismatched_pairs_rejected():
    a, b = _pair((16, 16))
    with pytest.raises(ValueError, match="levels"):
        laplacian_pyramid_fusion(a, b, levels=0)
    with pytest.raises(FusionInputError, match="one shape"):
        average_fusion(a, b[:, :8])
    with pytest.raises(FusionInputError, match="H x W"):
        wavelet_fusion(a[None], b[None])


def test_classical_net_follows_the_network_contract():
    torch.manual_seed(0)
    image = torch.rand(3, 2, 31, 33)
    for name in BASELINES:
        net = ClassicalFusionNet(name)
        pred = net(image)
        assert pred.shape == (3, 1, 31, 33) and pred.dtype == image.dtype
        expected = BASELINES[name](image[1, 0].double().numpy(), image[1, 1].double().numpy())
        np.testing.assert_allclose(pred[1, 0].numpy(), expected, atol=1e-6)
    two_levels = ClassicalFusionNet("laplacian", levels=1)(image)
    assert not torch.allclose(two_levels, ClassicalFusionNet("laplacian")(image))
    assert "laplacian" in repr(ClassicalFusionNet("laplacian"))


def test_classical_net_runs_inside_a_monai_inferer_and_rejects_bad_input():
    from monai.inferers import SlidingWindowInferer

    image = torch.rand(1, 2, 40, 40)
    pred = SlidingWindowInferer(roi_size=(32, 32), overlap=0.25)(image, ClassicalFusionNet("average"))
    torch.testing.assert_close(pred, image.mean(dim=1, keepdim=True))
    with pytest.raises(ValueError, match=r"\[N, 2, H, W\]"):
        ClassicalFusionNet("average")(torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match="unknown fusion baseline"):
        ClassicalFusionNet("pca")
