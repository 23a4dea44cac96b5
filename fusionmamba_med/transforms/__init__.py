"""MONAI transforms of the medical pipeline: registration onto the MRI grid, intensity normalisation, colour."""

from fusionmamba_med.transforms.colour import (
    COLORMAPS,
    Colormap,
    Colormapd,
    RestoreColord,
    SplitLumad,
    apply_colormap,
    rgb_to_ycbcr,
    ycbcr_to_rgb,
)
from fusionmamba_med.transforms.intensity import (
    CT_WINDOWS,
    PercentileNormalize,
    PercentileNormalized,
    WindowIntensity,
    WindowIntensityd,
    resolve_window,
)
from fusionmamba_med.transforms.registration import (
    REGISTRATION_MODES,
    RegisterToFixed,
    RegisterToFixedd,
    rotation_angle_deg,
    target_registration_error,
    transform_from_info,
)
from fusionmamba_med.transforms.sitk_bridge import lps_geometry_to_ras_affine, metatensor_to_sitk, sitk_to_metatensor

__all__ = [
    "COLORMAPS",
    "CT_WINDOWS",
    "Colormap",
    "Colormapd",
    "PercentileNormalize",
    "PercentileNormalized",
    "REGISTRATION_MODES",
    "RegisterToFixed",
    "RegisterToFixedd",
    "RestoreColord",
    "SplitLumad",
    "WindowIntensity",
    "WindowIntensityd",
    "apply_colormap",
    "lps_geometry_to_ras_affine",
    "metatensor_to_sitk",
    "resolve_window",
    "rgb_to_ycbcr",
    "rotation_angle_deg",
    "sitk_to_metatensor",
    "target_registration_error",
    "transform_from_info",
    "ycbcr_to_rgb",
]
