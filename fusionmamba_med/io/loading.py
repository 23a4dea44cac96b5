"""Loading one study's volumes through MONAI readers, with the checks a batch run needs.

``load_volume`` returns a ``MetaTensor`` (1, X, Y, Z) float32 with a RAS affine, exactly as
``LoadImage(image_only=True, ensure_channel_first=True)`` gives it (DICOM series through
:mod:`fusionmamba_med.io.dicom_read`, NIfTI through NibabelReader, NRRD and MetaImage through ITKReader), plus meta
keys used by the writers:

- ``"source_path"``: the absolute path that was loaded (file or DICOM folder);
- ``"dicom_files"`` (DICOM only): the files of the chosen series, sorted along the slice axis (index k = slice k),
  together with ``"series_uid"`` and ``"series_description"``.

Policies (see also the module docs of the project):

- **Several series in one folder**: refused unless ``series_uid`` names one (by SeriesInstanceUID, or by a unique
  SeriesDescription, case-insensitive); the error lists the available UIDs with their descriptions.
- **Not a 3D scalar volume**: 4D data with more than one frame / time point, multi-frame (enhanced) DICOM, RGB or
  vector pixels are refused. A 4D volume whose 4th dimension is 1 is fine.
- **Single slice**: accepted as a one-slice volume (fusion works slice by slice). A 2D image file is loaded as a
  (1, X, Y, 1) volume.
- **Non-finite voxels** (NaN/Inf): replaced by the minimum finite value of the volume, with a logged warning naming
  the file; a volume without any finite voxel is refused.
- **DICOM**: geometry, per-slice rescale, mosaics and what is refused: see :mod:`fusionmamba_med.io.dicom_read`.
- **NIfTI**: read as MONAI/nibabel read it (the sform when its code is set, else the qform); a sheared sform is
  refused (ITK cannot hold it, so no output could overlay it in every reader).
- **Size**: volumes with more than ``max_voxels`` voxels are refused from the header, before pixel data is read; so
  are files that hold fewer bytes than their header declares (:mod:`fusionmamba_med.io.size_checks`: NIfTI plain and
  gzip, NRRD raw / gzip / bzip2, attached or detached; DICOM pixel data), before any reader allocates the volume.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.transforms import MapTransform

from fusionmamba_med.errors import FusionInputError
from fusionmamba_med.io import dicom_read
from fusionmamba_med.io.dicom_read import DEFAULT_MAX_VOXELS, MAX_RESCALE, SLICE_SPACING_TOLERANCE, list_dicom_series
from fusionmamba_med.io.geometry import is_orthogonal, max_axis_cosine
from fusionmamba_med.io.size_checks import nifti_size_problem, nrrd_size_problem
from fusionmamba_med.io.studies import image_kind

__all__ = [
    "DEFAULT_MAX_VOXELS",
    "SLICE_SPACING_TOLERANCE",
    "list_dicom_series",
    "load_volume",
    "LoadStudyd",
]

logger = logging.getLogger(__name__)



# ---------------------------------------------------------------------------------------------------------------------
# File headers
# ---------------------------------------------------------------------------------------------------------------------
def _check_nifti_header(path: Path, study: str | None, max_voxels: int) -> None:
    import nibabel as nib

    try:
        img = nib.load(str(path))  # header only; the data stay on disk
        shape = tuple(int(s) for s in img.shape)
        dtype = img.header.get_data_dtype()
    except Exception as err:
        raise FusionInputError(f"unreadable or truncated NIfTI file ({type(err).__name__}: {err})",
                               study=study, path=path) from err
    if dtype.fields is not None or (len(shape) > 4 and any(s > 1 for s in shape[4:])):
        raise FusionInputError("RGB / vector NIfTI is not a scalar volume; fusion inputs must be greyscale",
                               study=study, path=path)
    if len(shape) >= 4 and shape[3] > 1:
        raise FusionInputError(f"4D volume with {shape[3]} frames/time points {shape}; a 3D volume is needed "
                               "(extract one frame first)", study=study, path=path)
    nvox = int(np.prod(shape, dtype=np.int64)) if shape else 0
    if nvox > max_voxels:
        raise FusionInputError(f"volume too large: {shape} = {nvox} voxels > max_voxels={max_voxels}",
                               study=study, path=path)
    if nvox == 0:
        raise FusionInputError(f"empty volume {shape}", study=study, path=path)
    offset = int(getattr(img.dataobj, "offset", img.header.get_data_offset()))  # where nibabel reads the data
    problem = nifti_size_problem(path, offset, int(dtype.itemsize), nvox)
    if problem is not None:
        raise FusionInputError(problem, study=study, path=path)
    _check_nifti_scaling(img, study, path)
    _check_nifti_affine(img, study, path)
    _check_nifti_forms(img.header, study, path)
    _check_monai_keeps_affine(img, study, path)


def _check_monai_keeps_affine(img, study: str | None, path: Path) -> None:
    """Refuse a NIfTI whose pixdim disagrees with the voxel sizes of its sform / qform: MONAI's NibabelReader then
    rewrites the affine (``correct_nifti_header_if_necessary``) where nibabel, ITK and 3D Slicer each read another,
    so the volume has no single place."""
    import nibabel as nib
    from monai.data.utils import correct_nifti_header_if_necessary

    before = np.array(img.affine, dtype=np.float64, copy=True)
    try:
        with np.errstate(all="ignore"):
            fresh = nib.load(str(path))  # MONAI's correction rewrites the header in place: not ``img``'s
            after = np.array(correct_nifti_header_if_necessary(fresh).affine, dtype=np.float64, copy=True)
    except Exception as err:
        raise FusionInputError(f"inconsistent NIfTI header ({type(err).__name__}: {err})", study=study,
                               path=path) from err
    if not np.allclose(before, after, rtol=0, atol=1e-4 * max(1.0, float(np.abs(before).max()))):
        zooms = [round(float(z), 6) for z in img.header.get_zooms()[:3]]
        sizes = np.round(np.linalg.norm(before[:3, :3], axis=0), 6).tolist()
        raise FusionInputError(f"inconsistent NIfTI header: pixdim {zooms} disagrees with the voxel sizes {sizes} of "
                               "its sform / qform, so MONAI and nibabel place the volume differently; fix pixdim or "
                               "the sform / qform", study=study, path=path)


def _check_nifti_scaling(img, study: str | None, path: Path) -> None:
    """Refuse a NIfTI whose scl_slope / scl_inter (as nibabel applies them) lie beyond ``MAX_RESCALE``: the scaled
    voxels would overflow float32 into infinities that no reader agrees on."""
    slope = float(getattr(img.dataobj, "slope", 1.0))
    inter = float(getattr(img.dataobj, "inter", 0.0))
    if not (np.isfinite(slope) and np.isfinite(inter)) or max(abs(slope), abs(inter)) > MAX_RESCALE:
        raise FusionInputError(f"invalid NIfTI scaling: scl_slope {slope:g} / scl_inter {inter:g} not finite or "
                               f"beyond {MAX_RESCALE:g}", study=study, path=path)


def _check_nifti_affine(img, study: str | None, path: Path) -> None:
    """Refuse a NIfTI whose voxel-to-world mapping (nibabel's: the sform when its code is set, else the qform, else
    pixdim) cannot be computed, is not finite, or is degenerate (a voxel axis shorter than 1e-6 mm or longer than
    1e6 mm, or axes in one plane): the volume could not be placed, and readers fall back differently."""
    try:
        with np.errstate(all="ignore"):
            aff = np.asarray(img.affine, dtype=np.float64)
    except Exception as err:
        raise FusionInputError(f"invalid NIfTI voxel-to-world mapping ({type(err).__name__}: {err})", study=study,
                               path=path) from err
    if aff.shape != (4, 4) or not np.isfinite(aff).all():
        raise FusionInputError("the NIfTI voxel-to-world mapping (sform / qform / pixdim) is not finite",
                               study=study, path=path)
    sizes = np.linalg.norm(aff[:3, :3], axis=0)
    det = abs(float(np.linalg.det(aff[:3, :3])))
    if np.any(sizes < 1e-6) or np.any(sizes > 1e6) or det < 1e-6 * float(np.prod(sizes)):
        raise FusionInputError(f"degenerate NIfTI voxel-to-world mapping: voxel axes of {np.round(sizes, 9).tolist()} "
                               "mm" + (", in one plane" if det < 1e-6 * float(np.prod(sizes)) else ""),
                               study=study, path=path)


def _check_nifti_forms(header, study: str | None, path: Path) -> None:
    """Refuse a NIfTI whose voxel-to-world mapping, as MONAI/nibabel read it, is sheared; log one whose qform and
    sform disagree (readers differ on such files; the output then keeps both forms, see the writers).

    A sheared sform (uncorrected gantry tilt, as some converters write) cannot be held by ITK's geometry
    (SimpleITK/3D Slicer refuse or reinterpret it), nor by a NIfTI qform, so no output could overlay it in every
    reader: such a volume is refused, as sheared DICOM stacks are.
    """
    try:
        with np.errstate(all="ignore"):
            sform, sform_code = header.get_sform(coded=True)
            qform, qform_code = header.get_qform(coded=True)
    except Exception as err:  # e.g. a qform quaternion of norm > 1
        raise FusionInputError(f"invalid NIfTI qform / sform ({type(err).__name__}: {err})", study=study,
                               path=path) from err
    if sform_code and sform is not None and not is_orthogonal(sform):
        angle = float(np.degrees(np.arcsin(min(1.0, max_axis_cosine(sform)))))
        raise FusionInputError(
            f"the NIfTI sform is sheared (voxel axes {angle:.2f} deg from perpendicular, e.g. an uncorrected gantry "
            f"tilt; sform_code {int(sform_code)}, qform_code {int(qform_code)}): ITK and 3D Slicer cannot place such a "
            "volume as nibabel does, so no output could overlay it in every reader; resample it onto an orthogonal "
            "grid first (e.g. with the tilt correction of dcm2niix)", study=study, path=path)
    if sform_code and qform_code and qform is not None and sform is not None:
        corners = np.array([[i, j, k, 1.0] for i in (0, 1) for j in (0, 1) for k in (0, 1)]).T
        shape = np.asarray(header.get_data_shape()[:3] + (1,) * max(0, 3 - len(header.get_data_shape())))
        corners[:3] *= (shape[:3, None] - 1)
        gap = float(np.abs((sform - qform) @ corners)[:3].max())
        if gap > 0.01:
            logger.info("'%s': qform (code %d) and sform (code %d) differ by up to %.1f mm; MONAI/nibabel use the "
                        "sform, ITK and 3D Slicer the qform; the output keeps both, so it overlays this volume in each "
                        "reader", path, int(qform_code), int(sform_code), gap)


def _check_itk_header(path: Path, study: str | None, max_voxels: int) -> None:
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()  # header only
    except Exception as err:
        raise FusionInputError(f"unreadable image header ({str(err).strip().splitlines()[-1]})",
                               study=study, path=path) from err
    size = tuple(int(s) for s in reader.GetSize())
    comps = int(reader.GetNumberOfComponents())
    if comps > 1:
        raise FusionInputError(f"image with {comps} components per voxel (RGB/vector) is not a scalar volume; "
                               "fusion inputs must be greyscale", study=study, path=path)
    if len(size) >= 4 and any(s > 1 for s in size[3:]):
        raise FusionInputError(f"{len(size)}D volume {size} with more than one frame/time point; a 3D volume is "
                               "needed", study=study, path=path)
    nvox = int(np.prod(size, dtype=np.int64)) * comps
    if nvox > max_voxels:
        raise FusionInputError(f"volume too large: {size} = {nvox} voxels > max_voxels={max_voxels}",
                               study=study, path=path)
    if nvox == 0:
        raise FusionInputError(f"empty volume {size}", study=study, path=path)
    if path.name.lower().endswith((".nrrd", ".nhdr")):
        problem = nrrd_size_problem(path, nvox)
        if problem is not None:
            raise FusionInputError(problem, study=study, path=path)


# ---------------------------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------------------------
def _as_3d(img, study: str | None, path: Path):
    """(C, X, Y[, Z][, 1...]) -> (1, X, Y, Z) or a FusionInputError."""
    from monai.data import MetaTensor

    shape = tuple(img.shape)
    if len(shape) > 4:
        extra = shape[4:]
        if any(s != 1 for s in extra):
            raise FusionInputError(f"{len(shape) - 1}D data {shape[1:]} is not a 3D volume", study=study, path=path)
        img = img.reshape(shape[:4])
        shape = tuple(img.shape)
    if shape[0] != 1:
        raise FusionInputError(
            f"data of shape {shape[1:]} with {shape[0]} frames / time points / colour components is not a 3D scalar "
            "volume (4D, RGB or vector data); give a single 3D greyscale volume", study=study, path=path)
    if len(shape) == 3:  # 2D image: a one-slice volume
        aff = torch.as_tensor(img.affine, dtype=torch.float64)
        if aff.shape == (3, 3):
            full = torch.eye(4, dtype=torch.float64)
            full[:2, :2] = aff[:2, :2]
            full[:2, 3] = aff[:2, 2]
            aff = full
        img = img.unsqueeze(-1)
        if isinstance(img, MetaTensor):
            img.affine = aff
            img.meta["spatial_shape"] = np.asarray(img.shape[1:])
    elif len(shape) != 4:
        raise FusionInputError(f"data of shape {shape} is not a volume", study=study, path=path)
    return img


def _fix_non_finite(img, study: str | None, path: Path):
    finite = torch.isfinite(img)
    if bool(finite.all()):
        return img
    n_bad = int((~finite).sum())
    if not bool(finite.any()):
        raise FusionInputError("the volume has no finite voxel (all NaN/Inf)", study=study, path=path)
    fill = img[finite].min()
    logger.warning("study '%s', file '%s': %d non-finite voxels (NaN/Inf) replaced by the minimum finite value %g",
                   study, path, n_bad, float(fill))
    img = img.clone()
    img[~finite] = fill
    return img


def load_volume(
    path: str | Path,
    study: str | None = None,
    series_uid: str | None = None,
    max_voxels: int = DEFAULT_MAX_VOXELS,
):
    """Load one image as a ``MetaTensor`` (1, X, Y, Z) float32, RAS affine.

    Args:
        path: a DICOM series folder, a single DICOM file (its series in its folder is loaded), a NIfTI
            (.nii/.nii.gz), NRRD (.nrrd/.nhdr) or MetaImage (.mha/.mhd) file.
        study: study name used in error messages.
        series_uid: for a DICOM folder with several series: the SeriesInstanceUID to load, or a
            SeriesDescription (case-insensitive) that names exactly one series.
        max_voxels: refuse larger volumes (checked from the header, before pixel data are read).

    Raises:
        FusionInputError: naming the study and the file/folder at fault (see the module docstring for the checks).
    """
    from monai.data import ITKReader, NibabelReader
    from monai.transforms import LoadImage

    p = Path(path).expanduser()
    if not p.exists():
        raise FusionInputError("the image does not exist", study=study, path=p)
    kind = image_kind(p)
    if kind == "dicom_file":  # a single file: load its series from its folder
        ds = dicom_read.dicom_header(p, study)
        series_uid = series_uid or str(ds.get("SeriesInstanceUID", "") or "") or None
        p, kind = p.parent, "dicom"
    if kind == "dicom":
        img = dicom_read.read_dicom_series(p, study, series_uid, max_voxels)
        one_file = img.meta.get("mosaic_images") or img.meta.get("multiframe_frames")  # the volume is one file
        source = img.meta["dicom_files"][0] if one_file else p
        img = _fix_non_finite(img, study, Path(source))
        return img if img.dtype == torch.float32 else img.float()
    if kind == "nifti":
        _check_nifti_header(p, study, max_voxels)
        reader = NibabelReader()
    elif kind in ("nrrd", "meta"):
        _check_itk_header(p, study, max_voxels)
        reader = ITKReader()
    else:
        raise FusionInputError(
            "unsupported image type; expected a DICOM series folder, .nii/.nii.gz, .nrrd/.nhdr or .mha/.mhd",
            study=study, path=p)
    err_path: Path = p
    extra_meta: dict[str, Any] = {"source_path": os.path.abspath(p)}
    loader = LoadImage(reader=reader, image_only=True, ensure_channel_first=True, dtype=np.float32)
    try:
        img = loader(str(p), reader=reader)
    except Exception as err:
        msg = str(err).strip()
        short = msg.splitlines()[-1] if msg else ""
        raise FusionInputError(f"cannot read the image ({type(err).__name__}: {short[:300]})",
                               study=study, path=err_path) from err
    img = _as_3d(img, study, err_path)
    img = _fix_non_finite(img, study, err_path)
    if img.dtype != torch.float32:
        img = img.float()
    img.meta.update(extra_meta)
    return img


# ---------------------------------------------------------------------------------------------------------------------
# MONAI dictionary transform
# ---------------------------------------------------------------------------------------------------------------------
class LoadStudyd(MapTransform):
    """Load the images of one study dictionary with :func:`load_volume`.

    ``{"study": "p01", "mri": ".../MR", "moving": ".../pet.nii.gz", "mri_series_uid": "1.2..."}`` ->
    the same dictionary with ``"mri"`` and ``"moving"`` replaced by ``MetaTensor`` (1, X, Y, Z).
    Any exception becomes a :class:`FusionInputError` naming the study and the file.

    Args:
        keys: the image keys to load.
        study_key: key of the study name (used in errors).
        series_uid_keys: per image key, the key holding a series UID/description: a mapping, a sequence parallel to
            ``keys`` or ``None`` for ``"<key>_series_uid"``.
        max_voxels: passed to :func:`load_volume`.
        allow_missing_keys: skip absent keys instead of raising.
    """

    def __init__(
        self,
        keys=("mri", "moving"),
        study_key: str = "study",
        series_uid_keys: Mapping[Hashable, str] | Sequence[str] | None = None,
        max_voxels: int = DEFAULT_MAX_VOXELS,
        allow_missing_keys: bool = False,
    ):
        super().__init__(keys, allow_missing_keys)
        if series_uid_keys is None:
            self.series_uid_keys = {k: f"{k}_series_uid" for k in self.keys}
        elif isinstance(series_uid_keys, Mapping):
            self.series_uid_keys = dict(series_uid_keys)
        else:
            uid_keys = list(series_uid_keys)
            if len(uid_keys) != len(self.keys):
                raise ValueError("series_uid_keys must have one entry per key")
            self.series_uid_keys = dict(zip(self.keys, uid_keys))
        self.study_key = study_key
        self.max_voxels = max_voxels

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        study = d.get(self.study_key)
        study = None if study is None else str(study)
        for key in self.key_iterator(d):
            value = d[key]
            if isinstance(value, torch.Tensor):  # already loaded
                continue
            uid_key = self.series_uid_keys.get(key)
            uid = d.get(uid_key) if uid_key else None
            try:
                d[key] = load_volume(value, study=study, series_uid=uid, max_voxels=self.max_voxels)
            except FusionInputError as err:
                raise err.with_study(study) if study is not None else err
            except Exception as err:
                raise FusionInputError(f"cannot load '{key}' ({type(err).__name__}: {err})", study=study,
                                       path=str(value)) from err
        return d
