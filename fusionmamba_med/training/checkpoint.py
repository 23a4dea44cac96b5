"""Checkpoint files: find the newest one to resume from, and export plain CPU weights for inference."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import torch
import torch.nn as nn

from fusionmamba_med.io.atomic import atomic_path

__all__ = [
    "average_weights", "checkpoint_iteration", "export_weights", "initial_weights", "interpolate_weights",
    "latest_checkpoint", "max_rule_blend_start", "resolve_resume", "unwrap_network",
]

logger = logging.getLogger(__name__)

_ITERATION = re.compile(r"iteration=(\d+)")


def unwrap_network(network: nn.Module) -> nn.Module:
    """The module inside a ``DataParallel`` / ``DistributedDataParallel`` wrapper (the network itself otherwise)."""
    return network.module if isinstance(network, (nn.DataParallel, nn.parallel.DistributedDataParallel)) else network


def checkpoint_iteration(path: str | os.PathLike) -> int | None:
    """The iteration in a checkpoint file name written by ``CheckpointSaver`` (``checkpoint_iteration=400.pt``,
    ``checkpoint_final_iteration=1000.pt``), or ``None``."""
    match = _ITERATION.search(Path(path).name)
    return int(match.group(1)) if match else None


def latest_checkpoint(checkpoint_dir: str | os.PathLike) -> str | None:
    """The checkpoint with the highest iteration in ``checkpoint_dir`` (``None`` if there is none)."""
    folder = Path(checkpoint_dir)
    if not folder.is_dir():
        return None
    found = [(it, p) for p in folder.glob("*.pt") if (it := checkpoint_iteration(p)) is not None]
    if not found:
        return None
    # at equal iterations prefer the interval file over the final one: same content, either is fine
    return str(max(found, key=lambda x: (x[0], "final" not in x[1].name))[1])


def initial_weights(network: nn.Module, path: str | os.PathLike | None) -> nn.Module:
    """Start training from trained weights: load the state dict at ``path`` into ``network`` (strictly, with
    ``torch.load(weights_only=True)``; float16 shipped weights become the network's float32; weights of a "mean"
    residual network start a "blend" one, whose zero blend conv then reproduces them exactly) or, for ``None``,
    keep its random initial weights. A resumed run then overwrites them from its checkpoint, so budget accumulates."""
    if path is None or path == "":
        return network
    from fusionmamba_med.networks import load_weights

    load_weights(network, path, keep_missing=("blend.",))
    logger.info("training starts from the weights in %s", os.path.abspath(path))
    return network


def interpolate_weights(start: dict, end: dict, t: float) -> dict:
    """``(1 - t) * start + t * end`` of two state dicts of one architecture (float32; other tensors from ``end``).

    Between a model and its fine-tune, this picks a point on their Qabf-vs-SSIM trade-off (the fine-tunes of the
    shipped medical weights gain edge transfer and lose a little structural similarity; ``docs/evaluation``).
    ``start`` may be a "mean" residual network's and ``end`` a "blend" one's (its blend conv starts at zero).
    """
    if not 0.0 <= float(t) <= 1.0:
        raise ValueError(f"t must be in [0, 1], got {t}")
    # a "mean" residual network is a "blend" one with a zero blend conv: interpolate from that
    start = {**{k: torch.zeros_like(v) for k, v in end.items() if k.startswith("blend.") and k not in start}, **start}
    if set(start) != set(end):
        raise ValueError(f"the state dicts differ in keys, e.g. {sorted(set(start) ^ set(end))[:3]}")
    out = {}
    for k, v in end.items():
        if tuple(start[k].shape) != tuple(v.shape):
            raise ValueError(f"{k}: shapes {tuple(start[k].shape)} and {tuple(v.shape)} differ")
        out[k] = torch.lerp(start[k].float(), v.float(), float(t)) if v.is_floating_point() else v.clone()
    return out


def average_weights(states: list[dict]) -> dict:
    """The mean of state dicts of one architecture (float32; other tensors from the last): the shipped weights of a
    noisy fine-tune are the mean of its last checkpoints (e.g. the CT-MRI and 2D bundles')."""
    if not states:
        raise ValueError("average_weights needs at least one state dict")
    out = dict(states[-1])
    for state in states[:-1]:
        if set(state) != set(out):
            raise ValueError(f"the state dicts differ in keys, e.g. {sorted(set(state) ^ set(out))[:3]}")
    for k, v in out.items():
        if v.is_floating_point():
            shapes = {tuple(s[k].shape) for s in states}
            if len(shapes) > 1:
                raise ValueError(f"{k}: shapes {sorted(shapes)} differ")
            out[k] = torch.stack([s[k].float() for s in states]).mean(dim=0)
    return out


def resolve_resume(resume: bool | str | os.PathLike | None, checkpoint_dir: str | os.PathLike) -> str | None:
    """The checkpoint to resume from: ``False``/``None`` -> none; ``True`` -> the newest in ``checkpoint_dir`` (none
    if the folder has no checkpoint yet, so a first run with ``resume: true`` starts fresh); a path -> that file."""
    if resume is None or resume is False:
        return None
    if resume is True or (isinstance(resume, str) and resume.lower() in ("true", "latest")):
        path = latest_checkpoint(checkpoint_dir)
        if path is None:
            logger.info("resume: no checkpoint in %s, starting from iteration 0", checkpoint_dir)
        else:
            logger.info("resume: continuing from %s", path)
        return path
    if not Path(resume).is_file():
        raise FileNotFoundError(f"resume checkpoint not found: {resume}")
    return str(resume)


def export_weights(network: nn.Module | dict, path: str | os.PathLike, dtype: torch.dtype | None = None) -> Path:
    """Save a network's weights (or a state dict) as a plain CPU state dict (readable by
    :func:`fusionmamba_med.networks.load_weights`, ``torch.load(weights_only=True)``), atomically.

    ``dtype`` (e.g. ``torch.float16``) stores floating-point tensors in that type (half the size for shipping);
    ``load_weights`` copies them into the network's own float32 parameters.
    """
    path = Path(path)
    source = network if isinstance(network, dict) else unwrap_network(network).state_dict()
    state = {k: v.detach().to("cpu").clone() for k, v in source.items()}
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(state, f)  # through a file object: the archive's inner name does not depend on the temporary name
    return path


def max_rule_blend_start(network: nn.Module, sharpness: float = 10.0, smooth: bool = False) -> nn.Module:
    """Set a "blend" network's output to a soft max rule, ``w A + (1 - w) B`` with ``w = sigmoid(sharpness * (A - B))``,
    as a training start: the head's own output is zeroed and two hidden units of the blend branch compute
    ``GELU(A - B)`` and ``GELU(B - A)`` (their difference is exactly ``A - B``); the other units keep their values
    and a zero weight into the output, so training can bring the features in. In place; returns ``network``.

    ``smooth=True`` decides on the sources smoothed by the branch's own 3 x 3 window, the binomial kernel
    ``[1, 2, 1]^T [1, 2, 1] / 16`` (zero padding at the border, as the convolution pads): ``w = sigmoid(sharpness *
    (S A - S B))``. A decision on smoothed sources switches less on pixel noise (on GFP-PC it keeps more SSIM than the
    pixel rule at the same Qabf: docs/evaluation/README.md).
    """
    net = unwrap_network(network)
    if getattr(net, "residual", None) != "blend":
        raise ValueError("max_rule_blend_start needs a FusionMamba with residual='blend'")
    hidden, out = net.blend[0], net.blend[-1]
    channels = hidden.in_channels  # head features, then A, then B
    kh, kw = hidden.kernel_size
    window = torch.zeros(kh, kw)
    if smooth:
        if (kh, kw) != (3, 3):
            raise ValueError(f"smooth=True needs the blend branch's 3 x 3 window, got {kh} x {kw}")
        taps = torch.tensor([1.0, 2.0, 1.0])
        window = torch.outer(taps, taps) / 16.0
    else:
        window[kh // 2, kw // 2] = 1.0
    with torch.no_grad():
        net.head.weight.zero_()
        net.head.bias.zero_()
        for unit, sign in ((0, 1.0), (1, -1.0)):
            hidden.weight[unit].zero_()
            hidden.weight[unit, channels - 2] = sign * window
            hidden.weight[unit, channels - 1] = -sign * window
            hidden.bias[unit] = 0.0
        out.weight.zero_()
        out.bias.zero_()
        out.weight[0, 0] = sharpness
        out.weight[0, 1] = -sharpness
    return net
