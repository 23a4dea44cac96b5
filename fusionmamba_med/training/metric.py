"""Validation metric for fusion: no-reference quality measures (EN, SF, MI, Qabf, SSIM, ...) averaged over images."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine
from ignite.metrics import Metric
from ignite.metrics.metric import reinit__is_reduced, sync_all_reduce
from monai.handlers import from_engine

__all__ = ["FusionQualityMetric"]


class FusionQualityMetric(Metric):
    """Mean fusion-quality measures of the fused images against their two sources, for a MONAI evaluator.

    Each image is scored with :func:`fusionmamba_med.metrics.fusion_metrics.evaluate_fusion` (fused = ``pred``
    channel 0, sources = ``label`` channels 0 and 1, all in [0, 1]). The metric's own value is the mean of the
    ``score`` measures (default SSIM and Qabf, both "higher is better"), fit for a key metric; every measure is also
    put into ``engine.state.metrics`` under its own name. Non-finite values are left out of the means. Sums are
    all-reduced across processes under ``torch.distributed``.

    Args:
        metrics: the measures to compute.
        score: the measures averaged into the metric's value; a subset of ``metrics``.
        output_transform: engine output -> ``(pred, label)``.
    """

    def __init__(
        self,
        metrics: Sequence[str] = ("EN", "SF", "MI", "Qabf", "SSIM", "CC"),
        score: Sequence[str] = ("SSIM", "Qabf"),
        output_transform: Callable = from_engine(["pred", "label"]),
        device: str | torch.device = "cpu",
    ) -> None:
        from fusionmamba_med.metrics.fusion_metrics import METRICS

        canonical = {name.lower(): name for name in METRICS}
        unknown = [m for m in list(metrics) + list(score) if m.lower() not in canonical]
        if unknown:
            raise KeyError(f"unknown fusion metrics {unknown}; choose from {list(METRICS)}")
        self.names = list(dict.fromkeys(canonical[m.lower()] for m in metrics))
        self.score = list(dict.fromkeys(canonical[m.lower()] for m in score))
        missing = [s for s in self.score if s not in self.names]
        if missing or not self.score:
            raise ValueError(f"score measures {self.score} must be a non-empty subset of metrics {self.names}")
        self.results: dict[str, float] = {}
        super().__init__(output_transform=output_transform, device=device)

    @reinit__is_reduced
    def reset(self) -> None:
        self._sum = torch.zeros(len(self.names), dtype=torch.float64, device=self._device)
        self._num = torch.zeros(len(self.names), dtype=torch.float64, device=self._device)

    @reinit__is_reduced
    def update(self, output: Sequence[Any]) -> None:
        from fusionmamba_med.metrics.fusion_metrics import evaluate_fusion

        # batched [N, C, H, W] tensors or decollated sequences of [C, H, W]: iterating gives images either way
        for p, y in zip(output[0], output[1]):
            f = np.clip(p[0].detach().float().cpu().numpy(), 0.0, 1.0)
            src = y.detach().float().cpu().numpy()
            values = evaluate_fusion(f, src[0], src[1], metrics=self.names)
            for i, name in enumerate(self.names):
                v = values[name]
                if math.isfinite(v):
                    self._sum[i] += v
                    self._num[i] += 1

    @sync_all_reduce("_sum:SUM", "_num:SUM")
    def compute(self) -> float:
        means = torch.where(self._num > 0, self._sum / self._num.clamp(min=1), torch.full_like(self._sum, math.nan))
        self.results = {name: float(m) for name, m in zip(self.names, means)}
        return float(np.mean([self.results[s] for s in self.score]))

    def completed(self, engine: Engine, name: str) -> None:
        """Put the score under ``name`` and every measure under its own name into ``engine.state.metrics``."""
        engine.state.metrics[name] = self.compute()
        for key, value in self.results.items():
            engine.state.metrics[key] = value
