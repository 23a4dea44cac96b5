"""Fixtures shared by every test folder: small DICOM series, oblique affines, volumes (see tests/synthetic.py)."""

from __future__ import annotations

import numpy as np
import pytest

from fusionmamba_med.io.geometry import lps_to_ras
from tests.synthetic import index_volume, oblique_iop, write_dicom_series


@pytest.fixture
def axial_series(tmp_path):
    return write_dicom_series(tmp_path / "MR_axial", spacing=(1.0, 1.0, 1.0), description="T1 AX")


@pytest.fixture
def oblique_series(tmp_path):
    """Doubly oblique, anisotropic (0.8 x 0.9 x 2.5 mm) series, files written in reverse z order."""
    return write_dicom_series(tmp_path / "MR_oblique", spacing=(0.8, 0.9, 2.5), iop=oblique_iop(),
                              origin=(12.5, -30.25, 47.0), description="T1 OBL")


@pytest.fixture
def ras_oblique_affine():
    """A right-handed, oblique, anisotropic RAS affine (as a NIfTI would carry)."""
    row, col = oblique_iop(15.0, -25.0)
    normal = np.cross(row, col)
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1], lps[:3, 2] = np.multiply(row, 0.7), np.multiply(col, 1.1), normal * 3.0
    lps[:3, 3] = (5.0, -7.5, 20.0)
    return lps_to_ras(lps)


@pytest.fixture
def small_volume():
    return index_volume().astype(np.float32)
