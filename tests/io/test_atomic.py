"""Atomic writes: the final name appears only when the content is complete; a failure leaves what was there."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from fusionmamba_med.io.atomic import atomic_path, jsonable, write_json


def test_file_appears_only_when_complete(tmp_path):
    final = tmp_path / "sub" / "vol.nii.gz"
    with atomic_path(final) as tmp:
        assert tmp.parent == final.parent and tmp.name.startswith(".vol.partial-") and tmp.name.endswith(".nii.gz")
        tmp.write_bytes(b"data")
        assert not final.exists()
    assert final.read_bytes() == b"data" and os.listdir(final.parent) == ["vol.nii.gz"]


def test_failure_keeps_the_old_file_and_leaves_nothing_else(tmp_path):
    final = tmp_path / "summary.json"
    final.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(final) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert final.read_text() == "old" and os.listdir(tmp_path) == ["summary.json"]


def test_folder_is_swapped_in_whole(tmp_path):
    final = tmp_path / "series_dicom"
    final.mkdir()
    (final / "0001.dcm").write_text("old")
    with pytest.raises(OSError):
        with atomic_path(final, directory=True) as tmp:
            (tmp / "0001.dcm").write_text("new")
            raise OSError("disk full")
    assert sorted(os.listdir(tmp_path)) == ["series_dicom"] and (final / "0001.dcm").read_text() == "old"
    with atomic_path(final, directory=True) as tmp:
        (tmp / "0001.dcm").write_text("new")
        (tmp / "0002.dcm").write_text("new")
    assert sorted(os.listdir(final)) == ["0001.dcm", "0002.dcm"] and sorted(os.listdir(tmp_path)) == ["series_dicom"]


def test_write_json_converts_and_is_strict(tmp_path):
    path = write_json(tmp_path / "s.json", {"n": np.int64(2), "x": float("inf"), "p": tmp_path, "s": {3, 1}})
    assert json.loads(path.read_text()) == {"n": 2, "x": None, "p": str(tmp_path), "s": [1, 3]}
    assert jsonable(np.arange(2)) == [0, 1]


def test_temporary_names_are_recognised_and_stale_ones_removed(tmp_path):
    from fusionmamba_med.io.atomic import TEMPORARY_NAME, remove_stale_temporaries, temporary_path

    made = [temporary_path(tmp_path / "s_fused.nii.gz"), temporary_path(tmp_path / "s_dicom", keep_extension=False),
            temporary_path(tmp_path / "s_dicom", "old", keep_extension=False),
            temporary_path(tmp_path / "fusion_summary.json")]
    for p in made:
        assert TEMPORARY_NAME.match(p.name), p.name
        p.mkdir() if "dicom" in p.name else p.write_text("half")
    keep = ["s_fused.nii.gz", ".s_fused.nii.gz.claim", "x.partial-1234abcd", ".notes"]
    for name in keep:
        (tmp_path / name).write_text("keep")
    assert set(remove_stale_temporaries(tmp_path, ["fusion_summary.json"])) == {made[3]}
    assert set(remove_stale_temporaries(tmp_path)) == set(made[:3])
    assert sorted(os.listdir(tmp_path)) == sorted(keep)
    assert remove_stale_temporaries(tmp_path / "missing") == []


def test_check_output_dir_names_the_folder(tmp_path, monkeypatch):
    from fusionmamba_med.errors import OutputError
    from fusionmamba_med.io.atomic import check_output_dir

    assert check_output_dir(tmp_path / "new" / "out") == tmp_path / "new" / "out"
    assert not (tmp_path / "new").exists() and os.listdir(tmp_path) == []  # a check, nothing made or left
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match=f"output folder '{tmp_path / 'file'}': not a folder"):
        check_output_dir(tmp_path / "file")
    with pytest.raises(OutputError, match="nearest existing parent.*is a file"):
        check_output_dir(tmp_path / "file" / "out")
    real_open = os.open

    def read_only(path, flags, *args):
        if flags & os.O_CREAT:
            raise OSError(30, "Read-only file system", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", read_only)
    with pytest.raises(OutputError, match=f"output folder '{tmp_path}': cannot be written \\(read-only file system\\)"):
        check_output_dir(tmp_path)
