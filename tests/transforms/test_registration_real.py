"""The default registration on real scanner anatomy: a real 3D T1 series (../shared/dicom_qa, GE MP-RAGE and the
Siemens XA30 enhanced T1) as the MRI, and as the moving image the same head moved by a known rigid motion (12 deg,
15 mm), resampled onto a coarser 2.5 mm grid with CT-like inverted, noisy intensities: a pair with real anatomy and a
known answer. Skipped when ../shared is absent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from fusionmamba_med.io import load_volume
from fusionmamba_med.transforms.registration import RegisterToFixed, target_registration_error, transform_from_info
from fusionmamba_med.transforms.sitk_bridge import metatensor_to_sitk

SERIES = Path(__file__).resolve().parents[3] / "shared" / "dicom_qa" / "series"


def _moved_copy(mri: sitk.Image, truth: sitk.Transform, seed: int = 0) -> sitk.Image:
    """The MRI's anatomy as the moving scanner sees it: p_moving = truth(p_fixed), on a 2.5 mm grid over the same
    field of view, intensities inverted (bright MRI tissue dark) with noise."""
    spacing = [2.5] * 3
    size = [int(round(n * s / 2.5)) for n, s in zip(mri.GetSize(), mri.GetSpacing())]
    grid = sitk.Image(size, sitk.sitkFloat32)
    grid.SetSpacing(spacing)
    grid.SetDirection(mri.GetDirection())
    centre = mri.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in mri.GetSize()])
    grid.SetOrigin(centre)
    grid.SetOrigin(np.asarray(centre) - np.asarray(grid.TransformContinuousIndexToPhysicalPoint(
        [(n - 1) / 2 for n in size])) + np.asarray(centre))
    # a moving voxel at q shows the fixed anatomy at truth^-1(q)
    moved = sitk.Resample(sitk.SmoothingRecursiveGaussian(mri, 1.0), grid, truth.GetInverse(), sitk.sitkLinear, 0.0)
    arr = sitk.GetArrayFromImage(moved)
    top = np.percentile(arr, 99.5)
    noise = np.random.default_rng(seed).normal(0, 0.02 * top, arr.shape)
    out = sitk.GetImageFromArray((np.where(arr > 0.05 * top, 1.2 * top - arr, 0.0) + noise).astype(np.float32))
    out.CopyInformation(grid)
    return out


@pytest.mark.parametrize("series", ["ge_mprage", "xa30_t1"])
def test_known_motion_is_recovered_on_real_anatomy(series):
    folder = SERIES / series
    if not folder.is_dir():
        pytest.skip("../shared/dicom_qa is absent")
    mri_volume = load_volume(folder, study=series)
    mri = sitk.Cast(metatensor_to_sitk(mri_volume), sitk.sitkFloat32)
    centre = mri.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in mri.GetSize()])
    truth = sitk.Euler3DTransform(centre, *np.radians([8.0, -6.0, 6.5]), (9.0, -8.0, 8.0))  # 12 deg, 15 mm
    moving = _moved_copy(mri, truth)
    info = RegisterToFixed(mode="rigid")(moving, mri_volume, study=series).meta["registration"]
    # score over points inside the head: a 60 mm cube around the grid centre
    points = np.asarray(centre) + np.array([[x, y, z] for x in (-30, 30) for y in (-30, 30) for z in (-30, 30)])
    tre = target_registration_error(transform_from_info(info), truth, points)
    assert tre.max() < 1.0, f"{series}: TRE {tre.round(2)} mm ({info['rotation_deg']:.1f} deg found)"
