"""FusionLoss: the unsupervised structure / intensity / gradient loss of FusionMamba."""

import pytest
import torch

from fusionmamba_med.losses import FusionLoss, sobel_magnitude


def _sources(n: int = 2, size: int = 24) -> torch.Tensor:
    torch.manual_seed(0)
    return torch.rand(n, 2, size, size)


def test_forward_is_a_scalar_and_components_add_up():
    loss = FusionLoss()
    sources = _sources()
    fused = sources.mean(dim=1, keepdim=True)
    parts = loss.components(fused, sources)
    assert set(parts) == {"ssim", "int", "grad", "total"}  # no Qabf term at its default weight 0
    assert loss(fused, sources).shape == ()
    expected = 10 * parts["ssim"] + 10 * parts["int"] + 1 * parts["grad"]
    assert torch.allclose(parts["total"], expected)
    assert torch.allclose(loss(fused, sources), expected)
    assert all(parts[k] > 0 for k in ("ssim", "int", "grad"))


def test_qabf_term_is_one_minus_the_qabf_metric_and_adds_to_the_total():
    import numpy as np

    from fusionmamba_med.metrics import qabf

    sources = (_sources(n=1, size=32) * 255).round() / 255
    fused = (sources.amax(dim=1, keepdim=True) * 0.7 + sources.mean(dim=1, keepdim=True) * 0.3)
    fused = (fused * 255).round() / 255
    off, on = FusionLoss().components(fused, sources), FusionLoss(w_qabf=2.0).components(fused, sources)
    assert "qabf" not in off and "qabf" in on  # computed and logged only when weighted
    to8 = lambda x: (x[0, 0].numpy() * 255).round().astype(np.uint8)  # noqa: E731
    metric = qabf(to8(fused), to8(sources[:, 0:1]), to8(sources[:, 1:2]))
    assert on["qabf"].item() == pytest.approx(1.0 - metric, abs=1e-3)  # float32 here, float64 in the metric
    assert torch.allclose(on["total"], off["total"] + 2.0 * on["qabf"])


def test_qabf_term_has_finite_gradients_that_favour_the_source_edges():
    sources = torch.zeros(1, 2, 32, 32)
    sources[:, 0, :, 16:] = 1.0  # A: a vertical edge
    sources[:, 1, 16:, :] = 0.5  # B: a horizontal edge
    flat = torch.full((1, 1, 32, 32), 0.4, requires_grad=True)
    loss = FusionLoss(w_ssim=0.0, w_int=0.0, w_grad=0.0, w_qabf=1.0)
    loss(flat + 0.01 * torch.rand(1, 1, 32, 32), sources).backward()
    assert torch.isfinite(flat.grad).all() and flat.grad.abs().sum() > 0
    assert loss(sources.amax(dim=1, keepdim=True), sources) < loss(sources.mean(dim=1, keepdim=True) * 0 + 0.4, sources)


def test_structure_margin_makes_ssim_a_floor_relative_to_averaging():
    sources = _sources(n=2, size=32)
    mean, brighter = sources.mean(dim=1, keepdim=True), sources.amax(dim=1, keepdim=True)
    plain = FusionLoss().components(brighter, sources)["ssim"] - FusionLoss().components(mean, sources)["ssim"]
    assert plain > 0.05  # the max rule is further from both sources' structure than their average
    assert FusionLoss(structure_margin=0.0).components(mean, sources)["ssim"].item() == 0.0
    assert FusionLoss(structure_margin=0.0).components(brighter, sources)["ssim"].item() == pytest.approx(plain.item())
    assert FusionLoss(structure_margin=plain.item() + 0.01).components(brighter, sources)["ssim"].item() == 0.0


def test_intensity_term_is_zero_for_the_pixelwise_max():
    sources = _sources()
    parts = FusionLoss().components(sources.max(dim=1, keepdim=True).values, sources)
    assert parts["int"].item() == pytest.approx(0.0, abs=1e-12)
    assert parts["ssim"].item() > 0.05  # random sources: the max is not structurally equal to either


def test_all_terms_vanish_when_fused_and_both_sources_agree():
    torch.manual_seed(1)
    image = torch.rand(1, 1, 20, 20)
    parts = FusionLoss().components(image, image.repeat(1, 2, 1, 1))
    for name in ("ssim", "int", "grad", "total"):
        assert parts[name].item() == pytest.approx(0.0, abs=1e-5), name


def test_gradient_term_is_zero_when_fused_keeps_the_stronger_edges():
    # A carries a vertical step, B is flat: keeping A's structure matches max(|Sobel A|, |Sobel B|) exactly.
    a = torch.zeros(1, 1, 16, 16)
    a[..., 8:] = 0.8
    b = torch.full_like(a, 0.3)
    parts = FusionLoss().components(a, torch.cat([a, b], dim=1))
    assert parts["grad"].item() == pytest.approx(0.0, abs=1e-7)
    assert FusionLoss().components(b, torch.cat([a, b], dim=1))["grad"].item() > 0.1


def test_weights_scale_the_terms():
    sources = _sources()
    fused = 0.3 * sources[:, :1] + 0.2
    base = FusionLoss().components(fused, sources)
    only_int = FusionLoss(w_ssim=0, w_int=1, w_grad=0)(fused, sources)
    assert torch.allclose(only_int, base["int"])
    doubled = FusionLoss(w_ssim=20, w_int=10, w_grad=1)(fused, sources)
    assert torch.allclose(doubled - base["total"], 10 * base["ssim"])


def test_fused_is_clamped_to_unit_range():
    sources = _sources()
    fused = sources.max(dim=1, keepdim=True).values
    out_of_range = torch.where(fused > 0.9, 3.0, torch.where(fused < 0.2, -2.0, fused))
    loss = FusionLoss()
    assert torch.allclose(loss(out_of_range, sources), loss(out_of_range.clamp(0.0, 1.0), sources))
    target = sources.max(dim=1, keepdim=True).values
    clamped_mse = torch.mean((out_of_range.clamp(0.0, 1.0) - target) ** 2)
    assert torch.allclose(loss.components(out_of_range, sources)["int"], clamped_mse)
    assert torch.mean((out_of_range - target) ** 2) > 10 * clamped_mse  # what it would be without the clamp


def test_gradient_flows_to_the_fused_image():
    sources = _sources()
    fused = (0.25 + 0.5 * torch.rand(2, 1, 24, 24)).requires_grad_()
    FusionLoss()(fused, sources).backward()
    assert fused.grad is not None and fused.grad.abs().sum() > 0 and torch.isfinite(fused.grad).all()


@pytest.mark.parametrize(
    "fused_shape, sources_shape, match",
    [
        ((2, 2, 24, 24), (2, 2, 24, 24), r"\[N, 1, H, W\]"),
        ((2, 1, 24, 24), (2, 1, 24, 24), r"\[N, 2, H, W\]"),
        ((1, 1, 24, 24), (2, 2, 24, 24), "batch size"),
        ((2, 1, 24, 20), (2, 2, 24, 24), "batch size or H, W"),
        ((2, 1, 8, 8), (2, 2, 8, 8), "SSIM window"),
        ((1, 24, 24), (2, 24, 24), r"\[N, 1, H, W\]"),
    ],
)
def test_bad_shapes_raise_a_clear_error(fused_shape, sources_shape, match):
    with pytest.raises(ValueError, match=match):
        FusionLoss()(torch.rand(fused_shape), torch.rand(sources_shape))


def test_sobel_magnitude_of_a_ramp():
    yy, xx = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
    ramp = (xx + 2 * yy)[None, None]  # +1 per column, +2 per row
    mag = sobel_magnitude(ramp)
    assert mag.shape == ramp.shape
    # |Gx| = 1 * (1 + 2 + 1) * 2 = 8, |Gy| = 2 * 8 = 16, summed (not the Euclidean norm)
    assert torch.allclose(mag[..., 1:-1, 1:-1], torch.full((6, 6), 24.0))


def test_l1_intensity_and_mean_target():
    sources = _sources()
    fused = 0.3 * sources[:, :1] + 0.2
    l1 = FusionLoss(w_ssim=0, w_int=1, w_grad=0, intensity="l1")(fused, sources)
    assert torch.allclose(l1, (fused - sources.max(dim=1, keepdim=True).values).abs().mean())
    mean = FusionLoss(w_ssim=0, w_int=1, w_grad=0, intensity_target="mean")(fused, sources)
    assert torch.allclose(mean, ((fused - sources.mean(dim=1, keepdim=True)) ** 2).mean())
    # the mean of the sources is its own optimum under the mean target
    assert FusionLoss(w_ssim=0, w_grad=0, intensity_target="mean")(sources.mean(1, keepdim=True), sources) < 1e-12


def test_ms_ssim_structure_term():
    torch.manual_seed(2)
    image = torch.rand(2, 1, 48, 48)
    same = FusionLoss(structure="ms_ssim", ms_ssim_scales=2).components(image, image.repeat(1, 2, 1, 1))
    assert same["ssim"].item() == pytest.approx(0.0, abs=1e-5)
    other = torch.rand(2, 2, 48, 48, requires_grad=False)
    fused = image.clone().requires_grad_(True)
    loss = FusionLoss(structure="ms_ssim", ms_ssim_scales=2)(fused, other)
    loss.backward()
    assert torch.isfinite(fused.grad).all() and fused.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="H and W must be >= 41"):
        FusionLoss(structure="ms_ssim", ms_ssim_scales=3)(image[..., :32, :32], other[..., :32, :32])  # 3 scales need (11 - 1) * 4 + 1 pixels


@pytest.mark.parametrize("kwargs", [{"intensity": "l2"}, {"intensity_target": "a"}, {"structure": "mssim"},
                                    {"ms_ssim_scales": 6}])
def test_unknown_forms_are_refused(kwargs):
    with pytest.raises(ValueError):
        FusionLoss(**kwargs)
