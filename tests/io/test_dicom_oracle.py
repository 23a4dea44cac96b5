"""Real scanner DICOM (../shared/dicom_qa: dcm2niix's validation collections) and generated series, loaded by us
and by dcm2niix, the trusted converter: same grid and voxel-to-world mapping within 0.01 mm, same values.

Where we refuse a series that dcm2niix converts (4D, mixed orientations ...), the test names the
reason and checks our message. Skips cleanly without ../shared or without dcm2niix (Debian package ``dcm2niix``).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from fusionmamba_med.errors import FusionInputError
from fusionmamba_med.io.loading import load_volume
from tests.synthetic import index_volume, oblique_iop, write_dicom_series

QA = Path(__file__).resolve().parents[2] / ".." / "shared" / "dicom_qa" / "series"
DCM2NIIX = shutil.which("dcm2niix")

needs_dcm2niix = pytest.mark.skipif(DCM2NIIX is None, reason="dcm2niix is not installed (apt-get install dcm2niix)")
needs_qa = pytest.mark.skipif(not QA.is_dir(), reason="../shared/dicom_qa is absent")

#: series we load: every one must agree with dcm2niix.
LOADED = ["bit12_12bitSigned_0x0F0F", "bit12_12bitUnsigned", "bit12_12bitUnsigned_0x0F0F", "dec_hfdl", "dec_hfs",
          "ge_mprage", "xa30_t1"] + [f"ts_{i}" for i in range(1, 10)]  # xa30_t1: one enhanced multi-frame file

#: series we refuse, with the reason (a regular expression our message must match).
REFUSED = {
    "ct_ph_21570_4010": "colour DICOM",  # a scout and RGB dose-report screenshots (Secondary Capture), no CT volume
    "nih_ge_0004": "several images at the same position",  # GE fMRI: 4D
    "ph_fmri": "several images at the same position",  # Philips fMRI: 4D
    "nih_si_0003": "Siemens mosaic series of 2 files",  # 2 mosaic volumes: 4D
    "qa_corint36": "Siemens mosaic series of 2 files",
    "qa_sagasc35": "Siemens mosaic series of 2 files",
    "tbl_ge_loc": "mixes slice orientations",  # 3-plane localiser
    "uih_dti": "no valid ImagePositionPatient",  # UIH diffusion saved by slice: 4D, no per-file position
}


def _decoded_by_dcmtk(folder: Path, out: Path) -> Path:
    """The folder's files decoded to uncompressed DICOM by DCMTK's dcmdjpls (Debian's dcm2niix has no JPEG-LS
    decoder and itself advises this)."""
    tool = shutil.which("dcmdjpls")
    if tool is None:
        pytest.skip("JPEG-LS file: Debian's dcm2niix cannot decode it and DCMTK's dcmdjpls is not installed")
    out.mkdir(parents=True, exist_ok=True)
    for f in sorted(p for p in folder.iterdir() if p.is_file()):
        subprocess.run([tool, str(f), str(out / f.name)], check=True, capture_output=True, timeout=120)
    return out


def dcm2niix_volume(folder: Path, out: Path) -> nib.Nifti1Image:
    """dcm2niix's conversion of a folder holding one series (exactly one NIfTI expected)."""
    out.mkdir(parents=True, exist_ok=True)
    run = subprocess.run([DCM2NIIX, "-z", "n", "-b", "n", "-o", str(out), "-f", "vol", str(folder)],
                         capture_output=True, text=True, timeout=120)
    if "Unsupported transfer syntax '1.2.840.10008.1.2.4.8" in run.stdout:  # JPEG-LS (lossless 80, near-lossless 81)
        folder = _decoded_by_dcmtk(folder, out.parent / f"{out.name}_decoded")
        run = subprocess.run([DCM2NIIX, "-z", "n", "-b", "n", "-o", str(out), "-f", "vol", str(folder)],
                             capture_output=True, text=True, timeout=120)
    files = sorted(out.glob("*.nii"))
    assert run.returncode == 0 and len(files) == 1, f"dcm2niix: {run.stdout[-500:]} {run.stderr[-500:]}"
    return nib.load(str(files[0]))


#: where dcm2niix (Debian's build) is known to be wrong, the expected values derived from its output.
#: Signed 12-bit pixels (High Bit 11): dcm2niix reads 0x0F0F and 0xFFFF as 3855 and 4095, but the standard's
#: two's complement in 12 bits gives -241 and -1, as the collection's own README states (dcm_qa_12bit, series 4)
#: and pydicom reads them.
DCM2NIIX_CORRECTIONS = {"bit12_12bitSigned_0x0F0F": lambda v: np.where(v >= 2048, v - 4096, v)}


def assert_same_as_dcm2niix(img, reference: nib.Nifti1Image, atol: float = 1e-3, correct=None) -> None:
    """Our volume (1, X, Y, Z) with its RAS affine places every voxel where dcm2niix's NIfTI does (within 0.01 mm),
    up to a permutation/flip of the voxel axes, and holds the same values (after ``correct`` of dcm2niix's)."""
    ours = np.asarray(img.affine, dtype=np.float64)
    theirs = reference.affine
    index_map = np.round(np.linalg.inv(theirs) @ ours)  # our voxel index -> theirs (a signed permutation)
    shape = np.asarray(img.shape[1:])
    corners = np.array([[i, j, k, 1] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1) for k in (0, shape[2] - 1)],
                       dtype=np.float64).T
    gap_mm = np.abs(ours @ corners - theirs @ index_map @ corners)[:3].max()
    assert gap_mm < 0.01, f"voxel-to-world differs by {gap_mm:.4f} mm at the grid corners"
    linear = np.abs(index_map[:3, :3])
    assert np.array_equal(linear.sum(axis=0), np.ones(3)) and np.array_equal(linear.sum(axis=1), np.ones(3))
    data = reference.get_fdata()
    idx = np.indices(tuple(shape)).reshape(3, -1)
    theirs_idx = (index_map[:3, :3] @ idx + index_map[:3, 3:]).astype(int)
    assert all((theirs_idx[d] >= 0).all() and (theirs_idx[d] < data.shape[d]).all() for d in range(3)), \
        f"grids differ: ours {tuple(shape)}, dcm2niix {data.shape}"
    assert data.size == idx.shape[1]
    expected = data[tuple(theirs_idx)]
    if correct is not None:
        expected = correct(expected)
    np.testing.assert_allclose(img[0].numpy().reshape(-1), expected, atol=atol, rtol=1e-6)


@needs_qa
@needs_dcm2niix
@pytest.mark.parametrize("name", LOADED)
def test_real_series_load_as_dcm2niix(name, tmp_path):
    img = load_volume(QA / name, study=name)
    assert_same_as_dcm2niix(img, dcm2niix_volume(QA / name, tmp_path / "d2n"), correct=DCM2NIIX_CORRECTIONS.get(name))


@needs_qa
@needs_dcm2niix
def test_enhanced_multiframe_xa30_frames_and_affine(tmp_path):
    """Siemens XA30 enhanced MR (one file, 96 frames): a 3D volume whose slice axis steps by the frames' measured
    gap (2 mm), with dcm2niix's grid; the refusal it used to get is gone."""
    img = load_volume(QA / "xa30_t1", study="xa30_t1")
    assert img.meta["multiframe_frames"] == 96 and tuple(img.shape) == (1, 128, 128, 96)
    assert len(img.meta["dicom_files"]) == 1
    np.testing.assert_allclose(np.linalg.norm(np.asarray(img.affine)[:3, :3], axis=0), [2.0, 2.0, 2.0], atol=1e-3)
    reference = dcm2niix_volume(QA / "xa30_t1", tmp_path / "d2n")
    assert_same_as_dcm2niix(img, reference)


@needs_qa
def test_signed_12_bit_values_are_the_standards():
    """The documented stripes of dcm_qa_12bit series 4: -241 (0x0F0F) and -1 (0xFFFF), not 3855 and 4095."""
    img = load_volume(QA / "bit12_12bitSigned_0x0F0F")
    values = set(np.unique(img.numpy()).tolist())
    assert {-241.0, -1.0} <= values and max(values) <= 2047 and min(values) >= -2048


@needs_qa
@pytest.mark.parametrize("name", sorted(REFUSED))
def test_real_series_refused_with_reason(name):
    with pytest.raises(FusionInputError, match=REFUSED[name]) as exc:
        load_volume(QA / name, study=name)
    assert exc.value.study == name and exc.value.path  # the message names the study and the file or folder


@needs_qa
@needs_dcm2niix
@pytest.mark.parametrize("name", ["qa_sagasc35", "qa_corint36", "nih_si_0003"])
def test_one_mosaic_volume_of_a_4d_series_unpacks_as_dcm2niix(name, tmp_path):
    """Sagittal, coronal and axial Siemens mosaics: one file, put in a folder of its own, is one 3D volume."""
    first = sorted(p for p in (QA / name).iterdir() if p.suffix != ".txt")[0]
    (tmp_path / "one").mkdir()
    shutil.copy(first, tmp_path / "one" / first.name)
    img = load_volume(tmp_path / "one", study=name)
    assert img.meta["mosaic_images"] == img.shape[-1] > 1
    assert_same_as_dcm2niix(img, dcm2niix_volume(tmp_path / "one", tmp_path / "d2n"))


# --- generated series: what no real file here covers ---------------------------------------------------------------
@needs_dcm2niix
@pytest.mark.parametrize(
    "kind",
    ["pet-per-slice-rescale", "ct-mixed-intercepts", "oblique", "feet-first", "single-slice"],
)
def test_generated_series_load_as_dcm2niix(kind, tmp_path):
    vol = index_volume(nz=6)
    kwargs: dict = {}
    if kind == "pet-per-slice-rescale":
        vol = (vol.astype(np.int32) * 50 + 2000).clip(-32768, 32767).astype(np.int16)
        kwargs = {"slope": [1.0, 0.78, 3.0, 25.0, 0.0123, 50.0], "modality": "PT"}
    elif kind == "ct-mixed-intercepts":
        kwargs = {"intercept": [-1024, -1024, -1000, 0, -1024, -1024], "modality": "CT"}
    elif kind == "oblique":
        kwargs = {"iop": oblique_iop(20.0, 10.0)}
    elif kind == "feet-first":  # slices stacked the other way round: the normal points to the feet
        kwargs = {"iop": ((1.0, 0.0, 0.0), (0.0, -1.0, 0.0))}
    elif kind == "single-slice":
        vol = index_volume(nz=1)
        kwargs = {"spacing": (0.8, 0.9, 3.5)}
    write_dicom_series(tmp_path / "series", vol=vol, **kwargs)
    img = load_volume(tmp_path / "series")
    reference = dcm2niix_volume(tmp_path / "series", tmp_path / "d2n")
    if kind == "single-slice":  # dcm2niix takes the slice thickness as the third spacing; so do we
        assert reference.header.get_zooms()[2] == pytest.approx(3.5)
        assert np.linalg.norm(np.asarray(img.affine)[:3, 2]) == pytest.approx(3.5)
    assert_same_as_dcm2niix(img, reference, atol=1e-2 if kind == "pet-per-slice-rescale" else 1e-3)
