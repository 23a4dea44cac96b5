"""Reading DICOM series: listing the series of a folder, choosing one, validating its headers and reading its voxels
with ITK/GDCM, exactly as a trusted converter (dcm2niix) places and scales them.

- **Geometry**: slices must share orientation and size and sit at distinct positions stacked along the slice normal
  (no gantry tilt), with even spacing (more than ``SLICE_SPACING_TOLERANCE`` deviation is refused: the affine that
  ITK/MONAI build from the first slices would be wrong for the rest). A one-slice series takes its slice spacing
  from SpacingBetweenSlices, else SliceThickness (as dcm2niix).
- **Values**: every slice keeps its own ``stored * RescaleSlope + RescaleIntercept`` (PET stores a float slope per
  slice; ITK's series reader would cast all slices to the first file's pixel type).
- **Siemens mosaics** (ImageType MOSAIC): one file is unpacked to its 3D grid from its CSA header; a series of
  several mosaic files is 4D and refused.
- **Enhanced multi-frame** (one file with NumberOfFrames > 1 and a PerFrameFunctionalGroupsSequence: Enhanced
  MR/CT/PET, e.g. Siemens XA): read as one 3D volume. Per frame, ImagePositionPatient (PlanePositionSequence),
  ImageOrientationPatient (PlaneOrientationSequence), PixelSpacing (PixelMeasuresSequence) and the rescale
  (PixelValueTransformationSequence) come from its PerFrameFunctionalGroupsSequence item, else the
  SharedFunctionalGroupsSequence; the frames pass the classic checks above, are sorted along the normal and keep
  their own rescale; the affine takes the measured frame step. Meta ``multiframe_frames``: the number of frames.
  Refused: frames at one position (multi-echo, diffusion, dynamics in one file: 4D), a series of several enhanced
  files (one volume each: 4D), multi-frame files without per-frame functional groups.
- **Refused, saying why**: 4D / multi-echo series, colour images, mixed orientations, non-image objects (RT Dose,
  SEG, SR ...), truncated or damaged files (named); pixel data that do not match their pixel description
  (:mod:`fusionmamba_med.io.size_checks`, before GDCM decodes), invalid PixelSpacing or rescale, MONOCHROME1, and
  series that ITK/GDCM places elsewhere than their positions say.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from monai.data import ITKReader

from fusionmamba_med.errors import FusionInputError
from fusionmamba_med.io.geometry import lps_to_ras
from fusionmamba_med.io.size_checks import dicom_pixel_problem

__all__ = [
    "SLICE_SPACING_TOLERANCE",
    "DicomSeriesReader",
    "DicomStack",
    "DEFAULT_MAX_VOXELS",
    "dicom_header",
    "holds_whole_volume",
    "check_dicom_series",
    "choose_series",
    "list_dicom_series",
    "read_dicom_series",
]

logger = logging.getLogger(__name__)

#: default refusal threshold: 512 x 512 x 2000 voxels.
DEFAULT_MAX_VOXELS = 512 * 512 * 2000
#: relative deviation of DICOM slice gaps from their median that is refused.
SLICE_SPACING_TOLERANCE = 0.01

_PIXEL_DATA = 0x7FE00010
_DICOMDIR_UID = "1.2.840.10008.1.3.10"


# ---------------------------------------------------------------------------------------------------------------------
# DICOM series handling
# ---------------------------------------------------------------------------------------------------------------------
def _pydicom():
    import pydicom

    return pydicom


def _looks_like_dicom(path: Path) -> bool:
    if path.suffix.lower() in (".dcm", ".dicom", ".ima"):
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def _read_header(path: str | Path, study: str | None):
    """Header of one DICOM file, pixel data deferred (not read). Errors name the file."""
    pydicom = _pydicom()
    try:
        return pydicom.dcmread(str(path), defer_size=256)
    except Exception as err:  # pydicom raises many types for broken files
        raise FusionInputError(f"unreadable or truncated DICOM file ({type(err).__name__}: {err})",
                               study=study, path=path) from err


def dicom_header(path: str | Path, study: str | None):
    """Header of one DICOM file without its pixel data; an unreadable file raises naming it."""
    pydicom = _pydicom()
    try:
        return pydicom.dcmread(str(path), stop_before_pixels=True)
    except Exception as err:
        raise FusionInputError(f"unreadable or truncated DICOM file ({type(err).__name__}: {err})",
                               study=study, path=path) from err


def _gdcm_series_ids(folder: Path, study: str | None) -> list[str]:
    import SimpleITK as sitk

    try:
        return list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))
    except Exception as err:
        # GDCM gives up on some non-image objects (e.g. a one-frame RT Dose) with an internal error text: say what
        # the file is instead, or at least which file made the scan fail.
        for entry in sorted(folder.iterdir()):
            if entry.is_file() and not entry.name.startswith(".") and _looks_like_dicom(entry):
                _refuse_non_image(dicom_header(entry, study), entry, study)
        cause = str(err).strip().splitlines()[-1][:200] if str(err).strip() else type(err).__name__
        raise FusionInputError(f"GDCM cannot scan the DICOM folder for image series ({cause})",
                               study=study, path=folder) from err


def _pixel_data_problem(ds, path: str | Path) -> str | None:
    """Why the pixel data of a header read with deferred values (:func:`_read_header`) cannot be read, or None: absent,
    cut by the end of the file, shorter than the pixel description declares, or an invalid pixel description
    (:func:`fusionmamba_med.io.size_checks.dicom_pixel_problem`)."""
    return dicom_pixel_problem(ds, path)


def _gdcm_series_files(folder: Path, uid: str) -> list[str]:
    import SimpleITK as sitk

    return list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid))


def list_dicom_series(folder: str | Path, study: str | None = None) -> list[dict]:
    """The DICOM series in ``folder``: ``[{"uid", "description", "number", "files"}]`` (files unsorted).

    Raises :class:`FusionInputError` for a folder without any DICOM series (naming the folder) and for files that
    look like DICOM but cannot be parsed (naming the file).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FusionInputError("the DICOM series folder does not exist", study=study, path=folder)
    if not any(e.is_file() and not e.name.startswith(".") for e in folder.iterdir()):
        raise FusionInputError("no DICOM series found: the folder is empty", study=study, path=folder)
    series = []
    grouped: set[str] = set()
    for uid in _gdcm_series_ids(folder, study):
        files = _gdcm_series_files(folder, uid)
        grouped.update(os.path.abspath(f) for f in files)
        desc, number = "", None
        if files:
            ds = dicom_header(files[0], study)
            desc = str(ds.get("SeriesDescription", "") or "")
            number = ds.get("SeriesNumber", None)
        series.append({"uid": uid, "description": desc, "number": number, "files": files})
    # Files GDCM silently skipped: report those that look like DICOM but do not parse (truncated headers etc.) or
    # that belong to one of the series (a slice would silently go missing).
    uids = {s["uid"] for s in series}
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or not entry.is_file() or os.path.abspath(entry) in grouped:
            continue
        if not _looks_like_dicom(entry):
            continue
        ds = _read_header(entry, study)  # raises, naming the file, when it does not parse
        sop_class = str(getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", "") or "")
        if sop_class == _DICOMDIR_UID:
            continue
        _refuse_non_image(ds, entry, study)
        problem = _pixel_data_problem(ds, entry)
        if problem is not None and problem.startswith(("truncated", "invalid pixel")):
            raise FusionInputError(problem, study=study, path=entry)
        uid = str(ds.get("SeriesInstanceUID", "") or "")
        if uid and uid not in uids and any(u.startswith(uid) for u in uids):  # the header was cut mid-value
            uid = next(u for u in uids if u.startswith(uid))
        if not uid or uid in uids:
            raise FusionInputError(
                "damaged or truncated DICOM file: "
                + (f"it belongs to series {uid} but could not be read with it" if uid
                   else "its header is incomplete (no SeriesInstanceUID)"),
                study=study, path=entry)
    if not series:
        dicom_like = [e for e in sorted(folder.iterdir())
                      if e.is_file() and not e.name.startswith(".") and _looks_like_dicom(e)]
        for entry in dicom_like:
            ds = _read_header(entry, study)
            if str(getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", "") or "") == _DICOMDIR_UID:
                continue
            problem = _pixel_data_problem(ds, entry) or "GDCM does not read it as an image"
            raise FusionInputError(f"no DICOM image series found: the DICOM file cannot serve ({problem})",
                                   study=study, path=entry)
        n = sum(1 for e in folder.iterdir() if e.is_file() and not e.name.startswith("."))
        what = "the folder is empty" if n == 0 else f"none of its {n} files is a DICOM image"
        raise FusionInputError(f"no DICOM series found: {what}", study=study, path=folder)
    return series


def _describe(series: Sequence[Mapping]) -> str:
    return "; ".join(
        f"{s['uid']} ('{s['description']}', {len(s['files'])} files)" for s in series
    )


def choose_series(series: list[dict], series_uid: str | None, folder: Path, study: str | None) -> dict:
    if series_uid:
        wanted = str(series_uid).strip()
        exact = [s for s in series if s["uid"] == wanted]
        if exact:
            return exact[0]
        by_desc = [s for s in series if s["description"].strip().lower() == wanted.lower()]
        if len(by_desc) == 1:
            return by_desc[0]
        why = "matches several series descriptions" if by_desc else "matches no SeriesInstanceUID or description"
        raise FusionInputError(f"series '{wanted}' {why}; available series: {_describe(series)}",
                               study=study, path=folder)
    if len(series) > 1:
        raise FusionInputError(
            f"the folder holds {len(series)} DICOM series; choose one with a series UID "
            f"(e.g. the datalist key '<modality>_series_uid'). Available series: {_describe(series)}",
            study=study, path=folder,
        )
    return series[0]


def _floats(value, n: int) -> np.ndarray | None:
    try:
        arr = np.asarray([float(v) for v in value], dtype=float)
    except (TypeError, ValueError):
        return None
    return arr if arr.shape == (n,) and np.all(np.isfinite(arr)) else None


@dataclass
class DicomStack:
    """A validated classic DICOM series: ``files`` sorted along the slice normal (index k = slice k), each slice's
    modality rescale ``(slope, intercept)``, whether it is one Siemens mosaic file, the slice spacing that a
    one-slice series takes from its header (``None`` otherwise), and for one enhanced multi-frame file its frames'
    geometry (``multiframe``; then ``rescale`` is per frame, in slice order)."""

    files: list[str]
    rescale: list[tuple[float, float]]
    mosaic: bool = False
    single_slice_spacing: float | None = None
    header_affine: np.ndarray | None = None
    multiframe: "MultiFrameGeometry | None" = None

    @property
    def uniform_rescale(self) -> bool:
        """True when every slice has the same slope and intercept (then ITK's series reader applies them exactly)."""
        return len(set(self.rescale)) <= 1


#: largest |RescaleSlope| / |RescaleIntercept| accepted: stored values times it must stay far inside float32.
MAX_RESCALE = 1e20


def _rescale_of(ds) -> tuple[float, float]:
    """(RescaleSlope, RescaleIntercept) of one slice; absent -> (1, 0), slope 0 -> 1 (as dcm2niix); a value that is
    not a number (or not finite, or beyond ``MAX_RESCALE``) raises ``ValueError`` (see :func:`_checked_rescale`)."""
    slope = ds.get("RescaleSlope", None)
    intercept = ds.get("RescaleIntercept", None)
    slope = 1.0 if slope in (None, "") else float(slope)
    intercept = 0.0 if intercept in (None, "") else float(intercept)
    if not (math.isfinite(slope) and math.isfinite(intercept)) or max(abs(slope), abs(intercept)) > MAX_RESCALE:
        raise ValueError(f"RescaleSlope {slope:g} / RescaleIntercept {intercept:g} not finite or beyond "
                         f"{MAX_RESCALE:g}")
    return (1.0 if slope == 0.0 else slope), intercept


def _checked_rescale(ds, path: str | Path, study: str | None) -> tuple[float, float]:
    """:func:`_rescale_of`, refusing (naming ``path``) a rescale that is not a finite number within ``MAX_RESCALE``."""
    try:
        return _rescale_of(ds)
    except (TypeError, ValueError) as err:
        raise FusionInputError(f"invalid modality rescale: {err}", study=study, path=path) from err


def _is_mosaic(ds) -> bool:
    return any(str(v).strip().upper() == "MOSAIC" for v in (ds.get("ImageType", None) or []))


def holds_whole_volume(ds) -> bool:
    """Whether one DICOM file (its header ``ds``) holds a whole 3D volume, as this module reads it: a Siemens mosaic or
    an enhanced multi-frame image (so a series made from it has no source file per slice)."""
    return _is_mosaic(ds) or _is_enhanced(ds)


def _one_slice_spacing(ds) -> float | None:
    """Slice spacing of a one-slice series: SpacingBetweenSlices, else SliceThickness (as dcm2niix)."""
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        value = ds.get(keyword, None)
        try:
            value = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(value) and value > 0:
            return value
    return None


#: SOP classes / modalities that hold no image of the patient that fusion could use, with what they are.
_NON_IMAGE_MODALITIES = {
    "RTDOSE": "an RT Dose object (a radiotherapy dose grid computed by a planning system)",
    "RTSTRUCT": "an RT Structure Set (contours, no image)",
    "RTPLAN": "an RT Plan (treatment parameters, no image)",
    "RTRECORD": "an RT treatment record (no image)",
    "SEG": "a segmentation object (labels, not an acquired image)",
    "SR": "a structured report (no image)",
    "PR": "a presentation state (display settings, no image)",
    "REG": "a spatial registration object (no image)",
    "KO": "a key object selection (no image)",
}


def _refuse_non_image(ds, path: str | Path, study: str | None) -> None:
    """Refuse DICOM objects that are not acquired images of the patient (RT Dose, SEG, SR ...), saying what they are."""
    modality = str(ds.get("Modality", "") or "").strip().upper()
    if modality in _NON_IMAGE_MODALITIES:
        raise FusionInputError(
            f"the DICOM file is {_NON_IMAGE_MODALITIES[modality]} (Modality {modality}), not an MRI, CT, PET or SPECT "
            "image series, so it cannot serve as a fusion input; point the study to the image series instead",
            study=study, path=path)


def _stack_order(positions: Sequence[np.ndarray], iops: Sequence[np.ndarray], names: Sequence[str], label: str,
                 path: str | Path, study: str | None, unit: str = "files",
                 four_d_hint: str = "split it into one series per frame") -> np.ndarray:
    """Validate the geometry of the images of one volume (slice files of a classic series, or the frames of an
    enhanced multi-frame file) and return their order along the slice normal.

    Refused (naming ``path``): mixed or non-orthonormal orientations, several images at one position (4D: ``names``
    say which), uneven spacing beyond ``SLICE_SPACING_TOLERANCE``, and stacks not along the normal (tilt, shear).
    """
    iops_arr = np.asarray(iops)
    if np.max(np.abs(iops_arr - iops_arr[0])) > 1e-3:
        raise FusionInputError(f"{label} mixes slice orientations (ImageOrientationPatient differs between "
                               f"{unit})", study=study, path=path)
    row, col = iops_arr[0, :3], iops_arr[0, 3:]
    normal = np.cross(row, col)
    if not np.isclose(np.linalg.norm(normal), 1.0, atol=1e-3):
        raise FusionInputError(f"{label} has non-orthonormal ImageOrientationPatient {iops_arr[0].tolist()}",
                               study=study, path=path)
    pos = np.asarray(positions)
    proj = pos @ normal
    order = np.argsort(proj, kind="stable")
    pos, proj = pos[order], proj[order]
    if len(order) > 1:
        gaps = np.diff(proj)
        if np.min(gaps) < 1e-3:
            k = int(np.argmin(gaps))
            raise FusionInputError(
                f"{label} has several images at the same position (e.g. '{names[order[k]]}' and "
                f"'{names[order[k + 1]]}'): a 4D / multi-echo / multi-phase series is not a 3D volume; {four_d_hint}",
                study=study, path=path)
        med = float(np.median(gaps))
        dev = float(np.max(np.abs(gaps - med)) / med)
        if dev > SLICE_SPACING_TOLERANCE:
            raise FusionInputError(
                f"uneven slice spacing in {label}: gaps from {gaps.min():.4g} to {gaps.max():.4g} mm (median "
                f"{med:.4g} mm, {100 * dev:.1f}% deviation > {100 * SLICE_SPACING_TOLERANCE:g}%); missing slices? "
                "The volume affine would be wrong", study=study, path=path)
        d = pos - pos[0]
        along = d @ normal
        inplane = np.linalg.norm(d - np.outer(along, normal), axis=1)
        if np.any(inplane > 0.01 * np.abs(along) + 1e-3):
            raise FusionInputError(
                f"{label}: slices are not stacked along the slice normal (gantry tilt or sheared stack, up to "
                f"{inplane.max():.3g} mm off); resample it to an orthogonal grid first", study=study, path=path)
    return order


def _refuse_colour(ds, path: str | Path, study: str | None) -> None:
    """Refuse a colour image (SamplesPerPixel != 1, or a colour PhotometricInterpretation): fusion inputs are scalar
    volumes. MONOCHROME1 (inverted greyscale, radiography) is refused too: decoders differ on inverting it."""
    spp = _int_or_zero(ds, "SamplesPerPixel") or 1
    photometric = str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
    if spp != 1 or photometric not in ("", "MONOCHROME2", "MONOCHROME1"):
        raise FusionInputError(
            f"colour DICOM (SamplesPerPixel={spp}, PhotometricInterpretation="
            f"{ds.get('PhotometricInterpretation', '?')}) is not a scalar volume; fusion inputs must be greyscale",
            study=study, path=path)
    if photometric == "MONOCHROME1":
        raise FusionInputError(
            "PhotometricInterpretation MONOCHROME1 (inverted greyscale, as radiographs store it) is not an MR, CT, PET "
            "or SPECT volume, and decoders differ on whether to invert it; convert it to MONOCHROME2 first",
            study=study, path=path)


def _refuse_several_volume_files(files: Sequence[str], label: str, kind: str, folder: Path,
                                 study: str | None) -> None:
    """Each mosaic or enhanced multi-frame file holds one whole 3D volume: a series of several is 4D, refused."""
    if len(files) > 1:
        raise FusionInputError(
            f"{label} is a {kind} series of {len(files)} files: each {kind} file holds one whole 3D volume, so the "
            "series is 4D (a time series, echoes or repeated acquisitions); load one file by giving its path in its "
            "own folder, or convert the series (e.g. dcm2niix) and pick one volume", study=study, path=folder)


def _check_one_file_size(path: str, label: str, what: str, study: str | None, max_voxels: int) -> None:
    """Refuse, before anything decodes it, a file holding a whole volume (mosaic) whose pixel data exceed
    ``max_voxels`` or are shorter than its pixel description declares."""
    ds = _read_header(path, study)
    _refuse_colour(ds, path, study)
    rows, cols = _int_or_zero(ds, "Rows"), _int_or_zero(ds, "Columns")
    if rows * cols > max_voxels:
        raise FusionInputError(f"{label} is too large: a {what} of {rows} x {cols} = {rows * cols} pixels > "
                               f"max_voxels={max_voxels}", study=study, path=path)
    problem = _pixel_data_problem(ds, path)
    if problem is not None:
        raise FusionInputError(f"the {what} cannot be read: {problem}", study=study, path=path)


def _int_or_zero(ds, keyword: str) -> int:
    """An integer tag (Rows, Columns, NumberOfFrames), 0 when absent or not a finite integer."""
    try:
        value = float(ds.get(keyword, 0) or 0)
    except (TypeError, ValueError):
        return 0
    return int(value) if math.isfinite(value) and value >= 0 else 0


def check_dicom_series(files: list[str], series: Mapping, folder: Path, study: str | None,
                        max_voxels: int) -> DicomStack:
    """Validate the headers of a series; its files sorted along the slice normal, with their rescale."""
    label = f"series {series['uid']} ('{series['description']}')"
    if not files:
        raise FusionInputError(f"{label} has no files", study=study, path=folder)
    # Size check from the first header only, before anything else is read.
    first = dicom_header(files[0], study)
    if _is_mosaic(first):
        _refuse_several_volume_files(files, label, "Siemens mosaic", folder, study)
        _check_one_file_size(files[0], label, "mosaic", study, max_voxels)
        return DicomStack(files=[os.path.abspath(files[0])], rescale=[_checked_rescale(first, files[0], study)],
                          mosaic=True)
    _refuse_non_image(first, files[0], study)
    if _is_enhanced(first):
        _refuse_several_volume_files(files, label, "enhanced multi-frame", folder, study)
        return _check_multiframe(files[0], label, study, max_voxels)
    rows, cols = _int_or_zero(first, "Rows"), _int_or_zero(first, "Columns")
    frames = _int_or_zero(first, "NumberOfFrames")
    nvox = len(files) * rows * cols * max(frames, 1)
    if nvox > max_voxels:
        raise FusionInputError(
            f"{label} is too large: {len(files)} files x {rows} x {cols} = {nvox} voxels > max_voxels={max_voxels}",
            study=study, path=folder,
        )
    positions, iops, rescale, spacings, problems = [], [], [], [], []
    for f in files:
        ds = _read_header(f, study)
        rescale.append(_checked_rescale(ds, f, study))
        frames = _int_or_zero(ds, "NumberOfFrames")
        if frames > 1:
            why = ("in a series of several files" if _is_enhanced(ds)
                   else "without per-frame functional groups (PerFrameFunctionalGroupsSequence)")
            raise FusionInputError(
                f"multi-frame DICOM with {frames} frames {why} is not supported; only a single enhanced multi-frame "
                "file (Enhanced MR/CT/PET) is read; convert it to a classic single-frame series first",
                study=study, path=f)
        _refuse_colour(ds, f, study)
        if (_int_or_zero(ds, "Rows"), _int_or_zero(ds, "Columns")) != (rows, cols):
            raise FusionInputError(f"slice size {ds.get('Rows')}x{ds.get('Columns')} differs from the series' "
                                   f"{rows}x{cols} in {label}", study=study, path=f)
        ipp = _floats(ds.get("ImagePositionPatient", None) or [], 3)
        iop = _floats(ds.get("ImageOrientationPatient", None) or [], 6)
        if ipp is None or iop is None:
            raise FusionInputError("the slice has no valid ImagePositionPatient/ImageOrientationPatient, so its "
                                   "position is unknown", study=study, path=f)
        spacing = _floats(ds.get("PixelSpacing", None) or [], 2)
        if spacing is None or np.any(spacing <= 0):
            raise FusionInputError(f"the slice has no valid PixelSpacing ({ds.get('PixelSpacing', 'absent')}), so its "
                                   "pixel size is unknown", study=study, path=f)
        problems.append(_pixel_data_problem(ds, f))
        if spacings and np.max(np.abs(spacing - spacings[0])) > 1e-4 * max(1.0, float(np.max(spacings[0]))):
            raise FusionInputError(f"PixelSpacing {spacing.tolist()} differs from the series' "
                                   f"{spacings[0].tolist()} in {label}", study=study, path=f)
        positions.append(ipp)
        iops.append(iop)
        spacings.append(spacing)
    for f, problem in zip(files, problems):  # the series' structure first (4D, colour ...), then its pixel data
        if problem is not None:
            raise FusionInputError(f"the slice cannot be read: {problem}", study=study, path=f)
    order = _stack_order(positions, iops, [Path(f).name for f in files], label, folder, study)
    files = [files[i] for i in order]
    rescale = [rescale[i] for i in order]
    spacing = _one_slice_spacing(first) if len(files) == 1 else None
    header = _header_affine([positions[i] for i in order], iops[0], spacings[0])
    return DicomStack(files=[os.path.abspath(f) for f in files], rescale=rescale, single_slice_spacing=spacing,
                      header_affine=header)


def _header_affine(positions: Sequence[np.ndarray], iop: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """RAS affine of a classic series from its headers alone (positions sorted along the normal, one
    ImageOrientationPatient, PixelSpacing (row, column)), the slice step the mean gap (1 for one slice), as
    dcm2niix builds it: voxel (column x, row y, slice)."""
    row, col = np.asarray(iop[:3]), np.asarray(iop[3:])
    normal = np.cross(row, col)
    pos = np.asarray(positions)
    step = float((pos[-1] - pos[0]) @ normal) / (len(pos) - 1) if len(pos) > 1 else 1.0
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1], lps[:3, 2], lps[:3, 3] = row * spacing[1], col * spacing[0], normal * step, pos[0]
    return lps_to_ras(lps)


def _check_read_geometry(img, stack: DicomStack, study: str | None, folder: Path) -> None:
    """Refuse a series that ITK/GDCM placed elsewhere than its ImagePositionPatient / ImageOrientationPatient /
    PixelSpacing say (GDCM also reads other tags, e.g. a negative or non-finite SpacingBetweenSlices flips or stretches
    its slice axis): the grid corners must agree within 0.01 mm plus the spacing tolerance of the stack."""
    if stack.header_affine is None:
        return
    ours = np.asarray(img.affine, dtype=np.float64)
    shape = np.asarray(img.shape[1:4], dtype=np.float64)
    corners = np.array([[i, j, k, 1.0] for i in (0, 1) for j in (0, 1) for k in (0, 1)]).T
    corners[:3] *= (shape[:, None] - 1)
    header = stack.header_affine.copy()
    if len(stack.files) == 1:  # one slice: ITK's slice step is replaced afterwards; compare the plane only
        header[:3, 2] = ours[:3, 2]
    gap = float(np.abs((ours - header) @ corners)[:3].max())
    extent = float(np.abs((header @ corners)[:3] - header[:3, 3:4]).max())
    if not np.isfinite(gap) or gap > 0.01 + SLICE_SPACING_TOLERANCE * extent:
        raise FusionInputError(
            f"ITK/GDCM places the series up to {gap:.3g} mm away from where its ImagePositionPatient / "
            "ImageOrientationPatient / PixelSpacing put it (another tag, e.g. an invalid SpacingBetweenSlices, "
            "changed its reading), so its voxel-to-world mapping is ambiguous", study=study, path=folder)


def _read_slices_rescaled(stack: DicomStack, img, study: str | None):
    """Replace the voxels of ``img`` (1, X, Y, Z), read by ITK as one series, by each slice's own
    ``stored * slope + intercept`` (float64 arithmetic, stored as float32).

    ITK's series reader takes the pixel type and the rescale of the first file for the whole series, which casts
    or wraps the values of slices with another slope (PET stores a different float slope on every slice).
    Each file is decoded by GDCM on its own (every transfer syntax ITK reads), as pydicom and dcm2niix do.
    """
    import SimpleITK as sitk

    data = np.empty(tuple(img.shape), dtype=np.float32)
    for k, (name, (slope, intercept)) in enumerate(zip(stack.files, stack.rescale)):
        reader = sitk.ImageFileReader()
        reader.SetFileName(name)
        reader.SetImageIO("GDCMImageIO")
        reader.SetOutputPixelType(sitk.sitkFloat64)
        try:
            one = reader.Execute()
        except Exception as err:
            raise FusionInputError(f"cannot decode the slice ({str(err).strip().splitlines()[-1][:300]})",
                                   study=study, path=name) from err
        plane = sitk.GetArrayFromImage(one).reshape(-1, one.GetWidth())  # (rows=y, cols=x), rescale applied by GDCM
        if plane.shape != tuple(img.shape[2:0:-1]):
            raise FusionInputError(f"slice of {plane.shape[1]}x{plane.shape[0]} pixels in a series of "
                                   f"{img.shape[1]}x{img.shape[2]}", study=study, path=name)
        data[0, :, :, k] = plane.T
    out = img.clone()  # keeps the meta and affine of the series read
    out.data = torch.from_numpy(data)
    return out


def _check_volume_affine(ras: np.ndarray, what: str, path: str | Path, study: str | None) -> None:
    """Refuse a volume whose voxel-to-world mapping, built from its header (PixelSpacing, orientation, slice normal),
    is not finite or degenerate (a voxel axis of length 0 or axes in one plane)."""
    ras = np.asarray(ras, dtype=np.float64)
    sizes = np.linalg.norm(ras[:3, :3], axis=0) if np.isfinite(ras).all() else np.zeros(3)
    if not np.all(sizes > 1e-6) or abs(float(np.linalg.det(ras[:3, :3]))) < 1e-6 * float(np.prod(sizes)):
        raise FusionInputError(f"the {what}'s voxel-to-world mapping from its header (PixelSpacing, "
                               "ImageOrientationPatient, slice normal) is not finite or degenerate, so its voxels "
                               "cannot be placed", study=study, path=path)


def _mosaic_volume(path: str, study: str | None, max_voxels: int = DEFAULT_MAX_VOXELS):
    """Unpack one Siemens mosaic file (ImageType MOSAIC: one DICOM image tiling a whole 3D volume) into a
    ``MetaTensor`` (1, X, Y, Z) float32 with its RAS affine.

    NumberOfImagesInMosaic and the slice normal come from the Siemens CSA header through nibabel's DICOM wrapper
    (as dcm2niix reads them); the tiled image is decoded by GDCM, so every transfer syntax ITK reads works.
    """
    import SimpleITK as sitk
    from monai.data import MetaTensor
    from nibabel.nicom import dicomwrappers

    ds = dicom_header(path, study)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # nibabel calls its DICOM readers experimental
            wrapper = dicomwrappers.wrapper_from_data(ds)
            if not isinstance(wrapper, dicomwrappers.MosaicWrapper):
                raise ValueError("no NumberOfImagesInMosaic in its Siemens CSA header")
            n = int(wrapper.n_mosaic)
            lps = np.asarray(wrapper.affine, dtype=np.float64)  # (row, column, slice) indices -> LPS
            lps = lps[:, [1, 0, 2, 3]]  # our voxel axes: (column x, row y, slice), as ITK reads other series
    except Exception as err:
        raise FusionInputError(f"Siemens mosaic (ImageType MOSAIC) whose layout cannot be read ({err}); convert it "
                               "with dcm2niix first", study=study, path=path) from err
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.SetImageIO("GDCMImageIO")
    reader.SetOutputPixelType(sitk.sitkFloat64)
    try:
        tiled = sitk.GetArrayFromImage(reader.Execute())
    except Exception as err:
        raise FusionInputError(f"cannot decode the mosaic ({str(err).strip().splitlines()[-1][:300]})",
                               study=study, path=path) from err
    tiled = tiled.reshape(-1, tiled.shape[-1])  # (rows, cols)
    per_side = int(math.ceil(math.sqrt(n)))
    if tiled.shape[0] % per_side or tiled.shape[1] % per_side:
        raise FusionInputError(f"mosaic of {tiled.shape[1]}x{tiled.shape[0]} pixels cannot hold {per_side}x{per_side} "
                               f"tiles of {n} images", study=study, path=path)
    ny, nx = tiled.shape[0] // per_side, tiled.shape[1] // per_side
    if n < 1 or nx * ny * n > max_voxels:
        raise FusionInputError(f"mosaic of {n} images of {nx} x {ny} pixels: {nx * ny * n} voxels, outside 1.."
                               f"max_voxels={max_voxels}", study=study, path=path)
    vol = np.empty((1, nx, ny, n), dtype=np.float32)
    for k in range(n):
        r, c = divmod(k, per_side)
        vol[0, :, :, k] = tiled[r * ny:(r + 1) * ny, c * nx:(c + 1) * nx].T
    ras = lps_to_ras(lps)
    _check_volume_affine(ras, "mosaic", path, study)
    img = MetaTensor(torch.from_numpy(vol), affine=torch.as_tensor(ras, dtype=torch.float64))
    img.meta.update({"spatial_shape": np.asarray(vol.shape[1:]), "original_affine": ras.copy(), "space": "RAS",
                     "filename_or_obj": str(path), "mosaic_images": n})
    return img


# ---------------------------------------------------------------------------------------------------------------------
# Enhanced multi-frame DICOM (Enhanced MR/CT/PET Image Storage): one file holding a whole 3D volume
# ---------------------------------------------------------------------------------------------------------------------
def _is_enhanced(ds) -> bool:
    """One file holding several frames described by per-frame functional groups (an enhanced multi-frame image)."""
    try:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        return False
    return frames > 1 and "PerFrameFunctionalGroupsSequence" in ds


def _functional(frame_item, shared_item, sequence: str, keyword: str):
    """``keyword`` of the first item of functional group ``sequence``: from the frame's PerFrameFunctionalGroups item,
    else from the SharedFunctionalGroups item (the standard puts each group in exactly one of them); None if absent."""
    for group in (frame_item, shared_item):
        if group is None:
            continue
        seq = group.get(sequence, None)
        if seq:
            value = seq[0].get(keyword, None)
            if value not in (None, ""):
                return value
    return None


@dataclass
class MultiFrameGeometry:
    """The validated frames of one enhanced multi-frame file: ``order[k]`` = the (0-based) frame at slice k along the
    normal, and the RAS affine of the sorted volume (voxel (column x, row y, slice))."""

    frames: int
    order: list[int]
    affine: np.ndarray


def _check_multiframe(path: str, label: str, study: str | None, max_voxels: int) -> DicomStack:
    """Validate one enhanced multi-frame file as a 3D volume: per frame, ImagePositionPatient (PlanePosition),
    ImageOrientationPatient (PlaneOrientation), PixelSpacing (PixelMeasures) and rescale (PixelValueTransformation),
    each from the frame's PerFrameFunctionalGroupsSequence item, else the SharedFunctionalGroupsSequence; the same
    checks as a classic series (one orientation, distinct positions evenly stacked along the normal, no tilt).
    Frames at one position (multi-echo, diffusion, dynamics in one file) are 4D and refused, naming the file."""
    ds = _read_header(path, study)
    frames = _int_or_zero(ds, "NumberOfFrames")
    rows, cols = _int_or_zero(ds, "Rows"), _int_or_zero(ds, "Columns")
    nvox = frames * rows * cols
    if nvox > max_voxels:
        raise FusionInputError(f"{label} is too large: {frames} frames x {rows} x {cols} = {nvox} voxels > "
                               f"max_voxels={max_voxels}", study=study, path=path)
    _refuse_colour(ds, path, study)
    problem = _pixel_data_problem(ds, path)
    if problem is not None:
        raise FusionInputError(f"the multi-frame image cannot be read: {problem}", study=study, path=path)
    per_frame = ds.PerFrameFunctionalGroupsSequence
    if len(per_frame) != frames:
        raise FusionInputError(f"enhanced multi-frame DICOM with NumberOfFrames {frames} but {len(per_frame)} "
                               "PerFrameFunctionalGroupsSequence items", study=study, path=path)
    shared_seq = ds.get("SharedFunctionalGroupsSequence", None)
    shared = shared_seq[0] if shared_seq else None
    positions, iops, spacings, rescale = [], [], [], []
    for n, item in enumerate(per_frame):
        ipp = _floats(_functional(item, shared, "PlanePositionSequence", "ImagePositionPatient") or [], 3)
        iop = _floats(_functional(item, shared, "PlaneOrientationSequence", "ImageOrientationPatient") or [], 6)
        spacing = _floats(_functional(item, shared, "PixelMeasuresSequence", "PixelSpacing") or [], 2)
        if ipp is None or iop is None or spacing is None or np.any(spacing <= 0):
            raise FusionInputError(
                f"frame {n + 1} of the enhanced multi-frame image has no valid ImagePositionPatient / "
                "ImageOrientationPatient / PixelSpacing in its functional groups, so its position is unknown",
                study=study, path=path)
        slope = _functional(item, shared, "PixelValueTransformationSequence", "RescaleSlope")
        intercept = _functional(item, shared, "PixelValueTransformationSequence", "RescaleIntercept")
        rescale.append(_checked_rescale({"RescaleSlope": slope, "RescaleIntercept": intercept}, path, study))
        positions.append(ipp)
        iops.append(iop)
        spacings.append(spacing)
    if np.max(np.abs(np.asarray(spacings) - spacings[0])) > 1e-4 * max(1.0, float(np.max(spacings[0]))):
        raise FusionInputError(f"{label}: PixelSpacing differs between the frames of the enhanced multi-frame image",
                               study=study, path=path)
    order = _stack_order(positions, iops, [f"frame {n + 1}" for n in range(frames)], label, path, study,
                         unit="frames", four_d_hint="load one 3D volume (convert the file with dcm2niix and pick one)")
    pos = np.asarray(positions)[order]
    row, col = np.asarray(iops[0][:3]), np.asarray(iops[0][3:])
    normal = np.cross(row, col)
    # slice step: the mean gap between the sorted frames (even within SLICE_SPACING_TOLERANCE, checked above), as
    # dcm2niix measures it; PixelSpacing is (row spacing = between rows: y, column spacing = between columns: x)
    step = float((pos[-1] - pos[0]) @ normal) / (frames - 1)
    lps = np.eye(4)
    lps[:3, 0] = row * spacings[0][1]
    lps[:3, 1] = col * spacings[0][0]
    lps[:3, 2] = normal * step
    lps[:3, 3] = pos[0]
    geometry = MultiFrameGeometry(frames=frames, order=[int(i) for i in order], affine=lps_to_ras(lps))
    return DicomStack(files=[os.path.abspath(path)], rescale=[rescale[i] for i in order], multiframe=geometry)


def _multiframe_volume(stack: DicomStack, study: str | None):
    """Read the enhanced multi-frame file of ``stack`` (validated by :func:`_check_multiframe`) as a ``MetaTensor``
    (1, X, Y, Z) float32, frames sorted along the normal, each with its own ``stored * slope + intercept``.

    The frames are decoded by GDCM (every transfer syntax ITK reads; 12-bit masking and sign extension as for other
    series). GDCM applies ONE rescale to the whole file (that of the shared groups or of the first frame), whatever
    the other frames hold, so the stored values are recovered exactly from what it applied
    (``rint((value - intercept) / slope)``: stored values are integers) and then each frame gets its own rescale.
    ITK's own GDCMImageIO reads the file here (not SimpleITK, as for mosaics) because only it tells which
    rescale GDCM applied, from the very reader object that decoded the pixels.
    """
    import itk
    from monai.data import MetaTensor

    geometry = stack.multiframe
    path = stack.files[0]
    try:
        io = itk.GDCMImageIO.New()
        reader = itk.ImageFileReader[itk.Image[itk.D, 3]].New(FileName=str(path), ImageIO=io)
        reader.Update()
        decoded = np.asarray(itk.array_from_image(reader.GetOutput()), dtype=np.float64)
        applied = (float(io.GetRescaleSlope()), float(io.GetRescaleIntercept()))
    except Exception as err:
        raise FusionInputError(f"cannot decode the multi-frame image ({str(err).strip().splitlines()[-1][:300]})",
                               study=study, path=path) from err
    decoded = decoded.reshape(-1, *decoded.shape[-2:])  # (frames, rows, cols), in file order
    if decoded.shape[0] != geometry.frames:
        raise FusionInputError(f"GDCM decoded {decoded.shape[0]} frames of a file with NumberOfFrames "
                               f"{geometry.frames}", study=study, path=path)
    if applied != (1.0, 0.0):
        if applied[0] == 0.0:
            raise FusionInputError("GDCM applied a rescale slope of 0: the stored values are lost", study=study,
                                   path=path)
        decoded = np.rint((decoded - applied[1]) / applied[0])  # back to the stored integers
    nf, ny, nx = decoded.shape
    vol = np.empty((1, nx, ny, nf), dtype=np.float32)
    for k, (n, (slope, intercept)) in enumerate(zip(geometry.order, stack.rescale)):
        vol[0, :, :, k] = (decoded[n] * slope + intercept).T  # float64 arithmetic, float32 result
    ras = geometry.affine
    img = MetaTensor(torch.from_numpy(vol), affine=torch.as_tensor(ras, dtype=torch.float64))
    img.meta.update({"spatial_shape": np.asarray(vol.shape[1:]), "original_affine": ras.copy(), "space": "RAS",
                     "filename_or_obj": str(path), "multiframe_frames": nf})
    return img


def _set_slice_spacing(img, spacing: float):
    """Give a one-slice volume the slice spacing of its header (ITK reads 1 mm) along its slice normal."""
    aff = torch.as_tensor(img.affine, dtype=torch.float64).clone()
    col = aff[:3, 2]
    aff[:3, 2] = col / torch.linalg.norm(col) * spacing
    img.affine = aff
    return img


class DicomSeriesReader(ITKReader):
    """MONAI's ``ITKReader`` for one DICOM series given as its files in slice order (GDCM via ITK), instead of the
    first series GDCM finds in a folder; ``read`` keeps this order (index k = slice k). One file gives a volume of
    one slice."""

    def __init__(self, file_names: Sequence[str], **kwargs) -> None:
        super().__init__(**kwargs)
        self.file_names = [str(f) for f in file_names]

    def verify_suffix(self, filename) -> bool:  # the data "path" is the series folder, as for ITKReader
        return True

    def read(self, data, **kwargs):
        import itk

        kwargs_ = self.kwargs.copy()
        kwargs_.update(kwargs)
        names = self.file_names
        return itk.imread(names if len(names) > 1 else names[0], **kwargs_)


def read_dicom_series(folder: str | Path, study: str | None = None, series_uid: str | None = None,
                      max_voxels: int = DEFAULT_MAX_VOXELS):
    """Read one validated classic DICOM series of ``folder`` as a ``MetaTensor`` (1, X, Y, Z) float32, RAS affine,
    with meta ``source_path`` (the folder), ``dicom_files`` (sorted: index k = slice k), ``series_uid`` and
    ``series_description``.

    ``series_uid`` picks a series (UID or unique description) in a folder holding several. Each slice keeps its own
    modality rescale; one mosaic file is unpacked; a one-slice series takes its header's slice spacing.
    Raises :class:`FusionInputError` naming the study and the file (see :func:`check_dicom_series`).
    """
    from monai.transforms import LoadImage

    folder = Path(folder)
    chosen = choose_series(list_dicom_series(folder, study), series_uid, folder, study)
    stack = check_dicom_series(list(chosen["files"]), chosen, folder, study, max_voxels)
    meta = {"source_path": os.path.abspath(folder), "dicom_files": stack.files, "series_uid": chosen["uid"],
            "series_description": chosen["description"]}
    if stack.mosaic or stack.multiframe is not None:
        img = _mosaic_volume(stack.files[0], study, max_voxels) if stack.mosaic else _multiframe_volume(stack, study)
        img.meta.update(meta)
        return img
    reader = DicomSeriesReader(stack.files)
    try:
        img = LoadImage(reader=reader, image_only=True, ensure_channel_first=True, dtype=np.float32)(str(folder))
    except Exception as err:
        msg = str(err).strip()
        culprit = next((f for f in stack.files if f in msg), folder)
        short = msg.splitlines()[-1] if msg else ""
        raise FusionInputError(f"cannot read the image ({type(err).__name__}: {short[:300]})",
                               study=study, path=culprit) from err
    if img.ndim != 4 or img.shape[0] != 1 or img.shape[-1] != len(stack.files):
        raise FusionInputError(f"read an image of shape {tuple(img.shape[1:])} from a series of {len(stack.files)} "
                               "files", study=study, path=folder)
    if not stack.uniform_rescale:
        img = _read_slices_rescaled(stack, img, study)
    _check_read_geometry(img, stack, study, folder)
    if stack.single_slice_spacing is not None:
        img = _set_slice_spacing(img, stack.single_slice_spacing)
    img.meta.update(meta)
    return img
