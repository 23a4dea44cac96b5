"""Fusion networks."""

from fusionmamba_med.networks.fusionmamba import (
    PRESETS,
    FusionMamba,
    build_fusionmamba,
    fusionmamba_from_weights,
    load_network,
    load_weights,
)

__all__ = ["FusionMamba", "PRESETS", "build_fusionmamba", "fusionmamba_from_weights", "load_network", "load_weights"]
