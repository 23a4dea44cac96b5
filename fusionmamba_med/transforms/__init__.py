"""MONAI transforms of the medical pipeline: registration onto the MRI grid, intensity normalisation, colour.

Submodules: :mod:`.registration` (``RegisterToFixedd``; SimpleITK), :mod:`.sitk_bridge` (MetaTensor <-> SimpleITK),
:mod:`.intensity` (percentile / CT-window normalisation), :mod:`.colour` (colour maps, YCbCr, the one luma split /
restore), :mod:`.pairs` (2D pairs: load, network input, colour). Names are imported lazily, so the 2D pair path does
not load SimpleITK.
"""

from __future__ import annotations

from fusionmamba_med._lazy import lazy_getattr

_EXPORTS = {
    **dict.fromkeys(["COLORMAPS", "Colormap", "Colormapd", "GREY_TOLERANCE", "RestoreColor", "RestoreColord",
                     "RestoreColour", "RestoreColourd", "SplitLuma", "SplitLumad", "apply_colormap", "is_color",
                     "is_colour", "rgb_to_ycbcr", "ycbcr_to_rgb"], "colour"),
    **dict.fromkeys(["PAIR_TASKS", "LoadImage2D", "LoadImagePaird", "PairToFusionInput", "PairToFusionInputd",
                     "RestorePairColord", "RestorePairColourd"], "pairs"),
    **dict.fromkeys(["CT_WINDOWS", "PercentileNormalize", "PercentileNormalized", "WindowIntensity",
                     "WindowIntensityd", "resolve_window"], "intensity"),
    **dict.fromkeys(["REGISTRATION_MODES", "RegisterToFixed", "RegisterToFixedd", "rotation_angle_deg",
                     "target_registration_error", "transform_from_info"], "registration"),
    **dict.fromkeys(["lps_geometry_to_ras_affine", "metatensor_to_sitk", "sitk_to_metatensor"], "sitk_bridge"),
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_getattr(__name__, _EXPORTS)
