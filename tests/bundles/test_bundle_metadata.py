"""Each bundle's metadata validates against MONAI's schema (offline copy) and its network honours the declared I/O."""

from pathlib import Path

import pytest
from monai.bundle import verify_metadata, verify_net_in_out

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = Path(__file__).with_name("meta_schema_20240725.json")
BUNDLES = ["ct_mri", "pet_mri", "spect_mri", "generic_2d"]


@pytest.mark.parametrize("bundle", BUNDLES)
def test_metadata_matches_schema(bundle):
    meta = ROOT / "bundles" / bundle / "configs" / "metadata.json"
    # an existing --filepath is used as is: no download
    verify_metadata(meta_file=str(meta), filepath=str(SCHEMA))


@pytest.mark.parametrize("bundle", BUNDLES)
def test_network_in_out_matches_metadata(bundle):
    folder = ROOT / "bundles" / bundle
    verify_net_in_out(
        net_id="network_def",
        meta_file=str(folder / "configs" / "metadata.json"),
        config_file=str(folder / "configs" / "inference.json"),
        device="cpu",
        n=3,
        any=2,
    )


@pytest.mark.parametrize("bundle", BUNDLES)
def test_user_entry_points_sit_next_to_metadata(bundle):
    """`--config_file bundles/<task>/inference.json` finds metadata.json and logging.conf beside it (real files)."""
    folder = ROOT / "bundles" / bundle
    for name in ("inference.json", "metadata.json", "logging.conf", "train.json"):
        assert (folder / name).is_file() and not (folder / name).is_symlink(), f"{folder / name} missing or a link"
    assert (folder / "configs" / "metadata.json").is_file()


def test_schema_check_rejects_incomplete_metadata(tmp_path):
    import json

    meta = json.loads((ROOT / "bundles" / "pet_mri" / "configs" / "metadata.json").read_text())
    del meta["network_data_format"]
    bad = tmp_path / "metadata.json"
    bad.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="network_data_format"):
        verify_metadata(meta_file=str(bad), filepath=str(SCHEMA))
