"""Bundles stand on their own: real files only, the shared configs written in by `python -m fusionmamba_med.bundle
sync` (and a test that fails when they drift), bundle_root / data defaults found without the checkout, and a packed
bundle that runs after unzipping anywhere."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import fusionmamba_med
from fusionmamba_med.bundle import default_dataset_dir, locate_bundle, project_root, workspace
from fusionmamba_med.bundle.pack import pack_bundle
from fusionmamba_med.bundle.sync import BUNDLES, ENTRY_POINTS, package_version, sync

ROOT = Path(__file__).resolve().parents[2]


def _env():
    # the checkout's package, also for commands run outside it (the venv may hold an install of another checkout)
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}


def _cli(*args, cwd=ROOT, timeout=120):
    return subprocess.run([sys.executable, *map(str, args)], cwd=cwd, env=_env(), capture_output=True, text=True,
                          timeout=timeout)


def _copy_bundle(name: str, dest: Path, weights: bool = False) -> Path:
    """A copy of bundles/<name> outside the checkout (without the weights unless asked)."""
    ignore = shutil.ignore_patterns("eval", "runs", "__pycache__", *(() if weights else ("*.pt",)))
    return Path(shutil.copytree(ROOT / "bundles" / name, dest, ignore=ignore))


# -- one source of truth, real files ----------------------------------------------------------------------------------
def test_bundles_hold_no_symlinks():
    links = [p for p in (ROOT / "bundles").rglob("*") if p.is_symlink()]
    assert not links, f"symlinks in bundles/: {links}"


def test_committed_bundles_match_what_sync_writes():
    differ = sync(ROOT, check=True)
    assert not differ, (f"bundle files differ from the shared configs/: {[str(p.relative_to(ROOT)) for p in differ]}; "
                        "run `python -m fusionmamba_med.bundle sync`")


@pytest.mark.parametrize("bundle", BUNDLES)
def test_bundle_configs_use_nothing_outside_the_bundle(bundle):
    folder = ROOT / "bundles" / bundle
    for rel in ("configs/inference.json", "configs/train.json"):
        text = (folder / rel).read_text()
        assert '"%' not in text, f"{rel} pulls a macro from another file"
        assert "repo_root" not in text
    for entry in ENTRY_POINTS:  # the bundle-root entry points are copies of configs/
        assert (folder / entry).read_bytes() == (folder / "configs" / entry).read_bytes()


def test_sync_writes_the_shared_pieces_and_replaces_links(tmp_path):
    root = tmp_path / "checkout"
    shutil.copytree(ROOT / "configs", root / "configs")
    for f in ("pyproject.toml", "LICENSE"):
        shutil.copy(ROOT / f, root / f)
    for b in BUNDLES:
        (root / "bundles" / b / "configs").mkdir(parents=True)
        for f in ("inference.json", "train.json", "metadata.json"):
            shutil.copy(ROOT / "bundles" / b / "configs" / f, root / "bundles" / b / "configs" / f)
    shared = json.loads((root / "configs" / "medical_inference.json").read_text())
    shared["inferer"]["sw_batch_size"] = 3
    shared["new_piece"] = {"_target_": "Identity"}
    (root / "configs" / "medical_inference.json").write_text(json.dumps(shared))
    link = root / "bundles" / "pet_mri" / "configs" / "network.json"
    link.symlink_to("../../../configs/network.json")

    proc = _cli("-m", "fusionmamba_med.bundle", "sync", "--check", "--root", root)
    assert proc.returncode == 1 and "bundles/pet_mri/configs/inference.json" in proc.stdout, proc.stdout + proc.stderr
    proc = _cli("-m", "fusionmamba_med.bundle", "sync", "--root", root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _cli("-m", "fusionmamba_med.bundle", "sync", "--check", "--root", root).returncode == 0

    pet = json.loads((root / "bundles" / "pet_mri" / "configs" / "inference.json").read_text())
    assert pet["inferer"]["sw_batch_size"] == 3
    keys = list(pet)
    assert keys.index("new_piece") < keys.index("initialize") and keys[-3:] == ["initialize", "run", "finalize"]
    assert pet["moving_name"] == "PET"  # the bundle's own keys stay
    assert "new_piece" not in json.loads((root / "bundles" / "generic_2d" / "configs" / "inference.json").read_text())
    assert not link.is_symlink() and not link.exists()
    for b in BUNDLES:
        folder = root / "bundles" / b
        assert (folder / "LICENSE").read_text() == (ROOT / "LICENSE").read_text()
        assert (folder / "inference.json").read_text() == (folder / "configs" / "inference.json").read_text()
        meta = json.loads((folder / "metadata.json").read_text())
        assert meta["required_packages_version"]["fusionmamba-med"] == package_version(ROOT)


# -- where a bundle finds itself and its data -------------------------------------------------------------------------
def test_locate_bundle_from_the_config_path_the_working_directory_or_the_checkout(tmp_path, monkeypatch):
    copy = tmp_path / "elsewhere" / "my_pet"  # copied and renamed: the metadata's bundle_name counts
    (copy / "configs").mkdir(parents=True)
    shutil.copy(ROOT / "bundles" / "pet_mri" / "configs" / "metadata.json", copy / "configs")
    monkeypatch.chdir(tmp_path)
    for argv in (["run", "--config_file", str(copy / "configs" / "inference.json")],
                 ["run", f"--config_file={copy / 'inference.json'}"],
                 ["run", "--config_file", f"['{copy}/configs/inference.json','{copy}/configs/multi_gpu.json']"],
                 ["run", "--config_file", "elsewhere/my_pet/configs/inference.json"]):
        assert locate_bundle("pet_mri", argv=argv) == str(copy.resolve())
    with pytest.raises(FileNotFoundError, match="--bundle_root"):
        locate_bundle("ct_mri", argv=["run", "--config_file", str(copy / "configs" / "inference.json")])
    with pytest.raises(FileNotFoundError, match="--bundle_root"):
        locate_bundle("pet_mri", argv=[])  # nothing on the command line, not in a bundle or a checkout
    assert locate_bundle("pet_mri", start=copy, argv=[]) == str(copy.resolve())  # run from inside the copy
    assert locate_bundle("pet_mri", start=ROOT, argv=[]) == str(ROOT / "bundles" / "pet_mri")


def test_checkout_and_stand_alone_defaults(tmp_path):
    inside = ROOT / "bundles" / "pet_mri"
    assert project_root(inside) == str(ROOT) and workspace(inside) == str(ROOT)
    assert default_dataset_dir(inside, "pet_mri") == str(ROOT / "sample_data" / "pet_mri")
    assert default_dataset_dir(ROOT / "bundles" / "generic_2d", "generic_2d", "gfp_pc") == str(
        ROOT / "sample_data" / "generic_2d" / "gfp_pc")

    alone = _copy_bundle("pet_mri", tmp_path / "pet_mri")
    assert project_root(alone) is None and workspace(alone) == str(alone.resolve())
    with pytest.raises(FileNotFoundError, match="--dataset_dir"):
        default_dataset_dir(alone, "pet_mri")
    default_dataset_dir(alone, "pet_mri", datalist="studies.json")  # a datalist replaces the folder: no error


def test_metadata_declares_the_package_version_without_deprecated_keys():
    assert package_version(ROOT) == fusionmamba_med.__version__
    for bundle in BUNDLES:
        for meta_file in (ROOT / "bundles" / bundle / "configs" / "metadata.json",
                          ROOT / "bundles" / bundle / "metadata.json"):
            meta = json.loads(meta_file.read_text())
            assert "optional_packages_version" not in meta  # MONAI renames it, replacing required_packages_version
            assert meta["required_packages_version"]["fusionmamba-med"] == fusionmamba_med.__version__
            assert meta["bundle_name"] == bundle


# -- pack --------------------------------------------------------------------------------------------------------------
def test_pack_holds_weights_configs_and_docs_but_no_outputs(tmp_path):
    copy = _copy_bundle("pet_mri", tmp_path / "src" / "pet_mri", weights=True)
    (copy / "eval" / "study01").mkdir(parents=True)
    (copy / "eval" / "fusion_summary.json").write_text("{}")
    (copy / "configs" / "__pycache__").mkdir()
    (copy / ".DS_Store").write_text("")
    out = pack_bundle(copy, tmp_path / "dist" / "pet_mri.zip")
    with zipfile.ZipFile(out) as zf:
        names = set(zf.namelist())
    expected = {f"pet_mri/{rel}" for rel in (
        "LICENSE", "models/model.pt", "docs/README.md", "docs/data_license.txt", "configs/metadata.json",
        "configs/inference.json", "configs/train.json", "configs/logging.conf", "configs/multi_gpu_inference.json",
        "configs/multi_gpu_train.json", *ENTRY_POINTS)}
    assert names == expected

    (copy / "configs" / "extra.json").symlink_to(copy / "configs" / "train.json")
    with pytest.raises(ValueError, match="symlink"):
        pack_bundle(copy, tmp_path / "dist" / "again.zip")
    (copy / "configs" / "extra.json").unlink()
    (copy / "models" / "model.pt").unlink()
    with pytest.raises(FileNotFoundError, match="model.pt"):
        pack_bundle(copy, tmp_path / "dist" / "again.zip")


@pytest.mark.slow
def test_packed_bundle_runs_after_unzipping_anywhere(tmp_path):
    proc = _cli("-m", "fusionmamba_med.bundle", "pack", "bundles/pet_mri", "--out", tmp_path / "pet_mri.zip")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with zipfile.ZipFile(tmp_path / "pet_mri.zip") as zf:
        zf.extractall(tmp_path / "unzipped")
    bundle = tmp_path / "unzipped" / "pet_mri"
    data = tmp_path / "data"
    shutil.copytree(ROOT / "sample_data" / "pet_mri" / "study01", data / "study01")
    work = tmp_path / "work"  # neither the bundle nor the checkout
    work.mkdir()

    run = ["-m", "monai.bundle", "run", "--config_file", bundle / "configs" / "inference.json", "--progress", "False"]
    proc = _cli(*run, "--bundle_root", bundle, "--dataset_dir", data, cwd=work, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert "RANDOM" not in log and "Cannot find the metadata config file" not in log
    summary = json.loads((bundle / "eval" / "fusion_summary.json").read_text())
    assert (summary["fused"], summary["failed"]) == (1, 0), summary
    assert (bundle / "eval" / "study01" / "study01_fused.nii.gz").is_file()

    # without --bundle_root: the bundle is the one of the config file; the study is done, so it is skipped
    proc = _cli(*run, "--dataset_dir", data, cwd=work, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    summary = json.loads((bundle / "eval" / "fusion_summary.json").read_text())
    assert (summary["fused"], summary["skipped"], summary["failed"]) == (0, 1, 0), summary

    # from inside the copy with no data given: a clear message instead of a crash deep inside
    proc = _cli("-m", "monai.bundle", "run", "--config_file", "configs/inference.json", cwd=bundle, timeout=600)
    assert proc.returncode != 0 and "--dataset_dir" in proc.stdout + proc.stderr
