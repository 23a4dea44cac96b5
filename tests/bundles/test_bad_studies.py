"""A batch with broken studies, through the real PET-MRI bundle: the good study is fused, each bad one fails with
a reason naming it and its file, nothing half-written is left, the exit status is non-zero, and a second run
resumes (skips what is done, leaves it untouched)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
GOOD = ROOT / "sample_data" / "pet_mri" / "study01"

pytestmark = pytest.mark.slow


def _run(dataset: Path, out: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", "bundles/pet_mri/inference.json",
           "--dataset_dir", str(dataset), "--output_dir", str(out), "--progress", "False", "--qa", "False"]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})


@pytest.fixture(scope="module")
def messy_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("messy")
    shutil.copytree(GOOD, root / "good")
    # truncated PET file
    shutil.copytree(GOOD, root / "truncated_pet")
    pet = root / "truncated_pet" / "PET.nrrd"
    pet.write_bytes(pet.read_bytes()[:2000])
    # PET missing altogether
    shutil.copytree(GOOD, root / "no_pet")
    (root / "no_pet" / "PET.nrrd").unlink()
    # a blank PET volume
    shutil.copytree(GOOD, root / "blank_pet")
    (root / "blank_pet" / "PET.nrrd").unlink()
    nib.save(nib.Nifti1Image(np.zeros((30, 30, 20), np.float32), np.diag([4.0, 4.0, 4.0, 1.0])),
             str(root / "blank_pet" / "PET.nii.gz"))
    # an MRI series with one slice cut short
    shutil.copytree(GOOD, root / "broken_mri")
    victim = sorted((root / "broken_mri" / "MR").iterdir())[5]
    victim.write_bytes(victim.read_bytes()[:1000])
    return root


def test_bad_studies_fail_alone_and_by_name(messy_dataset, tmp_path):
    out = tmp_path / "out"
    proc = _run(messy_dataset, out)
    assert proc.returncode != 0, "a batch with failed studies must exit non-zero"
    summary = json.loads((out / "fusion_summary.json").read_text())
    status = {r["study"]: r for r in summary["studies"]}
    assert status["good"]["status"] == "fused" and Path(status["good"]["output"]).is_file()
    expected_files = {"truncated_pet": "PET.nrrd", "no_pet": "no_pet", "blank_pet": "PET.nii.gz",
                      "broken_mri": "0006.dcm"}
    for study, culprit in expected_files.items():
        assert status[study]["status"] == "failed", study
        assert study in status[study]["reason"] and culprit in status[study]["reason"], status[study]["reason"]
    assert summary["fused"] == 1 and summary["failed"] == 4
    # nothing half-written, and nothing written for the failed studies
    assert not [p for p in out.rglob("*") if "partial" in p.name]
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["good"]
    # inputs untouched
    assert (messy_dataset / "truncated_pet" / "PET.nrrd").stat().st_size == 2000

    # resume: the fused study is skipped and its file left as it was
    before = Path(status["good"]["output"]).stat().st_mtime_ns
    again = _run(messy_dataset, out)
    assert again.returncode != 0
    summary2 = json.loads((out / "fusion_summary.json").read_text())
    assert {r["study"]: r["status"] for r in summary2["studies"]}["good"] == "skipped"
    assert Path(status["good"]["output"]).stat().st_mtime_ns == before
