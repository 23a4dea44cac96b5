"""Seeded fuzzing of the input loaders with mutated real inputs; every case classified, none fatal to the harness.

Sources: the real scanner series of ``../shared/dicom_qa/series`` (skipped when absent) and the sample studies of
``sample_data/`` (DICOM MR series, NIfTI .nii.gz, NRRD gzip) plus variants made from them (plain .nii, raw NRRD,
detached .nhdr + .raw). Each case copies one source, applies one mutation operator (:data:`OPERATORS`: deleting,
truncating, retyping, extreme values in the geometry, pixel description, rescale, transfer syntax, slice positions and
pixel data) and loads it with :func:`fusionmamba_med.io.load_volume` in a forked child process with a time limit and an
address-space limit. Outcomes (:data:`OUTCOMES`):

- ``correct output``: loaded, finite, shape (1, X, Y, Z), invertible affine; equal to the unmutated load where the
  mutation must not change anything (``expect="same"``), else equal to what a reference reader (pydicom, nibabel, a
  numpy NRRD reader) makes of the mutated file, where one applies (``verified`` says which check was made);
- ``clear refusal``: a ``FusionInputError`` naming the study and a file inside the case;
- ``other exception``, ``timeout``, ``crash`` (signal / exit without a result), ``memory`` (MemoryError / bad_alloc
  under the limit), ``silently wrong`` (loaded, but not what the reference or the unmutated load says).

Every ``--through-command N``-th case also runs the user's whole command (``python -m monai.bundle run --config_file
bundles/pet_mri/inference.json --dataset_dir <tmp> --output_dir <tmp_out> --device cpu``) on a study folder holding the
mutated input: the study must end fused, or failed in ``fusion_summary.json`` with a reason naming study and file.

    python benchmarks/fuzz_inputs.py --count 2000 --seed 0 --out /tmp/fuzz.json [--through-command 50]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # this checkout's package, also when run as a script
    sys.path.insert(0, str(REPO))
QA = REPO / ".." / "shared" / "dicom_qa" / "series"
OUTCOMES = ("correct output", "clear refusal", "other exception", "timeout", "crash", "memory", "silently wrong")
GOOD = ("correct output", "clear refusal")

#: real series used as sources: those we load and those we refuse (4D, localiser ...): mutations must not make a
#: refused series load wrongly either.
QA_SERIES = ("bit12_12bitSigned_0x0F0F", "bit12_12bitUnsigned", "dec_hfs", "ge_mprage", "ts_1", "ts_3", "ts_4",
             "ts_5", "ts_7", "ts_9", "xa30_t1", "nih_ge_0004", "tbl_ge_loc", "qa_sagasc35")


# ---------------------------------------------------------------------------------------------------------------------
# Sources
# ---------------------------------------------------------------------------------------------------------------------
@dataclass
class Source:
    """One unmutated input: ``kind`` "dicom" (``path`` a series folder) or "nifti" / "nrrd" (``path`` a file;
    ``extra`` files travel with it, e.g. a detached NRRD's data file)."""

    name: str
    kind: str
    path: Path
    extra: tuple[Path, ...] = ()


def _nrrd_raw_variant(src: Path, out: Path, detached: bool) -> list[Path]:
    """The gzip NRRD ``src`` rewritten with raw encoding: attached (``out`` .nrrd) or detached (``out`` .nhdr and a
    .raw beside it)."""
    from fusionmamba_med.io.size_checks import read_nrrd_header

    fields, start = read_nrrd_header(src)
    head = src.read_bytes()[:start].decode("latin-1").rstrip("\n").split("\n")
    with open(src, "rb") as f:
        f.seek(start)
        data = gzip.decompress(f.read())
    head = [("encoding: raw" if line.startswith("encoding:") else line) for line in head]
    if not detached:
        out.write_bytes(("\n".join(head) + "\n\n").encode() + data)
        return [out]
    raw = out.with_suffix(".raw")
    raw.write_bytes(data)
    out.write_bytes(("\n".join(head + [f"data file: {raw.name}"]) + "\n").encode())
    return [out, raw]


def discover_sources(work: Path, use_qa: bool = True) -> list[Source]:
    """The sources of this checkout (sample data and their variants, made under ``work``) and of ``../shared``."""
    sample = REPO / "sample_data"
    out = [Source("sample/ct_mri/MR", "dicom", sample / "ct_mri" / "study01" / "MR"),
           Source("sample/pet_mri2/MR", "dicom", sample / "pet_mri" / "study02" / "MR"),
           Source("sample/ct_mri/CT.nii.gz", "nifti", sample / "ct_mri" / "study01" / "CT.nii.gz"),
           Source("sample/spect_mri/SPECT.nii.gz", "nifti", sample / "spect_mri" / "study01" / "SPECT.nii.gz"),
           Source("sample/pet_mri/PET.nrrd", "nrrd", sample / "pet_mri" / "study01" / "PET.nrrd")]
    variants = work / "variants"
    variants.mkdir(parents=True, exist_ok=True)
    plain = variants / "SPECT.nii"
    plain.write_bytes(gzip.decompress((sample / "spect_mri" / "study01" / "SPECT.nii.gz").read_bytes()))
    out.append(Source("variant/SPECT.nii", "nifti", plain))
    pet = sample / "pet_mri" / "study01" / "PET.nrrd"
    out.append(Source("variant/PET_raw.nrrd", "nrrd", _nrrd_raw_variant(pet, variants / "PET_raw.nrrd", False)[0]))
    nhdr, raw = _nrrd_raw_variant(pet, variants / "PET.nhdr", True)
    out.append(Source("variant/PET.nhdr", "nrrd", nhdr, (raw,)))
    if use_qa and QA.is_dir():
        out += [Source(f"qa/{name}", "dicom", QA / name) for name in QA_SERIES if (QA / name).is_dir()]
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Mutations
# ---------------------------------------------------------------------------------------------------------------------
@dataclass
class Mutation:
    """What one operator did: ``op``, ``detail`` (tag / field and value, file), and what a correct loader must give:
    ``expect`` "same" (the unmutated load, or the same refusal), or "reference" (what the reference reader makes of
    the mutated input, or a clear refusal)."""

    op: str
    detail: str
    expect: str = "reference"


class Case:
    """A copy of one source under ``folder``: ``path`` is what the loader gets (a series folder or a file)."""

    def __init__(self, source: Source, folder: Path):
        self.source = source
        folder.mkdir(parents=True)
        if source.kind == "dicom":
            self.path = folder / source.path.name
            shutil.copytree(source.path, self.path)
        else:
            self.path = folder / source.path.name
            for f in (source.path, *source.extra):
                shutil.copy2(f, folder / f.name)

    def dicom_files(self) -> list[Path]:
        return sorted(p for p in self.path.iterdir() if p.is_file())


_INTS = (0, 1, -1, 2, 3, 7, 17, 255, 65535, 2 ** 31 - 1)
_FLOATS = ("0", "-1", "1e308", "-1e308", "NaN", "inf", "-inf", "1e-300", "", "abc")
_GEOMETRY = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness",
             "SpacingBetweenSlices")
_PIXEL = ("Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation", "SamplesPerPixel",
          "PhotometricInterpretation", "NumberOfFrames")
_RESCALE = ("RescaleSlope", "RescaleIntercept")
_HARMLESS = ("PatientName", "SeriesDescription", "InstitutionName", "StudyDescription", "ImageComments")
_SYNTAXES = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99",
             "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.90",
             "1.2.3.4.5.6", "")


def _dcm():
    import pydicom

    return pydicom


def _save(ds, path: Path) -> None:
    """Write ``ds`` back in its own encoding whatever its (possibly mutated) transfer syntax says."""
    pydicom = _dcm()
    implicit, little = _encoding(ds)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pydicom.dcmwrite(path, ds, implicit_vr=implicit, little_endian=little, enforce_file_format=False,
                         force_encoding=True)


def _encoding(ds) -> tuple[bool, bool]:
    return ds.original_encoding if ds.original_encoding[0] is not None else (False, True)


def _raw_bytes(value) -> bytes:
    if isinstance(value, (bytes, bytearray)):
        raw = bytes(value)
    elif isinstance(value, (list, tuple)):
        raw = "\\".join(str(v) for v in value).encode()
    else:
        raw = str(value).encode()
    return raw + b" " * (len(raw) % 2)


def _put(ds, tag, vr: str, value) -> None:
    """Set element ``tag`` of ``ds`` (or of a sequence item) to ``value`` with ``vr``; where pydicom will not encode
    that value in that VR, the same characters are stored as raw bytes (VR OB in explicit-VR files; implicit-VR
    readers see the tag's own VR holding them)."""
    from pydicom.dataelem import DataElement

    pydicom = _dcm()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds[tag] = DataElement(tag, vr, value)
            implicit, little = _encoding(ds) if hasattr(ds, "original_encoding") else (False, True)
            buf = pydicom.filebase.DicomBytesIO()
            buf.is_little_endian, buf.is_implicit_VR = little, implicit
            pydicom.filewriter.write_data_element(buf, ds[tag])
        except Exception:
            ds[tag] = DataElement(tag, "OB", _raw_bytes(value))


def _patch_syntax(path: Path, uid: str) -> None:
    """Replace the TransferSyntaxUID of the file meta of ``path`` (explicit VR little endian) by ``uid`` in place,
    fixing the group length; the data set is left as it is."""
    blob = bytearray(path.read_bytes())
    at = blob.find(b"\x02\x00\x10\x00UI", 132)
    if at < 0:
        raise ValueError("no TransferSyntaxUID element")
    old_len = int.from_bytes(blob[at + 6:at + 8], "little")
    new = uid.encode() + (b"\0" if len(uid) % 2 else b"")
    blob[at + 6:at + 8 + old_len] = len(new).to_bytes(2, "little") + new
    group = blob.find(b"\x02\x00\x00\x00UL", 132)
    if group == 132:
        length = int.from_bytes(blob[group + 8:group + 12], "little") + len(new) - old_len
        blob[group + 8:group + 12] = length.to_bytes(4, "little")
    path.write_bytes(bytes(blob))


def _read(path: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _dcm().dcmread(path, force=True)


def _targets(rng: np.random.Generator, case: Case) -> tuple[list[Path], str]:
    files = case.dicom_files()
    if len(files) == 1 or rng.random() < 0.4:
        return files, "all files"
    f = files[int(rng.integers(len(files)))]
    return [f], f.name


def _dicom_value(rng: np.random.Generator, keyword: str):
    """An extreme value for ``keyword`` in its own VR (numbers as strings for DS/IS; a list for multi-valued)."""
    from pydicom.datadict import dictionary_VR, tag_for_keyword

    vr = dictionary_VR(tag_for_keyword(keyword))
    n = {"ImagePositionPatient": 3, "ImageOrientationPatient": 6, "PixelSpacing": 2}.get(keyword, 1)
    if vr in ("US", "SS"):
        lo, hi = (0, 65535) if vr == "US" else (-32768, 32767)
        return int(np.clip(rng.choice(_INTS), lo, hi))
    if vr == "CS":
        return str(rng.choice(["RGB", "MONOCHROME1", "MONOCHROME2", "PALETTE COLOR", "YBR_FULL", "", "GARBAGE"]))
    if vr == "IS":
        return str(rng.choice(["0", "-1", "2", "3", "99999999", "NaN", "abc", ""]))
    one = str(rng.choice(_FLOATS))
    if n == 1:
        return one
    values = ["1"] * n if rng.random() < 0.5 else [one] * n
    values[int(rng.integers(n))] = one
    return values[: n - 1] if rng.random() < 0.15 else values


def _put_keyword(ds, keyword: str, value) -> None:
    from pydicom.datadict import dictionary_VR, tag_for_keyword

    tag = tag_for_keyword(keyword)
    _put(ds, tag, dictionary_VR(tag), value)


def op_dicom_delete(rng, case: Case) -> Mutation:
    keyword = str(rng.choice(_GEOMETRY + _PIXEL + _RESCALE + ("PixelData", "SeriesInstanceUID")))
    files, where = _targets(rng, case)
    for f in files:
        ds = _read(f)
        if keyword in ds:
            delattr(ds, keyword)
        _save(ds, f)
    return Mutation("dicom_delete", f"{keyword} in {where}")


def op_dicom_extreme(rng, case: Case) -> Mutation:
    keyword = str(rng.choice(_GEOMETRY + _PIXEL + _RESCALE))
    value = _dicom_value(rng, keyword)
    files, where = _targets(rng, case)
    for f in files:
        ds = _read(f)
        _put_keyword(ds, keyword, value)
        _save(ds, f)
    return Mutation("dicom_extreme", f"{keyword}={value!r} in {where}")


def op_dicom_retype(rng, case: Case) -> Mutation:
    from pydicom.datadict import tag_for_keyword

    keyword = str(rng.choice(_GEOMETRY + _PIXEL + _RESCALE))
    vr = str(rng.choice(["LO", "DS", "FD", "OB", "UN", "SS", "UL"]))
    values = {"LO": "abc", "DS": "1e999", "FD": float("nan"), "OB": b"\xff\xff\xff", "UN": b"\x00\x01",
              "SS": -2, "UL": 4294967295}
    files, where = _targets(rng, case)
    for f in files:
        ds = _read(f)
        _put(ds, tag_for_keyword(keyword), vr, values[vr])
        _save(ds, f)
    return Mutation("dicom_retype", f"{keyword} as {vr} {values[vr]!r} in {where}")


def op_dicom_syntax(rng, case: Case) -> Mutation:
    uid = str(rng.choice(_SYNTAXES))
    files, where = _targets(rng, case)
    for f in files:
        _patch_syntax(f, uid)
    return Mutation("dicom_transfer_syntax", f"TransferSyntaxUID={uid!r} (data not re-encoded) in {where}")


def op_dicom_slices(rng, case: Case) -> Mutation:
    files = case.dicom_files()
    if len(files) < 3:
        return op_dicom_pixels(rng, case)
    what = str(rng.choice(["duplicate_position", "remove_file", "swap_positions", "shift_half", "duplicate_file",
                           "rename_reversed"]))
    i, j = (int(v) for v in rng.choice(len(files), 2, replace=False))
    a, b = _read(files[i]), _read(files[j])
    if what == "duplicate_position" and "ImagePositionPatient" in b:
        a.ImagePositionPatient = b.ImagePositionPatient
        _save(a, files[i])
    elif what == "remove_file":
        files[i].unlink()
    elif what == "swap_positions" and "ImagePositionPatient" in a and "ImagePositionPatient" in b:
        a.ImagePositionPatient, b.ImagePositionPatient = b.ImagePositionPatient, a.ImagePositionPatient
        _save(a, files[i])
        _save(b, files[j])
    elif what == "shift_half" and "ImagePositionPatient" in a:
        thick = float(a.get("SliceThickness", 1) or 1)
        a.ImagePositionPatient = [float(v) for v in a.ImagePositionPatient[:2]] + [
            float(a.ImagePositionPatient[2]) + thick / 2]
        _save(a, files[i])
    elif what == "duplicate_file":
        a.SOPInstanceUID = a.SOPInstanceUID + ".9"
        _save(a, files[i].with_name(files[i].name + "_copy.dcm"))
    elif what == "rename_reversed":
        tmp = [f.rename(f.with_name(f"tmp_{k:05d}")) for k, f in enumerate(files)]
        for k, f in enumerate(tmp):
            f.rename(files[len(files) - 1 - k].with_name(f"r{k:05d}{files[0].suffix}"))
        return Mutation("dicom_slices", "files renamed in reverse order", expect="same")
    return Mutation("dicom_slices", f"{what} ({files[i].name}, {files[j].name})")


def _pixel_span(path: Path) -> tuple[int, int] | None:
    """(offset, length) of the PixelData value in ``path`` (native or encapsulated), or None."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = _dcm().dcmread(path, defer_size=64, force=True)
    raw = ds.get_item(0x7FE00010, keep_deferred=True) if 0x7FE00010 in ds else None
    if raw is None or getattr(raw, "value_tell", None) is None:
        return None
    length = raw.length if raw.length != 0xFFFFFFFF else path.stat().st_size - raw.value_tell
    return int(raw.value_tell), int(length)


def op_dicom_pixels(rng, case: Case) -> Mutation:
    files = case.dicom_files()
    f = files[int(rng.integers(len(files)))]
    what = str(rng.choice(["truncate", "bit_flips", "wrong_length", "append_junk"]))
    blob = bytearray(f.read_bytes())
    span = _pixel_span(f)
    if what == "truncate" or span is None:
        keep = int(rng.integers(0, len(blob)))
        f.write_bytes(bytes(blob[:keep]))
        return Mutation("dicom_pixels", f"{f.name} truncated to {keep} of {len(blob)} bytes")
    start, length = span
    if what == "bit_flips":
        for _ in range(int(rng.integers(1, 64))):
            k = start + int(rng.integers(length))
            blob[k] ^= 1 << int(rng.integers(8))
        f.write_bytes(bytes(blob))
        return Mutation("dicom_pixels", f"bit flips in the pixel data of {f.name}")
    if what == "append_junk":
        f.write_bytes(bytes(blob) + rng.integers(0, 256, int(rng.integers(1, 4096)), dtype=np.uint8).tobytes())
        return Mutation("dicom_pixels", f"junk appended after the pixel data of {f.name}")
    ds = _read(f)
    if ds.file_meta.get("TransferSyntaxUID", "") not in ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1",
                                                        "1.2.840.10008.1.2.2"):
        f.write_bytes(bytes(blob[: start + length // 2]))
        return Mutation("dicom_pixels", f"compressed pixel data of {f.name} cut in half")
    new = int(length * float(rng.choice([0.0, 0.5, 0.99, 1.5, 2.0]))) // 2 * 2
    ds.PixelData = bytes(ds.PixelData[:new]) + b"\0" * max(0, new - length)
    _save(ds, f)
    return Mutation("dicom_pixels", f"PixelData of {f.name} set to {new} of {length} bytes")


def op_dicom_frames(rng, case: Case) -> Mutation:
    """Enhanced multi-frame files: geometry and rescale inside the functional groups of one frame."""
    f = case.dicom_files()[0]
    ds = _read(f)
    seq = ds.get("PerFrameFunctionalGroupsSequence", None)
    if not seq:
        return op_dicom_extreme(rng, case)
    k = int(rng.integers(len(seq)))
    group, keyword = [("PlanePositionSequence", "ImagePositionPatient"),
                      ("PlaneOrientationSequence", "ImageOrientationPatient"),
                      ("PixelMeasuresSequence", "PixelSpacing"),
                      ("PixelValueTransformationSequence", "RescaleSlope")][int(rng.integers(4))]
    item = seq[k].get(group, None)
    shared = ds.get("SharedFunctionalGroupsSequence", None)
    if not item and shared and shared[0].get(group, None):
        item, k = shared[0].get(group), "shared"
    if not item:
        return op_dicom_extreme(rng, case)
    value = _dicom_value(rng, keyword)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if rng.random() < 0.3 and keyword in item[0]:
            delattr(item[0], keyword)
            value = "deleted"
        else:
            _put_keyword(item[0], keyword, value)
    _save(ds, f)
    return Mutation("dicom_frame_groups", f"frame {k} {group}.{keyword}={value!r} in {f.name}")


def op_dicom_harmless(rng, case: Case) -> Mutation:
    keyword = str(rng.choice(_HARMLESS + ("noop",)))
    files, where = _targets(rng, case)
    for f in files:
        ds = _read(f)
        if keyword != "noop":
            setattr(ds, keyword, "Fuzz^Ñame \\ ../../x" if keyword == "PatientName" else "fuzz ünïcode ../x")
        _save(ds, f)
    return Mutation("dicom_harmless", f"{keyword} in {where}", expect="same")


# --- NIfTI ----------------------------------------------------------------------------------------------------------
_NIFTI_FIELDS = ("dim", "pixdim", "datatype", "bitpix", "vox_offset", "scl_slope", "scl_inter", "qform_code",
                 "sform_code", "quatern_b", "quatern_c", "quatern_d", "qoffset_x", "qoffset_z", "srow_x", "srow_z",
                 "sizeof_hdr", "magic", "dim_info", "xyzt_units")
_NIFTI_HARMLESS = ("descrip", "cal_max", "cal_min", "aux_file", "intent_name", "glmax")


def _nifti_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if path.name.endswith(".gz") else data


def _nifti_write(path: Path, raw: bytes) -> None:
    path.write_bytes(gzip.compress(raw, compresslevel=1) if path.name.endswith(".gz") else raw)


def _nifti_header(raw: bytes) -> np.ndarray:
    import nibabel as nib

    dt = nib.nifti1.header_dtype
    hdr = np.frombuffer(raw[:348], dtype=dt).copy()
    if int(hdr["sizeof_hdr"][0]) != 348:
        hdr = np.frombuffer(raw[:348], dtype=dt.newbyteorder()).copy()
    return hdr


def _set_field(hdr: np.ndarray, field: str, rng: np.random.Generator) -> str:
    arr = hdr[field]
    kind = arr.dtype.base.kind if arr.dtype.subdtype is None else arr.dtype.subdtype[0].kind
    shape = arr.shape[1:]
    index = tuple(int(rng.integers(s)) for s in shape)
    if kind == "S":
        value = rng.choice([b"", b"n+2\0", b"ni1\0", b"\xff\xff\xff\xff", b"fuzz"])
    elif kind == "f":
        value = float(rng.choice([0.0, -1.0, 1e38, -1e38, np.nan, np.inf, -np.inf, 1e-30, 0.5, 7.0]))
    else:
        info = np.iinfo(arr.dtype.base if arr.dtype.subdtype is None else arr.dtype.subdtype[0])
        value = int(np.clip(rng.choice([0, 1, -1, 2, 3, 4, 5, 8, 16, 64, 255, 2 ** 15 - 1, 2 ** 31 - 1]),
                            info.min, info.max))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if shape:
            hdr[field][(0,) + index] = value
        else:
            hdr[field] = value
    return f"{field}{list(index) if shape else ''}={value!r}"


def op_nifti_field(rng, case: Case) -> Mutation:
    raw = _nifti_bytes(case.path)
    hdr = _nifti_header(raw)
    detail = _set_field(hdr, str(rng.choice(_NIFTI_FIELDS)), rng)
    _nifti_write(case.path, hdr.tobytes() + raw[348:])
    return Mutation("nifti_field", detail)


def op_nifti_harmless(rng, case: Case) -> Mutation:
    raw = _nifti_bytes(case.path)
    hdr = _nifti_header(raw)
    field = str(rng.choice(_NIFTI_HARMLESS + ("noop",)))
    detail = "re-saved unchanged" if field == "noop" else _set_field(hdr, field, rng)
    _nifti_write(case.path, hdr.tobytes() + raw[348:])
    return Mutation("nifti_harmless", detail, expect="same")


def op_nifti_data(rng, case: Case) -> Mutation:
    raw = bytearray(_nifti_bytes(case.path))
    what = str(rng.choice(["truncate", "bit_flips", "append_junk", "gzip_cut", "gzip_flip", "two_members"]))
    if what == "truncate":
        keep = int(rng.integers(0, len(raw)))
        _nifti_write(case.path, bytes(raw[:keep]))
        return Mutation("nifti_data", f"truncated to {keep} of {len(raw)} bytes")
    if what == "bit_flips":
        for _ in range(int(rng.integers(1, 64))):
            k = 352 + int(rng.integers(len(raw) - 352))
            raw[k] ^= 1 << int(rng.integers(8))
        _nifti_write(case.path, bytes(raw))
        return Mutation("nifti_data", "bit flips in the voxel data")
    if what == "append_junk":
        _nifti_write(case.path, bytes(raw) + b"\x7f" * int(rng.integers(1, 5000)))
        return Mutation("nifti_data", "junk appended after the voxel data", expect="same")
    if not case.path.name.endswith(".gz"):
        return op_nifti_field(rng, case)
    blob = bytearray(case.path.read_bytes())
    if what == "gzip_cut":
        keep = int(rng.integers(0, len(blob)))
        case.path.write_bytes(bytes(blob[:keep]))
        return Mutation("nifti_data", f"gzip stream cut to {keep} of {len(blob)} bytes")
    if what == "gzip_flip":
        k = int(rng.integers(10, len(blob)))
        blob[k] ^= 1 << int(rng.integers(8))
        case.path.write_bytes(bytes(blob))
        return Mutation("nifti_data", f"one bit flipped in the gzip stream at byte {k}")
    half = len(raw) // 2
    case.path.write_bytes(gzip.compress(bytes(raw[:half])) + gzip.compress(bytes(raw[half:])))
    return Mutation("nifti_data", "the same bytes as two gzip members", expect="same")


# --- NRRD -----------------------------------------------------------------------------------------------------------
_NRRD_EXTREMES = {
    "type": ["block", "foo", "double", "uchar", "short", "", "float"],
    "dimension": ["0", "2", "4", "-1", "abc", "99"],
    "sizes": ["0 48 30", "-1 48 30", "99999 99999 99999", "48 48", "48 48 30 2", "48 48 nan", "1 1 1", ""],
    "encoding": ["raw", "gzip", "bzip2", "ascii", "hex", "foo", ""],
    "endian": ["big", "little", "middle", ""],
    "space directions": ["(0,0,0) (0,4,0) (0,0,4)", "(nan,0,0) (0,4,0) (0,0,4)", "(inf,0,0) (0,4,0) (0,0,4)",
                         "(4,0,0) (4,0,0) (0,0,4)", "none none none", "(1e308,0,0) (0,4,0) (0,0,4)",
                         "(-4,0,0) (0,4,0) (0,0,4)", "(4,0,0) (0,4,0)", "garbage"],
    "space origin": ["(nan,0,0)", "(inf,0,0)", "(1e308,0,0)", "(0,0)", "garbage", "(0,0,0)"],
    "space": ["right-anterior-superior", "left-posterior-superior", "scanner-xyz", "weird", ""],
    "data file": ["../outside.raw", "/etc/hostname", "missing.raw", "LIST", "PET%03d.raw 1 3 1", ""],
    "byte skip": ["-1", "0", "100", "99999999", "abc"],
}


def _nrrd_parts(path: Path) -> tuple[list[str], bytes]:
    from fusionmamba_med.io.size_checks import read_nrrd_header

    _, start = read_nrrd_header(path)
    blob = path.read_bytes()
    return blob[:start].decode("latin-1").rstrip("\n").split("\n"), blob[start:]


def _nrrd_write(path: Path, lines: list[str], data: bytes) -> None:
    path.write_bytes(("\n".join(lines) + "\n" + ("\n" if data or path.suffix == ".nrrd" else "")).encode("latin-1")
                     + data)


def op_nrrd_field(rng, case: Case) -> Mutation:
    lines, data = _nrrd_parts(case.path)
    field = str(rng.choice(list(_NRRD_EXTREMES)))
    keys = [line.split(":")[0].strip().lower() for line in lines]
    if field in keys and rng.random() < 0.3:
        del lines[keys.index(field)]
        detail = f"'{field}' deleted"
    else:
        value = str(rng.choice(_NRRD_EXTREMES[field]))
        line = f"{field}: {value}"
        if field in keys:
            lines[keys.index(field)] = line
        else:
            lines.append(line)
        detail = f"'{field}: {value}'"
    _nrrd_write(case.path, lines, data)
    return Mutation("nrrd_field", detail)


def op_nrrd_data(rng, case: Case) -> Mutation:
    lines, data = _nrrd_parts(case.path)
    target = case.path if data else case.path.parent / case.source.extra[0].name
    blob = bytearray(data if data else target.read_bytes())
    what = str(rng.choice(["truncate", "bit_flips", "append_junk"]))
    if what == "truncate":
        keep = int(rng.integers(0, len(blob)))
        blob = blob[:keep]
        detail = f"data truncated to {keep} of {len(data or target.read_bytes())} bytes"
    elif what == "bit_flips":
        for _ in range(int(rng.integers(1, 64))):
            blob[int(rng.integers(len(blob)))] ^= 1 << int(rng.integers(8))
        detail = "bit flips in the data"
    else:
        blob += b"\x01" * int(rng.integers(1, 3000))
        detail = "junk appended after the data"
    if data:
        _nrrd_write(case.path, lines, bytes(blob))
    else:
        target.write_bytes(bytes(blob))
    return Mutation("nrrd_data", detail, expect="same" if what == "append_junk" else "reference")


def op_nrrd_harmless(rng, case: Case) -> Mutation:
    lines, data = _nrrd_parts(case.path)
    what = str(rng.choice(["comment", "key_value", "noop", "kinds"]))
    if what == "comment":
        lines.insert(1 + int(rng.integers(len(lines))), "# fuzz comment: ../../etc")
    elif what == "key_value":
        lines.append("fuzz_key:=../../value")
    elif what == "kinds":
        lines.append("labels: \"x\" \"y\" \"z\"")
    _nrrd_write(case.path, lines, data)
    return Mutation("nrrd_harmless", what, expect="same")


#: operator name -> (source kinds it applies to, function(rng, case) -> Mutation, weight)
OPERATORS: dict[str, tuple[tuple[str, ...], Callable, float]] = {
    "dicom_delete": (("dicom",), op_dicom_delete, 1.0),
    "dicom_extreme": (("dicom",), op_dicom_extreme, 2.0),
    "dicom_retype": (("dicom",), op_dicom_retype, 1.0),
    "dicom_transfer_syntax": (("dicom",), op_dicom_syntax, 0.7),
    "dicom_slices": (("dicom",), op_dicom_slices, 1.0),
    "dicom_pixels": (("dicom",), op_dicom_pixels, 1.0),
    "dicom_frame_groups": (("dicom",), op_dicom_frames, 0.3),
    "dicom_harmless": (("dicom",), op_dicom_harmless, 0.5),
    "nifti_field": (("nifti",), op_nifti_field, 3.0),
    "nifti_data": (("nifti",), op_nifti_data, 1.5),
    "nifti_harmless": (("nifti",), op_nifti_harmless, 0.5),
    "nrrd_field": (("nrrd",), op_nrrd_field, 3.0),
    "nrrd_data": (("nrrd",), op_nrrd_data, 1.5),
    "nrrd_harmless": (("nrrd",), op_nrrd_harmless, 0.5),
}


def choose_operator(rng: np.random.Generator, source: Source) -> str:
    names = [n for n, (kinds, _, _) in OPERATORS.items() if source.kind in kinds]
    if source.name.endswith("xa30_t1") and rng.random() < 0.4:
        return "dicom_frame_groups"
    weights = np.asarray([OPERATORS[n][2] for n in names])
    return str(rng.choice(names, p=weights / weights.sum()))


# ---------------------------------------------------------------------------------------------------------------------
# Reference readers: what the header of a (mutated) input says, read without our loader
# ---------------------------------------------------------------------------------------------------------------------
def _lps_to_ras(aff: np.ndarray) -> np.ndarray:
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ aff


def reference_nifti(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(X, Y, Z) float voxels (scaled) and RAS affine, as nibabel reads the file."""
    import nibabel as nib

    img = nib.load(str(path))
    data = np.asanyarray(img.dataobj).astype(np.float64)
    data = data.reshape(data.shape[:3] + (1,) * max(0, 3 - data.ndim)) if data.ndim <= 3 else data.reshape(
        data.shape[:3])
    return data, np.asarray(img.affine, dtype=np.float64)


_NRRD_DTYPES = {"float": "f4", "double": "f8", "short": "i2", "ushort": "u2", "unsigned short": "u2", "int": "i4",
                "uint": "u4", "uchar": "u1", "unsigned char": "u1", "signed char": "i1", "char": "i1"}


def reference_nrrd(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(X, Y, Z) voxels and RAS affine of a raw / gzip NRRD in LPS or RAS space, read with numpy (x fastest)."""
    from fusionmamba_med.io.size_checks import read_nrrd_header

    fields, start = read_nrrd_header(path)
    sizes = [int(s) for s in fields["sizes"].split()]
    if len(sizes) != 3 or int(fields.get("dimension", 3)) != 3:
        raise ValueError("not a 3D NRRD")
    dtype = np.dtype(_NRRD_DTYPES[fields["type"].strip()]).newbyteorder(
        ">" if fields.get("endian", "little").strip() == "big" else "<")
    name = fields.get("data file")
    src, offset = (path.parent / name, 0) if name else (path, start)
    blob = src.read_bytes()[offset:]
    encoding = fields.get("encoding", "raw").strip()
    if encoding in ("gzip", "gz"):
        blob = gzip.decompress(blob)
    elif encoding != "raw":
        raise ValueError(f"encoding {encoding}")
    skip = int(fields.get("byte skip", 0))
    n = int(np.prod(sizes))
    blob = blob[len(blob) - n * dtype.itemsize:] if skip == -1 else blob[skip:]
    data = np.frombuffer(blob[: n * dtype.itemsize], dtype=dtype).reshape(sizes[::-1]).T.astype(np.float64)
    dirs = [np.asarray([float(v) for v in d.strip("()").split(",")]) for d in fields["space directions"].split()]
    origin = np.asarray([float(v) for v in fields.get("space origin", "(0,0,0)").strip("()").split(",")])
    aff = np.eye(4)
    aff[:3, :3] = np.stack(dirs, axis=1)
    aff[:3, 3] = origin
    space = fields.get("space", "left-posterior-superior").strip()
    if space in ("left-posterior-superior", "LPS"):
        aff = _lps_to_ras(aff)
    elif space not in ("right-anterior-superior", "RAS"):
        raise ValueError(f"space {space}")
    return data, aff


def reference_dicom(files: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(X, Y, Z) voxels (each slice's stored * slope + intercept) and RAS affine of a classic single-frame series,
    read with pydicom: slices sorted along the normal of their ImageOrientationPatient, the slice step the mean gap."""
    pydicom = _dcm()
    slices = [pydicom.dcmread(f) for f in files]
    iop = np.asarray([float(v) for v in slices[0].ImageOrientationPatient])
    row, col = iop[:3], iop[3:]
    normal = np.cross(row, col)
    pos = np.asarray([[float(v) for v in s.ImagePositionPatient] for s in slices])
    order = np.argsort(pos @ normal, kind="stable")
    planes = []
    for k in order:
        s = slices[k]
        slope = float(s.get("RescaleSlope", 1) or 1) or 1.0
        planes.append(s.pixel_array.astype(np.float64).T * slope + float(s.get("RescaleIntercept", 0) or 0))
    data = np.stack(planes, axis=-1)
    ps = [float(v) for v in slices[0].PixelSpacing]
    if len(files) > 1:
        step = float((pos[order[-1]] - pos[order[0]]) @ normal) / (len(files) - 1)
    else:
        step = next((float(slices[0].get(k)) for k in ("SpacingBetweenSlices", "SliceThickness")
                     if slices[0].get(k) not in (None, "") and float(slices[0].get(k)) > 0), None)
    aff = np.eye(4)
    aff[:3, 0], aff[:3, 1], aff[:3, 3] = row * ps[1], col * ps[0], pos[order[0]]
    aff[:3, 2] = normal * (step if step is not None else 1.0)
    return data, _lps_to_ras(aff)


def reference_mosaic(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(X, Y, Z) voxels and RAS affine of one Siemens mosaic, unpacked by nibabel's DICOM wrapper (pixels decoded by
    pydicom: an independent decoder; the geometry is the wrapper's, as the loader's)."""
    from nibabel.nicom import dicomwrappers

    ds = _dcm().dcmread(path)
    if "RescaleSlope" in ds and float(ds.RescaleSlope) == 0:  # slope 0 reads as 1 (dcm2niix; the loader's rule)
        ds.RescaleSlope = 1
    wrapper = dicomwrappers.wrapper_from_data(ds)
    data = np.asarray(wrapper.get_data(), dtype=np.float64).transpose(1, 0, 2)  # (row, col, slice) -> (x, y, z)
    lps = np.asarray(wrapper.affine, dtype=np.float64)[:, [1, 0, 2, 3]]
    return data, _lps_to_ras(lps)


def _fill_non_finite(data: np.ndarray) -> np.ndarray:
    finite = np.isfinite(data)
    return data if finite.all() or not finite.any() else np.where(finite, data, data[finite].min())


def agree(data: np.ndarray, aff: np.ndarray, ref_data: np.ndarray, ref_aff: np.ndarray) -> str | None:
    """Why the loaded volume (X, Y, Z) / affine disagrees with a reference (within 1e-3 of the value range and 1e-3 of
    the affine scale), or None."""
    if tuple(data.shape) != tuple(ref_data.shape):
        return f"shape {tuple(data.shape)} but the reference reads {tuple(ref_data.shape)}"
    scale = max(1.0, float(np.abs(ref_aff).max()))
    if not np.allclose(aff, ref_aff, atol=1e-3 * scale, rtol=0):
        return f"affine differs from the reference by {float(np.abs(aff - ref_aff).max()):.4g}"
    ref = _fill_non_finite(ref_data)
    span = float(np.nanmax(np.abs(ref))) if np.isfinite(ref).any() else 1.0
    bad = ~np.isclose(data, ref, rtol=1e-4, atol=1e-4 * max(1.0, span))
    if bad.any():
        return f"{int(bad.sum())} voxels differ from the reference (max {float(np.nanmax(np.abs(data - ref))):.4g})"
    return None


def reference_of(kind: str, path: Path, img) -> tuple[np.ndarray, np.ndarray] | None:
    """The reference reading of ``path`` for a loaded ``img``, or None where no reference reader applies (mosaic,
    enhanced multi-frame, compressed DICOM pydicom cannot decode, NRRD encodings other than raw/gzip)."""
    try:
        if kind == "nifti":
            return reference_nifti(path)
        if kind == "nrrd":
            return reference_nrrd(path)
        if img.meta.get("multiframe_frames"):
            return None
        if img.meta.get("mosaic_images"):
            return reference_mosaic(Path(img.meta["dicom_files"][0]))
        return reference_dicom([str(f) for f in img.meta["dicom_files"]])
    except Exception:
        return None


# ---------------------------------------------------------------------------------------------------------------------
# Running one case in a forked child
# ---------------------------------------------------------------------------------------------------------------------
def _vm_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _in_child(job: Callable[[], dict], timeout_s: float, mem_limit_mb: int) -> dict:
    """Run ``job`` in a forked child with an address-space limit (its size now + ``mem_limit_mb``) and a wall-clock
    limit; its dict result, or ``{"outcome": "timeout" | "crash" | "memory", ...}``."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read_fd)
        code = 0
        try:
            resource.setrlimit(resource.RLIMIT_AS, (_vm_bytes() + (mem_limit_mb << 20), resource.RLIM_INFINITY))
            result = job()
        except MemoryError as err:
            result = {"outcome": "memory", "detail": f"MemoryError {err}"[:300]}
        except BaseException as err:  # noqa: BLE001 - everything is recorded
            result = {"outcome": "other exception", "detail": f"harness: {type(err).__name__}: {err}"[:500]}
        try:
            os.write(write_fd, json.dumps(result, default=str).encode())
        except BaseException:
            code = 3
        os._exit(code)
    os.close(write_fd)
    chunks, deadline = [], time.monotonic() + timeout_s
    with os.fdopen(read_fd, "rb") as pipe:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return {"outcome": "timeout", "detail": f"no result within {timeout_s:g} s"}
            ready, _, _ = select.select([pipe], [], [], min(left, 1.0))
            if ready:
                chunk = os.read(pipe.fileno(), 1 << 16)
                if not chunk:
                    break
                chunks.append(chunk)
    _, status = os.waitpid(pid, 0)
    if chunks:
        try:
            return json.loads(b"".join(chunks))
        except ValueError:
            pass
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        return {"outcome": "crash", "detail": f"killed by signal {signal.Signals(sig).name}"}
    return {"outcome": "crash", "detail": f"exit status {os.WEXITSTATUS(status)} without a result"}


def _sane(img) -> str | None:
    """Why a loaded volume is malformed (shape, dtype, non-finite voxels or affine, singular affine), or None."""
    import torch

    if img.ndim != 4 or img.shape[0] != 1 or min(img.shape) < 1:
        return f"shape {tuple(img.shape)}"
    if img.dtype != torch.float32:
        return f"dtype {img.dtype}"
    if not bool(torch.isfinite(img).all()):
        return "non-finite voxels"
    aff = np.asarray(img.affine, dtype=np.float64)
    if aff.shape != (4, 4) or not np.isfinite(aff).all() or abs(np.linalg.det(aff[:3, :3])) < 1e-12:
        return "non-finite or singular affine"
    return None


def _names_case(err, study: str, case_dir: Path) -> bool:
    """Whether a FusionInputError names the study and a file or folder inside the case."""
    if err.study != study or not err.path:
        return False
    try:
        inside = Path(err.path).resolve().is_relative_to(case_dir.resolve())
    except OSError:
        inside = False
    return inside and f"study '{study}'" in str(err) and str(err.path) in str(err)


def load_and_classify(kind: str, path: Path, study: str, case_dir: Path, expect: str,
                      baseline: Path | None, max_voxels: int) -> dict:
    """Load ``path`` (in the child) and classify the outcome against the baseline (``expect == "same"``) or the
    reference reader."""
    from fusionmamba_med.errors import FusionInputError
    from fusionmamba_med.io import load_volume

    logging_off()
    try:
        img = load_volume(path, study=study, max_voxels=max_voxels)
    except FusionInputError as err:
        if not _names_case(err, study, case_dir):
            return {"outcome": "other exception", "detail": f"FusionInputError not naming study and file: {err}"}
        base = _baseline(baseline)
        note = "refused a harmless change" if expect == "same" and base is not None and base[0] != "refused" else ""
        return {"outcome": "clear refusal", "detail": str(err.message)[:400], "note": note}
    except MemoryError as err:
        return {"outcome": "memory", "detail": f"MemoryError {err}"[:300]}
    except Exception as err:  # noqa: BLE001
        memory = "bad_alloc" in str(err) or "Cannot allocate" in str(err)
        return {"outcome": "memory" if memory else "other exception",
                "detail": f"{type(err).__name__}: {err}"[:500], "trace": traceback.format_exc()[-1500:]}
    why = _sane(img)
    if why is not None:
        return {"outcome": "silently wrong", "detail": f"malformed volume: {why}"}
    data, aff = img.numpy()[0].astype(np.float64), np.asarray(img.affine, dtype=np.float64)
    if expect == "same":
        base = _baseline(baseline)
        if base is None or base[0] == "refused":
            return {"outcome": "silently wrong", "detail": "loaded after a harmless change of an input it refuses"}
        diff = agree(data, aff, base[1], base[2])
        return {"outcome": "silently wrong", "detail": f"harmless change, but {diff}"} if diff else {
            "outcome": "correct output", "verified": "baseline"}
    ref = reference_of(kind, path, img)
    if ref is None:
        return {"outcome": "correct output", "verified": "sanity"}
    diff = agree(data, aff, *ref)
    if diff is None:
        return {"outcome": "correct output", "verified": "reference"}
    return {"outcome": "silently wrong", "detail": diff}


def logging_off() -> None:
    import logging

    logging.disable(logging.WARNING)
    warnings.simplefilter("ignore")


def _baseline(path: Path | None):
    """("loaded", data, affine) or ("refused", None, None) from a baseline file; None without one."""
    if path is None or not path.exists():
        return None
    with np.load(path) as z:
        if "refused" in z.files:
            return "refused", None, None
        return "loaded", z["data"], z["affine"]


def make_baseline(source: Source, out: Path, timeout_s: float, mem_limit_mb: int, max_voxels: int) -> dict:
    """Load the unmutated ``source`` in a child and keep its voxels and affine (or its refusal) in ``out`` (.npz)."""

    def job() -> dict:
        from fusionmamba_med.errors import FusionInputError
        from fusionmamba_med.io import load_volume

        logging_off()
        try:
            img = load_volume(source.path, study="baseline", max_voxels=max_voxels)
        except FusionInputError as err:
            np.savez(out, refused=np.asarray(1))
            return {"outcome": "refused", "detail": err.message[:200]}
        data, aff = img.numpy()[0].astype(np.float64), np.asarray(img.affine, dtype=np.float64)
        np.savez(out, data=data, affine=aff)
        ref = reference_of(source.kind, source.path, img)
        return {"outcome": "loaded", "shape": list(data.shape),
                "reference": None if ref is None else (agree(data, aff, *ref) or "agrees")}

    return _in_child(job, timeout_s, mem_limit_mb)


# ---------------------------------------------------------------------------------------------------------------------
# The user's whole command on a study holding the mutated input
# ---------------------------------------------------------------------------------------------------------------------
def run_command_case(case: Case, study: str, work: Path, timeout_s: float) -> dict:
    """Run the pet_mri bundle on a dataset of one study made of the mutated input (as MR or as PET) and the sample
    study's other image; the study must be fused, or failed with a reason naming the study and a file."""
    root = work / "command"
    shutil.rmtree(root, ignore_errors=True)
    folder = root / "dataset" / study
    folder.mkdir(parents=True)
    sample = REPO / "sample_data" / "pet_mri" / "study01"
    if case.source.kind == "dicom":
        shutil.copytree(case.path, folder / "MR")
        shutil.copy2(sample / "PET.nrrd", folder / "PET.nrrd")
    else:
        shutil.copytree(sample / "MR", folder / "MR")
        suffix = "".join(case.path.suffixes[-2:]) if case.path.name.endswith(".gz") else case.path.suffix
        for f in case.path.parent.iterdir():
            if f.is_file() and f != case.path:
                shutil.copy2(f, folder / f.name)
        shutil.copy2(case.path, folder / f"PET{suffix}")  # a detached data file keeps its name, as its header says
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", "bundles/pet_mri/inference.json",
           "--dataset_dir", str(root / "dataset"), "--output_dir", str(root / "out"), "--device", "cpu"]
    start = time.monotonic()
    try:
        run = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"command_outcome": "timeout", "command_detail": f"no end within {timeout_s:g} s"}
    seconds = round(time.monotonic() - start, 1)
    summary = root / "out" / "fusion_summary.json"
    if run.returncode not in (0, 1) or not summary.is_file():  # exit 1: "N studies failed; see the summary"
        tail = (run.stderr or run.stdout).strip().splitlines()[-1:] or [""]
        return {"command_outcome": "crash", "command_detail": f"exit {run.returncode}: {tail[0][:300]}",
                "command_s": seconds}
    entries = [s for s in json.loads(summary.read_text()).get("studies", [])
               if study in (s.get("study"), s.get("study_id"))]
    if not entries:
        return {"command_outcome": "other exception", "command_detail": "study absent from fusion_summary.json",
                "command_s": seconds}
    entry = entries[0]
    if entry.get("status") == "fused":
        ok = run.returncode == 0
        return {"command_outcome": "correct output" if ok else "other exception", "command_s": seconds,
                **({} if ok else {"command_detail": f"fused, but exit status {run.returncode}"})}
    reason = str(entry.get("reason", entry.get("error", "")))
    named = study in reason and str(root / "dataset" / study) in reason
    return {"command_outcome": "clear refusal" if entry.get("status") == "failed" and named else "other exception",
            "command_detail": reason[:400], "command_s": seconds}


# ---------------------------------------------------------------------------------------------------------------------
# The campaign
# ---------------------------------------------------------------------------------------------------------------------
def run_case(index: int, seed: int, sources: list[Source], baselines: dict[str, Path], work: Path,
             timeout_s: float = 60.0, mem_limit_mb: int = 2048, max_voxels: int = 64 * 1024 ** 2,
             through_command: bool = False, command_timeout_s: float = 600.0) -> dict:
    """Mutate one source (chosen, like the operator, by ``seed`` and ``index`` alone, so a case can be rerun on its
    own) and classify the loader's outcome."""
    rng = np.random.default_rng([seed, index])
    source = sources[int(rng.integers(len(sources)))]
    op = choose_operator(rng, source)
    study = f"fz{index:05d}"
    case_dir = work / "cases" / study
    shutil.rmtree(case_dir, ignore_errors=True)
    case = Case(source, case_dir)
    record = {"index": index, "source": source.name, "op": op}
    try:
        mutation = OPERATORS[op][1](rng, case)
    except Exception as err:  # noqa: BLE001 - a mutation that cannot be made is recorded, not fatal
        record.update({"outcome": "skipped", "detail": f"mutation failed: {type(err).__name__}: {err}"[:300]})
        shutil.rmtree(case_dir, ignore_errors=True)
        return record
    record.update({"op": mutation.op, "mutation": mutation.detail, "expect": mutation.expect})
    baseline = baselines.get(source.name)
    t0 = time.monotonic()
    result = _in_child(lambda: load_and_classify(source.kind, case.path, study, case_dir, mutation.expect, baseline,
                                                 max_voxels), timeout_s, mem_limit_mb)
    record.update(result)
    record["seconds"] = round(time.monotonic() - t0, 3)
    if through_command:
        record.update(run_command_case(case, study, work, command_timeout_s))
    if record["outcome"] in GOOD and record.get("command_outcome", "correct output") in GOOD:
        shutil.rmtree(case_dir, ignore_errors=True)
    return record


def warm_up() -> None:
    """Import the readers and load each kind of sample once in this process, so that forked children start warm;
    one ITK and one torch thread, so that no thread pool is forked mid-use. Meant for the harness's own process (the
    CLI): it changes that process's thread settings."""
    os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    from fusionmamba_med.io import load_volume

    sample = REPO / "sample_data"
    for path in (sample / "spect_mri" / "study01" / "SPECT.nii.gz", sample / "pet_mri" / "study01" / "PET.nrrd",
                 sample / "spect_mri" / "study01" / "MR"):
        load_volume(path, study="warm-up")


def run_campaign(count: int, seed: int, work: Path, through_command: int = 0, timeout_s: float = 60.0,
                 mem_limit_mb: int = 2048, use_qa: bool = True, log=None, start: int = 0,
                 command_cases_only: bool = False) -> dict:
    """Run ``count`` cases (indices ``start``..; with ``command_cases_only`` only every ``through_command``-th, each
    also through the whole command) and return the per-case records with the counts by outcome."""
    t0 = time.monotonic()
    warm_up()
    sources = discover_sources(work, use_qa)
    (work / "baselines").mkdir(parents=True, exist_ok=True)
    baselines, base_info = {}, {}
    for s in sources:
        path = work / "baselines" / (s.name.replace("/", "_") + ".npz")
        base_info[s.name] = make_baseline(s, path, timeout_s, mem_limit_mb, 64 * 1024 ** 2)
        baselines[s.name] = path
    records = []
    for i in range(start, start + count):
        every = through_command > 0 and (i - start) % through_command == 0
        if command_cases_only and not every:
            continue
        rec = run_case(i, seed, sources, baselines, work, timeout_s, mem_limit_mb, through_command=every)
        records.append(rec)
        if log is not None:
            log(rec)
    counts = Counter(r["outcome"] for r in records)
    count = len(records)
    command_counts = Counter(r["command_outcome"] for r in records if "command_outcome" in r)
    return {"seed": seed, "count": count, "start": start, "wall_s": round(time.monotonic() - t0, 1),
            "sources": [s.name for s in sources], "baselines": base_info,
            "counts": {k: counts.get(k, 0) for k in OUTCOMES + ("skipped",)},
            "command_counts": dict(command_counts),
            "verified": dict(Counter(r.get("verified") for r in records if r["outcome"] == "correct output")),
            "refused_harmless": sum(1 for r in records if r.get("note")),
            "by_op": {op: dict(Counter(r["outcome"] for r in records if r["op"] == op))
                      for op in sorted({r["op"] for r in records})},
            "bad": [r for r in records if r["outcome"] not in GOOD + ("skipped",)
                    or r.get("command_outcome", "correct output") not in GOOD],
            "cases": records}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--start", type=int, default=0, help="first case index (rerun one case: --start I --count 1)")
    parser.add_argument("--out", type=Path, default=Path("fuzz_inputs.json"))
    parser.add_argument("--through-command", type=int, default=0, metavar="N",
                        help="every N-th case also runs the whole bundle command (0: never)")
    parser.add_argument("--command-cases-only", action="store_true",
                        help="run only the cases that go through the command (every N-th of --through-command N)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per load")
    parser.add_argument("--mem-limit-mb", type=int, default=2048, help="address space a load may add")
    parser.add_argument("--no-qa", action="store_true", help="only the sample data, not ../shared/dicom_qa")
    parser.add_argument("--work", type=Path, default=None, help="work folder (default: a temporary one)")
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="fuzz_inputs_"))
    command = " ".join(["python", "benchmarks/fuzz_inputs.py"] + (argv if argv is not None else sys.argv[1:]))

    def log(rec: dict) -> None:
        if rec["outcome"] not in GOOD + ("skipped",) or rec.get("command_outcome", "correct output") not in GOOD:
            print(json.dumps({k: rec.get(k) for k in ("index", "source", "op", "mutation", "outcome", "detail",
                                                      "command_outcome", "command_detail")}), flush=True)
        elif rec["index"] % 100 == 0:
            print(f"case {rec['index']}", flush=True)

    report = run_campaign(args.count, args.seed, work, args.through_command, args.timeout, args.mem_limit_mb,
                          not args.no_qa, log, args.start, args.command_cases_only)
    report["command"] = command
    args.out.write_text(json.dumps(report, indent=1, default=str))
    print(json.dumps({k: report[k] for k in ("seed", "count", "wall_s", "counts", "command_counts", "verified",
                                             "refused_harmless")}))
    return 0 if not report["bad"] else 1


if __name__ == "__main__":
    sys.exit(main())
