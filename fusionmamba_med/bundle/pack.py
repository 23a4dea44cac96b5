"""Pack one bundle folder into a zip that runs wherever it is unzipped (with fusionmamba-med installed).

The zip holds ``<bundle_name>/...`` (the layout ``monai.bundle download`` unpacks): configs, weights, docs, LICENSE
and the bundle-root entry points; never run outputs (``eval/``, ``runs/``, ``train_output/``), caches or hidden
files. A bundle inside the project checkout must be in sync with the shared configs first
(``python -m fusionmamba_med.bundle sync``).
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

from fusionmamba_med.bundle import bundle_name, project_root
from fusionmamba_med.io.atomic import atomic_path

__all__ = ["EXCLUDED_DIRS", "bundle_files", "pack_bundle"]

EXCLUDED_DIRS = frozenset({"eval", "runs", "train_output", "__pycache__"})
REQUIRED = ("configs/metadata.json", "configs/inference.json", "models/model.pt", "docs/README.md", "LICENSE")


def bundle_files(folder: str | Path) -> list[Path]:
    """The files of a bundle that go into its zip, relative to the folder, sorted."""
    folder = Path(folder)
    files = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        rel_dir = Path(dirpath).relative_to(folder)
        keep = []
        for d in sorted(dirnames):
            if d.startswith(".") or (rel_dir == Path(".") and d in EXCLUDED_DIRS) or d == "__pycache__":
                continue
            if (Path(dirpath) / d).is_symlink():
                raise ValueError(f"{Path(dirpath) / d} is a symlink: a bundle must hold real files only")
            keep.append(d)
        dirnames[:] = keep
        for f in sorted(filenames):
            path = Path(dirpath) / f
            if f.startswith(".") or f.endswith((".pyc", ".tmp", ".partial")):
                continue
            if path.is_symlink():
                raise ValueError(f"{path} is a symlink: a bundle must hold real files only "
                                 "(python -m fusionmamba_med.bundle sync replaces them)")
            files.append(rel_dir / f)
    return sorted(files)


def pack_bundle(folder: str | Path, out: str | Path | None = None) -> Path:
    """Write ``folder`` (a bundle) to the zip ``out`` (default ``./<bundle_name>.zip``) and return its path."""
    folder = Path(folder).resolve()
    name = bundle_name(folder)
    if name is None:
        raise FileNotFoundError(f"{folder} is not a bundle (no configs/metadata.json)")
    missing = [r for r in REQUIRED if not (folder / r).is_file()]
    if missing:
        raise FileNotFoundError(f"bundle {folder} lacks {', '.join(missing)}")
    from fusionmamba_med.bundle.sync import BUNDLES, sync

    root = project_root(folder)
    if root is not None and folder.name in BUNDLES:

        stale = sync(root, bundles=[folder.name], check=True)
        if stale:
            raise RuntimeError(f"bundle {folder} is out of sync with {Path(root) / 'configs'} "
                               f"({', '.join(str(p.relative_to(folder)) for p in stale)}): run "
                               "`python -m fusionmamba_med.bundle sync` first")
    out = Path(out) if out is not None else Path(f"{name}.zip")
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    files = [f for f in bundle_files(folder) if (folder / f).resolve() != out]
    with atomic_path(out) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for rel in files:
            zf.write(folder / rel, arcname=f"{name}/{rel.as_posix()}")
    return out
