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
  ``nc`` chunks of ``T ~ sqrt(l) / 2`` steps (one chunk when ``l <= 64``); a loop of ``T`` steps scans all chunks at
  once, a loop of ``nc`` steps carries the state across chunks, and one vectorised correction adds the carried state
  back. That is ``T + nc`` small steps instead of ``l``, with only products of decays (never divisions), so it is as
  stable in float32 as the sequential loop. Under ``torch.no_grad`` / ``inference_mode`` the state is updated in
  place; with autograd the same steps run out of place and autograd gives the backward.
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
    return _selective_scan_chunked(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, chunk_size)


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
    h = u.new_zeros((b, d, A.shape[1]))
    ys = []
    for t in range(l):
        h = dA[..., t] * h + dBu[..., t]
        ys.append((h * Cc[..., t]).sum(-1))
    y = torch.stack(ys, dim=-1)
    out = _finish(y, u, D, z, dtype_in)
    return (out, h) if return_last_state else out


# Elements (T * n * channels * chunks) per block of the "torch" backend on CPU: small enough that a block's
# temporaries stay in the CPU caches (about 4 MiB of float32 each). Measured with benchmarks/bench_scan.py.
BLOCK_ELEMENTS = 1 << 20


def _default_chunk(l: int) -> int:
    """Steps per chunk: ``sqrt(l) / 2`` balances the in-chunk loop against the chunk-carry loop; short sequences
    (``l <= 64``) are one chunk, which skips the carry entirely. See benchmarks/bench_scan.py."""
    if l <= 64:
        return l
    return max(1, int(math.ceil(math.sqrt(l) / 2)))


def _selective_scan_chunked(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                            return_last_state=False, chunk_size=None, block_elements=BLOCK_ELEMENTS):
    """Two-level chunked scan: ``T + nc`` vectorised steps instead of ``l``.

    Every (batch item, channel group) pair is an independent scan, so they are flattened into ``G = b * g`` rows and,
    on CPU, processed in blocks of rows that fit the caches. Without autograd two block-sized buffers are reused for
    every block and the state is updated in place (one fused ``addcmul_`` per step, no per-step temporaries); with
    autograd the same steps run out of place.
    """
    dtype_in = u.dtype
    u, delta, A, B, C = _prepare(u, delta, A, B, C, delta_bias, delta_softplus)
    b, d, l = u.shape
    g, n = B.shape[1], A.shape[1]
    dg, G = d // g, b * g
    T = max(1, min(l, chunk_size or _default_chunk(l)))
    nc = -(-l // T)
    pad = nc * T - l
    du = delta * u
    if pad:  # delta 0 -> decay 1, input 0: padded steps keep the state
        delta, du, B, C = (F.pad(t, (0, pad)) for t in (delta, du, B, C))

    # time-major contiguous layout: each step of the in-chunk loop reads one contiguous slab
    delta_t = delta.reshape(G, dg, nc, T).permute(3, 0, 1, 2).contiguous()  # (T, G, dg, nc)
    du_t = du.reshape(G, dg, nc, T).permute(3, 0, 1, 2).contiguous()
    B_t = B.reshape(G, n, nc, T).permute(3, 0, 2, 1).contiguous().unsqueeze(2)  # (T, G, 1, nc, n)
    C_t = C.reshape(G, n, nc, T).permute(3, 0, 2, 1).contiguous().unsqueeze(2)
    A_G = A.view(1, g, dg, 1, n).expand(b, g, dg, 1, n).reshape(1, G, dg, 1, n)

    inplace = not (torch.is_grad_enabled() and any(t.requires_grad for t in (u, delta, A, B, C)))
    per = G if u.device.type != "cpu" else min(G, max(1, block_elements // max(1, T * n * dg * nc)))
    buffers = (delta_t.new_empty((T, per, dg, nc, n)), delta_t.new_empty((T, per, dg, nc, n))) if inplace else None
    ys, states = [], []
    for r0 in range(0, G, per):
        rows = slice(r0, min(G, r0 + per))
        y, state = _scan_rows(delta_t[:, rows], du_t[:, rows], B_t[:, rows], C_t[:, rows], A_G[:, rows], buffers)
        ys.append(y)
        states.append(state)
    y = torch.cat(ys, dim=1).permute(1, 2, 3, 0).reshape(b, d, nc * T)[..., :l]
    out = _finish(y, u, D, z, dtype_in)
    if return_last_state:
        return out, torch.cat(states, dim=0).reshape(b, d, n)
    return out


def _scan_rows(delta_t, du_t, B_t, C_t, A_G, buffers=None):
    """Chunked scan of one block of rows in the time-major layout of :func:`_selective_scan_chunked`.

    ``delta_t``, ``du_t``: (T, R, dg, nc); ``B_t``, ``C_t``: (T, R, 1, nc, n); ``A_G``: (1, R, dg, 1, n). With
    ``buffers`` (two tensors of at least (T, R, dg, nc, n)) everything runs in place in them (no autograd).
    Returns y (T, R, dg, nc) and the state after the last step (R, dg, n).
    """
    T, R, dg, nc = delta_t.shape
    if buffers is not None:
        dA = torch.mul(delta_t.unsqueeze(-1), A_G, out=buffers[0][:, :R]).exp_()  # (T, R, dg, nc, n)
        H = torch.mul(du_t.unsqueeze(-1), B_t, out=buffers[1][:, :R])  # input of each step; becomes the state
        for t in range(1, T):  # 1) scan inside every chunk at once, from a zero state
            H[t].addcmul_(dA[t], H[t - 1])
    else:
        dA = torch.exp(delta_t.unsqueeze(-1) * A_G)
        h = torch.zeros_like(dA[0])  # the zero initial state, kept in the graph: A gets a (zero) gradient even
        hs = []  # when l == 1, as in the sequential loop (DistributedDataParallel needs every parameter used)
        for t in range(T):
            h = torch.addcmul(du_t[t].unsqueeze(-1) * B_t[t], dA[t], h)
            hs.append(h)
        H = torch.stack(hs)
    if nc == 1:
        state = H[-1, :, :, 0].clone()  # H is overwritten by the read-out below
    else:
        # 2) carry the state across chunks; decay from a chunk's start to step t = prod(dA[0..t]) = exp(A S_t)
        S = torch.cumsum(delta_t, dim=0).unsqueeze(-1)
        decay = torch.mul(S, A_G, out=dA).exp_() if buffers is not None else torch.exp(S * A_G)
        state = torch.zeros_like(H[0, :, :, 0])  # (R, dg, n)
        carries = []
        for c in range(nc):
            carries.append(state)
            state = torch.addcmul(H[-1, :, :, c], decay[-1, :, :, c], state)
        carry = torch.stack(carries, dim=2)  # (R, dg, nc, n): the state entering each chunk
        # 3) add what the carried state contributes to every step
        H = H.addcmul_(decay, carry) if buffers is not None else torch.addcmul(H, decay, carry)
    y = (H.mul_(C_t) if buffers is not None else H * C_t).sum(-1)  # (T, R, dg, nc)
    return y, state
