"""Optimiser parameter groups: the blend conv of a "blend" network trains at a multiple of the base rate."""

import torch
from torch import nn

from fusionmamba_med.networks import FusionMamba
from fusionmamba_med.training import parameter_groups


def test_prefix_scaled_group_and_the_rest():
    net = FusionMamba(embed_dim=8, depths=(1, 1, 1, 1), d_state=4, residual="blend")
    groups = parameter_groups(net, 1e-4, {"blend.": 25.0})
    by_lr = {g["lr"]: g["params"] for g in groups}
    assert set(by_lr) == {1e-4, 2.5e-3}
    assert {id(p) for p in by_lr[2.5e-3]} == {id(p) for p in net.blend.parameters()}
    assert sum(len(p) for p in by_lr.values()) == len(list(net.parameters()))
    # Adam moves the scaled parameters 25x further in one step from the same start
    opt = torch.optim.Adam(groups)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    net.train()(torch.rand(2, 2, 32, 32)).mean().backward()
    opt.step()
    step = {n: (p.detach() - before[n]).abs().max().item() for n, p in net.named_parameters()}
    assert abs(step["blend.2.bias"] - 2.5e-3) < 1e-6 and abs(step["head.bias"] - 1e-4) < 1e-7


def test_no_match_is_one_group_and_ddp_names_are_unwrapped():
    net = nn.Sequential(nn.Linear(2, 2))
    assert [g["lr"] for g in parameter_groups(net, 0.1, {"blend.": 5.0})] == [0.1]
    groups = parameter_groups(nn.DataParallel(net), 0.1, {"0.bias": 2.0})
    assert sorted(g["lr"] for g in groups) == [0.1, 0.2]
