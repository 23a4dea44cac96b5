"""Every bundle's train.json (alone and with the multi-GPU overlay) has the MONAI train-workflow properties and the
shared pieces written into it from the repository's configs/ (`python -m fusionmamba_med.bundle sync`)."""

from pathlib import Path

import pytest
from monai.bundle import ConfigParser, ConfigWorkflow

from tests.synthetic import make_pairs

ROOT = Path(__file__).resolve().parents[2]
BUNDLES = ["ct_mri", "pet_mri", "spect_mri", "generic_2d"]


@pytest.mark.parametrize("bundle", BUNDLES)
def test_train_config_has_the_train_workflow_properties(bundle, monkeypatch, tmp_path):
    configs = ROOT / "bundles" / bundle / "configs"
    assert (configs / "multi_gpu_train.json").read_text() == (ROOT / "configs" / "multi_gpu_train.json").read_text()
    assert not (configs / "training.json").exists()  # its pieces are written into train.json itself
    monkeypatch.chdir(ROOT / "bundles" / bundle)  # from inside the bundle

    dir_a, dir_b = make_pairs(tmp_path / "pairs", [f"p{i}" for i in range(12)])  # no dependence on ../shared/data
    sources = [{"name": "generated", "dir_a": str(dir_a), "dir_b": str(dir_b)}]
    workflow = ConfigWorkflow(config_file="configs/train.json", workflow_type="train", logging_file=False,
                              train_sources=sources, output_dir=str(tmp_path / "run"))
    workflow.initialize()
    assert workflow.check_properties() == []
    assert workflow.parser.get_parsed_content("bundle_root") == str(ROOT / "bundles" / bundle)
    assert workflow.parser["train"]["trainer"]["_target_"] == "SupervisedTrainer"
    assert workflow.parser["train_sampler"] is None

    overlay = ConfigParser()  # merged as `monai.bundle run` merges them (its initialize would start torch.distributed)
    overlay.read_config(["configs/train.json", "configs/multi_gpu_train.json"])
    overlay.parse()
    assert overlay["network"]["_target_"] == "torch.nn.parallel.DistributedDataParallel"
    assert overlay["train_sampler"]["_target_"] == "DistributedSampler"
    assert overlay["train"]["dataloader"]["sampler"] == "@train_sampler"  # the shared piece uses the overridden key
    assert overlay["max_iterations"] == workflow.parser["max_iterations"]  # the rest comes from train.json
