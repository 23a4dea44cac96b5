"""3D Slicer's own readers (slicer-core) as the oracle: every output format, grey and colour, and every review scene,
opened the way Slicer opens them, lies on the MRI's grid as Slicer reads the MRI, holds the values we wrote, and
shows what the scene says (nodes, colour maps, layers, layout).

Needs the optional extra ``slicer`` (``pip install -e ".[slicer]"``); skipped without it.
"""

from __future__ import annotations

import importlib.metadata

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch
from monai.data import MetaTensor
from monai.inferers import SliceInferer
from monai.transforms import ConcatItemsd, CopyItemsd

slicer_scene = pytest.importorskip("fusionmamba_med.io.slicer_scene",
                                   reason="slicer-core (3D Slicer's libraries) is not installed: pip install -e '.[slicer]'")
import slicer  # noqa: E402
import vtk  # noqa: E402

from fusionmamba_med.inference.study_runner import StudyFusionRunner  # noqa: E402
from fusionmamba_med.io import FusedVolumeWriter, load_volume  # noqa: E402
from fusionmamba_med.io.dicom_write import FUSED_DICOM_MAX, to_rgb_uint8  # noqa: E402
from fusionmamba_med.io.geometry import ras_affine_to_lps_geometry  # noqa: E402
from fusionmamba_med.io.review_scene import COLOUR_NODES, SCENE_VERSION  # noqa: E402
from fusionmamba_med.io.slicer_scene import SlicerScene, ijk_to_ras, volume_array  # noqa: E402
from tests.synthetic import index_volume, oblique_iop, write_dicom_series  # noqa: E402

SHAPE = (24, 20, 9)


def _oblique_ras(shift=(0.0, 0.0, 0.0)) -> np.ndarray:
    row, col = oblique_iop(15.0, -25.0)
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1], lps[:3, 2] = np.multiply(row, 0.7), np.multiply(col, 1.1), np.cross(row, col) * 3.0
    lps[:3, 3] = np.array([5.0, -7.5, 20.0]) + shift
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def _write_mri(kind: str, folder) -> tuple[str, list]:
    """An MRI of ``kind`` on disk: (path to load, files Slicer reads)."""
    vol = index_volume(*SHAPE).astype(np.int16)
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "dicom-oblique":
        info = write_dicom_series(folder / "MR", vol=vol, spacing=(0.8, 0.9, 2.5), iop=oblique_iop(),
                                  origin=(12.5, -30.25, 47.0))
        return str(folder / "MR"), info["files"]
    if kind == "nifti-qform-not-sform":  # FSL/SPM: sform code 2 beside a qform 12 mm away
        img = nib.Nifti1Image(vol, _oblique_ras())
        img.set_sform(_oblique_ras(), code=2)
        img.set_qform(_oblique_ras(shift=(12.0, 0.0, 0.0)), code=1)
        path = folder / "mri.nii.gz"
        nib.save(img, str(path))
        return str(path), [path]
    image = sitk.GetImageFromArray(np.transpose(vol, (2, 1, 0)))
    spacing, direction, origin = ras_affine_to_lps_geometry(_oblique_ras())
    image.SetSpacing(spacing.tolist())
    image.SetDirection(direction.flatten().tolist())
    image.SetOrigin(origin.tolist())
    path = folder / "mri.nrrd"
    sitk.WriteImage(image, str(path))
    return str(path), [path]


MRI_KINDS = ["dicom-oblique", "nifti-qform-not-sform", "nrrd"]
# a NIfTI MRI whose qform and sform disagree is placed by nibabel/MONAI from the sform and by ITK/Slicer from the
# qform: only a NIfTI output can carry both (see README "Inputs"), so it is the one format checked against it.
CASES = [(m, f) for m in MRI_KINDS for f in ("nifti", "nrrd", "dicom") if m != "nifti-qform-not-sform" or f == "nifti"]


def _slicer_volume(scene: SlicerScene, files, name: str):
    node = scene.load_volume(files[0], name, files=[str(f) for f in files] if len(files) > 1 else None)
    assert node is not None and node.GetImageData() is not None, scene.messages
    return node


def _assert_same_grid(node, mri_node):
    a, b = ijk_to_ras(node), ijk_to_ras(mri_node)
    np.testing.assert_allclose(a[:3, 3], b[:3, 3], atol=0.01, err_msg="origin")
    spacing = np.linalg.norm(b[:3, :3], axis=0)
    np.testing.assert_allclose(np.linalg.norm(a[:3, :3], axis=0), spacing, atol=1e-5, err_msg="spacing")
    np.testing.assert_allclose(a[:3, :3] / spacing, b[:3, :3] / spacing, atol=1e-5, err_msg="directions")
    assert node.GetImageData().GetDimensions() == mri_node.GetImageData().GetDimensions()


def _fused_of(mri) -> MetaTensor:
    x = mri.float()
    return (x - x.min()) / (x.max() - x.min())


def _colour_of(fused: MetaTensor) -> MetaTensor:
    return torch.cat([fused, fused * 0.5, 1.0 - fused])


@pytest.mark.parametrize("colour", [False, True], ids=["grey", "colour"])
@pytest.mark.parametrize("mri_kind,fmt", CASES, ids=[f"{m}-{f}" for m, f in CASES])
def test_slicer_reads_every_output_on_the_mri_grid_with_its_values(tmp_path, mri_kind, fmt, colour):
    mri_path, mri_files = _write_mri(mri_kind, tmp_path / "in")
    mri = load_volume(mri_path, study="s1")
    fused = _fused_of(mri)
    if colour:
        fused = _colour_of(fused)
    out = FusedVolumeWriter(tmp_path / "out", output_format=fmt)(fused, reference=mri, study_id="s1")
    scene = SlicerScene()
    mri_node = _slicer_volume(scene, mri_files, "mri")
    files = sorted(out.iterdir()) if fmt == "dicom" else [out]
    node = _slicer_volume(scene, files, "fused")
    assert scene.messages == []
    _assert_same_grid(node, mri_node)
    values = volume_array(node)
    if colour:
        assert node.IsA("vtkMRMLVectorVolumeNode")
        expected = np.moveaxis(to_rgb_uint8(fused.numpy()), 0, -1)
    elif fmt == "dicom":
        expected = np.rint(fused.numpy()[0] * FUSED_DICOM_MAX)
    else:
        expected = fused.numpy()[0]
    np.testing.assert_array_equal(values, expected)


# -- review scenes ---------------------------------------------------------------------------------------------------
class StudyOnMrid:
    """Stands in for loading + registration: the MRI from its file, and a PET-like blob on the MRI grid."""

    def __call__(self, data):
        d = dict(data)
        mri = load_volume(d["mri"], study=d["study_id"])
        x, y, z = np.meshgrid(*[np.linspace(-1, 1, n) for n in mri.shape[1:]], indexing="ij")
        pet = (8.0 * np.exp(-((x - 0.3) ** 2 + y ** 2 + z ** 2) / 0.1) + (x ** 2 + y ** 2 < 0.6)).astype(np.float32)
        d["mri"], d["moving"] = mri, MetaTensor(torch.from_numpy(pet[None]), affine=mri.affine, meta={})
        d = CopyItemsd(["mri", "moving"], names=["mri_display", "moving_on_mri"])(d)
        d["mri"] = _fused_of(d["mri"])
        d["moving"] = d["moving"] / d["moving"].max()
        return ConcatItemsd(["mri", "moving"], "image")(d)


class MaxFusion(torch.nn.Module):
    def forward(self, image):
        return image.max(dim=1, keepdim=True).values


def _run_study(tmp_path, mri_path, fmt, colour, review_scene):
    writer = FusedVolumeWriter(tmp_path / "out", output_format=fmt)
    moving_writer = FusedVolumeWriter(tmp_path / "out", output_format=fmt, overwrite="overwrite",
                                      output_postfix="pet_on_mri")
    post = (lambda d: {**d, "pred": _colour_of(d["pred"])}) if colour else None
    runner = StudyFusionRunner([{"study": "s1", "study_id": "s1", "mri": mri_path, "moving": "pet"}], StudyOnMrid(),
                               MaxFusion(), SliceInferer(spatial_dim=2, roi_size=[-1, -1], sw_batch_size=4), writer,
                               postprocessing=post, moving_writer=moving_writer, review_scene=review_scene,
                               moving_name="PET", progress=False)
    summary = runner.run()
    assert summary["fused"] == 1, summary
    return summary["studies"][0]


SCENES = [("dicom-oblique", "nifti", False, "mrml"), ("dicom-oblique", "dicom", False, "mrml"),
          ("nifti-qform-not-sform", "nifti", True, "mrml"), ("nrrd", "nrrd", True, "mrb"),
          ("dicom-oblique", "dicom", True, "mrb")]


@pytest.mark.parametrize("mri_kind,fmt,colour,kind", SCENES, ids=[
    f"{m}-{f}-{'colour' if c else 'grey'}-{k}" for m, f, c, k in SCENES])
def test_review_scene_opens_in_slicer_as_written(tmp_path, mri_kind, fmt, colour, kind):
    mri_path, mri_files = _write_mri(mri_kind, tmp_path / "in")
    record = _run_study(tmp_path, mri_path, fmt, colour, kind)
    scene_path = tmp_path / "out" / "s1" / f"s1_review.{kind}"
    assert record["review_scene"] == str(scene_path) and scene_path.is_file()

    scene = SlicerScene()
    assert scene.import_scene(scene_path)
    assert scene.messages == [], scene.messages
    # the stamp desktop Slicer checks: its own application name, a version no newer than any Slicer 5
    parsed = [vtk.reference("")] + [vtk.reference(0) for _ in range(4)]
    assert slicer.vtkMRMLScene.ParseVersion(scene.scene.GetLastLoadedVersion(), *parsed)
    assert parsed[0].get() == "Slicer" and SCENE_VERSION.startswith("Slicer5.0.0")
    installed = tuple(int(p) for p in importlib.metadata.version("slicer-core").split(".")[:3])
    assert (parsed[1].get(), parsed[2].get(), parsed[3].get()) <= installed

    # the three volumes, on the MRI's grid as Slicer reads the MRI itself
    mri, pet, fused = (scene.node_by_name(f"s1 {n}") for n in ("MRI", "PET on MRI", "fused"))
    reference = SlicerScene()
    mri_alone = _slicer_volume(reference, mri_files, "mri")
    for node in (mri, pet, fused):
        _assert_same_grid(node, mri_alone)
    np.testing.assert_array_equal(volume_array(mri), volume_array(mri_alone))
    assert fused.IsA("vtkMRMLVectorVolumeNode") == colour
    written_pet = load_volume(record["moving_on_mri"], study="s1").numpy()[0]
    np.testing.assert_allclose(volume_array(pet), written_pet, atol=0 if fmt != "dicom" else 1e-3 * written_pet.max())

    # display: grey MRI, PET-Heat overlay thresholded above its background, windows from the data
    assert mri.GetDisplayNode().GetColorNodeID() == COLOUR_NODES["grey"]
    pet_display = pet.GetDisplayNode()
    assert pet_display.GetColorNodeID() == COLOUR_NODES["PET"]
    assert pet_display.GetApplyThreshold() and not pet_display.GetAutoWindowLevel()
    assert 0 < pet_display.GetLowerThreshold() < written_pet.max() <= pet_display.GetUpperThreshold()
    lo, hi = np.percentile(volume_array(mri_alone), [0.5, 99.5])
    assert mri.GetDisplayNode().GetWindow() == pytest.approx(hi - lo, rel=1e-4)

    # layout and layers: fused on top (group 0), MRI + PET below (group 1), rows linked
    assert scene.scene.GetNodeByID("vtkMRMLLayoutNodevtkMRMLLayoutNode").GetViewArrangement() == \
        slicer.vtkMRMLLayoutNode.SlicerLayoutThreeOverThreeView
    for tag in slicer_scene.VIEW_TAGS:
        view = scene.scene.GetNodeByID(f"vtkMRMLSliceNode{tag}")
        composite = scene.scene.GetNodeByID(f"vtkMRMLSliceCompositeNode{tag}")
        below = tag.endswith("+")
        assert view.GetViewGroup() == int(below) and composite.GetLinkedControl()
        assert composite.GetBackgroundVolumeID() == (mri.GetID() if below else fused.GetID())
        assert composite.GetForegroundVolumeID() == (pet.GetID() if below else None)
        assert composite.GetForegroundOpacity() == pytest.approx(0.6 if below else 0.0)

    # what the reader sees: colour where the PET shows, over the MRI; a grey fused row when the output is grey
    views = scene.render_views(size=96)
    spread = {tag: np.abs(v.astype(int) - v.mean(-1, keepdims=True)).max(-1) for tag, v in views.items()}
    assert (spread["Red+"] > 40).mean() > 0.02  # coloured pixels (the PET blob) in the overlay view
    if not colour:
        assert spread["Red"].max() <= 1 and views["Red"].max() > 100  # grey, not blank
