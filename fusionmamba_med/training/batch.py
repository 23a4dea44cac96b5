"""Batch preparation for unsupervised fusion training: the sources are both the input and the loss target."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

__all__ = ["prepare_fusion_batch"]


def prepare_fusion_batch(
    batchdata: Mapping[str, Any], device: str | torch.device | None = None, non_blocking: bool = False, **kwargs: Any
) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch["image"]`` [N, 2, H, W] -> ``(image, image)``: no ground-truth fused image exists, so the loss compares
    the prediction with the two sources. A ``prepare_batch`` for MONAI's ``SupervisedTrainer`` and
    ``SupervisedEvaluator``."""
    image = batchdata["image"]
    if not isinstance(image, torch.Tensor) or image.dim() != 4 or image.shape[1] != 2:
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"fusion batches need image [N, 2, H, W], got {shape}")
    image = image.to(device=device, non_blocking=non_blocking, **kwargs)
    return image, image
