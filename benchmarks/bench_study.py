"""Seconds per whole study, end to end, broken down by stage (load, register, normalise, fuse, write, QA).

    python benchmarks/bench_study.py [--bundle pet_mri] [--device cpu] [--output-format nifti] [--registration rigid]
                                     [--out table.md]

Runs the bundle's own inference config (``bundles/<bundle>/inference.json``) on its sample studies into a temporary
folder and prints a Markdown table from the per-stage timings the runner records in ``fusion_summary.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from _child import machine_line

ROOT = Path(__file__).resolve().parents[1]
STAGES = {  # runner timing keys -> column
    "LoadStudyd": "load",
    "RegisterToFixedd": "register",
    "PercentileNormalized": "normalise",
    "WindowIntensityd": "normalise",
    "Colormapd": "colour",
    "SplitLumad": "colour",
    "ConcatItemsd": "normalise",
    "fuse": "fuse",
    "postprocessing": "colour",
    "write": "write",
    "qa": "qa",
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", default="pet_mri")
    p.add_argument("--device", default="cpu")
    p.add_argument("--output-format", default="nifti")
    p.add_argument("--registration", default=None, help="registration_mode override")
    p.add_argument("--slice-batch-size", type=int, default=8)
    p.add_argument("--out", default=None, help="also write the table (without the run's log) to this file")
    args = p.parse_args()

    from monai.bundle import run

    with tempfile.TemporaryDirectory() as out:
        overrides = {"output_dir": out, "overwrite": "overwrite", "device": args.device, "progress": False,
                     "output_format": args.output_format, "slice_batch_size": args.slice_batch_size}
        if args.registration:
            overrides["registration_mode"] = args.registration
        t0 = time.perf_counter()
        run(config_file=str(ROOT / "bundles" / args.bundle / "inference.json"),
            bundle_root=str(ROOT / "bundles" / args.bundle), **overrides)
        wall = time.perf_counter() - t0
        summary = json.loads((Path(out) / "fusion_summary.json").read_text())

    cols = ["load", "register", "normalise", "colour", "fuse", "write", "qa"]
    lines: list[str] = []
    print = lines.append  # noqa: A001 - collect the table, print it once at the end
    print(machine_line(args.device, bundle=args.bundle, format=args.output_format))
    print("| study | shape (MRI grid) | " + " | ".join(cols) + " | total s |")
    print("|---" * (len(cols) + 3) + "|")
    for rec in summary["studies"]:
        if rec["status"] != "fused":
            print(f"| {rec['study']} | {rec['status']}: {rec.get('reason', '')[:60]} |" + " |" * (len(cols) + 1))
            continue
        stage = dict.fromkeys(cols, 0.0)
        for key, sec in rec["seconds"].items():
            stage[STAGES.get(key, "normalise")] += sec
        shape = "x".join(str(s) for s in rec.get("shape", [])) or "?"
        print(f"| {rec['study']} | {shape} | " + " | ".join(f"{stage[c]:.2f}" for c in cols)
              + f" | {rec['total_seconds']:.2f} |")
    print(f"\nwhole command incl. model build and study discovery: {wall:.1f} s")
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
