"""Selective-scan speed: the "torch" (chunked) backend versus the sequential "ref" loop, on the shapes the net uses.

    python benchmarks/bench_scan.py [--preset tiny] [--size 256] [--batch 1 8] [--repeat 11] [--backward]

Prints a Markdown table: one row per scan call of the network at that slice size (encoder/decoder SS2D and the DFFM
scans use the same shapes per level), with the best milliseconds per call of each backend over ``--repeat``
interleaved rounds and the speed-up; the last line adds the totals of the medians.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from fusionmamba_med.networks import PRESETS
from fusionmamba_med.ops import resolve_backend, selective_scan

from _child import machine_line


def scan_shapes(preset: str, size: int, batch: int) -> list[tuple[int, int, int, int, int]]:
    """(b, d, l, n, groups) of the selective-scan calls of ``preset`` on a size x size slice, one per level."""
    cfg = PRESETS[preset]
    shapes = []
    for level in range(len(cfg["depths"])):
        dim = cfg["embed_dim"] * 2**level
        side = size // (4 * 2**level)
        L = ((side + 1) // 2) ** 2
        shapes.append((batch, 4 * 2 * dim, L, cfg["d_state"], 4))
    return shapes


def bench(b: int, d: int, l: int, n: int, g: int, repeat: int, backward: bool, device: str) -> dict:
    """Seconds per call of each backend: {backend: (best, median)} over ``repeat`` rounds after a warm-up.

    The backends take turns within each round, so a busy neighbour on a shared machine slows them alike; the best
    time (what ``timeit`` advises) is the least disturbed one, the median shows the spread.
    """
    gen = torch.Generator().manual_seed(0)
    u = torch.randn(b, d, l, generator=gen).to(device)
    delta = (torch.randn(b, d, l, generator=gen) * 0.5).to(device)
    A = (-torch.rand(d, n, generator=gen) * 4).to(device)
    B = torch.randn(b, g, n, l, generator=gen).to(device)
    C = torch.randn(b, g, n, l, generator=gen).to(device)
    D = torch.ones(d, device=device)
    bias = torch.zeros(d, device=device)
    backends = ["torch", "ref"] + (["cuda"] if resolve_backend("auto", device) == "cuda" else [])

    def step(backend: str) -> float:
        x = u.clone().requires_grad_(backward)
        t0 = time.perf_counter()
        with torch.set_grad_enabled(backward):
            y = selective_scan(x, delta, A, B, C, D, delta_bias=bias, delta_softplus=True, backend=backend)
            if backward:
                y.sum().backward()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    times: dict[str, list[float]] = {k: [] for k in backends}
    for k in backends:
        step(k)  # warm-up
    for _ in range(repeat):
        for k in backends:
            times[k].append(step(k))
    return {k: (min(v), statistics.median(v)) for k, v in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    p.add_argument("--repeat", type=int, default=11)
    p.add_argument("--backward", action="store_true", help="time forward + backward")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    print(machine_line(args.device, preset=args.preset, timed="forward+backward" if args.backward else "forward"))
    print("| batch | level | (b, d, l, n, groups) | torch ms | ref ms | speed-up | cuda ms |")
    print("|---|---|---|---|---|---|---|")
    best = {"torch": 0.0, "ref": 0.0}
    median = {"torch": 0.0, "ref": 0.0}
    for batch in args.batch:
        for level, shape in enumerate(scan_shapes(args.preset, args.size, batch)):
            r = bench(*shape, repeat=args.repeat, backward=args.backward, device=args.device)
            for k in best:
                best[k] += r[k][0]
                median[k] += r[k][1]
            cuda = f"{r['cuda'][0] * 1e3:.2f}" if "cuda" in r else "-"
            print(f"| {batch} | {level} | {shape} | {r['torch'][0] * 1e3:.2f} | {r['ref'][0] * 1e3:.2f} | "
                  f"{r['ref'][0] / r['torch'][0]:.1f}x | {cuda} |")
    ms = {k: (best[k] * 1e3, median[k] * 1e3) for k in best}
    print(f"\nall shapes together, best of {args.repeat}: torch {ms['torch'][0]:.1f} ms, ref {ms['ref'][0]:.1f} ms, "
          f"speed-up {best['ref'] / best['torch']:.1f}x; medians: torch {ms['torch'][1]:.1f} ms, "
          f"ref {ms['ref'][1]:.1f} ms, speed-up {median['ref'] / median['torch']:.1f}x")


if __name__ == "__main__":
    main()
