"""Atomic writes: every output file or folder is written under a hidden temporary name in its own folder and renamed
into place when complete, so a crash never leaves a final-named, half-written output (CONVENTIONS.md).

``atomic_path`` is the one implementation used by every writer of the package (volumes, DICOM series folders, 2D
images, QA montages, summaries, CSV logs, exported weights, sample data); ``write_json`` is the JSON writer on top.
Temporary names match :data:`TEMPORARY_NAME` (``.<name>.partial-<8 hex>[.ext]``, and ``.<name>.old-<8 hex>`` for a
folder being swapped out); :func:`remove_stale_temporaries` removes those a killed process left behind (only names of
that form, only in the folder it is given). :func:`check_output_dir` refuses a folder that cannot be written.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import shutil
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["TEMPORARY_NAME", "atomic_path", "check_output_dir", "fsync_dir", "jsonable", "remove_stale_temporaries",
           "temporary_path", "write_json", "write_summary"]

#: multi-part extensions kept at the end of temporary names (writers choose the format from the extension).
_DOUBLE_SUFFIXES = (".nii.gz", ".tar.gz")

#: the names :func:`temporary_path` makes: group "name" is the final name without its extension.
TEMPORARY_NAME = re.compile(r"^\.(?P<name>.+)\.(?:partial|old)-[0-9a-f]{8}(?P<ext>(?:\.[^.]+){0,2})$")


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


def temporary_path(path: str | os.PathLike, kind: str = "partial", keep_extension: bool = True) -> Path:
    """A fresh hidden name beside ``path``: ``.<stem>.<kind>-<8 hex><ext>`` (``kind``: "partial" or "old")."""
    path = Path(path)
    ext = _extension(path.name) if keep_extension else ""
    stem = path.name[: len(path.name) - len(ext)] if ext else path.name
    return path.parent / f".{stem}.{kind}-{uuid.uuid4().hex[:8]}{ext}"


def remove_stale_temporaries(folder: str | os.PathLike, final_names: Iterable[str] | None = None) -> list[Path]:
    """Remove what an interrupted :func:`atomic_path` left in ``folder`` (not below it): entries named like its
    temporaries, only those of ``final_names`` when given. The caller makes sure no live writer uses the folder
    (a claim on the study, a lock on the summary). Returns the removed paths."""
    folder = Path(folder)
    stems = None if final_names is None else {n[: len(n) - len(_extension(n))] if _extension(n) else n
                                              for n in final_names}
    removed = []
    try:
        entries = list(folder.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return removed
    for entry in entries:
        m = TEMPORARY_NAME.match(entry.name)
        if m and (stems is None or m.group("name") in stems):
            _remove(entry)
            removed.append(entry)
    return removed


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_output_dir(path: str | os.PathLike) -> Path:
    """Make sure outputs can be written in ``path`` before any work starts: it is a folder (or can be created under
    its nearest existing parent) whose entries can be listed and in which a file can be created and removed (a real
    probe, so a read-only file system fails too, whoever the user). Raises :class:`OutputError` naming the folder."""
    from fusionmamba_med.errors import OutputError

    path = Path(path)
    target = path if path.exists() else _nearest_existing(path.parent)
    where = "" if target == path else f" (it does not exist; its nearest existing parent, {target}, "
    if not target.is_dir():
        raise OutputError(f"not a folder{where + 'is a file)' if where else ''}", path=path, folder=True)
    try:
        os.listdir(target)
    except OSError as err:
        raise OutputError(f"cannot be read{where + 'cannot be read)' if where else ''} ({err.strerror or err})",
                          path=path, folder=True) from err
    probe = temporary_path(target / "write-probe", keep_extension=False)
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.unlink(probe)
    except OSError as err:
        reason = "read-only file system" if err.errno == errno.EROFS else (err.strerror or str(err))
        raise OutputError(f"cannot be written{where + 'cannot be written)' if where else ''} ({reason})", path=path,
                          folder=True) from err
    return path


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
    tmp = temporary_path(path, keep_extension=not directory)
    if directory:
        tmp.mkdir()
    old: Path | None = None
    try:
        yield tmp
        _fsync_tree(tmp)
        if directory and path.exists():  # a folder cannot be replaced by rename: move the old one aside first
            old = temporary_path(path, "old", keep_extension=False)
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
