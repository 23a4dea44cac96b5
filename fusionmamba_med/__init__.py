"""fusionmamba-med: multimodal medical image fusion with FusionMamba, as MONAI bundles.

Subpackages (imported on first use, so ``import fusionmamba_med`` stays light and bundle configs can write
``"$import fusionmamba_med"`` then ``"$fusionmamba_med.io.discover_studies(...)"``):
``ops`` (selective scan), ``networks``, ``losses``, ``metrics``, ``baselines``, ``transforms``, ``io``, ``data``,
``inference``, ``training``, ``evaluation``, ``bundle``, ``errors``.
"""

from __future__ import annotations

from fusionmamba_med._lazy import lazy_getattr

__version__ = "0.1.0"

_SUBMODULES = (
    "baselines", "bundle", "data", "errors", "evaluation", "inference", "io", "losses", "metrics", "networks", "ops",
    "training", "transforms",
)


__getattr__ = lazy_getattr(__name__, {})


def __dir__():
    return sorted(list(globals()) + list(_SUBMODULES))
