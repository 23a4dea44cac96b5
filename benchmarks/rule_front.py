"""Qabf and SSIM of simple per-pixel rules on an evaluation set: where the Qabf-vs-SSIM front of plain selections and
averages lies, next to the peers (docs/evaluation/README.md).

    python benchmarks/rule_front.py --task ir_vis [--data-root ../shared/data] [--by-folder] [--csv rules.csv]

Rules: max, mean, ``0.5 max + 0.5 mean``, the max rule's decision map ``[A > B]`` smoothed with a Gaussian of
sigma 1, 2, 4 px used as the weight of A (``w A + (1 - w) B``), and soft max rules ``w = sigmoid(k (A - B))`` for
k = 3, 4, 5, 7, 10 (intensities in [0, 1]), and the same decided on sources smoothed by the 3 x 3 binomial kernel
``[1, 2, 1]^T [1, 2, 1] / 16``, ``w = sigmoid(k (S A - S B))`` for k = 4, 6, 8, 12, 20 (the 2D weights' training
start is this rule at k = 6: ``max_rule_blend_start(net, 6.0, smooth=True)``). ``--by-folder`` gives a table per
source folder of the task (IR-VIS: TNO and RoadScene), the fronts that ``tradeoff.py --by-folder`` points compare with.
``--csv`` also writes every pair's scores (``pair,method,Qabf,SSIM``, the layout of the evaluation's ``<task>.csv``),
which ``plot_front.py`` draws.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def rules() -> dict:
    from scipy.ndimage import convolve, gaussian_filter

    out = {"max": np.maximum, "mean": lambda a, b: 0.5 * (a + b),
           "0.5 max + 0.5 mean": lambda a, b: 0.5 * np.maximum(a, b) + 0.25 * (a + b)}
    for sigma in (1, 2, 4):
        def smoothed(a, b, sigma=sigma):
            w = gaussian_filter((a > b).astype(np.float64), sigma)
            return w * a + (1 - w) * b
        out[f"smoothed max decision, sigma {sigma}"] = smoothed
    for k in (3, 4, 5, 7, 10):
        def soft(a, b, k=k):
            w = 1.0 / (1.0 + np.exp(-k * (a - b)))
            return w * a + (1 - w) * b
        out[f"soft max, k = {k}"] = soft
    binomial = np.outer([1.0, 2.0, 1.0], [1.0, 2.0, 1.0]) / 16.0
    for k in (4, 6, 8, 12, 20):
        def smoothed_soft(a, b, k=k):  # zero padding, as the network's blend branch
            d = convolve(a - b, binomial, mode="constant", cval=0.0)
            w = 1.0 / (1.0 + np.exp(-k * d))
            return w * a + (1 - w) * b
        out[f"soft max on 3x3-smoothed sources, k = {k}"] = smoothed_soft
    return out


def main(argv=None) -> None:
    import torch

    from fusionmamba_med.evaluation.__main__ import _items
    from fusionmamba_med.evaluation.pair_evaluation import evaluate_methods, items_by_folder, summarise

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", required=True, choices=["ct_mri", "pet_mri", "spect_mri", "gfp_pc", "ir_vis"])
    p.add_argument("--data-root", default=os.environ.get("FUSIONMAMBA_DATA", str(ROOT.parent / "shared" / "data")))
    p.add_argument("--by-folder", action="store_true", help="one table per source folder of the task")
    p.add_argument("--csv", type=Path, help="write every pair's scores here (pair,method,Qabf,SSIM)")
    args = p.parse_args(argv)

    def method(rule):  # a rule on float64 A, B -> the evaluation's method interface, image (2, H, W) -> (1, H, W)
        return lambda image: torch.from_numpy(np.clip(rule(*image.double().numpy()), 0, 1))[None]

    items = _items(args.task, Path(args.data_root), None)[0]
    groups = {f"{args.task}/{name}": group for name, group in items_by_folder(items).items()} if args.by_folder \
        else {args.task: items}
    all_rows = []
    for label, group in groups.items():
        rows, _ = evaluate_methods(group, {name: method(rule) for name, rule in rules().items()},
                                   metrics=["Qabf", "SSIM"])
        all_rows += rows
        print(f"| rule ({label}) | Qabf | SSIM |\n|---|---|---|")
        for name, scores in summarise(rows).items():
            print(f"| {name} | {scores['Qabf'][0]:.4f} | {scores['SSIM'][0]:.4f} |")
        print(flush=True)
    if args.csv is not None:
        import csv

        with open(args.csv, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["pair", "method", "Qabf", "SSIM"])
            writer.writeheader()
            writer.writerows(all_rows)


if __name__ == "__main__":
    main()
