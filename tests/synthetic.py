"""Synthetic inputs shared by the tests (fixtures in ``tests/conftest.py``), one home for each kind:

- DICOM series written with pydicom (``write_dicom_series``) over an index-patterned volume (``index_volume``, so
  that flips and transpositions show), their affines (``series_lps_affine``, ``series_ras_affine``);
- a smooth, asymmetric ellipsoid head sampled on any grid (``sample``, ``phantom_lps``) with a known motion, for the
  registration tests (its accuracy thresholds are tuned to it; the package's anatomical phantom,
  :mod:`fusionmamba_med.data.phantom`, serves the sample data and the bundle tests);
- 2D image pairs on disk (``make_pairs``).

Geometry conversions come from :mod:`fusionmamba_med.io.geometry`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
import torch
from monai.data import MetaTensor
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from fusionmamba_med.io.geometry import lps_to_ras


# --- DICOM series and index volumes ----------------------------------------------------------------------------------
NX, NY, NZ = 24, 20, 6  # columns, rows, slices

AXIAL = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0))


def oblique_iop(deg_a: float = 20.0, deg_b: float = 10.0):
    """Row/column cosines of a doubly-oblique plane (orthonormal)."""
    a, b = np.deg2rad(deg_a), np.deg2rad(deg_b)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    r = rx @ rz
    return tuple(r[:, 0]), tuple(r[:, 1])


def index_volume(nx=NX, ny=NY, nz=NZ, seed=0) -> np.ndarray:
    """(x, y, z) int16 volume with an index-dependent pattern (so flips/transpositions show up)."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(np.arange(nx), np.arange(ny), np.arange(nz), indexing="ij")
    vol = 10 * x + 3 * y + 100 * z + rng.integers(0, 5, size=x.shape)
    return vol.astype(np.int16)


def _patient_study_dataset(sop_class: str, patient_id: str, study_uid: str, modality: str) -> Dataset:
    """A new DICOM dataset (explicit VR little endian file meta) of ``sop_class`` with the test patient and study."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Test^Patient", patient_id, "19700101", "O"
    ds.StudyInstanceUID, ds.StudyDate, ds.StudyTime, ds.StudyID = study_uid, "20240101", "120000", "1"
    ds.AccessionNumber = "ACC1"
    ds.Modality = modality
    return ds


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
    vol = index_volume() if vol is None else vol
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
        ds = _patient_study_dataset(MRImageStorage, patient_id, study_uid, modality)
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


def series_lps_affine(info: dict) -> np.ndarray:
    """4x4 voxel (x, y, z) -> LPS affine of a series written by write_dicom_series."""
    a = np.eye(4)
    a[:3, 0] = info["row"] * info["spacing"][0]
    a[:3, 1] = info["col"] * info["spacing"][1]
    a[:3, 2] = info["normal"] * info["spacing"][2]
    a[:3, 3] = info["origin"]
    return a


def series_ras_affine(info: dict) -> np.ndarray:
    """4x4 voxel (x, y, z) -> RAS affine of a series written by write_dicom_series."""
    return lps_to_ras(series_lps_affine(info))


def read_first(path) -> pydicom.Dataset:
    return pydicom.dcmread(path, stop_before_pixels=True)


def truncate_file(path, keep: int) -> None:
    """Keep the first ``keep`` bytes (negative: drop the last -keep bytes)."""
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[:keep])


# --- an ellipsoid head on any grid --------------------------------------------------------------------------------

# (centre LPS mm, semi-axes mm, added value): skull shell, brain, ventricles, an "eye", a lesion.
_ELLIPSOIDS = [
    ((0.0, 0.0, 0.0), (38.0, 46.0, 40.0), 1.0),
    ((0.0, 1.0, 2.0), (33.0, 41.0, 35.0), -0.45),
    ((-7.0, 4.0, 6.0), (4.0, 14.0, 7.0), -0.35),
    ((6.0, 6.0, 4.0), (5.0, 11.0, 6.0), -0.3),
    ((14.0, -38.0, -12.0), (7.0, 6.0, 6.0), 0.6),
    ((-15.0, 12.0, 18.0), (6.0, 5.0, 8.0), 0.4),
]


def phantom_lps(points: np.ndarray) -> np.ndarray:
    """Phantom value at LPS points (N, 3): sum of ellipsoids with ~2 mm smooth edges."""
    v = np.zeros(len(points))
    for i, (centre, axes, value) in enumerate(_ELLIPSOIDS):
        r = np.sqrt((((points - np.asarray(centre)) / np.asarray(axes)) ** 2).sum(axis=1))
        inside = 1.0 / (1.0 + np.exp(-(1.0 - r) * min(axes) / 1.0))
        v += value * inside
        if i == 1:  # "gyri": a smooth texture inside the brain, so that every region carries some structure
            x, y, z = points.T
            v += 0.12 * inside * np.sin(x / 4.0 + 0.3) * np.sin(y / 5.0) * np.cos(z / 4.5 - 0.2)
    return v


def grid_points_lps(affine: np.ndarray, shape) -> np.ndarray:
    """LPS physical points (N, 3) of all voxel centres of a grid with a RAS affine, in C order of ``shape``."""
    idx = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), axis=-1).reshape(-1, 3)
    ras = idx @ affine[:3, :3].T + affine[:3, 3]
    return ras * np.array([-1.0, -1.0, 1.0])  # RAS -> LPS points


def ras_affine(spacing, origin, rotation: np.ndarray | None = None) -> np.ndarray:
    """A RAS affine with the given spacing, origin (RAS mm) and optional 3x3 rotation of the axes."""
    a = np.eye(4)
    rot = np.eye(3) if rotation is None else rotation
    a[:3, :3] = rot @ np.diag(spacing)
    a[:3, 3] = origin
    return a


def sample(affine: np.ndarray, shape, value_fn=lambda v: v, point_map=None, source_path: str | None = None
           ) -> MetaTensor:
    """MetaTensor (1, *shape) float32 of ``value_fn(phantom(point_map(p)))`` at the grid's voxel centres p (LPS)."""
    pts = grid_points_lps(affine, shape)
    if point_map is not None:
        pts = point_map(pts)
    arr = value_fn(phantom_lps(pts)).reshape(shape).astype(np.float32)
    meta = {"affine": torch.as_tensor(affine, dtype=torch.float64)}
    if source_path:
        meta["source_path"] = source_path
    return MetaTensor(torch.from_numpy(arr)[None], meta=meta)


def rotation_matrix(angles_deg) -> np.ndarray:
    """Rotation about x, then y, then z (degrees)."""
    ax, ay, az = np.radians(angles_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


# --- 2D pairs -------------------------------------------------------------------------------------------------------
def make_pairs(root: Path, names, size=(40, 44), seed: int = 0) -> tuple[Path, Path]:
    """Write ``root/A/<name>.png`` (grey) and ``root/B/<name>.png`` (RGB) for each name; returns (dir_a, dir_b)."""
    rng = np.random.default_rng(seed)
    dir_a, dir_b = root / "A", root / "B"
    dir_a.mkdir(parents=True, exist_ok=True)
    dir_b.mkdir(parents=True, exist_ok=True)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    for name in names:
        cy, cx, r = rng.uniform(0.3 * h, 0.7 * h), rng.uniform(0.3 * w, 0.7 * w), rng.uniform(0.2, 0.35) * min(h, w)
        disc = ((yy - cy) ** 2 + (xx - cx) ** 2 < r**2).astype(float)
        anatomy = 0.6 * disc + 0.3 * xx / w + 0.05 * rng.random((h, w))
        hot = np.exp(-((yy - cy) ** 2 + (xx - cx - r / 2) ** 2) / (2 * (r / 2) ** 2))
        rgb = np.stack([hot, hot**2, 0.3 * hot**4], axis=-1)
        Image.fromarray((255 * np.clip(anatomy, 0, 1)).astype(np.uint8)).save(dir_a / f"{name}.png")
        Image.fromarray((255 * np.clip(rgb, 0, 1)).astype(np.uint8)).save(dir_b / f"{name}.png")
    return dir_a, dir_b


#: the random images of the 2D pair tests (one stream, so each call gives new pixels).
RNG = np.random.default_rng(1)


def save_image(path, pixels):
    """Save a uint8 (H, W) or (H, W, 3) array as an image file (format from the extension)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def random_colour(h=8, w=10):
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


def random_grey(h=8, w=10):
    return RNG.integers(0, 256, (h, w), dtype=np.uint8)


def random_green(h=8, w=10):
    """A GFP-like image: green signal only."""
    g = RNG.integers(20, 256, (h, w), dtype=np.uint8)
    return np.dstack([np.zeros_like(g), g, np.zeros_like(g)])


# --- enhanced multi-frame DICOM --------------------------------------------------------------------------------------
_ENHANCED_SOP = {"MR": "1.2.840.10008.5.1.4.1.1.4.1", "CT": "1.2.840.10008.5.1.4.1.1.2.1",
                 "PT": "1.2.840.10008.5.1.4.1.1.130"}


def write_enhanced_dicom(
    path: Path,
    vol: np.ndarray | None = None,
    spacing=(0.8, 0.9, 2.5),
    iop=AXIAL,
    origin=(-10.0, -20.0, 30.0),
    slope: float | Sequence[float] = 1.0,
    intercept: float | Sequence[float] = 0.0,
    frame_order: Sequence[int] | None = None,
    z_positions=None,
    series_uid: str | None = None,
    study_uid: str | None = None,
    for_uid: str | None = None,
    patient_id: str = "PAT001",
    modality: str = "MR",
    description: str = "T1 3D enhanced",
    shared_rescale: bool = False,
) -> dict:
    """Write vol (x, y, z) as ONE enhanced multi-frame file (Enhanced MR/CT/PET Image Storage): frame n holds slice
    ``frame_order[n]`` (default: the slices in reversed, then interleaved order, so that the loader must sort them),
    with PlanePosition/PlaneOrientation/PixelMeasures/PixelValueTransformation per frame (orientation and pixel
    measures shared). ``slope``/``intercept``: one value or one per slice (z order); ``shared_rescale`` puts a single
    rescale in the SharedFunctionalGroupsSequence. ``z_positions``: the slice positions along the normal (mm).

    Returns a dict as :func:`write_dicom_series` (``files`` = [the file]) plus ``frame_order``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    vol = index_volume() if vol is None else vol
    nx, ny, nz = vol.shape
    row, col = np.asarray(iop[0], float), np.asarray(iop[1], float)
    normal = np.cross(row, col)
    series_uid, study_uid = series_uid or generate_uid(), study_uid or generate_uid()
    for_uid = for_uid or generate_uid()
    order = list(frame_order) if frame_order is not None else list(range(nz))[::-1][::2] + list(range(nz))[::-1][1::2]
    zs = [k * spacing[2] for k in range(nz)] if z_positions is None else list(z_positions)
    slopes = [float(slope[k]) if np.ndim(slope) else float(slope) for k in range(nz)]
    intercepts = [float(intercept[k]) if np.ndim(intercept) else float(intercept) for k in range(nz)]
    sop_class = _ENHANCED_SOP[modality]
    ds = _patient_study_dataset(sop_class, patient_id, study_uid, modality)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ReferringPhysicianName, ds.Manufacturer = "", "Synthetic"
    ds.SeriesInstanceUID, ds.SeriesNumber, ds.SeriesDescription = series_uid, 5, description
    ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = for_uid, ""
    ds.PatientPosition = "HFS"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
    ds.InstanceNumber = 1
    ds.ContentDate, ds.ContentTime = "20240101", "120000"
    ds.NumberOfFrames = len(order)
    ds.Rows, ds.Columns = ny, nx
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    shared = Dataset()
    orient = Dataset()
    orient.ImageOrientationPatient = [float(f"{v:.8f}") for v in (*row, *col)]
    shared.PlaneOrientationSequence = [orient]
    measures = Dataset()
    measures.PixelSpacing = [spacing[1], spacing[0]]  # row spacing (y), column spacing (x)
    measures.SliceThickness = spacing[2]
    shared.PixelMeasuresSequence = [measures]
    if shared_rescale:
        pvt = Dataset()
        pvt.RescaleSlope, pvt.RescaleIntercept, pvt.RescaleType = slopes[0], intercepts[0], "US"
        shared.PixelValueTransformationSequence = [pvt]
    ds.SharedFunctionalGroupsSequence = [shared]
    per_frame = []
    for k in order:
        item = Dataset()
        pos = Dataset()
        pos.ImagePositionPatient = [float(f"{v:.6f}") for v in np.asarray(origin, float) + zs[k] * normal]
        item.PlanePositionSequence = [pos]
        content = Dataset()
        content.InStackPositionNumber = k + 1
        item.FrameContentSequence = [content]
        if not shared_rescale:
            pvt = Dataset()
            pvt.RescaleSlope, pvt.RescaleIntercept, pvt.RescaleType = slopes[k], intercepts[k], "US"
            item.PixelValueTransformationSequence = [pvt]
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = per_frame
    frames = np.stack([vol[:, :, k].T for k in order])  # (frames, rows = y, cols = x)
    ds.PixelData = np.ascontiguousarray(frames).astype("<i2").tobytes()
    ds.save_as(path, enforce_file_format=True)
    return {"series_uid": series_uid, "study_uid": study_uid, "for_uid": for_uid, "files": [str(path)],
            "row": row, "col": col, "normal": normal, "origin": np.asarray(origin, float), "spacing": spacing,
            "vol": vol, "frame_order": order, "slopes": slopes, "intercepts": intercepts}
