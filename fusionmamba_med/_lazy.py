"""Lazy package attributes: names and subpackages imported on first use, so that importing a package stays light."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Mapping


def lazy_getattr(package: str, exports: Mapping[str, str]) -> Callable[[str], object]:
    """A module ``__getattr__`` for ``package``: ``exports`` maps a public name to the submodule defining it; any
    other name that is a submodule (``package.name``) is imported and returned, so config expressions such as
    ``$fusionmamba_med.io.pairs.discover_pairs`` work after a plain ``import fusionmamba_med``."""

    def __getattr__(name: str):
        if name in exports:
            return getattr(importlib.import_module(f"{package}.{exports[name]}"), name)
        if not name.startswith("_") and importlib.util.find_spec(f"{package}.{name}") is not None:
            return importlib.import_module(f"{package}.{name}")
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
