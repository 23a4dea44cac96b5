"""FusionMamba: shapes, determinism, gradients, CPU backend, weights round trip."""

import pytest
import torch

from fusionmamba_med.errors import WeightsError
from fusionmamba_med.networks import PRESETS, FusionMamba, build_fusionmamba, fusionmamba_from_weights, load_weights
from fusionmamba_med.networks.blocks import EfficientScan2D
from fusionmamba_med.ops import scan as scan_module


def small_net(**kw) -> FusionMamba:
    """A very small FusionMamba for fast tests (same code path as the presets)."""
    return FusionMamba(embed_dim=8, depths=(1, 1, 1, 1), d_state=4, **kw)


@pytest.mark.parametrize("size", [(32, 32), (45, 67), (181, 217), (7, 9)])
def test_any_size_gives_same_size_output(size):
    net = small_net().eval()
    x = torch.rand(2, 2, *size)
    with torch.no_grad():
        y = net(x)
    assert y.shape == (2, 1, *size) and y.dtype == torch.float32
    assert 0.0 <= y.min() and y.max() <= 1.0  # clamped in eval mode


@pytest.mark.parametrize("residual", ["mean", "blend"])
def test_meta_tensor_input_fuses_like_a_plain_tensor(residual):
    """MONAI pipelines hand networks MetaTensors (e.g. a bundle's inferer after EnsureTyped with track_meta)."""
    from monai.data import MetaTensor

    net = small_net(residual=residual).eval()
    x = torch.rand(1, 2, 36, 44)
    with torch.no_grad():
        y = net(MetaTensor(x))
        assert torch.equal(torch.as_tensor(y), net(x))


def test_rejects_wrong_channel_count():
    with pytest.raises(ValueError, match=r"\[N, 2, H, W\]"):
        small_net()(torch.rand(1, 3, 32, 32))


def test_eval_mode_is_deterministic():
    net = small_net(drop_path_rate=0.2).eval()
    x = torch.rand(1, 2, 40, 40)
    with torch.no_grad():
        assert torch.equal(net(x), net(x))


@pytest.mark.parametrize("residual", ["mean", "blend"])
def test_gradients_reach_every_parameter(residual):
    torch.manual_seed(0)
    net = small_net(residual=residual).train()
    if residual == "blend":  # its zero last conv (a "mean" start) passes no gradient back until it has moved
        torch.nn.init.normal_(net.blend[-1].weight, std=0.1)
    x = torch.rand(2, 2, 128, 128)  # deepest level 4x4: every scan sequence has more than one step
    net(x).square().mean().backward()
    missing = [name for name, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    zero = [name for name, p in net.named_parameters() if p.grad.abs().sum() == 0]
    assert not zero


def test_cpu_forward_uses_the_torch_scan(monkeypatch):
    used = []
    real = scan_module.resolve_backend

    def spy(backend="auto", device="cpu"):
        name = real(backend, device)
        used.append(name)
        return name

    monkeypatch.setattr(scan_module, "resolve_backend", spy)
    with torch.no_grad():
        small_net().eval()(torch.rand(1, 2, 32, 32))
    assert used and set(used) == {"torch"}


def test_torch_and_ref_backends_give_the_same_fusion():
    torch.manual_seed(0)
    net_t = small_net(scan_backend="torch").eval()
    net_r = small_net(scan_backend="ref").eval()
    net_r.load_state_dict(net_t.state_dict())
    x = torch.rand(1, 2, 48, 40)
    with torch.no_grad():
        assert torch.allclose(net_t(x), net_r(x), atol=1e-5)


def test_scan_and_merge_are_inverse():
    x = torch.arange(2 * 3 * 6 * 8, dtype=torch.float32).view(2, 3, 6, 8)
    seq = EfficientScan2D.scan_sequences(x)
    assert seq.shape == (2, 4, 3, 12)
    assert torch.equal(EfficientScan2D.merge_sequences(seq, 6, 8), x)


def test_residual_modes():
    x = torch.rand(1, 2, 32, 32)
    for mode in ("none", "mean", "original", "blend"):
        with torch.no_grad():
            assert small_net(residual=mode).eval()(x).shape == (1, 1, 32, 32)
    with pytest.raises(ValueError):
        small_net(residual="double")


def test_blend_starts_as_the_mean_network_it_was_loaded_from(tmp_path):
    """A zero blend conv gives w = 0.5: "mean" weights start a "blend" network at exactly their own output."""
    torch.manual_seed(2)
    mean_net = small_net(residual="mean").eval()
    path = tmp_path / "mean.pt"
    torch.save(mean_net.state_dict(), path)
    with pytest.raises(WeightsError, match="blend"):  # strict by default
        load_weights(small_net(residual="blend"), path)
    blend_net = load_weights(small_net(residual="blend"), path, keep_missing=("blend.",)).eval()
    x = torch.rand(2, 2, 48, 40)
    with torch.no_grad():
        assert torch.allclose(blend_net(x), mean_net(x), atol=1e-6)


def test_blend_passes_the_chosen_source_at_full_resolution():
    """With the head's own output at zero, the fused image is w A + (1 - w) B pixel for pixel: a weight saturated
    towards A returns A's finest detail (a one-pixel checkerboard) unchanged, towards B returns B."""
    net = small_net(residual="blend").eval()
    with torch.no_grad():
        net.head.weight.zero_()
        net.head.bias.zero_()
    a = (torch.arange(40)[:, None] + torch.arange(36)[None, :]).remainder(2).float() * 0.8 + 0.1  # checkerboard
    b = torch.rand(40, 36)
    x = torch.stack([a, b])[None]
    for bias, expected in ((30.0, a), (-30.0, b)):
        with torch.no_grad():
            net.blend[-1].bias.fill_(bias)
            assert torch.allclose(net(x)[0, 0], expected, atol=1e-6)


def test_network_from_weights_reads_the_residual_mode(tmp_path):
    for residual in ("mean", "blend"):
        path = tmp_path / f"{residual}.pt"
        torch.save(build_fusionmamba("tiny", residual=residual).state_dict(), path)
        assert fusionmamba_from_weights(path).residual == residual


def test_state_dict_round_trip(tmp_path):
    torch.manual_seed(1)
    net = small_net().eval()
    path = tmp_path / "model.pt"
    torch.save(net.state_dict(), path)
    other = load_weights(small_net().eval(), path)
    x = torch.rand(1, 2, 33, 35)
    with torch.no_grad():
        assert torch.equal(net(x), other(x))


def test_wrong_preset_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(small_net().state_dict(), path)
    with pytest.raises(WeightsError, match="does not fit"):
        load_weights(build_fusionmamba("tiny"), path)


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"net": small_net()}, path)  # a whole pickled module, not a state dict
    with pytest.raises(WeightsError, match="weights_only"):
        load_weights(small_net(), path)


def test_ddp_prefix_and_sub_key(tmp_path):
    net = small_net()
    path = tmp_path / "ckpt.pt"
    torch.save({"model": {f"module.{k}": v for k, v in net.state_dict().items()}, "iteration": 5}, path)
    load_weights(small_net(), path, key="model")


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_build_and_fuse(preset):
    net = build_fusionmamba(preset).eval()
    with torch.no_grad():
        y = net(torch.rand(1, 2, 181, 217) if preset == "tiny" else torch.rand(1, 2, 64, 64))
    assert y.shape[1] == 1
    assert net.preset == preset


def test_load_network_compiles_on_request(tmp_path):
    """torch.compile is opt-in (it measurably speeds up CPU inference but costs minutes to compile)."""
    from fusionmamba_med.networks import load_network

    net = build_fusionmamba("tiny")
    torch.save(net.state_dict(), tmp_path / "model.pt")
    plain = load_network(build_fusionmamba("tiny"), tmp_path / "model.pt")
    compiled = load_network(build_fusionmamba("tiny"), tmp_path / "model.pt", compile=True)
    assert not plain.training and plain.__class__.__name__ == "FusionMamba"
    assert compiled.__class__.__name__ == "OptimizedModule" and compiled._orig_mod.__class__.__name__ == "FusionMamba"
