"""The generic_2d bundle runs as users run it, `python -m monai.bundle run --config_file
bundles/generic_2d/inference.json`, from the repository root and from inside the bundle, on small generated pairs
given with --dataset_dir."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from fusionmamba_med.io.images2d import read_image2d

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "bundles" / "generic_2d"
RNG = np.random.default_rng(3)

pytestmark = pytest.mark.slow


def _save(path, pixels):
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".tif":
        tifffile.imwrite(path, pixels)
    else:
        Image.fromarray(pixels).save(path)


def _run(cwd, config, *overrides):
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", config, *map(str, overrides)]
    env = {**os.environ, "PYTHONWARNINGS": "ignore",  # this checkout's package, also from inside the bundle
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_ir_vis_from_repo_root(tmp_path):
    data, out = tmp_path / "ir_vis", tmp_path / "out"
    _save(data / "vi" / "street.png", RNG.integers(0, 256, (24, 36, 3), dtype=np.uint8))  # colour, 8 bit
    _save(data / "ir" / "street.png", RNG.integers(0, 256, (24, 36), dtype=np.uint8))
    _save(data / "vi" / "lab.png", RNG.integers(0, 65536, (20, 28), dtype=np.uint16))  # grey, 16 bit
    _save(data / "ir" / "lab.tif", RNG.integers(0, 65536, (20, 28), dtype=np.uint16))
    _save(data / "vi" / "shifted.png", RNG.integers(0, 256, (24, 36), dtype=np.uint8))  # sizes differ
    _save(data / "ir" / "shifted.png", RNG.integers(0, 256, (30, 36), dtype=np.uint8))

    proc = _run(ROOT, "bundles/generic_2d/inference.json", "--dataset_dir", data, "--output_dir", out)
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0, log  # one pair failed
    summary = json.loads((out / "fusion_summary.json").read_text())
    assert (summary["fused"], summary["failed"]) == (2, 1), log
    failed = [p for p in summary["pairs"] if p["status"] == "failed"]
    assert failed[0]["name"] == "shifted" and str(data / "ir" / "shifted.png") in failed[0]["reason"]

    colour, info = read_image2d(out / "street.png")
    assert colour.shape == (3, 24, 36) and info["bit_depth"] == 8 and info["mode"] == "RGB"
    grey, info = read_image2d(out / "lab.png")
    assert grey.shape == (1, 20, 28) and info["bit_depth"] == 16
    assert not (out / "shifted.png").exists()
    weights = BUNDLE / "models" / "model.pt"
    assert ("RANDOM" in log) != weights.is_file(), log  # says which weights it used


def test_gfp_pc_from_inside_the_bundle(tmp_path):
    data, out = tmp_path / "gfp_pc", tmp_path / "out"
    green = RNG.integers(30, 256, (32, 32), dtype=np.uint8)
    _save(data / "GFP" / "cell.bmp", np.dstack([np.zeros_like(green), green, np.zeros_like(green)]))
    _save(data / "PC" / "cell.bmp", RNG.integers(0, 256, (32, 32), dtype=np.uint8))

    proc = _run(BUNDLE, "inference.json", "--task", "gfp_pc", "--dataset_dir", data, "--output_dir", out)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log
    weights = BUNDLE / "models" / "model_gfp_pc.pt"  # GFP-PC has its own weights (task_weights)
    assert (f"network weights: {weights}" in log) == weights.is_file() and ("RANDOM" in log) != weights.is_file(), log
    fused, info = read_image2d(out / "cell.png")
    assert fused.shape == (3, 32, 32) and info["mode"] == "RGB"
    assert (fused[1] >= fused[0]).all() and (fused[1] >= fused[2]).all()  # GFP's green hue is kept


GFP_PC = ROOT.parent / "shared" / "data" / "GFP_PC"


@pytest.mark.skipif(not (GFP_PC / "GFP").is_dir() or not (BUNDLE / "models" / "model_gfp_pc.pt").is_file(),
                    reason="needs ../shared/data/GFP_PC and the shipped GFP-PC weights")
def test_gfp_pc_weights_keep_more_structure_than_the_rules_they_started_from():
    """The shipped GFP-PC weights on the 4 GFP_PC evaluation pairs: more SSIM than the max rule and than the soft max
    rule on 3x3-smoothed sources they started from (k = 6), and more of both metrics than the IR-VIS weights."""
    import torch

    from fusionmamba_med.baselines.classical import ClassicalFusionNet
    from fusionmamba_med.evaluation import score_network
    from fusionmamba_med.io.pairs import discover_pairs
    from fusionmamba_med.networks import build_fusionmamba, fusionmamba_from_weights
    from fusionmamba_med.training import max_rule_blend_start

    items, errors = discover_pairs(GFP_PC / "GFP", GFP_PC / "PC")
    assert len(items) == 4 and not errors
    ours = score_network(fusionmamba_from_weights(BUNDLE / "models" / "model_gfp_pc.pt"), items)
    max_rule = score_network(ClassicalFusionNet("max_abs"), items)
    torch.manual_seed(0)
    start_rule = score_network(max_rule_blend_start(build_fusionmamba("tiny", residual="blend"), 6.0, smooth=True), items)
    ir_vis = score_network(fusionmamba_from_weights(BUNDLE / "models" / "model.pt"), items)
    assert ours["SSIM"] > max_rule["SSIM"] and ours["SSIM"] > start_rule["SSIM"]
    assert ours["Qabf"] > ir_vis["Qabf"] and ours["SSIM"] > ir_vis["SSIM"]
