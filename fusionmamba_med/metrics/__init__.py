"""Fusion quality metrics (EN, SD, SF, AG, MI, SCD, VIF, Qabf, SSIM, PSNR, CC) on 2D grey images."""

from fusionmamba_med.metrics.fusion_metrics import (
    METRICS,
    ag,
    cc,
    en,
    evaluate_fusion,
    mi,
    psnr,
    qabf,
    scd,
    sd,
    sf,
    ssim,
    to_uint8_grey,
    vif,
)

__all__ = [
    "METRICS",
    "ag",
    "cc",
    "en",
    "evaluate_fusion",
    "mi",
    "psnr",
    "qabf",
    "scd",
    "sd",
    "sf",
    "ssim",
    "to_uint8_grey",
    "vif",
]
