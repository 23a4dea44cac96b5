"""Training: pairs and their held-out split, batch preparation, validation metric and handlers for the bundles'
``train.json``. Names are imported lazily so that ``import fusionmamba_med.training.split`` stays light."""

from __future__ import annotations

from fusionmamba_med._lazy import lazy_getattr

_EXPORTS = {
    "training_pairs": "split",
    "split_holdout": "split",
    "source_label": "split",
    "pair_group": "sampling",
    "source_balanced_sampler": "sampling",
    "prepare_fusion_batch": "batch",
    "FusionQualityMetric": "metric",
    "latest_checkpoint": "checkpoint",
    "resolve_resume": "checkpoint",
    "export_weights": "checkpoint",
    "initial_weights": "checkpoint",
    "interpolate_weights": "checkpoint",
    "average_weights": "checkpoint",
    "max_rule_blend_start": "checkpoint",
    "unwrap_network": "checkpoint",
    "parameter_groups": "optim",
    "TrainingCheckpointLoader": "handlers",
    "TrainingCheckpointSaver": "handlers",
    "ExportWeights": "handlers",
    "IterationBudget": "handlers",
    "LossCSVLogger": "handlers",
    "ValidationCSVLogger": "handlers",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_getattr(__name__, _EXPORTS)
