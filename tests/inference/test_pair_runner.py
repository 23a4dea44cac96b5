"""Batch fusion of 2D pairs: native-size batches, colour and bit depth kept, per-pair errors, summary, overwrite."""

import json

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from fusionmamba_med.io.pairs import discover_pairs
from fusionmamba_med.inference.pair_runner import PairFusionRunner
from fusionmamba_med.networks.fusionmamba import load_network
from fusionmamba_med.io.images2d import read_image2d

RNG = np.random.default_rng(2)


class MeanFusion(torch.nn.Module):
    """Stand-in network: the mean of the two channels; remembers the batch shapes it saw."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))
        self.calls = []

    def forward(self, image):
        self.calls.append(tuple(image.shape))
        self.last_max = float(image.max())
        assert not torch.is_grad_enabled()
        return image.mean(dim=1, keepdim=True) * self.scale


def _save(path, pixels):
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".tif":
        tifffile.imwrite(path, pixels)
    else:
        Image.fromarray(pixels).save(path)
    return path


def _dataset(root):
    """vi/ir pairs: two grey 8-bit 12x16, one colour 12x16, one 16-bit grey 10x14 (IR as 16-bit TIFF)."""
    vi, ir = root / "vi", root / "ir"
    for name in ("g1", "g2"):
        _save(vi / f"{name}.png", RNG.integers(0, 256, (12, 16), dtype=np.uint8))
        _save(ir / f"{name}.png", RNG.integers(0, 256, (12, 16), dtype=np.uint8))
    _save(vi / "colour.png", RNG.integers(0, 256, (12, 16, 3), dtype=np.uint8))
    _save(ir / "colour.png", RNG.integers(0, 256, (12, 16), dtype=np.uint8))
    _save(vi / "deep.png", RNG.integers(0, 65536, (10, 14), dtype=np.uint16))
    _save(ir / "deep.tif", RNG.integers(0, 65536, (10, 14), dtype=np.uint16))
    return vi, ir


def _runner(vi, ir, out, network=None, **kwargs):
    pairs, errors = discover_pairs(vi, ir)
    kwargs.setdefault("progress", False)
    return PairFusionRunner(pairs, errors, network or MeanFusion(), out, task="ir_vis", **kwargs)


def test_fuses_every_pair_at_native_size_in_same_size_batches(tmp_path):
    vi, ir = _dataset(tmp_path)
    net = MeanFusion()
    summary = _runner(vi, ir, tmp_path / "out", net, batch_size=4).run()
    assert (summary["fused"], summary["skipped"], summary["failed"]) == (4, 0, 0)
    # three 12x16 pairs in one batch, the 10x14 pair alone; nothing resized
    assert sorted(net.calls) == [(1, 2, 10, 14), (3, 2, 12, 16)]
    grey, info = read_image2d(tmp_path / "out" / "g1.png")
    assert grey.shape == (1, 12, 16) and info["bit_depth"] == 8
    expected = (read_image2d(vi / "g1.png")[0] + read_image2d(ir / "g1.png")[0]) / 2
    np.testing.assert_allclose(grey, expected, atol=0.51 / 255)
    colour, info = read_image2d(tmp_path / "out" / "colour.png")
    assert colour.shape == (3, 12, 16) and info["mode"] == "RGB"
    deep, info = read_image2d(tmp_path / "out" / "deep.png")
    assert deep.shape == (1, 10, 14) and info["bit_depth"] == 16
    saved = json.loads((tmp_path / "out" / "fusion_summary.json").read_text())
    assert [p["name"] for p in saved["pairs"]] == ["colour", "deep", "g1", "g2"]
    assert saved["pairs"][0]["colour"] is True and saved["pairs"][1]["bit_depth"] == 16


def test_batch_size_limits_the_batch(tmp_path):
    vi, ir = _dataset(tmp_path)
    net = MeanFusion()
    _runner(vi, ir, tmp_path / "out", net, batch_size=2).run()
    assert sorted(net.calls) == [(1, 2, 10, 14), (1, 2, 12, 16), (2, 2, 12, 16)]


def test_bad_pairs_are_reported_and_the_rest_is_written(tmp_path):
    vi, ir = _dataset(tmp_path)
    _save(vi / "small.png", np.zeros((8, 8), np.uint8)), _save(ir / "small.png", np.zeros((9, 8), np.uint8))
    (vi / "broken.png").write_bytes(b"junk"), _save(ir / "broken.png", np.zeros((12, 16), np.uint8))
    _save(vi / "lonely.png", np.zeros((12, 16), np.uint8))
    runner = _runner(vi, ir, tmp_path / "out")
    with pytest.raises(SystemExit, match="3 pairs failed"):
        runner.run()
    summary = json.loads((tmp_path / "out" / "fusion_summary.json").read_text())
    failed = {p["name"]: p["reason"] for p in summary["pairs"] if p["status"] == "failed"}
    assert set(failed) == {"small", "broken", "lonely"}
    assert str(vi / "small.png") in failed["small"] and str(ir / "small.png") in failed["small"]
    assert str(vi / "broken.png") in failed["broken"]
    assert "lonely.png" in failed["lonely"]
    assert summary["fused"] == 4
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == ["colour.png", "deep.png", "g1.png", "g2.png"]


def test_failing_network_fails_only_its_pairs(tmp_path):
    vi, ir = _dataset(tmp_path)

    class FailsOnSmall(MeanFusion):
        def forward(self, image):
            if image.shape[-1] == 14:
                raise RuntimeError("out of memory")
            return super().forward(image)

    summary = _runner(vi, ir, tmp_path / "out", FailsOnSmall(), fail_on_error=False).run()
    assert summary["fused"] == 3 and summary["failed"] == 1
    bad = [p for p in summary["pairs"] if p["status"] == "failed"][0]
    assert bad["name"] == "deep" and "out of memory" in bad["reason"]


def test_overwrite_policies(tmp_path):
    vi, ir = _dataset(tmp_path)
    out = tmp_path / "out"
    _runner(vi, ir, out).run()
    (out / "g1.png").write_bytes(b"old")
    net = MeanFusion()
    summary = _runner(vi, ir, out, net, overwrite="skip").run()
    assert summary["skipped"] == 4 and net.calls == [] and (out / "g1.png").read_bytes() == b"old"
    summary = _runner(vi, ir, out, overwrite="error", fail_on_error=False).run()
    assert summary["failed"] == 4 and "exists" in summary["pairs"][0]["reason"]
    _runner(vi, ir, out, overwrite="overwrite").run()
    assert read_image2d(out / "g1.png")[0].shape == (1, 12, 16)


def test_fixed_output_bit_depth(tmp_path):
    vi, ir = _dataset(tmp_path)
    _runner(vi, ir, tmp_path / "out", output_bit_depth=16).run()
    assert read_image2d(tmp_path / "out" / "g1.png")[1]["bit_depth"] == 16
    assert (tmp_path / "out" / "colour.tif").is_file()  # 16-bit RGB goes to TIFF
    assert read_image2d(tmp_path / "out" / "colour.tif")[0].shape == (3, 12, 16)


def test_output_names_are_safe_and_inputs_are_never_overwritten(tmp_path):
    vi, ir = _dataset(tmp_path)
    items = [{"name": "../evil name", "a": str(vi / "g1.png"), "b": str(ir / "g1.png")},
             {"name": "g2", "a": str(vi / "g2.png"), "b": str(ir / "g2.png")}]
    before = (vi / "g2.png").read_bytes()
    summary = PairFusionRunner(items, [], MeanFusion(), vi, progress=False, overwrite="overwrite",
                               fail_on_error=False).run()
    assert (vi / "evil_name.png").is_file()
    assert summary["failed"] == 1 and "overwrite an input" in summary["pairs"][1]["reason"]
    assert (vi / "g2.png").read_bytes() == before


def test_old_keyword_transform_still_works_and_a_writer_can_be_given(tmp_path):
    from monai.transforms import Compose

    from fusionmamba_med.transforms.pairs import LoadImagePaird, PairToFusionInputd
    from fusionmamba_med.io.images2d import ImagePairWriter

    vi, ir = _dataset(tmp_path)
    pairs, errors = discover_pairs(vi, ir)
    transform = Compose([LoadImagePaird(), PairToFusionInputd(task="ir_vis")])
    with pytest.warns(DeprecationWarning, match="preprocessing"):
        runner = PairFusionRunner(pairs, errors, MeanFusion(), transform=transform, progress=False,
                                  writer=ImagePairWriter(tmp_path / "out", output_bit_depth=16))
    assert runner.preprocessing is transform and runner.transform is transform
    summary = runner.run()
    assert summary["fused"] == 4 and summary["output_dir"] == str(tmp_path / "out")
    assert read_image2d(tmp_path / "out" / "g1.png")[1]["bit_depth"] == 16
    with pytest.raises(TypeError):
        PairFusionRunner(pairs, errors, MeanFusion(), tmp_path, transform=transform, preprocessing=transform)


def test_real_network_on_a_40x52_pair(tmp_path):
    from fusionmamba_med.networks import build_fusionmamba

    _save(tmp_path / "vi" / "scene.png", RNG.integers(0, 256, (40, 52, 3), dtype=np.uint8))
    _save(tmp_path / "ir" / "scene.png", RNG.integers(0, 256, (40, 52), dtype=np.uint8))
    torch.manual_seed(0)
    summary = _runner(tmp_path / "vi", tmp_path / "ir", tmp_path / "out", build_fusionmamba("tiny")).run()
    assert summary["fused"] == 1
    fused, info = read_image2d(tmp_path / "out" / "scene.png")
    assert fused.shape == (3, 40, 52) and info["mode"] == "RGB"


def test_load_network_says_loudly_when_weights_are_missing(tmp_path, caplog):
    net = MeanFusion()
    with caplog.at_level("WARNING"):
        load_network(net, tmp_path / "model.pt", load_pretrain=True)
    assert "RANDOM" in caplog.text
    trained = MeanFusion()
    with torch.no_grad():
        trained.scale.fill_(0.25)
    torch.save(trained.state_dict(), tmp_path / "model.pt")
    caplog.clear()
    with caplog.at_level("INFO"):
        loaded = load_network(MeanFusion(), tmp_path / "model.pt", load_pretrain=True)
    assert float(loaded.scale.detach()) == 0.25 and "RANDOM" not in caplog.text and not loaded.training


def test_12bit_microscopy_pairs_keep_their_range_with_data_scaling(tmp_path):
    """12-bit GFP / PC images in 16-bit files: with ``sixteen_bit_range="data"`` the network sees [0, 1] images and
    the fused 16-bit output is in the inputs' 12-bit units; by the container the network sees the pair 16x darker."""
    from monai.transforms import Compose

    from fusionmamba_med.transforms.pairs import LoadImagePaird, PairToFusionInputd

    gfp, pc = tmp_path / "GFP", tmp_path / "PC"
    _save(gfp / "cell.png", RNG.integers(1000, 4096, (12, 16), dtype=np.uint16))
    _save(pc / "cell.png", RNG.integers(500, 3500, (12, 16), dtype=np.uint16))
    seen = {}
    for scaling in ("container", "data"):
        net = MeanFusion()
        transform = Compose([LoadImagePaird(sixteen_bit_range=scaling), PairToFusionInputd(task="gfp_pc")])
        pairs, errors = discover_pairs(gfp, pc)
        summary = PairFusionRunner(pairs, errors, net, tmp_path / scaling, preprocessing=transform, task="gfp_pc",
                                   progress=False).run()
        seen[scaling] = net
        raw = np.asarray(Image.open(tmp_path / scaling / "cell.png"))
        expected = (np.asarray(Image.open(gfp / "cell.png")).astype(float)
                    + np.asarray(Image.open(pc / "cell.png"))) / 2
        assert raw.dtype == np.uint16 and np.abs(raw - expected).max() <= 1  # mean fusion, in the inputs' units
        assert summary["pairs"][0]["full_scale"] == (4095 if scaling == "data" else 65535)
    assert seen["data"].last_max > 0.9 and seen["container"].last_max < 0.07  # what the network was given
