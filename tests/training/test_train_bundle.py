"""The bundles' train.json run as users run them, `python -m monai.bundle run --config_file bundles/pet_mri/train.json`
(and with torchrun plus configs/multi_gpu_train.json), on a few generated pairs with a tiny network and 32 px crops."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fusionmamba_med.networks import build_fusionmamba, load_weights
from tests.synthetic import make_pairs

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["--preset", "tiny", "--crop_size", 32, "--log_every", 1, "--num_workers", 0, "--progress", False,
         "--val_holdout", 1]

pytestmark = pytest.mark.slow


def _run(args, cwd=ROOT, launcher=("-m", "monai.bundle", "run")):
    cmd = [sys.executable, *launcher, *map(str, args)]
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1",  # this checkout's package, also inside
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    return proc, proc.stdout + proc.stderr


def _column(path, name="iteration"):
    with open(path, newline="") as f:
        return [int(row[name]) for row in csv.DictReader(f)]


def _sources(tmp_path, n):
    dir_a, dir_b = make_pairs(tmp_path / "data", [f"{i:02d}" for i in range(n)])
    return repr([{"dir_a": str(dir_a), "dir_b": str(dir_b)}])


def test_train_then_resume(tmp_path):
    out = tmp_path / "run"
    args = ["--train_sources", _sources(tmp_path, 5), "--output_dir", out, "--val_interval", 2, "--checkpoint_every", 1,
            "--batch_size", 2, *SMALL]
    proc, log = _run(["--config_file", "bundles/pet_mri/train.json", "--max_iterations", 3, *args])
    assert proc.returncode == 0, log[-3000:]

    ckpts = out / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == [
        "checkpoint_final_iteration=3.pt", "checkpoint_iteration=1.pt", "checkpoint_iteration=2.pt",
        "checkpoint_iteration=3.pt"]
    first = torch.load(ckpts / "checkpoint_iteration=1.pt", weights_only=True)
    final = torch.load(ckpts / "checkpoint_final_iteration=3.pt", weights_only=True)
    assert set(final) == {"network", "optimizer", "lr_scheduler", "trainer"} and final["trainer"]["iteration"] == 3

    net = load_weights(build_fusionmamba("tiny"), out / "model.pt")  # plain CPU state dict, strict
    exported = net.state_dict()
    assert all(torch.equal(exported[k], v) for k, v in final["network"].items())
    assert any(not torch.equal(exported[k], v) for k, v in first["network"].items())  # training moved the weights
    load_weights(build_fusionmamba("tiny"), out / "model_best.pt")

    split = json.loads((out / "split.json").read_text())
    assert len(split["validation"]) == 1 and len(split["training"]) == 4
    assert _column(out / "train_log.csv") == [1, 2, 3]
    assert _column(out / "val_log.csv") == [2]

    # resume from inside the bundle folder up to iteration 5
    proc, log = _run(["--config_file", "train.json", "--max_iterations", 5, "--resume", True, *args],
                     cwd=ROOT / "bundles" / "pet_mri")
    assert proc.returncode == 0, log[-3000:]
    assert "iteration=3.pt" in log and "Restored all variables" in log
    assert _column(out / "train_log.csv") == [1, 2, 3, 4, 5]  # went on from 3, did not start over
    resumed = torch.load(ckpts / "checkpoint_final_iteration=5.pt", weights_only=True)
    assert resumed["trainer"]["iteration"] == 5
    assert _column(out / "val_log.csv") == [2, 4]


BALANCED = "$fusionmamba_med.training.source_balanced_sampler(@split['training'], num_replicas=@world_size, rank=@rank)"


@pytest.mark.parametrize("sampler", [None, BALANCED], ids=["distributed", "balanced"])
def test_multi_gpu_overlay_on_cpu(tmp_path, sampler):
    """Two processes with gloo: DistributedSampler (or the balanced sampler, told the process count) halves the
    epoch, and only rank 0 writes."""
    out = tmp_path / "run"
    configs = "['bundles/pet_mri/configs/train.json','bundles/pet_mri/configs/multi_gpu_train.json']"
    proc, log = _run(
        ["--config_file", configs, "--train_sources", _sources(tmp_path, 5), "--output_dir", out,
         "--max_iterations", 2, "--val_interval", 2, "--checkpoint_every", 2, "--batch_size", 1, *SMALL,
         *(["--train_sampler", sampler] if sampler else [])],
        launcher=("-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2",
                  "-m", "monai.bundle", "run"),
    )
    assert proc.returncode == 0, log[-3000:]
    assert ("source_balanced_sampler: {'data': 4} pairs by source" in log) == bool(sampler)
    final = torch.load(out / "checkpoints" / "checkpoint_final_iteration=2.pt", weights_only=True)
    assert final["trainer"]["epoch_length"] == 2  # 4 training pairs, batch 1, split over 2 processes
    assert not any(k.startswith("module.") for k in final["network"])
    assert _column(out / "train_log.csv") == [1, 2]  # one writer: rank 1 would have added rows
    assert _column(out / "val_log.csv") == [2]
    load_weights(build_fusionmamba("tiny"), out / "model.pt")


def test_ct_bundle_fine_tunes_its_blend_weights(tmp_path):
    """bundles/ct_mri/train.json from its own shipped "blend" weights: the export is a blend network, and the blend
    branch trained at its larger learning rate (it moves further than the head in the same two steps)."""
    shipped = ROOT / "bundles" / "ct_mri" / "models" / "model.pt"
    if not shipped.is_file():
        pytest.skip("no shipped CT-MRI weights in this checkout")
    from fusionmamba_med.networks import fusionmamba_from_weights

    out = tmp_path / "run"
    proc, log = _run(["--config_file", "bundles/ct_mri/train.json", "--train_sources", _sources(tmp_path, 4),
                      "--output_dir", out, "--init_weights", shipped, "--max_iterations", 2, "--val_interval", 2,
                      "--checkpoint_every", 2, "--batch_size", 2, *SMALL])
    assert proc.returncode == 0, log[-3000:]
    start, end = fusionmamba_from_weights(shipped), fusionmamba_from_weights(out / "model.pt")
    assert start.residual == end.residual == "blend"
    moved = {name: (p - dict(start.named_parameters())[name]).abs().max().item() for name, p in end.named_parameters()}
    assert moved["blend.2.bias"] > 5 * moved["head.bias"] > 0


def test_2d_bundle_trains_with_the_edge_loss_and_a_structure_floor(tmp_path):
    """bundles/generic_2d/train.json with the loss its shipped weights were fine-tuned with (Qabf term, SSIM as a floor
    relative to averaging): the Qabf term is logged as a loss in (0, 1) and the export keeps the shipped residual mode."""
    shipped = ROOT / "bundles" / "generic_2d" / "models" / "model.pt"
    if not shipped.is_file():
        pytest.skip("no shipped 2D weights in this checkout")
    from fusionmamba_med.networks import fusionmamba_from_weights

    out = tmp_path / "run"
    config = json.loads((ROOT / "bundles" / "generic_2d" / "configs" / "train.json").read_text())
    proc, log = _run(["--config_file", "bundles/generic_2d/train.json", "--train_sources", _sources(tmp_path, 4),
                      "--output_dir", out, "--init_weights", shipped, "--max_iterations", 2, "--val_interval", 2,
                      "--checkpoint_every", 2, "--batch_size", 2, *SMALL])
    assert proc.returncode == 0, log[-3000:]
    ir_vis_loss = config["task_loss_weights"]["ir_vis"]
    assert ir_vis_loss["w_qabf"] > 0 and ir_vis_loss["structure_margin"] is not None
    with open(out / "train_log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["iteration"]) for r in rows] == [1, 2]
    assert all(0.0 < float(r["loss_qabf"]) < 1.0 for r in rows)
    assert fusionmamba_from_weights(out / "model.pt").residual == fusionmamba_from_weights(shipped).residual


def test_2d_bundle_loss_and_training_pairs_follow_the_task():
    """generic_2d train.json: --task gfp_pc trains on the Harvard functional-over-MRI pairs (functional image as A, the
    colour source, like GFP) with its own loss; --task ir_vis on irvis_train with the SSIM floor; a --loss_weights
    dict given on the command line still replaces the task's."""
    from monai.bundle import ConfigParser

    def parsed(task, **overrides):
        parser = ConfigParser()
        parser.read_config(ROOT / "bundles" / "generic_2d" / "train.json")
        parser.update({"task": task, "data_root": "/data", **overrides})
        return parser.get_parsed_content("loss"), parser.get_parsed_content("train_sources")

    loss, sources = parsed("gfp_pc")
    assert (loss.w_ssim, loss.w_int, loss.w_qabf, loss.structure_margin) == (1.75, 0.0, 1.0, None)
    assert [(Path(s["dir_a"]).name, Path(s["dir_b"]).name) for s in sources] == [("PET", "MRI"), ("SPECT", "MRI")]
    assert all(s["dir_a"].startswith("/data/harvard/") for s in sources)
    loss, sources = parsed("ir_vis")
    assert loss.structure_margin == 0.035 and loss.w_qabf == 1.0
    assert [s["name"] for s in sources] == ["irvis_train"]
    loss, _ = parsed("gfp_pc", loss_weights={"w_ssim": 1.0, "w_int": 10.0, "w_grad": 10.0})
    assert (loss.w_ssim, loss.w_int, loss.w_grad, loss.w_qabf) == (1.0, 10.0, 10.0, 0.0)
