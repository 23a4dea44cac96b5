"""MONAI's bundle contract: every inference config has the properties of an "infer" workflow (bundle_root, device,
dataset_dir, dataset, evaluator, network_def, inferer, and optional ids with the references MONAI expects)."""

from pathlib import Path

import pytest
from monai.bundle import ConfigWorkflow
from monai.transforms import Compose

from fusionmamba_med.inference import StudyFusionRunner
from fusionmamba_med.inference.pair_runner import PairFusionRunner

ROOT = Path(__file__).resolve().parents[2]
DATA = {"ct_mri": "ct_mri", "pet_mri": "pet_mri", "spect_mri": "spect_mri", "generic_2d": "generic_2d/ir_vis"}


@pytest.mark.parametrize("bundle", sorted(DATA))
def test_inference_config_has_the_infer_workflow_properties(bundle, tmp_path):
    workflow = ConfigWorkflow(config_file=str(ROOT / "bundles" / bundle / "configs" / "inference.json"),
                              workflow_type="infer", logging_file=False, output_dir=str(tmp_path), device="cpu")
    workflow.initialize()
    assert workflow.check_properties() == []  # no missing required property, no optional one with a wrong id
    assert Path(workflow.bundle_root) == ROOT / "bundles" / bundle
    assert Path(workflow.dataset_dir) == ROOT / "sample_data" / DATA[bundle]
    # the runner is MONAI's "evaluator" and reads the studies / pairs and their preprocessing from "dataset"
    runner = workflow.evaluator
    assert isinstance(runner, PairFusionRunner if bundle == "generic_2d" else StudyFusionRunner)
    assert isinstance(workflow.preprocessing, Compose) and workflow.dataset.transform is workflow.preprocessing
    items = runner.pairs if bundle == "generic_2d" else runner.studies
    assert len(items) == len(workflow.dataset) > 0
    assert workflow.parser["run"] == ["$@evaluator.run()"]
