"""Qabf and SSIM of points between a model and its fine-tune, ``(1 - t) * start + t * end``, on the evaluation sets:
the curve the shipped medical weights were chosen from (docs/evaluation/README.md).

    python benchmarks/tradeoff.py --start runs/medical_v1.pt --end runs/medical/model.pt \
        --t 0 0.5 0.65 0.75 1 --tasks ct_mri pet_mri spect_mri [--out runs/tradeoff.json]

Only our network is run (the peers' and rules' rows come from ``python -m fusionmamba_med.evaluation``).
``--by-folder`` scores each source folder of a task on its own (e.g. ``ir_vis/TNO`` and ``ir_vis/RoadScene``).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> None:
    from fusionmamba_med.evaluation.__main__ import _items
    from fusionmamba_med.evaluation.pair_evaluation import items_by_folder, score_network
    from fusionmamba_med.networks import fusionmamba_from_weights
    from fusionmamba_med.training import interpolate_weights

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--start", required=True)
    p.add_argument("--end", required=True)
    p.add_argument("--t", type=float, nargs="+", default=[0.0, 0.5, 0.65, 0.75, 1.0])
    p.add_argument("--tasks", nargs="+", default=["ct_mri", "pet_mri", "spect_mri"])
    p.add_argument("--data-root", default=os.environ.get("FUSIONMAMBA_DATA", str(ROOT.parent / "shared" / "data")))
    p.add_argument("--out", default=None, help="also write the rows as JSON")
    p.add_argument("--by-folder", action="store_true", help="one column per source folder of each task")
    args = p.parse_args(argv)
    load = lambda path: torch.load(path, map_location="cpu", weights_only=True)  # noqa: E731
    start, end = load(args.start), load(args.end)
    items = {task: _items(task, Path(args.data_root), None)[0] for task in args.tasks}
    if args.by_folder:
        items = {f"{task}/{name}": group for task, pairs in items.items()
                 for name, group in items_by_folder(pairs).items()}
    rows = []
    print("| t | " + " | ".join(f"{column} Qabf / SSIM" for column in items) + " |")
    print("|---" * (len(items) + 1) + "|")
    with tempfile.TemporaryDirectory() as tmp:
        for t in args.t:
            path = Path(tmp) / "w.pt"
            torch.save(interpolate_weights(start, end, t), path)
            net = fusionmamba_from_weights(path)
            row = {"t": t}
            for task, pairs in items.items():
                row[task] = score_network(net, pairs)
            rows.append(row)
            print(f"| {t:g} | " + " | ".join(f"{row[k]['Qabf']:.4f} / {row[k]['SSIM']:.4f}" for k in items) + " |",
                  flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
