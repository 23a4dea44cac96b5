"""FusionMamba: dual patch embeddings, a shared (Siamese) efficient-VSS encoder, a DFFM at every level and a VSS
decoder with skip fusion, with a 4x expanding head.

Bundle interface: ``forward(image [N, 2, H, W]) -> pred [N, 1, H, W]``, channel 0 = anatomy (MRI / visible / GFP),
channel 1 = the other modality, values in [0, 1]. Any H, W: the input is padded to a multiple of :attr:`FusionMamba.stride`
and the output cropped back (never resized).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from fusionmamba_med.errors import WeightsError
from fusionmamba_med.networks.blocks import DFFM, FinalPatchExpand, PatchEmbed, PatchExpand, PatchMerging, VSSBlock

logger = logging.getLogger(__name__)

__all__ = ["FusionMamba", "PRESETS", "build_fusionmamba", "fusionmamba_from_weights", "load_network", "load_weights",
           "read_weights"]

# Named configurations. "tiny" is what CPU users get by default (parameters and CPU time in README.md).
PRESETS: dict[str, dict] = {
    "base": {"embed_dim": 96, "depths": (2, 2, 9, 2), "d_state": 16},
    "small": {"embed_dim": 48, "depths": (2, 2, 2, 2), "d_state": 16},
    "tiny": {"embed_dim": 24, "depths": (1, 1, 1, 1), "d_state": 8},
}

RESIDUAL_MODES = ("none", "mean", "original", "blend")


class FusionMamba(nn.Module):
    """FusionMamba fusion network.

    Args:
        embed_dim: channels C0 of the first level; levels use C0, 2C0, 4C0, 8C0.
        depths: VSS blocks per encoder stage (the decoder uses them reversed).
        d_state: selective-scan state size N.
        ssm_ratio: inner width of SS2D relative to its input.
        drop_path_rate: stochastic depth, linearly increasing over the encoder blocks.
        residual: global residual added to the head output: "none", "mean" ((A + B) / 2), "original"
            (2A + 2B, as in the authors' code) or "blend" (``w A + (1 - w) B`` with a per-pixel weight
            ``w = sigmoid(blend([features, A, B]))``, a 3x3 conv, GELU and 1x1 conv over the full-resolution head
            features and the two sources: the sources' own detail reaches the output at full resolution, where the
            head's 4x4 patch expansion blurs it; the last conv starts at zero, i.e. ``w = 0.5``, so a "mean"
            network's weights start a "blend" network at exactly the same output).
        blend_width: hidden channels of the "blend" weight branch.
        clamp_output: clamp the output to [0, 1] in eval mode (the loss clamps during training).
        pad_mode: how the input is padded to the stride ("replicate", "reflect" or "constant").
        scan_backend: selective-scan backend ("auto", "cuda", "torch", "ref").
    """

    patch_size = 4

    def __init__(
        self,
        embed_dim: int = 96,
        depths: Sequence[int] = (2, 2, 9, 2),
        d_state: int = 16,
        ssm_ratio: float = 2.0,
        drop_path_rate: float = 0.0,
        residual: str = "mean",
        blend_width: int = 16,
        clamp_output: bool = True,
        pad_mode: str = "replicate",
        scan_backend: str = "auto",
        preset: str | None = None,
    ):
        super().__init__()
        if residual not in RESIDUAL_MODES:
            raise ValueError(f"residual must be one of {RESIDUAL_MODES}, got {residual!r}")
        self.preset = preset
        self.residual = residual
        self.clamp_output = clamp_output
        self.pad_mode = pad_mode
        depths = tuple(depths)
        self.num_levels = len(depths)
        dims = [embed_dim * 2**i for i in range(self.num_levels)]
        self.stride = self.patch_size * 2 ** (self.num_levels - 1)
        kw = {"d_state": d_state, "ssm_ratio": ssm_ratio, "scan_backend": scan_backend}
        dpr = torch.linspace(0, drop_path_rate, sum(depths)).tolist()

        self.embed_a = PatchEmbed(1, embed_dim, self.patch_size)
        self.embed_b = PatchEmbed(1, embed_dim, self.patch_size)

        self.encoder = nn.ModuleList()
        self.downsample = nn.ModuleList()
        start = 0
        for i, (dim, depth) in enumerate(zip(dims, depths)):
            blocks = [VSSBlock(dim, drop_path=dpr[start + j], **kw) for j in range(depth)]
            start += depth
            self.encoder.append(nn.Sequential(*blocks))
            self.downsample.append(PatchMerging(dim) if i < self.num_levels - 1 else nn.Identity())

        self.fusion = nn.ModuleList([DFFM(dim, **kw) for dim in dims])

        # decoder stage i works at level L-1-i; stages i > 0 start with a 2x patch expanding
        self.upsample = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for i in range(self.num_levels):
            level = self.num_levels - 1 - i
            self.upsample.append(PatchExpand(dims[level + 1]) if i > 0 else nn.Identity())
            self.decoder.append(nn.Sequential(*[VSSBlock(dims[level], **kw) for _ in range(depths[level])]))

        self.head_expand = FinalPatchExpand(embed_dim)
        self.head = nn.Conv2d(embed_dim, 1, 1)
        if residual == "blend":
            # per-pixel source weight from the head features and the two sources, at full resolution
            self.blend = nn.Sequential(nn.Conv2d(embed_dim + 2, blend_width, 3, padding=1), nn.GELU(),
                                       nn.Conv2d(blend_width, 1, 1))
            nn.init.zeros_(self.blend[-1].weight)
            nn.init.zeros_(self.blend[-1].bias)

    def _encode(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """(N, h, w, C0) tokens -> (skips per level, deepest output). Skips are each stage's input."""
        skips = []
        for blocks, down in zip(self.encoder, self.downsample):
            skips.append(x)
            x = down(blocks(x))
        return skips, x

    def fuse_tokens(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Two (N, 1, H, W) images with H, W multiples of :attr:`stride` -> full-resolution head features
        (N, C0, H, W)."""
        skips_a, deep_a = self._encode(self.embed_a(a))
        skips_b, deep_b = self._encode(self.embed_b(b))
        fused = [dffm(sa, sb) for dffm, sa, sb in zip(self.fusion, skips_a, skips_b)]
        x = deep_a + deep_b
        for i, (up, blocks) in enumerate(zip(self.upsample, self.decoder)):
            x = up(x) + fused[self.num_levels - 1 - i]
            x = blocks(x)
        return self.head_expand(x).permute(0, 3, 1, 2)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """image [N, 2, H, W] in [0, 1] -> fused [N, 1, H, W]."""
        if image.dim() != 4 or image.shape[1] != 2:
            raise ValueError(f"FusionMamba expects image [N, 2, H, W], got {tuple(image.shape)}")
        h, w = image.shape[-2:]
        ph, pw = (-h) % self.stride, (-w) % self.stride
        x = image
        if ph or pw:
            mode = self.pad_mode
            if mode == "reflect" and (ph >= h or pw >= w):
                mode = "replicate"
            x = F.pad(image, (0, pw, 0, ph), mode=mode)
        a, b = x[:, 0:1], x[:, 1:2]
        features = self.fuse_tokens(a, b)[..., :h, :w]
        out = self.head(features)
        a, b = image[:, 0:1], image[:, 1:2]
        if self.residual == "blend":
            weight = torch.sigmoid(self.blend(torch.cat([features, a, b], dim=1)))
            out = out + weight * a + (1 - weight) * b
        elif self.residual == "mean":
            out = out + 0.5 * (a + b)
        elif self.residual == "original":
            out = out + 2 * a + 2 * b
        if self.clamp_output and not self.training:
            out = out.clamp(0, 1)
        return out


def build_fusionmamba(preset: str = "tiny", **overrides) -> FusionMamba:
    """A FusionMamba from a named preset (``PRESETS``), with keyword overrides."""
    if preset not in PRESETS:
        raise ValueError(f"unknown FusionMamba preset {preset!r}; choose one of {sorted(PRESETS)}")
    kwargs = {**PRESETS[preset], **overrides}
    return FusionMamba(preset=preset, **kwargs)


def read_weights(path: str | Path, map_location: str | torch.device = "cpu", key: str | None = None) -> dict:
    """The state dict in a weights file, read with ``torch.load(weights_only=True)``; ``key`` picks a sub-dict (e.g.
    "model" in a training checkpoint) and a DistributedDataParallel ``module.`` prefix is removed. A missing file,
    a pickle with code objects or anything but a state dict raises :class:`WeightsError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # pickle with code objects, truncated file, ...
        raise WeightsError(f"cannot load weights from {path} with weights_only=True: {err}") from err
    if key is not None:
        if not isinstance(state, dict) or key not in state:
            raise WeightsError(f"{path} has no entry {key!r}")
        state = state[key]
    if not isinstance(state, dict):
        raise WeightsError(f"{path} does not hold a state dict")
    if any(k.startswith("module.") for k in state):  # saved from DistributedDataParallel
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


def _load_state(network: nn.Module, state: dict, path: Path, keep_missing: Sequence[str] = ()) -> nn.Module:
    """Copy ``state`` (read from ``path``) into ``network`` strictly, except names starting with ``keep_missing``."""
    own = network.state_dict()
    missing = [k for k in own if k not in state and not k.startswith(tuple(keep_missing))]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k}: {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
             if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or wrong:
        preset = getattr(network, "preset", None)
        raise WeightsError(
            f"{path} does not fit this network (preset {preset!r}): {len(missing)} missing, "
            f"{len(unexpected)} unexpected, {len(wrong)} wrong-shaped tensors; e.g. "
            f"missing {missing[:3]}, unexpected {unexpected[:3]}, shapes {wrong[:3]}. "
            "Was it trained with another preset?"
        )
    kept = [k for k in own if k not in state]
    network.load_state_dict({**{k: own[k] for k in kept}, **state}, strict=True)
    if kept:
        logger.info("%s has no %s: kept the network's own values", path, ", ".join(kept))
    return network


def load_weights(network: nn.Module, path: str | Path, map_location: str | torch.device = "cpu",
                 key: str | None = None, keep_missing: Sequence[str] = ()) -> nn.Module:
    """Load a plain state dict (:func:`read_weights`) into ``network``, strictly.

    A checkpoint of another preset or architecture raises :class:`WeightsError` naming the first mismatches
    instead of a silent partial load. ``key`` picks a sub-dict (e.g. "model" in a training checkpoint).
    ``keep_missing``: name prefixes that may be absent from the file; those tensors keep the network's own values
    (training starts a "blend" network from "mean" weights with ``("blend.",)``).
    """
    return _load_state(network, read_weights(path, map_location, key), Path(path), keep_missing)


def fusionmamba_from_weights(path: str | Path, preset: str = "tiny", **overrides) -> FusionMamba:
    """A FusionMamba of ``preset`` with the weights at ``path`` loaded (strictly), its ``residual`` mode read from
    the file: "blend" when it holds the blend branch, else "mean" (an explicit ``residual=`` override wins)."""
    state = read_weights(path)
    overrides.setdefault("residual", "blend" if any(k.startswith("blend.") for k in state) else "mean")
    return _load_state(build_fusionmamba(preset, **overrides), state, Path(path))


def load_network(network: torch.nn.Module, model_path: str | os.PathLike | None = None, load_pretrain: bool = True,
                 device: str | torch.device = "cpu", compile: bool = False) -> torch.nn.Module:
    """Load trained weights into ``network`` when ``load_pretrain`` and ``model_path`` exists, else keep its random
    initial weights and say so loudly in the log; returns the network on ``device`` in eval mode.

    ``compile`` wraps it in ``torch.compile`` (measured on a 2-core CPU: 0.10 instead of 0.17 s per 256 x 256 slice,
    after about 6 minutes of compilation per process and input size; worth it only for long runs).
    A weights file that does not fit the network raises :class:`~fusionmamba_med.errors.WeightsError`.
    """
    if load_pretrain and model_path and os.path.isfile(model_path):
        load_weights(network, model_path)
        logger.info("network weights: %s", os.path.abspath(model_path))
    elif load_pretrain:
        logger.warning("NO TRAINED WEIGHTS: %s does not exist, so the network runs with RANDOM initial weights and "
                       "its outputs are not meaningful fusions. Put the trained state dict there or pass "
                       "--model_path.", model_path)
    else:
        logger.warning("load_pretrain is false: the network runs with RANDOM initial weights")
    network = network.to(device).eval()
    return torch.compile(network) if compile else network
