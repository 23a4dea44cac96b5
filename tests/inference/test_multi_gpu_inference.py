"""Multi-GPU / multi-node inference overlay, exercised on CPU with gloo and 2 processes over the sample studies."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_two_ranks_split_the_studies_and_write_each_once(tmp_path):
    configs = "['bundles/pet_mri/inference.json','bundles/pet_mri/configs/multi_gpu_inference.json']"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "monai.bundle",
           "run", "--config_file", configs, "--output_dir", str(tmp_path), "--qa", "False"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((tmp_path / "fusion_summary.json").read_text())
    studies = sorted(p.name for p in (ROOT / "sample_data" / "pet_mri").iterdir() if p.is_dir())
    assert summary["world_size"] == 2 and summary["fused"] == len(studies) and summary["failed"] == 0
    assert sorted(r["study"] for r in summary["studies"]) == studies  # each study exactly once
    assert {r["rank"] for r in summary["studies"]} == {0, 1}  # both ranks did work
    outputs = sorted(tmp_path.rglob("*_fused.nii.gz"))
    assert len(outputs) == len(studies)
    assert not list(tmp_path.glob("fusion_summary_rank*.json"))  # one merged summary, written by rank 0
    assert not list(tmp_path.rglob(".*partial*"))
