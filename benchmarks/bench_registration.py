"""Registration time and accuracy versus MRI size: CT-to-MRI rigid registration of the head phantom.

    python benchmarks/bench_registration.py [--shapes 128x128x32 256x256x200] [--max-samples 200000 0] [--threads 1]

For every MRI grid (1 mm in-plane, slices spread over 150 mm) the phantom MRI is the fixed image and a phantom CT on
its own 0.9 x 0.9 x 2 mm grid, displaced by a known rigid transform (4 deg, 3 deg, -5 deg; 6, -4, 3 mm), is the
moving one. ``RegisterToFixed`` runs with its defaults except ``max_samples`` (0 = no cap, i.e. ``sampling_fraction``
of all voxels) and ``threads`` (0 = SimpleITK's default). Prints seconds, samples per level, the maximum target registration error over the phantom's
landmarks and the rotation error.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import SimpleITK as sitk
import torch
from monai.data import MetaTensor

from fusionmamba_med.data import phantom
from fusionmamba_med.data.sample_medical import euler_transform_lps, grid_affine
from fusionmamba_med.transforms.registration import (
    RegisterToFixed,
    rotation_angle_deg,
    target_registration_error,
    transform_from_info,
)

FLIP = np.diag([-1.0, -1.0, 1.0, 1.0])
ROTATION_DEG, TRANSLATION_MM = (4.0, 3.0, -5.0), (6.0, -4.0, 3.0)


def volumes(shape: tuple[int, int, int]) -> tuple[MetaTensor, MetaTensor, np.ndarray]:
    """Fixed MRI on ``shape``, moving CT, and the true fixed -> moving transform (LPS)."""
    spacing = (1.0, 1.0, 150.0 / shape[2])
    mri_aff = grid_affine(shape, spacing, (0.0, 0.0, 0.0))
    truth = euler_transform_lps(ROTATION_DEG, TRANSLATION_MM)
    ct_shape = (220, 240, 80)
    ct_aff = grid_affine(ct_shape, (0.9, 0.9, 2.0), (3.0, -2.0, 5.0))
    # the CT shows the anatomy moved by the truth: its voxel at RAS point q holds the phantom at truth^-1 (q)
    inv_ras = FLIP @ np.linalg.inv(truth) @ FLIP
    ct = phantom.sample_on_grid(lambda p: phantom.ct_hu(p @ inv_ras[:3, :3].T + inv_ras[:3, 3]), ct_shape, ct_aff)
    mri = phantom.sample_on_grid(phantom.mri_t1, shape, mri_aff)
    as_mt = lambda a, aff: MetaTensor(torch.from_numpy(np.ascontiguousarray(a))[None], affine=torch.as_tensor(aff))
    return as_mt(mri, mri_aff), as_mt(ct, ct_aff), truth


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", nargs="+", default=["128x128x32", "256x256x200"])
    p.add_argument("--max-samples", type=int, nargs="+", default=[200_000, 0])
    p.add_argument("--threads", type=int, default=1, help="registration threads (RegisterToFixed's default 1; "
                   "0: SimpleITK's default, one per core)")
    p.add_argument("--backend", default="elastix", help="RegisterToFixed's backend: elastix (default) or simpleitk")
    p.add_argument("--start", choices=["benchmark", "21deg"], default="benchmark",
                   help="the true motion: benchmark (4, 3, -5 deg; 6, -4, 3 mm) or 21deg (12, -10, 14 deg; "
                   "12, -12, 10 mm)")
    args = p.parse_args()
    global ROTATION_DEG, TRANSLATION_MM
    if args.start == "21deg":
        ROTATION_DEG, TRANSLATION_MM = (12.0, -10.0, 14.0), (12.0, -12.0, 10.0)
    if args.backend == "elastix":  # its server loads ITK once per process (~10 s): not part of a registration
        from fusionmamba_med.transforms import elastix

        t0 = time.perf_counter()
        elastix.start_server(wait=True)
        print(f"elastix server ready in {time.perf_counter() - t0:.1f} s (once per process)")
    threads = args.threads or sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    print(f"backend {args.backend}, start {args.start}; SimpleITK {sitk.Version.VersionString()}, {threads} threads "
          "(simpleitk backend), rigid, Mattes MI, defaults of RegisterToFixed otherwise\n")
    print("| MRI voxels | max_samples | samples per level | seconds | max TRE mm | rotation error deg |")
    print("|---|---|---|---|---|---|")
    marks = np.array([FLIP[:3, :3] @ np.asarray(v) for v in phantom.landmarks().values()])  # RAS -> LPS
    for shape_text in args.shapes:
        shape = tuple(int(v) for v in shape_text.split("x"))
        mri, ct, truth = volumes(shape)
        true_tx = sitk.AffineTransform(3)
        true_tx.SetMatrix([float(v) for v in truth[:3, :3].ravel()])
        true_tx.SetTranslation([float(v) for v in truth[:3, 3]])
        for cap in args.max_samples:
            reg = RegisterToFixed(mode="rigid", fill_value=-1000.0, max_samples=cap or None,
                                  threads=args.threads or None, backend=args.backend)
            t0 = time.perf_counter()
            moved = reg(ct, mri)
            seconds = time.perf_counter() - t0
            info = moved.meta["registration"]
            found = transform_from_info(info)
            tre = target_registration_error(found, true_tx, marks).max()
            rot = rotation_angle_deg(np.asarray(found.GetMatrix()).reshape(3, 3) @ truth[:3, :3].T)
            samples = "/".join(f"{s / 1000:.0f}k" for s in info["samples_per_level"])
            print(f"| {shape_text} | {cap or 'none'} | {samples} | {seconds:.1f} | {tre:.2f} | {rot:.2f} |", flush=True)


if __name__ == "__main__":
    main()
