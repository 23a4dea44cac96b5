"""Old name of :mod:`fusionmamba_med.inference.study_runner` (kept so that existing imports keep working); the batch
helpers live in :mod:`fusionmamba_med.inference.batch`."""

from fusionmamba_med.inference.batch import count_outcomes, end_batch, partition, root_cause
from fusionmamba_med.inference.study_runner import StudyFusionRunner

__all__ = ["StudyFusionRunner", "count_outcomes", "end_batch", "root_cause", "partition"]
