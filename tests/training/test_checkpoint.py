"""Checkpoint files: the newest one for resuming, and plain CPU weights that the inference bundles load."""

import pytest
import torch
import torch.nn as nn

from fusionmamba_med.networks import build_fusionmamba, load_weights
from fusionmamba_med.training import export_weights, latest_checkpoint, resolve_resume, unwrap_network


def _touch(folder, *names):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"x")


def test_latest_checkpoint_picks_the_highest_iteration(tmp_path):
    assert latest_checkpoint(tmp_path / "missing") is None
    _touch(tmp_path, "checkpoint_iteration=900.pt", "checkpoint_iteration=1000.pt", "checkpoint_final_iteration=950.pt",
           "model_best.pt", "notes.txt")
    assert latest_checkpoint(tmp_path).endswith("checkpoint_iteration=1000.pt")  # numeric, not lexical order
    _touch(tmp_path, "checkpoint_final_iteration=1003.pt")
    assert latest_checkpoint(tmp_path).endswith("checkpoint_final_iteration=1003.pt")


def test_resolve_resume(tmp_path):
    assert resolve_resume(False, tmp_path) is None
    assert resolve_resume(True, tmp_path) is None  # nothing saved yet: start fresh
    _touch(tmp_path, "checkpoint_iteration=2.pt")
    assert resolve_resume(True, tmp_path).endswith("checkpoint_iteration=2.pt")
    assert resolve_resume(str(tmp_path / "checkpoint_iteration=2.pt"), "elsewhere").endswith("=2.pt")
    with pytest.raises(FileNotFoundError):
        resolve_resume(str(tmp_path / "nope.pt"), tmp_path)


def test_exported_weights_load_strictly_into_a_fresh_network(tmp_path):
    torch.manual_seed(0)
    trained = build_fusionmamba("tiny")
    path = export_weights(nn.parallel.DataParallel(trained), tmp_path / "models" / "model.pt")  # wrapper unwrapped

    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]  # no temporary file left behind
    state = torch.load(path, weights_only=True)
    assert all(v.device.type == "cpu" for v in state.values())
    assert not any(k.startswith("module.") for k in state)
    torch.manual_seed(1)
    fresh = build_fusionmamba("tiny")
    key = next(iter(state))
    assert not torch.equal(fresh.state_dict()[key], state[key])
    load_weights(fresh, path)
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in state.items())


def test_unwrap_network():
    net = nn.Linear(2, 2)
    assert unwrap_network(net) is net
    assert unwrap_network(nn.DataParallel(net)) is net


def test_half_precision_export_loads_into_the_float32_network(tmp_path):
    import torch

    from fusionmamba_med.networks import build_fusionmamba, load_weights
    from fusionmamba_med.training.checkpoint import export_weights

    net = build_fusionmamba("tiny").eval()
    path = export_weights(net, tmp_path / "model.pt", dtype=torch.float16)
    stored = torch.load(path, weights_only=True)
    assert all(v.dtype == torch.float16 for v in stored.values() if v.is_floating_point())
    other = load_weights(build_fusionmamba("tiny"), path).eval()
    assert next(other.parameters()).dtype == torch.float32
    x = torch.rand(1, 2, 64, 64)
    with torch.no_grad():
        assert (net(x) - other(x)).abs().max() < 5e-3


def test_interpolate_weights():
    import pytest
    import torch

    from fusionmamba_med.training import interpolate_weights

    a = {"w": torch.zeros(2, 3), "n": torch.tensor(1)}
    b = {"w": torch.full((2, 3), 4.0, dtype=torch.float16), "n": torch.tensor(7)}
    out = interpolate_weights(a, b, 0.25)
    assert torch.allclose(out["w"], torch.full((2, 3), 1.0)) and out["w"].dtype == torch.float32
    assert out["n"].item() == 7  # integer buffers are taken from the end point
    assert torch.equal(interpolate_weights(a, b, 0.0)["w"], a["w"])
    with pytest.raises(ValueError, match="keys"):
        interpolate_weights(a, {"w": b["w"]}, 0.5)
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        interpolate_weights(a, b, 1.5)
    # a "mean" network's weights interpolate to a "blend" one's: its missing blend conv counts as zero
    blend = {**b, "blend.weight": torch.full((1, 2), 2.0), "blend.bias": torch.ones(1)}
    mid = interpolate_weights(a, blend, 0.5)
    assert torch.allclose(mid["blend.weight"], torch.ones(1, 2))
    assert torch.allclose(mid["blend.bias"], torch.tensor([0.5]))


def test_average_weights_is_the_mean_of_checkpoints():
    import pytest
    import torch

    from fusionmamba_med.training import average_weights

    states = [{"w": torch.full((2,), v, dtype=torch.float16), "n": torch.tensor(int(v))} for v in (1.0, 2.0, 6.0)]
    out = average_weights(states)
    assert torch.allclose(out["w"], torch.full((2,), 3.0)) and out["w"].dtype == torch.float32
    assert out["n"].item() == 6  # integer buffers from the last
    assert states[0]["w"][0].item() == 1.0  # inputs untouched
    with pytest.raises(ValueError, match="keys"):
        average_weights([states[0], {"w": states[1]["w"]}])
    with pytest.raises(ValueError, match="shapes"):
        average_weights([states[0], {"w": torch.zeros(3), "n": torch.tensor(0)}])
    with pytest.raises(ValueError, match="at least one"):
        average_weights([])


def test_max_rule_blend_start_is_a_soft_max_rule():
    import pytest
    import torch

    from fusionmamba_med.networks import FusionMamba
    from fusionmamba_med.training import max_rule_blend_start

    torch.manual_seed(3)
    net = max_rule_blend_start(FusionMamba(embed_dim=8, depths=(1, 1, 1, 1), d_state=4, residual="blend"), 10.0)
    x = torch.rand(2, 2, 40, 44)
    a, b = x[:, 0:1], x[:, 1:2]
    w = torch.sigmoid(10.0 * (a - b))
    with torch.no_grad():
        y = net.eval()(x)
    assert torch.allclose(y, w * a + (1 - w) * b, atol=1e-6)
    assert (y - torch.maximum(a, b)).abs().mean() < (0.5 * (a + b) - torch.maximum(a, b)).abs().mean() / 2
    with pytest.raises(ValueError, match="blend"):
        max_rule_blend_start(FusionMamba(embed_dim=8, depths=(1, 1, 1, 1), d_state=4, residual="mean"))


def test_max_rule_blend_start_smooth_decides_on_binomially_smoothed_sources():
    import torch
    import torch.nn.functional as F

    from fusionmamba_med.networks import FusionMamba
    from fusionmamba_med.training import max_rule_blend_start

    torch.manual_seed(4)
    net = max_rule_blend_start(FusionMamba(embed_dim=8, depths=(1, 1, 1, 1), d_state=4, residual="blend"), 6.0,
                               smooth=True)
    x = torch.rand(2, 2, 36, 40)
    a, b = x[:, 0:1], x[:, 1:2]
    kernel = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]).view(1, 1, 3, 3) / 16.0
    smoothed = F.conv2d(a - b, kernel, padding=1)  # zero padding, as the branch's convolution
    w = torch.sigmoid(6.0 * smoothed)
    with torch.no_grad():
        y = net.eval()(x)
    assert torch.allclose(y, w * a + (1 - w) * b, atol=1e-6)
    pixel_w = torch.sigmoid(6.0 * (a - b))
    assert not torch.allclose(y, pixel_w * a + (1 - pixel_w) * b, atol=1e-3)  # not the pixel rule
