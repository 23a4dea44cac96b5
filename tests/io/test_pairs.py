"""Pairing 2D images on disk (fusionmamba_med.io.pairs): two folders by file name, or a datalist."""

import json

import pytest

from fusionmamba_med.errors import FusionInputError
from fusionmamba_med.io.pairs import IMAGE_EXTENSIONS, discover_pairs
from tests.synthetic import random_colour, random_green, random_grey, save_image


def test_pairs_by_stem_with_mixed_extensions_and_case(tmp_path):
    a, b = tmp_path / "vi", tmp_path / "ir"
    save_image(a / "02.png", random_grey()), save_image(b / "02.png", random_grey())
    save_image(a / "01.png", random_grey()), save_image(b / "01.bmp", random_grey())
    save_image(a / "Road.JPG", random_grey()), save_image(b / "road.tif", random_grey())
    (a / "notes.txt").write_text("ignored")
    items, errors = discover_pairs(a, b)
    assert errors == []
    assert [i["name"] for i in items] == ["01", "02", "Road"]
    assert items[0] == {"name": "01", "a": str(a / "01.png"), "b": str(b / "01.bmp")}
    assert items[2]["b"] == str(b / "road.tif")
    assert ".tif" in IMAGE_EXTENSIONS and ".txt" not in IMAGE_EXTENSIONS


def test_files_without_partner_are_errors_not_crashes(tmp_path):
    a, b = tmp_path / "GFP", tmp_path / "PC"
    save_image(a / "001.bmp", random_green()), save_image(b / "001.bmp", random_grey())
    save_image(a / "only_a.png", random_green())
    save_image(b / "only_b.png", random_grey())
    items, errors = discover_pairs(a, b)
    assert [i["name"] for i in items] == ["001"]
    assert sorted(e.path for e in errors) == [str(a / "only_a.png"), str(b / "only_b.png")]
    assert all(isinstance(e, FusionInputError) for e in errors)
    assert "only_a" in str(errors[0]) or "only_a" in str(errors[1])


def test_duplicate_stems_in_one_folder_are_reported(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    save_image(a / "x.png", random_grey()), save_image(a / "x.bmp", random_grey())
    save_image(b / "x.png", random_grey())
    items, errors = discover_pairs(a, b)
    assert items == []
    assert {e.path for e in errors if "several images" in str(e)} == {str(a / "x.png"), str(a / "x.bmp")}


def test_missing_folder_raises(tmp_path):
    with pytest.raises(FusionInputError, match="folder not found"):
        discover_pairs(tmp_path / "nope", tmp_path)


def test_datalist_replaces_folders(tmp_path):
    save_image(tmp_path / "imgs" / "v.png", random_colour()), save_image(tmp_path / "imgs" / "i.png", random_grey())
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
