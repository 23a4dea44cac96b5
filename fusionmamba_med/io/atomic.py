"""Atomic writes: every output file or folder is written under a hidden temporary name in its own folder and renamed
into place when complete, so a crash never leaves a final-named, half-written output (CONVENTIONS.md).

``atomic_path`` is the one implementation used by every writer of the package (volumes, DICOM series folders, 2D
images, QA montages, summaries, CSV logs, exported weights, sample data); ``write_json`` is the JSON writer on top.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["atomic_path", "fsync_dir", "jsonable", "write_json", "write_summary"]

#: multi-part extensions kept at the end of temporary names (writers choose the format from the extension).
_DOUBLE_SUFFIXES = (".nii.gz", ".tar.gz")


def _extension(name: str) -> str:
    lower = name.lower()
    for ext in _DOUBLE_SUFFIXES:
        if lower.endswith(ext):
            return name[-len(ext):]
    return Path(name).suffix


def fsync_dir(folder: str | os.PathLike) -> None:
    """Flush a folder's entries (a rename) to disk where the OS allows it."""
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


def _fsync_tree(path: Path) -> None:
    if path.is_dir():
        for child in path.iterdir():
            if child.is_file():
                with open(child, "rb") as f:
                    os.fsync(f.fileno())
        fsync_dir(path)
    elif path.is_file():
        with open(path, "rb") as f:
            os.fsync(f.fileno())


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextmanager
def atomic_path(path: str | os.PathLike, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write to; on success it replaces ``path``, on error it is removed.

    The temporary name is hidden and keeps the extension (``.x_fused.partial-1a2b3c4d.nii.gz``), so writers that
    choose the format from the extension work on it. ``directory=True`` creates the temporary path as a folder (a
    DICOM series); an existing folder at ``path`` is swapped out only after the new one is complete, and restored
    if the swap fails. The parent folder is created if needed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ext = "" if directory else _extension(path.name)
    stem = path.name[: len(path.name) - len(ext)] if ext else path.name
    tmp = path.parent / f".{stem}.partial-{uuid.uuid4().hex[:8]}{ext}"
    if directory:
        tmp.mkdir()
    old: Path | None = None
    try:
        yield tmp
        _fsync_tree(tmp)
        if directory and path.exists():  # a folder cannot be replaced by rename: move the old one aside first
            old = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(path, old)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        if old is not None and old.exists() and not path.exists():
            os.replace(old, path)
            old = None
        raise
    finally:
        if tmp.exists() or tmp.is_symlink():
            _remove(tmp)
        if old is not None and old.exists():
            _remove(old)


def jsonable(o: Any) -> Any:
    """Recursively convert to JSON types (paths, numpy/torch values, sets, exceptions); NaN/Inf become None."""
    if isinstance(o, Mapping):
        return {str(k): jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [jsonable(v) for v in o]
    if isinstance(o, (set, frozenset)):
        return [jsonable(v) for v in sorted(o, key=str)]
    if hasattr(o, "detach") and hasattr(o, "cpu"):  # a torch tensor, without importing torch
        o = o.detach().cpu().numpy()
    if isinstance(o, np.ndarray):
        return jsonable(o.tolist())
    if isinstance(o, np.generic):
        o = o.item()
    if isinstance(o, bool) or o is None or isinstance(o, (int, str)):
        return o
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, os.PathLike):
        return os.fspath(o)
    return str(o)


def write_json(path: str | os.PathLike, data: Mapping[str, Any] | list) -> Path:
    """Write ``data`` as indented strict JSON, atomically (see :func:`jsonable` for the conversions)."""
    path = Path(path)
    text = json.dumps(jsonable(data), indent=2, allow_nan=False)
    with atomic_path(path) as tmp:
        tmp.write_text(text + "\n", encoding="utf-8")
    return path


#: a batch run's summary (fusion_summary.json, split.json) is plain atomic JSON.
write_summary = write_json
