"""Writing the fused volume on the MRI grid, with the MRI's exact geometry.

Output layout (``study_id`` and ``postfix`` pass through :func:`safe_name`)::

    <output_dir>/<study_id>/<study_id>_<postfix>.nii.gz      output_format="nifti"
    <output_dir>/<study_id>/<study_id>_<postfix>.nrrd        output_format="nrrd"
    <output_dir>/<study_id>/<study_id>_<postfix>_dicom/      output_format="dicom": 0001.dcm, 0002.dcm, ...

Every output is written under a hidden temporary name in the same folder (``.<name>.partial-<random>``) and renamed
into place when complete, so a crash never leaves a final-named, half-written output. An output path that is (or
contains) an input file is refused.

Formats:

- **NIfTI** (greyscale) through nibabel. When the MRI itself was a NIfTI file, the output carries its qform, sform,
  both codes, voxel sizes and units value for value (FSL/SPM write sform_code 2 beside a qform that can be
  centimetres away; nibabel/MONAI read the sform, ITK and 3D Slicer the qform: each reader then places output and MRI
  alike). Otherwise qform = sform = the MRI's RAS affine, code 1. **NRRD** through SimpleITK (LPS header), from the
  MRI's RAS affine as MONAI reads it (for a NIfTI MRI whose qform and sform disagree that is the sform).
- **Colour** (3-channel) volumes are stored as uint8 RGB that 3D Slicer shows in colour: NRRD with an RGB vector
  pixel (SimpleITK), NIfTI as RGB24 (nibabel), DICOM as an RGB Secondary Capture series (see below). Float colour
  values in [0, 1] are scaled by 255; other values are clipped to [0, 255]. NRRD is the recommended colour format.
- **DICOM**: a derived series. When the reference MRI was a DICOM series (meta ``"dicom_files"``), each source slice
  is copied and its pixel data replaced (slice found from its ImagePositionPatient through the volume's affine), so
  Patient/Study/FrameOfReference, geometry and acquisition attributes are inherited; private tags are dropped, the
  SeriesInstanceUID (one per output) and SOPInstanceUIDs are new, ImageType is DERIVED\\SECONDARY\\OTHER. Whatever
  the source's transfer syntax (explicit or implicit VR, little or big endian, compressed), the output files are
  uncompressed explicit VR little endian (1.2.840.10008.1.2.1) with a new file meta header.
  Colour data are stored as uint8 RGB with SOP class Secondary Capture (the MR IOD allows only MONOCHROME),
  keeping the Image Plane attributes (plus PatientOrientation from the row/column directions). Without DICOM source
  files a series is built from scratch on the reference grid (patient "ANONYMOUS", Study and FrameOfReference UIDs
  derived from the reference path, so repeated exports of one study share them). File names are ``0001.dcm``... in
  slice order, never taken from tags. For a left-handed grid (slice axis opposite to row x column) DICOM readers order
  the slices along row x column, i.e. they read the same voxels at the same physical positions with the slice axis
  reversed.

  **Greyscale DICOM values.** A fused image (values in [0, 1], as the network gives them: its output is clamped to
  [0, 1] in eval mode) is stored as unsigned 12-bit integers, ``stored = round(clip(v, 0, 1) * 4095)`` (BitsAllocated
  16, BitsStored 12, HighBit 11, PixelRepresentation 0), with WindowCenter 2048 / WindowWidth 4096 (the full range)
  and no rescale (the MR IOD has no Modality LUT; other source SOP classes get RescaleSlope 1, RescaleIntercept 0).
  **Mapping back: fused = stored / 4095** (error at most 0.5 / 4095); the series says so in its
  DerivationDescription and ImageComments ("fused image, stored 0..4095 = 0..1"). Values at most 1e-3 outside
  [0, 1] (float round-off) are clipped. A greyscale volume with values further outside [0, 1] is not treated as a
  fused image: it is stored as int16 with one RescaleSlope/RescaleIntercept for the whole series (integer volumes
  in the int16 range exactly, with slope 1), so that its float range is kept (error at most slope / 2); a warning
  is logged.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import torch

from fusionmamba_med.errors import FusionInputError
from fusionmamba_med.io.naming import safe_name

__all__ = [
    "FusedVolumeWriter",
    "write_summary",
    "ras_affine_to_lps_geometry",
    "OUTPUT_FORMATS",
    "OVERWRITE_POLICIES",
]

logger = logging.getLogger(__name__)

OUTPUT_FORMATS = ("nifti", "nrrd", "dicom")
OVERWRITE_POLICIES = ("skip", "overwrite", "error")
_EXT = {"nifti": ".nii.gz", "nrrd": ".nrrd", "dicom": ""}

_MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
_SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
# Greyscale fused images in DICOM: unsigned 12-bit, fused value = stored / _FUSED_MAX.
_FUSED_MAX = 4095
_FUSED_RANGE_TOL = 1e-3  # values this far outside [0, 1] are float round-off and clipped
_FUSED_MAPPING_TEXT = "fused image, stored 0..4095 = 0..1 (fused = value / 4095)"
_IMAGE_TYPE = ["DERIVED", "SECONDARY", "OTHER"]
# Binary VRs whose bytes follow the byte order (swapped when a big-endian source is rewritten little endian).
_SWAP_WIDTH = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}
# Attributes that would be wrong once the pixel data are replaced.
_DROP_KEYWORDS = (
    "LargestImagePixelValue", "SmallestImagePixelValue", "LargestPixelValueInSeries", "SmallestPixelValueInSeries",
    "PixelPaddingValue", "PixelPaddingRangeLimit", "WindowCenter", "WindowWidth", "WindowCenterWidthExplanation",
    "VOILUTFunction", "VOILUTSequence", "ModalityLUTSequence", "RescaleSlope", "RescaleIntercept", "RescaleType",
    "RealWorldValueMappingSequence", "IconImageSequence", "LossyImageCompression", "LossyImageCompressionRatio",
    "LossyImageCompressionMethod", "PlanarConfiguration", "NumberOfFrames", "PixelAspectRatio",
    "RedPaletteColorLookupTableDescriptor", "GreenPaletteColorLookupTableDescriptor",
    "BluePaletteColorLookupTableDescriptor", "RedPaletteColorLookupTableData", "GreenPaletteColorLookupTableData",
    "BluePaletteColorLookupTableData", "PaletteColorLookupTableUID", "SegmentedRedPaletteColorLookupTableData",
    "SegmentedGreenPaletteColorLookupTableData", "SegmentedBluePaletteColorLookupTableData",
    "FloatPixelData", "DoubleFloatPixelData", "ExtendedOffsetTable", "ExtendedOffsetTableLengths",
    "PixelDataProviderURL", "ReferencedPerformedProcedureStepSequence", "RequestAttributesSequence",
    "IrradiationEventUID", "AcquisitionContextSequence",
)
_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


# ---------------------------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------------------------
def ras_affine_to_lps_geometry(affine) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RAS 4x4 affine -> (spacing (3,), direction (3, 3) with unit columns, origin (3,)) in LPS (ITK/DICOM)."""
    a = _LPS @ np.asarray(affine, dtype=np.float64).reshape(4, 4)
    m = a[:3, :3]
    spacing = np.linalg.norm(m, axis=0)
    if np.any(spacing <= 0):
        raise ValueError(f"degenerate affine {a.tolist()}")
    return spacing, m / spacing, a[:3, 3].copy()


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


def _now() -> tuple[str, str]:
    now = _dt.datetime.now()
    return now.strftime("%Y%m%d"), now.strftime("%H%M%S.%f")


def _ds_str(x: float) -> str:
    from pydicom.valuerep import format_number_as_ds

    return format_number_as_ds(float(x))


def _int16_scaling(vol: np.ndarray) -> tuple[np.ndarray, str, str]:
    """Quantise a float volume to int16 with one slope/intercept: returns (stored, slope_ds, intercept_ds)."""
    vmin, vmax = float(vol.min()), float(vol.max())
    if np.all(np.mod(vol, 1) == 0) and vmin >= -32768 and vmax <= 32767:
        return vol.astype(np.int16), "1", "0"
    if vmax - vmin <= 1e-12 * max(1.0, abs(vmax)):
        slope, intercept = 1.0, vmin
    else:
        slope, intercept = (vmax - vmin) / 65534.0, 0.5 * (vmax + vmin)
    slope_s, intercept_s = _ds_str(slope), _ds_str(intercept)
    slope_f, intercept_f = float(slope_s), float(intercept_s)  # quantise with the values that are stored
    stored = np.clip(np.rint((vol.astype(np.float64) - intercept_f) / slope_f), -32768, 32767).astype(np.int16)
    return stored, slope_s, intercept_s


def _window(vol: np.ndarray, slope: float) -> tuple[str, str]:
    lo, hi = np.percentile(vol, [1.0, 99.0]) if vol.size else (0.0, 1.0)
    if not hi > lo:
        lo, hi = float(vol.min()), float(vol.max())
    width = max(float(hi - lo), float(slope), 1.0)  # DICOM: WindowWidth >= 1 (LINEAR VOI function)
    return _ds_str(0.5 * (lo + hi)), _ds_str(width)


def _is_fused_range(vol: np.ndarray) -> bool:
    """Whether a greyscale volume is a fused image in [0, 1] (up to float round-off)."""
    return not vol.size or (float(vol.min()) >= -_FUSED_RANGE_TOL and float(vol.max()) <= 1.0 + _FUSED_RANGE_TOL)


def _fused_to_uint12(vol: np.ndarray) -> np.ndarray:
    """Fused values in [0, 1] -> stored 0..4095 (uint16): ``round(clip(v, 0, 1) * 4095)``."""
    return np.rint(np.clip(vol.astype(np.float64), 0.0, 1.0) * _FUSED_MAX).astype(np.uint16)


def _patient_orientation(iop) -> list[str]:
    """PatientOrientation (row direction, column direction) from ImageOrientationPatient, e.g. ``["L", "P"]``."""
    letters = (("R", "L"), ("A", "P"), ("F", "H"))  # LPS axes: -/+ x, y, z
    out = []
    for vec in (np.asarray(iop[:3], float), np.asarray(iop[3:6], float)):
        order = np.argsort(-np.abs(vec))
        text = "".join(letters[i][int(vec[i] > 0)] for i in order if abs(vec[i]) > 1e-3)[:3]
        out.append(text or "L")
    return out


def _little_endian_copy(ds):
    """A fresh copy of a (header-only) source dataset, decoded from whatever encoding it was read in.

    Every element is decoded to its value; a big-endian source's multi-byte binary values (OW, OF, OL, OD, OV) are
    byte-swapped, its UN elements (opaque, unknown byte order) dropped. The copy has no original encoding, so it is
    written with the file meta's transfer syntax (explicit VR little endian) and never raw-copied.
    """
    import copy

    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    big_endian = ds.original_encoding[1] is False

    def convert(src) -> Dataset:
        out = Dataset()
        for elem in src:  # iterating decodes raw elements
            if elem.VR == "SQ":
                new = copy.copy(elem)
                new.value = Sequence([convert(item) for item in elem.value])
                out.add(new)
                continue
            if big_endian and elem.VR == "UN":
                continue
            new = copy.deepcopy(elem)
            width = _SWAP_WIDTH.get(str(elem.VR))
            if big_endian and width and isinstance(elem.value, (bytes, bytearray)) and len(elem.value) % width == 0:
                new.value = np.frombuffer(bytes(elem.value), dtype=f">u{width}").astype(f"<u{width}").tobytes()
            out.add(new)
        return out

    return convert(ds)


def _to_rgb_uint8(vol: np.ndarray) -> np.ndarray:
    if vol.dtype == np.uint8:
        return vol
    v = vol.astype(np.float64)
    if v.size and float(v.min()) >= 0.0 and float(v.max()) <= 1.0:
        v = v * 255.0
    return np.clip(np.rint(v), 0, 255).astype(np.uint8)


def _is_identity(a: np.ndarray) -> bool:
    return bool(np.allclose(a, np.eye(4)))


# Low-level writes, module level so that tests (and users) can patch them.
def _save_dataset(ds, path: Path) -> None:
    ds.save_as(str(path), enforce_file_format=True)


def _write_sitk(image, path: Path) -> None:
    import SimpleITK as sitk

    sitk.WriteImage(image, str(path))


def _save_nibabel(image, path: Path) -> None:
    import nibabel as nib

    nib.save(image, str(path))


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(str(folder), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _jsonable(o):
    """Recursively convert to JSON types; non-finite floats become None (strict JSON)."""
    if isinstance(o, Mapping):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, (set, frozenset)):
        return [_jsonable(v) for v in sorted(o, key=str)]
    if isinstance(o, torch.Tensor):
        o = o.detach().cpu().numpy()
    if isinstance(o, np.ndarray):
        return _jsonable(o.tolist())
    if isinstance(o, np.generic):
        o = o.item()
    if isinstance(o, bool) or o is None or isinstance(o, (int, str)):
        return o
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, os.PathLike):
        return os.fspath(o)
    return str(o)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_summary(path: str | Path, summary: Mapping[str, Any]) -> Path:
    """Write ``summary`` as JSON atomically (temporary file in the same folder, then ``os.replace``).

    Paths, numpy/torch values, sets and exceptions are converted to JSON types; NaN/Inf become ``null``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(_jsonable(summary), indent=2, allow_nan=False)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=str(path.parent))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the summary the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    return path


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
        self.output_dir = Path(output_dir)
        self.output_format = fmt
        self.overwrite = overwrite
        self.output_postfix = safe_name(output_postfix, fallback="fused")
        self.series_description = str(series_description)[:64]
        self.output_dtype = np.dtype(output_dtype)
        self.series_number = series_number

    # -- names ---------------------------------------------------------------------------------------------------
    def output_path(self, study_id: str) -> Path:
        """Final path of a study's output (a file, or a folder for DICOM)."""
        sid = safe_name(study_id)
        name = f"{sid}_{self.output_postfix}"
        if self.output_format == "dicom":
            return self.output_dir / sid / f"{name}_dicom"
        return self.output_dir / sid / f"{name}{_EXT[self.output_format]}"

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
        ext = _EXT[self.output_format]
        stem = final.name[: -len(ext)]
        tmp = final.parent / f".{stem}.partial-{uuid.uuid4().hex[:8]}{ext}"
        try:
            if self.output_format == "nifti":
                self._write_nifti(tmp, vol, affine, reference_nifti_header(reference, affine, vol.shape[1:]))
            else:
                self._write_nrrd(tmp, vol, affine)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, final)
            _fsync_dir(final.parent)
        finally:
            if tmp.exists():
                tmp.unlink()

    def _write_nifti(self, path: Path, vol: np.ndarray, affine: np.ndarray, reference_header=None) -> None:
        """NIfTI-1 on ``affine``; with the MRI's own NIfTI header, its qform, sform and both codes exactly."""
        import nibabel as nib

        if vol.shape[0] == 3:  # RGB24
            rgb = _to_rgb_uint8(vol)
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
            pixels = np.transpose(_to_rgb_uint8(vol), (3, 2, 1, 0))  # (Z, Y, X, 3)
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
        tmp = final.parent / f".{final.name}.partial-{uuid.uuid4().hex[:8]}"
        old = None
        tmp.mkdir()
        try:
            self._write_dicom(tmp, vol, affine, reference, fused, study_id)
            _fsync_dir(tmp)
            if final.exists():  # overwrite: move the old series aside, then swap
                old = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:8]}"
                os.replace(final, old)
            os.replace(tmp, final)
            _fsync_dir(final.parent)
        except BaseException:
            if old is not None and old.exists() and not final.exists():
                os.replace(old, final)
                old = None
            raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
            if old is not None and old.exists():
                shutil.rmtree(old, ignore_errors=True)

    def _dicom_files(self, reference, fused) -> list[str]:
        for obj in (reference, fused):
            files = _flatten_paths(_meta_of(obj).get("dicom_files"))
            if files:
                return files
        return []

    def _write_dicom(self, folder: Path, vol, affine, reference, fused, study_id: str) -> None:
        from pydicom.uid import generate_uid

        rgb = vol.shape[0] == 3
        slope_s = intercept_s = window = None
        if rgb:
            pixels, encoding = _to_rgb_uint8(vol), "rgb"
        elif _is_fused_range(vol[0]):
            pixels, encoding = _fused_to_uint12(vol[0])[None], "fused"
            window = (str((_FUSED_MAX + 1) // 2), str(_FUSED_MAX + 1))  # 2048 / 4096: the whole 0..4095 range
        else:
            logger.warning(
                "study '%s': greyscale values [%g, %g] are not a fused image in [0, 1]; DICOM stores them as int16 "
                "with a rescale slope/intercept, not with the 0..4095 fused mapping", study_id, float(vol.min()),
                float(vol.max()))
            stored, slope_s, intercept_s = _int16_scaling(vol[0])
            pixels, encoding = stored[None], "int16"
            window = _window(vol[0], float(slope_s))
        series_uid = generate_uid()
        content_date, content_time = _now()
        nz = vol.shape[3]
        width = max(4, len(str(nz)))
        files = self._dicom_files(reference, fused)
        common = dict(series_uid=series_uid, date=content_date, time=content_time, rgb=rgb, encoding=encoding,
                      slope=slope_s, intercept=intercept_s, window=window)
        if files:
            missing = [f for f in files if not os.path.isfile(f)]
            if missing:
                raise FusionInputError(f"{len(missing)} source DICOM files are gone (first: {missing[0]})",
                                       study=study_id, path=missing[0])
            self._derive_from_sources(folder, files, pixels, affine, common, width, study_id)
        else:
            meta = _meta_of(reference) or _meta_of(fused)
            source = (_flatten_paths(meta.get("source_path")) or _flatten_paths(meta.get("filename_or_obj")) or [""])[0]
            self._series_from_scratch(folder, pixels, affine, common, width, source, study_id)

    def _series_number(self, source_number) -> int:
        if self.series_number is not None:
            return int(self.series_number)
        try:
            n = int(source_number) + 1000
        except (TypeError, ValueError):
            n = 1001
        return n if 0 <= n < 2**31 else 1001

    def _set_pixels(self, ds, pix2d: np.ndarray, common: Mapping) -> None:
        """pix2d: (rows, cols) uint16 0..4095 (fused), int16 (other greyscale) or (rows, cols, 3) uint8."""
        for kw in _DROP_KEYWORDS:
            if kw in ds:
                delattr(ds, kw)
        ds.Rows, ds.Columns = int(pix2d.shape[0]), int(pix2d.shape[1])
        if common["rgb"]:
            ds.SamplesPerPixel = 3
            ds.PhotometricInterpretation = "RGB"
            ds.PlanarConfiguration = 0
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
            ds.PixelData = np.ascontiguousarray(pix2d, dtype=np.uint8).tobytes()
        elif common["encoding"] == "fused":
            ds.SamplesPerPixel = 1
            ds.PhotometricInterpretation = "MONOCHROME2"
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
            if str(ds.SOPClassUID) != _MR_IMAGE_STORAGE:  # e.g. CT: Modality LUT required; identity here
                ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = "1", "0", "US"
            ds.WindowCenter, ds.WindowWidth = common["window"]
            ds.WindowCenterWidthExplanation = "FUSED 0..1"
            ds.PixelData = np.ascontiguousarray(pix2d).astype("<u2").tobytes()
        else:
            ds.SamplesPerPixel = 1
            ds.PhotometricInterpretation = "MONOCHROME2"
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
            ds.RescaleSlope, ds.RescaleIntercept = common["slope"], common["intercept"]
            ds.WindowCenter, ds.WindowWidth = common["window"]
            ds.PixelData = np.ascontiguousarray(pix2d).astype("<i2").tobytes()
        ds["PixelData"].VR = "OB" if common["rgb"] else "OW"

    def _set_series(self, ds, common: Mapping, k: int, source_number) -> None:
        from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID, generate_uid

        sop_uid = generate_uid()
        if common["rgb"]:
            ds.SOPClassUID = _SECONDARY_CAPTURE
            ds.ConversionType = "WSD"
        ds.SOPInstanceUID = sop_uid
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds.SeriesInstanceUID = common["series_uid"]
        ds.SeriesNumber = self._series_number(source_number)
        ds.SeriesDescription = self.series_description
        ds.ImageType = list(_IMAGE_TYPE)
        if common["encoding"] == "fused":
            text = _FUSED_MAPPING_TEXT
        elif common["encoding"] == "rgb":
            text = "colour fused image, RGB 0..255"
        else:
            text = "greyscale values = stored * RescaleSlope + RescaleIntercept"
        ds.DerivationDescription = f"{self.series_description} (FusionMamba image fusion); {text}"[:1024]
        ds.ImageComments = text
        if common["rgb"] and "ImageOrientationPatient" in ds:  # SC: PatientOrientation is Type 2C
            ds.PatientOrientation = _patient_orientation([float(v) for v in ds.ImageOrientationPatient])
        ds.InstanceNumber = k + 1
        ds.SeriesDate = ds.ContentDate = common["date"]
        ds.SeriesTime = ds.ContentTime = common["time"]
        ds.InstanceCreationDate, ds.InstanceCreationTime = common["date"], common["time"]
        ds.BurnedInAnnotation = "NO"

    def _derive_from_sources(self, folder: Path, files: list[str], pixels, affine, common, width, study_id):
        import pydicom
        from pydicom.dataset import Dataset, FileMetaDataset
        from pydicom.sequence import Sequence

        nx, ny, nz = pixels.shape[1:]
        inv = np.linalg.inv(affine)
        slices: dict[int, Any] = {}
        iop_common = None
        for f in files:
            try:
                ds = pydicom.dcmread(f, stop_before_pixels=True)
            except Exception as err:
                raise FusionInputError(f"cannot re-read the source DICOM file ({err})", study=study_id,
                                       path=f) from err
            try:
                ipp = np.asarray([float(v) for v in ds.ImagePositionPatient])
                iop = [float(v) for v in ds.ImageOrientationPatient]
            except (AttributeError, TypeError, ValueError) as err:
                raise FusionInputError("source slice without ImagePositionPatient/ImageOrientationPatient",
                                       study=study_id, path=f) from err
            ijk = inv @ np.array([-ipp[0], -ipp[1], ipp[2], 1.0])
            k = int(round(ijk[2]))
            if np.max(np.abs(ijk[:3] - [0, 0, k])) > 0.05 or not 0 <= k < nz:
                raise FusionInputError(
                    f"source slice position {ipp.tolist()} is not on the fused volume's grid (voxel {ijk[:3]})",
                    study=study_id, path=f)
            if k in slices:
                raise FusionInputError(f"two source slices map to slice {k}", study=study_id, path=f)
            if (int(ds.Rows), int(ds.Columns)) != (ny, nx):
                raise FusionInputError(f"source slice is {ds.Rows}x{ds.Columns}, the fused slice {ny}x{nx}",
                                       study=study_id, path=f)
            if iop_common is None:
                iop_common = iop
            slices[k] = ds
        if len(slices) != nz:
            raise FusionInputError(f"the reference series has {len(slices)} slices, the fused volume {nz}",
                                   study=study_id)
        for k in range(nz):
            src = slices[k]
            src.remove_private_tags()
            # a decoded copy, written as explicit VR little endian whatever the source's transfer syntax
            ds = _little_endian_copy(src)
            source_number = src.get("SeriesNumber", None)
            src_class, src_uid = str(src.get("SOPClassUID", "")), str(src.get("SOPInstanceUID", ""))
            ds.file_meta = FileMetaDataset()  # new header: nothing of the source's (transfer syntax, implementation)
            ds.ImageOrientationPatient = [_ds_str(v) for v in iop_common]  # identical in every file
            self._set_series(ds, common, k, source_number)
            if src_class and src_uid:
                item = Dataset()
                item.ReferencedSOPClassUID = src_class
                item.ReferencedSOPInstanceUID = src_uid
                ds.SourceImageSequence = Sequence([item])
            self._set_pixels(ds, self._slice(pixels, k), common)
            _save_dataset(ds, folder / f"{k + 1:0{width}d}.dcm")

    @staticmethod
    def _slice(pixels: np.ndarray, k: int) -> np.ndarray:
        # (C, X, Y, Z) -> (rows = y, cols = x[, C])
        if pixels.shape[0] == 3:
            return np.transpose(pixels[:, :, :, k], (2, 1, 0))
        return pixels[0, :, :, k].T

    def _series_from_scratch(self, folder: Path, pixels, affine, common, width, source: str, study_id: str):
        from pydicom.dataset import Dataset, FileMetaDataset
        from pydicom.uid import generate_uid

        spacing, direction, origin = ras_affine_to_lps_geometry(affine)
        lps = _LPS @ affine
        entropy = [f"fusionmamba:{os.path.abspath(source)}"] if source else None
        study_uid = generate_uid(entropy_srcs=[*entropy, "study"]) if entropy else generate_uid()
        for_uid = generate_uid(entropy_srcs=[*entropy, "frame-of-reference"]) if entropy else generate_uid()
        nz = pixels.shape[3]
        iop = [_ds_str(v) for v in (*direction[:, 0], *direction[:, 1])]
        for k in range(nz):
            ds = Dataset()
            ds.file_meta = FileMetaDataset()
            ds.SOPClassUID = _MR_IMAGE_STORAGE
            ds.SpecificCharacterSet = "ISO_IR 100"
            ds.PatientName = "ANONYMOUS"
            ds.PatientID = "ANONYMOUS"
            ds.PatientBirthDate = ""
            ds.PatientSex = ""
            ds.StudyInstanceUID = study_uid
            ds.StudyDate, ds.StudyTime = common["date"], common["time"]
            ds.StudyID = "1"
            ds.AccessionNumber = ""
            ds.ReferringPhysicianName = ""
            ds.StudyDescription = "FusionMamba"
            ds.Modality = "MR"
            ds.Manufacturer = "FusionMamba"
            ds.FrameOfReferenceUID = for_uid
            ds.PositionReferenceIndicator = ""
            if not common["rgb"]:  # MR Image module (an RGB series is a Secondary Capture)
                ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions, ds.MRAcquisitionType = "RM", "NONE", "", "3D"
                ds.EchoTime = ds.RepetitionTime = ds.EchoTrainLength = ""
            ds.PatientPosition = ""
            ds.Laterality = ""  # Type 2C (paired body part); unknown here
            ipp = lps @ np.array([0.0, 0.0, float(k), 1.0])
            ds.ImagePositionPatient = [_ds_str(v) for v in ipp[:3]]
            ds.ImageOrientationPatient = iop
            ds.PixelSpacing = [_ds_str(spacing[1]), _ds_str(spacing[0])]  # row spacing (y), column spacing (x)
            ds.SliceThickness = _ds_str(spacing[2])
            ds.SpacingBetweenSlices = _ds_str(spacing[2])
            ds.SliceLocation = _ds_str(float(np.dot(ipp[:3], np.cross(direction[:, 0], direction[:, 1]))))
            self._set_series(ds, common, k, None)
            self._set_pixels(ds, self._slice(pixels, k), common)
            _save_dataset(ds, folder / f"{k + 1:0{width}d}.dcm")
