"""Malformed volumes and headers thrown at the loader (seeded, hypothesis-driven).

Every outcome must be either a clean :class:`FusionInputError` that names the file, or a well-formed volume
(1, X, Y, Z), finite values and an invertible affine equal to the header's. Never another exception.
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fusionmamba_med.errors import FusionInputError
from fusionmamba_med.io import load_volume

from tests.synthetic import write_dicom_series

FUZZ = settings(max_examples=25, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _check_outcome(path: Path, expected_affine=None):
    try:
        img = load_volume(path, study="fuzz", max_voxels=10**6)
    except FusionInputError as err:
        assert err.study == "fuzz"
        assert err.path is not None and Path(path).name in str(err) or Path(err.path).parent == Path(path)
        return "error"
    assert img.ndim == 4 and img.shape[0] == 1
    assert np.isfinite(img.numpy()).all()
    aff = img.affine.numpy()
    assert np.isfinite(aff).all() and abs(np.linalg.det(aff[:3, :3])) > 0
    if expected_affine is not None:
        np.testing.assert_allclose(aff, expected_affine, atol=1e-3)
    return "ok"


shapes = st.lists(st.integers(0, 9), min_size=1, max_size=5)
dtypes = st.sampled_from([np.uint8, np.int16, np.float32, np.float64, np.complex64, np.bool_])
affine_kinds = st.sampled_from(["ok", "singular", "nan", "huge"])


@FUZZ
@given(shape=shapes, dtype=dtypes, affine_kind=affine_kinds, values=st.sampled_from(["rand", "nan", "inf", "zero"]),
       damage=st.sampled_from(["none", "truncate", "flip_header_byte", "garbage"]), data=st.data())
def test_nifti_fuzz(tmp_path_factory, shape, dtype, affine_kind, values, damage, data):
    folder = tmp_path_factory.mktemp("nii")
    arr = np.random.default_rng(0).random(shape) * 100
    if values == "nan":
        arr.flat[0:1] = np.nan
    elif values == "inf":
        arr.flat[0:1] = np.inf
    elif values == "zero":
        arr[...] = 0
    arr = arr.astype(dtype) if dtype is not np.complex64 or arr.size else arr
    affine = np.diag([1.2, 0.9, 3.0, 1.0])
    affine[:3, 3] = [-10, 5, 20]
    if affine_kind == "singular":
        affine[2] = affine[1]
    elif affine_kind == "nan":
        affine[0, 0] = np.nan
    elif affine_kind == "huge":
        affine[:3, :3] *= 1e30
    path = folder / "vol.nii.gz"
    try:
        nib.save(nib.Nifti1Image(arr, affine), str(path))
    except Exception:  # nibabel itself refuses: nothing to load
        return
    raw = bytearray(gzip.decompress(path.read_bytes()))
    if damage == "truncate":
        raw = raw[: data.draw(st.integers(0, max(0, len(raw) - 1)))]
    elif damage == "flip_header_byte":
        i = data.draw(st.integers(0, 347))
        raw[i] ^= data.draw(st.integers(1, 255))
    elif damage == "garbage":
        raw = bytearray(np.random.default_rng(1).integers(0, 256, 400, dtype=np.uint8).tobytes())
    path.write_bytes(gzip.compress(bytes(raw)))
    clean = damage == "none" and affine_kind == "ok" and len(shape) == 3 and min(shape) > 0 \
        and dtype not in (np.complex64, np.bool_)
    outcome = _check_outcome(path, expected_affine=affine if clean else None)
    if clean:
        assert outcome == "ok"


@FUZZ
@given(drop=st.sampled_from(["none", "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows",
                             "PixelData", "SeriesInstanceUID", "BitsAllocated"]),
       which=st.integers(0, 5),
       damage=st.sampled_from(["none", "truncate", "resize_one", "duplicate_position", "zero_orientation"]))
def test_dicom_series_fuzz(tmp_path_factory, drop, which, damage):
    folder = tmp_path_factory.mktemp("dcm") / "MR"
    info = write_dicom_series(folder)
    files = [Path(f) for f in info["files"]]
    target = files[which % len(files)]
    if drop != "none" or damage in ("resize_one", "duplicate_position", "zero_orientation"):
        ds = pydicom.dcmread(target)
        if drop != "none" and drop in ds:
            delattr(ds, drop)
        if damage == "resize_one" and "Rows" in ds:
            ds.Rows = int(ds.Rows) - 1
        elif damage == "duplicate_position":
            ds.ImagePositionPatient = pydicom.dcmread(files[(which + 1) % len(files)]).ImagePositionPatient
        elif damage == "zero_orientation":
            ds.ImageOrientationPatient = [0, 0, 0, 0, 0, 0]
        ds.save_as(target, enforce_file_format=False)
    if damage == "truncate":
        blob = target.read_bytes()
        target.write_bytes(blob[: len(blob) // 2])
    outcome = _check_outcome(folder)
    if drop == "none" and damage == "none":
        assert outcome == "ok"
    if damage in ("truncate", "resize_one", "duplicate_position", "zero_orientation") or drop in (
            "ImagePositionPatient", "PixelData", "Rows"):
        assert outcome == "error", f"{drop}/{damage} was accepted"


def test_a_broken_study_among_good_ones_is_named(tmp_path):
    """Copies of one series: one of them truncated; only that one fails, with its file named."""
    good = tmp_path / "good" / "MR"
    write_dicom_series(good)
    bad = tmp_path / "bad" / "MR"
    shutil.copytree(good, bad)
    victim = sorted(bad.iterdir())[2]
    victim.write_bytes(victim.read_bytes()[:300])
    assert _check_outcome(good) == "ok"
    with pytest.raises(FusionInputError) as exc:
        load_volume(bad, study="bad")
    assert victim.name in str(exc.value) or str(bad) in str(exc.value)
