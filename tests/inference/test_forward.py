"""run_network: no gradients, plain float32 input, inferer or plain call, output shape checked, result on CPU."""

import os

import pytest
import torch
from monai.data import MetaTensor
from monai.inferers import SliceInferer

from fusionmamba_med.inference.forward import fuse_cpu_threads, fuse_slices_in_threads, run_network


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


class BatchSeen(torch.nn.Module):
    """Records the slices of each batch it is called with, and how many torch threads it ran under."""

    def __init__(self):
        super().__init__()
        self.calls: list[tuple[int, int]] = []

    def forward(self, x):
        self.calls.append((x.shape[0], torch.get_num_threads()))
        return x[:, :1] * 2.0 + x[:, 1:]


def test_slice_batches_are_fused_in_threads_as_the_inferer_would_batch_them():
    volume = torch.rand(1, 2, 6, 5, 10)
    net = BatchSeen()
    inferer = SliceInferer(spatial_dim=2, roi_size=[-1, -1], sw_batch_size=4)
    threads_before = torch.get_num_threads()
    out = fuse_slices_in_threads(lambda part, inf: run_network(net, part, "cpu", inferer=inf, move_batch=False),
                                 volume, inferer, threads=3)
    torch.testing.assert_close(out, volume[:, :1] * 2.0 + volume[:, 1:])
    assert sorted(n for n, _ in net.calls) == [2, 4, 4]  # slices 0-3, 4-7, 8-9: the inferer's own batches
    assert {t for _, t in net.calls} == {1} and torch.get_num_threads() == threads_before


def test_the_tiny_network_gives_the_same_bits_whatever_the_thread_count():
    from fusionmamba_med.networks import build_fusionmamba

    torch.manual_seed(0)
    net = build_fusionmamba(preset="tiny").eval()
    volume = torch.rand(1, 2, 32, 32, 7)
    inferer = SliceInferer(spatial_dim=2, roi_size=[-1, -1], sw_batch_size=2)

    def fuse(part, inf):
        return run_network(net, part, "cpu", inferer=inf, move_batch=False)

    one, three = (fuse_slices_in_threads(fuse, volume, inferer, threads=k) for k in (1, 3))
    assert torch.equal(one, three)


def test_fuse_cpu_threads_counts_the_usable_cores():
    assert 1 <= fuse_cpu_threads() <= (os.cpu_count() or 1)
