"""Fusing only the anatomy's box against fusing the whole grid: largest difference inside the anatomy, in the filled
background, and the time of each, on a bundle's studies.

    python benchmarks/bench_anatomy_crop.py [--bundle ct_mri] [--dataset-dir DIR] [--margins 16 32 64]

Loads and registers each study with the bundle's own preprocessing, then fuses its (2, X, Y, Z) network input
twice: the whole grid (``anatomy_crop`` off) and the anatomy box with each margin (in-plane voxels), each as the
runner fuses on CPU (slice batches in one thread per core). "Inside" means voxels where either input exceeds the
threshold (``anatomy_threshold``, 0.1 of the normalised range, on 4 x 4 block means); the 99.9th percentile of the
differences there is taken over a seeded sample of a million of them.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from _child import machine_line

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", default="ct_mri")
    p.add_argument("--dataset-dir", default=None)
    p.add_argument("--margins", type=int, nargs="+", default=[16, 32, 64])
    p.add_argument("--threshold", type=float, default=0.1)
    args = p.parse_args()

    from monai.bundle import ConfigParser

    from fusionmamba_med.inference.anatomy import anatomy_mask, fuse_within_anatomy
    from fusionmamba_med.inference.forward import fuse_cpu_threads, fuse_slices_in_threads, run_network

    parser = ConfigParser()
    parser.read_config(str(ROOT / "bundles" / args.bundle / "inference.json"))
    parser["bundle_root"] = str(ROOT / "bundles" / args.bundle)
    parser["device"] = "cpu"
    parser["progress"] = False
    if args.dataset_dir:
        parser["dataset_dir"] = args.dataset_dir
    studies, _ = parser.get_parsed_content("studies")
    preprocessing = parser.get_parsed_content("preprocessing")
    network = parser.get_parsed_content("network")
    inferer = parser.get_parsed_content("inferer")
    def fuse(x: torch.Tensor) -> torch.Tensor:  # as the runner fuses on CPU (fuse_threads: one per core)
        def one_part(part: torch.Tensor, inf) -> torch.Tensor:
            return run_network(network, part, "cpu", inferer=inf, move_batch=False)

        return fuse_slices_in_threads(one_part, x[None], inferer, fuse_cpu_threads())[0]

    print(machine_line("cpu", bundle=args.bundle))
    print("| study | shape | margin | fused fraction | inside: max diff | inside: 99.9th pct | inside: mean "
          "| filled: max diff | full s | crop s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for study in studies:
        image = preprocessing(dict(study))["image"].as_tensor()
        t0 = time.perf_counter()
        full = fuse(image)
        full_s = time.perf_counter() - t0
        inside = anatomy_mask(image, args.threshold)[None]
        for margin in args.margins:
            t0 = time.perf_counter()
            crop, info = fuse_within_anatomy(image, fuse, args.threshold, margin, getattr(network, "stride", 1))
            crop_s = time.perf_counter() - t0
            diff = (crop - full).abs()
            box = torch.zeros_like(inside)
            box[(slice(None),) + tuple(slice(a, b) for a, b in info["box"])] = True
            shape = "x".join(str(s) for s in image.shape[1:])
            d_in = diff[inside]
            p999 = float(torch.quantile(d_in[torch.randperm(d_in.numel(), generator=torch.Generator().manual_seed(0))
                                             [:1_000_000]], 0.999)) if d_in.numel() else 0.0
            print(f"| {study['study']} | {shape} | {margin} | {info['fraction']:.2f} | {float(d_in.max()):.4f} "
                  f"| {p999:.4f} | {float(d_in.mean()):.5f} "
                  f"| {float(diff[~box].max()) if bool((~box).any()) else 0.0:.4f} | {full_s:.1f} | {crop_s:.1f} |",
                  flush=True)


if __name__ == "__main__":
    main()
