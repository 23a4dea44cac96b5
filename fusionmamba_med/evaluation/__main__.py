"""Evaluate the trained network against the classical baselines on held-out pairs; write a table and a figure.

    python -m fusionmamba_med.evaluation --task pet_mri --weights bundles/pet_mri/models/model.pt \
        [--data-root ../shared/data] [--out docs/evaluation] [--preset tiny] [--examples 4]
    python -m fusionmamba_med.evaluation --task ir_vis --weights bundles/generic_2d/models/model.pt \
        --split-file <train output>/split.json          # only the pairs held out from training

Deep peers (IFCNN-MAX, MATR) are added as rows ``ifcnn_max`` and ``matr`` when their published weights are found
under --peers-dir (default ../shared/peers next to the repository, when it exists; layout ifcnn/IFCNN-MAX.pth,
matr/model_10.pth); --no-peers leaves them out. See :mod:`fusionmamba_med.baselines.peers`.

Tasks: ct_mri, pet_mri, spect_mri (the small MRI_CT / MRI_PET / MRI_SPECT sets, never used for training: the shipped
medical weights are trained on harvard/), gfp_pc (GFP_PC), ir_vis (TNO + RoadScene, held-out names from the split).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from pathlib import Path


from fusionmamba_med.baselines.peers import peer_methods
from fusionmamba_med.io.pairs import discover_pairs
from fusionmamba_med.evaluation.pair_evaluation import EVAL_TASKS, baseline_methods, evaluate_methods, network_method
from fusionmamba_med.evaluation.pair_evaluation import write_report
from fusionmamba_med.networks import fusionmamba_from_weights

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PEERS = ROOT.parent / "shared" / "peers"


def _items(task: str, data_root: Path, split_file: str | None) -> tuple[list[dict], tuple[str, str]]:
    keys = ["ir_vis_tno", "ir_vis_roadscene"] if task == "ir_vis" else [task]
    items: list[dict] = []
    for key in keys:
        dir_a, dir_b = (data_root / d for d in EVAL_TASKS[key]["dirs"])
        found, errors = discover_pairs(dir_a, dir_b)
        for err in errors:
            logging.warning("%s", err)
        label = dir_a.parent.name
        items += [{**i, "name": f"{label}/{i['name']}"} for i in found]
    if split_file:
        held = set(json.loads(Path(split_file).read_text())["validation"])
        items = [i for i in items if i["name"] in held]
    labels = tuple(Path(d).name for d in EVAL_TASKS[keys[0]]["dirs"])
    return items, labels


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", required=True, choices=["ct_mri", "pet_mri", "spect_mri", "gfp_pc", "ir_vis"])
    p.add_argument("--weights", required=True, help="a state dict for the preset (models/model.pt)")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--data-root", default=os.environ.get("FUSIONMAMBA_DATA", str(ROOT.parent / "shared" / "data")))
    p.add_argument("--split-file", default=None, help="training split.json: evaluate its 'validation' pairs only")
    p.add_argument("--out", default=str(ROOT / "docs" / "evaluation"))
    p.add_argument("--examples", type=int, default=4, help="pairs shown in the figure")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N pairs")
    p.add_argument("--peers-dir", "--peers_dir", default=str(DEFAULT_PEERS) if DEFAULT_PEERS.is_dir() else None,
                   help="folder with the peers' published weights (ifcnn/IFCNN-MAX.pth, matr/model_10.pth); "
                        "default ../shared/peers when it exists")
    p.add_argument("--no-peers", action="store_true", help="leave the deep peers out")
    p.add_argument("--paper-numbers", default=str(ROOT / "docs" / "evaluation" / "paper_numbers.json"))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    items, labels = _items(args.task, Path(args.data_root), args.split_file)
    if args.limit:
        items = items[: args.limit]
    if not items:
        raise SystemExit(f"no pairs found for task {args.task} under {args.data_root}")
    net = fusionmamba_from_weights(args.weights, args.preset)
    peers = {} if args.no_peers or not args.peers_dir else peer_methods(args.peers_dir, task=args.task)
    if args.peers_dir and not args.no_peers and not peers:
        logging.warning("no peer weights found under %s: peer rows left out", args.peers_dir)
    methods = {**baseline_methods(), **{k: network_method(v) for k, v in peers.items()},
               "FusionMamba (ours)": network_method(net)}
    t0 = time.perf_counter()
    rows, kept = evaluate_methods(items, methods, task="auto", keep=args.examples)
    seconds = time.perf_counter() - t0
    paper = None
    label = EVAL_TASKS["ir_vis_tno" if args.task == "ir_vis" else args.task]["label"]
    if Path(args.paper_numbers).is_file():
        paper = json.loads(Path(args.paper_numbers).read_text()).get("tasks", {}).get(label)
    header = (f"### {label}: {len(items)} held-out pairs\n\nCommand: `python -m fusionmamba_med.evaluation "
              f"--task {args.task} --weights {os.path.relpath(args.weights, ROOT)}"
              + (f" --split-file {args.split_file}" if args.split_file else "") + "`  \n"
              f"Preset {args.preset}; {platform.machine()} CPU, {seconds:.0f} s for all methods."
              + (f"  \nPeers (published weights, our port): {', '.join(peers)}." if peers else ""))
    paths = write_report(args.out, args.task, rows, kept, header=header, paper=paper, labels=labels)
    print(Path(paths["md"]).read_text())
    print({k: str(v) for k, v in paths.items()})


if __name__ == "__main__":
    main()
