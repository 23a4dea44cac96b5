"""Helpers the bundle configs call: where the bundle and the repository are, whatever the working directory."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["locate_bundle", "repo_root"]

_PACKAGE_ROOT = Path(__file__).resolve().parent


def _bundle_name(folder: Path) -> str | None:
    meta = folder / "configs" / "metadata.json"
    if not meta.is_file():
        return None
    try:
        return json.loads(meta.read_text()).get("bundle_name") or folder.name
    except (OSError, ValueError):
        return folder.name


def locate_bundle(name: str, start: str | Path | None = None) -> str:
    """The folder of bundle ``name``: the working directory if it is that bundle, else ``./bundles/<name>``, else
    the checkout the package was installed from (``pip install -e``). Raises ``FileNotFoundError`` otherwise."""
    cwd = Path(start or Path.cwd()).resolve()
    candidates = [cwd, cwd / "bundles" / name, _PACKAGE_ROOT.parent / "bundles" / name]
    for folder in candidates:
        if folder.name == name and _bundle_name(folder) is not None:
            return str(folder)
    raise FileNotFoundError(
        f"cannot find bundle '{name}' from {cwd}: run from the repository root or from bundles/{name}, "
        "or pass --bundle_root"
    )


def repo_root(bundle_root: str | Path) -> str:
    """The repository that holds a bundle (two levels up from ``bundles/<name>``)."""
    return str(Path(bundle_root).resolve().parents[1])
