"""The review scene as a file: valid MRML that references the volumes by relative path (or carries them in an
.mrb), stamped so that desktop Slicer does not warn, the same bytes every time. What Slicer makes of it:
tests/io/test_slicer_oracle.py."""

from __future__ import annotations

import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import numpy as np
import pytest

from fusionmamba_med.io.review_scene import (COLOUR_NODES, SCENE_VERSION, SceneVolume, display_window,
                                             write_review_scene)

AFFINE = np.array([[0.0, 0.0, 2.5, -30.0], [-1.2, 0.0, 0.0, 20.0], [0.0, 1.1, 0.0, -15.0], [0, 0, 0, 1]])
SHAPE = (12, 10, 7)


def _volumes(tmp_path: Path):
    data = tmp_path / "in & 'quoted'"
    data.mkdir()
    series = [data / f"{k:04d}.dcm" for k in range(1, 4)]
    for i, f in enumerate(series):
        f.write_bytes(bytes([i]) * 10)
    out = tmp_path / "out" / "s1"
    out.mkdir(parents=True)
    (out / "s1_fused.nii.gz").write_bytes(b"fused")  # what a volume file holds does not matter to the scene
    (out / "s1_pet_on_mri.nii.gz").write_bytes(b"pet")
    mri = SceneVolume("s1 MRI", series, window=800, level=400)
    fused = SceneVolume("s1 fused", [out / "s1_fused.nii.gz"])
    pet = SceneVolume("s1 PET on MRI", [out / "s1_pet_on_mri.nii.gz"], colour_node=COLOUR_NODES["PET"], window=4,
                      level=3, threshold=(1.0, 20.0))
    return mri, fused, pet, out


def test_mrml_references_every_file_relative_to_the_scene(tmp_path):
    mri, fused, pet, out = _volumes(tmp_path)
    path = write_review_scene(out / "s1_review.mrml", mri, fused, pet, AFFINE, SHAPE)
    root = ET.parse(path).getroot()  # valid XML, names with & and quotes escaped
    assert root.tag == "MRML" and root.get("version") == SCENE_VERSION
    storages = root.findall("VolumeArchetypeStorage")
    assert len(storages) == 3
    for node in storages:
        files = [v for k, v in node.attrib.items() if k.startswith("fileListMember")] or [node.get("fileName")]
        for f in files:
            assert not Path(f).is_absolute() and (out / f).resolve().is_file()
    dicom = storages[0]
    assert [dicom.get(f"fileListMember{i}") for i in range(3)] == [
        Path("..", "..", "in & 'quoted'", f"{k:04d}.dcm").as_posix() for k in range(1, 4)]
    displays = {d.get("name"): d for d in root.findall("VolumeDisplay")}
    assert displays["s1 PET on MRI display"].get("colorNodeID") == COLOUR_NODES["PET"]
    assert displays["s1 PET on MRI display"].get("applyThreshold") == "1"
    assert float(displays["s1 MRI display"].get("window")) == 800
    assert root.find("Layout").get("currentViewArrangement") == "21"
    groups = {s.get("singletonTag"): s.get("viewGroup") for s in root.findall("Slice")}
    assert groups == {"Red": "false", "Green": "false", "Yellow": "false", "Red+": "true", "Green+": "true",
                      "Yellow+": "true"}


def test_slice_views_are_centred_on_the_mri_grid(tmp_path):
    mri, fused, pet, out = _volumes(tmp_path)
    root = ET.parse(write_review_scene(out / "s1_review.mrml", mri, fused, pet, AFFINE, SHAPE)).getroot()
    corners = np.array([[i, j, k, 1] for i in (0, SHAPE[0] - 1) for j in (0, SHAPE[1] - 1) for k in (0, SHAPE[2] - 1)])
    ras = (AFFINE @ corners.T).T[:, :3]
    for view in root.findall("Slice"):
        slice_to_ras = np.array(view.get("sliceToRAS").split(), dtype=float).reshape(4, 4)
        np.testing.assert_allclose(slice_to_ras[:3, 3], (ras.min(0) + ras.max(0)) / 2, atol=1e-6)
        fov = np.array(view.get("fieldOfView").split(), dtype=float)
        extent = np.ptp(ras @ slice_to_ras[:3, :2], axis=0)
        assert (fov[:2] >= extent).all()


def test_mrb_carries_the_scene_and_its_files_and_is_the_same_every_time(tmp_path):
    mri, fused, pet, out = _volumes(tmp_path)
    first = write_review_scene(out / "s1_review.mrb", mri, fused, pet, AFFINE, SHAPE).read_bytes()
    (tmp_path / "again").mkdir()
    mri, fused, pet, _ = _volumes(tmp_path / "again")  # the same volumes again (fresh paths are copied anew)
    second = write_review_scene(out / "s1_review.mrb", mri, fused, pet, AFFINE, SHAPE).read_bytes()
    assert first == second
    with zipfile.ZipFile(out / "s1_review.mrb") as zf:
        names = zf.namelist()
        assert "s1_review/s1_review.mrml" in names
        root = ET.fromstring(zf.read("s1_review/s1_review.mrml"))
        for node in root.findall("VolumeArchetypeStorage"):
            files = [v for k, v in node.attrib.items() if k.startswith("fileListMember")] or [node.get("fileName")]
            for f in files:
                assert f"s1_review/{f}" in names and f.startswith("Data/")
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # no staging or partial file left


def test_a_scene_is_mrml_or_mrb(tmp_path):
    mri, fused, pet, out = _volumes(tmp_path)
    with pytest.raises(ValueError, match="mrml or .mrb"):
        write_review_scene(out / "s1_review.xml", mri, fused, pet, AFFINE, SHAPE)


def test_display_window_spans_the_percentiles():
    values = np.arange(1001, dtype=np.float32)
    window, level = display_window(values, 0.5, 99.5)
    assert window == pytest.approx(990.0) and level == pytest.approx(500.0)
    assert display_window(np.full(10, 3.0)) == (1.0, 3.0)  # constant: a window of 1 at the value
    assert display_window(np.array([np.nan, np.inf])) == (1.0, 0.0)
