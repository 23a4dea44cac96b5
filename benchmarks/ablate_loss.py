"""Loss ablation on one budget: fine-tune the shipped medical weights with each loss setting for the same number of
iterations, then score each result on the medical evaluation sets (Qabf, SSIM, SF, AG).

    python benchmarks/ablate_loss.py --iterations 150 --out runs/ablation [--settings A B C D]

Each setting trains with ``bundles/pet_mri/train.json`` on harvard/ (CT-, PET- and SPECT-MRI jointly, batch 4, crop
128, seed 0) from ``bundles/pet_mri/models/model.pt``, with the loss overridden; results go to ``<out>/results.md``
(a Qabf-vs-SSIM table per task) and ``<out>/results.json``. CPU-only runs take about 1.5-5 s per iteration on a
2-core machine depending on load.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: name -> FusionLoss keyword arguments.
SETTINGS: dict[str, dict] = {
    "A ssim10-mse10-grad1 (shipped recipe)": {"w_ssim": 10.0, "w_int": 10.0, "w_grad": 1.0},
    "B ssim1-mse10-grad10": {"w_ssim": 1.0, "w_int": 10.0, "w_grad": 10.0},
    "C ssim1-l1x10-grad10": {"w_ssim": 1.0, "w_int": 10.0, "w_grad": 10.0, "intensity": "l1"},
    "D msssim1-mse10-grad10": {"w_ssim": 1.0, "w_int": 10.0, "w_grad": 10.0, "structure": "ms_ssim"},
    "E ssim2-mse20-grad10": {"w_ssim": 2.0, "w_int": 20.0, "w_grad": 10.0},
}
TASKS = ("ct_mri", "pet_mri", "spect_mri")
METRICS = ("Qabf", "SSIM", "SF", "AG")


def train(name: str, loss: dict, iterations: int, out: Path, init: Path) -> Path:
    run_dir = out / name.split()[0]
    weights = run_dir / "model.pt"
    if weights.is_file():
        return weights
    loss_cfg = {"_target_": "fusionmamba_med.losses.FusionLoss", **loss}
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(ROOT / "bundles/pet_mri/train.json"),
           "--train_sources", "@harvard_sources", "--output_dir", str(run_dir), "--init_weights", str(init),
           "--max_iterations", str(iterations), "--batch_size", "4", "--crop_size", "128", "--learning_rate", "0.0001",
           "--val_interval", "0", "--checkpoint_every", str(iterations), "--progress", "False",
           "--loss", repr(loss_cfg)]
    t0 = time.time()
    with open(out / f"{name.split()[0]}.log", "w") as log:
        subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    (run_dir / "seconds.txt").write_text(f"{time.time() - t0:.0f}\n")
    return weights


def score(weights: Path, data_root: Path) -> dict:
    from fusionmamba_med.evaluation.__main__ import _items
    from fusionmamba_med.evaluation.pair_evaluation import evaluate_methods, network_method, summarise
    from fusionmamba_med.networks import fusionmamba_from_weights

    net = fusionmamba_from_weights(weights)
    out = {}
    for task in TASKS:
        items, _ = _items(task, data_root, None)
        rows, _ = evaluate_methods(items, {"ours": network_method(net)}, metrics=list(METRICS))
        out[task] = {m: v[0] for m, v in summarise(rows)["ours"].items()}
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--iterations", type=int, default=150)
    p.add_argument("--out", default=str(ROOT / "runs" / "ablation"))
    p.add_argument("--settings", nargs="*", default=None, help="letters of the settings to run (default: all)")
    p.add_argument("--data-root", default=os.environ.get("FUSIONMAMBA_DATA", str(ROOT.parent / "shared" / "data")))
    p.add_argument("--init", default=str(ROOT / "bundles/pet_mri/models/model.pt"))
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    if "shipped" not in results:
        results["shipped"] = {"scores": score(Path(args.init), Path(args.data_root)), "iterations": 0}
    for name, loss in SETTINGS.items():
        if args.settings and name.split()[0] not in args.settings:
            continue
        if name in results:
            continue
        weights = train(name, loss, args.iterations, out, Path(args.init))
        seconds = float((weights.parent / "seconds.txt").read_text())
        results[name] = {"loss": loss, "iterations": args.iterations, "seconds": seconds,
                         "scores": score(weights, Path(args.data_root))}
        results_path.write_text(json.dumps(results, indent=2))
        print(f"{name}: {results[name]['scores']}", flush=True)
    results_path.write_text(json.dumps(results, indent=2))
    lines = [f"Loss ablation: fine-tunes of the shipped medical weights, {args.iterations} iterations each (batch 4, "
             "crop 128, harvard/ CT+PET+SPECT-MRI), scored on MRI_CT / MRI_PET / MRI_SPECT "
             f"(`python benchmarks/ablate_loss.py --iterations {args.iterations}`).", ""]
    for task in TASKS:
        lines += [f"**{task}**", "", "| setting | " + " | ".join(METRICS) + " |", "|---" * (len(METRICS) + 1) + "|"]
        for name, res in results.items():
            s = res["scores"][task]
            lines.append(f"| {name} | " + " | ".join(f"{s[m]:.3f}" for m in METRICS) + " |")
        lines.append("")
    (out / "results.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
