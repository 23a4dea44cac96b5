"""One way to call the fusion network at inference: no gradients, optional bfloat16 autocast, optional inferer; and
a volume's slice batches fused by several CPU threads at once."""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import torch

__all__ = ["fuse_cpu_threads", "fuse_slices_in_threads", "one_torch_thread", "run_network"]


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


def fuse_cpu_threads() -> int:
    """The CPU cores this process may use (its affinity mask where the OS has one): the default number of slice
    batches fused at once on CPU."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - no affinity mask (macOS, Windows)
        return max(1, os.cpu_count() or 1)


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """Torch's intra-op pool set to one thread for the block (then restored): each caller thread then computes its
    ops alone, in one order."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def fuse_slices_in_threads(fuse: Callable[[torch.Tensor, Callable], torch.Tensor], volume: torch.Tensor,
                           inferer: Callable, threads: int) -> torch.Tensor:
    """``fuse(part, inferer)`` on the slice batches of ``volume`` (N, C, X, Y, Z) by ``threads`` threads at once,
    one torch thread each; returns the parts concatenated along Z.

    The parts are the inferer's ``sw_batch_size`` consecutive slices (the batches it would make itself), thread
    ``i`` takes parts ``i, i + threads, ...`` with its own copy of ``inferer`` (MONAI's ``SliceInferer`` changes its
    ``roi_size`` during a call): a slice's result depends neither on the thread count nor on the threads' timing.
    On a few cores this is faster than torch's threads inside each op, the tiny network's ops being too small to
    split well (two cores, 256 x 256 x 200, 4 slices per batch: 12.7-13.1 s instead of 16.1 s in two runs;
    benchmarks/bench_volume.py ``--fuse-threads 1 2``).
    """
    size = max(1, int(getattr(inferer, "sw_batch_size", 1)))
    n_slices = int(volume.shape[-1])
    starts = list(range(0, n_slices, size))
    threads = max(1, min(int(threads), len(starts)))
    parts: list[torch.Tensor | None] = [None] * len(starts)

    def work(first: int) -> None:
        own = copy.deepcopy(inferer)
        for k in range(first, len(starts), threads):
            parts[k] = fuse(volume[..., starts[k]:starts[k] + size], own)

    with one_torch_thread(), ThreadPoolExecutor(max_workers=threads) as pool:
        for future in [pool.submit(work, i) for i in range(threads)]:
            future.result()
    return torch.cat(parts, dim=-1)
