"""Building blocks of FusionMamba (see the design in the project's spec).

Token maps are channels-last, (N, H, W, C), as in VMamba; convolutions switch to channels-first internally.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.layers import DropPath

from fusionmamba_med.ops.scan import selective_scan

__all__ = [
    "ECA",
    "LDC",
    "BiAttn",
    "PatchEmbed",
    "PatchMerging",
    "PatchExpand",
    "FinalPatchExpand",
    "EfficientScan2D",
    "SS2D",
    "VSSBlock",
    "DFEM",
    "CMFM",
    "DFFM",
]


class ECA(nn.Module):
    """Efficient channel attention on (N, H, W, C): avg-pool -> 1D conv (k=3) over channels -> sigmoid -> scale."""

    def __init__(self, kernel_size: int = 3):
        super().__init__()
        self.conv = nn.Conv1d(1, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = x.mean(dim=(1, 2)).unsqueeze(1)  # (N, 1, C)
        w = torch.sigmoid(self.conv(w)).squeeze(1)  # (N, C)
        return x * w[:, None, None, :]


class LDC(nn.Module):
    """Learnable difference convolution, 3x3, channels-first (N, C, H, W).

    The centre tap is reduced by ``theta * mask * sum(kernel)``: a learnable mix of a plain convolution and a
    central-difference convolution. Folded into one kernel, so it costs one conv.
    """

    def __init__(self, in_channels: int, out_channels: int, theta: float = 0.5):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.mask = nn.Parameter(torch.ones(out_channels, in_channels))
        self.theta = theta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.conv.weight
        centre = self.theta * self.mask * w.sum(dim=(2, 3))
        w = w - F.pad(centre[..., None, None], (1, 1, 1, 1))
        return F.conv2d(x, w, padding=1)


class BiAttn(nn.Module):
    """Channel gate on (N, H, W, C): LayerNorm -> global mean -> C -> C/8 -> GELU -> C -> sigmoid, times the input."""

    def __init__(self, dim: int, reduction: int = 8):
        super().__init__()
        hidden = max(dim // reduction, 4)
        self.norm = nn.LayerNorm(dim)
        self.fc = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.norm(x).mean(dim=(1, 2))
        return x * torch.sigmoid(self.fc(g))[:, None, None, :]


class PatchEmbed(nn.Module):
    """(N, 1, H, W) -> (N, H/p, W/p, C): conv k=p s=p, then LayerNorm."""

    def __init__(self, in_channels: int, dim: int, patch_size: int = 4):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class PatchMerging(nn.Module):
    """(N, H, W, C) -> (N, H/2, W/2, 2C): 2x2 neighbourhood concat -> LayerNorm -> linear 4C -> 2C."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x))


class PatchExpand(nn.Module):
    """(N, H, W, C) -> (N, sH, sW, C * out_ratio): linear, pixel-shuffle to s x s, LayerNorm.

    ``scale=2, out_ratio=0.5`` is the decoder's 2x expanding (C -> C/2); ``scale=4, out_ratio=1`` the 4x head.
    """

    def __init__(self, dim: int, scale: int = 2, out_ratio: float = 0.5):
        super().__init__()
        self.scale = scale
        self.out_dim = int(dim * out_ratio)
        self.expand = nn.Linear(dim, self.out_dim * scale * scale, bias=False)
        self.norm = nn.LayerNorm(self.out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, h, w, _ = x.shape
        s = self.scale
        x = self.expand(x).view(n, h, w, s, s, self.out_dim)
        x = x.permute(0, 1, 3, 2, 4, 5).reshape(n, h * s, w * s, self.out_dim)
        return self.norm(x)


def FinalPatchExpand(dim: int) -> PatchExpand:
    """The head's 4x expanding: (N, H, W, C) -> (N, 4H, 4W, C)."""
    return PatchExpand(dim, scale=4, out_ratio=1.0)


class EfficientScan2D(nn.Module):
    """The selective-scan core of SS2D with efficient (atrous, step 2) scanning.

    Takes x (N, D, H, W) (after the depthwise conv) and returns y (N, H, W, D) after the output LayerNorm.
    The map is split into its 4 interleaved sub-grids; sub-grid k is read by scan direction k (row-major,
    column-major, row-major reversed, column-major reversed), and each direction writes back to its own sub-grid.
    """

    K = 4

    def __init__(self, d_inner: int, d_state: int = 16, dt_rank: int = 4, dt_min: float = 1e-3,
                 dt_max: float = 0.1, dt_init_floor: float = 1e-4, scan_backend: str = "auto"):
        super().__init__()
        K, D, N, R = self.K, d_inner, d_state, dt_rank
        self.d_inner, self.d_state, self.dt_rank = D, N, R
        self.scan_backend = scan_backend
        self.x_proj_weight = nn.Parameter(torch.randn(K, R + 2 * N, D) * D**-0.5)
        self.dt_proj_weight = nn.Parameter(torch.empty(K, D, R).uniform_(-(R**-0.5), R**-0.5))
        # dt bias: softplus(bias) log-uniform in [dt_min, dt_max]
        dt = torch.exp(torch.rand(K, D) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        self.dt_proj_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))
        self.A_logs = nn.Parameter(torch.log(torch.arange(1, N + 1, dtype=torch.float32)).repeat(K * D, 1))
        self.Ds = nn.Parameter(torch.ones(K * D))
        self.out_norm = nn.LayerNorm(D)

    @staticmethod
    def scan_sequences(x: torch.Tensor) -> torch.Tensor:
        """(N, D, H, W), H and W even -> (N, 4, D, H/2 * W/2): the 4 sub-grids, each in its scan order."""
        s0 = x[:, :, 0::2, 0::2].flatten(2)
        s1 = x[:, :, 1::2, 0::2].transpose(2, 3).flatten(2)
        s2 = x[:, :, 0::2, 1::2].flatten(2).flip(-1)
        s3 = x[:, :, 1::2, 1::2].transpose(2, 3).flatten(2).flip(-1)
        return torch.stack([s0, s1, s2, s3], dim=1)

    @staticmethod
    def merge_sequences(y: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """Inverse of :meth:`scan_sequences`: (N, 4, D, h/2 * w/2) -> (N, D, h, w)."""
        n, _, d, _ = y.shape
        h2, w2 = h // 2, w // 2
        out = y.new_empty((n, d, h, w))
        out[:, :, 0::2, 0::2] = y[:, 0].view(n, d, h2, w2)
        out[:, :, 1::2, 0::2] = y[:, 1].view(n, d, w2, h2).transpose(2, 3)
        out[:, :, 0::2, 1::2] = y[:, 2].flip(-1).view(n, d, h2, w2)
        out[:, :, 1::2, 1::2] = y[:, 3].flip(-1).view(n, d, w2, h2).transpose(2, 3)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, d, h, w = x.shape
        ph, pw = h % 2, w % 2
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph))
        hp, wp = h + ph, w + pw
        xs = self.scan_sequences(x)  # (N, K, D, L)
        L = xs.shape[-1]
        x_dbl = torch.einsum("nkdl,kcd->nkcl", xs, self.x_proj_weight)
        dts, Bs, Cs = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=2)
        dts = torch.einsum("nkrl,kdr->nkdl", dts, self.dt_proj_weight)
        y = selective_scan(
            xs.reshape(n, -1, L),
            dts.reshape(n, -1, L),
            -torch.exp(self.A_logs.float()),
            Bs.contiguous(),
            Cs.contiguous(),
            self.Ds.float(),
            delta_bias=self.dt_proj_bias.reshape(-1).float(),
            delta_softplus=True,
            backend=self.scan_backend,
        ).view(n, self.K, d, L)
        y = self.merge_sequences(y, hp, wp)[:, :, :h, :w]
        return self.out_norm(y.permute(0, 2, 3, 1))


def _dt_rank(dim: int) -> int:
    return math.ceil(dim / 16)


class SS2D(nn.Module):
    """2D selective-scan mixer on (N, H, W, C): in_proj -> (x, z); dwconv+SiLU on x; efficient scan; gate; out_proj."""

    def __init__(self, dim: int, d_state: int = 16, ssm_ratio: float = 2.0, scan_backend: str = "auto"):
        super().__init__()
        d_inner = int(ssm_ratio * dim)
        self.in_proj = nn.Linear(dim, 2 * d_inner, bias=False)
        self.conv2d = nn.Conv2d(d_inner, d_inner, 3, padding=1, groups=d_inner)
        self.scan = EfficientScan2D(d_inner, d_state, _dt_rank(dim), scan_backend=scan_backend)
        self.out_proj = nn.Linear(d_inner, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xz = self.in_proj(x)
        x, z = xz.chunk(2, dim=-1)
        x = F.silu(self.conv2d(x.permute(0, 3, 1, 2)))
        y = self.scan(x) * F.silu(z)
        return self.out_proj(y)


class VSSBlock(nn.Module):
    """Efficient VSS block with dynamic (difference) convolution and channel attention, on (N, H, W, C).

    y = SS2D(LN(x)); e = ECA(y); t = LDC(y + e); s = BiAttn(y) + BiAttn(t);
    x = x + DropPath(s); x = x + DropPath(MLP(LN(x))).
    """

    def __init__(self, dim: int, d_state: int = 16, ssm_ratio: float = 2.0, mlp_ratio: float = 4.0,
                 drop_path: float = 0.0, scan_backend: str = "auto"):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.ss2d = SS2D(dim, d_state, ssm_ratio, scan_backend)
        self.eca = ECA()
        self.ldc = LDC(dim, dim)
        self.attn = BiAttn(dim)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.ss2d(self.norm(x))
        t = self.ldc((y + self.eca(y)).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        x = x + self.drop_path(self.attn(y) + self.attn(t))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class DFEM(nn.Module):
    """Dynamic feature enhancement for one modality: texture (LDC) + difference-perception weighting of a + b.

    x' = LDC(x) + x + sigmoid(GAP(x - other)) * (x + other), all (N, H, W, C).
    """

    def __init__(self, dim: int):
        super().__init__()
        self.ldc = LDC(dim, dim)

    def forward(self, x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        texture = self.ldc(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        weight = torch.sigmoid((x - other).mean(dim=(1, 2), keepdim=True))
        return texture + x + weight * (x + other)


class CMFM(nn.Module):
    """Cross-modality fusion Mamba on (N, H, W, C) pairs.

    Separate in_proj per modality -> (x_i, z_i); shared dwconv+SiLU; scan input x_a*x_b + x_a + x_b; one efficient
    scan; output gated by silu(z_a) + silu(z_b) (each modality's own gate) -> out_proj.
    """

    def __init__(self, dim: int, d_state: int = 16, ssm_ratio: float = 2.0, scan_backend: str = "auto"):
        super().__init__()
        d_inner = int(ssm_ratio * dim)
        self.norm_a = nn.LayerNorm(dim)
        self.norm_b = nn.LayerNorm(dim)
        self.in_proj_a = nn.Linear(dim, 2 * d_inner, bias=False)
        self.in_proj_b = nn.Linear(dim, 2 * d_inner, bias=False)
        self.conv2d = nn.Conv2d(d_inner, d_inner, 3, padding=1, groups=d_inner)
        self.scan = EfficientScan2D(d_inner, d_state, _dt_rank(dim), scan_backend=scan_backend)
        self.out_proj = nn.Linear(d_inner, dim, bias=False)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        xa, za = self.in_proj_a(self.norm_a(a)).chunk(2, dim=-1)
        xb, zb = self.in_proj_b(self.norm_b(b)).chunk(2, dim=-1)
        xa = F.silu(self.conv2d(xa.permute(0, 3, 1, 2)))
        xb = F.silu(self.conv2d(xb.permute(0, 3, 1, 2)))
        y = self.scan(xa * xb + xa + xb)
        return self.out_proj(y * (F.silu(za) + F.silu(zb)))


class DFFM(nn.Module):
    """Dynamic feature fusion module: two DFEMs and a CMFM. out = a + b + m + ECA(m), m = CMFM(DFEM_a, DFEM_b)."""

    def __init__(self, dim: int, d_state: int = 16, ssm_ratio: float = 2.0, scan_backend: str = "auto"):
        super().__init__()
        self.dfem_a = DFEM(dim)
        self.dfem_b = DFEM(dim)
        self.cmfm = CMFM(dim, d_state, ssm_ratio, scan_backend)
        self.eca = ECA()

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        m = self.cmfm(self.dfem_a(a, b), self.dfem_b(b, a))
        return a + b + m + self.eca(m)
