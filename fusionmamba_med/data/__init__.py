"""Synthetic data: an anatomy-like 3D head phantom and the generator of the project's ``sample_data/`` folder.

Submodules: :mod:`.phantom` (``phantom_labels``, ``mri_t1``, ``ct_hu``, ``pet_activity``, ``spect_activity``,
``sample_on_grid``) and :mod:`.sample_data` (``generate_sample_data``, ``make_medical_study``, ``make_ir_vis_pairs``,
``make_gfp_pc_pairs``; CLI ``python -m fusionmamba_med.data.sample_data``); :mod:`.pairs` holds the 2D pair
discovery and loading transforms. Names are imported lazily.
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
    "grid_affine": "sample_data",
    "euler_transform_lps": "sample_data",
    "make_medical_study": "sample_data",
    "make_ir_vis_pairs": "sample_data",
    "make_gfp_pc_pairs": "sample_data",
    "generate_sample_data": "sample_data",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_getattr(__name__, _EXPORTS)
