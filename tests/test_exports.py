"""Every package's lazy export map resolves to the name its submodule defines and lists in ``__all__``."""

import importlib
import pkgutil

import pytest

import fusionmamba_med

LAZY_PACKAGES = [name for _, name, is_pkg in pkgutil.iter_modules(fusionmamba_med.__path__, "fusionmamba_med.")
                 if is_pkg and hasattr(importlib.import_module(name), "_EXPORTS")]


def test_packages_found():
    assert {"fusionmamba_med.io", "fusionmamba_med.transforms", "fusionmamba_med.training"} <= set(LAZY_PACKAGES)


@pytest.mark.parametrize("package", LAZY_PACKAGES)
def test_export_map_matches_the_submodules(package):
    pkg = importlib.import_module(package)
    assert sorted(pkg.__all__) == sorted(pkg._EXPORTS)
    for name, module in pkg._EXPORTS.items():
        sub = importlib.import_module(f"{package}.{module}")
        assert name in getattr(sub, "__all__", ()), f"{package}.{module} does not list {name} in __all__"
        assert getattr(pkg, name) is getattr(sub, name), name
