"""Qabf against SSIM for one task, per evaluation set and over all its pairs: the per-pixel rules and their front, the
evaluation's classical methods and deep peers, the shipped weights and every training setting tried
(docs/evaluation/README.md).

    python benchmarks/plot_front.py --task ir_vis --out docs/evaluation/ir_vis_front.png

Reads, from ``--dir`` (default docs/evaluation): ``<task>.csv`` (``python -m fusionmamba_med.evaluation``: ours,
peers and classical methods per pair), ``<task>_rules.csv`` (``python benchmarks/rule_front.py --task <task> --csv``)
and ``<task>_tried.csv`` (one row per checkpoint tried: ``setting, iterations, sampling, <set>_Qabf, <set>_SSIM, ...,
all_Qabf, all_SSIM``; blank where a set was not scored). Needs matplotlib: ``pip install -e ".[plot]"``.
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PEERS = {"ifcnn_max": ("IFCNN-MAX", "^", "tab:blue"), "matr": ("MATR", "v", "tab:purple")}
#: colour and legend of the checkpoints tried, by their ``sampling`` column
SAMPLING = {"by size": ("tab:orange", "checkpoints tried, pairs drawn by dataset size"),
            "balanced": ("tab:green", "checkpoints tried, datasets drawn equally often"),
            "balanced 0.5": ("tab:olive", "checkpoints tried, datasets drawn by the root of their size"),
            "both": ("tab:cyan", "weight mean of a by-size and a balanced checkpoint"),
            "": ("tab:gray", "other training starts (a soft max rule set into the branch)")}


def set_means(rows: list[dict]) -> dict[str, dict[str, tuple[float, float]]]:
    """Per-pair rows ``{"pair": "TNO/01", "method", "Qabf", "SSIM"}`` -> ``{set: {method: (Qabf, SSIM)}}`` means,
    sets being the folder before the first "/" of the pair's name, and "all" every pair."""
    acc: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    for r in rows:
        point = (float(r["Qabf"]), float(r["SSIM"]))
        for group in (r["pair"].split("/")[0], "all"):
            acc[(group, r["method"])].append(point)
    out: dict[str, dict[str, tuple[float, float]]] = defaultdict(dict)
    for (group, method), points in acc.items():
        out[group][method] = (sum(p[0] for p in points) / len(points), sum(p[1] for p in points) / len(points))
    return out


def front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The (Qabf, SSIM) points no other point beats on both, by rising SSIM."""
    kept = [p for p in points if not any(q[0] >= p[0] and q[1] >= p[1] and q != p for q in points)]
    return sorted(kept, key=lambda p: p[1])


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def main(argv=None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", required=True)
    p.add_argument("--dir", type=Path, default=ROOT / "docs" / "evaluation")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)

    evaluated = set_means(read_csv(args.dir / f"{args.task}.csv"))
    rules = set_means(read_csv(args.dir / f"{args.task}_rules.csv"))
    tried = read_csv(args.dir / f"{args.task}_tried.csv")
    sets = [s for s in evaluated if s != "all"] + ["all"]

    fig, axes = plt.subplots(1, len(sets), figsize=(6 * len(sets), 6.4))
    for ax, group in zip(axes, sets):
        n_pairs = sum(1 for r in read_csv(args.dir / f"{args.task}.csv")
                      if r["method"] == "ifcnn_max" and (group == "all" or r["pair"].startswith(group + "/")))
        rule_points = list(rules[group].values())
        line = front(rule_points + [v for k, v in evaluated[group].items() if k in ("max_abs", "average")])
        ax.plot([q[1] for q in line], [q[0] for q in line], "-", color="0.6", lw=1, zorder=1,
                label="front of the rules (rule_front.py)")
        ax.scatter([q[1] for q in rule_points], [q[0] for q in rule_points], s=14, color="0.45", zorder=2,
                   label="per-pixel rules (soft max, smoothed, max, mean)")
        for name, (q, s) in evaluated[group].items():
            if name in PEERS:
                label, marker, colour = PEERS[name]
                ax.scatter([s], [q], marker=marker, s=70, color=colour, zorder=4, label=label)
            elif name not in ("FusionMamba (ours)",):
                ax.scatter([s], [q], marker="s", s=22, facecolor="none", edgecolor="0.3", zorder=3)
                ax.annotate(name, (s, q), fontsize=7, color="0.3", xytext=(3, 3), textcoords="offset points")
        for sampling in dict.fromkeys(r["sampling"] for r in tried):
            colour, label = SAMPLING.get(sampling, ("tab:brown", f"checkpoints tried ({sampling})"))
            pts = [(float(r[f"{group}_Qabf"]), float(r[f"{group}_SSIM"])) for r in tried
                   if r.get(f"{group}_Qabf") and r["sampling"] == sampling and r["setting"] != "start"]
            if pts:
                ax.scatter([q[1] for q in pts], [q[0] for q in pts], s=16, color=colour, alpha=0.75, zorder=3,
                           label=label)
        start = [r for r in tried if r["setting"] == "start" and r.get(f"{group}_Qabf")]
        if start:
            ax.scatter([float(start[0][f"{group}_SSIM"])], [float(start[0][f"{group}_Qabf"])], marker="D", s=45,
                       color="black", zorder=5, label="training start (smoothed soft max k = 6)")
        q, s = evaluated[group]["FusionMamba (ours)"]
        ax.scatter([s], [q], marker="*", s=220, color="tab:red", edgecolor="black", zorder=6, label="ours (shipped)")
        ax.set_title(f"{args.task}: {group} ({n_pairs} pairs)" if group != "all" else f"{args.task}: all {n_pairs} pairs")
        ax.set_xlabel("SSIM (mean of SSIM(F, A) and SSIM(F, B))")
        ax.set_ylabel("Qabf")
        ax.set_ylim(0.40, 0.62)
        ax.set_xlim(0.695, 0.76)
        ax.grid(alpha=0.3)
    handles, labels = axes[-1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.suptitle("Up and right is better on both; mean and average (SSIM about 0.76-0.78, Qabf about 0.36-0.37) "
                 "lie below the plotted range", fontsize=9)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
