"""Reading DICOM series (fusionmamba_med.io.dicom_read). Modality rescale, slice by slice: every slice keeps its own
``stored * slope + intercept`` (as pydicom and dcm2niix give it), whatever the first file's slope, as real PET and
some CT series store it. (The comparison with dcm2niix on real series is in test_dicom_oracle.py.) Enhanced
multi-frame files (one file, one volume): frames sorted along the normal, each with its own rescale; 4D refused."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch

from fusionmamba_med.errors import FusionInputError
from fusionmamba_med.io.dicom_read import DicomSeriesReader, check_dicom_series, read_dicom_series
from fusionmamba_med.io.loading import load_volume
from tests.synthetic import (AXIAL, index_volume, oblique_iop, series_ras_affine, truncate_file, write_dicom_series,
                             write_enhanced_dicom)


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
    return (index_volume(nz=nz).astype(np.int32) * 50 + 2000).clip(-32768, 32767).astype(np.int16)


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
    vol = index_volume(nz=6)
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


def test_pixel_data_length_check(axial_series):
    """Files that GDCM still groups but whose pixel data are cut short are named before ITK reads them."""
    files = list(axial_series["files"])
    truncate_file(files[4], -100)
    series = {"uid": axial_series["series_uid"], "description": "T1 AX"}
    with pytest.raises(FusionInputError, match="truncated DICOM file: pixel data needs") as exc:
        check_dicom_series(files, series, Path(files[0]).parent, "s", 10**9)
    assert exc.value.path == files[4]


def test_read_dicom_series_meta_and_reader(axial_series):
    img = read_dicom_series(Path(axial_series["files"][0]).parent, study="s1")
    assert img.meta["dicom_files"] == [os.path.abspath(f) for f in axial_series["files"]]  # slice order
    assert img.meta["series_uid"] == axial_series["series_uid"]
    reader = DicomSeriesReader(axial_series["files"])
    assert reader.file_names == [str(f) for f in axial_series["files"]] and reader.verify_suffix("any/folder")


# --- enhanced multi-frame: one file, one 3D volume -------------------------------------------------------------------
MF_SLOPES = [1.0, 0.78, 3.0, 25.0, 0.0123, 50.0]  # one per slice (z order): frame 0 of the file holds slice 5 (50.0)
MF_INTERCEPTS = [0.0, 1.0, -2.5, 0.0, 4.25, -1024.0]


def _enhanced(folder, **kwargs):
    kwargs.setdefault("vol", index_volume(nx=10, ny=8, nz=6))  # 6 frames of 8 rows x 10 columns
    kwargs.setdefault("iop", oblique_iop(25.0, -15.0))
    kwargs.setdefault("origin", (12.5, -30.25, 47.0))
    return write_enhanced_dicom(Path(folder) / "enhanced.dcm", **kwargs)


def test_enhanced_multiframe_sorted_with_affine_and_per_frame_rescale(tmp_path):
    info = _enhanced(tmp_path / "mf", slope=MF_SLOPES, intercept=MF_INTERCEPTS)
    assert info["frame_order"] != sorted(info["frame_order"])  # frames stored out of slice order
    img = load_volume(tmp_path / "mf", study="s")
    assert tuple(img.shape) == (1, 10, 8, 6) and img.dtype == torch.float32
    assert img.meta["multiframe_frames"] == 6 and img.meta["dicom_files"] == [os.path.abspath(info["files"][0])]
    assert img.meta["series_uid"] == info["series_uid"]
    np.testing.assert_allclose(np.asarray(img.affine), series_ras_affine(info), atol=1e-4)
    # every frame its own stored * slope + intercept (float64 arithmetic, float32 result), in slice order
    expected = (info["vol"].astype(np.float64) * np.asarray(MF_SLOPES) + np.asarray(MF_INTERCEPTS)).astype(np.float32)
    np.testing.assert_array_equal(img[0].numpy(), expected)
    # ... and each slice is the frame pydicom decodes at that position
    ds = pydicom.dcmread(info["files"][0])
    frames = ds.pixel_array.astype(np.float64)
    for n, k in enumerate(info["frame_order"]):
        np.testing.assert_array_equal(img[0, :, :, k].numpy().T,
                                      (frames[n] * MF_SLOPES[k] + MF_INTERCEPTS[k]).astype(np.float32))


def test_enhanced_multiframe_shared_rescale_applied_once(tmp_path):
    """A rescale in the SharedFunctionalGroupsSequence (GDCM applies it too): stored * 2.5 - 100, not twice."""
    info = _enhanced(tmp_path / "mf", slope=2.5, intercept=-100.0, shared_rescale=True, iop=AXIAL)
    img = load_volume(tmp_path / "mf")
    np.testing.assert_array_equal(img[0].numpy(), (info["vol"] * 2.5 - 100.0).astype(np.float32))
    np.testing.assert_allclose(np.asarray(img.affine), series_ras_affine(info), atol=1e-4)


def test_enhanced_multiframe_frames_at_one_position_refused_as_4d(tmp_path):
    info = _enhanced(tmp_path / "mf", z_positions=[0.0, 2.5, 2.5, 5.0, 7.5, 10.0])
    with pytest.raises(FusionInputError, match="several images at the same position .*'frame \\d' and 'frame \\d'"
                       ".*4D") as exc:
        load_volume(tmp_path / "mf", study="s")
    assert exc.value.path == info["files"][0] and exc.value.study == "s"


def test_enhanced_multiframe_uneven_spacing_refused(tmp_path):
    info = _enhanced(tmp_path / "mf", z_positions=[0.0, 2.5, 5.0, 7.5, 12.5, 15.0])  # a missing frame
    with pytest.raises(FusionInputError, match="uneven slice spacing") as exc:
        load_volume(tmp_path / "mf", study="s")
    assert exc.value.path == info["files"][0]


def test_series_of_two_enhanced_files_refused_as_4d(tmp_path):
    first = _enhanced(tmp_path / "mf")
    write_enhanced_dicom(tmp_path / "mf" / "second.dcm", vol=index_volume(nx=10, ny=8, nz=6),
                         series_uid=first["series_uid"], study_uid=first["study_uid"], for_uid=first["for_uid"])
    with pytest.raises(FusionInputError, match="enhanced multi-frame series of 2 files.*4D") as exc:
        load_volume(tmp_path / "mf", study="s")
    assert exc.value.study == "s" and exc.value.path


def test_enhanced_colour_refused(tmp_path):
    info = _enhanced(tmp_path / "mf")
    ds = pydicom.dcmread(info["files"][0])
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = np.zeros((6, 8, 10, 3), np.uint8).tobytes()
    ds.save_as(info["files"][0], enforce_file_format=True)
    with pytest.raises(FusionInputError, match="colour DICOM") as exc:
        check_dicom_series(info["files"], {"uid": info["series_uid"], "description": "x"}, tmp_path / "mf", "s",
                           10**9)
    assert exc.value.path == info["files"][0]
