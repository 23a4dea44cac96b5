"""One way to call the fusion network at inference: no gradients, optional bfloat16 autocast, optional inferer."""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["run_network"]


def run_network(
    network: torch.nn.Module,
    batch: torch.Tensor,
    device: str | torch.device | None = None,
    inferer: Callable | None = None,
    amp: bool = False,
    move_batch: bool = True,
) -> torch.Tensor:
    """``network`` on ``batch`` (N, 2, *spatial) -> (N, 1, *spatial) float32 on CPU, under ``torch.inference_mode``.

    Args:
        network: the fusion network (already on ``device``; see CONVENTIONS.md for the contract).
        batch: the network input; a ``MetaTensor`` is used as a plain tensor.
        device: where the network runs; with ``amp``, autocast (bfloat16) is used when it is a CUDA device.
        inferer: ``(batch, network) -> pred`` (e.g. ``SliceInferer`` for volumes, ``SimpleInferer``); default
            ``network(batch)``.
        amp: bfloat16 autocast on CUDA.
        move_batch: put ``batch`` on ``device`` first; ``False`` when the inferer places the pieces itself (e.g.
            ``SliceInferer(sw_device=...)``, which then holds only ``sw_batch_size`` slices on the device).

    Raises ``RuntimeError`` when the prediction is not (N, 1) + the input's spatial shape.
    """
    device = torch.device(device) if device is not None else None
    batch = batch.as_tensor() if hasattr(batch, "as_tensor") else torch.as_tensor(batch)
    batch = batch.to(device if (move_batch and device is not None) else batch.device, dtype=torch.float32)
    use_amp = amp and device is not None and device.type == "cuda"
    with torch.inference_mode():
        if use_amp:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                pred = network(batch) if inferer is None else inferer(batch, network)
        else:
            pred = network(batch) if inferer is None else inferer(batch, network)
    if pred.ndim != batch.ndim or pred.shape[0] != batch.shape[0] or pred.shape[1] != 1 \
            or pred.shape[2:] != batch.shape[2:]:
        raise RuntimeError(f"the network gave {tuple(pred.shape)} for input {tuple(batch.shape)}; "
                           "expected (N, 1) + the input's spatial shape")
    return pred.float().cpu()
