"""Write the shared pieces of the top-level ``configs/`` into every bundle, so each bundle folder stands on its own.

One source of truth, real files in the bundles (no symlinks, no macros into files outside the bundle):

- the keys of ``configs/network.json`` (all bundles), ``configs/medical_inference.json`` (CT/PET/SPECT-MRI) and
  ``configs/training.json`` (all bundles; ``harvard_sources`` only in the medical ones) replace the same keys of
  each bundle's ``configs/inference.json`` / ``configs/train.json``; every other key there is the bundle's own
  (edit it in the bundle). A key new to a shared file is added before ``initialize``/``run``/``finalize``.
- ``configs/logging.conf``, ``configs/multi_gpu_train.json``, ``configs/multi_gpu_inference.json`` (medical) and the
  repository's ``LICENSE`` are copied whole;
- ``required_packages_version["fusionmamba-med"]`` of each ``configs/metadata.json`` is the package's version
  (``pyproject.toml``);
- the bundle root gets copies of ``configs/{inference,train,metadata}.json`` and ``configs/logging.conf``, so
  ``python -m monai.bundle run --config_file bundles/<name>/inference.json`` (MONAI looks for ``metadata.json`` and
  ``logging.conf`` beside the config file) works from the repository root.

``python -m fusionmamba_med.bundle sync`` writes them; ``--check`` only lists what differs (exit status 1), as the
test ``tests/bundles/test_standalone_bundles.py`` does.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path

from fusionmamba_med.io.atomic import atomic_path

__all__ = ["BUNDLES", "MEDICAL", "ENTRY_POINTS", "expected_files", "package_version", "stale_files", "sync"]

MEDICAL = ("ct_mri", "pet_mri", "spect_mri")
BUNDLES = (*MEDICAL, "generic_2d")

# bundle config -> [(shared file, keys left out)] merged into it, per bundle
_MERGED = {
    "configs/inference.json": {
        **{b: [("configs/network.json", ()), ("configs/medical_inference.json", ())] for b in MEDICAL},
        "generic_2d": [("configs/network.json", ())],
    },
    "configs/train.json": {
        **{b: [("configs/network.json", ()), ("configs/training.json", ())] for b in MEDICAL},
        "generic_2d": [("configs/network.json", ()), ("configs/training.json", ("harvard_sources",))],
    },
}
# bundle file <- repository file, copied whole
_COPIED = {
    "configs/logging.conf": ("configs/logging.conf", BUNDLES),
    "configs/multi_gpu_train.json": ("configs/multi_gpu_train.json", BUNDLES),
    "configs/multi_gpu_inference.json": ("configs/multi_gpu_inference.json", MEDICAL),
    "LICENSE": ("LICENSE", BUNDLES),
}
# bundle-root copies of configs/ files (MONAI finds metadata.json / logging.conf beside the config file)
ENTRY_POINTS = ("inference.json", "train.json", "metadata.json", "logging.conf")
_TAIL = ("initialize", "run", "finalize")
_NOT_SHARED = ("_desc_",)


def package_version(root: str | Path) -> str:
    """``[project] version`` of ``<root>/pyproject.toml``."""
    text = (Path(root) / "pyproject.toml").read_text(encoding="utf-8")
    project = text.split("[project]", 1)[1]
    match = re.search(r'^version\s*=\s*"([^"]+)"', project, flags=re.MULTILINE)
    if not match:
        raise ValueError(f"no [project] version in {Path(root) / 'pyproject.toml'}")
    return match.group(1)


def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _dump(config: dict) -> str:
    return json.dumps(config, indent=4, ensure_ascii=False) + "\n"


def _merge(own: dict, shared: dict) -> dict:
    """``own`` with every key of ``shared`` replaced in place; new shared keys go before initialize/run/finalize."""
    out = {k: (shared[k] if k in shared else v) for k, v in own.items() if k not in _TAIL}
    out.update((k, v) for k, v in shared.items() if k not in out)
    out.update((k, own[k]) for k in _TAIL if k in own)
    return out


def expected_files(root: str | Path, bundles: Iterable[str] = BUNDLES) -> dict[Path, str]:
    """Every generated bundle file (absolute path) and the text ``sync`` writes there."""
    root = Path(root).resolve()
    version = package_version(root)
    out: dict[Path, str] = {}
    for name in bundles:
        folder = root / "bundles" / name
        configs: dict[str, str] = {}
        for target, per_bundle in _MERGED.items():
            config = _load(folder / target)
            for source, left_out in per_bundle[name]:
                shared = {k: v for k, v in _load(root / source).items() if k not in (*_NOT_SHARED, *left_out)}
                config = _merge(config, shared)
            configs[target] = _dump(config)
        meta = _load(folder / "configs" / "metadata.json")
        meta.pop("optional_packages_version", None)  # deprecated by MONAI (renamed required_packages_version)
        meta.setdefault("required_packages_version", {})["fusionmamba-med"] = version
        configs["configs/metadata.json"] = _dump(meta)
        for target, (source, names) in _COPIED.items():
            if name in names:
                configs[target] = (root / source).read_text(encoding="utf-8")
        for entry in ENTRY_POINTS:
            configs[entry] = configs[f"configs/{entry}"]
        out.update((folder / rel, text) for rel, text in configs.items())
    return out


def stale_files(root: str | Path, bundles: Iterable[str] = BUNDLES) -> list[Path]:
    """Symlinks inside the bundles (a bundle must hold real files only): ``sync`` removes those it does not write."""
    root = Path(root).resolve()
    return sorted(p for name in bundles for p in (root / "bundles" / name).rglob("*") if p.is_symlink())


def _differs(path: Path, text: str) -> bool:
    return path.is_symlink() or not path.is_file() or path.read_text(encoding="utf-8") != text


def _write_atomic(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:  # the rename replaces a symlink itself, never its target
        tmp.write_text(text, encoding="utf-8")


def sync(root: str | Path, bundles: Iterable[str] = BUNDLES, check: bool = False) -> list[Path]:
    """Bring the bundles in line with the shared configs; return the files that differed (written unless ``check``)
    and the symlinks (removed unless ``check``)."""
    bundles = tuple(bundles)
    expected = expected_files(root, bundles)
    changed = [p for p, text in expected.items() if _differs(p, text)]
    stale = [p for p in stale_files(root, bundles) if p not in expected]
    if not check:
        for path in changed:
            _write_atomic(path, expected[path])
        for path in stale:
            path.unlink()
    return sorted(changed + stale)
