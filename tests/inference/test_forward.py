"""run_network: no gradients, plain float32 input, inferer or plain call, output shape checked, result on CPU."""

import pytest
import torch
from monai.data import MetaTensor
from monai.inferers import SliceInferer

from fusionmamba_med.inference.forward import run_network


class Mean(torch.nn.Module):
    def forward(self, x):
        assert not torch.is_grad_enabled() and x.dtype == torch.float32 and not isinstance(x, MetaTensor)
        return x.mean(dim=1, keepdim=True)


def test_plain_call_and_inferer_give_the_same_result():
    images = torch.rand(3, 2, 5, 6, dtype=torch.float64)
    pred = run_network(Mean(), images, "cpu")
    assert pred.shape == (3, 1, 5, 6) and pred.dtype == torch.float32 and pred.device.type == "cpu"
    volume = MetaTensor(torch.rand(1, 2, 5, 6, 4))
    inferer = SliceInferer(spatial_dim=2, roi_size=[-1, -1], sw_batch_size=2)
    sliced = run_network(Mean(), volume, "cpu", inferer=inferer, amp=True, move_batch=False)  # amp: CUDA only
    torch.testing.assert_close(sliced, volume.as_tensor().mean(dim=1, keepdim=True))


def test_a_wrong_output_shape_is_an_error():
    with pytest.raises(RuntimeError, match=r"gave \(1, 2, 5, 6\)"):
        run_network(torch.nn.Identity(), torch.rand(1, 2, 5, 6))
