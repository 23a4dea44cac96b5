"""Sizes checked before memory is taken: what a header declares against the bytes its file really holds.

A damaged or hostile header can declare far more voxels than its file holds (a few-KB NIfTI declaring 2000^3
float32); readers allocate the declared size first and only then find the data short. Each function here compares
the declared size with what is present, reading at most the declared number of bytes (gzip streams are decompressed
in chunks and counted, never held), and returns a sentence saying what is wrong, or ``None``:

- :func:`dicom_pixel_problem`: Rows x Columns x SamplesPerPixel x BitsAllocated / 8 x NumberOfFrames against the
  PixelData element and the file (native transfer syntaxes); for encapsulated (compressed) pixel data, the frame count
  against the basic offset table / fragments;
- :func:`nifti_size_problem`: vox_offset + declared data bytes against the file (.nii) or the decompressed stream
  (.nii.gz: a capped streaming count);
- :func:`nrrd_size_problem`: NRRD sizes x type against the attached or detached data (raw, gzip, bzip2; ascii and hex
  by a lower bound), the detached file confined to the header's folder.

The voxel budget (``max_voxels``) is checked by the callers from the same headers, before any of these reads.
"""

from __future__ import annotations

import bz2
import gzip
import math
import os
import zlib
from pathlib import Path
from typing import IO, Mapping

__all__ = [
    "dicom_declared_bytes",
    "dicom_pixel_problem",
    "nifti_size_problem",
    "read_nrrd_header",
    "nrrd_size_problem",
]

_PIXEL_DATA = 0x7FE00010
_UNDEFINED = 0xFFFFFFFF
_CHUNK = 1 << 20
_NATIVE_SYNTAXES = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2")
_DEFLATED = "1.2.840.10008.1.2.1.99"
_BITS_ALLOCATED = (1, 8, 16, 32, 64)


# ---------------------------------------------------------------------------------------------------------------------
# Streams
# ---------------------------------------------------------------------------------------------------------------------
def _compressed_holds(path: Path, offset: int, needed: int, codec: str) -> int:
    """Decompressed bytes available from ``path`` starting at byte ``offset`` (counted up to ``needed``)."""
    with open(path, "rb") as raw:
        raw.seek(offset)
        try:
            with (gzip.GzipFile(fileobj=raw, mode="rb") if codec == "gzip" else bz2.BZ2File(raw, mode="rb")) as stream:
                return _count_until_error(stream, needed)
        except (OSError, EOFError, zlib.error, ValueError):
            return 0


def _count_until_error(stream: IO[bytes], needed: int) -> int:
    """How many bytes ``stream`` yields, counting at most ``needed`` (1 MiB chunks, nothing kept); a damaged or cut
    stream ends the count instead of raising."""
    got = 0
    while got < needed:
        try:
            chunk = stream.read(min(_CHUNK, needed - got))
        except (OSError, EOFError, zlib.error, ValueError):
            break
        if not chunk:
            break
        got += len(chunk)
    return got


# ---------------------------------------------------------------------------------------------------------------------
# DICOM
# ---------------------------------------------------------------------------------------------------------------------
def _int_tag(ds, keyword: str, default: int) -> int | None:
    """An integer tag of ``ds`` (``default`` when absent), or None when it is not an integer."""
    value = ds.get(keyword, None)
    if value in (None, ""):
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if math.isfinite(number) and number == int(number) else None


def dicom_declared_bytes(ds) -> tuple[int, str] | str:
    """``(bytes, description)`` that the pixel description of ``ds`` declares for its pixel data (all frames), or a
    sentence saying which pixel tag is invalid."""
    fields = {k: _int_tag(ds, k, d) for k, d in (("Rows", 0), ("Columns", 0), ("SamplesPerPixel", 1),
                                                 ("BitsAllocated", 0), ("NumberOfFrames", 1))}
    bad = [k for k, v in fields.items() if v is None or v < (0 if k in ("Rows", "Columns") else 1)]
    if bad:
        return f"invalid {', '.join(bad)} ({', '.join(str(ds.get(k, None)) for k in bad)})"
    rows, cols, spp, bits, frames = (fields[k] for k in ("Rows", "Columns", "SamplesPerPixel", "BitsAllocated",
                                                          "NumberOfFrames"))
    if rows == 0 or cols == 0:
        return f"empty image (Rows {rows}, Columns {cols})"
    if bits not in _BITS_ALLOCATED:
        return f"unsupported BitsAllocated {bits} (expected one of {_BITS_ALLOCATED})"
    stored, high = _int_tag(ds, "BitsStored", bits), _int_tag(ds, "HighBit", None)
    if stored is None or not 1 <= stored <= bits:
        return f"BitsStored {ds.get('BitsStored', None)} does not fit BitsAllocated {bits}"
    if high is not None and not stored - 1 <= high < bits:
        return f"HighBit {high} does not fit BitsStored {stored} / BitsAllocated {bits}"
    total = (rows * cols * spp * frames * bits + 7) // 8
    what = f"Rows {rows} x Columns {cols} x SamplesPerPixel {spp} x {bits} bits" + (
        f" x NumberOfFrames {frames}" if frames > 1 else "")
    return total, what


def _transfer_syntax(ds) -> str:
    return str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "")


def _encapsulated_counts(path: str | Path, tell: int) -> tuple[int, int, int | None] | str:
    """(entries of the basic offset table, fragments, where the first fragment's bytes start) of the encapsulated
    pixel data starting at byte ``tell`` of
    ``path``, reading only the 8-byte item headers (and the offset table), or a sentence saying where they break."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        f.seek(tell)
        offsets, fragments, first, start = 0, 0, True, None
        while True:
            head = f.read(8)
            if len(head) < 8:
                return "encapsulated (compressed) pixel data cut by the end of the file (no sequence delimiter)"
            group, element = int.from_bytes(head[0:2], "little"), int.from_bytes(head[2:4], "little")
            length = int.from_bytes(head[4:8], "little")
            if (group, element) == (0xFFFE, 0xE0DD):
                return offsets, fragments, start
            if (group, element) != (0xFFFE, 0xE000) or length == _UNDEFINED:
                return f"damaged encapsulated (compressed) pixel data: no item tag at byte {f.tell() - 8}"
            if f.tell() + length > size:
                return (f"truncated DICOM file: a compressed pixel data fragment needs {length} bytes from offset "
                        f"{f.tell()}, file has {size}")
            if first:
                offsets, first = length // 4, False
            else:
                fragments += 1
                start = f.tell() if start is None else start
            f.seek(length, os.SEEK_CUR)


_J2K_SYNTAXES = ("1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.201",
                 "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203")


def _j2k_signed(path: str | Path, start: int) -> bool | None:
    """Whether the JPEG 2000 codestream in the fragment at byte ``start`` stores signed samples (its SIZ marker's
    Ssiz of component 0), or None when no SIZ marker is found in its first 4 KiB."""
    with open(path, "rb") as f:
        f.seek(start)
        head = f.read(4096)
    at = head.find(b"\xff\x4f\xff\x51")  # SOC then SIZ (a JP2 wrapper holds it further in)
    if at < 0 or len(head) < at + 43:
        return None
    return bool(head[at + 42] & 0x80)


def _encapsulated_problem(path: str | Path, tell: int, frames: int, syntax: str = "",
                          signed: bool | None = None) -> str | None:
    """Frame count of encapsulated pixel data against its basic offset table and fragments, and for JPEG 2000 the
    header's PixelRepresentation (``signed``) against the codestream's (decoders follow one or the other), or None."""
    counts = _encapsulated_counts(path, tell)
    if isinstance(counts, str):
        return counts
    offsets, fragments, start = counts
    if syntax in _J2K_SYNTAXES and signed is not None and start is not None:
        stream_signed = _j2k_signed(path, start)
        if stream_signed is not None and stream_signed != signed:
            return (f"PixelRepresentation {int(signed)} ({'signed' if signed else 'unsigned'}) disagrees with the "
                    f"JPEG 2000 codestream ({'signed' if stream_signed else 'unsigned'} samples): decoders differ on "
                    "which to follow")
    if fragments == 0:
        return "encapsulated (compressed) pixel data without any fragment"
    if offsets and offsets != frames:
        return f"NumberOfFrames {frames} but the basic offset table lists {offsets} frames"
    if fragments < frames:
        return f"NumberOfFrames {frames} but the compressed pixel data hold only {fragments} fragments"
    return None


def dicom_pixel_problem(ds, path: str | Path) -> str | None:
    """Why the pixel data of ``ds`` (a header read with deferred values, so that the PixelData element keeps its
    length and file offset) cannot hold what its pixel description declares, or None.

    Native transfer syntaxes: the PixelData element must hold Rows x Columns x SamplesPerPixel x BitsAllocated / 8 x
    NumberOfFrames bytes (plus at most one pad byte) and the file must hold the element. Encapsulated (compressed)
    data cannot be sized before decoding: their frame count is checked against the offset table / fragments.
    """
    raw = ds.get_item(_PIXEL_DATA, keep_deferred=True) if _PIXEL_DATA in ds else None
    if raw is None:
        return "no pixel data"
    declared = dicom_declared_bytes(ds)
    if isinstance(declared, str):
        return f"invalid pixel description: {declared}"
    needed, what = declared
    length, tell = getattr(raw, "length", None), getattr(raw, "value_tell", None)
    syntax = _transfer_syntax(ds)
    if length is not None and length != _UNDEFINED:
        if tell is not None and syntax != _DEFLATED:
            size = os.path.getsize(path)
            if tell + length > size:
                return f"truncated DICOM file: pixel data needs {length} bytes from offset {tell}, file has {size}"
        if syntax in _NATIVE_SYNTAXES or not syntax:
            if length < needed:
                return (f"truncated pixel data: the header declares {what} = {needed} bytes, the PixelData element "
                        f"holds {length}")
            if length > needed + 1:  # one pad byte to an even length is all the standard allows
                return (f"pixel data longer than declared: the header declares {what} = {needed} bytes, the "
                        f"PixelData element holds {length} (wrong Rows / Columns / BitsAllocated / NumberOfFrames?)")
        return None
    if tell is None or syntax == _DEFLATED:  # the element's bytes are not where the file holds them
        return None
    frames = _int_tag(ds, "NumberOfFrames", 1) or 1
    representation = _int_tag(ds, "PixelRepresentation", 0)
    signed = None if representation not in (0, 1) else bool(representation)
    return _encapsulated_problem(path, tell, frames, syntax, signed)


# ---------------------------------------------------------------------------------------------------------------------
# NIfTI
# ---------------------------------------------------------------------------------------------------------------------
def nifti_size_problem(path: str | Path, offset: int, itemsize: int, nvox: int) -> str | None:
    """Whether the NIfTI file at ``path`` holds the ``nvox`` voxels of ``itemsize`` bytes its header declares from
    byte ``offset`` (nibabel's data offset): the file size (.nii), else a streaming count of the decompressed bytes,
    capped at what the header declares (.nii.gz: the gzip trailer's ISIZE is only modulo 2^32 and of the last member,
    so it is not trusted)."""
    path = Path(path)
    needed = offset + nvox * itemsize
    declared = f"{nvox} voxels x {itemsize} bytes from offset {offset} = {needed} bytes"
    if not path.name.lower().endswith(".gz"):
        size = os.path.getsize(path)
        return None if size >= needed else f"truncated NIfTI file: the header declares {declared}, the file has {size}"
    got = _compressed_holds(path, 0, needed, "gzip")
    if got < needed:
        return f"truncated NIfTI file: the header declares {declared}, the decompressed file has {got}"
    return None


# ---------------------------------------------------------------------------------------------------------------------
# NRRD
# ---------------------------------------------------------------------------------------------------------------------
_NRRD_TYPES = {
    1: ("signed char", "int8", "int8_t", "uchar", "unsigned char", "uint8", "uint8_t"),
    2: ("short", "short int", "signed short", "signed short int", "int16", "int16_t", "ushort", "unsigned short",
        "unsigned short int", "uint16", "uint16_t"),
    4: ("int", "signed int", "int32", "int32_t", "uint", "unsigned int", "uint32", "uint32_t", "float"),
    8: ("longlong", "long long", "long long int", "signed long long", "signed long long int", "int64", "int64_t",
        "ulonglong", "unsigned long long", "unsigned long long int", "uint64", "uint64_t", "double"),
}
_NRRD_HEADER_LIMIT = 1 << 20


def read_nrrd_header(path: str | Path) -> tuple[dict[str, str], int]:
    """The fields of an NRRD header (lower-case keys, as written) and the byte offset where its data start (the
    file size for a detached header). Raises ``ValueError`` for a file that is not NRRD."""
    fields: dict[str, str] = {}
    with open(path, "rb") as f:
        magic = f.readline(64)
        if not magic.startswith(b"NRRD"):
            raise ValueError("no NRRD magic line")
        while True:
            line = f.readline(_NRRD_HEADER_LIMIT)
            if not line or line in (b"\n", b"\r\n"):
                return fields, f.tell()
            if f.tell() > _NRRD_HEADER_LIMIT:
                raise ValueError("NRRD header longer than 1 MiB")
            text = line.decode("latin-1").rstrip("\r\n")
            if text.startswith("#"):
                continue
            key, sep, value = text.partition(": ")
            if sep:
                fields[key.strip().lower()] = value.strip()


def _nrrd_item_bytes(fields: Mapping[str, str]) -> int | None:
    kind = fields.get("type", "").strip().lower()
    return next((n for n, names in _NRRD_TYPES.items() if kind in names), None)


def _nrrd_sizes(fields: Mapping[str, str]) -> list[int] | None:
    try:
        sizes = [int(s) for s in fields.get("sizes", "").split()]
    except ValueError:
        return None
    return sizes if sizes and all(s >= 0 for s in sizes) else None


def _nrrd_data_source(path: Path, fields: Mapping[str, str], header_end: int) -> tuple[Path, int] | str:
    """The file holding the data and where they start: the header's own file, or a detached file that must lie in the
    header's folder (a name from a header is never followed outside it)."""
    name = fields.get("data file", fields.get("datafile"))
    if name is None:
        return path, header_end
    name = name.strip()
    if name.upper().startswith("LIST") or len(name.split()) > 1:
        return "the NRRD names several data files (LIST or a file pattern), which this loader does not read"
    folder = path.resolve().parent
    target = (folder / name).resolve()
    if folder not in target.parents:
        return f"the NRRD data file '{name}' lies outside the header's folder"
    if not target.is_file():
        return f"the NRRD data file '{name}' does not exist"
    return target, 0


def nrrd_size_problem(path: str | Path, nvox: int) -> str | None:
    """Whether the NRRD at ``path`` holds the ``nvox`` voxels of its declared type: raw data against the bytes present
    (attached or detached file, after ``byte skip``), gzip / bzip2 by a capped streaming count, ascii / hex by a lower
    bound (one character per value, two per byte); or why its header cannot say."""
    path = Path(path)
    try:
        fields, header_end = read_nrrd_header(path)
    except (OSError, ValueError) as err:
        return f"unreadable NRRD header ({err})"
    item = _nrrd_item_bytes(fields)
    if item is None:
        return f"unsupported NRRD type '{fields.get('type', '')}'"
    sizes = _nrrd_sizes(fields)
    if sizes is None:
        return f"invalid NRRD sizes '{fields.get('sizes', '')}'"
    source = _nrrd_data_source(path, fields, header_end)
    if isinstance(source, str):
        return source
    data_path, start = source
    try:
        skip = int(fields.get("byte skip", fields.get("byteskip", "0")) or 0)
    except ValueError:
        return f"invalid NRRD byte skip '{fields.get('byte skip', fields.get('byteskip'))}'"
    encoding = fields.get("encoding", "raw").strip().lower()
    needed = nvox * item
    declared = f"{nvox} voxels of {item} bytes ({needed} bytes)"
    present = os.path.getsize(data_path) - start
    if encoding == "raw":
        got = present - max(skip, 0) if skip != -1 else present
        if got < needed:
            return f"truncated NRRD data: the header declares {declared}, the data file holds {max(got, 0)}"
        return None
    if encoding in ("gzip", "gz", "bzip2", "bz2"):
        codec = "gzip" if encoding.startswith("gz") else "bzip2"
        want = needed + max(skip, 0)
        got = _compressed_holds(data_path, start, want, codec) - max(skip, 0)
        if got < needed:
            return f"truncated NRRD data: the header declares {declared}, the {codec} stream holds {max(got, 0)}"
        return None
    if encoding in ("ascii", "txt", "text", "hex"):
        least = nvox if encoding != "hex" else 2 * needed
        if present < least:
            return f"truncated NRRD data: the header declares {declared}, the {encoding} data hold {present} characters"
        return None
    return f"unsupported NRRD encoding '{encoding}'"
