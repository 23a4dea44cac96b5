import logging

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from fusionmamba_med.transforms.intensity import (
    CT_WINDOWS,
    PercentileNormalize,
    PercentileNormalized,
    WindowIntensity,
    WindowIntensityd,
)

AFFINE = torch.diag(torch.tensor([0.8, 0.8, 2.5, 1.0], dtype=torch.float64))


def _pet_like(seed=0) -> MetaTensor:
    rng = np.random.default_rng(seed)
    arr = rng.gamma(2.0, 1.5, size=(1, 10, 12, 8)).astype(np.float32)
    arr[0, 3, 4, 2] = 500.0  # a hot outlier that must not set the scale
    return MetaTensor(torch.from_numpy(arr), affine=AFFINE, meta={"source_path": "/data/p01/pet.nii.gz"})


def test_percentiles_of_the_whole_volume_map_to_0_and_1():
    img = _pet_like()
    out = PercentileNormalize(lower=1.0, upper=99.0)(img)
    lo, hi = np.percentile(img.numpy(), [1.0, 99.0])
    expected = np.clip((img.numpy() - lo) / (hi - lo), 0, 1)
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-6)
    assert out.dtype == torch.float32 and out.min() == 0.0 and out.max() == 1.0
    assert isinstance(out, MetaTensor) and torch.equal(out.affine, AFFINE)
    assert out.meta["source_path"] == "/data/p01/pet.nii.gz"
    unclipped = PercentileNormalize(lower=1.0, upper=99.0, clip=False)(img)
    assert float(unclipped.max()) == pytest.approx((500.0 - lo) / (hi - lo), rel=1e-5)  # the outlier, far above 1
    assert float(unclipped.max()) > 10.0


def test_normalisation_is_not_per_slice():
    arr = np.ones((1, 4, 4, 6), dtype=np.float32)
    arr[..., 3] = 10.0  # one bright slice
    arr[..., 0] = np.linspace(1.0, 2.0, 16).reshape(4, 4)  # a dim slice with some contrast
    out = PercentileNormalize(lower=0.0, upper=100.0)(arr)
    assert isinstance(out, np.ndarray)
    assert out[..., 3].min() == pytest.approx(1.0)
    assert out[..., 0].max() == pytest.approx(1.0 / 9.0)  # a per-slice scaling would stretch it to 1


def test_constant_volume_gives_zeros_and_a_warning(caplog):
    img = MetaTensor(torch.full((1, 3, 3, 3), 7.0), meta={"source_path": "/data/flat.nii.gz"})
    with caplog.at_level(logging.WARNING):
        out = PercentileNormalize()(img)
    assert torch.equal(out.as_tensor(), torch.zeros(1, 3, 3, 3))
    assert "constant" in caplog.text and "/data/flat.nii.gz" in caplog.text


def test_mostly_background_volume_falls_back_to_the_full_range():
    arr = np.zeros((1, 20, 20, 20), dtype=np.float32)
    arr[0, 10, 10, 10] = 4.0  # p0.5 == p99.5 == 0
    out = PercentileNormalize()(arr)
    assert np.isfinite(out).all() and out.max() == 1.0 and out.min() == 0.0


def test_nonzero_keeps_the_background_at_zero():
    arr = np.zeros((1, 6, 6, 6), dtype=np.float32)
    arr[0, 1:5, 1:5, 1:5] = np.linspace(10.0, 20.0, 64).reshape(4, 4, 4)
    out = PercentileNormalize(lower=0.0, upper=100.0, nonzero=True, clip=False)(arr)
    assert np.all(out[arr == 0] == 0.0)
    assert out[arr > 0].min() == pytest.approx(0.0) and out[arr > 0].max() == pytest.approx(1.0)
    whole = PercentileNormalize(lower=0.0, upper=100.0)(arr)
    assert whole[arr > 0].min() == pytest.approx(0.5)  # over all voxels, 10 sits half way between 0 and 20


def test_dictionary_normalisation_and_argument_checks():
    d = PercentileNormalized(keys="mri", lower=0.5, upper=99.5)({"mri": _pet_like(), "other": 3})
    assert float(d["mri"].max()) == 1.0 and d["other"] == 3
    with pytest.raises(ValueError):
        PercentileNormalize(lower=60, upper=40)


def test_ct_windows_map_hounsfield_units_to_unit_range():
    hu = MetaTensor(torch.tensor([-1024.0, 0.0, 40.0, 60.0, 80.0, 3000.0]).reshape(1, 6, 1, 1), affine=AFFINE)
    out = WindowIntensity("brain")(hu)
    np.testing.assert_allclose(out.flatten().numpy(), [0.0, 0.0, 0.5, 0.75, 1.0, 1.0], atol=1e-6)
    assert isinstance(out, MetaTensor) and torch.equal(out.affine, AFFINE) and out.dtype == torch.float32
    np.testing.assert_allclose(WindowIntensity((0.0, 100.0))(hu).flatten().numpy()[:3], [0.0, 0.5, 0.9], atol=1e-6)
    bone = WindowIntensity("bone")(hu).flatten().numpy()
    lo = CT_WINDOWS["bone"][0] - CT_WINDOWS["bone"][1] / 2
    assert bone[1] == pytest.approx((0.0 - lo) / CT_WINDOWS["bone"][1])
    assert WindowIntensity("Soft-Tissue").center == 40.0 and WindowIntensity("subdural").width == 215.0


def test_window_dictionary_and_bad_windows():
    d = WindowIntensityd(keys="moving", window="soft_tissue")({"moving": np.array([[[[-160.0, 240.0]]]])})
    np.testing.assert_allclose(d["moving"].ravel(), [0.0, 1.0], atol=1e-6)
    with pytest.raises(ValueError, match="unknown CT window"):
        WindowIntensity("lung_typo")
    with pytest.raises(ValueError):
        WindowIntensity((40.0, -5.0))
