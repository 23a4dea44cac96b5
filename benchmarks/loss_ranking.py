"""How the training loss ranks methods' outputs: ``FusionLoss`` (1 SSIM + 10 MSE + 10 gradient, and 10/10/10) on our
network's, IFCNN-MAX's, the max rule's and the mean's fused images of the first pairs of an evaluation set. A loss that
ranks the peer below us while the network does not get there points at the network, not the loss.

    python benchmarks/loss_ranking.py --task ct_mri --weights bundles/ct_mri/models/model.pt [--pairs 6]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> None:
    import torch
    from monai.transforms import Compose

    from fusionmamba_med.baselines.peers import peer_methods
    from fusionmamba_med.evaluation.__main__ import _items
    from fusionmamba_med.losses import FusionLoss
    from fusionmamba_med.networks import fusionmamba_from_weights
    from fusionmamba_med.transforms.pairs import LoadImagePaird, PairToFusionInputd

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", required=True, choices=["ct_mri", "pet_mri", "spect_mri", "gfp_pc", "ir_vis"])
    p.add_argument("--weights", required=True)
    p.add_argument("--pairs", type=int, default=6)
    p.add_argument("--data-root", default=os.environ.get("FUSIONMAMBA_DATA", str(ROOT.parent / "shared" / "data")))
    p.add_argument("--peers-dir", default=str(ROOT.parent / "shared" / "peers"))
    args = p.parse_args(argv)
    net = fusionmamba_from_weights(args.weights).eval()
    ifcnn = peer_methods(args.peers_dir, task=args.task)["ifcnn_max"]
    losses = {"1/10/10": FusionLoss(1, 10, 10), "10/10/10": FusionLoss(10, 10, 10)}
    totals: dict[str, list] = {}
    for item in _items(args.task, Path(args.data_root), None)[0][: args.pairs]:
        data = Compose([LoadImagePaird(), PairToFusionInputd(task="auto")])(dict(item))
        x = torch.as_tensor(data["image"])[None].float()
        with torch.no_grad():
            outputs = {"ours": net(x), "ifcnn_max": ifcnn(x), "max rule": x.max(1, keepdim=True)[0],
                       "mean": x.mean(1, keepdim=True)}
            for name, fused in outputs.items():
                totals.setdefault(name, []).append([loss(fused.clamp(0, 1), x).item() for loss in losses.values()])
    print(f"| method ({args.task}, {args.pairs} pairs) | " + " | ".join(f"loss {k}" for k in losses) + " |")
    print("|---" * (len(losses) + 1) + "|")
    for name, vals in totals.items():
        print(f"| {name} | " + " | ".join(f"{v:.3f}" for v in np.mean(vals, axis=0)) + " |")


if __name__ == "__main__":
    main()
