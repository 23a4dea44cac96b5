import json
import os

import nibabel as nib
import numpy as np
import pytest

from fusionmamba_med.errors import FusionInputError
from fusionmamba_med.io.studies import DEFAULT_MODALITIES, default_modalities, discover_studies
from tests.synthetic import write_dicom_series

MODS = {"mri": ["mr*", "mri*", "t1*", "t2*", "flair*"], "moving": ["pet*"]}


def _nifti(path, shape=(4, 4, 3)):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.zeros(shape, np.float32), np.eye(4)), str(path))
    return path


def _nrrd(path):
    import SimpleITK as sitk

    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.Image(4, 4, 3, sitk.sitkFloat32), str(path))
    return path


@pytest.fixture
def dataset(tmp_path):
    root = tmp_path / "dataset"
    # p01: DICOM MRI + NIfTI PET
    write_dicom_series(root / "p01" / "MR_T1")
    _nifti(root / "p01" / "PET.nii.gz")
    # p02: NRRD MRI + DICOM PET, plus unrelated files
    _nrrd(root / "p02" / "t1.nrrd")
    write_dicom_series(root / "p02" / "pet_ac", modality="PT", description="PET AC")
    (root / "p02" / "notes.txt").write_text("hello")
    # p03: no PET
    _nifti(root / "p03" / "mri.nii")
    _nifti(root / "p03" / "ct.nii.gz")
    # p04: two MRI candidates
    _nifti(root / "p04" / "t1.nii.gz")
    _nrrd(root / "p04" / "t2.nrrd")
    _nifti(root / "p04" / "pet.nii.gz")
    # "p 05": name needing sanitising; .mha + hidden entries ignored
    (root / "p 05").mkdir(parents=True)
    _nrrd(root / "p 05" / "Flair.mha")
    _nifti(root / "p 05" / "PET.nii")
    _nifti(root / "p 05" / ".pet_backup.nii")
    (root / ".cache").mkdir()
    _nifti(root / ".cache" / "pet.nii")
    return root


def test_discovery_mixed_formats(dataset):
    items, errors = discover_studies(dataset, MODS)
    assert [it["study"] for it in items] == ["p 05", "p01", "p02"]
    by = {it["study"]: it for it in items}
    assert by["p01"]["mri"] == os.path.abspath(dataset / "p01" / "MR_T1")
    assert by["p01"]["moving"] == os.path.abspath(dataset / "p01" / "PET.nii.gz")
    assert by["p02"]["mri"].endswith("t1.nrrd") and os.path.isdir(by["p02"]["moving"])
    assert by["p 05"]["mri"].endswith("Flair.mha") and by["p 05"]["moving"].endswith("PET.nii")
    assert by["p 05"]["study_id"] == "p_05"
    assert by["p01"]["study_id"] == "p01"
    # the two broken studies are reported by name, with the reason
    msgs = {e.study: str(e) for e in errors}
    assert set(msgs) == {"p03", "p04"}
    assert "no 'moving' image" in msgs["p03"] and "pet*" in msgs["p03"] and "ct.nii.gz" in msgs["p03"]
    assert "several candidates for 'mri'" in msgs["p04"]
    assert "t1.nii.gz" in msgs["p04"] and "t2.nrrd" in msgs["p04"]
    assert all(isinstance(e, FusionInputError) for e in errors)


def test_discovery_default_modalities(dataset):
    items, errors = discover_studies(dataset, None)
    assert len(items) == 3 and len(errors) == 2
    assert DEFAULT_MODALITIES["moving"] == ["pet*"]
    assert default_modalities("ct")["moving"] == ["ct*"]
    # with CT patterns p03 works and the others miss their CT
    items, errors = discover_studies(dataset, default_modalities("ct"))
    assert [it["study"] for it in items] == ["p03"]


def test_entry_matching_two_modalities_is_ambiguous(tmp_path):
    _nifti(tmp_path / "s1" / "mrpet.nii")
    _nifti(tmp_path / "s1" / "pet.nii")
    items, errors = discover_studies(tmp_path, {"mri": ["mr*"], "moving": ["*pet*"]})
    assert not items
    assert "matches several modalities" in str(errors[0])


def test_unique_study_ids_from_folders(tmp_path):
    for name in ("a b", "a_b", "A_B"):
        _nifti(tmp_path / name / "mri.nii")
        _nifti(tmp_path / name / "pet.nii")
    items, errors = discover_studies(tmp_path, MODS)
    assert not errors
    ids = [it["study_id"] for it in items]
    assert len({i.lower() for i in ids}) == 3


def test_missing_dataset_dir(tmp_path):
    with pytest.raises(FusionInputError, match="does not exist"):
        discover_studies(tmp_path / "nope", MODS)


@pytest.mark.parametrize("style", ["list", "monai"])
def test_datalist(tmp_path, style):
    data = tmp_path / "data"
    _nifti(data / "x" / "mri.nii.gz")
    _nifti(data / "x" / "pet.nii.gz")
    write_dicom_series(data / "y" / "mr")
    entries = [
        {"study": "../evil", "mri": "data/x/mri.nii.gz", "moving": "data/x/pet.nii.gz"},
        {"study": "../evil", "mri": str(data / "y" / "mr"), "moving": "data/x/pet.nii.gz",
         "mri_series_uid": "1.2.3"},
        {"study": "broken", "mri": "data/x/missing.nii.gz", "moving": "data/x/pet.nii.gz"},
        {"study": "nomoving", "mri": "data/x/mri.nii.gz"},
    ]
    dl = tmp_path / "datalist.json"
    dl.write_text(json.dumps(entries if style == "list" else {"testing": entries}))
    items, errors = discover_studies(None, MODS, datalist=dl)
    assert [it["study_id"] for it in items] == ["evil", "evil-2"]
    assert items[0]["mri"] == os.path.abspath(data / "x" / "mri.nii.gz")
    assert items[1]["mri_series_uid"] == "1.2.3"  # extra keys are kept
    msgs = {e.study: str(e) for e in errors}
    assert "does not exist" in msgs["broken"] and "missing.nii.gz" in msgs["broken"]
    assert "no 'moving' path" in msgs["nomoving"]


def test_bad_datalist(tmp_path):
    dl = tmp_path / "dl.json"
    dl.write_text("{not json")
    with pytest.raises(FusionInputError, match="dl.json"):
        discover_studies(None, MODS, datalist=dl)
    dl.write_text(json.dumps({"training": []}))
    with pytest.raises(FusionInputError, match="no 'testing' list"):
        discover_studies(None, MODS, datalist=dl)
