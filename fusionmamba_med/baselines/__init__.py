"""Classical fusion rules (average, max-abs, Laplacian pyramid, wavelet) as baselines for the network."""

from fusionmamba_med.baselines.classical import (
    BASELINES,
    ClassicalFusionNet,
    average_fusion,
    laplacian_pyramid_fusion,
    max_abs_fusion,
    wavelet_fusion,
)

__all__ = [
    "BASELINES",
    "ClassicalFusionNet",
    "average_fusion",
    "laplacian_pyramid_fusion",
    "max_abs_fusion",
    "wavelet_fusion",
]
