"""Selective scan (the Mamba S6 recurrence) with interchangeable backends.

``selective_scan`` has the semantics of ``mamba_ssm.ops.selective_scan_interface.selective_scan_fn``:

    delta_t = softplus(delta_t + delta_bias)            (if delta_softplus)
    h_t     = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t
    y_t     = sum_n C_t[n] * h_t[n] + D * u_t
    out     = y * silu(z)                               (if z is given)

Shapes: ``u``, ``delta``, ``z``: (b, d, l); ``A``: (d, n); ``B``, ``C``: (b, n, l) or grouped (b, g, n, l) with
``d % g == 0`` (channel ``c`` uses group ``c // (d // g)``); ``D``, ``delta_bias``: (d,).

Backends:
- ``"cuda"``: mamba_ssm's fused kernel (only when mamba_ssm imports and the tensors are on a CUDA device).
- ``"torch"``: a chunked two-level scan in pure PyTorch (CPU, or GPU without mamba_ssm). The sequence is cut into
  ``nc`` chunks of ``T ~ sqrt(l)`` steps; a loop of ``T`` steps scans all chunks at once, a loop of ``nc`` steps
  carries the state across chunks, and one vectorised correction adds the carried state back. That is ``T + nc``
  (about ``2 sqrt(l)``) small steps instead of ``l``, with only products of decays (never divisions), so it is as
  stable in float32 as the sequential loop. Autograd gives the backward.
- ``"ref"``: the plain sequential loop over ``l``, kept as the test oracle.
- ``"auto"``: ``"cuda"`` where possible, else ``"torch"``; the choice is logged once per device type and can be
  queried with :func:`resolve_backend`.

All backends compute in float32 and return ``out`` in ``u``'s dtype, like mamba_ssm.
"""

from __future__ import annotations

import logging
import math
from typing import Literal

import torch
import torch.nn.functional as F

__all__ = ["selective_scan", "resolve_backend", "available_backends", "mamba_ssm_available", "BACKENDS"]

logger = logging.getLogger("fusionmamba_med")

Backend = Literal["auto", "cuda", "torch", "ref"]
BACKENDS = ("auto", "cuda", "torch", "ref")

_mamba_fn = None
_mamba_checked = False
_logged_choice: set[str] = set()


def _load_mamba():
    global _mamba_fn, _mamba_checked
    if not _mamba_checked:
        _mamba_checked = True
        try:  # optional extra: pip install "fusionmamba-med[cuda]" on a CUDA machine
            from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

            _mamba_fn = selective_scan_fn
        except Exception:  # ImportError, or a CUDA library mismatch at import time
            _mamba_fn = None
    return _mamba_fn


def mamba_ssm_available() -> bool:
    """True when mamba_ssm's CUDA selective scan can be imported."""
    return _load_mamba() is not None


def available_backends(device: torch.device | str = "cpu") -> list[str]:
    """Backends that can run on ``device`` ("ref" and "torch" always can)."""
    device = torch.device(device)
    found = ["torch", "ref"]
    if device.type == "cuda" and mamba_ssm_available():
        found.insert(0, "cuda")
    return found


def resolve_backend(backend: Backend = "auto", device: torch.device | str = "cpu") -> str:
    """The concrete backend ``selective_scan`` uses for ``backend`` on ``device``."""
    device = torch.device(device)
    if backend not in BACKENDS:
        raise ValueError(f"unknown selective-scan backend {backend!r}; choose one of {BACKENDS}")
    if backend == "cuda":
        if device.type != "cuda":
            raise ValueError("selective-scan backend 'cuda' needs CUDA tensors")
        if not mamba_ssm_available():
            raise ImportError("selective-scan backend 'cuda' needs mamba-ssm: pip install 'fusionmamba-med[cuda]'")
        return "cuda"
    if backend != "auto":
        return backend
    chosen = "cuda" if (device.type == "cuda" and mamba_ssm_available()) else "torch"
    if device.type not in _logged_choice:
        _logged_choice.add(device.type)
        logger.info("selective_scan backend for %s tensors: %s", device.type, chosen)
    return chosen


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    backend: Backend = "auto",
    chunk_size: int | None = None,
):
    """Run the selective scan; returns ``out`` (b, d, l), and ``last_state`` (b, d, n) if asked."""
    name = resolve_backend(backend, u.device)
    if name == "cuda":
        return _load_mamba()(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    if name == "ref":
        return _selective_scan_ref(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    return _selective_scan_blocked(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, chunk_size)


def _prepare(u, delta, A, B, C, delta_bias, delta_softplus):
    """Common float32 set-up: delta after bias/softplus, and B, C as (b, g, n, l)."""
    u = u.float()
    delta = delta.float()
    if delta_bias is not None:
        delta = delta + delta_bias.float()[None, :, None]
    if delta_softplus:
        delta = F.softplus(delta)
    B = B.float()
    C = C.float()
    if B.dim() == 3:
        B = B.unsqueeze(1)
    if C.dim() == 3:
        C = C.unsqueeze(1)
    d = u.shape[1]
    if d % B.shape[1] or d % C.shape[1] or B.shape[1] != C.shape[1]:
        raise ValueError(f"channels d={d} not divisible by the groups of B {tuple(B.shape)} / C {tuple(C.shape)}")
    return u, delta, A.float(), B, C


def _finish(y, u, D, z, dtype_in):
    if D is not None:
        y = y + u * D.float()[None, :, None]
    if z is not None:
        y = y * F.silu(z.float())
    return y.to(dtype_in)


def _selective_scan_ref(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                        return_last_state=False):
    """Sequential reference: one step per token (the test oracle)."""
    dtype_in = u.dtype
    u, delta, A, B, C = _prepare(u, delta, A, B, C, delta_bias, delta_softplus)
    b, d, l = u.shape
    g = B.shape[1]
    # per-channel B, C: (b, d, n, l)
    Bc = B.repeat_interleave(d // g, dim=1)
    Cc = C.repeat_interleave(d // g, dim=1)
    dA = torch.exp(delta.unsqueeze(2) * A[None, :, :, None])  # (b, d, n, l)
    dBu = (delta * u).unsqueeze(2) * Bc
    h = u.new_zeros(b, d, A.shape[1])
    ys = []
    for t in range(l):
        h = dA[..., t] * h + dBu[..., t]
        ys.append((h * Cc[..., t]).sum(-1))
    y = torch.stack(ys, dim=-1)
    out = _finish(y, u, D, z, dtype_in)
    return (out, h) if return_last_state else out


# Elements (l * n * channels) per block of the "torch" backend: small enough that the chunked scan's temporaries
# stay in the CPU caches (about 4 MiB of float32). Measured with benchmarks/bench_scan.py.
BLOCK_ELEMENTS = 1 << 20


def _selective_scan_blocked(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                            return_last_state=False, chunk_size=None, block_elements=BLOCK_ELEMENTS):
    """Run :func:`_selective_scan_chunked` over blocks of (batch item, channel groups) and join the results."""
    b, d, l = u.shape
    g = B.shape[1] if B.dim() == 4 else 1
    n = A.shape[1]
    dg = d // g
    per = max(1, block_elements // max(1, l * n * dg))  # groups per block
    if u.device.type != "cpu" or (b == 1 and per >= g):
        return _selective_scan_chunked(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state,
                                       chunk_size)
    grouped = B.dim() == 4
    outs, states = [], []
    for bi in range(b):
        row_out, row_state = [], []
        for g0 in range(0, g, per):
            g1 = min(g, g0 + per)
            ch = slice(g0 * dg, g1 * dg)
            gs = slice(g0, g1) if grouped else slice(None)
            res = _selective_scan_chunked(
                u[bi:bi + 1, ch], delta[bi:bi + 1, ch], A[ch], B[bi:bi + 1, gs], C[bi:bi + 1, gs],
                None if D is None else D[ch], None if z is None else z[bi:bi + 1, ch],
                None if delta_bias is None else delta_bias[ch], delta_softplus, True, chunk_size,
            )
            row_out.append(res[0])
            row_state.append(res[1])
        outs.append(torch.cat(row_out, dim=1))
        states.append(torch.cat(row_state, dim=1))
    out = torch.cat(outs, dim=0)
    return (out, torch.cat(states, dim=0)) if return_last_state else out


def _default_chunk(l: int) -> int:
    """Steps per chunk: short chunks keep the per-step slabs small; see benchmarks/bench_scan.py."""
    return max(1, min(l, int(math.ceil(math.sqrt(l) / 2))))


def _selective_scan_chunked(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                            return_last_state=False, chunk_size=None):
    """Two-level chunked scan: ``T + nc`` vectorised steps instead of ``l``."""
    dtype_in = u.dtype
    u, delta, A, B, C = _prepare(u, delta, A, B, C, delta_bias, delta_softplus)
    b, d, l = u.shape
    g, n = B.shape[1], A.shape[1]
    dg = d // g
    T = chunk_size or _default_chunk(l)
    nc = -(-l // T)
    pad = nc * T - l

    # time-major layout (T, b, g, dg, nc, n) so that each loop step reads one contiguous slab
    delta_g = delta.view(b, g, dg, l)
    du = (delta * u).view(b, g, dg, l)
    if pad:
        delta_g = F.pad(delta_g, (0, pad))  # delta 0 -> decay 1, input 0: padded steps keep the state
        du = F.pad(du, (0, pad))
        B = F.pad(B, (0, pad))
        C = F.pad(C, (0, pad))
    delta_t = delta_g.view(b, g, dg, nc, T).permute(4, 0, 1, 2, 3)  # (T, b, g, dg, nc)
    du_t = du.view(b, g, dg, nc, T).permute(4, 0, 1, 2, 3)
    B_t = B.view(b, g, n, nc, T).permute(4, 0, 1, 3, 2).unsqueeze(3)  # (T, b, g, 1, nc, n)
    C_t = C.view(b, g, n, nc, T).permute(4, 0, 1, 3, 2).unsqueeze(3)
    A_g = A.view(g, dg, 1, n)

    dA = torch.exp(delta_t.unsqueeze(-1) * A_g)  # (T, b, g, dg, nc, n)
    dBu = du_t.unsqueeze(-1) * B_t

    # 1) scan inside every chunk at once, from a zero state, reading out y as we go
    h = torch.zeros_like(dBu[0])
    y_local = []
    for t in range(T):
        h = dA[t] * h + dBu[t]
        y_local.append((h * C_t[t]).sum(-1))
    y = torch.stack(y_local)  # (T, b, g, dg, nc)

    # 2) carry the state across chunks; the decay over a span is exp(A * sum(delta)) (A is constant in time)
    S = torch.cumsum(delta_t, dim=0)  # (T, b, g, dg, nc)
    chunk_decay = torch.exp(S[-1].unsqueeze(-1) * A_g)  # (b, g, dg, nc, n)
    state = torch.zeros_like(h[..., 0, :])  # (b, g, dg, n)
    carries = []
    for c in range(nc):
        carries.append(state)
        state = chunk_decay[..., c, :] * state + h[..., c, :]
    carry = torch.stack(carries, dim=-2)  # (b, g, dg, nc, n): the state entering each chunk

    # 3) add what the carried state contributes to every step
    y = y + (C_t * torch.exp(S.unsqueeze(-1) * A_g) * carry).sum(-1)
    y = y.permute(1, 2, 3, 4, 0).reshape(b, d, nc * T)[..., :l]
    out = _finish(y, u, D, z, dtype_in)
    if return_last_state:
        return out, state.reshape(b, d, n)
    return out
