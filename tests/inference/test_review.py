"""The review scene of a fused study: overlay styles from the data, and the scene as part of the batch (written
last, completed by a rerun, or not written at all)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.inferers import SliceInferer
from monai.transforms import ConcatItemsd, CopyItemsd

from fusionmamba_med.inference.review import OVERLAY_THRESHOLDS, overlay_volume
from fusionmamba_med.inference.study_runner import StudyFusionRunner
from fusionmamba_med.io import FusedVolumeWriter
from fusionmamba_med.io.review_scene import COLOUR_NODES

AFFINE = np.array([[0.0, 0.0, 2.5, -30.0], [-1.2, 0.0, 0.0, 20.0], [0.0, 1.1, 0.0, -15.0], [0, 0, 0, 1]])


def test_pet_overlay_starts_above_the_background():
    pet = np.zeros((20, 20, 20), np.float32)
    pet[5:15, 5:15, 5:15] = np.linspace(1.0, 10.0, 1000).reshape(10, 10, 10)
    vol = overlay_volume("pet", ["pet.nii.gz"], pet, "PET")
    top = np.percentile(pet, 99.9)
    assert vol.colour_node == COLOUR_NODES["PET"]
    assert vol.threshold[0] == pytest.approx(OVERLAY_THRESHOLDS["PET"][1] * top)
    assert vol.threshold[1] > pet.max()  # the hottest voxels show (saturated), never cut
    assert vol.level - vol.window / 2 == pytest.approx(vol.threshold[0])  # the colour map starts at the threshold


def test_ct_overlay_shows_bone():
    ct = np.full((10, 10, 10), -1000.0, np.float32)
    ct[2:8, 2:8, 2:8] = 40.0
    ct[4:6, 4:6, 4:6] = 1200.0
    vol = overlay_volume("ct", ["ct.nii.gz"], ct, "CT")
    assert vol.colour_node == COLOUR_NODES["CT"] and vol.threshold[0] == 300.0


class OnGridStudyd:
    """Stands in for loading + registration: MRI and moving image on one grid, with a source file for the MRI."""

    def __call__(self, data):
        rng = np.random.default_rng(0)
        d = dict(data)
        d["mri"] = MetaTensor(torch.from_numpy(rng.random((1, 12, 10, 7), dtype=np.float32) * 500), affine=AFFINE,
                              meta={"source_path": data["mri"]})
        d["moving"] = MetaTensor(torch.from_numpy(rng.random((1, 12, 10, 7), dtype=np.float32) * 8), affine=AFFINE)
        d = CopyItemsd(["mri", "moving"], names=["mri_display", "moving_on_mri"])(d)
        d["mri"], d["moving"] = d["mri"] / 500, d["moving"] / 8
        return ConcatItemsd(["mri", "moving"], "image")(d)


class MaxFusion(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, image):
        self.calls += 1
        return image.max(dim=1, keepdim=True).values


def _runner(tmp_path, review_scene="mrml"):
    (tmp_path / "s1_mr.nii.gz").write_bytes(b"")  # the scene references the MRI's file; its content is not read
    studies = [{"study": "s1", "study_id": "s1", "mri": str(tmp_path / "s1_mr.nii.gz"), "moving": "x"}]
    writer = FusedVolumeWriter(tmp_path / "out", output_format="nifti")
    moving_writer = FusedVolumeWriter(tmp_path / "out", output_format="nifti", overwrite="overwrite",
                                      output_postfix="pet_on_mri")
    net = MaxFusion()
    return StudyFusionRunner(studies, OnGridStudyd(), net, SliceInferer(spatial_dim=2, roi_size=[-1, -1]), writer,
                             moving_writer=moving_writer, review_scene=review_scene, progress=False), net


def test_scene_and_registered_moving_image_beside_the_output(tmp_path):
    runner, _ = _runner(tmp_path)
    record = runner.run()["studies"][0]
    folder = tmp_path / "out" / "s1"
    assert record["review_scene"] == str(folder / "s1_review.mrml")
    assert record["moving_on_mri"] == str(folder / "s1_pet_on_mri.nii.gz")
    summary = json.loads((tmp_path / "out" / "fusion_summary.json").read_text())
    assert "review_scene" in summary["studies"][0]["seconds"]


def test_a_run_stopped_before_the_scene_is_completed_by_the_next(tmp_path):
    runner, net = _runner(tmp_path)
    runner.run()
    scene = tmp_path / "out" / "s1" / "s1_review.mrml"
    text = scene.read_text()
    scene.unlink()  # as if the process had stopped after the fused output, before the scene
    runner, net = _runner(tmp_path)
    summary = runner.run()
    assert summary["fused"] == 1 and scene.read_text() == text
    runner, net = _runner(tmp_path)  # now complete: skipped, nothing fused
    assert runner.run()["skipped"] == 1 and net.calls == 0


def test_no_scene_when_asked_for_none(tmp_path):
    runner, _ = _runner(tmp_path, review_scene="none")
    record = runner.run()["studies"][0]
    assert "review_scene" not in record and not list((tmp_path / "out" / "s1").glob("*_review.*"))
    with pytest.raises(ValueError, match="review_scene"):
        _runner(tmp_path, review_scene="scene")
