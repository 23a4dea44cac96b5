"""Inference: batch fusion of studies (volumes) and of 2D pairs, and QA pictures."""

from fusionmamba_med.inference.pair_runner import PairFusionRunner
from fusionmamba_med.inference.qa import qa_montage, save_qa_montage
from fusionmamba_med.inference.runner import StudyFusionRunner, partition, root_cause

__all__ = ["PairFusionRunner", "StudyFusionRunner", "partition", "root_cause", "qa_montage", "save_qa_montage"]
