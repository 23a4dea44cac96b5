"""2D fusion speed and peak memory of a FusionMamba preset, per slice size and batch size.

    python benchmarks/bench_fusion.py [--preset tiny] [--residual mean|blend] [--sizes 256 512] [--batches 1 8 32]
                                      [--device cpu] [--amp bf16|fp16] [--scan-backend auto|torch|ref|cuda] [--repeat 3]

Each configuration runs in a fresh subprocess so that its peak memory is its own: on CPU the peak resident set size
of the process minus the resident size after the model was built; on CUDA ``torch.cuda.max_memory_allocated``.
Prints a Markdown table (slices/s, seconds per slice, peak MiB) and the selective-scan backend used.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

from _child import machine_line, run_in_child


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def measure(preset: str, size: int, batch: int, device: str, amp: str | None, backend: str, repeat: int,
            residual: str = "mean") -> dict:
    """Time ``repeat`` forward passes of a [batch, 2, size, size] input (after one warm-up)."""
    import torch

    from fusionmamba_med.networks import build_fusionmamba
    from fusionmamba_med.ops import resolve_backend

    net = build_fusionmamba(preset, scan_backend=backend, residual=residual).to(device).eval()
    x = torch.rand(batch, 2, size, size, device=device)
    base = _rss_mib()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        base_gpu = torch.cuda.memory_allocated()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp or "")
    with torch.inference_mode(), torch.autocast(device.split(":")[0], dtype=dtype, enabled=dtype is not None):
        net(x)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(repeat):
            net(x)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds = (time.perf_counter() - t0) / repeat
    if device.startswith("cuda"):
        peak = (torch.cuda.max_memory_allocated() - base_gpu) / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base
    return {
        "preset": preset, "size": size, "batch": batch, "device": device, "amp": amp or "off",
        "scan_backend": resolve_backend(backend, device), "seconds_per_batch": seconds,
        "seconds_per_slice": seconds / batch, "slices_per_second": batch / seconds, "peak_mib": peak,
        "parameters": sum(p.numel() for p in net.parameters()),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", default=None, choices=[None, "bf16", "fp16"])
    p.add_argument("--scan-backend", default="auto")
    p.add_argument("--residual", default="mean", choices=["mean", "blend", "none", "original"])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(measure(**json.loads(args.child))))
        return
    print(machine_line(args.device, preset=args.preset, residual=args.residual, amp=args.amp or "off"))
    print("| size | batch | scan backend | s/slice | slices/s | µs/pixel | peak MiB | peak KiB/pixel |")
    print("|---|---|---|---|---|---|---|---|")
    parameters = None
    for size in args.sizes:
        for batch in args.batches:
            cfg = {"preset": args.preset, "size": size, "batch": batch, "device": args.device, "amp": args.amp,
                   "backend": args.scan_backend, "repeat": args.repeat, "residual": args.residual}
            r = run_in_child(__file__, cfg)
            if isinstance(r, str):
                print(f"| {size} | {batch} | failed: {r} | | | | | |")
                continue
            pixels = size * size * batch
            parameters = r["parameters"]
            print(f"| {size} | {batch} | {r['scan_backend']} | {r['seconds_per_slice']:.3f} | "
                  f"{r['slices_per_second']:.1f} | {r['seconds_per_batch'] / pixels * 1e6:.2f} | "
                  f"{r['peak_mib']:.0f} | {r['peak_mib'] * 1024 / pixels:.2f} |")
    if parameters:
        print(f"\nparameters: {parameters:,}")


if __name__ == "__main__":
    main()
