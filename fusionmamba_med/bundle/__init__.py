"""Bundle helpers.

The bundle configs call these for their defaults; none depends on where the package is installed, so a bundle folder
copied anywhere (or unzipped from ``python -m fusionmamba_med.bundle pack``) finds itself and its data the same way:

- :func:`locate_bundle` (``bundle_root``): the bundle folder of the config file named on the command line, else the
  working directory, else ``./bundles/<name>``; ``--bundle_root`` overrides it.
- :func:`workspace` (training ``output_dir`` = ``<workspace>/runs/<name>``): the project checkout holding the bundle,
  or the bundle folder itself when it stands alone.
- :func:`default_dataset_dir` (``dataset_dir``): the checkout's ``sample_data/<task>``; a stand-alone bundle has
  none and says to pass ``--dataset_dir``.

Tools (``python -m fusionmamba_med.bundle``): ``sync`` writes the shared pieces of the top-level ``configs/`` into
every bundle (:mod:`fusionmamba_med.bundle.sync`), ``pack`` zips one bundle (:mod:`fusionmamba_med.bundle.pack`).
"""

from __future__ import annotations

import ast
import json
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["bundle_name", "default_dataset_dir", "locate_bundle", "project_root", "workspace"]

# A file only this project's checkout has: a bundle at <checkout>/bundles/<name> is "in the checkout".
CHECKOUT_MARKER = Path("configs") / "medical_inference.json"


def bundle_name(folder: str | Path) -> str | None:
    """The ``bundle_name`` in ``<folder>/configs/metadata.json`` (the folder's name if the key is absent), or
    ``None`` when ``folder`` is not a bundle."""
    meta = Path(folder) / "configs" / "metadata.json"
    if not meta.is_file():
        return None
    try:
        return json.loads(meta.read_text()).get("bundle_name") or Path(folder).resolve().name
    except (OSError, ValueError):
        return Path(folder).resolve().name


def _config_file_argument(argv: Sequence[str]) -> Path | None:
    """The (first) ``--config_file`` of a ``python -m monai.bundle run ...`` command line, if any."""
    value = None
    for i, arg in enumerate(argv):
        if arg == "--config_file" and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith("--config_file="):
            value = arg.split("=", 1)[1]
        if value is not None:
            break
    if not value:
        return None
    if value.lstrip().startswith(("[", "(")):  # a list of files, given as a Python literal
        try:
            value = ast.literal_eval(value)[0]
        except (ValueError, SyntaxError, IndexError, TypeError):
            return None
    return Path(str(value))


def _folder_of_config(config_file: Path) -> Path:
    """MONAI's rule (``ConfigWorkflow.run``): a config in ``configs/`` belongs to the folder above, any other config
    to its own folder."""
    folder = config_file.parent
    return folder.parent if folder.name == "configs" else folder


def locate_bundle(name: str, start: str | Path | None = None, argv: Sequence[str] | None = None) -> str:
    """The folder (absolute) of the bundle called ``name`` (its metadata's ``bundle_name``), tried in this order:

    1. the bundle of the config file on the command line (``--config_file X/configs/inference.json`` or
       ``X/inference.json``), so ``python -m monai.bundle run --config_file /any/where/pet_mri/configs/inference.json``
       works from any working directory;
    2. the working directory (``start``), when it is the bundle;
    3. ``<working directory>/bundles/<name>`` (the project checkout's root).

    Raises ``FileNotFoundError`` (asking for ``--bundle_root``) when none of them is that bundle.
    """
    cwd = Path(start) if start is not None else Path.cwd()
    candidates = []
    config = _config_file_argument(sys.argv if argv is None else argv)
    if config is not None:
        candidates.append(_folder_of_config(config if config.is_absolute() else cwd / config))
    candidates += [cwd, cwd / "bundles" / name]
    for folder in candidates:
        if bundle_name(folder) == name:
            return str(folder.resolve())
    raise FileNotFoundError(
        f"cannot find bundle '{name}' (from the working directory {cwd.resolve()}): run from inside the bundle folder "
        f"or the project root, or pass --bundle_root <folder of {name}>"
    )


def project_root(bundle_root: str | Path) -> str | None:
    """The fusionmamba-med checkout that holds the bundle (``<checkout>/bundles/<name>``), or ``None`` for a bundle
    that stands alone (copied or unzipped elsewhere)."""
    folder = Path(bundle_root).resolve()
    root = folder.parent.parent
    if folder.parent.name == "bundles" and (root / CHECKOUT_MARKER).is_file():
        return str(root)
    return None


def workspace(bundle_root: str | Path) -> str:
    """Where a bundle's runs go: the project checkout holding it, else the bundle folder itself."""
    return project_root(bundle_root) or str(Path(bundle_root).resolve())


def default_dataset_dir(bundle_root: str | Path, *task: str, datalist=None) -> str:
    """The sample data a bundle runs on by default: ``<checkout>/sample_data/<task...>``.

    A bundle outside the checkout has none: then, unless a ``datalist`` replaces the folder (the value returned is
    then unused), this raises ``FileNotFoundError`` telling the user to pass ``--dataset_dir``.
    """
    root = project_root(bundle_root)
    sample = Path(root, "sample_data", *task) if root else None
    if sample is not None and sample.is_dir():
        return str(sample)
    if datalist is not None:
        return str(sample or Path(bundle_root, "sample_data", *task))
    where = f"{sample} does not exist" if sample else (
        f"the bundle at {Path(bundle_root).resolve()} is not inside the fusionmamba-med checkout, whose sample_data/ "
        "holds the sample studies")
    raise FileNotFoundError(
        f"no default data for this bundle ({where}): pass --dataset_dir <folder of your data> "
        f"(or --datalist <file.json>); to try it on the sample data, write it with "
        f"`python -m fusionmamba_med.data.sample_data --out DIR` and pass --dataset_dir DIR/{'/'.join(task)}"
    )

