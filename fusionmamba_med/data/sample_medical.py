"""Synthetic medical studies from the head phantom: an MRI DICOM series and a CT/PET/SPECT volume of the same head
moved by a known rigid transform, on the grids their headers describe, with the ground truth of the motion.

Used by :mod:`fusionmamba_med.data.sample_data` (the ``sample_data/`` folder) and by benchmarks and tests.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from fusionmamba_med.data import phantom as ph
from fusionmamba_med.io.atomic import atomic_path
from fusionmamba_med.io.dicom_write import set_image_plane
from fusionmamba_med.io.geometry import LPS_RAS_FLIP, ras_affine_to_lps_geometry

__all__ = [
    "MOVING_MODALITIES",
    "TASKS",
    "SAMPLE_STUDIES",
    "grid_affine",
    "euler_transform_lps",
    "ground_truth",
    "write_mr_series",
    "make_medical_study",
]

_UID_NAMESPACE = "fusionmamba-med sample data"
_DATE, _TIME = "20240102", "093000"

#: task -> moving modality.
TASKS: dict[str, str] = {"ct_mri": "ct", "pet_mri": "pet", "spect_mri": "spect"}

#: per moving modality: file name, grid (shape, spacing mm), voxel type, sampling function.
MOVING_MODALITIES: dict[str, dict] = {
    "ct": {"file": "CT.nii.gz", "shape": (200, 200, 48), "spacing": (1.2, 1.2, 3.0), "dtype": "int16",
           "fn": ph.ct_hu, "description": "CT head, Hounsfield units"},
    "pet": {"file": "PET.nrrd", "shape": (48, 48, 30), "spacing": (4.0, 4.0, 4.0), "dtype": "float32",
            "fn": ph.pet_activity, "description": "FDG-like PET, kBq/ml, 6 mm FWHM"},
    "spect": {"file": "SPECT.nii.gz", "shape": (48, 48, 32), "spacing": (4.4, 4.4, 4.4), "dtype": "float32",
              "fn": ph.spect_activity, "description": "perfusion/tumour SPECT, a.u., 12 mm FWHM"},
}

#: the shipped studies: keyword arguments of :func:`make_medical_study`.
SAMPLE_STUDIES: list[dict] = [
    {"task": "ct_mri", "study": "study01", "patient_id": "PHANTOM01", "rotation_deg": (2.0, 0.0, 4.0),
     "translation_mm": (5.0, -3.0, 4.0)},
    {"task": "pet_mri", "study": "study01", "patient_id": "PHANTOM02", "rotation_deg": (-3.0, 1.5, -5.0),
     "translation_mm": (-4.0, 6.0, -8.0), "lesion_centre": (-24.0, 26.0, 24.0)},
    {"task": "pet_mri", "study": "study02", "patient_id": "PHANTOM03", "rotation_deg": (5.0, -2.0, 3.0),
     "translation_mm": (7.0, 2.0, 5.0), "mri_tilt_deg": 10.0, "lesion_centre": (20.0, -30.0, 34.0)},
    {"task": "spect_mri", "study": "study01", "patient_id": "PHANTOM04", "rotation_deg": (1.0, 3.0, -6.0),
     "translation_mm": (-6.0, -4.0, 10.0), "lesion_centre": (30.0, 10.0, 12.0)},
]


# ---------------------------------------------------------------------------------------------------------------------
# Geometry
# ---------------------------------------------------------------------------------------------------------------------
def _rx(deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    return np.array([[1.0, 0.0, 0.0], [0.0, np.cos(a), -np.sin(a)], [0.0, np.sin(a), np.cos(a)]])


def grid_affine(shape: Sequence[int], spacing: Sequence[float], centre_ras: Sequence[float],
                tilt_deg: float = 0.0) -> np.ndarray:
    """4x4 voxel -> RAS affine of an axial grid (i -> patient left, j -> posterior, k -> superior, as DICOM axial
    slices), centred on ``centre_ras`` and tilted by ``tilt_deg`` about the left-right axis (oblique when != 0)."""
    direction = _rx(tilt_deg) @ np.diag([-1.0, -1.0, 1.0])
    aff = np.eye(4)
    aff[:3, :3] = direction * np.asarray(spacing, float)
    aff[:3, 3] = np.asarray(centre_ras, float) - aff[:3, :3] @ ((np.asarray(shape, float) - 1.0) / 2.0)
    return aff


def euler_transform_lps(rotation_deg: Sequence[float], translation_mm: Sequence[float],
                        centre_lps: Sequence[float] = (0.0, 0.0, 0.0)) -> np.ndarray:
    """4x4 matrix of ``SimpleITK.Euler3DTransform(centre, *radians(rotation_deg), translation)``.

    ``p' = Rz @ Rx @ Ry @ (p - c) + c + t`` (SimpleITK's default ZXY order), all in LPS mm.
    """
    import SimpleITK as sitk

    tx = sitk.Euler3DTransform()
    tx.SetCenter([float(v) for v in centre_lps])
    tx.SetRotation(*[float(np.deg2rad(a)) for a in rotation_deg])
    tx.SetTranslation([float(v) for v in translation_mm])
    m = np.eye(4)
    m[:3, :3] = np.asarray(tx.GetMatrix()).reshape(3, 3)
    c = np.asarray(centre_lps, float)
    m[:3, 3] = np.asarray(tx.GetTranslation()) + c - m[:3, :3] @ c
    return m


def _apply(m: np.ndarray, p) -> np.ndarray:
    p = np.asarray(p, float)
    return p @ m[:3, :3].T + m[:3, 3]


def _lst(a, nd: int = 10):
    return (np.round(np.asarray(a, float), nd) + 0.0).tolist()  # + 0.0: no "-0.0"


def ground_truth(fixed_to_moving_lps: np.ndarray, rotation_deg, translation_mm, fixed_affine_ras, moving_affine_ras,
                 fixed_shape, moving_shape, moving_file: str, phantom: ph.HeadPhantom | None = None) -> dict:
    """The ``ground_truth.json`` content for one study (see the ``convention`` entry)."""
    m = np.asarray(fixed_to_moving_lps, float)
    m_inv = np.linalg.inv(m)
    marks = {}
    for name, p_ras in ph.landmarks(phantom).items():
        f_lps = _apply(LPS_RAS_FLIP, p_ras)
        m_lps = _apply(m, f_lps)
        marks[name] = {"fixed_lps": _lst(f_lps), "moving_lps": _lst(m_lps), "fixed_ras": _lst(p_ras),
                       "moving_ras": _lst(_apply(LPS_RAS_FLIP, m_lps))}
    return {
        "convention": (
            "ITK/LPS physical space, millimetres. 'fixed' is the MRI (the MR/ DICOM series), 'moving' is "
            f"{moving_file}. fixed_to_moving_lps maps the LPS physical coordinates of a point in the MRI to the LPS "
            "physical coordinates of the same anatomical point in the moving image: p_moving = M @ [p_fixed, 1]. This "
            "is the transform an ITK/SimpleITK registration with fixed=MRI, moving=" + moving_file.split(".")[0]
            + " recovers, and the one sitk.Resample(moving, mri, transform) takes to bring the moving image onto the "
            "MRI grid. moving_to_fixed_lps is its inverse; *_ras are the same maps in RAS (MONAI/NIfTI) coordinates "
            "(F @ M @ F with F = diag(-1, -1, 1, 1)). TRE of a registration T: |T(p) - fixed_to_moving(p)| over the "
            "landmarks' fixed_lps points."
        ),
        "fixed": "MR",
        "moving": moving_file,
        "fixed_to_moving_lps": _lst(m),
        "moving_to_fixed_lps": _lst(m_inv),
        "fixed_to_moving_ras": _lst(LPS_RAS_FLIP @ m @ LPS_RAS_FLIP),
        "moving_to_fixed_ras": _lst(LPS_RAS_FLIP @ m_inv @ LPS_RAS_FLIP),
        "euler3d": {
            "transform": "SimpleITK.Euler3DTransform (ZXY order: p' = Rz @ Rx @ Ry @ (p - center) + center + t)",
            "center_lps": [0.0, 0.0, 0.0],
            "angles_deg_xyz": _lst(rotation_deg),
            "angles_rad_xyz": _lst(np.deg2rad(np.asarray(rotation_deg, float))),
            "translation_lps_mm": _lst(translation_mm),
        },
        "fixed_affine_ras": _lst(fixed_affine_ras),
        "fixed_shape": [int(s) for s in fixed_shape],
        "moving_affine_ras": _lst(moving_affine_ras),
        "moving_shape": [int(s) for s in moving_shape],
        "landmarks": marks,
    }


# ---------------------------------------------------------------------------------------------------------------------
# Writers
# ---------------------------------------------------------------------------------------------------------------------
def _uid(*parts) -> str:
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=[_UID_NAMESPACE, *[str(p) for p in parts]])


def _ds(value: float) -> str:
    """A DICOM decimal string (at most 16 characters) for ``value``: 10 significant digits, round-off zeroed."""
    value = float(value)
    return f"{0.0 if abs(value) < 1e-9 else value:.10g}"


def write_mr_series(folder: str | Path, volume: np.ndarray, affine_ras: np.ndarray, uid_seed: Sequence,
                    patient_id: str = "PHANTOM01", patient_name: str = "Phantom^Head",
                    description: str = "T1 AX phantom", rescale_slope: float = 0.25) -> list[Path]:
    """Write ``volume`` (X, Y, Z) as a classic single-frame MR DICOM series (files 0001.dcm... in slice order).

    ``affine_ras`` is the voxel -> RAS map the volume was sampled on; its LPS form gives ImageOrientationPatient
    (columns 0 and 1), PixelSpacing and ImagePositionPatient of each slice. Pixels are int16 with
    ``RescaleSlope``. UIDs come from ``uid_seed``. Old ``*.dcm`` files in ``folder`` are removed first.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.dcm"):
        old.unlink()
    vol = np.asarray(volume, float)
    nx, ny, nz = vol.shape
    lps = LPS_RAS_FLIP @ np.asarray(affine_ras, float)
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    row, col, normal = (lps[:3, i] / spacing[i] for i in range(3))
    if not np.allclose(np.cross(row, col), normal, atol=1e-6):
        raise ValueError("the affine's slice axis must be cross(row, column) (a right-handed DICOM stack)")
    stored = np.clip(np.round(vol / rescale_slope), -32768, 32767).astype("<i2")
    study_uid, series_uid, for_uid = (_uid(*uid_seed, what) for what in ("study", "series", "frame_of_reference"))
    files = []
    for k in range(nz):
        sop_uid = _uid(*uid_seed, "instance", k)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = sop_uid
        ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = _DATE
        ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = _TIME
        ds.ContentTime = f"0930{k:02d}" if k < 60 else _TIME
        ds.AccessionNumber = ""
        ds.Modality = "MR"
        ds.Manufacturer = "fusionmamba-med phantom"
        ds.ReferringPhysicianName = ""
        ds.StudyDescription = "Phantom head"
        ds.SeriesDescription = description
        ds.PatientName = patient_name
        ds.PatientID = patient_id
        ds.PatientBirthDate = "19800101"
        ds.PatientSex = "O"
        ds.ScanningSequence = "GR"
        ds.SequenceVariant = "SP"
        ds.ScanOptions = ""
        ds.MRAcquisitionType = "2D"
        ds.RepetitionTime = "450"
        ds.EchoTime = "10"
        ds.MagneticFieldStrength = "3"
        ds.ImagedNucleus = "1H"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.StudyID = "1"
        ds.SeriesNumber = 3
        ds.InstanceNumber = k + 1
        set_image_plane(ds, affine_ras, k)
        ds.FrameOfReferenceUID = for_uid
        ds.PositionReferenceIndicator = ""
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = ny, nx
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.WindowCenter, ds.WindowWidth = "450", "900"
        ds.RescaleIntercept = "0"
        ds.RescaleSlope = _ds(rescale_slope)
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()  # rows = j, columns = i
        path = folder / f"{k + 1:04d}.dcm"
        with atomic_path(path) as tmp:
            ds.save_as(tmp, enforce_file_format=True)
        files.append(path)
    return files


def _write_nifti(path: Path, vol: np.ndarray, affine_ras: np.ndarray, dtype: str) -> None:
    import nibabel as nib

    img = nib.Nifti1Image(np.asarray(vol).astype(dtype), np.asarray(affine_ras, float))
    img.set_qform(affine_ras, code=1)
    img.set_sform(affine_ras, code=1)
    img.header.set_xyzt_units("mm")
    with atomic_path(path) as tmp:
        img.to_filename(str(tmp))


def _write_itk(path: Path, vol: np.ndarray, affine_ras: np.ndarray, dtype: str) -> None:
    """NRRD/MetaImage through SimpleITK: LPS origin, spacing and direction from ``affine_ras``."""
    import SimpleITK as sitk

    spacing, direction, origin = ras_affine_to_lps_geometry(affine_ras)
    img = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(vol).astype(dtype).transpose(2, 1, 0)))
    img.SetSpacing([float(s) for s in spacing])
    img.SetOrigin([float(v) for v in origin])
    img.SetDirection([float(v) for v in direction.ravel()])
    with atomic_path(path) as tmp:
        sitk.WriteImage(img, str(tmp), useCompression=True)


_NUMBER_LIST = re.compile(r"\[\s*(-?[0-9][0-9.eE+-]*(?:,\s*-?[0-9][0-9.eE+-]*)*)\s*\]")


def _write_json(path: Path, data) -> None:
    """Indented JSON with each list of numbers (a vector, a matrix row) on one line."""
    text = json.dumps(data, indent=2)
    text = _NUMBER_LIST.sub(lambda m: "[" + ", ".join(v.strip() for v in m.group(1).split(",")) + "]", text)
    with atomic_path(path) as tmp:
        tmp.write_text(text + "\n", encoding="utf-8")


# ---------------------------------------------------------------------------------------------------------------------
# Medical studies
# ---------------------------------------------------------------------------------------------------------------------
def make_medical_study(
    out_dir: str | Path,
    task: str,
    study: str = "study01",
    seed: int = 0,
    patient_id: str = "PHANTOM01",
    mri_shape: Sequence[int] = (128, 128, 32),
    mri_spacing: Sequence[float] = (1.8, 1.8, 4.0),
    mri_centre_ras: Sequence[float] = (0.0, 0.0, 14.0),
    mri_tilt_deg: float = 0.0,
    moving_shape: Sequence[int] | None = None,
    moving_spacing: Sequence[float] | None = None,
    moving_offset_mm: Sequence[float] = (3.0, -4.0, 2.0),
    rotation_deg: Sequence[float] = (2.0, 0.0, 4.0),
    translation_mm: Sequence[float] = (5.0, -3.0, 4.0),
    lesion_centre: Sequence[float] | None = None,
) -> list[Path]:
    """Write ``out_dir/<task>/<study>/`` with ``MR/`` (T1 DICOM), the moving image and ``ground_truth.json``.

    Args:
        out_dir: the sample-data root.
        task: "ct_mri", "pet_mri" or "spect_mri" (moving = CT.nii.gz, PET.nrrd or SPECT.nii.gz).
        study: study folder name.
        seed: noise and UID seed.
        patient_id: DICOM PatientID.
        mri_shape, mri_spacing: MRI grid (columns, rows, slices) and voxel size (mm).
        mri_centre_ras: centre of the MRI grid in the phantom's (= MRI's) RAS frame.
        mri_tilt_deg: tilt of the MRI slices about the left-right axis (oblique series when != 0).
        moving_shape, moving_spacing: moving grid; default from :data:`MOVING_MODALITIES`.
        moving_offset_mm: moving grid centre minus the moved MRI centre (RAS, in the moving frame).
        rotation_deg, translation_mm: the ground-truth fixed (MRI) -> moving rigid transform, SimpleITK
            Euler3D angles about x, y, z (degrees) and translation, in LPS, rotation centre at the origin.
        lesion_centre: RAS position of the lesion (default: the phantom's).

    Returns:
        The written files.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {sorted(TASKS)}")
    mod = MOVING_MODALITIES[TASKS[task]]
    phantom = ph.HeadPhantom() if lesion_centre is None else ph.HeadPhantom(
        lesion_centre=tuple(float(v) for v in lesion_centre))
    moving_shape = tuple(moving_shape or mod["shape"])
    moving_spacing = tuple(moving_spacing or mod["spacing"])
    folder = Path(out_dir) / task / study
    uid_seed = (seed, task, study)

    fixed_aff = grid_affine(mri_shape, mri_spacing, mri_centre_ras, mri_tilt_deg)
    m_lps = euler_transform_lps(rotation_deg, translation_mm)
    m_ras = LPS_RAS_FLIP @ m_lps @ LPS_RAS_FLIP  # fixed (phantom) RAS -> moving RAS
    moving_centre = _apply(m_ras, mri_centre_ras) + np.asarray(moving_offset_mm, float)
    moving_aff = grid_affine(moving_shape, moving_spacing, moving_centre)

    rng = np.random.default_rng([seed, *map(ord, f"{task}/{study}")])
    t1_seed, mov_seed = (int(s) for s in rng.integers(0, 2**31 - 1, size=2))
    t1 = ph.sample_on_grid(lambda p: ph.mri_t1(p, seed=t1_seed, phantom=phantom), mri_shape, fixed_aff) * 1000.0
    files = write_mr_series(folder / "MR", t1, fixed_aff, uid_seed, patient_id=patient_id,
                            description="T1 OBL phantom" if mri_tilt_deg else "T1 AX phantom")

    to_phantom = np.linalg.inv(m_ras)  # moving RAS -> phantom RAS
    fn: Callable = mod["fn"]
    moving = ph.sample_on_grid(lambda q: fn(_apply(to_phantom, q), seed=mov_seed, phantom=phantom),
                               moving_shape, moving_aff)
    path = folder / mod["file"]
    if TASKS[task] == "ct":
        moving = np.clip(np.round(moving), -1024, 3071)
    if path.name.endswith(".nii.gz"):
        _write_nifti(path, moving, moving_aff, mod["dtype"])
    else:
        _write_itk(path, moving, moving_aff, mod["dtype"])
    files.append(path)

    gt = ground_truth(m_lps, rotation_deg, translation_mm, fixed_aff, moving_aff, mri_shape, moving_shape,
                      mod["file"], phantom)
    gt = {"task": task, "study": study, "seed": int(seed), "moving_description": mod["description"], **gt}
    _write_json(folder / "ground_truth.json", gt)
    files.append(folder / "ground_truth.json")
    return files
