"""What each part of a trained FusionMamba contributes to its Qabf and SSIM: the weights as they are, and with a part
switched off, on the evaluation sets.

    python benchmarks/ablate_network.py --weights bundles/generic_2d/models/model.pt --tasks ir_vis gfp_pc

Variants (a part is switched off by zeroing its weights in a copy; the file is not touched):

- ``full``: the weights as they are;
- ``no head``: the head conv zeroed, so the output is the residual alone (the mean of the sources for "mean" weights,
  the blend ``w A + (1 - w) B`` for "blend" weights);
- ``blend without features`` ("blend" weights only): the blend branch's input weights on the network's features
  zeroed, so ``w`` is computed from the two sources alone (a learned per-pixel rule);
- ``blend from features only`` ("blend" weights only): the branch's input weights on the sources zeroed.

If ``full`` scores about the same as a variant without the network's features, the output is a rule, not the
network's work (docs/evaluation/README.md).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def variants(network: torch.nn.Module) -> dict[str, dict[str, torch.Tensor]]:
    """``{name: state dict}`` of the ablations of ``network`` (its own state is not changed)."""
    full = {k: v.clone() for k, v in network.state_dict().items()}
    out = {"full": full}
    no_head = {k: v.clone() for k, v in full.items()}
    no_head["head.weight"].zero_()
    no_head["head.bias"].zero_()
    out["no head"] = no_head
    if network.residual == "blend":
        c0 = full["head.weight"].shape[1]  # the branch reads [features (C0), A, B]
        for name, sl in (("blend without features", slice(0, c0)), ("blend from features only", slice(c0, c0 + 2))):
            state = {k: v.clone() for k, v in full.items()}
            state["blend.0.weight"][:, sl] = 0
            out[name] = state
    return out


def main(argv=None) -> None:
    from fusionmamba_med.evaluation.__main__ import _items
    from fusionmamba_med.evaluation.pair_evaluation import score_network
    from fusionmamba_med.networks import fusionmamba_from_weights

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", required=True)
    p.add_argument("--tasks", nargs="+", default=["ir_vis", "gfp_pc"])
    p.add_argument("--data-root", default=os.environ.get("FUSIONMAMBA_DATA", str(ROOT.parent / "shared" / "data")))
    args = p.parse_args(argv)
    net = fusionmamba_from_weights(args.weights).eval()
    items = {task: _items(task, Path(args.data_root), None)[0] for task in args.tasks}
    print(f"{args.weights} (residual {net.residual!r})")
    print("| variant | " + " | ".join(f"{task} Qabf / SSIM" for task in args.tasks) + " |")
    print("|---" * (len(args.tasks) + 1) + "|")
    for name, state in variants(net).items():
        net.load_state_dict(state)
        cells = [f"{s['Qabf']:.4f} / {s['SSIM']:.4f}" for s in (score_network(net, pairs) for pairs in items.values())]
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
