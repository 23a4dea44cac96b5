"""Registration onto the fixed (MRI) grid, on a small smooth phantom with a known rigid motion.

The moving image is the phantom moved by ``TRUE`` (3 degrees, 4 mm), sampled on another grid (other spacing,
in-plane rotated axes, a field of view that misses the top and bottom of the fixed one) with inverted intensities,
like a CT against an MRI.
"""

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch
from monai.data import MetaTensor

from fusionmamba_med.errors import FusionInputError, RegistrationError
from fusionmamba_med.io import load_volume
from fusionmamba_med.transforms.registration import (
    RegisterToFixed,
    RegisterToFixedd,
    rotation_angle_deg,
    target_registration_error,
    transform_from_info,
)
from tests.synthetic import grid_points_lps, phantom_lps, ras_affine, rotation_matrix, sample

FIXED_AFFINE = ras_affine((2.0, 2.0, 2.0), (-47.0, -47.0, -47.0))
FIXED_SHAPE = (48, 48, 48)
MOVING_AFFINE = ras_affine((2.5, 2.2, 3.0), (-50.0, -45.0, -38.0), rotation_matrix((0.0, 0.0, 10.0)))
MOVING_SHAPE = (40, 44, 26)
CT_PATH = "/data/p01/ct.nii.gz"


def _true_transform() -> sitk.Euler3DTransform:
    t = sitk.Euler3DTransform()
    t.SetCenter((0.0, 0.0, 0.0))
    t.SetRotation(*np.radians([1.5, -1.2, 2.2]))
    t.SetTranslation((2.5, -2.0, 2.4))
    return t


TRUE = _true_transform()


def _inverse_true(points):
    m = np.reshape(TRUE.GetMatrix(), (3, 3))
    return (points - np.asarray(TRUE.GetTranslation())) @ m  # m.T @ (p - t), centre 0


@pytest.fixture(scope="module")
def fixed():
    return sample(FIXED_AFFINE, FIXED_SHAPE, source_path="/data/p01/mri.nii.gz")


@pytest.fixture(scope="module")
def moving():
    return sample(MOVING_AFFINE, MOVING_SHAPE, value_fn=lambda v: 100.0 * (1.2 - v), point_map=_inverse_true,
                  source_path=CT_PATH)


@pytest.fixture(scope="module", params=["elastix", "simpleitk"])
def rigid_output(request, fixed, moving):
    """The moving image registered onto the fixed grid (a MetaTensor) by each backend, computed once for several
    tests."""
    return RegisterToFixed(mode="rigid", fill_value=-1024.0, backend=request.param)(moving, fixed, study="p01")


def _head_points():
    pts = grid_points_lps(FIXED_AFFINE, FIXED_SHAPE)
    return pts[phantom_lps(pts) > 0.3][::10]


def test_true_motion_is_three_degrees_and_four_mm():
    assert rotation_angle_deg(TRUE) == pytest.approx(2.9, abs=0.1)
    assert np.linalg.norm(TRUE.GetTranslation()) == pytest.approx(4.0, abs=0.01)


def test_rigid_recovers_a_known_motion(rigid_output):
    info = rigid_output.meta["registration"]
    found = transform_from_info(info)
    tre = target_registration_error(found, TRUE, _head_points())
    assert tre.max() < 1.0, f"TRE up to {tre.max():.2f} mm"
    m_est = np.reshape(found.GetMatrix(), (3, 3))
    m_true = np.reshape(TRUE.GetMatrix(), (3, 3))
    assert rotation_angle_deg(m_est @ m_true.T) < 1.0
    assert info["mode"] == "rigid" and info["transform_type"] == "Euler3DTransform"
    assert info["translation_mm"] == pytest.approx(4.0, abs=0.5)
    assert info["rotation_deg"] == pytest.approx(2.9, abs=0.5)
    assert info["final_metric"] < -0.5 and info["iterations"] > 0 and info["stop_condition"]
    assert 0.5 < info["overlap"] < 1.0


def test_rigid_output_is_on_the_fixed_grid_with_fill_outside_the_moving_fov(fixed, rigid_output):
    out = rigid_output
    assert isinstance(out, MetaTensor) and out.shape == fixed.shape and out.dtype == torch.float32
    assert torch.equal(out.affine, fixed.affine)
    assert out.meta["source_path"] == "/data/p01/mri.nii.gz"  # the fixed meta ...
    assert out.meta["moving_source_path"] == CT_PATH  # ... plus where the moving image came from
    reg = out.meta["registration"]
    assert set(reg) >= {"mode", "final_metric", "iterations", "stop_condition", "transform_parameters",
                        "translation_mm", "rotation_deg", "overlap"}
    # the moving FOV (z from -39.5 to 39.5 mm) misses the first and last fixed slices (z = -47 and 47 mm)
    assert torch.all(out[0, :, :, 0] == -1024.0) and torch.all(out[0, :, :, -1] == -1024.0)
    # inside, the aligned moving image is the inverted phantom: strongly anti-correlated with the fixed one
    inside = out[0] != -1024.0
    r = np.corrcoef(out[0][inside].numpy(), fixed[0][inside].numpy())[0, 1]
    assert r < -0.98


def test_rigid_is_deterministic(fixed, moving, rigid_output):
    """Same seed, same result to the last bit, with either backend: elastix on one thread, SimpleITK with
    ``threads=1`` (the metric always summed in one order); SimpleITK's global thread count is restored afterwards."""
    first = rigid_output.meta["registration"]
    before = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    again = RegisterToFixed(mode="rigid", fill_value=-1024.0, backend=first["backend"]).register(moving, fixed,
                                                                                                  study="p01")
    assert sitk.ProcessObject.GetGlobalDefaultNumberOfThreads() == before
    assert again.info["transform_parameters"] == first["transform_parameters"]
    assert again.info["iterations"] == first["iterations"] and again.info["final_metric"] == first["final_metric"]
    np.testing.assert_array_equal(sitk.GetArrayFromImage(again.image), rigid_output[0].numpy().transpose(2, 1, 0))


@pytest.mark.parametrize("backend", ["elastix", "simpleitk"])
def test_affine_mode_recovers_the_motion(fixed, moving, backend):
    result = RegisterToFixed(mode="affine", fill_value=-1024.0, max_iterations=100, backend=backend).register(
        moving, fixed)
    assert result.info["transform_type"] == "AffineTransform"
    assert target_registration_error(result.transform, TRUE, _head_points()).max() < 1.5


def _resliced_same_space(vol: MetaTensor) -> MetaTensor:
    """The same voxels on another index order: x flipped and y/z swapped (a left-handed grid), affine adjusted."""
    n = vol.shape[1]
    index_map = np.array([[-1, 0, 0, n - 1], [0, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 1]], dtype=float)  # new -> old
    arr = vol[0].numpy()[::-1].transpose(0, 2, 1).copy()
    aff = vol.affine.numpy() @ index_map
    return MetaTensor(torch.from_numpy(arr)[None], meta={"affine": torch.as_tensor(aff), "source_path": CT_PATH})


def test_resample_is_an_exact_identity_in_the_same_physical_space(fixed):
    moving = _resliced_same_space(fixed)
    assert not np.allclose(moving.numpy(), fixed.numpy())
    out = RegisterToFixed(mode="resample")(moving, fixed)
    np.testing.assert_allclose(out.numpy(), fixed.numpy(), rtol=0, atol=1e-5)
    reg = out.meta["registration"]
    assert reg["mode"] == "resample" and reg["transform_parameters"] == []
    assert reg["translation_mm"] == 0.0 and reg["rotation_deg"] == 0.0 and reg["overlap"] == 1.0


def test_resample_fills_outside_the_moving_fov_and_reports_overlap(fixed):
    half = MetaTensor(fixed[:, :, :, :24].clone(), meta={"affine": fixed.affine.clone(), "source_path": CT_PATH})
    out = RegisterToFixed(mode="resample", fill_value=-1024.0)(half, fixed)
    np.testing.assert_allclose(out[..., :24].numpy(), fixed[..., :24].numpy(), atol=1e-5)
    assert torch.all(out[..., 24:] == -1024.0)
    assert out.meta["registration"]["overlap"] == pytest.approx(0.5)
    with pytest.raises(RegistrationError, match="covers only 50.0%"):
        RegisterToFixed(mode="resample", min_overlap=0.6)(half, fixed, study="p01")


def test_none_passes_through_on_the_same_grid_and_refuses_another(fixed, moving):
    same = MetaTensor(fixed.numpy() * -2.0 + 3.0, meta={"affine": fixed.affine + 1e-5, "source_path": CT_PATH})
    out = RegisterToFixed(mode="none")(same, fixed)
    np.testing.assert_array_equal(out.numpy(), same.numpy())
    assert torch.equal(out.affine, fixed.affine)
    assert out.meta["registration"]["mode"] == "none"
    with pytest.raises(FusionInputError, match="resample") as err:
        RegisterToFixed(mode="none")(moving, fixed, study="p01")
    assert CT_PATH in str(err.value) and "p01" in str(err.value)
    shifted = MetaTensor(same.as_tensor(), meta={"affine": fixed.affine.clone(), "source_path": CT_PATH})
    shifted.affine[0, 3] += 0.5
    with pytest.raises(FusionInputError, match="affine differs"):
        RegisterToFixed(mode="none")(shifted, fixed)


@pytest.mark.parametrize("mode", ["resample", "rigid"])
def test_images_without_physical_overlap_raise_naming_the_file(tmp_path, fixed, mode):
    far = FIXED_AFFINE.copy()
    far[:3, 3] += (1000.0, 0.0, 0.0)
    path = tmp_path / "p07_ct.nii.gz"
    nib.save(nib.Nifti1Image(fixed[0].numpy(), far), str(path))
    moving = load_volume(path, study="p07")
    with pytest.raises(RegistrationError, match="do not overlap") as err:
        RegisterToFixedd(keys="moving", fixed_key="mri", mode=mode)({"study": "p07", "mri": fixed, "moving": moving})
    assert "p07_ct.nii.gz" in str(err.value) and "study 'p07'" in str(err.value)
    assert "/data/p01/mri.nii.gz" in str(err.value) and "LPS x" in str(err.value)  # both files and where they are
    assert isinstance(err.value, FusionInputError)


def test_implausible_results_raise(fixed, moving):
    quick = dict(mode="rigid", max_iterations=5, shrink_factors=(2, 1), smoothing_sigmas=(1, 0))
    with pytest.raises(RegistrationError, match="max_final_metric") as err:
        RegisterToFixed(max_final_metric=-10.0, **quick)(moving, fixed, study="p01")
    assert CT_PATH in str(err.value) and "moments start" in str(err.value)  # the fallback start was tried too
    with pytest.raises(RegistrationError, match="max_translation_mm"):
        RegisterToFixed(max_translation_mm=1.0, initializer="moments", **quick)(moving, fixed)


def test_too_thin_volume_is_refused_for_registration(fixed):
    thin = MetaTensor(fixed[..., 20:22].clone(), meta={"affine": fixed.affine.clone(), "source_path": CT_PATH})
    with pytest.raises(RegistrationError, match="moving image, .* too thin") as err:
        RegisterToFixed(mode="rigid")(thin, fixed)
    assert err.value.path == CT_PATH


def test_too_thin_mri_is_named_not_the_other_file(fixed):
    thin_mri = MetaTensor(fixed[..., 20:22].clone(), meta={"affine": fixed.affine.clone(),
                                                           "source_path": "/data/p01/mri.nii.gz"})
    moving = MetaTensor(fixed.clone(), meta={"affine": fixed.affine.clone(), "source_path": CT_PATH})
    with pytest.raises(RegistrationError, match=r"fixed \(MRI\) image, .* too thin") as err:
        RegisterToFixed(mode="rigid")(moving, thin_mri, study="p01")
    assert err.value.path == "/data/p01/mri.nii.gz" and CT_PATH not in str(err.value)


def test_dictionary_transform_registers_each_key_onto_the_fixed_key(fixed):
    moving = _resliced_same_space(fixed)
    data = {"study": "p01", "mri": fixed, "moving": moving, "pet": moving.clone()}
    out = RegisterToFixedd(keys=["moving", "pet"], fixed_key="mri", mode="resample", fill_value=(-1024.0, 0.0))(data)
    assert out["mri"] is fixed
    for key in ("moving", "pet"):
        assert out[key].shape == fixed.shape and torch.equal(out[key].affine, fixed.affine)
        assert out[key].meta["registration"]["mode"] == "resample"
    assert data["moving"] is moving  # the input dictionary is not modified


def test_target_registration_error_measures_point_distances():
    shift = sitk.TranslationTransform(3, (1.0, 2.0, 2.0))
    tre = target_registration_error(shift, sitk.Transform(3, sitk.sitkIdentity), np.random.rand(5, 3) * 50)
    np.testing.assert_allclose(tre, 3.0)
    rot = sitk.Euler3DTransform((0.0, 0.0, 0.0), 0.0, 0.0, np.radians(5.0))
    assert rotation_angle_deg(rot) == pytest.approx(5.0)
    tre = target_registration_error(rot, sitk.Euler3DTransform(), [[100.0, 0.0, 0.0]])
    assert tre[0] == pytest.approx(2 * 100.0 * np.sin(np.radians(2.5)))


def test_blank_moving_image_is_refused_by_name(tmp_path):
    """An all-zero modality (e.g. a blank export) is a clear registration error, not a SimpleITK crash."""
    import nibabel as nib
    import numpy as np

    from fusionmamba_med.errors import RegistrationError
    from fusionmamba_med.io import load_volume
    from fusionmamba_med.transforms import RegisterToFixedd

    blank = tmp_path / "PET.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((20, 20, 12), np.float32), np.diag([3.0, 3.0, 3.0, 1.0])), str(blank))
    fixed = load_volume(blank)
    fixed = fixed + torch.rand_like(fixed)
    with pytest.raises(RegistrationError, match="no contrast") as exc:
        RegisterToFixedd("moving", "mri")({"study": "p07", "mri": fixed, "moving": load_volume(blank)})
    assert "p07" in str(exc.value) and "PET.nii.gz" in str(exc.value)


def test_metric_samples_are_capped_for_large_mris():
    """``max_samples`` bounds the metric's samples per level, so a big MRI costs about what a small one does."""
    big = sitk.Image(256, 256, 200, sitk.sitkFloat32)  # 13.1 M voxels: 20% would be 2.6 M samples per level
    fractions = RegisterToFixed(mode="rigid")._sampling_per_level(big)  # default cap 200,000
    samples = [f * big.GetNumberOfPixels() / s**3 for f, s in zip(fractions, (4, 2, 1))]
    assert samples == pytest.approx([200_000] * 3, rel=1e-6)
    uncapped = RegisterToFixed(mode="rigid", max_samples=None)._sampling_per_level(big)
    assert uncapped[-1] == pytest.approx(0.2) and uncapped[0] == 1.0  # coarse level: all its 205k voxels
    small = sitk.Image(64, 64, 40, sitk.sitkFloat32)  # below the cap: unchanged, 20% at full resolution
    assert RegisterToFixed(mode="rigid")._sampling_per_level(small)[-1] == pytest.approx(0.2)
    with pytest.raises(ValueError, match="max_samples"):
        RegisterToFixed(max_samples=10)


def test_samples_per_level_are_reported(rigid_output):
    info = rigid_output.meta["registration"]
    if info["backend"] == "simpleitk":
        assert info["samples_per_level"][-1] == round(0.2 * int(np.prod(FIXED_SHAPE)))
    else:  # elastix: new random points every iteration; half the points and iterations on the two coarse levels
        assert info["samples_per_level"] == [1024, 1024, 2048, 2048] and info["iterations"] == 250 * 2 + 500 * 2
