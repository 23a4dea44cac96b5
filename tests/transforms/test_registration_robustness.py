"""What real studies bring to the default registration (elastix backend), scored by target registration error over
the head phantom's landmarks (lesion, eyes, ventricles, head centre): a start 21 degrees and 20 mm off, a moving
image that covers only a slab of the MRI, low-resolution noisy PET and SPECT, a CT with the couch and a head holder,
and the MRI's receive-coil bias field (the phantom MRI carries one, 0.85..1.15 over the head)."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from monai.data import MetaTensor

from fusionmamba_med.data import phantom
from fusionmamba_med.data.sample_medical import euler_transform_lps, grid_affine
from fusionmamba_med.transforms.registration import RegisterToFixed, target_registration_error, transform_from_info

FLIP = np.diag([-1.0, -1.0, 1.0, 1.0])
MRI_SHAPE, MRI_SPACING = (96, 96, 64), (2.2, 2.2, 2.4)
MARKS_LPS = np.array([FLIP[:3, :3] @ np.asarray(v) for v in phantom.landmarks().values()])


def _volume(values: np.ndarray, affine: np.ndarray) -> MetaTensor:
    return MetaTensor(torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))[None],
                      affine=torch.as_tensor(affine))


@pytest.fixture(scope="module")
def mri() -> MetaTensor:
    aff = grid_affine(MRI_SHAPE, MRI_SPACING, (0.0, -5.0, 0.0))
    return _volume(phantom.sample_on_grid(phantom.mri_t1, MRI_SHAPE, aff), aff)


def _moving(fn, shape, spacing, centre, rotation_deg, translation_mm, extra=None):
    """The phantom moved by a known rigid motion, sampled by ``fn`` on its own grid; ``extra(points_ras)`` adds
    what only the moving scanner sees (couch, holder). Returns (moving, true fixed -> moving transform)."""
    truth = euler_transform_lps(rotation_deg, translation_mm)
    inv_ras = FLIP @ np.linalg.inv(truth) @ FLIP  # the voxel at RAS q shows the anatomy at truth^-1 (q)
    aff = grid_affine(shape, spacing, centre)

    def values(p):
        v = fn(p @ inv_ras[:3, :3].T + inv_ras[:3, 3])
        return v if extra is None else extra(p, v)

    tx = sitk.AffineTransform(3)
    tx.SetMatrix([float(v) for v in truth[:3, :3].ravel()])
    tx.SetTranslation([float(v) for v in truth[:3, 3]])
    return _volume(phantom.sample_on_grid(values, shape, aff), aff), tx


def _couch_and_holder(points, hu):
    """A carbon-fibre couch (a 12 mm plate at 200 HU, 95 mm behind the head centre) and a U-shaped plastic head
    holder (100 HU) around the back of the head, in the CT only."""
    y, x = points[..., 1], points[..., 0]
    couch = (y < -95.0) & (y > -107.0)
    r = np.hypot(x / 1.05, y + 5.0)
    holder = (r > 100.0) & (r < 106.0) & (y < -20.0)
    return np.where(couch, 200.0, np.where(holder & (hu < -900), 100.0, hu)).astype(np.float32)


def _tre(mri, moving, truth, fill):
    info = RegisterToFixed(mode="rigid", fill_value=fill)(moving, mri, study="phantom").meta["registration"]
    return target_registration_error(transform_from_info(info), truth, MARKS_LPS), info


CASES = {
    # name: (values, moving shape, spacing (mm), centre (RAS), rotation (deg), translation (mm), extra, fill, max TRE)
    "ct-21deg-20mm": (phantom.ct_hu, (200, 200, 60), (1.1, 1.1, 2.5), (0, -5, 0), (12, -10, 14), (12, -12, 10), None,
                      -1000.0, 0.5),
    "ct-with-couch-and-holder": (phantom.ct_hu, (200, 220, 60), (1.1, 1.1, 2.5), (0, -15, 0), (4, 3, -5),
                                 (6, -4, 3), _couch_and_holder, -1000.0, 0.5),
    "ct-48mm-slab": (phantom.ct_hu, (200, 200, 16), (1.1, 1.1, 3.0), (0, -5, 20), (4, 3, -5), (6, -4, 3), None,
                     -1000.0, 0.8),
    "pet-4mm-noisy": (phantom.pet_activity, (64, 64, 45), (4.0, 4.0, 4.0), (0, -5, 0), (4, 3, -5), (6, -4, 3), None,
                      0.0, 1.0),
    "spect-4.4mm-noisy": (phantom.spect_activity, (56, 56, 40), (4.4, 4.4, 4.4), (0, -5, 0), (4, 3, -5), (6, -4, 3),
                          None, 0.0, 1.5),
}


@pytest.mark.parametrize("case", list(CASES))
def test_rigid_registration_lands_on_the_anatomy(mri, case):
    fn, shape, spacing, centre, rot, trans, extra, fill, max_tre = CASES[case]
    moving, truth = _moving(fn, shape, spacing, centre, rot, trans, extra)
    tre, info = _tre(mri, moving, truth, fill)
    assert info["backend"] == "elastix"
    assert tre.max() < max_tre, f"{case}: TRE {tre.round(2)} mm, {info}"
    if case == "ct-48mm-slab":
        assert info["swapped"], "a slab is registered with the MRI as the moving image"
