"""Writing the fused volume on the MRI grid, with the MRI's exact geometry.

Output layout (``study_id`` and ``postfix`` pass through :func:`safe_name`)::

    <output_dir>/<study_id>/<study_id>_<postfix>.nii.gz      output_format="nifti"
    <output_dir>/<study_id>/<study_id>_<postfix>.nrrd        output_format="nrrd"
    <output_dir>/<study_id>/<study_id>_<postfix>_dicom/      output_format="dicom": 0001.dcm, 0002.dcm, ...

Every output is written under a hidden temporary name in the same folder (``.<name>.partial-<random>``) and renamed
into place when complete, so a crash never leaves a final-named, half-written output. An output path that is (or
contains) an input file is refused. The output folder is checked when the writer is made (it must be, or be
creatable as, a folder this process can list and write in), so a bad ``output_dir`` fails before any work starts;
a run working on a study holds a claim on it, ``<output_dir>/<study_id>/.<output name>.claim`` (see
:mod:`fusionmamba_med.io.claims`).

Formats:

- **NIfTI** (greyscale) through nibabel. When the MRI itself was a NIfTI file, the output carries its qform, sform,
  both codes, voxel sizes and units value for value (FSL/SPM write sform_code 2 beside a qform that can be
  centimetres away; nibabel/MONAI read the sform, ITK and 3D Slicer the qform: each reader then places output and MRI
  alike). Otherwise qform = sform = the MRI's RAS affine, code 1. **NRRD** through SimpleITK (LPS header), from the
  MRI's RAS affine as MONAI reads it (for a NIfTI MRI whose qform and sform disagree that is the sform).
- **Colour** (3-channel) volumes are stored as uint8 RGB that 3D Slicer shows in colour: NRRD with an RGB vector
  pixel (SimpleITK), NIfTI as RGB24 (nibabel), DICOM as an RGB Secondary Capture series (see below). Float colour
  values in [0, 1] are scaled by 255; other values are clipped to [0, 255]. NRRD is the recommended colour format.
- **DICOM**: a derived series of the MRI's DICOM files, or a series built from scratch, written by
  :class:`~fusionmamba_med.io.dicom_write.DicomSeriesWriter` (attributes and the 0..4095 value mapping: see there).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import torch

from fusionmamba_med.errors import FusionInputError
from fusionmamba_med.io.atomic import atomic_path, check_output_dir, write_summary
from fusionmamba_med.io.dicom_write import DicomSeriesWriter, series_file_names, to_rgb_uint8
from fusionmamba_med.io.geometry import ras_affine_to_lps_geometry
from fusionmamba_med.io.naming import safe_name

__all__ = [
    "FusedVolumeWriter",
    "write_summary",  # re-exported from io.atomic for the runners
    "OUTPUT_FORMATS",
    "OVERWRITE_POLICIES",
]

logger = logging.getLogger(__name__)

OUTPUT_FORMATS = ("nifti", "nrrd", "dicom")
OVERWRITE_POLICIES = ("skip", "overwrite", "error")
_EXT = {"nifti": ".nii.gz", "nrrd": ".nrrd", "dicom": ""}



# ---------------------------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------------------------
#: NIfTI-1 header fields that place the voxels in the world: copied unchanged from the MRI's own header, so that
#: every reader (nibabel from the sform, ITK and 3D Slicer from the qform when both are set) places the output
#: exactly where it places the MRI, whatever the two forms and their codes say.
NIFTI_SPATIAL_FIELDS = ("qform_code", "sform_code", "quatern_b", "quatern_c", "quatern_d", "qoffset_x", "qoffset_y",
                        "qoffset_z", "srow_x", "srow_y", "srow_z")


def reference_nifti_header(reference, affine: np.ndarray, shape) -> Any | None:
    """The NIfTI header of the reference MRI when it was loaded from a NIfTI file whose grid is the output's
    (same voxel shape and, as nibabel reads it, the same affine), else ``None``."""
    src = _meta_of(reference).get("source_path") if reference is not None else None
    if not src or not str(src).lower().endswith((".nii", ".nii.gz")) or not os.path.isfile(str(src)):
        return None
    import nibabel as nib

    try:
        ref = nib.load(str(src))
    except Exception:  # the source changed on disk since loading: fall back to the affine
        logger.warning("cannot re-read the reference NIfTI header %s; the output gets qform = sform", src)
        return None
    if tuple(ref.shape[:3]) != tuple(int(s) for s in shape) or not np.allclose(ref.affine, affine, atol=1e-4):
        return None
    return ref.header


def copy_spatial_header(source, target) -> None:
    """Copy the qform, sform, their codes, voxel sizes and qfac (pixdim[0:4]) and the space units of one NIfTI-1
    header onto another, value for value."""
    for field in NIFTI_SPATIAL_FIELDS:
        target[field] = source[field]
    target["pixdim"][:4] = source["pixdim"][:4]
    target.set_xyzt_units(*source.get_xyzt_units())


def _to_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _affine_of(x) -> np.ndarray | None:
    aff = getattr(x, "affine", None)
    if aff is None:
        return None
    a = _to_numpy(aff).astype(np.float64)
    if a.ndim == 3:  # batched
        a = a[0]
    return a if a.shape == (4, 4) else None


def _meta_of(x) -> Mapping:
    meta = getattr(x, "meta", None)
    return meta if isinstance(meta, Mapping) else {}


def _flatten_paths(value) -> list[str]:
    """Meta path values may be str, Path, list/tuple (possibly nested by collation) or JSON/os.pathsep strings."""
    if value is None:
        return []
    if isinstance(value, (str, os.PathLike)):
        s = str(value)
        if s.startswith("["):
            try:
                return _flatten_paths(json.loads(s))
            except json.JSONDecodeError:
                pass
        return [s] if s else []
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        out: list[str] = []
        for v in value:
            out.extend(_flatten_paths(v))
        return out
    return [str(value)]


def _is_identity(a: np.ndarray) -> bool:
    return bool(np.allclose(a, np.eye(4)))


# Low-level writes, module level so that tests (and users) can patch them.
def _write_sitk(image, path: Path) -> None:
    import SimpleITK as sitk

    sitk.WriteImage(image, str(path))


def _save_nibabel(image, path: Path) -> None:
    import nibabel as nib

    nib.save(image, str(path))


# ---------------------------------------------------------------------------------------------------------------------
# the writer
# ---------------------------------------------------------------------------------------------------------------------
class FusedVolumeWriter:
    """Write a fused volume on the reference MRI's grid.

    Args:
        output_dir: root output folder; each study gets ``<output_dir>/<study_id>/``.
        output_format: ``"nifti"``, ``"nrrd"`` or ``"dicom"``.
        overwrite: what to do when the output exists: ``"skip"`` (return its path, write nothing),
            ``"overwrite"`` (replace it atomically) or ``"error"`` (raise :class:`FusionInputError`).
        output_postfix: appended to the study id in output names.
        series_description: DICOM SeriesDescription of the derived series.
        output_dtype: voxel type for greyscale NIfTI/NRRD (float32 by default; integer types are rounded and
            clipped). DICOM ignores it: a fused greyscale image in [0, 1] is stored 0..4095 (fused = stored /
            4095), other greyscale values as int16 + rescale, colour as uint8 RGB (see the module docstring).
        series_number: DICOM SeriesNumber; default: the source's SeriesNumber + 1000 (1001 without a source).

    Raises :class:`~fusionmamba_med.errors.OutputError` (naming the folder) when ``output_dir`` cannot be written.
    """

    def __init__(
        self,
        output_dir: str | Path,
        output_format: str = "nifti",
        overwrite: str = "skip",
        output_postfix: str = "fused",
        series_description: str = "FusionMamba fused",
        output_dtype=np.float32,
        series_number: int | None = None,
    ):
        fmt = str(output_format).lower().lstrip(".")
        fmt = {"nii": "nifti", "nii.gz": "nifti", "dcm": "dicom"}.get(fmt, fmt)
        if fmt not in OUTPUT_FORMATS:
            raise ValueError(f"output_format must be one of {OUTPUT_FORMATS}, got {output_format!r}")
        if overwrite not in OVERWRITE_POLICIES:
            raise ValueError(f"overwrite must be one of {OVERWRITE_POLICIES}, got {overwrite!r}")
        self.output_dir = check_output_dir(output_dir)
        self.output_format = fmt
        self.overwrite = overwrite
        self.output_postfix = safe_name(output_postfix, fallback="fused")
        self.output_dtype = np.dtype(output_dtype)
        self.dicom_writer = DicomSeriesWriter(series_description=series_description, series_number=series_number)

    # -- names ---------------------------------------------------------------------------------------------------
    def output_path(self, study_id: str) -> Path:
        """Final path of a study's output (a file, or a folder for DICOM)."""
        sid = safe_name(study_id)
        name = f"{sid}_{self.output_postfix}"
        if self.output_format == "dicom":
            return self.output_dir / sid / f"{name}_dicom"
        return self.output_dir / sid / f"{name}{_EXT[self.output_format]}"

    def output_files(self, study_id: str, n_slices: int) -> list[Path]:
        """The files a study's output of ``n_slices`` slices is (or will be) made of: the file, or the DICOM series'
        files in slice order."""
        p = self.output_path(study_id)
        return [p / name for name in series_file_names(n_slices)] if self.output_format == "dicom" else [p]

    def claim_path(self, study_id: str) -> Path:
        """The claim a run holds while it works on the study (beside the output, in the study's own folder)."""
        final = self.output_path(study_id)
        return final.parent / f".{final.name}.claim"

    def exists(self, study_id: str) -> bool:
        """Whether the study's final output exists (a DICOM folder counts when it holds at least one file)."""
        p = self.output_path(study_id)
        if self.output_format == "dicom":
            return p.is_dir() and any(p.iterdir())
        return p.is_file()

    # -- main entry ----------------------------------------------------------------------------------------------
    def __call__(self, fused, reference=None, study_id: str = "study", input_paths: Iterable = ()) -> Path:
        """Write ``fused`` (C = 1 or 3, X, Y, Z) on ``reference``'s grid and return the output path.

        ``reference`` is the loaded MRI (its meta may hold ``source_path``/``dicom_files``); when ``None`` the
        fused MetaTensor's own affine is used. ``input_paths``: further inputs that must never be overwritten.
        """
        final = self.output_path(study_id)
        self._refuse_inputs(final, fused, reference, input_paths, study_id)
        if self.exists(study_id):
            if self.overwrite == "skip":
                logger.info("study '%s': output exists, skipped: %s", study_id, final)
                return final
            if self.overwrite == "error":
                raise FusionInputError("the output already exists (overwrite='error')", study=study_id, path=final)
        vol, affine = self._prepare(fused, reference, study_id)
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            if self.output_format == "dicom":
                self._write_dicom_atomic(final, vol, affine, reference, fused, study_id)
            else:
                self._write_file_atomic(final, vol, affine, study_id, reference)
        except FusionInputError:
            raise
        except Exception as err:
            raise FusionInputError(f"writing the {self.output_format} output failed ({type(err).__name__}: {err})",
                                   study=study_id, path=final) from err
        logger.info("study '%s': wrote %s", study_id, final)
        return final

    # -- checks --------------------------------------------------------------------------------------------------
    def _refuse_inputs(self, final: Path, fused, reference, input_paths, study_id) -> None:
        inputs: list[str] = []
        for obj in (reference, fused):
            meta = _meta_of(obj)
            for key in ("source_path", "filename_or_obj", "dicom_files"):
                inputs.extend(_flatten_paths(meta.get(key)))
        inputs.extend(_flatten_paths(list(input_paths)))
        target = final.resolve()
        for p in inputs:
            try:
                rp = Path(p).resolve()
            except (OSError, RuntimeError, ValueError):
                continue
            if rp == target or target in rp.parents:
                raise FusionInputError(f"refusing to write over an input ({p})", study=study_id, path=final)

    def _prepare(self, fused, reference, study_id) -> tuple[np.ndarray, np.ndarray]:
        vol = _to_numpy(fused)
        if vol.ndim == 5 and vol.shape[0] == 1:  # a batch of one
            vol = vol[0]
        if vol.ndim == 3:
            vol = vol[None]
        if vol.ndim != 4 or vol.shape[0] not in (1, 3):
            raise FusionInputError(f"fused volume must be (1 or 3, X, Y, Z), got {tuple(vol.shape)}", study=study_id)
        vol = vol.astype(np.float32, copy=False) if vol.dtype != np.uint8 else vol
        ref_aff = _affine_of(reference) if reference is not None else None
        fused_aff = _affine_of(fused)
        if reference is not None:
            ref_shape = tuple(_to_numpy(reference).shape[-3:]) if hasattr(reference, "shape") else None
            if ref_shape is not None and tuple(vol.shape[1:]) != ref_shape:
                raise FusionInputError(
                    f"fused volume shape {tuple(vol.shape[1:])} differs from the reference MRI grid {ref_shape}; "
                    "invert padding/resampling before writing", study=study_id)
        if ref_aff is None and fused_aff is None:
            raise FusionInputError("no geometry: neither the fused volume nor the reference has an affine",
                                   study=study_id)
        affine = ref_aff if ref_aff is not None else fused_aff
        if ref_aff is not None and fused_aff is not None and not _is_identity(fused_aff):
            tol = 1e-3 * max(1.0, float(np.abs(ref_aff[:3, :3]).max()))
            if not np.allclose(fused_aff, ref_aff, atol=tol):
                raise FusionInputError(
                    "the fused volume's affine differs from the reference MRI's; the fused volume must live on the "
                    "MRI grid (invert spatial transforms before writing)", study=study_id)
        if vol.dtype != np.uint8 and not np.all(np.isfinite(vol)):
            n = int((~np.isfinite(vol)).sum())
            logger.warning("study '%s': %d non-finite fused voxels written as 0", study_id, n)
            vol = np.nan_to_num(vol, nan=0.0, posinf=0.0, neginf=0.0)
        return vol, affine

    # -- NIfTI / NRRD --------------------------------------------------------------------------------------------
    def _grey_for_file(self, vol3d: np.ndarray) -> np.ndarray:
        dt = self.output_dtype
        if np.issubdtype(dt, np.integer):
            info = np.iinfo(dt)
            return np.clip(np.rint(vol3d), info.min, info.max).astype(dt)
        return vol3d.astype(dt, copy=False)

    def _write_file_atomic(self, final: Path, vol: np.ndarray, affine: np.ndarray, study_id: str,
                           reference=None) -> None:
        with atomic_path(final) as tmp:
            if self.output_format == "nifti":
                self._write_nifti(tmp, vol, affine, reference_nifti_header(reference, affine, vol.shape[1:]))
            else:
                self._write_nrrd(tmp, vol, affine)

    def _write_nifti(self, path: Path, vol: np.ndarray, affine: np.ndarray, reference_header=None) -> None:
        """NIfTI-1 on ``affine``; with the MRI's own NIfTI header, its qform, sform and both codes exactly."""
        import nibabel as nib

        if vol.shape[0] == 3:  # RGB24
            rgb = to_rgb_uint8(vol)
            rgb_dtype = np.dtype([("R", "u1"), ("G", "u1"), ("B", "u1")])
            data = np.empty(vol.shape[1:], dtype=rgb_dtype)
            data["R"], data["G"], data["B"] = rgb[0], rgb[1], rgb[2]
        else:
            data = self._grey_for_file(vol[0])
        img = nib.Nifti1Image(data, affine)
        img.set_sform(affine, code=1)
        img.set_qform(affine, code=1)
        img.header.set_xyzt_units("mm")
        if reference_header is not None:
            copy_spatial_header(reference_header, img.header)
        _save_nibabel(img, path)

    def _write_nrrd(self, path: Path, vol: np.ndarray, affine: np.ndarray) -> None:
        import SimpleITK as sitk

        if vol.shape[0] == 3:  # RGB vector pixel
            pixels = np.transpose(to_rgb_uint8(vol), (3, 2, 1, 0))  # (Z, Y, X, 3)
        else:
            pixels = np.transpose(self._grey_for_file(vol[0]), (2, 1, 0))  # (Z, Y, X)
        image = sitk.GetImageFromArray(np.ascontiguousarray(pixels), isVector=vol.shape[0] == 3)
        spacing, direction, origin = ras_affine_to_lps_geometry(affine)
        image.SetSpacing(spacing.tolist())
        image.SetOrigin(origin.tolist())
        image.SetDirection(direction.flatten().tolist())
        _write_sitk(image, path)

    # -- DICOM ---------------------------------------------------------------------------------------------------
    def _write_dicom_atomic(self, final: Path, vol, affine, reference, fused, study_id: str) -> None:
        meta = _meta_of(reference) or _meta_of(fused)
        source = (_flatten_paths(meta.get("source_path")) or _flatten_paths(meta.get("filename_or_obj")) or [""])[0]
        with atomic_path(final, directory=True) as tmp:
            self.dicom_writer.write(tmp, vol, affine, source_files=self._dicom_files(reference, fused),
                                    source_path=source, study_id=study_id)

    def _dicom_files(self, reference, fused) -> list[str]:
        for obj in (reference, fused):
            files = _flatten_paths(_meta_of(obj).get("dicom_files"))
            if files:
                return files
        return []
