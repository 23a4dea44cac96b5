"""Synthetic data: an anatomy-like 3D head phantom and the generator of the project's ``sample_data/`` folder.

Submodules: :mod:`.phantom` (``phantom_labels``, ``mri_t1``, ``ct_hu``, ``pet_activity``, ``spect_activity``,
``sample_on_grid``), :mod:`.sample_medical` (``make_medical_study``, ``grid_affine``, ``euler_transform_lps``,
``write_mr_series``), :mod:`.sample_2d` (``make_ir_vis_pairs``, ``make_gfp_pc_pairs``) and :mod:`.sample_data`
(``generate_sample_data``; CLI ``python -m fusionmamba_med.data.sample_data``). Real 2D pair discovery and loading
live in :mod:`fusionmamba_med.io.pairs` and :mod:`fusionmamba_med.transforms.pairs`. Names are imported lazily.
"""

from __future__ import annotations

from fusionmamba_med._lazy import lazy_getattr

_EXPORTS = {
    "LABELS": "phantom",
    "HeadPhantom": "phantom",
    "landmarks": "phantom",
    "phantom_labels": "phantom",
    "tissue_property": "phantom",
    "mri_t1": "phantom",
    "ct_hu": "phantom",
    "pet_activity": "phantom",
    "spect_activity": "phantom",
    "grid_points": "phantom",
    "sample_on_grid": "phantom",
    "grid_affine": "sample_medical",
    "euler_transform_lps": "sample_medical",
    "make_medical_study": "sample_medical",
    "write_mr_series": "sample_medical",
    "make_ir_vis_pairs": "sample_2d",
    "make_gfp_pc_pairs": "sample_2d",
    "generate_sample_data": "sample_data",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_getattr(__name__, _EXPORTS)
