"""Deep peers (IFCNN-MAX, MATR): our ports reproduce their authors' committed results from the published weights.

The weights and the authors' samples are read from ../shared/peers (relative to the repository root); the tests that
need them skip when that folder is absent. They are never downloaded or copied into the project.
"""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fusionmamba_med.baselines.peers import PEER_WEIGHTS, IFCNN, MATR, IFCNNMaxFusion, MATRFusion, peer_methods
from fusionmamba_med.errors import WeightsError
from fusionmamba_med.transforms.colour import rgb_to_ycbcr, ycbcr_to_rgb

ROOT = Path(__file__).resolve().parents[2]
PEERS = ROOT.parent / "shared" / "peers"
needs_peers = pytest.mark.skipif(not (PEERS / PEER_WEIGHTS["ifcnn_max"]).is_file()
                                 or not (PEERS / PEER_WEIGHTS["matr"]).is_file(),
                                 reason=f"peer weights not found under {PEERS} (../shared/peers)")
LUMA = np.array([0.299, 0.587, 0.114])


def _grey(path: Path) -> np.ndarray:
    """The authors' reading: PIL convert("L") (8-bit, rounded BT.601 luma for RGB), scaled to [0, 1]."""
    return np.asarray(Image.open(path).convert("L"), dtype=np.float32) / 255.0


def _pair(a: np.ndarray, b: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.stack([a, b]))[None]


def _cv2_rgb2gray(rgb8: np.ndarray) -> np.ndarray:
    """cv2.cvtColor(..., COLOR_RGB2GRAY) for uint8 (its fixed-point BT.601 with 14-bit weights, rounded)."""
    r, g, b = (rgb8[..., i].astype(np.int64) for i in range(3))
    return ((r * 4899 + g * 9617 + b * 1868 + 8192) >> 14).astype(np.float64)


@needs_peers
@pytest.mark.parametrize("first, second, result", [
    ("c01_1.tif", "c01_2.tif", "IFCNN-MAX-MD-c01.png"),
    ("Camp_Vis.png", "Camp_IR.png", "IFCNN-MAX-IV-Camp.png"),
])
def test_ifcnn_max_reproduces_the_authors_results(first, second, result):
    samples = PEERS / "ifcnn" / "samples"
    model = IFCNNMaxFusion(PEERS / PEER_WEIGHTS["ifcnn_max"])
    x = _pair(_grey(samples / first), _grey(samples / second))
    with torch.inference_mode():
        rgb = model.forward_rgb(x)[0].numpy()
        fused = model(x)[0, 0].numpy().astype(np.float64)
    ref = np.asarray(Image.open(samples / result), dtype=np.float64)
    # the authors' output path: clamp(0, 1) * 255, astype(uint8) (truncation), cv2 RGB -> grey
    authors = _cv2_rgb2gray((rgb * 255).astype(np.uint8).transpose(1, 2, 0))
    assert np.abs(authors - ref).mean() <= 0.01  # grey levels: identical but for a few pixels
    # our float output (no truncation to 8 bits) within one grey level
    assert np.abs(fused * 255 - ref).mean() <= 1.0
    assert fused.min() >= 0.0 and fused.max() <= 1.0


@needs_peers
def test_matr_reproduces_the_authors_spect_mri_result():
    samples = PEERS / "matr" / "samples"
    model = MATRFusion(PEERS / PEER_WEIGHTS["matr"])
    mri, spect = _grey(samples / "SPECT-MRI_MRI.bmp"), _grey(samples / "SPECT-MRI_SPECT.bmp")
    with torch.inference_mode():
        raw = model.forward_raw(_pair(mri, spect))[0, 0].numpy().astype(np.float64)  # our order: (MRI, SPECT)
        fused = model(_pair(mri, spect))[0, 0].numpy().astype(np.float64)
    ref_rgb = np.asarray(Image.open(samples / "SPECT-MRI_fused_020.bmp"), dtype=np.float64)  # colour result
    ref_y = ref_rgb @ LUMA
    # the authors' Test.py: (out * 255).astype(uint8); their colour result's BT.601 luma is that Y
    assert np.abs((raw * 255).astype(np.int64) - ref_y).mean() <= 0.3
    assert np.abs(fused * 255 - ref_y).mean() <= 1.0
    # colour through YCbCr: our fused Y with the SPECT's Cb, Cr gives their colour image within one grey level
    spect_rgb = torch.from_numpy(np.asarray(Image.open(samples / "SPECT-MRI_SPECT.bmp"), dtype=np.float32) / 255)
    ycc = rgb_to_ycbcr(spect_rgb.permute(2, 0, 1))
    ycc[0] = torch.from_numpy((raw * 255).astype(np.int64) / 255.0)
    rgb = (ycbcr_to_rgb(ycc).clamp(0, 1) * 255).round().permute(1, 2, 0).numpy()
    assert np.abs(rgb - ref_rgb).mean() <= 1.0


@needs_peers
def test_peers_follow_the_evaluation_interface():
    from fusionmamba_med.evaluation import fuse_pair, network_method

    samples = PEERS / "matr" / "samples"
    item = {"name": "020", "a": str(samples / "SPECT-MRI_MRI.bmp"), "b": str(samples / "SPECT-MRI_SPECT.bmp")}
    res = fuse_pair(item, {k: network_method(m) for k, m in peer_methods(PEERS).items()})
    assert set(res["fused"]) == {"ifcnn_max", "matr"}
    ref_y = np.asarray(Image.open(samples / "SPECT-MRI_fused_020.bmp"), dtype=np.float64) @ LUMA
    matr = res["fused"]["matr"][0].numpy().astype(np.float64)
    assert np.abs(matr * 255 - ref_y).mean() <= 1.0  # our float BT.601 luma input instead of PIL's 8-bit "L"
    assert res["colour"]["matr"].shape[0] == 3  # colour restored from the SPECT
    for y in res["fused"].values():
        assert y.shape == (1, 256, 256) and float(y.min()) >= 0.0 and float(y.max()) <= 1.0


def test_ports_follow_the_network_contract_without_weights():
    torch.manual_seed(0)
    image = torch.rand(2, 2, 20, 28)  # MATR's authors assume square images; the port does not
    for model in (IFCNNMaxFusion(), MATRFusion(), MATRFusion(functional="a")):
        with torch.inference_mode():
            pred = model(image)
        assert pred.shape == (2, 1, 20, 28) and pred.dtype == image.dtype
        assert float(pred.min()) >= 0.0 and float(pred.max()) <= 1.0
        with pytest.raises(ValueError, match=r"\[N, 2, H, W\]"):
            model(torch.rand(1, 3, 8, 8))
    # IFCNN-MAX is symmetric in its sources
    ifcnn = IFCNNMaxFusion()
    with torch.inference_mode():
        torch.testing.assert_close(ifcnn(image), ifcnn(image.flip(1)))
    with pytest.raises(ValueError, match="functional"):
        MATRFusion(functional="c")


def test_a_wrong_state_dict_raises_a_clear_error(tmp_path):
    torch.save(IFCNN().state_dict(), tmp_path / "ifcnn.pth")
    torch.save(MATR().state_dict(), tmp_path / "matr.pth")
    with pytest.raises(WeightsError, match=r"does not fit MATR: .*missing"):
        MATRFusion(tmp_path / "ifcnn.pth")
    with pytest.raises(WeightsError, match="does not fit IFCNN"):
        IFCNNMaxFusion(tmp_path / "matr.pth")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(WeightsError, match="not hold a state dict"):
        IFCNNMaxFusion(tmp_path / "list.pth")
    with pytest.raises(WeightsError, match="not found"):
        MATRFusion(tmp_path / "absent.pth")
    # own state dicts load (IFCNN's published file lacks the batch-norm counters: also accepted)
    state = {k: v for k, v in IFCNN().state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "old.pth")
    IFCNNMaxFusion(tmp_path / "old.pth")
    MATRFusion(tmp_path / "matr.pth")


def test_peer_methods_takes_what_the_folder_holds(tmp_path):
    assert peer_methods(tmp_path) == {}
    (tmp_path / "matr").mkdir()
    torch.save(MATR().state_dict(), tmp_path / PEER_WEIGHTS["matr"])
    found = peer_methods(tmp_path, task="gfp_pc")
    assert list(found) == ["matr"] and found["matr"].functional == "a"
    assert peer_methods(tmp_path, task="ct_mri")["matr"].functional == "b"
