"""Deprecated location: 2D pair discovery moved to :mod:`fusionmamba_med.io.pairs` and the pair transforms to
:mod:`fusionmamba_med.transforms.pairs`; this module re-exports them for old configs and scripts."""

from __future__ import annotations

from fusionmamba_med.io.pairs import IMAGE_EXTENSIONS, discover_pairs
from fusionmamba_med.transforms.colour import is_colour
from fusionmamba_med.transforms.pairs import (
    PAIR_TASKS,
    LoadImagePaird,
    PairToFusionInputd,
    RestorePairColourd,
)

__all__ = ["IMAGE_EXTENSIONS", "PAIR_TASKS", "discover_pairs", "is_colour", "LoadImagePaird", "PairToFusionInputd",
           "RestorePairColourd"]
