"""Writing a fused volume as a DICOM series (one file a slice) on the reference MRI's grid.

A derived series. When the reference MRI was a DICOM series (meta ``"dicom_files"``), each source slice
is copied and its pixel data replaced (slice found from its ImagePositionPatient through the volume's affine), so
Patient/Study/FrameOfReference, geometry and acquisition attributes are inherited; private tags are dropped, the
SeriesInstanceUID (one per output) and SOPInstanceUIDs are new, ImageType is DERIVED\\SECONDARY\\OTHER. Whatever
the source's transfer syntax (explicit or implicit VR, little or big endian, compressed), the output files are
uncompressed explicit VR little endian (1.2.840.10008.1.2.1) with a new file meta header.
Colour data are stored as uint8 RGB with SOP class Secondary Capture (the MR IOD allows only MONOCHROME),
keeping the Image Plane attributes (plus PatientOrientation from the row/column directions). Without DICOM source
files a series is built from scratch on the reference grid (patient "ANONYMOUS", Study and FrameOfReference UIDs
derived from the reference path, so repeated exports of one study share them). A reference held in ONE file (an
enhanced multi-frame image or a Siemens mosaic: no source file per slice) gives the same classic single-frame series
built on the reference grid, but with that file's patient, study, FrameOfReferenceUID, modality and equipment
(SOP class MR, or CT for a CT reference, else Secondary Capture) and a SourceImageSequence naming it. File names are ``0001.dcm``... in
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
import logging
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from fusionmamba_med.errors import FusionInputError
from fusionmamba_med.io.geometry import LPS_RAS_FLIP, ras_affine_to_lps_geometry

__all__ = ["DicomSeriesWriter", "FUSED_DICOM_MAX", "set_image_plane", "to_rgb_uint8"]

logger = logging.getLogger(__name__)

_MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
_SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
# What a series built on the reference grid inherits from a reference held in ONE file (an enhanced multi-frame
# image or a Siemens mosaic): patient, study, frame of reference and equipment; never private tags or file names.
_INHERITED_KEYWORDS = (
    "SpecificCharacterSet", "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex",
    "PatientAge", "PatientSize", "PatientWeight", "StudyInstanceUID", "StudyDate", "StudyTime", "StudyID",
    "AccessionNumber", "ReferringPhysicianName", "StudyDescription", "Modality", "Manufacturer",
    "ManufacturerModelName", "InstitutionName", "StationName", "DeviceSerialNumber", "SoftwareVersions",
    "FrameOfReferenceUID", "PositionReferenceIndicator", "PatientPosition", "BodyPartExamined", "Laterality",
    "AcquisitionDate", "AcquisitionTime",
)
# The MR Image module's attributes a classic MR source (a mosaic) holds at its top level (enhanced files hold them in
# functional groups, then the from-scratch values stay).
_INHERITED_MR_KEYWORDS = ("ScanningSequence", "SequenceVariant", "ScanOptions", "MRAcquisitionType", "EchoTime",
                          "RepetitionTime", "EchoTrainLength", "InversionTime", "FlipAngle", "MagneticFieldStrength")
# Greyscale fused images in DICOM: unsigned 12-bit, fused value = stored / FUSED_DICOM_MAX.
FUSED_DICOM_MAX = 4095  # fused [0, 1] is stored 0..FUSED_DICOM_MAX
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


def _now() -> tuple[str, str]:
    now = _dt.datetime.now()
    return now.strftime("%Y%m%d"), now.strftime("%H%M%S.%f")


def series_file_names(n_slices: int) -> list[str]:
    """The file names of a written series of ``n_slices`` slices, in slice order: ``0001.dcm``, ``0002.dcm``..."""
    width = max(4, len(str(n_slices)))
    return [f"{k + 1:0{width}d}.dcm" for k in range(n_slices)]


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
    return np.rint(np.clip(vol.astype(np.float64), 0.0, 1.0) * FUSED_DICOM_MAX).astype(np.uint16)


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


def _save_dataset(ds, path: Path) -> None:
    ds.save_as(str(path), enforce_file_format=True)


def set_image_plane(ds, affine_ras: np.ndarray, k: int) -> None:
    """Set the Image Plane attributes of slice ``k`` of a grid with voxel -> RAS ``affine_ras`` on ``ds``:
    ImagePositionPatient, ImageOrientationPatient (voxel axes 0 and 1 in LPS), PixelSpacing (row spacing = axis 1,
    column spacing = axis 0), SliceThickness, SpacingBetweenSlices and SliceLocation (along row x column)."""
    spacing, direction, _ = ras_affine_to_lps_geometry(affine_ras)
    ipp = (LPS_RAS_FLIP @ np.asarray(affine_ras, dtype=np.float64)) @ np.array([0.0, 0.0, float(k), 1.0])
    ds.ImagePositionPatient = [_ds_str(v) for v in ipp[:3]]
    ds.ImageOrientationPatient = [_ds_str(v) for v in (*direction[:, 0], *direction[:, 1])]
    ds.PixelSpacing = [_ds_str(spacing[1]), _ds_str(spacing[0])]
    ds.SliceThickness = _ds_str(spacing[2])
    ds.SpacingBetweenSlices = _ds_str(spacing[2])
    ds.SliceLocation = _ds_str(float(np.dot(ipp[:3], np.cross(direction[:, 0], direction[:, 1]))))


def to_rgb_uint8(vol: np.ndarray) -> np.ndarray:
    """Colour values to uint8: floats in [0, 1] are scaled by 255; other values are rounded and clipped to 0..255."""
    if vol.dtype == np.uint8:
        return vol
    v = vol.astype(np.float64)
    if v.size and float(v.min()) >= 0.0 and float(v.max()) <= 1.0:
        v = v * 255.0
    return np.clip(np.rint(v), 0, 255).astype(np.uint8)


class DicomSeriesWriter:
    """Write fused volumes as DICOM series (see the module docstring for the attributes and the value mapping).

    Args:
        series_description: SeriesDescription of the written series (cut to 64 characters).
        series_number: SeriesNumber; default: the source's SeriesNumber + 1000 (1001 without a source).
    """

    def __init__(self, series_description: str = "FusionMamba fused", series_number: int | None = None) -> None:
        self.series_description = str(series_description)[:64]
        self.series_number = series_number

    def write(self, folder: Path, vol: np.ndarray, affine: np.ndarray, source_files: Sequence[str] = (),
              source_path: str = "", study_id: str = "study") -> None:
        """Write ``vol`` (C = 1 or 3, X, Y, Z) with RAS ``affine`` as ``0001.dcm``... into the existing ``folder``.

        ``source_files``: the MRI's DICOM files in slice order (a derived series is made from them); without them a
        series is built from scratch, its Study/FrameOfReference UIDs derived from ``source_path``. A reference held
        in one file (an enhanced multi-frame image or a Siemens mosaic: no file per slice) gives a series built on
        the grid of ``affine`` that inherits that file's patient, study and frame of reference.
        """
        from pydicom.uid import generate_uid

        rgb = vol.shape[0] == 3
        slope_s = intercept_s = window = None
        if rgb:
            pixels, encoding = to_rgb_uint8(vol), "rgb"
        elif _is_fused_range(vol[0]):
            pixels, encoding = _fused_to_uint12(vol[0])[None], "fused"
            window = (str((FUSED_DICOM_MAX + 1) // 2), str(FUSED_DICOM_MAX + 1))  # 2048 / 4096: the whole 0..4095 range
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
        files = list(source_files)
        common = dict(series_uid=series_uid, date=content_date, time=content_time, rgb=rgb, encoding=encoding,
                      slope=slope_s, intercept=intercept_s, window=window)
        if files:
            missing = [f for f in files if not os.path.isfile(f)]
            if missing:
                raise FusionInputError(f"{len(missing)} source DICOM files are gone (first: {missing[0]})",
                                       study=study_id, path=missing[0])
            whole = self._whole_volume_source(files, study_id)
            if whole is not None:  # one file holds the whole reference volume: no source file per slice
                self._series_from_scratch(folder, pixels, affine, common, source_path, study_id,
                                          source_ds=whole)
            else:
                self._derive_from_sources(folder, files, pixels, affine, common, study_id)
        else:
            self._series_from_scratch(folder, pixels, affine, common, source_path, study_id)

    @staticmethod
    def _whole_volume_source(files: Sequence[str], study_id: str):
        """The header (no pixels) of a reference held in one file, an enhanced multi-frame image or a Siemens mosaic
        (:func:`~fusionmamba_med.io.dicom_read.holds_whole_volume`), or None for a classic series (one file a slice)."""
        import pydicom

        from fusionmamba_med.io.dicom_read import holds_whole_volume

        if len(files) != 1:
            return None
        try:
            ds = pydicom.dcmread(files[0], stop_before_pixels=True)
        except Exception as err:
            raise FusionInputError(f"cannot re-read the source DICOM file ({err})", study=study_id,
                                   path=files[0]) from err
        return ds if holds_whole_volume(ds) else None

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

    def _derive_from_sources(self, folder: Path, files: list[str], pixels, affine, common, study_id):
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
        names = series_file_names(nz)
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
            _save_dataset(ds, folder / names[k])

    @staticmethod
    def _slice(pixels: np.ndarray, k: int) -> np.ndarray:
        # (C, X, Y, Z) -> (rows = y, cols = x[, C])
        if pixels.shape[0] == 3:
            return np.transpose(pixels[:, :, :, k], (2, 1, 0))
        return pixels[0, :, :, k].T

    def _series_from_scratch(self, folder: Path, pixels, affine, common, source: str, study_id: str,
                             source_ds=None):
        """A series on the grid of ``affine`` (Image Plane attributes of each slice from it). Without ``source_ds``:
        patient "ANONYMOUS", Study/FrameOfReference UIDs derived from the ``source`` path; with ``source_ds`` (the
        header of a reference held in one file): its patient, study, frame of reference, modality and equipment
        (:data:`_INHERITED_KEYWORDS`), its SeriesNumber + 1000, and a SourceImageSequence naming it."""
        import copy

        from pydicom.dataset import Dataset, FileMetaDataset
        from pydicom.sequence import Sequence
        from pydicom.uid import generate_uid

        entropy = [f"fusionmamba:{os.path.abspath(source)}"] if source else None
        study_uid = generate_uid(entropy_srcs=[*entropy, "study"]) if entropy else generate_uid()
        for_uid = generate_uid(entropy_srcs=[*entropy, "frame-of-reference"]) if entropy else generate_uid()
        modality = "MR"
        if source_ds is not None:
            modality = str(source_ds.get("Modality", "") or "MR").strip().upper() or "MR"
        # the classic SOP class of the written series: MR (also for RGB: then Secondary Capture, in _set_series),
        # CT for a CT reference, Secondary Capture for any other modality (its IOD takes any Modality)
        sop_class = {"MR": _MR_IMAGE_STORAGE, "CT": _CT_IMAGE_STORAGE}.get(modality, _SECONDARY_CAPTURE)
        nz = pixels.shape[3]
        names = series_file_names(nz)
        for k in range(nz):
            ds = Dataset()
            ds.file_meta = FileMetaDataset()
            ds.SOPClassUID = sop_class
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
            ds.Modality = modality
            ds.Manufacturer = "FusionMamba"
            ds.FrameOfReferenceUID = for_uid
            ds.PositionReferenceIndicator = ""
            mr_module = sop_class == _MR_IMAGE_STORAGE and not common["rgb"]  # an RGB series is a Secondary Capture
            if mr_module:
                ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions, ds.MRAcquisitionType = "RM", "NONE", "", "3D"
                ds.EchoTime = ds.RepetitionTime = ds.EchoTrainLength = ""
            elif sop_class == _CT_IMAGE_STORAGE and not common["rgb"]:
                ds.KVP, ds.AcquisitionNumber = "", ""
            elif sop_class == _SECONDARY_CAPTURE:
                ds.ConversionType = "WSD"
            ds.PatientPosition = ""
            ds.Laterality = ""  # Type 2C (paired body part); unknown here
            if source_ds is not None:
                inherited = _INHERITED_KEYWORDS + (_INHERITED_MR_KEYWORDS if mr_module else ())
                for kw in inherited:
                    if kw in source_ds:
                        ds[kw] = copy.deepcopy(source_ds[kw])
                if "Laterality" not in source_ds and "BodyPartExamined" in source_ds:
                    del ds.Laterality  # Type 2C: absent for an unpaired body part (e.g. BRAIN), as in the source
                src_class, src_uid = str(source_ds.get("SOPClassUID", "")), str(source_ds.get("SOPInstanceUID", ""))
                if src_class and src_uid:
                    item = Dataset()
                    item.ReferencedSOPClassUID = src_class
                    item.ReferencedSOPInstanceUID = src_uid
                    ds.SourceImageSequence = Sequence([item])
            set_image_plane(ds, affine, k)
            if sop_class == _SECONDARY_CAPTURE:  # Type 2C in the Secondary Capture IOD
                ds.PatientOrientation = _patient_orientation([float(v) for v in ds.ImageOrientationPatient])
            self._set_series(ds, common, k, None if source_ds is None else source_ds.get("SeriesNumber", None))
            self._set_pixels(ds, self._slice(pixels, k), common)
            _save_dataset(ds, folder / names[k])
