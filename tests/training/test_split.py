"""training_pairs: folder pairs -> a training list and a fixed, disjoint held-out validation list."""

import json
from pathlib import Path

import pytest

from fusionmamba_med.errors import FusionInputError
from fusionmamba_med.training import split_holdout, training_pairs
from tests.synthetic import make_pairs

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def test_split_is_deterministic_disjoint_and_complete(tmp_path):
    dir_a, dir_b = make_pairs(tmp_path / "PET-MRI", [f"{i:03d}" for i in range(10)])
    source = {"dir_a": str(dir_a), "dir_b": str(dir_b)}

    first = training_pairs([source], holdout=3, seed=0)
    again = training_pairs([source], holdout=3, seed=0)
    other = training_pairs([source], holdout=3, seed=1)

    train = [i["name"] for i in first["training"]]
    val = [i["name"] for i in first["validation"]]
    assert len(val) == 3 and len(train) == 7
    assert not set(train) & set(val)
    assert sorted(train + val) == [f"PET-MRI/{i:03d}" for i in range(10)]  # labelled by the folder above A and B
    assert [i["name"] for i in again["validation"]] == val  # same seed, same held-out pairs
    assert [i["name"] for i in other["validation"]] != val  # the seed picks them
    item = first["training"][0]
    assert Path(item["a"]).parent == dir_a and Path(item["b"]).parent == dir_b


def test_split_does_not_depend_on_listing_order():
    items = [{"name": f"n{i}"} for i in range(8)]
    _, val = split_holdout(items, 2, seed=5)
    _, val_reversed = split_holdout(list(reversed(items)), 2, seed=5)
    assert val == val_reversed


def test_each_source_is_held_out_from_and_names_stay_apart(tmp_path):
    names = ["01", "02", "03", "04"]  # the same file names in both sources
    ct = make_pairs(tmp_path / "CT-MRI", names, seed=1)
    pet = make_pairs(tmp_path / "PET-MRI", names, seed=2)
    split = training_pairs(
        [{"dir_a": str(ct[0]), "dir_b": str(ct[1])}, {"name": "pet", "dir_a": str(pet[0]), "dir_b": str(pet[1])}],
        holdout=0.25,
    )
    val = [i["name"] for i in split["validation"]]
    assert len(val) == 2 and {v.split("/")[0] for v in val} == {"CT-MRI", "pet"}
    assert len({i["name"] for i in split["training"]}) == 6


def test_split_file_lists_held_out_names(tmp_path):
    dir_a, dir_b = make_pairs(tmp_path / "pairs", ["a1", "a2", "a3"])
    split_file = tmp_path / "out" / "split.json"
    split = training_pairs([{"dir_a": str(dir_a), "dir_b": str(dir_b)}], holdout=1, seed=0, split_file=split_file)
    saved = json.loads(split_file.read_text())
    assert saved["validation"] == [i["name"] for i in split["validation"]]
    assert saved["training"] == [i["name"] for i in split["training"]]
    assert saved["seed"] == 0 and saved["counts"] == {"pairs": {"training": 2, "validation": 1}}


def test_holdout_datasets_validates_on_whole_unseen_datasets(tmp_path):
    names = [f"roadscene_{i:02d}" for i in range(6)] + [f"vifb_{i:02d}" for i in range(3)]
    dir_a, dir_b = make_pairs(tmp_path / "irvis_train", names)
    source = {"dir_a": str(dir_a), "dir_b": str(dir_b)}
    split_file = tmp_path / "split.json"

    split = training_pairs([source], holdout=1, seed=0, split_file=split_file, holdout_datasets=["vifb"])

    val = [i["name"] for i in split["validation"]]
    train = [i["name"] for i in split["training"]]
    # every vifb pair is held out, plus ``holdout`` of the rest; no vifb pair is trained on
    assert [v for v in val if "vifb_" in v] == [f"irvis_train/vifb_{i:02d}" for i in range(3)]
    assert len(val) == 4 and len(train) == 5 and not any("vifb_" in t for t in train)
    assert json.loads(split_file.read_text())["holdout_datasets"] == ["vifb"]
    with pytest.raises(FusionInputError, match="llvip"):
        training_pairs([source], holdout=0, holdout_datasets=["llvip"])


def test_no_pairs_is_an_input_error(tmp_path):
    (tmp_path / "A").mkdir()
    (tmp_path / "B").mkdir()
    with pytest.raises(FusionInputError, match="no training pairs"):
        training_pairs([{"dir_a": str(tmp_path / "A"), "dir_b": str(tmp_path / "B")}])


def test_holdout_must_leave_training_pairs(tmp_path):
    dir_a, dir_b = make_pairs(tmp_path / "pairs", ["x", "y"])
    with pytest.raises(ValueError, match="leaves no training pairs"):
        training_pairs([{"dir_a": str(dir_a), "dir_b": str(dir_b)}], holdout=2)
    with pytest.raises(ValueError):
        split_holdout([{"name": "x"}], -1)


@pytest.mark.skipif(not (DATA / "harvard").is_dir(), reason="shared harvard data not present")
def test_bundle_defaults_find_the_harvard_pairs(monkeypatch):
    """The default data paths of the medical train configs resolve to real pairs (no training run)."""
    from monai.bundle import ConfigParser

    root = Path(__file__).resolve().parents[2]
    monkeypatch.chdir(root)
    monkeypatch.delenv("FUSIONMAMBA_DATA", raising=False)
    for bundle, label in (("ct_mri", "CT-MRI"), ("pet_mri", "PET-MRI"), ("spect_mri", "SPECT-MRI")):
        parser = ConfigParser()
        parser.read_config(str(root / "bundles" / bundle / "configs" / "train.json"))
        parser["split"] = "$fusionmamba_med.training.training_pairs(@train_sources, holdout=@val_holdout, seed=@seed)"
        split = parser.get_parsed_content("split")
        assert len(split["validation"]) == parser["val_holdout"]
        assert len(split["training"]) > 100
        assert all(i["name"].startswith(label + "/") for i in split["training"])
