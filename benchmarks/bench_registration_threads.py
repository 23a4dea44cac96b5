"""Is the default rigid registration repeatable to the last bit, and what does one SimpleITK thread cost?

    python benchmarks/bench_registration_threads.py [--study sample_data/pet_mri/study01] [--repeats 3]
                                                     [--threads 1 0]

Registers the study's moving image (PET.nrrd / CT.nii.gz / SPECT.nii.gz) onto its MRI (``MR/``) ``--repeats`` times
for each ``--threads`` value (0 = SimpleITK's default, one per core), with ``RegisterToFixed``'s defaults otherwise,
and prints per run the wall and process CPU seconds, the optimiser iterations and the final metric, then whether the
runs' resampled images are bit-identical and their largest voxel difference from the first run.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from fusionmamba_med.io import load_volume
from fusionmamba_med.transforms.registration import RegisterToFixed


def moving_file(study: Path) -> Path:
    for name in ("PET.nrrd", "CT.nii.gz", "SPECT.nii.gz"):
        if (study / name).exists():
            return study / name
    raise SystemExit(f"no moving image in {study}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--study", type=Path, default=Path("sample_data/pet_mri/study01"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 0])
    args = ap.parse_args()
    mri, moving = load_volume(args.study / "MR"), load_volume(moving_file(args.study))
    print(f"study {args.study}, SimpleITK default threads {sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()}")
    for threads in args.threads:
        images = []
        for i in range(args.repeats):
            reg = RegisterToFixed(mode="rigid", threads=threads or None)
            wall, cpu = time.perf_counter(), time.process_time()
            result = reg.register(moving, mri)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            images.append(sitk.GetArrayFromImage(result.image))
            print(f"threads={threads or 'default'} run {i}: {wall:.2f} s wall, {cpu:.2f} s CPU, "
                  f"{result.info['iterations']} iterations, final metric {result.info['final_metric']!r}")
        diffs = [float(np.abs(a - images[0]).max()) for a in images[1:]]
        same = all(np.array_equal(a, images[0]) for a in images[1:])
        print(f"threads={threads or 'default'}: bit-identical {same}, max |difference| from run 0 {diffs}")


if __name__ == "__main__":
    main()
