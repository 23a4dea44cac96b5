"""Generate the project's sample data (``sample_data/``) deterministically from the head phantom and 2D scenes.

Run ``python -m fusionmamba_med.data.sample_data [--out sample_data] [--seed 0]``. Layout::

    sample_data/
        ct_mri/study01/     MR/0001.dcm... (T1 DICOM series), CT.nii.gz, ground_truth.json
        pet_mri/study01/    MR/ (axial), PET.nrrd, ground_truth.json
        pet_mri/study02/    MR/ (oblique, 10 degree tilt), PET.nrrd, ground_truth.json
        spect_mri/study01/  MR/, SPECT.nii.gz, ground_truth.json
        generic_2d/ir_vis/  vi/NN.png (RGB), ir/NN.png (grey)
        generic_2d/gfp_pc/  GFP/NNN.png (RGB), PC/001.png (8-bit grey), PC/002.tif (16-bit grey)

Every medical file is sampled from :mod:`fusionmamba_med.data.phantom` on exactly the grid its header describes. The
phantom's frame is the MRI's physical frame; the moving image (CT/PET/SPECT) shows the same head moved by a known rigid
transform, recorded in ``ground_truth.json`` (see :func:`ground_truth`). UIDs derive from the seed and dates are fixed,
so a rerun gives the same bytes.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from fusionmamba_med.data import phantom as ph
from fusionmamba_med.io.atomic import atomic_path
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
    "make_ir_vis_pairs",
    "make_gfp_pc_pairs",
    "generate_sample_data",
    "main",
]

#: LPS <-> RAS flip (its own inverse).
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
        ipp = lps[:3, 3] + k * lps[:3, 2]
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
        ds.SliceThickness = _ds(spacing[2])
        ds.SpacingBetweenSlices = _ds(spacing[2])
        ds.RepetitionTime = "450"
        ds.EchoTime = "10"
        ds.MagneticFieldStrength = "3"
        ds.ImagedNucleus = "1H"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.StudyID = "1"
        ds.SeriesNumber = 3
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [_ds(v) for v in ipp]
        ds.ImageOrientationPatient = [_ds(v) for v in (*row, *col)]
        ds.FrameOfReferenceUID = for_uid
        ds.PositionReferenceIndicator = ""
        ds.SliceLocation = _ds(float(ipp @ normal))
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = ny, nx
        ds.PixelSpacing = [_ds(spacing[1]), _ds(spacing[0])]  # row spacing (along j), column spacing (along i)
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


# ---------------------------------------------------------------------------------------------------------------------
# 2D pairs: infrared / visible street scenes
# ---------------------------------------------------------------------------------------------------------------------
def _smooth_noise(rng: np.random.Generator, shape, sigma: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    n = gaussian_filter(rng.standard_normal(shape), sigma)
    return n / (n.std() + 1e-9)


class _Scene:
    """Objects drawn once into an instance map (2x supersampled); each instance has a VIS colour and an IR level."""

    def __init__(self, width: int, height: int):
        from PIL import Image, ImageDraw

        self.w, self.h = 2 * width, 2 * height
        self.ids = Image.new("I", (self.w, self.h), 0)
        self.draw = ImageDraw.Draw(self.ids)
        self.shadow = Image.new("L", (self.w, self.h), 0)
        self.shadow_draw = ImageDraw.Draw(self.shadow)
        self.vis: list[tuple[float, float, float]] = [(0.0, 0.0, 0.0)]
        self.ir: list[float] = [0.0]
        self.texture: list[float] = [0.0]

    def _new(self, vis, ir, texture) -> int:
        self.vis.append(tuple(c / 255.0 for c in vis))
        self.ir.append(float(ir))
        self.texture.append(float(texture))
        return len(self.vis) - 1

    def _xy(self, box):
        return [v * (self.w if i % 2 == 0 else self.h) for i, v in enumerate(box)]

    def rect(self, box, vis, ir, texture=0.05, radius=0.0):
        i = self._new(vis, ir, texture)
        xy = self._xy(box)
        if radius > 0:
            self.draw.rounded_rectangle(xy, radius=radius * self.h, fill=i)
        else:
            self.draw.rectangle(xy, fill=i)

    def ellipse(self, box, vis, ir, texture=0.05):
        self.draw.ellipse(self._xy(box), fill=self._new(vis, ir, texture))

    def polygon(self, points, vis, ir, texture=0.05):
        self.draw.polygon([tuple(self._xy(p)) for p in points], fill=self._new(vis, ir, texture))

    def cast_shadow(self, points, strength=140):
        self.shadow_draw.polygon([tuple(self._xy(p)) for p in points], fill=strength)

    def render(self, rng: np.random.Generator, horizon: float) -> tuple[np.ndarray, np.ndarray]:
        """-> (visible RGB uint8 (H, W, 3), infrared uint8 (H, W)) at the requested size."""
        from scipy.ndimage import gaussian_filter

        ids = np.asarray(self.ids, dtype=np.int64)
        vis = np.asarray(self.vis, float)[ids]
        ir = np.asarray(self.ir, float)[ids]
        tex = np.asarray(self.texture, float)[ids]
        vis *= (1.0 + tex * _smooth_noise(rng, ids.shape, 1.2))[..., None]
        ir += 0.25 * tex * _smooth_noise(rng, ids.shape, 3.0)
        v = np.linspace(0.0, 1.0, self.h)[:, None]
        sky = ids == 1
        grad = np.clip(v / horizon, 0.0, 1.0)
        vis[sky] = (np.array([0.42, 0.62, 0.85]) * (1 - grad) + np.array([0.80, 0.85, 0.90]) * grad)[
            np.nonzero(sky)[0]]
        ir[sky] = (0.06 + 0.14 * grad)[np.nonzero(sky)[0], 0]
        shade = gaussian_filter(np.asarray(self.shadow, float) / 255.0, 2.0)  # soft shadow edges
        vis *= (1.0 - 0.6 * shade)[..., None]
        ir -= 0.05 * shade

        def down(a):  # 2x2 box average: anti-aliasing
            return a.reshape(a.shape[0] // 2, 2, a.shape[1] // 2, 2, *a.shape[2:]).mean(axis=(1, 3))

        vis, ir = down(vis), down(ir)
        vis = vis + rng.normal(0.0, 0.01, vis.shape)
        # Infrared optics: blur, vignetting, column fixed-pattern noise, sensor noise.
        ir = gaussian_filter(ir, 0.9)
        yy, xx = np.mgrid[0:ir.shape[0], 0:ir.shape[1]]
        r2 = ((xx - ir.shape[1] / 2) / ir.shape[1]) ** 2 + ((yy - ir.shape[0] / 2) / ir.shape[0]) ** 2
        ir = ir * (1.0 - 0.25 * r2) + rng.normal(0.0, 0.006, ir.shape[1])[None, :] + rng.normal(0.0, 0.012, ir.shape)
        to8 = lambda a: np.clip(np.round(a * 255.0), 0, 255).astype(np.uint8)  # noqa: E731
        return to8(vis), to8(ir)


def _street_scene(width: int, height: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A small street: sky, buildings with windows and a billboard, road, trees, cars and people (some in shade)."""
    s = _Scene(width, height)
    hz = 0.42 + rng.uniform(-0.04, 0.04)  # horizon
    s.rect((0, 0, 1, 1), (0, 0, 0), 0.1, texture=0.0)  # sky (coloured at render time)
    s.rect((0, hz, 1, 1), (110, 125, 95), 0.36, texture=0.12)  # ground / verges
    # Buildings along the horizon.
    x = -0.05
    palette = [(150, 82, 62), (128, 128, 134), (190, 170, 138), (96, 108, 128), (170, 150, 120)]
    billboard = int(rng.integers(1, 3))
    n = 0
    while x < 1.0:
        bw = rng.uniform(0.12, 0.24)
        top = hz - rng.uniform(0.12, 0.32)
        colour = palette[int(rng.integers(len(palette)))]
        level = rng.uniform(0.36, 0.46)
        s.rect((x, top, x + bw, hz + 0.04), colour, level, texture=0.06)
        wy = top + 0.03
        while wy < hz - 0.04:
            wx = x + 0.02
            while wx < x + bw - 0.04:
                lit = rng.random() < 0.25
                s.rect((wx, wy, wx + 0.025, wy + 0.035), (235, 212, 120) if lit else (48, 58, 78),
                       0.62 if lit else 0.28, texture=0.02)
                wx += 0.045
            wy += 0.065
        n += 1
        if n == billboard:  # visible-only detail: same temperature as the wall
            bx, by = x + 0.015, top + 0.01
            for k, c in enumerate([(220, 40, 40), (250, 220, 40), (40, 90, 200), (250, 250, 250)]):
                s.rect((bx + k * 0.025, by, bx + (k + 1) * 0.025, by + 0.05), c, level, texture=0.01)
        x += bw
    # Road in perspective, lane markings, pavements.
    vx = 0.5 + rng.uniform(-0.12, 0.12)
    top_y = hz + 0.04
    s.polygon([(vx - 0.04, top_y), (vx + 0.04, top_y), (0.98, 1.0), (0.02, 1.0)], (88, 88, 92), 0.52, texture=0.08)
    for k in range(6):
        t0, t1 = (k + 0.2) / 6.0, (k + 0.6) / 6.0
        y0, y1 = top_y + (1 - top_y) * t0**1.6, top_y + (1 - top_y) * t1**1.6
        w0, w1 = 0.003 + 0.012 * t0**1.6, 0.003 + 0.012 * t1**1.6
        cx0, cx1 = vx + (0.5 - vx) * t0**1.6, vx + (0.5 - vx) * t1**1.6
        s.polygon([(cx0 - w0, y0), (cx0 + w0, y0), (cx1 + w1, y1), (cx1 - w1, y1)], (235, 232, 215), 0.45, 0.02)

    def road_x(y, side):  # road edge at height y
        t = (y - top_y) / (1 - top_y)
        return (vx - 0.04) + (0.02 - (vx - 0.04)) * t if side < 0 else (vx + 0.04) + (0.98 - (vx + 0.04)) * t

    # Trees on the verges, with shadows.
    for _ in range(int(rng.integers(2, 4))):
        ty = rng.uniform(hz + 0.12, 0.8)
        sc = (ty - hz) / (1 - hz)
        side = -1 if rng.random() < 0.5 else 1
        tx = road_x(ty, side) + side * rng.uniform(0.04, 0.1) * (0.5 + sc)
        tw, th = 0.012 + 0.02 * sc, 0.1 + 0.25 * sc
        s.cast_shadow([(tx, ty), (tx + 0.25 * sc, ty + 0.04 * sc), (tx + 0.28 * sc, ty + 0.08 * sc),
                       (tx - 0.02, ty + 0.01)], strength=120)
        s.rect((tx - tw / 2, ty - th, tx + tw / 2, ty), (92, 64, 42), 0.40, texture=0.08)
        cr = 0.05 + 0.1 * sc
        for dx, dy in ((0, 0), (-0.5, 0.3), (0.5, 0.35)):
            s.ellipse((tx + dx * cr - cr, ty - th - cr + dy * cr, tx + dx * cr + cr, ty - th + cr + dy * cr),
                      (52, 112, 48), 0.29, texture=0.18)
    # Cars on the road.
    for _ in range(int(rng.integers(1, 3))):
        cy = rng.uniform(hz + 0.15, 0.92)
        sc = (cy - hz) / (1 - hz)
        left, right = road_x(cy, -1), road_x(cy, 1)
        cw, ch = 0.22 * sc + 0.03, 0.10 * sc + 0.015
        cx = rng.uniform(left + cw / 2, max(left + cw / 2, right - cw / 2))
        colour = [(178, 32, 30), (222, 222, 226), (38, 70, 150), (30, 30, 34)][int(rng.integers(4))]
        s.cast_shadow([(cx - cw / 2, cy), (cx + cw / 2, cy), (cx + cw / 2 + 0.03, cy + 0.02),
                       (cx - cw / 2 + 0.03, cy + 0.02)], strength=180)
        s.rect((cx - cw / 2, cy - ch, cx + cw / 2, cy - 0.15 * ch), colour, 0.40, texture=0.03, radius=0.01)
        s.rect((cx - 0.3 * cw, cy - 1.6 * ch, cx + 0.3 * cw, cy - 0.9 * ch), colour, 0.38, texture=0.03,
               radius=0.01)
        s.rect((cx - 0.25 * cw, cy - 1.5 * ch, cx + 0.25 * cw, cy - 1.0 * ch), (60, 72, 88), 0.28, texture=0.02)
        s.rect((cx - cw / 2, cy - 0.8 * ch, cx - 0.15 * cw, cy - 0.2 * ch), colour, 0.80, texture=0.04)  # warm engine
        for wx in (cx - 0.33 * cw, cx + 0.33 * cw):
            r = 0.2 * ch
            s.ellipse((wx - r, cy - 1.2 * r, wx + r, cy + 0.6 * r), (22, 22, 24), 0.72, texture=0.02)
    # People: hot in the infrared; one wears dark clothes and stands in shade (hard to see in the visible image).
    n_people = int(rng.integers(2, 4))
    for k in range(n_people):
        py = rng.uniform(hz + 0.1, 0.95)
        sc = (py - hz) / (1 - hz)
        side = -1 if k % 2 == 0 else 1
        px = road_x(py, side) + side * rng.uniform(0.01, 0.05) + rng.uniform(-0.02, 0.02)
        ph_, pw = 0.12 + 0.35 * sc, 0.02 + 0.045 * sc
        hidden = k == n_people - 1
        cloth = (28, 28, 32) if hidden else [(200, 40, 40), (40, 120, 200), (230, 200, 60), (90, 60, 120)][
            int(rng.integers(4))]
        if hidden:
            s.cast_shadow([(px - 2 * pw, py - ph_ * 1.1), (px + 2 * pw, py - ph_ * 1.1), (px + 2 * pw, py + 0.02),
                           (px - 2 * pw, py + 0.02)], strength=210)
        s.rect((px - pw * 0.45, py - 0.45 * ph_, px - 0.05 * pw, py), (40, 40, 60), 0.80, texture=0.03)
        s.rect((px + 0.05 * pw, py - 0.45 * ph_, px + 0.45 * pw, py), (40, 40, 60), 0.80, texture=0.03)
        s.rect((px - pw / 2, py - 0.85 * ph_, px + pw / 2, py - 0.42 * ph_), cloth, 0.84, texture=0.03,
               radius=0.004)
        s.ellipse((px - 0.3 * pw, py - ph_, px + 0.3 * pw, py - 0.84 * ph_), (214, 170, 140), 0.95, texture=0.02)
    return s.render(rng, hz)


def make_ir_vis_pairs(out_dir: str | Path, sizes: Sequence[tuple[int, int]] = ((200, 150), (257, 193), (224, 168)),
                      seed: int = 0) -> list[Path]:
    """Write ``out_dir/generic_2d/ir_vis/{vi,ir}/NN.png``: visible RGB and infrared grey street scenes.

    ``sizes`` are (width, height) per pair; both images of a pair share their size and scene geometry.
    """
    from PIL import Image

    folder = Path(out_dir) / "generic_2d" / "ir_vis"
    files = []
    for n, (w, h) in enumerate(sizes, start=1):
        rng = np.random.default_rng([seed, 2, n])
        vis, ir = _street_scene(int(w), int(h), rng)
        for sub, arr in (("vi", vis), ("ir", ir)):
            path = folder / sub / f"{n:02d}.png"
            with atomic_path(path) as tmp:
                Image.fromarray(arr).save(tmp, format="PNG")
            files.append(path)
    return files


# ---------------------------------------------------------------------------------------------------------------------
# 2D pairs: GFP fluorescence / phase contrast
# ---------------------------------------------------------------------------------------------------------------------
def _cells(width: int, height: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """-> (GFP RGB float (H, W, 3) in [0, 1], phase contrast float (H, W) in [0, 1]) of the same cells."""
    from scipy.ndimage import gaussian_filter

    yy, xx = np.mgrid[0:height, 0:width].astype(float)
    n_target = int(width * height / 1400)
    centres: list[tuple[float, float, float]] = []
    for _ in range(40 * n_target):
        if len(centres) >= n_target:
            break
        r = rng.uniform(7.0, 14.0)
        c = (rng.uniform(r, width - r), rng.uniform(r, height - r), r)
        if all((c[0] - o[0]) ** 2 + (c[1] - o[1]) ** 2 > (0.85 * (c[2] + o[2])) ** 2 for o in centres):
            centres.append(c)
    phase = np.zeros((height, width))
    gfp = np.zeros((height, width))
    for cx, cy, r in centres:
        a, b, t = r * rng.uniform(1.0, 1.5), r * rng.uniform(0.7, 1.0), rng.uniform(0, np.pi)
        dx, dy = xx - cx, yy - cy
        u = (dx * np.cos(t) + dy * np.sin(t)) / a
        v = (-dx * np.sin(t) + dy * np.cos(t)) / b
        rho = np.sqrt(u**2 + v**2)
        cell = np.clip((1.0 - rho) * min(a, b), 0.0, 1.0)  # 1-pixel soft edge
        nuc = np.clip((0.45 - np.sqrt((u - 0.15) ** 2 + v**2)) * min(a, b), 0.0, 1.0)
        phase = np.maximum(phase, cell * (0.8 + 0.2 * rng.random()) + 0.4 * nuc)
        if rng.random() < 0.7:  # this cell expresses GFP
            level = rng.uniform(0.35, 1.0)
            gfp = np.maximum(gfp, level * (cell * (0.7 + 0.3 * np.clip(1 - rho, 0, 1)) + 0.35 * nuc))
    # Debris: visible in phase contrast only.
    for _ in range(max(2, n_target // 6)):
        cx, cy, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(1.5, 3.5)
        phase = np.maximum(phase, np.clip(r - np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2), 0.0, 1.0) * 0.7)
    granules = _smooth_noise(rng, (height, width), 1.0)
    gfp = gaussian_filter(gfp * (1.0 + 0.15 * granules), 0.8) + 0.18 * gaussian_filter(gfp, 5.0)
    gfp = np.clip(gfp + np.abs(rng.normal(0.0, 0.012, gfp.shape)), 0.0, 1.0)
    rgb = np.stack([0.10 * gfp, gfp, 0.14 * gfp], axis=-1)
    # Phase contrast: grey background, dark cell bodies with texture, bright halos around their edges.
    body = gaussian_filter(phase * (1.0 + 0.25 * granules), 0.8)
    halo = np.clip(gaussian_filter(phase, 3.0) - gaussian_filter(phase, 0.8), 0.0, None)
    illum = 0.52 + 0.05 * (xx / width - 0.5) - 0.04 * (yy / height - 0.5)
    pc = illum - 0.30 * body + 1.3 * halo + rng.normal(0.0, 0.012, phase.shape)
    return rgb, np.clip(pc, 0.0, 1.0)


def make_gfp_pc_pairs(out_dir: str | Path, sizes: Sequence[tuple[int, int]] = ((192, 192), (160, 224)),
                      seed: int = 0) -> list[Path]:
    """Write ``out_dir/generic_2d/gfp_pc/{GFP,PC}/``: pair 001 as 8-bit PNGs; pair 002 with a 16-bit TIFF PC.

    ``sizes`` are (width, height) per pair (pairs from the third on are written like pair 001). GFP images are RGB,
    PC images grey; the two images of a pair have the same size.
    """
    import tifffile
    from PIL import Image

    folder = Path(out_dir) / "generic_2d" / "gfp_pc"
    files = []
    for n, (w, h) in enumerate(sizes, start=1):
        rgb, pc = _cells(int(w), int(h), np.random.default_rng([seed, 3, n]))
        gfp_path = folder / "GFP" / f"{n:03d}.png"
        with atomic_path(gfp_path) as tmp:
            Image.fromarray(np.round(rgb * 255).astype(np.uint8)).save(tmp, format="PNG")
        if n == 2:
            pc_path = folder / "PC" / f"{n:03d}.tif"
            with atomic_path(pc_path) as tmp:
                tifffile.imwrite(tmp, np.round(pc * 65535).astype(np.uint16), photometric="minisblack")
        else:
            pc_path = folder / "PC" / f"{n:03d}.png"
            with atomic_path(pc_path) as tmp:
                Image.fromarray(np.round(pc * 255).astype(np.uint8)).save(tmp, format="PNG")
        files += [gfp_path, pc_path]
    return files


# ---------------------------------------------------------------------------------------------------------------------
# Everything
# ---------------------------------------------------------------------------------------------------------------------
README = """# Sample data (generated)

Everything here is synthetic and generated by `python -m fusionmamba_med.data.sample_data --out sample_data --seed 0`
(`fusionmamba_med/data/sample_data.py`, anatomy from `fusionmamba_med/data/phantom.py`); rerun it to regenerate the
folder (same content for the same seed). No patient data.

| folder | fixed (channel 0) | moving (channel 1) | notes |
|---|---|---|---|
| ct_mri/study01 | MR/: T1 DICOM, 128x128x32, 1.8x1.8x4 mm, axial | CT.nii.gz: 200x200x48, 1.2x1.2x3 mm, HU | |
| pet_mri/study01 | MR/: T1 DICOM, axial | PET.nrrd: 48x48x30, 4 mm, kBq/ml | |
| pet_mri/study02 | MR/: T1 DICOM, oblique (10 deg tilt about left-right) | PET.nrrd | both studies have an MR/ folder |
| spect_mri/study01 | MR/: T1 DICOM, axial | SPECT.nii.gz: 48x48x32, 4.4 mm | |
| generic_2d/ir_vis | vi/NN.png (RGB) | ir/NN.png (grey) | 3 street scenes, 200x150, 257x193, 224x168 |
| generic_2d/gfp_pc | GFP/NNN.png (RGB) | PC/001.png (8-bit), PC/002.tif (16-bit) | 2 cell images, 192x192, 160x224 |

Each medical study has a different (fictitious) patient: PatientID PHANTOM01..PHANTOM04, PatientName Phantom^Head.
The moving image shows the same head as the MRI moved by a known rigid transform (a few degrees and millimetres), so
the pair must be registered before fusion. `ground_truth.json` in each study gives it:

- `fixed_to_moving_lps`: 4x4 matrix in ITK/LPS physical coordinates (mm) mapping a point of the MRI (fixed) to the
  same anatomical point in the moving image: `p_moving = M @ [p_fixed, 1]`. This is what an ITK/SimpleITK
  registration with fixed = MRI, moving = CT/PET/SPECT recovers, and what `sitk.Resample(moving, mri, transform)`
  takes. `moving_to_fixed_lps` is its inverse; `*_ras` are the same maps in RAS (MONAI/NIfTI) coordinates.
- `euler3d`: the same transform as `SimpleITK.Euler3DTransform` parameters (centre (0, 0, 0), angles about x, y, z
  in degrees and radians, ZXY order, translation in LPS mm).
- `landmarks`: lesion centre, eye and ventricle centres and head centre in fixed and moving coordinates (LPS and
  RAS), for target registration error.
- `fixed_affine_ras`, `moving_affine_ras`, `fixed_shape`, `moving_shape`: the grids the images were sampled on.
"""


def generate_sample_data(out_dir: str | Path = "sample_data", seed: int = 0) -> list[Path]:
    """Regenerate the whole sample-data folder (medical studies, 2D pairs, README.md); returns the written files."""
    out = Path(out_dir)
    files: list[Path] = []
    for spec in SAMPLE_STUDIES:
        files += make_medical_study(out, seed=seed, **spec)
    files += make_ir_vis_pairs(out, seed=seed)
    files += make_gfp_pc_pairs(out, seed=seed)
    readme = out / "README.md"
    with atomic_path(readme) as tmp:
        tmp.write_text(README, encoding="utf-8")
    files.append(readme)
    return files


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fusionmamba_med.data.sample_data",
                                     description="Regenerate the project's synthetic sample data.")
    parser.add_argument("--out", default="sample_data", help="output folder (default: sample_data)")
    parser.add_argument("--seed", type=int, default=0, help="noise and UID seed (default: 0)")
    args = parser.parse_args(argv)
    files = generate_sample_data(args.out, seed=args.seed)
    total = sum(f.stat().st_size for f in files)
    print(f"wrote {len(files)} files ({total / 2**20:.2f} MiB) to {Path(args.out).resolve()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
