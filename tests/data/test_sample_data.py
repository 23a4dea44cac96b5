"""The sample-data generator: deterministic, readable with load_volume, exact geometry, usable ground truth.

Studies are generated at reduced size (5-10 mm voxels); the shipped ``sample_data/`` folder is checked at the end.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import tifffile
from PIL import Image

from fusionmamba_med.data import phantom as P
from fusionmamba_med.data import sample_2d, sample_data, sample_medical
from fusionmamba_med.io import default_modalities, discover_studies, load_volume

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "sample_data"
FLIP = np.diag([-1.0, -1.0, 1.0, 1.0])

SMALL_MR = {"mri_shape": (40, 48, 12), "mri_spacing": (5.0, 5.0, 10.0)}
SMALL_CT = {"moving_shape": (44, 52, 14), "moving_spacing": (5.0, 5.0, 10.0)}
SMALL_PET = {"moving_shape": (32, 36, 12), "moving_spacing": (6.5, 6.5, 10.0)}
OBLIQUE = {"study": "study02", "mri_tilt_deg": 10.0, "rotation_deg": (5.0, -2.0, 3.0),
           "translation_mm": (7.0, 2.0, 5.0), "lesion_centre": (20.0, -30.0, 34.0)}


@pytest.fixture(scope="module")
def ct_study(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ct")
    sample_medical.make_medical_study(root, "ct_mri", patient_id="PHANTOM01", **SMALL_MR, **SMALL_CT)
    return root / "ct_mri" / "study01"


@pytest.fixture(scope="module")
def oblique_pet_study(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pet")
    sample_medical.make_medical_study(root, "pet_mri", patient_id="PHANTOM03", **OBLIQUE, **SMALL_MR, **SMALL_PET)
    return root / "pet_mri" / "study02"


def read_truth(study: Path) -> dict:
    return json.loads((study / "ground_truth.json").read_text())


def sitk_transform(matrix) -> sitk.Transform:
    m = np.asarray(matrix, float)
    tx = sitk.AffineTransform(3)
    tx.SetMatrix(m[:3, :3].ravel().tolist())
    tx.SetTranslation(m[:3, 3].tolist())
    return tx


def read_series(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sorted(str(f) for f in folder.glob("*.dcm")))
    return reader.Execute()


def lesion_centroid_ras(volume) -> np.ndarray:
    """Activity-weighted centroid (RAS mm) of the brightest blob of a PET/SPECT ``MetaTensor`` (1, X, Y, Z)."""
    v = np.asarray(volume[0], float)
    pts = P.grid_points(v.shape, np.asarray(volume.affine, float)).reshape(-1, 3)
    vals = v.ravel()
    k = int(np.argmax(vals))
    thr = 0.5 * vals[k]
    w = np.where((np.linalg.norm(pts - pts[k], axis=1) < 20.0) & (vals > thr), vals - thr, 0.0)
    return (pts * w[:, None]).sum(axis=0) / w.sum()


# ---------------------------------------------------------------------------------------------------------------------
def test_study_layout_and_dicom_headers(ct_study):
    files = sorted(p.name for p in (ct_study / "MR").iterdir())
    assert files == [f"{k:04d}.dcm" for k in range(1, 13)]
    assert (ct_study / "CT.nii.gz").is_file() and (ct_study / "ground_truth.json").is_file()
    headers = [pydicom.dcmread(ct_study / "MR" / f, stop_before_pixels=True) for f in files]
    first = headers[0]
    assert first.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert first.SOPClassUID == pydicom.uid.MRImageStorage == first.file_meta.MediaStorageSOPClassUID
    assert (first.Modality, first.PatientID, str(first.PatientName)) == ("MR", "PHANTOM01", "Phantom^Head")
    assert (first.Rows, first.Columns) == (48, 40)
    assert first.PhotometricInterpretation == "MONOCHROME2" and first.PixelRepresentation == 1
    assert float(first.RescaleSlope) != 1.0  # stored values are rescaled
    for key in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
        assert len({str(h.get(key)) for h in headers}) == 1
    assert len({h.SOPInstanceUID for h in headers}) == len(headers)
    assert [h.InstanceNumber for h in headers] == list(range(1, 13))


def test_generation_is_deterministic(tmp_path):
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        sample_medical.make_medical_study(tmp_path / name, "ct_mri", seed=seed, **SMALL_MR, **SMALL_CT)
    studies = {n: tmp_path / n / "ct_mri" / "study01" for n in "abc"}
    rel = sorted(p.relative_to(studies["a"]) for p in studies["a"].rglob("*") if p.is_file())
    assert rel == sorted(p.relative_to(studies["b"]) for p in studies["b"].rglob("*") if p.is_file())
    for r in rel:  # same bytes, UIDs included
        assert (studies["a"] / r).read_bytes() == (studies["b"] / r).read_bytes(), r
    mr_a, mr_b, mr_c = (np.asarray(load_volume(studies[n] / "MR")) for n in "abc")
    assert np.array_equal(mr_a, mr_b)
    assert not np.array_equal(mr_a, mr_c)  # another seed: other noise...
    uid = lambda n: pydicom.dcmread(studies[n] / "MR" / "0001.dcm").SeriesInstanceUID  # noqa: E731
    assert uid("a") == uid("b") != uid("c")  # ...and other UIDs


def test_rerun_replaces_the_series(tmp_path):
    sample_medical.make_medical_study(tmp_path, "ct_mri", mri_shape=(40, 48, 14), mri_spacing=(5.0, 5.0, 9.0),
                                      **SMALL_CT)
    sample_medical.make_medical_study(tmp_path, "ct_mri", **SMALL_MR, **SMALL_CT)  # fewer slices: no stale files left
    assert len(list((tmp_path / "ct_mri" / "study01" / "MR").glob("*.dcm"))) == 12
    assert load_volume(tmp_path / "ct_mri" / "study01" / "MR").shape == (1, 40, 48, 12)


@pytest.mark.parametrize("which", ["ct_study", "oblique_pet_study"])
def test_geometry_is_the_intended_one(which, request):
    study: Path = request.getfixturevalue(which)
    truth = read_truth(study)
    tilt = OBLIQUE["mri_tilt_deg"] if which == "oblique_pet_study" else 0.0
    intended = sample_medical.grid_affine(SMALL_MR["mri_shape"], SMALL_MR["mri_spacing"], (0.0, 0.0, 14.0), tilt)
    np.testing.assert_allclose(truth["fixed_affine_ras"], intended, atol=1e-9)
    mr = load_volume(study / "MR")
    assert tuple(mr.shape[1:]) == SMALL_MR["mri_shape"]
    np.testing.assert_allclose(np.asarray(mr.affine), intended, atol=1e-4)
    # Independently of MONAI: SimpleITK's view of the DICOM series (LPS).
    img = read_series(study / "MR")
    lps = FLIP @ intended
    np.testing.assert_allclose(img.GetOrigin(), lps[:3, 3], atol=1e-4)
    np.testing.assert_allclose(img.GetSpacing(), SMALL_MR["mri_spacing"], atol=1e-4)
    np.testing.assert_allclose(np.reshape(img.GetDirection(), (3, 3)), lps[:3, :3] / SMALL_MR["mri_spacing"],
                               atol=1e-6)
    if tilt:
        iop = pydicom.dcmread(study / "MR" / "0001.dcm").ImageOrientationPatient
        assert float(iop[4]) == pytest.approx(np.cos(np.deg2rad(tilt)), abs=1e-6)
    moving = load_volume(study / truth["moving"])
    assert list(moving.shape[1:]) == truth["moving_shape"]
    np.testing.assert_allclose(np.asarray(moving.affine), truth["moving_affine_ras"], atol=1e-4)


def test_ground_truth_matrices_are_consistent(oblique_pet_study):
    truth = read_truth(oblique_pet_study)
    m = np.asarray(truth["fixed_to_moving_lps"])
    expected = sample_medical.euler_transform_lps(OBLIQUE["rotation_deg"], OBLIQUE["translation_mm"])
    np.testing.assert_allclose(m, expected, atol=1e-9)
    np.testing.assert_allclose(m @ np.asarray(truth["moving_to_fixed_lps"]), np.eye(4), atol=1e-9)
    np.testing.assert_allclose(truth["fixed_to_moving_ras"], FLIP @ m @ FLIP, atol=1e-9)
    np.testing.assert_allclose(np.linalg.det(m[:3, :3]), 1.0, atol=1e-9)  # rigid
    mark = truth["landmarks"]["lesion_centre"]
    np.testing.assert_allclose(mark["fixed_ras"], OBLIQUE["lesion_centre"])
    np.testing.assert_allclose(m @ [*mark["fixed_lps"], 1.0], [*mark["moving_lps"], 1.0], atol=1e-6)


def test_ground_truth_maps_the_lesion_onto_the_pet_lesion(oblique_pet_study):
    truth = read_truth(oblique_pet_study)
    mark = truth["landmarks"]["lesion_centre"]
    found = lesion_centroid_ras(load_volume(oblique_pet_study / "PET.nrrd"))
    assert np.linalg.norm(found - mark["moving_ras"]) < 2.5
    assert np.linalg.norm(np.subtract(mark["moving_ras"], mark["fixed_ras"])) > 5.0  # the images do need registering
    # The MRI shows the (mildly enhancing) lesion at the fixed landmark, inside its darker oedema.
    mr = load_volume(oblique_pet_study / "MR")
    dist = np.linalg.norm(P.grid_points(mr.shape[1:], np.asarray(mr.affine)) - mark["fixed_ras"], axis=-1)
    v = np.asarray(mr[0])
    assert v[dist < 6.0].mean() > 1.2 * v[(dist > 10.0) & (dist < 13.0)].mean()


def test_resampling_with_the_ground_truth_aligns_ct_and_mri(ct_study):
    """sitk.Resample(moving CT, MRI grid, fixed_to_moving) reproduces the CT the phantom gives on the MRI grid."""
    truth = read_truth(ct_study)
    mr = read_series(ct_study / "MR")
    ct = sitk.ReadImage(str(ct_study / "CT.nii.gz"), sitk.sitkFloat32)
    expected = P.sample_on_grid(lambda p: P.ct_hu(p, noise=0.0), truth["fixed_shape"], truth["fixed_affine_ras"])

    def dice(matrix) -> float:
        res = sitk.Resample(ct, mr, sitk_transform(matrix), sitk.sitkLinear, -1000.0)
        bone, ref = sitk.GetArrayFromImage(res).transpose(2, 1, 0) > 400, expected > 400
        return 2 * (bone & ref).sum() / (bone.sum() + ref.sum())

    right, wrong_way, none = dice(truth["fixed_to_moving_lps"]), dice(truth["moving_to_fixed_lps"]), dice(np.eye(4))
    assert right > 0.8
    assert right > none + 0.2 and right > wrong_way + 0.2


def test_unknown_task_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown task"):
        sample_medical.make_medical_study(tmp_path, "ultrasound_mri")


def test_ir_vis_pairs(tmp_path):
    sizes = ((40, 30), (33, 27))
    files = sample_2d.make_ir_vis_pairs(tmp_path, sizes=sizes, seed=0)
    sample_2d.make_ir_vis_pairs(tmp_path / "again", sizes=sizes, seed=0)
    folder = tmp_path / "generic_2d" / "ir_vis"
    for n, size in enumerate(sizes, start=1):
        vi, ir = Image.open(folder / "vi" / f"{n:02d}.png"), Image.open(folder / "ir" / f"{n:02d}.png")
        assert (vi.mode, ir.mode) == ("RGB", "L")
        assert vi.size == ir.size == size
        luma, heat = np.asarray(vi.convert("L"), float), np.asarray(ir, float)
        assert abs(np.corrcoef(luma.ravel(), heat.ravel())[0, 1]) < 0.9  # two different modalities
        again = tmp_path / "again" / "generic_2d" / "ir_vis" / "vi" / f"{n:02d}.png"
        assert again.read_bytes() == (folder / "vi" / f"{n:02d}.png").read_bytes()
    assert len(files) == 2 * len(sizes)


def test_gfp_pc_pairs(tmp_path):
    files = sample_2d.make_gfp_pc_pairs(tmp_path, sizes=((72, 64), (36, 44)), seed=0)
    folder = tmp_path / "generic_2d" / "gfp_pc"
    assert sorted(p.relative_to(folder).as_posix() for p in files) == [
        "GFP/001.png", "GFP/002.png", "PC/001.png", "PC/002.tif"]
    gfp1, pc1 = Image.open(folder / "GFP" / "001.png"), Image.open(folder / "PC" / "001.png")
    assert (gfp1.mode, pc1.mode) == ("RGB", "L") and gfp1.size == pc1.size == (72, 64)
    pc2 = tifffile.imread(folder / "PC" / "002.tif")
    gfp2 = np.asarray(Image.open(folder / "GFP" / "002.png"))
    assert pc2.dtype == np.uint16 and pc2.shape == gfp2.shape[:2] == (44, 36)
    assert pc2.max() > 255  # really 16-bit
    rgb = np.asarray(gfp1, float)
    assert rgb[..., 1].mean() > 3 * rgb[..., 0].mean()  # green fluorescence
    # The same cells: where the GFP is bright, the phase image departs from its background.
    green, pc = rgb[..., 1], np.asarray(pc1, float)
    dev = np.abs(pc - np.median(pc))
    assert dev[green > 0.5 * green.max()].mean() > 2 * dev[green < 10].mean()


def test_cli_passes_its_arguments(monkeypatch, tmp_path, capsys):
    seen = {}

    def fake(out_dir, seed=0):
        seen.update(out=out_dir, seed=seed)
        (Path(out_dir)).mkdir(parents=True, exist_ok=True)
        f = Path(out_dir) / "README.md"
        f.write_text("x")
        return [f]

    monkeypatch.setattr(sample_data, "generate_sample_data", fake)
    assert sample_data.main(["--out", str(tmp_path / "sd"), "--seed", "7"]) == 0
    assert seen == {"out": str(tmp_path / "sd"), "seed": 7}
    assert "wrote 1 files" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------------------------------
# The shipped folder
# ---------------------------------------------------------------------------------------------------------------------
shipped = pytest.mark.skipif(not SHIPPED.is_dir(), reason="no sample_data/ folder in this checkout")


@shipped
@pytest.mark.parametrize("task, n_studies", [("ct_mri", 1), ("pet_mri", 2), ("spect_mri", 1)])
def test_shipped_medical_studies(task, n_studies):
    moving_kind = sample_medical.TASKS[task]
    items, errors = discover_studies(SHIPPED / task, default_modalities(moving_kind))
    assert errors == [] and len(items) == n_studies
    for item in items:
        truth = read_truth(Path(item["mri"]).parent)
        assert Path(item["moving"]).name == truth["moving"]
        mr, moving = load_volume(item["mri"]), load_volume(item["moving"])
        assert list(mr.shape[1:]) == truth["fixed_shape"]
        assert list(moving.shape[1:]) == truth["moving_shape"]
        np.testing.assert_allclose(np.asarray(mr.affine), truth["fixed_affine_ras"], atol=1e-4)
        np.testing.assert_allclose(np.asarray(moving.affine), truth["moving_affine_ras"], atol=1e-4)
        if moving_kind in ("pet", "spect"):
            found = lesion_centroid_ras(moving)
            assert np.linalg.norm(found - truth["landmarks"]["lesion_centre"]["moving_ras"]) < 2.5
        else:
            assert float(moving.min()) <= -1000.0 and float(moving.max()) > 1000.0  # HU


@shipped
def test_shipped_2d_pairs():
    for a, b in (("generic_2d/ir_vis/vi", "generic_2d/ir_vis/ir"), ("generic_2d/gfp_pc/GFP", "generic_2d/gfp_pc/PC")):
        first = {p.stem: p for p in (SHIPPED / a).iterdir()}
        second = {p.stem: p for p in (SHIPPED / b).iterdir()}
        assert first.keys() == second.keys() and len(first) >= 2
        for stem in first:
            shape_b = (tifffile.imread(second[stem]).shape[::-1] if second[stem].suffix == ".tif"
                       else Image.open(second[stem]).size)
            assert Image.open(first[stem]).size == tuple(shape_b)
