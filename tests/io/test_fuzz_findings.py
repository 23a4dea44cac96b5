"""What ``benchmarks/fuzz_inputs.py`` found the loaders doing wrong (loaded a volume that disagreed with the
reference reader, or raised something other than a FusionInputError), each now a clear refusal naming study and
file. One test per finding, on generated files (no ../shared needed)."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from fusionmamba_med.errors import FusionInputError
from fusionmamba_med.io import load_volume
from tests.synthetic import write_dicom_series


def _refused(path: Path, match: str) -> FusionInputError:
    with pytest.raises(FusionInputError, match=match) as exc:
        load_volume(path, study="fz")
    assert exc.value.study == "fz" and exc.value.path is not None
    return exc.value


def _series_with(tmp_path: Path, which: str | int = "all", **tags) -> tuple[Path, list[str]]:
    folder = tmp_path / "MR"
    files = write_dicom_series(folder)["files"]
    for f in files if which == "all" else [files[which]]:
        ds = pydicom.dcmread(f)
        for keyword, value in tags.items():
            setattr(ds, keyword, value)
        ds.save_as(f, enforce_file_format=False)
    return folder, files


def _nifti(tmp_path: Path, edit) -> Path:
    path = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(np.arange(60, dtype=np.float32).reshape(3, 4, 5), np.diag([1.2, 1.2, 3.0, 1.0])),
             str(path))
    raw = gzip.decompress(path.read_bytes())
    hdr = np.frombuffer(raw[:348], dtype=nib.nifti1.header_dtype).copy()
    edit(hdr)
    path.write_bytes(gzip.compress(hdr.tobytes() + raw[348:]))
    return path


@pytest.mark.parametrize("spacing", [[1.0, float("-inf")], [0.0, 0.0], [-1.0, 1.0]])
def test_invalid_pixel_spacing(tmp_path, spacing):
    folder, _ = _series_with(tmp_path, PixelSpacing=[str(v) for v in spacing])
    _refused(folder, "no valid PixelSpacing")


def test_pixel_spacing_differing_between_slices(tmp_path):
    folder, files = _series_with(tmp_path, which=2, PixelSpacing=[0.5, 0.5])
    assert Path(files[2]).name in str(_refused(folder, "PixelSpacing .* differs"))


@pytest.mark.parametrize("slope", ["inf", "NaN", "-1e308"])
def test_non_finite_or_huge_rescale(tmp_path, slope):
    folder, _ = _series_with(tmp_path, which=1, RescaleSlope=slope)
    _refused(folder, "invalid modality rescale")


@pytest.mark.parametrize("photometric,match", [("RGB", "colour DICOM"), ("MONOCHROME1", "MONOCHROME1"),
                                               ("PALETTE COLOR", "GDCM cannot scan")])  # GDCM gives up on the folder
def test_colour_or_inverted_photometric_with_one_sample(tmp_path, photometric, match):
    folder, _ = _series_with(tmp_path, which=3, PhotometricInterpretation=photometric)
    _refused(folder, match)


def test_pixel_data_longer_than_declared(tmp_path):
    folder, _ = _series_with(tmp_path, Columns=2)
    _refused(folder, "pixel data longer than declared")


def test_invalid_qform_quaternion(tmp_path):
    def edit(hdr):
        hdr["qform_code"], hdr["quatern_c"] = 1, -1.5

    _refused(_nifti(tmp_path, edit), "invalid NIfTI qform")


@pytest.mark.parametrize("field,index,value", [("srow_x", 0, 0.5), ("pixdim", 1, 7.0)])
def test_pixdim_disagreeing_with_the_sform(tmp_path, field, index, value):
    def edit(hdr):
        hdr[field][0][index] = value

    _refused(_nifti(tmp_path, edit), "pixdim .* disagrees")


def test_degenerate_sform(tmp_path):
    def edit(hdr):
        hdr["srow_z"][0][2] = 1e-30

    _refused(_nifti(tmp_path, edit), "degenerate NIfTI voxel-to-world|disagrees")


def test_consistent_nifti_still_loads(tmp_path):
    img = load_volume(_nifti(tmp_path, lambda hdr: None), study="fz")
    assert tuple(img.shape) == (1, 3, 4, 5)
    np.testing.assert_allclose(np.asarray(img.affine)[:3, :3], np.diag([1.2, 1.2, 3.0]), atol=1e-6)


@pytest.mark.parametrize("value", ["-inf", "-2.5"])
def test_spacing_between_slices_that_moves_the_itk_grid(tmp_path, value):
    """GDCM reads SpacingBetweenSlices too: an invalid one flips ITK's slice axis away from the positions."""
    folder, _ = _series_with(tmp_path, SpacingBetweenSlices=value)
    try:
        img = load_volume(folder, study="fz")
    except FusionInputError as err:
        assert "ITK/GDCM places the series" in str(err) and err.study == "fz"
        return
    reference, _ = _series_with(tmp_path / "ref")
    np.testing.assert_allclose(np.asarray(img.affine), np.asarray(load_volume(reference).affine), atol=1e-3)


def test_nrrd_labelled_bzip2_holding_gzip(tmp_path):
    """The bzip2 branch of the NRRD size check raised a TypeError instead of counting."""
    path = tmp_path / "PET.nrrd"
    data = gzip.compress(np.zeros(4 * 4 * 2, np.float32).tobytes())
    path.write_bytes(b"NRRD0004\ntype: float\ndimension: 3\nsizes: 4 4 2\nspace: left-posterior-superior\n"
                     b"space directions: (1,0,0) (0,1,0) (0,0,1)\nspace origin: (0,0,0)\nendian: little\n"
                     b"encoding: bzip2\n\n" + data)
    _refused(path, "truncated NRRD data.*bzip2 stream holds 0")


QA = Path(__file__).resolve().parents[2] / ".." / "shared" / "dicom_qa" / "series"


@pytest.mark.skipif(not (QA / "ts_9").is_dir(), reason="../shared/dicom_qa is absent")
def test_jpeg2000_sign_disagreeing_with_pixel_representation(tmp_path):
    """GDCM and pydicom decode such a file differently (one follows the header, the other the codestream)."""
    src = next(p for p in (QA / "ts_9").iterdir() if p.is_file())
    folder = tmp_path / "ts_9"
    folder.mkdir()
    ds = pydicom.dcmread(src)
    ds.PixelRepresentation = 1
    ds.save_as(folder / src.name, enforce_file_format=False)
    _refused(folder, "PixelRepresentation 1 .* disagrees with the JPEG 2000 codestream")
    assert tuple(load_volume(QA / "ts_9", study="fz").shape) == (1, 64, 64, 35)


def test_nifti_scaling_that_overflows_float32(tmp_path):
    def edit(hdr):
        hdr["scl_slope"] = -1e38

    _refused(_nifti(tmp_path, edit), "invalid NIfTI scaling")
