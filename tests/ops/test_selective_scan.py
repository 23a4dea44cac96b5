"""The pure-PyTorch selective scan matches the sequential reference, forward and backward."""

import pytest
import torch

from fusionmamba_med.ops import available_backends, resolve_backend, selective_scan

CASES = [
    # b, d, l, n, groups (None = ungrouped B/C), with_D, with_z, with_bias, softplus
    (2, 8, 37, 4, None, True, True, True, True),
    (1, 16, 100, 16, 4, True, False, True, True),
    (3, 6, 1, 3, None, False, False, False, False),
    (1, 12, 257, 8, 3, False, True, False, True),
    (2, 4, 64, 16, 2, True, True, True, False),
]


def _inputs(b, d, l, n, groups, with_D, with_z, with_bias, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(b, d, l, generator=g)
    delta = torch.randn(b, d, l, generator=g) * 0.5
    A = -torch.rand(d, n, generator=g) * 4 - 0.1
    shape = (b, groups, n, l) if groups else (b, n, l)
    B = torch.randn(*shape, generator=g)
    C = torch.randn(*shape, generator=g)
    D = torch.randn(d, generator=g) if with_D else None
    z = torch.randn(b, d, l, generator=g) if with_z else None
    bias = torch.randn(d, generator=g) * 0.5 if with_bias else None
    tensors = [u.to(dtype), delta.to(dtype), A, B.to(dtype), C.to(dtype), D, None if z is None else z.to(dtype), bias]
    return tensors


def _rel(a, b):
    return ((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-12)).item()


@pytest.mark.parametrize("grad", [False, True], ids=["inference", "autograd"])
@pytest.mark.parametrize("case", CASES)
def test_torch_forward_matches_ref(case, grad):
    """Both code paths of the torch backend: in-place (no autograd) and out-of-place (inputs require grad)."""
    *shape, softplus = case
    u, delta, A, B, C, D, z, bias = _inputs(*shape)
    ref, ref_state = selective_scan(u, delta, A, B, C, D, z, bias, softplus, return_last_state=True, backend="ref")
    with torch.set_grad_enabled(grad):
        out, state = selective_scan(u.requires_grad_(grad), delta, A, B, C, D, z, bias, softplus,
                                    return_last_state=True, backend="torch")
    assert out.requires_grad == grad
    assert out.shape == u.shape and out.dtype == u.dtype
    assert _rel(out, ref) < 1e-4
    assert _rel(state, ref_state) < 1e-4


@pytest.mark.parametrize("chunk_size", [1, 5, 64, 1000])
def test_chunk_size_does_not_change_the_result(chunk_size):
    u, delta, A, B, C, D, z, bias = _inputs(2, 8, 150, 4, 2, True, True, True)
    ref, ref_state = selective_scan(u, delta, A, B, C, D, z, bias, True, return_last_state=True, backend="ref")
    with torch.no_grad():
        out, state = selective_scan(u, delta, A, B, C, D, z, bias, True, return_last_state=True, backend="torch",
                                    chunk_size=chunk_size)
    assert _rel(out, ref) < 1e-4 and _rel(state, ref_state) < 1e-4


@pytest.mark.parametrize("case", CASES)
def test_torch_gradients_match_ref(case):
    *shape, softplus = case
    grads = {}
    for backend in ("ref", "torch"):
        tensors = _inputs(*shape)
        leaves = [t.requires_grad_() if t is not None else None for t in tensors]
        out = selective_scan(*leaves[:7], delta_bias=leaves[7], delta_softplus=softplus, backend=backend)
        weight = torch.linspace(-1, 1, out.numel()).view_as(out)
        (out * weight).sum().backward()
        grads[backend] = [t.grad for t in leaves if t is not None]  # every input gets a gradient (l == 1 too)
    for g_torch, g_ref in zip(grads["torch"], grads["ref"]):
        assert _rel(g_torch, g_ref) < 1e-4


def test_bfloat16_inputs():
    """bf16 in, bf16 out; both backends compute in float32, so they agree to bf16 resolution (2^-8)."""
    u, delta, A, B, C, D, z, bias = _inputs(2, 8, 70, 8, 2, True, True, True, dtype=torch.bfloat16)
    ref = selective_scan(u, delta, A, B, C, D, z, bias, True, backend="ref")
    out = selective_scan(u, delta, A, B, C, D, z, bias, True, backend="torch")
    assert out.dtype == torch.bfloat16
    assert _rel(out, ref) < 2**-7
    # against a float32 run on the same (bf16-rounded) values, the float32 outputs agree to 1e-4
    f32 = [t.float() if t is not None else None for t in (u, delta, A, B, C, D, z, bias)]
    ref32 = selective_scan(*f32[:7], delta_bias=f32[7], delta_softplus=True, backend="ref")
    out32 = selective_scan(*f32[:7], delta_bias=f32[7], delta_softplus=True, backend="torch")
    assert _rel(out32, ref32) < 1e-4


def test_bfloat16_gradients():
    grads = {}
    for backend in ("ref", "torch"):
        tensors = _inputs(1, 8, 45, 4, None, True, False, True, dtype=torch.bfloat16)
        u, delta = tensors[0].requires_grad_(), tensors[1].requires_grad_()
        out = selective_scan(u, delta, *tensors[2:7], delta_bias=tensors[7], delta_softplus=True, backend=backend)
        out.float().sum().backward()
        grads[backend] = (u.grad, delta.grad)
    for a, b in zip(grads["torch"], grads["ref"]):
        assert _rel(a, b) < 2**-6


def test_long_sequence_is_stable():
    """Strong decay over thousands of steps: no overflow, no NaN (only products of decays are formed)."""
    u, delta, A, B, C, D, z, bias = _inputs(1, 4, 3000, 4, None, True, False, True)
    A = A * 20
    ref = selective_scan(u, delta * 4, A, B, C, D, None, bias, True, backend="ref")
    out = selective_scan(u, delta * 4, A, B, C, D, None, bias, True, backend="torch")
    assert torch.isfinite(out).all()
    assert _rel(out, ref) < 1e-4


def test_backend_choice_is_queryable():
    assert resolve_backend("auto", "cpu") == "torch"
    assert "torch" in available_backends("cpu") and "cuda" not in available_backends("cpu")
    with pytest.raises(ValueError):
        resolve_backend("cuda", "cpu")
    with pytest.raises(ValueError):
        resolve_backend("bogus", "cpu")


def test_group_mismatch_is_an_error():
    u, delta, A, B, C, D, z, bias = _inputs(1, 6, 10, 4, None, False, False, False)
    with pytest.raises(ValueError):
        selective_scan(u, delta, A, torch.randn(1, 4, 4, 10), torch.randn(1, 4, 4, 10), backend="torch")


def test_cache_blocks_do_not_change_the_result():
    """The CPU backend splits big scans into blocks of (batch item, channel group) rows; the split is invisible."""
    from fusionmamba_med.ops.scan import _selective_scan_chunked

    u, delta, A, B, C, D, z, bias = _inputs(3, 12, 140, 4, 4, True, True, True)
    ref, ref_state = selective_scan(u, delta, A, B, C, D, z, bias, True, return_last_state=True, backend="ref")
    for grad in (False, True):
        with torch.set_grad_enabled(grad):
            out, state = _selective_scan_chunked(u.requires_grad_(grad), delta, A, B, C, D, z, bias, True,
                                                 return_last_state=True, block_elements=200)
        assert _rel(out, ref) < 1e-4 and _rel(state, ref_state) < 1e-4
