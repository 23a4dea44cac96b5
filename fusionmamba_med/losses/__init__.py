"""Training losses."""

from fusionmamba_med.losses.fusion_loss import FusionLoss, sobel_magnitude

__all__ = ["FusionLoss", "sobel_magnitude"]
