"""Classical fusion rules (average, max-abs, Laplacian pyramid, wavelet) as baselines for the network, and ports of
two deep peers (IFCNN-MAX, MATR) that load their authors' published weights (:mod:`.peers`)."""

from fusionmamba_med.baselines.classical import (
    BASELINES,
    ClassicalFusionNet,
    average_fusion,
    laplacian_pyramid_fusion,
    max_abs_fusion,
    wavelet_fusion,
)
from fusionmamba_med.baselines.peers import IFCNNMaxFusion, MATRFusion, peer_methods

__all__ = [
    "BASELINES",
    "ClassicalFusionNet",
    "IFCNNMaxFusion",
    "MATRFusion",
    "average_fusion",
    "laplacian_pyramid_fusion",
    "max_abs_fusion",
    "peer_methods",
    "wavelet_fusion",
]
