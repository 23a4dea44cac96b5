"""Seconds per whole study, end to end, broken down by stage (load, register, normalise, fuse, write, QA, review
scene), and registration accuracy when the truth is known.

    python benchmarks/bench_study.py [--bundle pet_mri] [--device cpu] [--output-format nifti] [--registration rigid]
                                     [--out table.md]
    python benchmarks/bench_study.py --bundle ct_mri --phantom 256x256x200 --studies 4 [--start 21deg] [--repeat]

Runs the bundle's own inference config (``bundles/<bundle>/inference.json``) into a temporary folder and prints a
Markdown table from the per-stage timings the runner records in ``fusion_summary.json``. By default on the bundle's
sample studies; with ``--phantom XxYxZ``, on ``--studies`` generated head-phantom studies (``make_medical_study``:
the MRI as a DICOM series, 1 mm in-plane, slices over 150 mm; the moving image as the task's NIfTI / NRRD file on its
own grid, moved by a known rigid transform: ``--start benchmark`` = 4, 3, -5 deg / 6, -4, 3 mm as
bench_registration.py, ``--start 21deg`` = 12, -10, 14 deg / 12, -12, 10 mm, i.e. 21 deg and 20 mm), with the
landmarks' target registration error from each study's ground truth. The batch's wall time is the whole command's
minus the model build and study discovery (timed separately). ``--repeat`` runs the command twice and says whether
the two output folders are byte-identical.
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
STARTS = {"benchmark": ((4.0, 3.0, -5.0), (6.0, -4.0, 3.0)), "21deg": ((12.0, -10.0, 14.0), (12.0, -12.0, 10.0))}
STAGES = {  # runner timing keys -> column
    "LoadStudyd": "load",
    "CopyItemsd": "normalise",
    "write_moving": "write",
    "review_scene": "review",
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


def make_phantom_studies(root: Path, bundle: str, shape: tuple[int, int, int], studies: int, start: str) -> Path:
    """``studies`` phantom studies of ``bundle``'s task under ``root/<bundle>/``; returns that folder."""
    from fusionmamba_med.data.sample_medical import make_medical_study

    rotation, translation = STARTS[start]
    for i in range(studies):
        make_medical_study(root, bundle, f"study{i + 1:02d}", seed=i, patient_id=f"BENCH{i + 1:02d}",
                           mri_shape=shape, mri_spacing=(1.0, 1.0, 150.0 / shape[2]), mri_centre_ras=(0.0, 0.0, 0.0),
                           rotation_deg=rotation, translation_mm=translation)
    return root / bundle


def max_tre(record: dict, study_dir: Path) -> float | None:
    """Largest landmark TRE (mm) of a study's registration against its ``ground_truth.json`` (None without one)."""
    import numpy as np
    import SimpleITK as sitk

    from fusionmamba_med.transforms import target_registration_error, transform_from_info

    truth_file = study_dir / "ground_truth.json"
    if not truth_file.is_file() or "registration" not in record:
        return None
    truth = json.loads(truth_file.read_text())
    m = np.array(truth["fixed_to_moving_lps"])
    true_t = sitk.AffineTransform(m[:3, :3].flatten().tolist(), m[:3, 3].tolist())
    points = [v["fixed_lps"] for v in truth["landmarks"].values()]
    return float(target_registration_error(transform_from_info(record["registration"]), true_t, points).max())


def tree_digest(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder`` (relative path -> digest), the run's summary left out."""
    import hashlib

    return {str(f.relative_to(folder)): hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(folder.rglob("*"))
            if f.is_file() and not f.name.startswith("fusion_summary")}


def run_bundle(bundle: str, out: str, overrides: dict) -> tuple[dict, float, float]:
    """The bundle's inference into ``out``: (summary, seconds of the whole command, seconds of its set-up: model
    build and study discovery)."""
    from monai.bundle import ConfigWorkflow

    t0 = time.perf_counter()
    workflow = ConfigWorkflow(config_file=str(ROOT / "bundles" / bundle / "inference.json"), workflow_type="infer",
                              bundle_root=str(ROOT / "bundles" / bundle), output_dir=out, **overrides)
    workflow.initialize()
    workflow.parser.get_parsed_content("network")  # the model is built before the first study, as in a run
    workflow.parser.get_parsed_content("evaluator")
    setup = time.perf_counter() - t0
    workflow.run()
    workflow.finalize()
    return json.loads((Path(out) / "fusion_summary.json").read_text()), time.perf_counter() - t0, setup


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", default="pet_mri")
    p.add_argument("--device", default="cpu")
    p.add_argument("--output-format", default="nifti")
    p.add_argument("--registration", default=None, help="registration_mode override")
    p.add_argument("--slice-batch-size", type=int, default=8)
    p.add_argument("--phantom", default=None, help="XxYxZ: generated phantom studies on this MRI grid")
    p.add_argument("--studies", type=int, default=1, help="how many phantom studies")
    p.add_argument("--start", choices=sorted(STARTS), default="benchmark", help="the phantom studies' true motion")
    p.add_argument("--repeat", action="store_true", help="run twice and compare the outputs byte for byte")
    p.add_argument("--out", default=None, help="also write the table (without the run's log) to this file")
    args = p.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        overrides = {"overwrite": "overwrite", "device": args.device, "progress": False,
                     "output_format": args.output_format, "slice_batch_size": args.slice_batch_size}
        if args.registration:
            overrides["registration_mode"] = args.registration
        data_dir = ROOT / "sample_data" / args.bundle
        if args.phantom:
            shape = tuple(int(v) for v in args.phantom.split("x"))
            data_dir = make_phantom_studies(Path(tmp) / "data", args.bundle, shape, args.studies, args.start)
        overrides["dataset_dir"] = str(data_dir)
        summary, wall, setup = run_bundle(args.bundle, str(Path(tmp) / "out1"), overrides)
        identical = None
        if args.repeat:
            run_bundle(args.bundle, str(Path(tmp) / "out2"), overrides)
            first, second = tree_digest(Path(tmp) / "out1"), tree_digest(Path(tmp) / "out2")
            identical = (first == second, len(first), sorted(k for k in first if first.get(k) != second.get(k)))
        tre = {r["study"]: max_tre(r, data_dir / r["study"]) for r in summary["studies"]}

    cols = ["load", "register", "normalise", "colour", "fuse", "write", "qa", "review"]
    lines: list[str] = []
    print = lines.append  # noqa: A001 - collect the table, print it once at the end
    extra = {"phantom": f"{args.phantom} x {args.studies}", "start": args.start} if args.phantom else {}
    print(machine_line(args.device, bundle=args.bundle, format=args.output_format, **extra))
    print("| study | shape (MRI grid) | " + " | ".join(cols) + " | total s | register / fuse | max TRE mm |")
    print("|---" * (len(cols) + 5) + "|")
    for rec in summary["studies"]:
        if rec["status"] != "fused":
            print(f"| {rec['study']} | {rec['status']}: {rec.get('reason', '')[:60]} |" + " |" * (len(cols) + 3))
            continue
        stage = dict.fromkeys(cols, 0.0)
        for key, sec in rec["seconds"].items():
            stage[STAGES.get(key, "normalise")] += sec
        shape = "x".join(str(s) for s in rec.get("shape", [])) or "?"
        ratio = stage["register"] / stage["fuse"] if stage["fuse"] else float("nan")
        t = tre.get(rec["study"])
        print(f"| {rec['study']} | {shape} | " + " | ".join(f"{stage[c]:.2f}" for c in cols)
              + f" | {rec['total_seconds']:.2f} | {ratio:.2f} | {'-' if t is None else f'{t:.2f}'} |")
    print(f"\nwhole command: {wall:.1f} s = set-up (model build, study discovery) {setup:.1f} s + the batch of "
          f"{len(summary['studies'])} {wall - setup:.1f} s")
    if identical is not None:
        same, count, differing = identical
        print(f"two runs: {'byte-identical' if same else 'DIFFERENT'} ({count} files"
              + (f"; differing: {differing[:5]}" if differing else "") + ")")
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
