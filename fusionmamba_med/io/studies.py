"""Study discovery: a dataset folder (one sub-folder per study) or a datalist JSON -> study dictionaries.

Layout of a dataset folder::

    dataset/
        patient01/
            MR_T1/            <- DICOM series folder (name matches an "mri" pattern)
            pet.nii.gz        <- NIfTI / NRRD (.nrrd/.nhdr) / MetaImage (.mha/.mhd) file matching a "moving" pattern
        patient02/
            t1.nrrd
            PET/              <- DICOM series folder

Each study yields ``{"study": <folder name>, "study_id": safe_name(...), "mri": path, "moving": path}``. A study
with a missing or ambiguous modality becomes a :class:`FusionInputError` naming the study (and the candidates) and is
left out; the other studies go on.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from fusionmamba_med.errors import FusionInputError
from fusionmamba_med.io.naming import unique_names

__all__ = [
    "DEFAULT_MODALITIES",
    "MOVING_PATTERNS",
    "IMAGE_SUFFIXES",
    "default_modalities",
    "discover_studies",
    "load_datalist",
    "image_kind",
]

logger = logging.getLogger(__name__)

MRI_PATTERNS = ["mr*", "mri*", "t1*", "t2*", "flair*"]
#: moving-modality patterns per bundle (CT-MRI, PET-MRI, SPECT-MRI).
MOVING_PATTERNS: dict[str, list[str]] = {"ct": ["ct*"], "pet": ["pet*"], "spect": ["spect*", "spet*", "nm*"]}
DEFAULT_MODALITIES: dict[str, list[str]] = {"mri": list(MRI_PATTERNS), "moving": list(MOVING_PATTERNS["pet"])}

#: recognised single-file image suffixes (lower case), longest first.
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


def default_modalities(moving: str = "pet") -> dict[str, list[str]]:
    """Default patterns for the MRI plus the given moving modality ("ct", "pet" or "spect")."""
    if moving not in MOVING_PATTERNS:
        raise ValueError(f"unknown moving modality {moving!r}; expected one of {sorted(MOVING_PATTERNS)}")
    return {"mri": list(MRI_PATTERNS), "moving": list(MOVING_PATTERNS[moving])}


def image_kind(path: str | Path) -> str | None:
    """``"dicom"`` for a folder, ``"nifti"``, ``"nrrd"``, ``"meta"`` for the known file types, else ``None``."""
    p = Path(path)
    if p.is_dir():
        return "dicom"
    name = p.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        return "nifti"
    if name.endswith((".nrrd", ".nhdr")):
        return "nrrd"
    if name.endswith((".mha", ".mhd")):
        return "meta"
    if name.endswith((".dcm", ".dicom", ".ima")):
        return "dicom_file"
    return None


def _is_candidate(entry: Path) -> bool:
    if entry.name.startswith("."):
        return False
    if entry.is_dir():
        return True
    return entry.is_file() and entry.name.lower().endswith(IMAGE_SUFFIXES)


def _matches(name: str, patterns: Sequence[str]) -> bool:
    low = name.lower()
    return any(fnmatch.fnmatchcase(low, pat.lower()) for pat in patterns)


def _check_modalities(modalities: Mapping[str, Sequence[str]] | None) -> dict[str, list[str]]:
    if modalities is None:
        return {k: list(v) for k, v in DEFAULT_MODALITIES.items()}
    if not isinstance(modalities, Mapping) or not modalities:
        raise ValueError("modalities must be a non-empty mapping {key: [glob patterns]}")
    out = {}
    for key, pats in modalities.items():
        pats = [pats] if isinstance(pats, str) else list(pats)
        if not pats:
            raise ValueError(f"modality {key!r} has no patterns")
        out[str(key)] = [str(p) for p in pats]
    return out


def _discover_folder(dataset_dir: Path, modalities: dict[str, list[str]]):
    items: list[dict] = []
    errors: list[FusionInputError] = []
    study_dirs = sorted((d for d in dataset_dir.iterdir() if d.is_dir() and not d.name.startswith(".")),
                        key=lambda d: d.name)
    for sdir in study_dirs:
        study = sdir.name
        try:
            entries = sorted((e for e in sdir.iterdir() if _is_candidate(e)), key=lambda e: e.name)
        except OSError as err:
            errors.append(FusionInputError(f"cannot list the study folder: {err}", study=study, path=sdir))
            continue
        found: dict[str, list[Path]] = {key: [e for e in entries if _matches(e.name, pats)]
                                        for key, pats in modalities.items()}
        problems = []
        # One entry claimed by two modalities is ambiguous as well.
        claimed: dict[Path, list[str]] = {}
        for key, cands in found.items():
            for c in cands:
                claimed.setdefault(c, []).append(key)
        for entry, keys in claimed.items():
            if len(keys) > 1:
                problems.append(f"'{entry.name}' matches several modalities ({', '.join(keys)})")
        for key, cands in found.items():
            if not cands:
                seen = ", ".join(f"'{e.name}'" for e in entries) or "nothing usable"
                problems.append(
                    f"no '{key}' image found (looked for {', '.join(modalities[key])} as a DICOM series folder or "
                    f"{'/'.join(IMAGE_SUFFIXES)} file; found {seen})"
                )
            elif len(cands) > 1:
                problems.append(
                    f"several candidates for '{key}': {', '.join(repr(c.name) for c in cands)}; "
                    "keep one or use a datalist"
                )
        if problems:
            errors.append(FusionInputError("; ".join(problems), study=study, path=sdir))
            continue
        item: dict[str, Any] = {"study": study}
        for key, cands in found.items():
            item[key] = os.path.abspath(cands[0])
        items.append(item)
    return items, errors


def load_datalist(datalist: str | Path, datalist_key: str = "testing") -> list[dict]:
    """Read a datalist JSON: a list of items or a MONAI-style dict ``{"testing": [...]}``.

    Raises :class:`FusionInputError` naming the file when it cannot be read or has the wrong shape.
    """
    path = Path(datalist)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise FusionInputError(f"cannot read the datalist: {err}", path=path) from err
    if isinstance(data, Mapping):
        if datalist_key in data:
            data = data[datalist_key]
        else:
            lists = [k for k, v in data.items() if isinstance(v, list)]
            raise FusionInputError(
                f"the datalist has no '{datalist_key}' list (lists found: {lists or 'none'})", path=path
            )
    if not isinstance(data, list):
        raise FusionInputError("a datalist must be a JSON list of study items or {\"testing\": [...]}", path=path)
    return data


def _discover_datalist(datalist: Path, modalities: dict[str, list[str]], datalist_key: str):
    base = datalist.resolve().parent
    items: list[dict] = []
    errors: list[FusionInputError] = []
    for index, raw in enumerate(load_datalist(datalist, datalist_key)):
        if not isinstance(raw, Mapping):
            errors.append(FusionInputError(f"datalist item {index} is not an object", path=datalist))
            continue
        study = str(raw.get("study") or f"item{index + 1}")
        item: dict[str, Any] = dict(raw)
        item["study"] = study
        problems = []
        for key in modalities:
            value = raw.get(key)
            if not value or not isinstance(value, (str, os.PathLike)):
                problems.append(f"no '{key}' path given")
                continue
            p = Path(value).expanduser()
            if not p.is_absolute():
                p = base / p
            if not p.exists():
                problems.append(f"'{key}' path does not exist: {p}")
                continue
            item[key] = os.path.abspath(p)
        if problems:
            errors.append(FusionInputError("; ".join(problems), study=study, path=datalist))
            continue
        items.append(item)
    return items, errors


def discover_studies(
    dataset_dir: str | Path | None,
    modalities: Mapping[str, Sequence[str]] | None = None,
    datalist: str | Path | None = None,
    datalist_key: str = "testing",
) -> tuple[list[dict], list[FusionInputError]]:
    """Find the studies of a dataset.

    Args:
        dataset_dir: folder with one sub-folder per study (ignored when ``datalist`` is given).
        modalities: ``{key: [case-insensitive glob patterns]}``; defaults to :data:`DEFAULT_MODALITIES`
            (``"mri"`` and ``"moving"`` = PET).
        datalist: a datalist JSON used instead of folder discovery: a list of
            ``{"study": ..., "mri": ..., "moving": ..., ["mri_series_uid": ...]}`` or ``{"testing": [...]}``.
            Relative paths are resolved against the JSON's folder; extra keys are kept.
        datalist_key: the list to take from a dict-style datalist.

    Returns:
        ``(items, errors)``. Items ``{"study", "study_id", <modality keys>: absolute path, ...}`` sorted by study for
        folder discovery, in file order for a datalist. ``study_id`` is ``safe_name(study)`` made unique
        (case-insensitively) with ``-2``, ``-3``... suffixes. ``errors`` holds one :class:`FusionInputError` per study
        left out (missing modality, ambiguous candidates, missing paths).

    Raises:
        FusionInputError: the dataset folder or the datalist itself is missing or unreadable.
    """
    mods = _check_modalities(modalities)
    if datalist is not None:
        dl = Path(datalist)
        if not dl.is_file():
            raise FusionInputError("the datalist file does not exist", path=dl)
        items, errors = _discover_datalist(dl, mods, datalist_key)
    else:
        if dataset_dir is None:
            raise FusionInputError("give a dataset folder or a datalist")
        ddir = Path(dataset_dir)
        if not ddir.is_dir():
            raise FusionInputError("the dataset folder does not exist or is not a folder", path=ddir)
        items, errors = _discover_folder(ddir, mods)
    for item, sid in zip(items, unique_names([it["study"] for it in items])):
        item["study_id"] = sid
    for err in errors:
        logger.warning("skipping: %s", err)
    return items, errors
