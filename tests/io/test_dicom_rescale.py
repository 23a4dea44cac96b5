"""DICOM modality rescale, slice by slice: every slice keeps its own ``stored * slope + intercept`` (as pydicom and
dcm2niix give it), whatever the first file's slope, as real PET and some CT series store it."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from fusionmamba_med.io.loading import load_volume
from tests.io._synth import phantom, write_dicom_series


def _pydicom_values(path) -> np.ndarray:
    """The slice's real-world values (rows, cols) by pydicom: stored * RescaleSlope + RescaleIntercept."""
    ds = pydicom.dcmread(path)
    return ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


def _assert_slices_match_pydicom(img, files) -> None:
    for k, f in enumerate(files):
        expected = _pydicom_values(f).astype(np.float32)  # our volumes are float32
        np.testing.assert_array_equal(img[0, :, :, k].numpy().T, expected, err_msg=f"slice {k}")


def _pet_counts(nz: int = 6) -> np.ndarray:
    """int16 stored values near the top of the range (so a wrong cast or wrap shows)."""
    return (phantom(nz=nz).astype(np.int32) * 50 + 2000).clip(-32768, 32767).astype(np.int16)


@pytest.mark.parametrize(
    "slopes",
    [
        [1.0, 2.0, 3.0, 4.0, 25.0, 50.0],  # integral slopes, slope 1 first (an empty slice often has slope 1)
        [1.0, 0.78, 0.0123, 1.5e-3, 2.75, 1.0],  # fractional SUV-like slopes after an integral first slope
        [0.0001, 3.0, 1.0, 0.5, 50.0, 7.25],  # fractional first slope
    ],
    ids=["integral", "fractional-after-integral", "fractional-first"],
)
def test_pet_per_slice_slopes_match_pydicom(tmp_path, slopes):
    info = write_dicom_series(tmp_path / "pet", vol=_pet_counts(), slope=slopes, modality="PT")
    img = load_volume(tmp_path / "pet")
    _assert_slices_match_pydicom(img, info["files"])
    # values above the int16 range survive (Bq/ml above 32,767 must not wrap around)
    assert float(img.max()) > 32767


def test_uniform_integral_slope_above_int16(tmp_path):
    info = write_dicom_series(tmp_path / "pet", vol=_pet_counts(), slope=50.0, modality="PT")
    img = load_volume(tmp_path / "pet")
    _assert_slices_match_pydicom(img, info["files"])
    assert float(img.max()) > 32767


def test_ct_mixed_intercepts(tmp_path):
    vol = phantom(nz=6)
    info = write_dicom_series(tmp_path / "ct", vol=vol, intercept=[-1024, -1024, -1000, 0, -1024, -1024.5],
                              modality="CT")
    img = load_volume(tmp_path / "ct")
    _assert_slices_match_pydicom(img, info["files"])


def test_values_not_cast_by_the_first_slice(tmp_path):
    """The failure this guards against: slope 1 first, then 0.78 -> stored 1 became SUV 0 instead of 0.78."""
    vol = np.ones((24, 20, 3), np.int16)
    write_dicom_series(tmp_path / "pet", vol=vol, slope=[1.0, 0.78, 0.78], modality="PT", shuffle=False)
    img = load_volume(tmp_path / "pet")
    np.testing.assert_allclose(img[0, :, :, 1:].numpy(), np.float32(0.78))
    np.testing.assert_array_equal(img[0, :, :, 0].numpy(), 1.0)
