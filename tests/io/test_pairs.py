"""Pairing 2D images on disk (fusionmamba_med.io.pairs): two folders by file name, or a datalist."""

import json

import numpy as np
import pytest
from PIL import Image

from fusionmamba_med.errors import FusionInputError
from fusionmamba_med.io.pairs import IMAGE_EXTENSIONS, discover_pairs

RNG = np.random.default_rng(1)


def _save(path, pixels):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def _colour(h=8, w=10):
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _grey(h=8, w=10):
    return RNG.integers(0, 256, (h, w), dtype=np.uint8)


def _green(h=8, w=10):
    """A GFP-like image: green signal only."""
    g = RNG.integers(20, 256, (h, w), dtype=np.uint8)
    return np.dstack([np.zeros_like(g), g, np.zeros_like(g)])


# -- discovery ---------------------------------------------------------------------------------------------------------
def test_pairs_by_stem_with_mixed_extensions_and_case(tmp_path):
    a, b = tmp_path / "vi", tmp_path / "ir"
    _save(a / "02.png", _grey()), _save(b / "02.png", _grey())
    _save(a / "01.png", _grey()), _save(b / "01.bmp", _grey())
    _save(a / "Road.JPG", _grey()), _save(b / "road.tif", _grey())
    (a / "notes.txt").write_text("ignored")
    items, errors = discover_pairs(a, b)
    assert errors == []
    assert [i["name"] for i in items] == ["01", "02", "Road"]
    assert items[0] == {"name": "01", "a": str(a / "01.png"), "b": str(b / "01.bmp")}
    assert items[2]["b"] == str(b / "road.tif")
    assert ".tif" in IMAGE_EXTENSIONS and ".txt" not in IMAGE_EXTENSIONS


def test_files_without_partner_are_errors_not_crashes(tmp_path):
    a, b = tmp_path / "GFP", tmp_path / "PC"
    _save(a / "001.bmp", _green()), _save(b / "001.bmp", _grey())
    _save(a / "only_a.png", _green())
    _save(b / "only_b.png", _grey())
    items, errors = discover_pairs(a, b)
    assert [i["name"] for i in items] == ["001"]
    assert sorted(e.path for e in errors) == [str(a / "only_a.png"), str(b / "only_b.png")]
    assert all(isinstance(e, FusionInputError) for e in errors)
    assert "only_a" in str(errors[0]) or "only_a" in str(errors[1])


def test_duplicate_stems_in_one_folder_are_reported(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    _save(a / "x.png", _grey()), _save(a / "x.bmp", _grey()), _save(b / "x.png", _grey())
    items, errors = discover_pairs(a, b)
    assert items == []
    assert {e.path for e in errors if "several images" in str(e)} == {str(a / "x.png"), str(a / "x.bmp")}


def test_missing_folder_raises(tmp_path):
    with pytest.raises(FusionInputError, match="folder not found"):
        discover_pairs(tmp_path / "nope", tmp_path)


def test_datalist_replaces_folders(tmp_path):
    _save(tmp_path / "imgs" / "v.png", _colour()), _save(tmp_path / "imgs" / "i.png", _grey())
    datalist = tmp_path / "list.json"
    datalist.write_text(json.dumps({"testing": [
        {"a": "imgs/v.png", "b": "imgs/i.png", "name": "scene"},
        {"a": "imgs/v.png", "b": "imgs/gone.png"},
    ]}))
    items, errors = discover_pairs(datalist=datalist)
    imgs = tmp_path / "imgs"
    assert items == [{"name": "scene", "a": str(imgs / "v.png"), "b": str(imgs / "i.png")}]
    assert len(errors) == 1 and errors[0].path == str(tmp_path / "imgs" / "gone.png")
    assert errors[0].study == "v"  # named after its A image


# -- network input ------------------------------------------------------------------------------------------------------
