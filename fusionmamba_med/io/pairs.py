"""2D image pairs on disk: pairing two folders by file name, or reading a datalist of pairs.

A pair item is ``{"name": str, "a": path, "b": path}``; ``a`` is network channel 0 (visible / GFP / MRI), ``b``
channel 1 (IR / PC / CT, PET, SPECT). Loading and turning a pair into the network input are transforms:
:mod:`fusionmamba_med.transforms.pairs`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from fusionmamba_med.errors import FusionInputError

__all__ = ["IMAGE_EXTENSIONS", "discover_pairs"]

logger = logging.getLogger(__name__)

#: file extensions (lower case) taken as images when pairing folders.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def _images_by_stem(folder: Path, errors: list[FusionInputError]) -> dict[str, Path]:
    """``{lower-case stem: path}`` of the images in ``folder``; a stem used twice (``01.png`` and ``01.jpg``) is an
    error for both files and is left out."""
    if not folder.is_dir():
        raise FusionInputError("image folder not found", path=folder)
    found: dict[str, list[Path]] = {}
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or not entry.is_file():
            continue
        if entry.suffix.lower() not in IMAGE_EXTENSIONS:
            logger.debug("not an image file, ignored: %s", entry)
            continue
        found.setdefault(entry.stem.lower(), []).append(entry)
    out = {}
    for key, paths in found.items():
        if len(paths) > 1:
            names = ", ".join(p.name for p in paths)
            for p in paths:
                errors.append(FusionInputError(f"several images share the name '{p.stem}' ({names}); rename all but "
                                               "one", study=p.stem, path=p))
            continue
        out[key] = paths[0]
    return out


def _pairs_from_folders(dir_a: Path, dir_b: Path) -> tuple[list[dict], list[FusionInputError]]:
    errors: list[FusionInputError] = []
    a_files = _images_by_stem(dir_a, errors)
    b_files = _images_by_stem(dir_b, errors)
    items = []
    for key, a in a_files.items():
        b = b_files.get(key)
        if b is None:
            errors.append(FusionInputError(f"no partner image named '{a.stem}.*' in {dir_b}", study=a.stem, path=a))
            continue
        items.append({"name": a.stem, "a": os.path.abspath(a), "b": os.path.abspath(b)})
    for key, b in b_files.items():
        if key not in a_files:
            errors.append(FusionInputError(f"no partner image named '{b.stem}.*' in {dir_a}", study=b.stem, path=b))
    return items, errors


def _pairs_from_datalist(datalist, datalist_key: str) -> tuple[list[dict], list[FusionInputError]]:
    from fusionmamba_med.io.studies import load_datalist

    if isinstance(datalist, (str, os.PathLike)):
        source: Path | None = Path(datalist)
        entries = load_datalist(source, datalist_key)
        base = source.resolve().parent
    else:
        source, base = None, Path.cwd()
        entries = datalist.get(datalist_key) if isinstance(datalist, Mapping) else datalist
        if not isinstance(entries, list):
            raise FusionInputError(f"a datalist must be a list of pair items or {{'{datalist_key}': [...]}}")
    items, errors = [], []
    for index, raw in enumerate(entries):
        if not isinstance(raw, Mapping):
            errors.append(FusionInputError(f"datalist item {index} is not an object", path=source))
            continue
        paths, problems = {}, []
        for key in ("a", "b"):
            value = raw.get(key)
            if not value or not isinstance(value, (str, os.PathLike)):
                problems.append(f"no '{key}' path given")
                continue
            p = Path(value).expanduser()
            p = p if p.is_absolute() else base / p
            if not p.is_file():
                problems.append(f"'{key}' image not found: {p}")
            paths[key] = os.path.abspath(p)
        name = str(raw.get("name") or (Path(paths["a"]).stem if "a" in paths else f"item{index + 1}"))
        if problems:
            bad = next((paths[k] for k in ("a", "b") if k in paths and not os.path.isfile(paths[k])), source)
            errors.append(FusionInputError("; ".join(problems), study=name, path=bad))
            continue
        items.append({**dict(raw), "name": name, **paths})
    return items, errors


def discover_pairs(
    dir_a: str | os.PathLike | None = None,
    dir_b: str | os.PathLike | None = None,
    datalist: str | os.PathLike | Sequence | Mapping | None = None,
    datalist_key: str = "testing",
) -> tuple[list[dict], list[FusionInputError]]:
    """Find image pairs: files of ``dir_a`` and ``dir_b`` with the same name stem (case-insensitive; the extensions
    may differ, e.g. ``vi/01.png`` + ``ir/01.bmp``), or the items of a datalist
    (``{"testing": [{"a": ..., "b": ..., "name"?: ...}]}``, a JSON file whose relative paths are relative to it, or
    the same structure in memory), which replaces the folders.

    Returns ``(items, errors)``: items ``{"name": stem, "a": abs path, "b": abs path}`` sorted by name, and one
    :class:`FusionInputError` per file without a partner (or missing datalist file), naming it. A missing folder or
    unreadable datalist raises :class:`FusionInputError`.
    """
    if datalist is not None:
        items, errors = _pairs_from_datalist(datalist, datalist_key)
    else:
        if dir_a is None or dir_b is None:
            raise FusionInputError("give both image folders (dir_a, dir_b) or a datalist")
        items, errors = _pairs_from_folders(Path(dir_a), Path(dir_b))
    items.sort(key=lambda item: (item["name"].lower(), item["name"]))
    return items, errors
