"""StudyFusionRunner: a batch of studies in, one output per study, a summary, and failures that stay contained."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.inferers import SliceInferer
from monai.transforms import ConcatItemsd

from fusionmamba_med.errors import FusionInputError
from fusionmamba_med.inference.batch import partition
from fusionmamba_med.inference.study_runner import StudyFusionRunner
from fusionmamba_med.io import FusedVolumeWriter, load_volume

AFFINE = np.array([[0.0, 0.0, 2.5, -30.0], [-1.2, 0.0, 0.0, 20.0], [0.0, 1.1, 0.0, -15.0], [0, 0, 0, 1]])


class SyntheticStudyd:
    """Stands in for loading + registration + normalisation: study dict -> mri, moving on one grid, image (2,X,Y,Z)."""

    def __call__(self, data):
        if data["study_id"].startswith("bad"):
            raise FusionInputError("cannot read file", path=data["mri"])
        rng = np.random.default_rng(len(data["study_id"]))
        d = dict(data)
        d["mri"] = MetaTensor(torch.from_numpy(rng.random((1, 12, 10, 7), dtype=np.float32)), affine=AFFINE)
        d["moving"] = MetaTensor(torch.from_numpy(rng.random((1, 12, 10, 7), dtype=np.float32)), affine=AFFINE)
        return ConcatItemsd(["mri", "moving"], "image")(d)


class MaxFusion(torch.nn.Module):
    """A stand-in fusion network that records the largest batch of slices it was given."""

    def __init__(self):
        super().__init__()
        self.largest_batch = 0

    def forward(self, image):
        self.largest_batch = max(self.largest_batch, image.shape[0])
        return image.max(dim=1, keepdim=True).values


def make_runner(tmp_path, ids, overwrite="skip", **kwargs):
    studies = [{"study": i, "study_id": i, "mri": str(tmp_path / f"{i}_mr.nii.gz"), "moving": "x"} for i in ids]
    writer = FusedVolumeWriter(tmp_path / "out", output_format="nifti", overwrite=overwrite)
    net = MaxFusion()
    runner = StudyFusionRunner(studies, SyntheticStudyd(), net, SliceInferer(spatial_dim=2, roi_size=[-1, -1],
                               sw_batch_size=3), writer, **kwargs)
    return runner, net


def test_every_study_fused_on_its_reference_grid(tmp_path):
    runner, net = make_runner(tmp_path, ["s1", "s2"])
    summary = runner.run()
    assert summary["fused"] == 2 and summary["failed"] == 0
    for rec in summary["studies"]:
        out = load_volume(rec["output"])
        np.testing.assert_allclose(out.affine.numpy(), AFFINE, atol=1e-4)
        assert tuple(out.shape) == (1, 12, 10, 7)
        qa = Path(rec["qa"])
        assert qa.is_file() and qa.parent == Path(rec["output"]).parent and qa.name == f"{rec['study_id']}_qa.png"
    assert json.loads((tmp_path / "out" / "fusion_summary.json").read_text())["fused"] == 2
    # slice-wise: never more than sw_batch_size slices' activations at once
    assert net.largest_batch == 3


def test_one_bad_study_does_not_stop_the_batch(tmp_path):
    runner, _ = make_runner(tmp_path, ["bad_one", "good"])
    with pytest.raises(SystemExit):
        runner.run()
    summary = json.loads((tmp_path / "out" / "fusion_summary.json").read_text())
    assert summary["fused"] == 1 and summary["failed"] == 1
    failed = next(r for r in summary["studies"] if r["status"] == "failed")
    assert "bad_one" in failed["reason"] and "bad_one_mr.nii.gz" in failed["reason"]


def test_existing_outputs_are_skipped_when_resuming(tmp_path):
    runner, _ = make_runner(tmp_path, ["s1"])
    first = runner.run()["studies"][0]["output"]
    stamp = (tmp_path / "out").stat().st_mtime_ns, __import__("os").stat(first).st_mtime_ns
    runner, net = make_runner(tmp_path, ["s1", "s2"])
    summary = runner.run()
    assert [r["status"] for r in summary["studies"]] == ["skipped", "fused"]
    assert __import__("os").stat(first).st_mtime_ns == stamp[1]


def test_discovery_errors_are_reported_as_failed_studies(tmp_path):
    runner, _ = make_runner(tmp_path, ["s1"], errors=[FusionInputError("no MRI found", study="empty_study")],
                            fail_on_error=False)
    summary = runner.run()
    assert summary["failed"] == 1 and summary["fused"] == 1
    assert "empty_study" in summary["studies"][0]["reason"]


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_partition_covers_every_study_once(world_size):
    items = list(range(7))
    parts = [partition(items, r, world_size) for r in range(world_size)]
    assert sorted(sum(parts, [])) == items


def test_fuse_threads_give_the_same_volume_as_one_batch_at_a_time(tmp_path):
    a, _ = make_runner(tmp_path / "a", ["s1"], fuse_threads=1, anatomy_crop=False)
    b, _ = make_runner(tmp_path / "b", ["s1"], fuse_threads=3, anatomy_crop=False)
    image = torch.rand(2, 12, 10, 7)
    assert torch.equal(a.fuse_volume(image), b.fuse_volume(image))
    with pytest.raises(ValueError, match="fuse_threads"):
        make_runner(tmp_path / "c", ["s1"], fuse_threads=0)
