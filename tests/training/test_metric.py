"""FusionQualityMetric: mean fusion measures over the validation images, usable as an evaluator's key metric."""

import numpy as np
import pytest
import torch
from ignite.engine import Engine

from fusionmamba_med.metrics.fusion_metrics import evaluate_fusion
from fusionmamba_med.training import FusionQualityMetric


def _sources(seed, size=32):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    a = 0.5 + 0.4 * np.sin(6 * xx) * (yy > 0.4) + 0.05 * rng.random((size, size))
    b = 0.3 + 0.5 * np.exp(-((xx - 0.5) ** 2 + (yy - 0.5) ** 2) / 0.05)
    return torch.tensor(np.stack([a, b]), dtype=torch.float32).clamp(0, 1)  # (2, H, W)


def _evaluate(metric, batches):
    """Run an ignite engine whose output is the decollated evaluator output [{"pred", "label"}, ...]."""
    engine = Engine(lambda e, batch: batch)
    metric.attach(engine, "val_score")
    return engine.run(batches).metrics


def test_score_is_the_mean_of_the_score_measures_over_images():
    label = [_sources(1), _sources(2)]
    good = [(s.mean(0, keepdim=True)) for s in label]  # the average of the two sources
    bad = [torch.rand(1, 32, 32, generator=torch.Generator().manual_seed(i)) for i in range(2)]  # noise

    metrics = _evaluate(FusionQualityMetric(), [[{"pred": p, "label": y} for p, y in zip(good, label)]])
    expected = [evaluate_fusion(p[0].numpy(), y[0].numpy(), y[1].numpy()) for p, y in zip(good, label)]
    for name in ("EN", "SF", "MI", "Qabf", "SSIM", "CC"):
        assert metrics[name] == pytest.approx(np.mean([e[name] for e in expected]), rel=1e-6)
    assert metrics["val_score"] == pytest.approx((metrics["SSIM"] + metrics["Qabf"]) / 2)

    noisy = _evaluate(FusionQualityMetric(), [[{"pred": p, "label": y} for p, y in zip(bad, label)]])
    assert noisy["val_score"] < metrics["val_score"]


def test_batched_tensors_and_a_custom_score():
    label = torch.stack([_sources(3), _sources(4)])  # (2, 2, H, W)
    pred = label[:, :1]  # fused = A
    metric = FusionQualityMetric(metrics=["ssim", "psnr"], score=["SSIM"], output_transform=lambda out: out)
    metrics = _evaluate(metric, [(pred, label)])
    assert set(metrics) == {"val_score", "SSIM", "PSNR"}  # names are matched case-insensitively
    assert metrics["val_score"] == metrics["SSIM"]


def test_bad_metric_names_are_refused():
    with pytest.raises(KeyError):
        FusionQualityMetric(metrics=["SSIM", "nope"])
    with pytest.raises(ValueError):
        FusionQualityMetric(metrics=["EN"], score=["SSIM"])
