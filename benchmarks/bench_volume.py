"""Whole-volume fusion speed and peak memory: the bundles' slice-wise fusion stage on its own.

    python benchmarks/bench_volume.py [--shapes 256x256x200 512x512x600] [--slice-batch-sizes 8 32] [--fuse-threads 1 2]
                                      [--device cpu] [--amp] [--scan-backend auto]
                                      [--weights bundles/ct_mri/models/model.pt]

Runs ``StudyFusionRunner.fuse_volume`` (the code the medical bundles run between normalisation and writing) with the
bundles' ``SliceInferer`` on a random (2, X, Y, Z) volume, after one warm-up slice batch. Each configuration runs in
a fresh subprocess so its peak memory is its own: on CUDA ``torch.cuda.max_memory_allocated`` (activations + weights;
the volume itself stays on the CPU, as in the bundles), on CPU the growth of the peak resident set size once the
volume was allocated (activations and the fused output). Registration, loading and writing are CPU work: see
bench_study.py.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

from _child import machine_line, run_in_child

ROOT = Path(__file__).resolve().parents[1]


def measure(shape: str, slice_batch_size: int, device: str, amp: bool, backend: str, weights: str,
            fuse_threads: int | None = None) -> dict:
    import torch
    from monai.inferers import SliceInferer

    from fusionmamba_med.inference.study_runner import StudyFusionRunner
    from fusionmamba_med.networks import fusionmamba_from_weights
    from fusionmamba_med.ops import resolve_backend

    x, y, z = (int(v) for v in shape.split("x"))
    net = fusionmamba_from_weights(weights, scan_backend=backend).to(device).eval()
    inferer = SliceInferer(spatial_dim=2, roi_size=[-1, -1], sw_batch_size=slice_batch_size, sw_device=device,
                           device="cpu", progress=False)
    runner = StudyFusionRunner([], None, net, inferer, writer=None, device=device, amp=amp, qa=False,
                               fuse_threads=fuse_threads)
    volume = torch.rand(2, x, y, z)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    runner.fuse_volume(volume[..., :slice_batch_size])  # warm-up (CUDA context, kernels, allocator)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    fused = runner.fuse_volume(volume)
    seconds = time.perf_counter() - t0
    assert fused.shape == (1, x, y, z)
    if device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base
    return {"seconds": seconds, "slices_per_second": z / seconds, "peak_mib": peak,
            "scan_backend": resolve_backend(backend, device)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", nargs="+", default=["256x256x200"])
    p.add_argument("--slice-batch-sizes", type=int, nargs="+", default=[8])
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", action="store_true", help="bfloat16 autocast on CUDA (the bundles' `amp` option)")
    p.add_argument("--scan-backend", default="auto")
    p.add_argument("--weights", default=str(ROOT / "bundles" / "ct_mri" / "models" / "model.pt"))
    p.add_argument("--fuse-threads", type=int, nargs="+", default=[0],
                   help="slice batches fused at once on CPU (the runner's fuse_threads; 0: its default, one per core)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(measure(**json.loads(args.child))))
        return
    print(machine_line(args.device, amp="bf16" if args.amp else "off"))
    print("| volume (X x Y x slices) | slice batch | fuse threads | scan backend | seconds | slices/s | peak MiB |")
    print("|---|---|---|---|---|---|---|")
    for shape in args.shapes:
        for sbs in args.slice_batch_sizes:
            for threads in args.fuse_threads:
                cfg = {"shape": shape, "slice_batch_size": sbs, "device": args.device, "amp": args.amp,
                       "backend": args.scan_backend, "weights": args.weights, "fuse_threads": threads or None}
                r = run_in_child(__file__, cfg)
                label = threads or "auto"
                if isinstance(r, str):
                    print(f"| {shape} | {sbs} | {label} | failed: {r} | | | |")
                    continue
                print(f"| {shape} | {sbs} | {label} | {r['scan_backend']} | {r['seconds']:.2f} | "
                      f"{r['slices_per_second']:.1f} | {r['peak_mib']:.0f} |")


if __name__ == "__main__":
    main()
