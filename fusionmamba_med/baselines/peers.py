"""Deep peer methods (IFCNN-MAX, MATR), re-implemented here to load their authors' published weights.

Only the weights come from the peers (read from a path, never downloaded or copied into the project); the network
definitions below are our own, written from the authors' code so that their state dicts load strictly and the inputs
are fed as their test scripts feed them:

* IFCNN-MAX (Zhang et al., Information Fusion 2020; github.com/uzeful/IFCNN ``Code/model.py``,
  ``Code/IFCNN_Main.py``): each source as a 3-channel image (a grey image repeated, as PIL's ``convert("RGB")``), in
  [0, 1] with the identity normalisation (mean 0, std 1) the authors use for grey IR-VIS and medical pairs;
  ResNet-101's first convolution (stride 1, replicate padding), a conv block, the element-wise max of the two
  feature maps (fuse scheme 0), a conv block and a 1 x 1 convolution to 3 channels, clamped to [0, 1]. The grey
  result is the BT.601 luma of those 3 channels (the authors: ``cv2.COLOR_RGB2GRAY`` of the 8-bit result).
* MATR (Tang et al., IEEE TIP 2022; github.com/MorvanLi/image-fusion-zoom ``Medical_Image_Fusion_Methods/MATR``
  ``Networks/net.py``, ``Networks/layers.py``, ``Test.py``): input ``cat(functional, MRI)`` (2 channels, grey in
  [0, 1], a colour SPECT/PET entering through its luma); output ``tanh`` of a 1 x 1 convolution. The authors write
  ``(out * 255).astype(uint8)``; here the output is clamped to [0, 1].

:func:`peer_methods` wraps both in the network contract used by the evaluation (``image`` [N, 2, H, W], channel 0 =
MRI / visible / GFP, channel 1 = CT/PET/SPECT / IR / PC, in [0, 1] -> ``pred`` [N, 1, H, W] in [0, 1]).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fusionmamba_med.errors import WeightsError

__all__ = [
    "IFCNN",
    "MATR",
    "PEER_WEIGHTS",
    "IFCNNMaxFusion",
    "MATRFusion",
    "load_peer_state",
    "peer_methods",
]

#: weights files relative to a peers folder (the layout of ``../shared/peers``).
PEER_WEIGHTS: dict[str, str] = {"ifcnn_max": "ifcnn/IFCNN-MAX.pth", "matr": "matr/model_10.pth"}

_LUMA = (0.299, 0.587, 0.114)  # BT.601, as cv2.COLOR_RGB2GRAY and PIL's convert("L")


def load_peer_state(network: nn.Module, path: str | Path) -> nn.Module:
    """Load a peer's state dict (``torch.load(weights_only=True)``) strictly into ``network``.

    A file that is not a state dict, or one that does not fit (another method's weights), raises
    :class:`~fusionmamba_med.errors.WeightsError` naming the file and the first mismatching keys.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"peer weights file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickled code, truncated file, ...
        raise WeightsError(f"cannot load peer weights from {path} with weights_only=True: {err}") from err
    if not isinstance(state, dict):
        raise WeightsError(f"{path} does not hold a state dict")
    own = network.state_dict()
    # batch-norm counters are absent from checkpoints of older torch versions (IFCNN) and unused in eval mode
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k}: {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
             if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or wrong:
        raise WeightsError(
            f"{path} does not fit {type(network).__name__}: {len(missing)} missing, {len(unexpected)} unexpected, "
            f"{len(wrong)} of another shape (first: {(missing + unexpected + wrong)[:3]})")
    network.load_state_dict(state, strict=False)  # every key checked above
    return network.eval()


# ---------------------------------------------------------------------------------------------------------------------
# IFCNN
# ---------------------------------------------------------------------------------------------------------------------
class _IFCNNConvBlock(nn.Module):
    """Replicate padding 1, 3 x 3 convolution without bias, batch norm, ReLU."""

    def __init__(self, channels: int = 64) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, padding=0, bias=False)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(F.pad(x, (1, 1, 1, 1), mode="replicate"))))


class IFCNN(nn.Module):
    """IFCNN (Zhang et al. 2020) with a chosen feature fusion: ``"max"`` (IFCNN-MAX), ``"sum"`` or ``"mean"``.

    ``forward(*images)``: any number of [N, 3, H, W] images, normalised as by the authors -> [N, 3, H, W] (not
    clamped). ``conv1`` is ResNet-101's first convolution (its weights are in the state dict) run with stride 1.
    """

    def __init__(self, fuse: str = "max") -> None:
        super().__init__()
        if fuse not in ("max", "sum", "mean"):
            raise ValueError(f"unknown IFCNN fusion {fuse!r}; choose max, sum or mean")
        self.fuse = fuse
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=1, padding=0, bias=False)
        self.conv2 = _IFCNNConvBlock(64)
        self.conv3 = _IFCNNConvBlock(64)
        self.conv4 = nn.Conv2d(64, 3, kernel_size=1, bias=True)

    def forward(self, *images: torch.Tensor) -> torch.Tensor:
        feats = [self.conv2(self.conv1(F.pad(x, (3, 3, 3, 3), mode="replicate"))) for x in images]
        out = feats[0]
        for f in feats[1:]:
            out = torch.maximum(out, f) if self.fuse == "max" else out + f
        if self.fuse == "mean":
            out = out / len(feats)
        return self.conv4(self.conv3(out))


class IFCNNMaxFusion(nn.Module):
    """IFCNN-MAX behind the network contract: image [N, 2, H, W] in [0, 1] -> fused luma [N, 1, H, W] in [0, 1].

    Each grey source is repeated to 3 channels with the identity normalisation (the authors' setting for grey
    IR-VIS and medical pairs); the 3-channel output is clamped to [0, 1] and reduced to its BT.601 luma. The order of
    the two sources does not matter (element-wise max).
    """

    def __init__(self, weights: str | Path | None = None) -> None:
        super().__init__()
        self.net = IFCNN("max")
        if weights is not None:
            load_peer_state(self.net, weights)
        self.net.eval()

    def forward_rgb(self, image: torch.Tensor) -> torch.Tensor:
        """image [N, 2, H, W] -> the network's clamped 3-channel output [N, 3, H, W] in [0, 1]."""
        _check_pair(image, "IFCNNMaxFusion")
        a, b = (image[:, i:i + 1].float().expand(-1, 3, -1, -1) for i in (0, 1))
        return self.net(a, b).clamp(0.0, 1.0)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        rgb = self.forward_rgb(image)
        luma = torch.tensor(_LUMA, dtype=rgb.dtype, device=rgb.device).view(1, 3, 1, 1)
        return (rgb * luma).sum(dim=1, keepdim=True).clamp(0.0, 1.0).to(image.dtype)


# ---------------------------------------------------------------------------------------------------------------------
# MATR
# ---------------------------------------------------------------------------------------------------------------------
class _DynamicConv3x3(nn.Module):
    """MATR's content-adaptive 3 x 3 convolution (``Networks/layers.py`` ``Conv2d``, kernel 3, padding 1, no bias).

    The kernel is modulated per sample by a sigmoid gate computed from a 3 x 3 adaptive average pool of the input
    (a spatial branch ``ce``/``gd`` and a channel branch ``ci``/``gd2``).
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.weight = nn.Parameter(torch.zeros(out_channels, in_channels, 3, 3))
        num_lat = 9 // 2 + 1
        self.groups = 16 if in_channels // 16 else in_channels
        self.ce = nn.Linear(9, num_lat, bias=False)
        self.ce_bn = nn.BatchNorm1d(in_channels)
        self.ci_bn2 = nn.BatchNorm1d(in_channels)
        self.ci = nn.Linear(self.groups, out_channels // (in_channels // self.groups), bias=False)
        self.ci_bn = nn.BatchNorm1d(out_channels)
        self.gd = nn.Linear(num_lat, 9, bias=False)
        self.gd2 = nn.Linear(num_lat, 9, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        pooled = F.adaptive_avg_pool2d(x, (3, 3)).view(b, c, 9)
        ce = self.ce(pooled)
        spatial = self.gd(F.relu(self.ce_bn(ce)))
        if self.groups > 3:
            oc = self.ci(F.relu(self.ci_bn2(ce).view(b, c // self.groups, self.groups, -1).transpose(2, 3)))
            oc = oc.transpose(2, 3).contiguous()
        else:
            oc = self.ci(F.relu(self.ci_bn2(ce).transpose(2, 1))).transpose(2, 1).contiguous()
        oc = self.gd2(F.relu(self.ci_bn(oc.view(b, self.out_channels, -1))))
        gate = torch.sigmoid(spatial.view(b, 1, c, 3, 3) + oc.view(b, self.out_channels, 1, 3, 3))
        kernel = (gate * self.weight.unsqueeze(0)).view(b, self.out_channels, -1)
        cols = F.unfold(x, kernel_size=3, padding=1)
        return torch.matmul(kernel, cols).view(b, self.out_channels, h, w)  # the authors assume h == w here


class _MATRConvBlock(nn.Module):
    """Dynamic 3 x 3 convolution, batch norm, ReLU (the authors' ``Basic3x3``)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = _DynamicConv3x3(in_channels, out_channels)
        self.bn1 = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn1(self.conv1(x)))


class _MATROut(nn.Module):
    """1 x 1 convolution without bias, tanh (the authors' ``Basic1x1``)."""

    def __init__(self, in_channels: int, out_channels: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.conv1(x))


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class _Attention(nn.Module):
    """Window attention with 1 x 1 windows: the softmax over one token is 1, so the output is ``proj(v)``.

    ``relative_position_bias_table`` / ``relative_position_index`` are kept only so the state dict loads (they add
    a constant before that one-element softmax).
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.dim = dim
        self.relative_position_bias_table = nn.Parameter(torch.zeros(1, num_heads))
        self.register_buffer("relative_position_index", torch.zeros(1, 1, dtype=torch.long))
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.qkv(x)[..., 2 * self.dim:])


class _TransformerBlock(nn.Module):
    """MATR's transformer block (window 1, no shift) with the authors' memory layout.

    The authors reinterpret the [B, C, H, W] feature map with ``view(B, H, W, C)`` (not a permute), so every
    "token" is C consecutive values in memory; this port does the same, as the weights were trained that way.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = _Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = _Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        t = x.contiguous().view(b, h, w, c)
        t = t + self.attn(self.norm1(t))
        t = t + self.mlp(self.norm2(t))
        return t.contiguous().view(b, c, h, w)


class _BasicLayer(nn.Module):
    def __init__(self, dim: int, depth: int, num_heads: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(_TransformerBlock(dim, num_heads) for _ in range(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x)
        return x


class _PatchEmbedNorm(nn.Module):
    """Holds the unused ``patch_embed.norm`` of the authors' model (in the state dict, never called)."""

    def __init__(self, dim: int = 96) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)


class MATR(nn.Module):
    """MATR (Tang et al. 2022): [N, 2, H, W] (functional, MRI) in [0, 1] -> ``tanh`` output [N, 1, H, W].

    Three branches of one shared dynamic conv block applied 1, 2 and 3 times, each through one shared
    3-block transformer and the conv block again; their sum goes through a 1 x 1 convolution and tanh.
    """

    def __init__(self, in_channels: int = 2, channels: int = 16, depth: int = 3, num_heads: int = 8) -> None:
        super().__init__()
        self.convInput = _MATRConvBlock(in_channels, channels)
        self.conv = _MATRConvBlock(channels, channels)
        self.convolutional_out = _MATROut(channels, 1)
        self.patch_embed = _PatchEmbedNorm(96)
        self.basicLayer = _BasicLayer(channels, depth, num_heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x0 = self.convInput(x)
        total = 0
        feat = x0
        for _ in range(3):  # branch k: conv applied k times (recomputed per branch, as the authors do)
            feat = self.conv(feat)
            total = total + self.conv(self.basicLayer(feat))
        return self.convolutional_out(total)


class MATRFusion(nn.Module):
    """MATR behind the network contract: image [N, 2, H, W] in [0, 1] -> fused luma [N, 1, H, W] in [0, 1].

    MATR was trained for medical pairs only (MRI with SPECT / PET / CT); it is run on IR-VIS and GFP-PC only for
    comparison. Its first input is the functional image: ``functional="b"`` (default) feeds channel 1 (CT / PET /
    SPECT, and IR for IR-VIS) first and channel 0 (MRI / visible) second; ``functional="a"`` swaps them (GFP-PC, where
    GFP in channel 0 plays the functional role). The ``tanh`` output is clamped to [0, 1].
    """

    def __init__(self, weights: str | Path | None = None, functional: str = "b") -> None:
        super().__init__()
        if functional not in ("a", "b"):
            raise ValueError(f"functional must be 'a' or 'b', got {functional!r}")
        self.functional = functional
        self.net = MATR()
        if weights is not None:
            load_peer_state(self.net, weights)
        self.net.eval()

    def forward_raw(self, image: torch.Tensor) -> torch.Tensor:
        """image [N, 2, H, W] -> the network's unclamped ``tanh`` output [N, 1, H, W]."""
        _check_pair(image, "MATRFusion")
        x = image.float() if self.functional == "a" else image.float().flip(1)
        return self.net(x.contiguous())

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.forward_raw(image).clamp(0.0, 1.0).to(image.dtype)


def _check_pair(image: torch.Tensor, who: str) -> None:
    if image.dim() != 4 or image.shape[1] != 2:
        raise ValueError(f"{who} expects image [N, 2, H, W], got {tuple(image.shape)}")


def peer_methods(peers_dir: str | Path, task: str | None = None) -> dict[str, nn.Module]:
    """The peers whose weights are found under ``peers_dir`` (layout :data:`PEER_WEIGHTS`), as
    ``{"ifcnn_max": IFCNNMaxFusion, "matr": MATRFusion}``; missing files are left out. ``task="gfp_pc"`` feeds MATR
    the GFP image (channel 0) as its functional input; every other task feeds channel 1 first."""
    root = Path(peers_dir)
    out: dict[str, nn.Module] = {}
    if (root / PEER_WEIGHTS["ifcnn_max"]).is_file():
        out["ifcnn_max"] = IFCNNMaxFusion(root / PEER_WEIGHTS["ifcnn_max"])
    if (root / PEER_WEIGHTS["matr"]).is_file():
        out["matr"] = MATRFusion(root / PEER_WEIGHTS["matr"], functional="a" if task == "gfp_pc" else "b")
    return out
