"""Tiny synthetic inputs for the io tests: DICOM series written with pydicom, NIfTI, NRRD."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

NX, NY, NZ = 24, 20, 6  # columns, rows, slices

AXIAL = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0))


def oblique_iop(deg_a: float = 20.0, deg_b: float = 10.0):
    """Row/column cosines of a doubly-oblique plane (orthonormal)."""
    a, b = np.deg2rad(deg_a), np.deg2rad(deg_b)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    r = rx @ rz
    return tuple(r[:, 0]), tuple(r[:, 1])


def phantom(nx=NX, ny=NY, nz=NZ, seed=0) -> np.ndarray:
    """(x, y, z) int16 volume with an index-dependent pattern (so flips/transpositions show up)."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(np.arange(nx), np.arange(ny), np.arange(nz), indexing="ij")
    vol = 10 * x + 3 * y + 100 * z + rng.integers(0, 5, size=x.shape)
    return vol.astype(np.int16)


def write_dicom_series(
    folder: Path,
    vol: np.ndarray | None = None,
    spacing=(0.8, 0.9, 2.5),
    iop=AXIAL,
    origin=(-10.0, -20.0, 30.0),
    series_uid: str | None = None,
    study_uid: str | None = None,
    for_uid: str | None = None,
    description: str = "T1 AX",
    series_number: int = 3,
    z_positions=None,
    patient_id: str = "PAT001",
    slope: float | Sequence[float] = 1.0,
    intercept: float | Sequence[float] = 0.0,
    name_prefix: str = "IM",
    shuffle: bool = True,
    modality: str = "MR",
    shift_per_slice=(0.0, 0.0, 0.0),
) -> dict:
    """Write vol (x, y, z) as a classic single-frame series. ``spacing`` = (col spacing x, row spacing y, slice).
    ``slope`` and ``intercept`` are one value or one per slice (z order).

    Returns a dict with the uids, the file list (in z order) and the LPS geometry.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vol = phantom() if vol is None else vol
    nx, ny, nz = vol.shape
    row, col = np.asarray(iop[0], float), np.asarray(iop[1], float)
    normal = np.cross(row, col)
    series_uid = series_uid or generate_uid()
    study_uid = study_uid or generate_uid()
    for_uid = for_uid or generate_uid()
    zs = [k * spacing[2] for k in range(nz)] if z_positions is None else list(z_positions)
    files = []
    order = list(range(nz))
    if shuffle:  # file names do not follow z order: the loader must sort by position
        order = order[::-1]
    for n, k in enumerate(order):
        ipp = np.asarray(origin, float) + zs[k] * normal + k * np.asarray(shift_per_slice, float)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.PatientName = "Test^Patient"
        ds.PatientID = patient_id
        ds.PatientBirthDate = "19700101"
        ds.PatientSex = "O"
        ds.StudyInstanceUID = study_uid
        ds.StudyDate = "20240101"
        ds.StudyTime = "120000"
        ds.StudyID = "1"
        ds.AccessionNumber = "ACC1"
        ds.Modality = modality
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = series_number
        ds.SeriesDescription = description
        ds.FrameOfReferenceUID = for_uid
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M"]
        ds.InstanceNumber = k + 1
        ds.ContentTime = f"1200{k:02d}"
        ds.ImagePositionPatient = [float(f"{v:.6f}") for v in ipp]
        ds.ImageOrientationPatient = [float(f"{v:.8f}") for v in (*row, *col)]
        ds.PixelSpacing = [spacing[1], spacing[0]]  # row spacing (y), column spacing (x)
        ds.SliceThickness = spacing[2]
        ds.Rows, ds.Columns = ny, nx
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope = slope[k] if np.ndim(slope) else slope  # per-slice rescale, as PET scanners write it
        ds.RescaleIntercept = intercept[k] if np.ndim(intercept) else intercept
        ds.SmallestImagePixelValue = int(vol[:, :, k].min())
        ds.LargestImagePixelValue = int(vol[:, :, k].max())
        ds.PixelData = np.ascontiguousarray(vol[:, :, k].T).astype("<i2").tobytes()  # (rows=y, cols=x)
        path = folder / f"{name_prefix}{n:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append((k, str(path)))
    files = [p for _, p in sorted(files)]
    return {
        "series_uid": series_uid,
        "study_uid": study_uid,
        "for_uid": for_uid,
        "files": files,
        "row": row,
        "col": col,
        "normal": normal,
        "origin": np.asarray(origin, float),
        "spacing": spacing,
        "vol": vol,
    }


def lps_affine(info: dict) -> np.ndarray:
    """4x4 voxel (x, y, z) -> LPS affine of a series written by write_dicom_series."""
    a = np.eye(4)
    a[:3, 0] = info["row"] * info["spacing"][0]
    a[:3, 1] = info["col"] * info["spacing"][1]
    a[:3, 2] = info["normal"] * info["spacing"][2]
    a[:3, 3] = info["origin"]
    return a


def ras_affine(info: dict) -> np.ndarray:
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps_affine(info)


def read_first(path) -> pydicom.Dataset:
    return pydicom.dcmread(path, stop_before_pixels=True)


def truncate_file(path, keep: int) -> None:
    """Keep the first ``keep`` bytes (negative: drop the last -keep bytes)."""
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[:keep])
