"""RAS (MONAI, NIfTI) <-> LPS (ITK, DICOM, NRRD) geometry conversions."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from fusionmamba_med.io.geometry import (
    is_orthogonal,
    lps_geometry_to_ras_affine,
    lps_to_ras,
    ras_affine_to_lps_geometry,
    ras_to_lps,
)


def _oblique_ras() -> np.ndarray:
    a = np.deg2rad(20.0)
    aff = np.eye(4)
    rotation = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    aff[:3, :3] = rotation @ np.diag([0.8, 0.9, 2.5])
    aff[:3, 3] = [10.0, -20.0, 30.0]
    return aff


def test_round_trips():
    ras = _oblique_ras()
    np.testing.assert_allclose(lps_to_ras(ras_to_lps(ras)), ras)
    spacing, direction, origin = ras_affine_to_lps_geometry(ras)
    np.testing.assert_allclose(spacing, [0.8, 0.9, 2.5])
    np.testing.assert_allclose(origin, [-10.0, 20.0, 30.0])  # x and y flip sign
    np.testing.assert_allclose(lps_geometry_to_ras_affine(spacing, direction, origin), ras)


def test_matches_itk_index_to_physical_point():
    ras = _oblique_ras()
    spacing, direction, origin = ras_affine_to_lps_geometry(ras)
    img = sitk.Image(4, 5, 6, sitk.sitkFloat32)
    img.SetSpacing(spacing.tolist())
    img.SetDirection(direction.ravel().tolist())
    img.SetOrigin(origin.tolist())
    lps = np.asarray(img.TransformIndexToPhysicalPoint((3, 4, 5)))
    np.testing.assert_allclose(lps * [-1, -1, 1], (ras @ [3, 4, 5, 1])[:3], atol=1e-9)


def test_is_orthogonal():
    ras = _oblique_ras()
    assert is_orthogonal(ras)
    sheared = ras.copy()
    sheared[:3, 2] += 0.1 * sheared[:3, 1]
    assert not is_orthogonal(sheared)
