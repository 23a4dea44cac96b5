"""Sizes checked before memory is taken: headers declaring more voxels than their files hold, or more than
``max_voxels``, are refused with a FusionInputError naming the study and the file, before any reader allocates.

The memory claim is tested in a child process whose address space is capped at what it uses after the imports plus
512 MiB (``RLIMIT_AS``): loading a 10 KB file that declares a 2 GB volume must come back as a clear refusal, never a
``MemoryError`` or a crash, and the peak resident memory must grow by less than 200 MB.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from fusionmamba_med.errors import FusionInputError
from fusionmamba_med.io import load_volume
from tests.synthetic import write_dicom_series, write_enhanced_dicom

QA = Path(__file__).resolve().parents[2] / ".." / "shared" / "dicom_qa" / "series"
needs_qa = pytest.mark.skipif(not QA.is_dir(), reason="../shared/dicom_qa is absent")
REPO = Path(__file__).resolve().parents[2]

#: 800^3 float32 = 2 GB declared: under the default max_voxels (512 x 512 x 2000), so only the size check stops it.
BIG = (800, 800, 800)


# --- files that declare more than they hold -------------------------------------------------------------------------
def _nifti_declaring(path: Path, shape=BIG, dtype=np.float32) -> Path:
    """A NIfTI (.nii or .nii.gz by ``path``) whose header declares ``shape`` but which holds ~10 KB of data."""
    hdr = nib.Nifti1Header()
    hdr.set_data_shape(shape)
    hdr.set_data_dtype(dtype)
    hdr.set_qform(np.diag([1.0, 1.0, 1.0, 1.0]), code=1)
    hdr["vox_offset"] = 352
    raw = hdr.binaryblock + b"\0" * 4 + np.arange(2500, dtype=np.float32).tobytes()
    path.write_bytes(gzip.compress(raw) if path.name.endswith(".gz") else raw)
    return path


def _nrrd_declaring(path: Path, encoding: str = "raw", detached: str | None = None, sizes=BIG) -> Path:
    """An NRRD declaring ``sizes`` float voxels with ~10 KB of data (attached, or in the detached file ``detached``)."""
    data = np.arange(2500, dtype=np.float32).tobytes()
    data = gzip.compress(data) if encoding == "gzip" else data
    lines = ["NRRD0004", "type: float", "dimension: 3", "space: left-posterior-superior",
             f"sizes: {' '.join(map(str, sizes))}", "space directions: (1,0,0) (0,1,0) (0,0,1)",
             "space origin: (0,0,0)", "endian: little", f"encoding: {encoding}"]
    if detached is not None:
        lines.append(f"data file: {detached}")
        (path.parent / Path(detached).name).write_bytes(data) if "/" not in detached else None
        path.write_bytes(("\n".join(lines) + "\n").encode())
    else:
        path.write_bytes(("\n".join(lines) + "\n\n").encode() + data)
    return path


def _dicom_declaring(folder: Path, rows: int = 4096, columns: int = 4096) -> Path:
    """A small generated series whose every slice claims ``rows`` x ``columns`` pixels."""
    info = write_dicom_series(folder)
    for f in info["files"]:
        ds = pydicom.dcmread(f)
        ds.Rows, ds.Columns = rows, columns
        ds.save_as(f, enforce_file_format=False)
    return folder


def _refusal(path: Path, max_voxels: int | None = None) -> str:
    kwargs = {} if max_voxels is None else {"max_voxels": max_voxels}
    with pytest.raises(FusionInputError) as exc:
        load_volume(path, study="s01", **kwargs)
    assert exc.value.study == "s01" and exc.value.path is not None
    assert "study 's01'" in str(exc.value) and "file '" in str(exc.value)
    return str(exc.value)


# --- refusals, in process -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["big.nii", "big.nii.gz"])
def test_nifti_declaring_more_than_it_holds(tmp_path, name):
    path = _nifti_declaring(tmp_path / name)
    assert path.stat().st_size < 12_000
    msg = _refusal(path)
    assert "truncated NIfTI file" in msg and "512000000 voxels" in msg and name in msg


@pytest.mark.parametrize("name", ["huge.nii", "huge.nii.gz"])
def test_nifti_over_max_voxels(tmp_path, name):
    msg = _refusal(_nifti_declaring(tmp_path / name, shape=(2000, 2000, 2000)))
    assert "too large" in msg and "max_voxels" in msg


def test_nifti_that_holds_its_data_loads(tmp_path):
    path = tmp_path / "ok.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((5, 6, 7), np.float32), np.eye(4)), str(path))
    assert tuple(load_volume(path, study="s01").shape) == (1, 5, 6, 7)
    with open(path, "rb") as f:  # one byte short of its data: refused
        raw = gzip.decompress(f.read())
    path.write_bytes(gzip.compress(raw[:-1]))
    assert "truncated NIfTI file" in _refusal(path)


@pytest.mark.parametrize("encoding", ["raw", "gzip"])
def test_nrrd_declaring_more_than_it_holds(tmp_path, encoding):
    msg = _refusal(_nrrd_declaring(tmp_path / "big.nrrd", encoding))
    assert "truncated NRRD data" in msg and "512000000 voxels" in msg and "big.nrrd" in msg


def test_detached_nrrd_declaring_more_than_it_holds(tmp_path):
    msg = _refusal(_nrrd_declaring(tmp_path / "big.nhdr", detached="big.raw"))
    assert "truncated NRRD data" in msg and "big.nhdr" in msg


def test_detached_nrrd_outside_its_folder_is_refused(tmp_path):
    (tmp_path / "secret.raw").write_bytes(b"\0" * 64)
    inner = tmp_path / "inner"
    inner.mkdir()
    msg = _refusal(_nrrd_declaring(inner / "vol.nhdr", detached="../secret.raw", sizes=(4, 4, 1)))
    assert "outside the header's folder" in msg


def test_nrrd_over_max_voxels(tmp_path):
    msg = _refusal(_nrrd_declaring(tmp_path / "huge.nrrd", sizes=(2000, 2000, 2000)))
    assert "too large" in msg


def test_nrrd_that_holds_its_data_loads(tmp_path):
    path = _nrrd_declaring(tmp_path / "ok.nrrd", "gzip", sizes=(50, 50, 1))
    assert tuple(load_volume(path, study="s01").shape) == (1, 50, 50, 1)


def test_dicom_slices_declaring_more_than_they_hold(tmp_path):
    folder = _dicom_declaring(tmp_path / "MR")
    msg = _refusal(folder)
    assert "truncated pixel data" in msg and "Rows 4096 x Columns 4096" in msg and ".dcm" in msg


def test_dicom_over_max_voxels(tmp_path):
    folder = tmp_path / "MR"
    write_dicom_series(folder)
    msg = _refusal(folder, max_voxels=100)
    assert "too large" in msg


@pytest.mark.parametrize("tag,value", [("BitsAllocated", 12), ("BitsStored", 17), ("HighBit", 3)])
def test_dicom_invalid_pixel_description(tmp_path, tag, value):
    folder = tmp_path / "MR"
    info = write_dicom_series(folder)
    ds = pydicom.dcmread(info["files"][2])
    setattr(ds, tag, value)
    ds.save_as(info["files"][2], enforce_file_format=False)
    msg = _refusal(folder)
    assert "invalid pixel description" in msg and tag in msg and Path(info["files"][2]).name in msg


def test_enhanced_dicom_with_more_frames_than_data(tmp_path):
    folder = tmp_path / "MR"
    folder.mkdir()
    path = Path(write_enhanced_dicom(folder / "enh.dcm")["files"][0])
    ds = pydicom.dcmread(path)
    ds.NumberOfFrames = 500
    ds.save_as(path, enforce_file_format=False)
    msg = _refusal(folder)
    assert "truncated pixel data" in msg and "NumberOfFrames 500" in msg and "enh.dcm" in msg


def _qa_copy(tmp_path: Path, name: str) -> Path:
    src = next(p for p in sorted((QA / name).iterdir()) if p.is_file())
    folder = tmp_path / name
    folder.mkdir()
    dst = folder / src.name
    dst.write_bytes(src.read_bytes())
    return dst


@needs_qa
def test_mosaic_declaring_more_than_it_holds(tmp_path):
    path = _qa_copy(tmp_path, "ts_1")  # one Siemens mosaic, explicit VR little endian
    ds = pydicom.dcmread(path)
    ds.Rows, ds.Columns = 8192, 8192
    ds.save_as(path, enforce_file_format=False)
    msg = _refusal(path.parent)
    assert "mosaic cannot be read" in msg and "truncated pixel data" in msg and path.name in msg


@needs_qa
def test_mosaic_over_max_voxels(tmp_path):
    path = _qa_copy(tmp_path, "ts_5")  # the same mosaic, JPEG lossless
    assert "too large" in _refusal(path.parent, max_voxels=1000)


@needs_qa
def test_compressed_frame_count_against_fragments(tmp_path):
    path = _qa_copy(tmp_path, "ts_5")
    ds = pydicom.dcmread(path)
    ds.NumberOfFrames = 40
    ds.save_as(path, enforce_file_format=False)
    msg = _refusal(path.parent)
    assert "NumberOfFrames 40" in msg and path.name in msg


# --- no large allocation: a child process with a capped address space -----------------------------------------------
_CHILD = r"""
import json, resource, sys
from fusionmamba_med.errors import FusionInputError
from fusionmamba_med.io import load_volume

def vm_bytes():
    for line in open("/proc/self/status"):
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024

load_volume(sys.argv[1], study="warm")  # imports and first-use allocations of the readers
resource.setrlimit(resource.RLIMIT_AS, (vm_bytes() + (512 << 20), resource.RLIM_INFINITY))
out = []
for path in sys.argv[2:]:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        load_volume(path, study="s01")
        outcome = "loaded"
    except FusionInputError as err:
        outcome = "refused: " + str(err)
    except MemoryError:
        outcome = "MemoryError"
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024
    out.append({"path": path, "outcome": outcome, "grown": grown})
print(json.dumps(out))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc and RLIMIT_AS")
def test_no_large_allocation_before_refusal(tmp_path):
    small = tmp_path / "small.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.float32), np.eye(4)), str(small))
    cases = [_nifti_declaring(tmp_path / "a.nii"), _nifti_declaring(tmp_path / "b.nii.gz"),
             _nrrd_declaring(tmp_path / "c.nrrd"), _nrrd_declaring(tmp_path / "d.nrrd", "gzip"),
             _nrrd_declaring(tmp_path / "e.nhdr", detached="e.raw"), _dicom_declaring(tmp_path / "f" / "MR")]
    assert all(p.stat().st_size < 12_000 for p in cases[:4])
    run = subprocess.run([sys.executable, "-c", _CHILD, str(small), *map(str, cases)], capture_output=True,
                         text=True, timeout=240, cwd=REPO)
    assert run.returncode == 0, run.stderr[-2000:]
    results = json.loads(run.stdout.strip().splitlines()[-1])
    assert len(results) == len(cases)
    for res in results:
        assert res["outcome"].startswith("refused: study 's01', file '"), res
        assert "truncated" in res["outcome"], res
        assert res["grown"] < 200 << 20, res
