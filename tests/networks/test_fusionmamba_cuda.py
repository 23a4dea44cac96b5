"""FusionMamba on a CUDA device gives the CPU result (skips without a GPU; CI has none)."""

from pathlib import Path

import pytest
import torch

from fusionmamba_med.networks import build_fusionmamba, fusionmamba_from_weights
from fusionmamba_med.ops import mamba_ssm_available

SHIPPED = Path(__file__).resolve().parents[2] / "bundles" / "ct_mri" / "models" / "model.pt"


def shipped(backend: str = "auto"):
    """The medical bundles' shipped tiny model (trained weights, so outputs are realistic, not saturated noise)."""
    return fusionmamba_from_weights(SHIPPED, scan_backend=backend).eval()


pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("backend", ["torch", pytest.param("cuda", marks=pytest.mark.skipif(
    not mamba_ssm_available(), reason="needs mamba-ssm"))])
def test_gpu_fusion_matches_cpu(backend):
    torch.manual_seed(0)
    cpu = shipped("ref")
    gpu = shipped(backend).cuda()
    x = torch.rand(2, 2, 96, 80)
    with torch.no_grad():
        ref = cpu(x)
        out = gpu(x.cuda()).cpu()
    assert (out - ref).abs().max() < 1e-4


@pytest.mark.parametrize("dtype, grey_levels", [(torch.bfloat16, 3), (torch.float16, 2)])
def test_gpu_autocast_stays_close(dtype, grey_levels):
    """bf16 / fp16 autocast (the bundles' ``amp`` option) changes the fused image by at most a few grey levels of 255.

    Measured on an H100 with the shipped weights: bf16 max deviation 0.0080 (2.0 grey levels; bf16 keeps 8 mantissa
    bits), fp16 below 2 grey levels."""
    torch.manual_seed(0)
    net = shipped().cuda()
    x = torch.rand(1, 2, 128, 128, device="cuda")
    with torch.no_grad():
        ref = net(x)
        with torch.autocast("cuda", dtype=dtype):
            out = net(x)
    assert out.dtype in (torch.float32, dtype)
    assert (out.float() - ref).abs().max() < grey_levels / 255


def test_gpu_training_step_is_finite():
    torch.manual_seed(0)
    net = build_fusionmamba("tiny").train().cuda()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    x = torch.rand(2, 2, 64, 64, device="cuda")
    loss = net(x).square().mean()
    loss.backward()
    opt.step()
    assert torch.isfinite(loss) and all(torch.isfinite(p).all() for p in net.parameters())
