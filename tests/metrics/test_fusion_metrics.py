"""Fusion metrics: known answers on hand-made images, input conventions, and one real MRI-CT pair."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from fusionmamba_med.errors import FusionInputError
from fusionmamba_med.metrics import (
    METRICS,
    ag,
    cc,
    en,
    evaluate_fusion,
    mi,
    psnr,
    qabf,
    scd,
    sd,
    sf,
    ssim,
    to_uint8_grey,
    vif,
)

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "MRI_CT"


def _random_uint8(seed: int, shape=(64, 64)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def _smooth_image(seed: int, size: int = 64) -> np.ndarray:
    """A structured (not white-noise) uint8 test image: blurred noise plus a bright disc."""
    from scipy.ndimage import gaussian_filter

    noise = gaussian_filter(np.random.default_rng(seed).random((size, size)), 2.0)
    yy, xx = np.mgrid[:size, :size]
    disc = ((yy - size / 3) ** 2 + (xx - size / 2) ** 2 < (size / 6) ** 2).astype(float)
    img = (noise - noise.min()) / (noise.max() - noise.min()) * 0.6 + 0.4 * disc
    return to_uint8_grey(img)


# --- conversions -------------------------------------------------------------------------------------------------


def test_to_uint8_grey_scales_floats_and_keeps_uint8():
    assert to_uint8_grey(np.array([[0.0, 0.5], [1.0, 0.2]])).tolist() == [[0, 128], [255, 51]]
    assert to_uint8_grey(np.array([[3, 250]], dtype=np.uint8)).tolist() == [[3, 250]]
    assert to_uint8_grey(np.array([[0, 65535, 257]], dtype=np.uint16)).tolist() == [[0, 255, 1]]


def test_to_uint8_grey_rgb_uses_bt601_luma():
    rgb = np.zeros((2, 2, 3), dtype=np.uint8)
    rgb[0, 0] = (255, 0, 0)
    rgb[0, 1] = (0, 255, 0)
    rgb[1, 0] = (0, 0, 255)
    rgb[1, 1] = (100, 100, 100)
    assert to_uint8_grey(rgb).tolist() == [[76, 150], [29, 100]]  # 0.299 / 0.587 / 0.114 of 255


def test_to_uint8_grey_accepts_network_shaped_tensors():
    pred = torch.full((1, 1, 4, 5), 0.5)
    out = to_uint8_grey(pred)
    assert out.shape == (4, 5) and out.dtype == np.uint8 and (out == 128).all()


@pytest.mark.parametrize(
    "bad",
    [np.full((4, 4), 200.0), np.full((4, 4), np.nan), np.zeros((4, 4, 2)), np.zeros((2, 5, 5)), np.zeros(5)],
)
def test_to_uint8_grey_rejects_what_it_cannot_read(bad):
    with pytest.raises(FusionInputError):
        to_uint8_grey(bad)


def test_shape_mismatch_is_a_fusion_input_error():
    with pytest.raises(FusionInputError, match="one shape"):
        mi(np.zeros((8, 8)), np.zeros((8, 8)), np.zeros((8, 9)))


# --- single-image metrics ----------------------------------------------------------------------------------------


def test_entropy_known_answers():
    assert en(np.full((16, 16), 77, dtype=np.uint8)) == 0.0
    half = np.zeros((16, 16), dtype=np.uint8)
    half[:, 8:] = 200
    assert en(half) == pytest.approx(1.0)
    four = np.repeat(np.array([[0, 60, 120, 240]], dtype=np.uint8), 4, axis=0)
    assert en(four) == pytest.approx(2.0)


def test_sd_is_population_std_on_the_255_scale():
    half = np.zeros((4, 4))
    half[:, 2:] = 1.0
    assert sd(half) == pytest.approx(127.5)


def test_sf_and_ag_of_a_constant_are_zero():
    flat = np.full((10, 12), 0.4)
    assert sf(flat) == 0.0
    assert ag(flat) == 0.0


def test_sf_and_ag_of_a_linear_ramp():
    yy, xx = np.mgrid[:10, :12]
    ramp = (2 * xx + 3 * yy).astype(np.uint8)
    assert sf(ramp) == pytest.approx(math.sqrt(2**2 + 3**2))
    assert ag(ramp) == pytest.approx(math.sqrt((2**2 + 3**2) / 2))


def test_sf_and_ag_of_a_quadratic_pin_the_difference_schemes():
    quad = np.repeat((np.arange(8) ** 2)[None].astype(np.uint8), 5, axis=0)  # 0 1 4 ... 49 along x
    # forward differences 1, 3, ..., 13: mean square 455 / 7 = 65
    assert sf(quad) == pytest.approx(math.sqrt(65))
    # MATLAB gradient: 1, 2, 4, 6, 8, 10, 12, 13 (one-sided at the ends) -> mean 7, divided by sqrt(2)
    assert ag(quad) == pytest.approx(7 / math.sqrt(2))


# --- metrics against the sources ---------------------------------------------------------------------------------


def test_mi_of_identical_images_is_twice_the_entropy():
    a = _random_uint8(0)
    assert mi(a, a, a) == pytest.approx(2 * en(a))
    independent = mi(a, _random_uint8(1), _random_uint8(2))
    assert 0 < independent < 0.5 * mi(a, a, a)


def test_qabf_is_its_maximum_for_identical_images():
    a = _smooth_image(0)
    best = 0.9994 / (1 + math.exp(-15 * 0.5)) * 0.9879 / (1 + math.exp(-22 * 0.2))
    assert best == pytest.approx(0.975, abs=0.01)
    assert qabf(a, a, a) == pytest.approx(best, abs=1e-9)
    b = _smooth_image(1)
    assert qabf((a.astype(float) + b) / 510, a, b) < qabf(a, a, a)
    assert qabf(np.zeros_like(a), a, b) < 0.05


def test_scd_of_the_average_matches_its_closed_form():
    rng = np.random.default_rng(3)
    a = (2 * rng.integers(0, 128, (32, 32))).astype(np.uint8)
    b = (2 * rng.integers(0, 128, (32, 32))).astype(np.uint8)
    f = ((a.astype(int) + b) // 2).astype(np.uint8)  # exact: a + b is even
    af, bf = a.astype(float).ravel(), b.astype(float).ravel()
    expected = np.corrcoef((af - bf) / 2, af)[0, 1] + np.corrcoef((bf - af) / 2, bf)[0, 1]
    assert scd(f, a, b) == pytest.approx(expected)
    assert expected == pytest.approx(math.sqrt(2), abs=0.1)  # independent, equal variance: 2 / sqrt(2)


def test_ssim_of_identical_images_is_one():
    a = _smooth_image(4)
    assert ssim(a, a, a) == pytest.approx(1.0)
    assert ssim(np.zeros_like(a), a, a) < 0.5
    with pytest.raises(FusionInputError, match="11 x 11"):
        ssim(np.zeros((8, 8)), np.zeros((8, 8)), np.zeros((8, 8)))


def test_psnr_known_value_and_infinity_for_identical():
    a = _random_uint8(5)
    assert psnr(a, a, a) == math.inf
    f, lo, hi = (np.full((8, 8), v, dtype=np.uint8) for v in (105, 100, 110))  # MSE 25 against both
    assert psnr(f, lo, hi) == pytest.approx(10 * math.log10(255**2 / 25))


def test_cc_is_symmetric_in_the_sources_and_cancels_for_a_negative():
    a, b, f = _smooth_image(6), _smooth_image(7), _smooth_image(8)
    assert cc(f, a, b) == pytest.approx(cc(f, b, a))
    assert cc(a, a, 255 - a) == pytest.approx(0.0, abs=1e-12)
    assert cc(a, a, a) == pytest.approx(1.0)
    assert cc(np.full_like(a, 9), a, b) == 0.0  # constant fused image: correlation undefined, counted as 0


def test_vif_sums_two_sources():
    a, b = _smooth_image(9), _smooth_image(10)
    assert vif(a, a, a) == pytest.approx(2.0, abs=1e-6)
    assert 0 < vif((a.astype(float) + b) / 510, a, b) < 1.5
    assert vif(np.zeros_like(a), a, b) == pytest.approx(0.0, abs=1e-6)


def test_evaluate_fusion_reports_every_metric_in_order_or_a_subset():
    a, b = _smooth_image(11), _smooth_image(12)
    f = (a.astype(float) + b) / 510
    scores = evaluate_fusion(f, a, b)
    assert list(scores) == list(METRICS) == ["EN", "SD", "SF", "AG", "MI", "SCD", "VIF", "Qabf", "SSIM", "PSNR", "CC"]
    assert scores["MI"] == pytest.approx(mi(f, a, b))
    assert scores["SSIM"] == pytest.approx(ssim(f, a, b))
    assert evaluate_fusion(f, a, b, metrics=["qabf", "EN"]) == {"Qabf": scores["Qabf"], "EN": scores["EN"]}
    with pytest.raises(KeyError, match="unknown fusion metric"):
        evaluate_fusion(f, a, b, metrics=["LPIPS"])


# --- a real pair -------------------------------------------------------------------------------------------------


@pytest.mark.skipif(not DATA.is_dir(), reason="shared MRI_CT data not available")
def test_real_mri_ct_pair_gives_finite_scores_and_average_beats_blank():
    from PIL import Image

    name = sorted(p.name for p in (DATA / "MRI").glob("*.png"))[0]
    mri = np.asarray(Image.open(DATA / "MRI" / name))  # stored as RGB
    ct = np.asarray(Image.open(DATA / "CT" / name))
    average = (to_uint8_grey(mri).astype(float) + to_uint8_grey(ct)) / 510
    scores = evaluate_fusion(average, mri, ct)
    assert all(math.isfinite(v) for v in scores.values()), scores
    blank = evaluate_fusion(np.zeros(average.shape), mri, ct, metrics=["SSIM", "Qabf", "MI"])
    assert scores["SSIM"] > blank["SSIM"] + 0.1
    assert scores["Qabf"] > blank["Qabf"] and scores["MI"] > blank["MI"]
