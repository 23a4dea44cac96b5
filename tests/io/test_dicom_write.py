"""DICOM output checked by independent oracles: dciodvfy (dicom3tools), DCMTK's dcm2pnm renderer, SimpleITK re-reads.

The oracle tests skip when the tool is not installed (Debian: ``apt-get install dicom3tools dcmtk``; ``.ci/run`` tries).
Sources: the synthetic MRI series in explicit VR little endian, explicit VR big endian, implicit VR little endian and
RLE Lossless, and a NIfTI MRI (series built from scratch); references held in one file (a generated enhanced
multi-frame MR, real Siemens mosaics from ../shared/dicom_qa): a series on their grid inheriting their identity. Outputs: greyscale fused (0..4095 = 0..1) and RGB.
"""

from __future__ import annotations

import copy
import logging
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import torch
from monai.data import MetaTensor
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless

from fusionmamba_med.io.loading import load_volume
from fusionmamba_med.io.geometry import ras_affine_to_lps_geometry
from fusionmamba_med.io.writers import FusedVolumeWriter
from tests.synthetic import index_volume, oblique_iop, write_dicom_series, write_enhanced_dicom

SOURCES = ["dicom_le", "dicom_be", "dicom_implicit", "dicom_rle", "nifti"]
STEP = 1.0 / 4095


# --------------------------------------------------------------------------------------------- sources
def _overlay_words(ny, nx) -> np.ndarray:
    """A 1-bit overlay (a frame) packed in 16-bit words, as OverlayData (OW) holds it."""
    bits = np.zeros((ny, nx), dtype=np.uint8)
    bits[0, :] = bits[-1, :] = bits[:, 0] = bits[:, -1] = 1
    packed = np.packbits(bits.ravel(), bitorder="little")
    if packed.size % 2:
        packed = np.append(packed, 0)
    return packed.view("<u2")


def _rewrite(files: list[str], folder: Path, syntax: str, overlay: bool = False) -> list[str]:
    """Copy a little-endian series into another transfer syntax (new files, same UIDs and values)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for f in files:
        src = pydicom.dcmread(f)
        path = folder / Path(f).name
        if syntax == RLELossless:
            src.compress(RLELossless, encoding_plugin="pydicom")
            src.save_as(path, enforce_file_format=True)
            out.append(str(path))
            continue
        ds = Dataset()  # a fresh dataset: no original encoding, written in the file meta's transfer syntax
        for elem in src:
            ds.add(copy.deepcopy(elem))
        big = syntax == ExplicitVRBigEndian
        ds.PixelData = src.pixel_array.astype(">i2" if big else "<i2").tobytes()
        ds["PixelData"].VR = "OW"
        if overlay:
            words = _overlay_words(src.Rows, src.Columns).astype(">u2" if big else "<u2").tobytes()
            for element, vr, value in [(0x0010, "US", src.Rows), (0x0011, "US", src.Columns), (0x0040, "CS", "G"),
                                       (0x0050, "SS", [1, 1]), (0x0100, "US", 1), (0x0102, "US", 0),
                                       (0x3000, "OW", words)]:
                ds.add_new((0x6000 << 16) | element, vr, value)
        ds.file_meta = FileMetaDataset(src.file_meta)
        ds.file_meta.TransferSyntaxUID = syntax
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
        out.append(str(path))
    return out


def _make_source(tmp_path: Path, kind: str, vol=None, spacing=(0.8, 0.9, 2.5)) -> tuple[MetaTensor, list[str]]:
    """(loaded reference MRI, its DICOM files ([] for NIfTI))."""
    if kind == "nifti":
        row, col = oblique_iop(15.0, -25.0)
        lps = np.eye(4)
        lps[:3, 0], lps[:3, 1] = np.multiply(row, spacing[0]), np.multiply(col, spacing[1])
        lps[:3, 2], lps[:3, 3] = np.cross(row, col) * spacing[2], (5.0, -7.5, 20.0)
        path = tmp_path / "ref" / "mri.nii.gz"
        path.parent.mkdir(parents=True, exist_ok=True)
        data = index_volume() if vol is None else vol
        nib.save(nib.Nifti1Image(data.astype(np.float32), np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps), str(path))
        return load_volume(path), []
    info = write_dicom_series(tmp_path / "ref" / "MR_le", vol=vol, spacing=spacing, iop=oblique_iop(),
                              origin=(12.5, -30.25, 47.0))
    files, folder = info["files"], tmp_path / "ref" / "MR_le"
    syntax = {"dicom_be": ExplicitVRBigEndian, "dicom_implicit": ImplicitVRLittleEndian,
              "dicom_rle": RLELossless}.get(kind)
    if syntax is not None:
        folder = tmp_path / "ref" / f"MR_{kind}"
        files = _rewrite(files, folder, syntax)
        assert str(pydicom.dcmread(files[0], stop_before_pixels=True).file_meta.TransferSyntaxUID) == syntax
    return load_volume(folder), files


def _gradient(ref: MetaTensor) -> MetaTensor:
    """A smooth fused image in [0, 1] on the reference grid (every voxel a different value)."""
    nx, ny, nz = ref.shape[1:]
    x, y, z = np.meshgrid(np.arange(nx), np.arange(ny), np.arange(nz), indexing="ij")
    v = ((x + nx * y) / max(nx * ny - 1, 1) * 0.9 + 0.1 * z / max(nz - 1, 1)).astype(np.float32)
    return MetaTensor(torch.as_tensor(v[None]), affine=ref.affine.clone(), meta=dict(ref.meta))


def _rgb(fused: MetaTensor) -> MetaTensor:
    g = fused.as_tensor()
    return MetaTensor(torch.cat([g, 1 - g, g * 0 + 0.5]), affine=fused.affine.clone(), meta=dict(fused.meta))


def _files(out: Path) -> list[Path]:
    return sorted(out.iterdir())


# --------------------------------------------------------------------------------------------- oracles
def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (Debian: dicom3tools / dcmtk)")
    return path


def _dciodvfy_errors(path) -> set[str]:
    res = subprocess.run([_tool("dciodvfy"), str(path)], capture_output=True, text=True, timeout=60)
    text = res.stdout + res.stderr
    assert "Abort" not in text, text
    return {line.strip() for line in text.splitlines() if line.startswith("Error")}


@pytest.mark.parametrize("colour", [False, True], ids=["grey", "rgb"])
@pytest.mark.parametrize("kind", SOURCES)
def test_dciodvfy_no_errors_beyond_the_source(tmp_path, kind, colour):
    _tool("dciodvfy")
    ref, src_files = _make_source(tmp_path, kind)
    fused = _gradient(ref)
    out = FusedVolumeWriter(tmp_path / "out", "dicom")(_rgb(fused) if colour else fused, ref, "s")
    allowed: set[str] = set()
    for f in src_files:
        allowed |= _dciodvfy_errors(f)
    for f in _files(out):
        new = _dciodvfy_errors(f) - allowed
        assert not new, f"{f.name}: dciodvfy errors the source does not have: {sorted(new)}"


@pytest.mark.parametrize("kind", ["dicom_le", "nifti"])
def test_dcm2pnm_renders_a_smooth_fused_slice_with_many_grey_levels(tmp_path, kind):
    dcm2pnm = _tool("dcm2pnm")
    from PIL import Image

    ref, _ = _make_source(tmp_path, kind, vol=index_volume(64, 64, 3), spacing=(1.0, 1.0, 2.0))
    out = FusedVolumeWriter(tmp_path / "out", "dicom")(_gradient(ref), ref, "s")
    png = tmp_path / "slice.png"
    # +Wi 1: the first VOI window stored in the file (as a viewer opens it); +on: 8-bit PNG
    res = subprocess.run([dcm2pnm, "+Wi", "1", "+on", str(_files(out)[1]), str(png)], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "cannot select VOI window" not in res.stdout + res.stderr
    levels = len(np.unique(np.asarray(Image.open(png))))
    assert levels >= 200, f"DCMTK shows {levels} grey levels"


# --------------------------------------------------------------------------------------------- values + geometry
def _sitk_series(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


@pytest.mark.parametrize("kind", SOURCES)
def test_round_trip_fused_mapping_and_geometry(tmp_path, kind):
    ref, src_files = _make_source(tmp_path, kind)
    fused = _gradient(ref)
    fused[0, 0, 0, 0], fused[0, 1, 0, 0] = 1.0, 0.0  # both ends of the range
    out = FusedVolumeWriter(tmp_path / "out", "dicom")(fused, ref, "s")
    expected = fused[0].numpy().astype(np.float64)
    # SimpleITK (GDCM): values / 4095 and the MRI's geometry
    img = _sitk_series(out)
    spacing, direction, origin = ras_affine_to_lps_geometry(ref.affine.numpy())
    assert img.GetSize() == tuple(ref.shape[1:])
    np.testing.assert_allclose(img.GetSpacing(), spacing, atol=1e-4)
    np.testing.assert_allclose(img.GetOrigin(), origin, atol=1e-4)
    np.testing.assert_allclose(np.reshape(img.GetDirection(), (3, 3)), direction, atol=1e-4)
    arr = sitk.GetArrayFromImage(img).transpose(2, 1, 0).astype(np.float64)
    assert arr.min() == 0 and arr.max() == 4095
    np.testing.assert_allclose(arr / 4095, expected, atol=0.5 * STEP + 1e-7, rtol=0)
    # the project's own loader (MONAI ITKReader): same grid as the MRI
    back = load_volume(out)
    np.testing.assert_allclose(back.affine.numpy(), ref.affine.numpy(), atol=1e-4)
    np.testing.assert_allclose(back[0].numpy() / 4095, expected, atol=0.5 * STEP + 1e-7, rtol=0)
    # pydicom: the stored encoding, the file meta, the stated mapping
    src_sops = {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in src_files}
    for k, f in enumerate(_files(out)):
        ds = pydicom.dcmread(f)
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert ds.original_encoding == (False, True)
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.file_meta.MediaStorageSOPClassUID == ds.SOPClassUID == pydicom.uid.MRImageStorage
        assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation) == (16, 12, 11, 0)
        assert "RescaleSlope" not in ds and "RescaleIntercept" not in ds  # MR IOD: no Modality LUT
        assert (float(ds.WindowCenter), float(ds.WindowWidth)) == (2048.0, 4096.0)
        assert list(ds.ImageType) == ["DERIVED", "SECONDARY", "OTHER"]
        assert "0..4095 = 0..1" in ds.ImageComments and "0..4095 = 0..1" in ds.DerivationDescription
        assert ds.pixel_array.dtype == np.uint16 and int(ds.pixel_array.max()) <= 4095
        if src_files:
            assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID in src_sops
        np.testing.assert_array_equal(ds.pixel_array.T, np.rint(expected[:, :, k] * 4095))


def test_rgb_output_from_a_big_endian_source(tmp_path):
    ref, _ = _make_source(tmp_path, "dicom_be")
    rgb = _rgb(_gradient(ref))
    out = FusedVolumeWriter(tmp_path / "out", "dicom")(rgb, ref, "c")
    img = _sitk_series(out)
    assert img.GetNumberOfComponentsPerPixel() == 3
    arr = sitk.GetArrayFromImage(img).transpose(3, 2, 1, 0)
    np.testing.assert_array_equal(arr, np.rint(rgb.numpy().astype(np.float64) * 255).astype(np.uint8))
    ds = pydicom.dcmread(_files(out)[0])
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert ds.SOPClassUID == pydicom.uid.SecondaryCaptureImageStorage
    assert len(ds.PatientOrientation) == 2 and all(ds.PatientOrientation)


def test_big_endian_binary_attributes_are_byte_swapped(tmp_path):
    """OW values other than the pixel data (an overlay here) keep their values when rewritten little endian."""
    info = write_dicom_series(tmp_path / "ref" / "MR_le")
    files = _rewrite(info["files"], tmp_path / "ref" / "MR_be", ExplicitVRBigEndian, overlay=True)
    ref = load_volume(tmp_path / "ref" / "MR_be")
    out = FusedVolumeWriter(tmp_path / "out", "dicom")(_gradient(ref), ref, "s")
    expected = _overlay_words(20, 24)
    src = pydicom.dcmread(files[0])
    assert not src.original_encoding[1]
    for f in _files(out):
        ds = pydicom.dcmread(f)
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert ds[0x60003000].VR == "OW"
        np.testing.assert_array_equal(np.frombuffer(ds[0x60003000].value, dtype="<u2"), expected)
        assert (ds[0x60000010].value, ds[0x60000011].value) == (20, 24)


def test_patient_orientation_of_rgb_series(tmp_path):
    ras = np.diag([-1.0, -1.0, 2.0, 1.0])  # LPS identity directions: rows run to L, columns to P
    path = tmp_path / "ref" / "mri.nii.gz"
    path.parent.mkdir(parents=True)
    nib.save(nib.Nifti1Image(index_volume().astype(np.float32), ras), str(path))
    ref = load_volume(path)
    out = FusedVolumeWriter(tmp_path / "out", "dicom")(_rgb(_gradient(ref)), ref, "c")
    ds = pydicom.dcmread(_files(out)[0], stop_before_pixels=True)
    assert list(ds.PatientOrientation) == ["L", "P"]
    assert "ScanningSequence" not in ds  # a Secondary Capture carries no MR Image module


# --------------------------------------------------------------------------------------------- range handling
def test_round_off_outside_unit_range_is_clipped(tmp_path):
    ref, _ = _make_source(tmp_path, "dicom_le")
    fused = _gradient(ref)
    fused[0, 0, 0, 0], fused[0, 1, 0, 0] = -5e-4, 1.0 + 5e-4
    out = FusedVolumeWriter(tmp_path / "out", "dicom")(fused, ref, "s")
    ds = pydicom.dcmread(_files(out)[0])
    assert ds.BitsStored == 12
    assert int(ds.pixel_array[0, 0]) == 0 and int(ds.pixel_array[0, 1]) == 4095


def test_values_far_outside_unit_range_keep_their_range(tmp_path, caplog):
    """Not a fused image (e.g. MRI units): int16 + rescale, a warning, and a window width >= 1 (DICOM)."""
    ref, _ = _make_source(tmp_path, "dicom_le")
    vol = _gradient(ref) * 0.5 - 0.2  # [-0.2, 0.3]: a range under 1
    with caplog.at_level(logging.WARNING, logger="fusionmamba_med.io.writers"):
        out = FusedVolumeWriter(tmp_path / "out", "dicom")(vol, ref, "s")
    assert "not a fused image" in caplog.text
    ds = pydicom.dcmread(_files(out)[0])
    assert (ds.BitsStored, ds.PixelRepresentation) == (16, 1)
    assert float(ds.WindowWidth) >= 1.0
    back = load_volume(out)
    slope = float(ds.RescaleSlope)
    np.testing.assert_allclose(back.numpy(), vol.numpy(), atol=slope / 2 + 1e-6, rtol=0)


# --------------------------------------------------------------------------------------------- one-file references
QA = Path(__file__).resolve().parents[2] / ".." / "shared" / "dicom_qa" / "series"


def _check_one_file_reference_output(tmp_path: Path, ref: MetaTensor, source: str,
                                     sop_class: str = pydicom.uid.MRImageStorage) -> None:
    """The fused series written for a reference held in ONE file (enhanced multi-frame, mosaic): valid per dciodvfy,
    on the reference's grid (same voxels at the same places within 0.01 mm; a left-handed grid comes back with its
    slice axis reversed, as every classic series does), patient/study/frame of reference inherited, new UIDs."""
    fused = _gradient(ref)
    out = FusedVolumeWriter(tmp_path / "out", "dicom")(fused, ref, "s")
    files = _files(out)
    assert [f.name for f in files] == [f"{k + 1:04d}.dcm" for k in range(ref.shape[-1])]
    for f in files:
        errors = _dciodvfy_errors(f)
        assert not errors, f"{f.name}: {sorted(errors)}"
    src = pydicom.dcmread(source, stop_before_pixels=True)
    sop_uids = set()
    for f in files:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        for kw in ("StudyInstanceUID", "PatientID", "PatientName", "FrameOfReferenceUID", "StudyDate", "Modality"):
            assert ds.get(kw) == src.get(kw), kw
        assert ds.SeriesInstanceUID != src.SeriesInstanceUID and ds.SOPInstanceUID != src.SOPInstanceUID
        assert ds.SOPClassUID == sop_class and "NumberOfFrames" not in ds
        assert not any(elem.tag.is_private for elem in ds)
        assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID == src.SOPInstanceUID
        sop_uids.add(ds.SOPInstanceUID)
    assert len(sop_uids) == len(files) and len({pydicom.dcmread(f).SeriesInstanceUID for f in files}) == 1
    expected = np.rint(fused[0].numpy().astype(np.float64) * 4095)
    if shutil.which("dcm2niix"):  # dcm2niix places the stored values on the reference grid (within 0.01 mm)
        from tests.io.test_dicom_oracle import assert_same_as_dcm2niix, dcm2niix_volume

        stored = MetaTensor(torch.as_tensor(expected[None]), affine=ref.affine.clone())
        assert_same_as_dcm2niix(stored, dcm2niix_volume(out, tmp_path / "d2n"))
    back = load_volume(out)
    ours, theirs = np.asarray(ref.affine, dtype=np.float64), np.asarray(back.affine, dtype=np.float64)
    if np.linalg.det(ours[:3, :3]) * np.linalg.det(theirs[:3, :3]) < 0 or not np.allclose(ours, theirs, atol=1e-2):
        nz = ref.shape[-1]  # left-handed reference grid: read back along row x column, slice axis reversed
        flipped = ours.copy()
        flipped[:3, 2], flipped[:3, 3] = -ours[:3, 2], ours[:3, 3] + ours[:3, 2] * (nz - 1)
        ours, expected = flipped, expected[:, :, ::-1]
    np.testing.assert_allclose(theirs, ours, atol=1e-2)
    np.testing.assert_array_equal(back[0].numpy(), expected)


@pytest.mark.parametrize("modality, sop_class", [("MR", pydicom.uid.MRImageStorage),
                                                 ("CT", pydicom.uid.CTImageStorage),
                                                 ("PT", pydicom.uid.SecondaryCaptureImageStorage)])
def test_enhanced_multiframe_reference_output(tmp_path, modality, sop_class):
    """Enhanced MR/CT/PET reference: a classic MR / CT series, or a Secondary Capture (a classic PET series would
    need the PET modules, which a fused image cannot fill)."""
    _tool("dciodvfy")
    info = write_enhanced_dicom(tmp_path / "ref" / "mf" / "enhanced.dcm", vol=index_volume(nx=10, ny=8, nz=6),
                                iop=oblique_iop(25.0, -15.0), origin=(12.5, -30.25, 47.0),
                                slope=[1.0, 0.78, 3.0, 25.0, 0.0123, 50.0], modality=modality)
    ref = load_volume(tmp_path / "ref" / "mf")
    assert ref.meta["multiframe_frames"] == 6
    _check_one_file_reference_output(tmp_path, ref, info["files"][0], sop_class)


@pytest.mark.skipif(not QA.is_dir(), reason="../shared/dicom_qa is absent")
@pytest.mark.parametrize("name", ["qa_sagasc35", "nih_si_0003"])
def test_siemens_mosaic_reference_output(tmp_path, name):
    """One Siemens mosaic file as the reference (a real one: a generated mosaic needs a Siemens CSA header)."""
    _tool("dciodvfy")
    first = sorted(p for p in (QA / name).iterdir() if p.suffix != ".txt")[0]
    (tmp_path / "ref").mkdir()
    shutil.copy(first, tmp_path / "ref" / first.name)
    ref = load_volume(tmp_path / "ref")
    assert ref.meta["mosaic_images"] == ref.shape[-1] > 1
    _check_one_file_reference_output(tmp_path, ref, str(tmp_path / "ref" / first.name))
