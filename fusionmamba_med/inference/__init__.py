"""Inference: batch fusion of studies and QA pictures."""

from fusionmamba_med.inference.qa import qa_montage, save_qa_montage
from fusionmamba_med.inference.runner import StudyFusionRunner, partition, root_cause

__all__ = ["StudyFusionRunner", "partition", "root_cause", "qa_montage", "save_qa_montage"]
