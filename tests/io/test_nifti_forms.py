"""NIfTI headers as FSL/SPM write them: a qform and an sform that disagree, a sheared sform. The output must land
where the MRI is in every reader (nibabel/MONAI read the sform, ITK and 3D Slicer the qform when both are set)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from fusionmamba_med.errors import FusionInputError
from fusionmamba_med.io.loading import load_volume
from fusionmamba_med.io.writers import FusedVolumeWriter


def _mri_with_forms(path, sform, qform, sform_code=2, qform_code=1, shape=(20, 22, 12)):
    data = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    img = nib.Nifti1Image(data, sform)
    img.set_sform(sform, code=sform_code)
    img.set_qform(qform, code=qform_code)
    nib.save(img, str(path))
    return path


def _oblique_affine(shift=(0.0, 0.0, 0.0)):
    a = np.deg2rad(12.0)
    rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag([1.1, 1.2, 2.5])
    aff[:3, 3] = np.array([-12.0, -20.0, 15.0]) + np.asarray(shift)
    return aff


def _fuse_and_write(mri_path, out_dir):
    mri = load_volume(mri_path, study="s1")
    fused = mri / mri.max()  # any volume on the MRI grid
    return FusedVolumeWriter(output_dir=out_dir, output_format="nifti")(fused, reference=mri, study_id="s1")


@pytest.mark.parametrize(
    "codes", [(2, 1), (1, 1), (2, 0), (0, 1), (4, 2)], ids=["sform2-qform1", "both1", "sform-only", "qform-only",
                                                           "mni-aligned"])
def test_output_is_placed_like_the_mri_in_nibabel_and_itk(tmp_path, codes):
    sform_code, qform_code = codes
    sform = _oblique_affine()
    qform = _oblique_affine(shift=(12.0, 0.0, 0.0))  # 12 mm away: FSL/SPM can write such a pair
    mri_path = _mri_with_forms(tmp_path / "mri.nii.gz", sform, qform, sform_code, qform_code)
    out = _fuse_and_write(mri_path, tmp_path / "out")
    mri_h, out_h = nib.load(str(mri_path)).header, nib.load(str(out)).header
    for field in ("qform_code", "sform_code", "quatern_b", "quatern_c", "quatern_d", "qoffset_x", "qoffset_y",
                  "qoffset_z", "srow_x", "srow_y", "srow_z"):
        np.testing.assert_array_equal(out_h[field], mri_h[field], err_msg=field)
    # nibabel (MONAI's reading)
    np.testing.assert_allclose(nib.load(str(out)).affine, nib.load(str(mri_path)).affine, atol=0.01)
    # ITK (3D Slicer's reading)
    a, b = sitk.ReadImage(str(mri_path)), sitk.ReadImage(str(out))
    np.testing.assert_allclose(b.GetOrigin(), a.GetOrigin(), atol=0.01)
    np.testing.assert_allclose(b.GetDirection(), a.GetDirection(), atol=1e-5)
    np.testing.assert_allclose(b.GetSpacing(), a.GetSpacing(), atol=1e-5)


def test_readers_disagree_on_such_an_mri_and_the_output_follows_each(tmp_path):
    """The case that went wrong: ITK reads the qform (12 mm away), nibabel the sform; the output moves with each."""
    mri_path = _mri_with_forms(tmp_path / "mri.nii.gz", _oblique_affine(), _oblique_affine(shift=(12.0, 0.0, 0.0)))
    itk_origin_ras = np.asarray(sitk.ReadImage(str(mri_path)).GetOrigin()) * [-1, -1, 1]
    nib_origin = nib.load(str(mri_path)).affine[:3, 3]
    assert np.linalg.norm(itk_origin_ras - nib_origin) > 10.0  # the readers do place this MRI differently
    out = _fuse_and_write(mri_path, tmp_path / "out")
    np.testing.assert_allclose(np.asarray(sitk.ReadImage(str(out)).GetOrigin()) * [-1, -1, 1], itk_origin_ras,
                               atol=0.01)
    np.testing.assert_allclose(nib.load(str(out)).affine[:3, 3], nib_origin, atol=0.01)


@pytest.mark.parametrize("qform_code", [0, 1])
def test_sheared_sform_is_refused(tmp_path, qform_code):
    sheared = _oblique_affine()
    sheared[:3, 2] += sheared[:3, 1] * 0.2  # slices slide along y: an uncorrected gantry tilt
    mri_path = _mri_with_forms(tmp_path / "tilt.nii.gz", sheared, _oblique_affine(), sform_code=1,
                               qform_code=qform_code)
    with pytest.raises(FusionInputError, match="sform is sheared") as exc:
        load_volume(mri_path, study="s1")
    assert exc.value.path.endswith("tilt.nii.gz") and exc.value.study == "s1"


def test_nrrd_output_of_a_plain_nifti_mri_still_overlays(tmp_path):
    mri_path = _mri_with_forms(tmp_path / "mri.nii.gz", _oblique_affine(), _oblique_affine(), 1, 1)
    mri = load_volume(mri_path, study="s1")
    out = FusedVolumeWriter(output_dir=tmp_path / "out", output_format="nrrd")(mri / mri.max(), reference=mri,
                                                                                study_id="s1")
    a, b = sitk.ReadImage(str(mri_path)), sitk.ReadImage(str(out))
    np.testing.assert_allclose(b.GetOrigin(), a.GetOrigin(), atol=0.01)
    np.testing.assert_allclose(b.GetDirection(), a.GetDirection(), atol=1e-5)
