import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch
from monai.data import MetaTensor

from fusionmamba_med.transforms.sitk_bridge import metatensor_to_sitk, sitk_to_metatensor
from tests.synthetic import ras_affine, rotation_matrix

AFFINES = {
    "oblique": ras_affine((0.7, 1.1, 3.0), (12.5, -30.25, 47.0), rotation_matrix((10.0, -20.0, 35.0))),
    # the usual DICOM-derived RAS affine: x and y run towards L and P
    "lps_axes": ras_affine((0.9, 0.9, 2.0), (120.0, 110.0, -40.0), np.diag([-1.0, -1.0, 1.0])),
    # a left-handed grid (negative determinant)
    "left_handed": ras_affine((1.2, 1.0, 2.5), (-3.0, 4.0, 5.0),
                              rotation_matrix((0.0, 0.0, 15.0)) @ np.diag([1.0, 1.0, -1.0])),
}


def _volume(affine, shape=(5, 6, 7), seed=0, meta=None) -> MetaTensor:
    arr = np.random.default_rng(seed).normal(size=(1, *shape)).astype(np.float32)
    m = {"affine": torch.as_tensor(affine, dtype=torch.float64), **(meta or {})}
    return MetaTensor(torch.from_numpy(arr), meta=m)


@pytest.mark.parametrize("name", sorted(AFFINES))
def test_round_trip_keeps_array_and_affine(name):
    x = _volume(AFFINES[name])
    img = metatensor_to_sitk(x)
    assert img.GetSize() == (5, 6, 7)
    back = sitk_to_metatensor(img)
    assert isinstance(back, MetaTensor) and back.dtype == torch.float32
    np.testing.assert_array_equal(back.numpy(), x.numpy())
    np.testing.assert_allclose(back.affine.numpy(), AFFINES[name], rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", sorted(AFFINES))
def test_physical_point_maps_to_the_same_voxel(name):
    aff = AFFINES[name]
    x = _volume(aff)
    img = metatensor_to_sitk(x)
    for ijk in [(0, 0, 0), (4, 1, 6), (2, 5, 3)]:
        ras = aff @ np.array([*ijk, 1.0])
        lps = (-ras[0], -ras[1], ras[2])
        assert img.TransformPhysicalPointToIndex(lps) == ijk
        assert img.GetPixel(*ijk) == pytest.approx(float(x[0, ijk[0], ijk[1], ijk[2]]))
    assert np.sign(np.linalg.det(np.reshape(img.GetDirection(), (3, 3)))) == np.sign(np.linalg.det(aff[:3, :3]))


@pytest.mark.parametrize("name", sorted(AFFINES))
def test_geometry_agrees_with_simpleitk_reading_a_nifti(tmp_path, name):
    """An independent reference: SimpleITK's own RAS->LPS conversion when it reads a NIfTI with this affine."""
    aff = AFFINES[name]
    x = _volume(aff)
    nii = nib.Nifti1Image(x[0].numpy(), aff)
    nii.set_qform(aff, code=1)
    nii.set_sform(aff, code=1)
    path = tmp_path / "v.nii.gz"
    nib.save(nii, str(path))
    ref = sitk.ReadImage(str(path))
    img = metatensor_to_sitk(x)
    np.testing.assert_allclose(img.GetOrigin(), ref.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(img.GetSpacing(), ref.GetSpacing(), atol=1e-5)
    np.testing.assert_allclose(img.GetDirection(), ref.GetDirection(), atol=1e-5)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(img), sitk.GetArrayFromImage(ref))


def test_like_copies_meta_and_vector_images_keep_channels():
    x = _volume(AFFINES["oblique"], meta={"source_path": "/data/p01/mri.nii.gz"})
    back = sitk_to_metatensor(metatensor_to_sitk(x), like=x)
    assert back.meta["source_path"] == "/data/p01/mri.nii.gz"
    rgb = MetaTensor(torch.rand(3, 4, 5, 6), affine=torch.as_tensor(AFFINES["lps_axes"]))
    img = metatensor_to_sitk(rgb)
    assert img.GetNumberOfComponentsPerPixel() == 3 and img.GetSize() == (4, 5, 6)
    back = sitk_to_metatensor(img)
    np.testing.assert_array_equal(back.numpy(), rgb.numpy())
    np.testing.assert_allclose(back.affine.numpy(), AFFINES["lps_axes"], atol=1e-12)


def test_plain_array_with_explicit_affine():
    arr = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    img = metatensor_to_sitk(arr, affine=AFFINES["oblique"])
    assert img.GetPixel(1, 2, 3) == arr[1, 2, 3]
    np.testing.assert_allclose(sitk_to_metatensor(img).affine.numpy(), AFFINES["oblique"], atol=1e-12)
    with pytest.raises(ValueError):
        metatensor_to_sitk(np.zeros((2, 3)))
