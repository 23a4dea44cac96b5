import logging
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import torch

import fusionmamba_med.io.loading as loading
from fusionmamba_med.errors import FusionInputError
from fusionmamba_med.io.loading import LoadStudyd, load_volume
from tests.synthetic import index_volume, series_ras_affine, truncate_file, write_dicom_series


def _save_nifti(path, data, affine):
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


# --------------------------------------------------------------------------------------------- DICOM geometry
@pytest.mark.parametrize("which", ["axial_series", "oblique_series"])
def test_load_dicom_series(which, request):
    info = request.getfixturevalue(which)
    folder = Path(info["files"][0]).parent
    img = load_volume(folder, study="p01")
    assert tuple(img.shape) == (1, 24, 20, 6) and img.dtype == torch.float32
    np.testing.assert_allclose(img.affine.numpy(), series_ras_affine(info), atol=1e-4)
    np.testing.assert_array_equal(img[0].numpy(), info["vol"])
    # the writer's keys: files sorted along the slice axis (index k = slice k), source folder
    assert img.meta["dicom_files"] == [os.path.abspath(f) for f in info["files"]]
    assert img.meta["source_path"] == os.path.abspath(folder)
    assert img.meta["series_uid"] == info["series_uid"]


def test_load_single_dicom_file_loads_its_series(oblique_series):
    img = load_volume(oblique_series["files"][3])
    assert tuple(img.shape) == (1, 24, 20, 6)
    np.testing.assert_allclose(img.affine.numpy(), series_ras_affine(oblique_series), atol=1e-4)


def test_multi_series_folder(tmp_path):
    a = write_dicom_series(tmp_path / "mixed", description="T1 AX", name_prefix="A")
    b = write_dicom_series(tmp_path / "mixed", description="T2 AX", series_number=4, name_prefix="B",
                           vol=index_volume(seed=1) + 7)
    with pytest.raises(FusionInputError) as exc:
        load_volume(tmp_path / "mixed", study="p09")
    msg = str(exc.value)
    assert exc.value.study == "p09" and "mixed" in exc.value.path
    assert a["series_uid"] in msg and b["series_uid"] in msg
    assert "T1 AX" in msg and "T2 AX" in msg
    img = load_volume(tmp_path / "mixed", series_uid=b["series_uid"])
    np.testing.assert_array_equal(img[0].numpy(), b["vol"])
    assert img.meta["dicom_files"] == [os.path.abspath(f) for f in b["files"]]
    img = load_volume(tmp_path / "mixed", series_uid="t1 ax")  # by description
    np.testing.assert_array_equal(img[0].numpy(), a["vol"])
    with pytest.raises(FusionInputError, match="matches no SeriesInstanceUID") as exc:
        load_volume(tmp_path / "mixed", series_uid="1.2.3.4")
    assert a["series_uid"] in str(exc.value)


def test_empty_and_non_dicom_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FusionInputError, match="empty") as exc:
        load_volume(tmp_path / "empty", study="s")
    assert exc.value.path.endswith("empty")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "readme.txt").write_text("not dicom")
    with pytest.raises(FusionInputError, match="no DICOM series"):
        load_volume(tmp_path / "junk")
    with pytest.raises(FusionInputError, match="does not exist"):
        load_volume(tmp_path / "missing")
    (tmp_path / "image.png").write_bytes(b"\x89PNG")
    with pytest.raises(FusionInputError, match="unsupported"):
        load_volume(tmp_path / "image.png")


@pytest.mark.parametrize("keep", [-10, -300, 200])
def test_truncated_dicom_names_the_file(axial_series, keep):
    bad = axial_series["files"][2]
    truncate_file(bad, keep)
    with pytest.raises(FusionInputError) as exc:
        load_volume(Path(bad).parent, study="p02")
    assert exc.value.path == os.path.abspath(bad)
    assert exc.value.study == "p02"
    assert "truncated" in str(exc.value)


@pytest.mark.parametrize("name", ["mri.nii", "mri.nii.gz"])
def test_truncated_nifti_names_the_file(tmp_path, name, small_volume):
    path = _save_nifti(tmp_path / name, small_volume, np.eye(4))
    truncate_file(path, os.path.getsize(path) // 2)
    with pytest.raises(FusionInputError) as exc:
        load_volume(path, study="p03")
    assert exc.value.path == str(path) and exc.value.study == "p03"


def test_uneven_spacing(tmp_path):
    info = write_dicom_series(tmp_path / "gap", z_positions=[0, 2.5, 5, 7.5, 12.5, 15])
    with pytest.raises(FusionInputError, match="uneven slice spacing") as exc:
        load_volume(tmp_path / "gap")
    assert info["series_uid"] in str(exc.value)
    # within 1%: fine
    write_dicom_series(tmp_path / "ok", z_positions=[0, 2.5, 5.01, 7.5, 10, 12.5])
    assert load_volume(tmp_path / "ok").shape[-1] == 6


def test_gantry_tilt_refused(tmp_path):
    write_dicom_series(tmp_path / "tilt", shift_per_slice=(0.0, 0.4, 0.0))
    with pytest.raises(FusionInputError, match="gantry tilt"):
        load_volume(tmp_path / "tilt")


def test_duplicate_positions_4d_dicom(tmp_path):
    write_dicom_series(tmp_path / "4d", z_positions=[0, 0, 2.5, 2.5, 5, 5])
    with pytest.raises(FusionInputError, match="same position"):
        load_volume(tmp_path / "4d")


def test_rgb_and_multiframe_dicom_rejected(axial_series):
    f = axial_series["files"][0]
    ds = pydicom.dcmread(f)
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = np.zeros((20, 24, 3), np.uint8).tobytes()
    ds.save_as(f)
    with pytest.raises(FusionInputError, match="colour DICOM") as exc:
        load_volume(Path(f).parent)
    assert exc.value.path == os.path.abspath(f)
    ds = pydicom.dcmread(axial_series["files"][1])
    ds.NumberOfFrames = 2
    ds.save_as(axial_series["files"][1])
    ds = pydicom.dcmread(f)
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    del ds.PlanarConfiguration
    ds.save_as(f)
    with pytest.raises(FusionInputError, match="multi-frame"):
        load_volume(Path(f).parent)


def test_single_slice_series_loads(tmp_path):
    info = write_dicom_series(tmp_path / "one", vol=index_volume(nz=1))
    img = load_volume(tmp_path / "one")
    assert tuple(img.shape) == (1, 24, 20, 1)
    np.testing.assert_array_equal(img[0].numpy(), info["vol"])
    # the slice spacing comes from SliceThickness (2.5 mm), as dcm2niix takes it, not ITK's 1 mm default
    assert float(np.linalg.norm(np.asarray(img.affine)[:3, 2])) == pytest.approx(2.5)
    ds = pydicom.dcmread(info["files"][0])
    ds.SpacingBetweenSlices = 3.0  # when present it wins
    ds.save_as(info["files"][0])
    assert float(np.linalg.norm(np.asarray(load_volume(tmp_path / "one").affine)[:3, 2])) == pytest.approx(3.0)
    # a 2D NIfTI becomes a one-slice volume
    aff = np.diag([2.0, 3.0, 4.0, 1.0])
    img = load_volume(_save_nifti(tmp_path / "slice.nii", np.ones((5, 6), np.float32), aff))
    assert tuple(img.shape) == (1, 5, 6, 1)


def test_nifti_nrrd_load(tmp_path, small_volume, ras_oblique_affine):
    img = load_volume(_save_nifti(tmp_path / "mri.nii.gz", small_volume, ras_oblique_affine))
    assert tuple(img.shape) == (1, 24, 20, 6)
    np.testing.assert_allclose(img.affine.numpy(), ras_oblique_affine, atol=1e-4)
    assert img.meta["source_path"] == str(tmp_path / "mri.nii.gz")
    # NRRD through ITKReader: same geometry
    from monai.data import ITKWriter

    w = ITKWriter(output_dtype=np.float32)
    w.set_data_array(small_volume, channel_dim=None)
    w.set_metadata({"affine": ras_oblique_affine, "original_affine": ras_oblique_affine}, resample=False)
    w.write(str(tmp_path / "mri.nrrd"))
    img2 = load_volume(tmp_path / "mri.nrrd")
    np.testing.assert_allclose(img2.affine.numpy(), ras_oblique_affine, atol=1e-4)
    np.testing.assert_array_equal(img2[0].numpy(), small_volume)


def test_4d_and_rgb_files(tmp_path, small_volume):
    with pytest.raises(FusionInputError, match="4D volume with 3 frames"):
        load_volume(_save_nifti(tmp_path / "t.nii", np.stack([small_volume] * 3, -1), np.eye(4)))
    img = load_volume(_save_nifti(tmp_path / "t1.nii", small_volume[..., None], np.eye(4)))
    assert tuple(img.shape) == (1, 24, 20, 6)
    rgb = sitk.GetImageFromArray(np.zeros((6, 20, 24, 3), np.uint8), isVector=True)
    sitk.WriteImage(rgb, str(tmp_path / "rgb.nrrd"))
    with pytest.raises(FusionInputError, match="RGB/vector") as exc:
        load_volume(tmp_path / "rgb.nrrd", study="p4")
    assert exc.value.path.endswith("rgb.nrrd")


def test_too_large_refused_before_reading_pixels(axial_series, tmp_path, monkeypatch):
    import itk

    calls = []
    real_imread = itk.imread
    monkeypatch.setattr(itk, "imread", lambda *a, **k: calls.append(a) or real_imread(*a, **k))
    folder = Path(axial_series["files"][0]).parent
    with pytest.raises(FusionInputError, match="too large"):
        load_volume(folder, max_voxels=24 * 20 * 6 - 1)
    assert calls == []  # pixel data never read
    assert load_volume(folder, max_voxels=24 * 20 * 6).shape[-1] == 6
    assert len(calls) == 1
    # a NRRD header that claims 60000 x 60000 x 2000 voxels, with no data behind it
    hdr = tmp_path / "huge.nhdr"
    hdr.write_text("NRRD0004\ntype: float\ndimension: 3\nsizes: 60000 60000 2000\nencoding: raw\n"
                   "endian: little\ndata file: huge.raw\n")
    (tmp_path / "huge.raw").write_bytes(b"\0" * 16)
    with pytest.raises(FusionInputError, match="too large") as exc:
        load_volume(hdr, study="big")
    assert exc.value.path == str(hdr)
    assert len(calls) == 1
    # NIfTI: header shape, data never touched
    nib.save(nib.Nifti1Image(np.zeros((2, 2, 2), np.float32), np.eye(4)), str(tmp_path / "big.nii"))
    raw = bytearray((tmp_path / "big.nii").read_bytes())
    raw[40:56] = np.array([3, 4000, 4000, 4000, 1, 1, 1, 1], "<i2").tobytes()  # dim[]
    (tmp_path / "big.nii").write_bytes(bytes(raw))
    with pytest.raises(FusionInputError, match="too large"):
        load_volume(tmp_path / "big.nii")


def test_non_finite_voxels(tmp_path, small_volume, caplog):
    vol = small_volume.copy()
    vol[1, 2, 3], vol[4, 5, 0], vol[0, 0, 1] = np.nan, np.inf, -np.inf
    path = _save_nifti(tmp_path / "nan.nii.gz", vol, np.eye(4))
    with caplog.at_level(logging.WARNING, logger="fusionmamba_med.io.loading"):
        img = load_volume(path, study="pN")
    assert torch.isfinite(img).all()
    finite_min = np.nanmin(np.where(np.isfinite(vol), vol, np.nan))
    assert img[0, 1, 2, 3] == finite_min and img[0, 4, 5, 0] == finite_min
    assert "nan.nii.gz" in caplog.text and "3 non-finite" in caplog.text and "pN" in caplog.text
    path = _save_nifti(tmp_path / "allnan.nii", np.full((4, 4, 2), np.nan, np.float32), np.eye(4))
    with pytest.raises(FusionInputError, match="no finite voxel") as exc:
        load_volume(path)
    assert exc.value.path == str(path)


def test_load_studyd(tmp_path, small_volume):
    a = write_dicom_series(tmp_path / "p1" / "MR", description="T1", name_prefix="A")
    write_dicom_series(tmp_path / "p1" / "MR", description="T2", name_prefix="B")
    pet = _save_nifti(tmp_path / "p1" / "pet.nii.gz", small_volume, np.eye(4))
    item = {"study": "p1", "mri": str(tmp_path / "p1" / "MR"), "moving": str(pet), "mri_series_uid": a["series_uid"]}
    out = LoadStudyd(keys=("mri", "moving"))(item)
    assert tuple(out["mri"].shape) == (1, 24, 20, 6) and tuple(out["moving"].shape) == (1, 24, 20, 6)
    assert out["study"] == "p1" and isinstance(item["mri"], str)  # input not modified
    # no series chosen: the error names the study and the folder
    with pytest.raises(FusionInputError) as exc:
        LoadStudyd()({k: v for k, v in item.items() if k != "mri_series_uid"})
    assert exc.value.study == "p1" and exc.value.path.endswith("MR")
    # explicit series keys
    out = LoadStudyd(keys=["mri"], series_uid_keys={"mri": "uid"})({"study": "p1", "mri": item["mri"], "uid": "t2"})
    assert out["mri"].meta["series_description"] == "T2"


def test_load_studyd_wraps_other_errors(monkeypatch, tmp_path):
    def boom(*args, **kwargs):
        raise ValueError("kaput")

    monkeypatch.setattr(loading, "load_volume", boom)
    with pytest.raises(FusionInputError, match="kaput") as exc:
        LoadStudyd(keys=["mri"])({"study": "s7", "mri": str(tmp_path / "x.nii")})
    assert exc.value.study == "s7" and exc.value.path.endswith("x.nii")


def test_lone_truncated_dicom_file_is_named_as_truncated(tmp_path):
    info = write_dicom_series(tmp_path / "one", vol=index_volume(nz=1))
    truncate_file(info["files"][0], -300)
    with pytest.raises(FusionInputError, match="truncated DICOM file: pixel data needs") as exc:
        load_volume(tmp_path / "one", study="s1")
    assert Path(exc.value.path).name == Path(info["files"][0]).name and "none of its" not in str(exc.value)


def test_rt_dose_is_refused_saying_what_it_is(tmp_path):
    info = write_dicom_series(tmp_path / "dose", vol=index_volume(nz=1))
    ds = pydicom.dcmread(info["files"][0])
    ds.Modality, ds.SOPClassUID = "RTDOSE", "1.2.840.10008.5.1.4.1.1.481.2"
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.NumberOfFrames, ds.GridFrameOffsetVector, ds.FrameIncrementPointer = 1, [0], 0x3004000C
    ds.DoseGridScaling, ds.DoseUnits, ds.DoseType, ds.DoseSummationType = 0.001, "GY", "PHYSICAL", "PLAN"
    ds.save_as(info["files"][0])
    with pytest.raises(FusionInputError, match="RT Dose object") as exc:
        load_volume(tmp_path / "dose", study="s1")
    assert "Exception thrown" not in str(exc.value) and exc.value.path.endswith("IM0000.dcm")


def test_mosaic_without_its_layout_is_refused_naming_the_mosaic(tmp_path):
    info = write_dicom_series(tmp_path / "mosaic", vol=index_volume(nz=1))
    ds = pydicom.dcmread(info["files"][0])
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND", "MOSAIC"]  # no Siemens CSA header: the tile count is unknown
    ds.save_as(info["files"][0])
    with pytest.raises(FusionInputError, match="Siemens mosaic") as exc:
        load_volume(tmp_path / "mosaic", study="s1")
    assert exc.value.path.endswith("IM0000.dcm")


def test_two_file_mosaic_is_called_4d_not_same_position(tmp_path):
    info = write_dicom_series(tmp_path / "mosaic", vol=index_volume(nz=2), z_positions=[0.0, 0.0])
    for f in info["files"]:
        ds = pydicom.dcmread(f)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND", "MOSAIC"]
        ds.save_as(f)
    with pytest.raises(FusionInputError, match="mosaic series of 2 files.*4D") as exc:
        load_volume(tmp_path / "mosaic")
    assert "same position" not in str(exc.value)
