"""Input/output layer: study discovery, loading through MONAI readers, writing fused volumes.

Submodules: :mod:`.naming` (``safe_name``), :mod:`.studies` (``discover_studies``), :mod:`.loading`
(``load_volume``, ``LoadStudyd``), :mod:`.writers` (``FusedVolumeWriter``, ``write_summary``),
:mod:`.images2d` (``read_image2d``, ``write_image2d`` for 2D pairs). Names are imported
lazily so that ``import fusionmamba_med.io.naming`` stays light.
"""

from __future__ import annotations

from fusionmamba_med._lazy import lazy_getattr

_EXPORTS = {
    "safe_name": "naming",
    "unique_names": "naming",
    "discover_studies": "studies",
    "load_datalist": "studies",
    "default_modalities": "studies",
    "DEFAULT_MODALITIES": "studies",
    "load_volume": "loading",
    "list_dicom_series": "loading",
    "LoadStudyd": "loading",
    "DEFAULT_MAX_VOXELS": "loading",
    "FusedVolumeWriter": "writers",
    "write_summary": "writers",
    "read_image2d": "images2d",
    "write_image2d": "images2d",
    "image_size2d": "images2d",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_getattr(__name__, _EXPORTS)
