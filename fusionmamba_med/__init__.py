"""fusionmamba-med: multimodal medical image fusion with FusionMamba, as MONAI bundles.

Subpackages (imported on first use, so ``import fusionmamba_med`` stays light and bundle configs can write
``"$import fusionmamba_med"`` then ``"$fusionmamba_med.io.discover_studies(...)"``):
``ops`` (selective scan), ``networks``, ``losses``, ``metrics``, ``baselines``, ``transforms``, ``io``, ``data``,
``inference``, ``training``, ``evaluation``, ``bundle``, ``errors``.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_SUBMODULES = (
    "baselines", "bundle", "data", "errors", "evaluation", "inference", "io", "losses", "metrics", "networks", "ops",
    "training", "transforms",
)


def __getattr__(name: str):
    if name in _SUBMODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_SUBMODULES))
