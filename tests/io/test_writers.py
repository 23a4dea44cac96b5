import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import torch
from monai.data import ITKReader, MetaTensor
from monai.transforms import LoadImage

import fusionmamba_med.io.dicom_write as dicom_write
from fusionmamba_med.errors import FusionInputError
from fusionmamba_med.io.atomic import write_summary
from fusionmamba_med.io.loading import load_volume
from fusionmamba_med.io.geometry import ras_affine_to_lps_geometry
from fusionmamba_med.io.writers import FusedVolumeWriter
from tests.synthetic import index_volume, oblique_iop, write_dicom_series

FORMATS = ["nifti", "nrrd", "dicom"]
TOL = 1e-4


# --------------------------------------------------------------------------------------------- helpers
def _fused_like(ref: MetaTensor, seed=0) -> MetaTensor:
    """A float 'fused' volume on the reference grid (MetaTensor ops keep the reference's meta)."""
    rng = np.random.default_rng(seed)
    noise = torch.as_tensor(rng.normal(size=tuple(ref.shape)).astype(np.float32))
    return ref * 0.0137 + noise - 3.25


def _rgb_like(ref: MetaTensor) -> MetaTensor:
    g = (ref - ref.min()) / (ref.max() - ref.min())
    meta = {k: v for k, v in ref.meta.items() if k != "affine"}
    return MetaTensor(torch.cat([g, 1 - g, g * 0 + 0.5]).as_tensor(), affine=ref.affine.clone(), meta=meta)


def _sitk_read(path: Path) -> sitk.Image:
    if path.is_dir():
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path)))
        return reader.Execute()
    return sitk.ReadImage(str(path))


def _assert_sitk_geometry(img: sitk.Image, ref: MetaTensor):
    spacing, direction, origin = ras_affine_to_lps_geometry(ref.affine.numpy())
    assert img.GetSize() == tuple(ref.shape[1:])
    np.testing.assert_allclose(img.GetSpacing(), spacing, atol=TOL)
    np.testing.assert_allclose(img.GetOrigin(), origin, atol=TOL)
    np.testing.assert_allclose(np.reshape(img.GetDirection(), (3, 3)), direction, atol=TOL)


def _dicom_slope(folder: Path) -> float:
    return float(pydicom.dcmread(sorted(folder.iterdir())[0], stop_before_pixels=True).RescaleSlope)


def _nifti_reference(tmp_path, affine) -> MetaTensor:
    path = tmp_path / "ref" / "mri.nii.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(index_volume().astype(np.float32), affine), str(path))
    return load_volume(path)


@pytest.fixture(params=["dicom_oblique", "nifti_oblique"])
def reference(request, tmp_path, ras_oblique_affine):
    if request.param == "dicom_oblique":
        info = write_dicom_series(tmp_path / "ref" / "MR", spacing=(0.8, 0.9, 2.5), iop=oblique_iop(),
                                  origin=(12.5, -30.25, 47.0))
        return load_volume(tmp_path / "ref" / "MR")
    return _nifti_reference(tmp_path, ras_oblique_affine)


# --------------------------------------------------------------------------------------------- geometry + values
@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_geometry_and_values(tmp_path, reference, fmt):
    fused = _fused_like(reference)
    out = FusedVolumeWriter(tmp_path / "out", output_format=fmt)(fused, reference, "p01")
    assert out == FusedVolumeWriter(tmp_path / "out", output_format=fmt).output_path("p01")
    assert out.parent == tmp_path / "out" / "p01"
    assert out.name == {"nifti": "p01_fused.nii.gz", "nrrd": "p01_fused.nrrd", "dicom": "p01_fused_dicom"}[fmt]
    # MONAI re-read (ITKReader for the DICOM folder, as the loader does)
    reader = ITKReader() if fmt != "nifti" else None
    back = LoadImage(reader=reader, image_only=True, ensure_channel_first=True)(str(out))
    assert tuple(back.shape) == tuple(reference.shape)
    np.testing.assert_allclose(back.affine.numpy(), reference.affine.numpy(), atol=TOL)
    tol = _dicom_slope(out) / 2 + 1e-5 if fmt == "dicom" else 1e-6
    np.testing.assert_allclose(back.numpy(), fused.numpy(), atol=tol, rtol=0)
    # SimpleITK re-read
    img = _sitk_read(out)
    _assert_sitk_geometry(img, reference)
    arr = sitk.GetArrayFromImage(img).transpose(2, 1, 0)  # (z, y, x) -> (x, y, z)
    np.testing.assert_allclose(arr, fused[0].numpy(), atol=tol, rtol=0)
    # no temporary leftovers
    assert [p.name for p in out.parent.iterdir()] == [out.name]


def test_dicom_derived_series_attributes(tmp_path):
    info = write_dicom_series(tmp_path / "ref" / "MR", spacing=(0.8, 0.9, 2.5), iop=oblique_iop(),
                              description="../../evil", patient_id="../x")
    ref = load_volume(tmp_path / "ref" / "MR")
    out = FusedVolumeWriter(tmp_path / "out", "dicom", series_description="Fused PET-MR")(_fused_like(ref), ref,
                                                                                        "../p01")
    assert out == tmp_path / "out" / "p01" / "p01_fused_dicom"
    names = sorted(p.name for p in out.iterdir())
    assert names == [f"{k:04d}.dcm" for k in range(1, 7)]  # never from tags
    src = pydicom.dcmread(info["files"][0], stop_before_pixels=True)
    dss = [pydicom.dcmread(out / n) for n in names]
    series_uids = {ds.SeriesInstanceUID for ds in dss}
    assert len(series_uids) == 1 and info["series_uid"] not in series_uids
    sops = {ds.SOPInstanceUID for ds in dss}
    src_sops = {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in info["files"]}
    assert len(sops) == 6 and not sops & src_sops
    for k, ds in enumerate(dss):
        assert ds.StudyInstanceUID == info["study_uid"]
        assert ds.FrameOfReferenceUID == info["for_uid"]
        assert ds.PatientID == "../x" and ds.PatientName == src.PatientName
        assert list(ds.ImageType) == ["DERIVED", "SECONDARY", "OTHER"]
        assert ds.SeriesDescription == "Fused PET-MR"
        assert int(ds.SeriesNumber) != int(src.SeriesNumber)
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert int(ds.InstanceNumber) == k + 1
        assert "LargestImagePixelValue" not in ds and "SmallestImagePixelValue" not in ds
        assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation) == (16, 16, 15, 1)
        assert ds.SamplesPerPixel == 1 and ds.PhotometricInterpretation == "MONOCHROME2"
        assert "WindowCenter" in ds and float(ds.WindowWidth) > 0
        assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID in src_sops
    # one IOP, one ContentTime, one slope for the whole series (Slicer would split it otherwise)
    assert len({tuple(ds.ImageOrientationPatient) for ds in dss}) == 1
    assert len({ds.ContentTime for ds in dss}) == 1
    assert len({(ds.RescaleSlope, ds.RescaleIntercept) for ds in dss}) == 1
    # slice k of the output sits where slice k of the source sat
    for k, ds in enumerate(dss):
        src_k = pydicom.dcmread(info["files"][k], stop_before_pixels=True)
        np.testing.assert_allclose([float(v) for v in ds.ImagePositionPatient],
                                   [float(v) for v in src_k.ImagePositionPatient], atol=TOL)
    # a second export gets another series UID
    out2 = FusedVolumeWriter(tmp_path / "out2", "dicom")(_fused_like(ref), ref, "p01")
    assert pydicom.dcmread(next(out2.iterdir())).SeriesInstanceUID not in series_uids


def test_dicom_from_scratch_for_non_dicom_reference(tmp_path, ras_oblique_affine):
    ref = _nifti_reference(tmp_path, ras_oblique_affine)
    fused = _fused_like(ref)
    out = FusedVolumeWriter(tmp_path / "out", "dicom")(fused, ref, "p01")
    dss = [pydicom.dcmread(p) for p in sorted(out.iterdir())]
    assert {ds.PatientID for ds in dss} == {"ANONYMOUS"}
    assert len({ds.StudyInstanceUID for ds in dss}) == 1 and len({ds.FrameOfReferenceUID for ds in dss}) == 1
    assert len({tuple(ds.ImageOrientationPatient) for ds in dss}) == 1
    # repeated exports of the same reference land in the same study / frame of reference
    out2 = FusedVolumeWriter(tmp_path / "out2", "dicom")(fused, ref, "p01")
    ds2 = pydicom.dcmread(next(out2.iterdir()))
    assert ds2.StudyInstanceUID == dss[0].StudyInstanceUID and ds2.FrameOfReferenceUID == dss[0].FrameOfReferenceUID
    assert ds2.SeriesInstanceUID != dss[0].SeriesInstanceUID


def test_dicom_from_scratch_left_handed_grid(tmp_path):
    """Slice axis opposite to row x column: readers reverse the slice order, voxels keep their physical position."""
    ras = np.diag([-1.2, 0.9, 2.0, 1.0])  # LPS diag(1.2, -0.9, 2): row x column = -z
    ras[:3, 3] = (3.0, -4.0, 5.0)
    ref = _nifti_reference(tmp_path, ras)
    fused = _fused_like(ref)
    out = FusedVolumeWriter(tmp_path / "out", "dicom")(fused, ref, "lh")
    img = _sitk_read(out)
    assert img.GetSize() == (24, 20, 6)
    arr = sitk.GetArrayFromImage(img).transpose(2, 1, 0)
    tol = _dicom_slope(out) / 2 + 1e-5
    np.testing.assert_allclose(arr[:, :, ::-1], fused[0].numpy(), atol=tol, rtol=0)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ ras
    for idx in [(0, 0, 0), (23, 19, 5), (5, 7, 2)]:
        expected = (lps @ np.array([*idx, 1.0]))[:3]
        got = img.TransformIndexToPhysicalPoint((idx[0], idx[1], 5 - idx[2]))
        np.testing.assert_allclose(got, expected, atol=TOL)


def test_integer_fused_values_are_exact_in_dicom(tmp_path, axial_series):
    ref = load_volume(Path(axial_series["files"][0]).parent)
    out = FusedVolumeWriter(tmp_path / "out", "dicom")(ref.clone(), ref, "s")
    assert _dicom_slope(out) == 1.0
    back = LoadImage(reader=ITKReader(), image_only=True, ensure_channel_first=True)(str(out))
    np.testing.assert_array_equal(back.numpy(), ref.numpy())


# --------------------------------------------------------------------------------------------- colour
@pytest.mark.parametrize("fmt", FORMATS)
def test_rgb_output(tmp_path, reference, fmt):
    rgb = _rgb_like(reference)
    out = FusedVolumeWriter(tmp_path / "out", fmt)(rgb, reference, "c1")
    img = _sitk_read(out)
    assert img.GetNumberOfComponentsPerPixel() == 3
    assert img.GetPixelID() == sitk.sitkVectorUInt8
    _assert_sitk_geometry(img, reference)
    arr = sitk.GetArrayFromImage(img).transpose(3, 2, 1, 0)  # (z, y, x, c) -> (c, x, y, z)
    np.testing.assert_array_equal(arr, np.rint(rgb.numpy() * 255).astype(np.uint8))
    if fmt == "dicom":
        ds = pydicom.dcmread(sorted(out.iterdir())[0])
        assert (ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.BitsAllocated) == (3, "RGB", 8)
        assert list(ds.ImageType) == ["DERIVED", "SECONDARY", "OTHER"]
        assert "RescaleSlope" not in ds
    if fmt == "nifti":
        assert nib.load(str(out)).get_data_dtype().names == ("R", "G", "B")


# --------------------------------------------------------------------------------------------- policies
@pytest.mark.parametrize("fmt", FORMATS)
def test_overwrite_policies(tmp_path, axial_series, fmt):
    ref = load_volume(Path(axial_series["files"][0]).parent)
    first, second = _fused_like(ref, 1), _fused_like(ref, 2)
    w = FusedVolumeWriter(tmp_path / "out", fmt, overwrite="skip")
    assert not w.exists("s1")
    out = w(first, ref, "s1")
    assert w.exists("s1")

    def content():
        return LoadImage(reader=ITKReader() if fmt != "nifti" else None, image_only=True,
                         ensure_channel_first=True)(str(out)).numpy()

    tol = _dicom_slope(out) + 1e-5 if fmt == "dicom" else 1e-6
    assert w(second, ref, "s1") == out  # skip: nothing written
    np.testing.assert_allclose(content(), first.numpy(), atol=tol)
    with pytest.raises(FusionInputError, match="already exists") as exc:
        FusedVolumeWriter(tmp_path / "out", fmt, overwrite="error")(second, ref, "s1")
    assert exc.value.study == "s1"
    assert FusedVolumeWriter(tmp_path / "out", fmt, overwrite="overwrite")(second, ref, "s1") == out
    tol = _dicom_slope(out) + 1e-5 if fmt == "dicom" else 1e-6
    np.testing.assert_allclose(content(), second.numpy(), atol=tol)
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]
    if fmt == "dicom":
        assert len(list(out.iterdir())) == 6


def _crash(*args, **kwargs):
    raise OSError("disk full (simulated)")


@pytest.mark.parametrize("fmt, target", [
    ("nifti", "nibabel.save"),
    ("nrrd", "SimpleITK.WriteImage"),
    ("dicom", "pydicom.dataset.Dataset.save_as"),
    ("dicom", "fusionmamba_med.io.dicom_write._save_dataset"),
])
@pytest.mark.parametrize("existing", [False, True])
def test_crash_leaves_no_final_output(tmp_path, axial_series, monkeypatch, fmt, target, existing):
    ref = load_volume(Path(axial_series["files"][0]).parent)
    w = FusedVolumeWriter(tmp_path / "out", fmt, overwrite="overwrite")
    if existing:
        out = w(_fused_like(ref, 1), ref, "s1")
        before = sorted(os.listdir(out)) if out.is_dir() else out.read_bytes()
    if target.endswith("_save_dataset"):  # crash in the middle of the series
        real, n = dicom_write._save_dataset, []

        def flaky(ds, path):
            n.append(path)
            if len(n) == 3:
                raise OSError("disk full (simulated)")
            real(ds, path)

        monkeypatch.setattr(dicom_write, "_save_dataset", flaky)
    else:
        monkeypatch.setattr(target, _crash)
    with pytest.raises(FusionInputError, match="disk full") as exc:
        w(_fused_like(ref, 2), ref, "s1")
    assert exc.value.study == "s1"
    final = w.output_path("s1")
    leftovers = sorted(p.name for p in final.parent.iterdir()) if final.parent.exists() else []
    if existing:  # the old output is intact, nothing else remains
        assert leftovers == [final.name]
        assert (sorted(os.listdir(final)) if final.is_dir() else final.read_bytes()) == before
    else:
        assert leftovers == []
        assert not final.exists()


def test_refuses_to_overwrite_inputs(tmp_path):
    # the reference NIfTI sits exactly where the output would go
    path = tmp_path / "out" / "p1" / "p1_fused.nii.gz"
    path.parent.mkdir(parents=True)
    nib.save(nib.Nifti1Image(index_volume().astype(np.float32), np.eye(4)), str(path))
    ref = load_volume(path)
    data = path.read_bytes()
    for policy in ("overwrite", "skip", "error"):
        with pytest.raises(FusionInputError, match="input"):
            FusedVolumeWriter(tmp_path / "out", "nifti", overwrite=policy)(_fused_like(ref), ref, "p1")
    assert path.read_bytes() == data
    # a DICOM output folder that contains the input series
    info = write_dicom_series(tmp_path / "out2" / "p1" / "p1_fused_dicom")
    ref = load_volume(tmp_path / "out2" / "p1" / "p1_fused_dicom")
    with pytest.raises(FusionInputError, match="input"):
        FusedVolumeWriter(tmp_path / "out2", "dicom", overwrite="overwrite")(_fused_like(ref), ref, "p1")
    assert all(os.path.exists(f) for f in info["files"])
    # the moving image passed explicitly
    moving = tmp_path / "out3" / "p1" / "p1_fused.nrrd"
    moving.parent.mkdir(parents=True)
    moving.write_bytes(b"x")
    with pytest.raises(FusionInputError, match="input"):
        FusedVolumeWriter(tmp_path / "out3", "nrrd", overwrite="overwrite")(_fused_like(ref), ref, "p1",
                                                                           input_paths=[moving])
    assert moving.read_bytes() == b"x"


def test_grid_mismatch_errors(tmp_path, axial_series):
    ref = load_volume(Path(axial_series["files"][0]).parent)
    w = FusedVolumeWriter(tmp_path / "out", "nifti")
    with pytest.raises(FusionInputError, match="differs from the reference MRI grid"):
        w(ref[:, :16], ref, "s")
    moved = ref.clone()
    moved.affine = ref.affine @ torch.diag(torch.tensor([2.0, 1.0, 1.0, 1.0], dtype=torch.float64))
    with pytest.raises(FusionInputError, match="affine differs"):
        w(moved, ref, "s")
    with pytest.raises(FusionInputError, match=r"\(1 or 3, X, Y, Z\)"):
        w(torch.zeros(2, 24, 20, 6), ref, "s")
    # a plain tensor takes the reference geometry
    out = w(torch.ones(1, 24, 20, 6), ref, "s")
    np.testing.assert_allclose(nib.load(str(out)).affine, ref.affine.numpy(), atol=TOL)
    assert not any(p.name.startswith(".") for p in out.parent.iterdir())


def test_single_slice_volume_round_trip(tmp_path):
    write_dicom_series(tmp_path / "one", vol=index_volume(nz=1))
    ref = load_volume(tmp_path / "one")
    for fmt in FORMATS:
        out = FusedVolumeWriter(tmp_path / "out", fmt)(_fused_like(ref), ref, "s")
        back = LoadImage(reader=ITKReader() if fmt != "nifti" else None, image_only=True,
                         ensure_channel_first=True)(str(out))
        assert tuple(back.shape) == (1, 24, 20, 1), fmt


def test_write_summary(tmp_path, monkeypatch):
    path = tmp_path / "run" / "summary.json"
    summary = {"ok": ["p1"], "path": tmp_path, "nan": float("nan"), "n": np.int64(3), "arr": np.arange(3),
               "t": torch.tensor([1.5]), "err": FusionInputError("bad", study="p2")}
    assert write_summary(path, summary) == path
    data = json.loads(path.read_text())
    assert data["nan"] is None and data["n"] == 3 and data["arr"] == [0, 1, 2] and data["t"] == [1.5]
    assert data["path"] == str(tmp_path) and "p2" in data["err"]
    assert os.listdir(path.parent) == ["summary.json"]

    def boom(*a, **k):
        raise OSError("simulated")

    original = path.read_text()
    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        write_summary(path, {"other": 1})
    monkeypatch.undo()
    assert path.read_text() == original and os.listdir(path.parent) == ["summary.json"]
