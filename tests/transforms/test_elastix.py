"""The elastix backend's process model and grid: registrations run in a fresh fork of a small server process that
loads only elastix's part of ITK, and big images are registered block-averaged."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest
import SimpleITK as sitk

from fusionmamba_med.transforms import elastix
from fusionmamba_med.transforms.registration import COARSEN_ABOVE_VOXELS, coarsened


def _blob(shape=(40, 44, 36), shift=(0.0, 0.0, 0.0)) -> sitk.Image:
    z, y, x = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
    c = [n / 2.0 + s for n, s in zip(shape, shift[::-1])]
    arr = np.exp(-(((z - c[0]) / 8) ** 2 + ((y - c[1]) / 10) ** 2 + ((x - c[2]) / 7) ** 2)).astype(np.float32)
    arr += 0.5 * np.exp(-(((z - c[0] - 6) / 3) ** 2 + ((y - c[1] + 5) / 4) ** 2 + ((x - c[2]) / 3) ** 2))
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((2.0, 2.0, 2.0))
    return img


def test_the_server_loads_elastix_without_the_rest_of_itk():
    code = ("import sys; from fusionmamba_med.transforms.elastix import _elastix_wrapping; e = _elastix_wrapping(); "
            "print(e.method.__name__, 'torch' in sys.modules, "
            "sorted(m for m in sys.modules if m in ('itk._ITKImageIntensityPython', 'itk._ITKThresholdingPython')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "itkElastixRegistrationMethodIF3IF3"
    assert out[1] == "False", "ITK's array helpers must not import torch in the server"
    assert out[2] == "[]", "the server loaded ITK filter modules elastix does not need"


def test_a_registration_recovers_a_shift_and_repeats_exactly():
    fixed, moving = _blob(), _blob(shift=(3.0, -2.0, 1.5))  # voxels; 2 mm spacing
    settings = elastix.ElastixSettings(iterations=150)
    first, info = elastix.register_elastix(fixed, moving, "rigid", settings)
    again, _ = elastix.register_elastix(fixed, moving, "rigid", settings)
    assert np.allclose(first.GetTranslation(), (6.0, -4.0, 3.0), atol=0.3), first.GetTranslation()
    assert first.GetParameters() == again.GetParameters()  # bit-identical, whatever ran before
    assert info["iterations"] == 4 * 150


def test_a_server_that_died_is_replaced():
    fixed = _blob()
    elastix.start_server(wait=True)
    os.kill(elastix._SERVER.process.pid, signal.SIGKILL)
    elastix._SERVER.process.wait()
    transform, _ = elastix.register_elastix(fixed, fixed, "rigid", elastix.ElastixSettings(iterations=5))
    assert np.allclose(transform.GetTranslation(), 0.0, atol=0.5)


def test_a_server_killed_during_a_registration_fails_that_registration_by_name():
    fixed = _blob((80, 80, 80))
    elastix.start_server(wait=True)
    pid = elastix._SERVER.process.pid
    killer = threading.Timer(0.5, os.kill, (pid, signal.SIGKILL))
    killer.start()
    with pytest.raises(RuntimeError, match="elastix server process died"):
        elastix.register_elastix(fixed, fixed, "rigid", elastix.ElastixSettings(iterations=5000))
    killer.join()
    transform, _ = elastix.register_elastix(fixed, fixed, "rigid", elastix.ElastixSettings(iterations=5))
    assert elastix._SERVER.process.pid != pid


def test_elastix_refuses_an_unknown_pyramid_and_counts_for_other_levels():
    with pytest.raises(ValueError, match="fixed_pyramid"):
        elastix.ElastixSettings(fixed_pyramid="gaussian")
    with pytest.raises(ValueError, match="one count per level"):
        elastix.ElastixSettings(iterations=(100, 200))
    assert elastix.ElastixSettings(samples=512).per_level("samples") == [512] * 4


def test_small_images_are_registered_on_their_own_grid():
    img = _blob()
    assert coarsened(img) is img


def test_big_images_are_block_averaged_along_their_fine_axes_in_the_same_box():
    shape_xyz = (200, 180, 130)  # 4.7 M voxels
    assert np.prod(shape_xyz) > COARSEN_ABOVE_VOXELS
    arr = np.random.default_rng(0).random(shape_xyz[::-1], dtype=np.float32)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((1.0, 0.9, 3.0))  # the 3 mm axis stays as it is
    img.SetOrigin((-20.0, 5.0, 7.0))
    img.SetDirection(sitk.VersorTransform((0, 0, 1), 0.3).GetMatrix())
    out = coarsened(img)
    assert out.GetSize() == (100, 90, 130) and np.allclose(out.GetSpacing(), (2.0, 1.8, 3.0))
    assert np.allclose(out.GetDirection(), img.GetDirection())
    # the first new voxel is the mean of the first 2 x 2 block, centred on that block's centre
    assert np.isclose(sitk.GetArrayViewFromImage(out)[0, 0, 0], arr[0, :2, :2].mean(), rtol=1e-5)
    centre = np.mean([img.TransformIndexToPhysicalPoint(i) for i in ((0, 0, 0), (1, 1, 0))], axis=0)
    assert np.allclose(out.TransformIndexToPhysicalPoint((0, 0, 0)), centre)


def test_the_moving_pyramid_keeps_every_axis_at_eight_voxels_or_more():
    assert elastix.pyramid_schedule((220, 240, 80), 4) == [[8, 8, 8], [4, 4, 4], [2, 2, 2], [1, 1, 1]]
    assert elastix.pyramid_schedule((32, 36, 12), 4) == [[4, 4, 1], [4, 4, 1], [2, 2, 1], [1, 1, 1]]


def test_a_thin_moving_image_registers_without_crashing_elastix():
    # 12 slices shrunk 8 times made elastix crash (segmentation fault) before the pyramid was capped
    fixed, moving = _blob((12, 48, 40)), _blob((12, 36, 32), shift=(0.0, 1.0, -1.0))
    settings = elastix.ElastixSettings(iterations=50, moving_pyramid="recursive")
    transform, _ = elastix.register_elastix(fixed, moving, "rigid", settings)
    assert np.all(np.isfinite(transform.GetParameters()))
