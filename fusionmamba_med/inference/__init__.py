"""Inference: batch fusion of studies (volumes) and of 2D pairs, and QA pictures.

:mod:`.batch` holds the loop both runners share (:class:`~.batch.BatchRunner`); :mod:`.study_runner` and
:mod:`.pair_runner` the two item types; :mod:`.forward` the network call (:func:`~.forward.run_network`).
"""

from fusionmamba_med.inference.batch import BatchRunner, partition, root_cause
from fusionmamba_med.inference.forward import run_network
from fusionmamba_med.inference.pair_runner import PairFusionRunner
from fusionmamba_med.inference.qa import qa_montage, save_qa_montage
from fusionmamba_med.inference.study_runner import StudyFusionRunner

__all__ = ["BatchRunner", "PairFusionRunner", "StudyFusionRunner", "partition", "root_cause", "run_network",
           "qa_montage", "save_qa_montage"]
