"""Score fusion methods (the network and the classical baselines) on held-out 2D pairs.

Every method gets the same input: the pair's network input ``image`` (2, H, W) in [0, 1] (channel 0 = A's luma,
channel 1 = B's luma; a colour image enters through its BT.601 Y, as in training and inference). The metrics are
computed on the fused luma against the two source lumas, on 8-bit grey (see :mod:`fusionmamba_med.metrics`).
The figure shows colour results (fused Y recombined with the colour source's Cb, Cr).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from monai.transforms import Compose

from fusionmamba_med.baselines import ClassicalFusionNet
from fusionmamba_med.inference.forward import run_network
from fusionmamba_med.transforms.pairs import LoadImagePaird, PairToFusionInputd, RestorePairColord
from fusionmamba_med.metrics import METRICS, evaluate_fusion

__all__ = ["EVAL_TASKS", "evaluate_methods", "fuse_pair", "items_by_folder", "network_method", "score_network",
           "summarise", "write_report"]

#: held-out evaluation folders per task, relative to the data root (A folder, B folder).
EVAL_TASKS: dict[str, dict] = {
    "ct_mri": {"dirs": ("MRI_CT/MRI", "MRI_CT/CT"), "label": "CT-MRI"},
    "pet_mri": {"dirs": ("MRI_PET/MRI", "MRI_PET/PET"), "label": "PET-MRI"},
    "spect_mri": {"dirs": ("MRI_SPECT/MRI", "MRI_SPECT/SPECT"), "label": "SPECT-MRI"},
    "gfp_pc": {"dirs": ("GFP_PC/GFP", "GFP_PC/PC"), "label": "GFP-PC"},
    "ir_vis_tno": {"dirs": ("TNO/vi", "TNO/ir"), "label": "IR-VIS"},
    "ir_vis_roadscene": {"dirs": ("RoadScene/vi", "RoadScene/ir"), "label": "IR-VIS"},
}

Method = Callable[[torch.Tensor], torch.Tensor]  # image (2, H, W) -> fused luma (1, H, W)


def network_method(network: torch.nn.Module, device: str | torch.device = "cpu") -> Method:
    """Wrap a fusion network ([N, 2, H, W] -> [N, 1, H, W]) as a per-pair method."""
    network = network.to(device).eval()

    def fuse(image: torch.Tensor) -> torch.Tensor:
        return run_network(network, image[None].float(), device)[0].float().cpu().clamp(0, 1)

    return fuse


def baseline_methods() -> dict[str, Method]:
    """The classical rules, same interface as :func:`network_method`."""
    return {name: network_method(ClassicalFusionNet(name)) for name in ("average", "max_abs", "laplacian", "wavelet")}


def fuse_pair(item: Mapping, methods: Mapping[str, Method], task: str = "auto") -> dict:
    """Load one pair, run every method. Returns ``{"image", "sources" (A, B as stored), "fused": {name: luma},
    "colour": {name: RGB or luma}}``."""
    data = Compose([LoadImagePaird(), PairToFusionInputd(task=task)])(dict(item))
    out = {"name": item.get("name"), "image": data["image"], "sources": (data["a"], data["b"]), "fused": {},
           "colour": {}}
    for name, method in methods.items():
        y = method(torch.as_tensor(data["image"]))
        out["fused"][name] = y
        restored = RestorePairColord()({**data, "pred": y})
        out["colour"][name] = restored["pred"]
    return out


def evaluate_methods(items: Sequence[Mapping], methods: Mapping[str, Method], task: str = "auto",
                     metrics: Sequence[str] | None = None, keep: int = 0) -> tuple[list[dict], list[dict]]:
    """Score every method on every pair. Returns (rows ``{"pair", "method", metric: value}``, the first ``keep``
    fused pairs for a figure)."""
    rows, kept = [], []
    for item in items:
        res = fuse_pair(item, methods, task)
        a, b = res["image"][0].numpy(), res["image"][1].numpy()
        for name, y in res["fused"].items():
            scores = evaluate_fusion(y[0].numpy(), a, b, metrics)
            rows.append({"pair": res["name"], "method": name, **scores})
        if len(kept) < keep:
            kept.append(res)
    return rows, kept


def summarise(rows: Sequence[Mapping]) -> dict[str, dict[str, tuple[float, float]]]:
    """``{method: {metric: (mean, sd)}}`` over pairs (infinite values, e.g. PSNR of identical images, skipped)."""
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for method in dict.fromkeys(r["method"] for r in rows):
        sel = [r for r in rows if r["method"] == method]
        out[method] = {}
        for metric in (k for k in sel[0] if k not in ("pair", "method")):
            vals = np.array([r[metric] for r in sel], dtype=np.float64)
            vals = vals[np.isfinite(vals)]
            out[method][metric] = (float(vals.mean()), float(vals.std())) if vals.size else (math.nan, math.nan)
    return out


def items_by_folder(items: Sequence[Mapping]) -> dict[str, list[Mapping]]:
    """A task's pairs grouped by the source folder their name starts with (``"TNO/14"`` -> ``"TNO"``), in order of
    first appearance: each evaluation set of a task (e.g. IR-VIS's TNO and RoadScene) scored on its own."""
    groups: dict[str, list[Mapping]] = {}
    for item in items:
        groups.setdefault(str(item["name"]).split("/")[0], []).append(item)
    return groups


def score_network(network: torch.nn.Module, items: Sequence[Mapping], metrics: Sequence[str] = ("Qabf", "SSIM"),
                  device: str | torch.device = "cpu") -> dict[str, float]:
    """Mean of each metric for one network over a task's pairs, ``{metric: mean}`` (benchmarks compare weights with
    it)."""
    rows, _ = evaluate_methods(items, {"network": network_method(network, device)}, metrics=list(metrics))
    return {metric: mean for metric, (mean, _) in summarise(rows)["network"].items()}


def _to_rgb8(x) -> np.ndarray:
    arr = torch.as_tensor(x).float().numpy()
    if arr.shape[0] == 1:
        arr = np.repeat(arr, 3, axis=0)
    return (np.clip(arr[:3].transpose(1, 2, 0), 0, 1) * 255 + 0.5).astype(np.uint8)


def save_figure(path: Path, kept: Sequence[Mapping], labels: tuple[str, str]) -> Path:
    """A grid: one row per pair, columns A | B | each method (colour restored where the pair had colour)."""
    from PIL import Image, ImageDraw

    names = list(kept[0]["colour"])
    titles = [labels[0], labels[1], *names]
    tile = 192
    pad = 18
    canvas = Image.new("RGB", (tile * len(titles), pad + tile * len(kept)), "white")
    draw = ImageDraw.Draw(canvas)
    for c, t in enumerate(titles):
        draw.text((c * tile + 4, 3), t, fill="black")
    for r, res in enumerate(kept):
        cols = [res["sources"][0], res["sources"][1], *[res["colour"][n] for n in names]]
        for c, img in enumerate(cols):
            im = Image.fromarray(_to_rgb8(img))
            im.thumbnail((tile, tile))
            canvas.paste(im, (c * tile, pad + r * tile))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


#: the montage's columns after the two sources, when present: ours, the best deep peer, the best classical rule.
MONTAGE_METHODS = ("FusionMamba (ours)", "ifcnn_max", "max_abs")


def _crop_box(source_b: np.ndarray, size: int) -> tuple[int, int]:
    """Top-left (row, col) of the ``size`` x ``size`` window with the most detail (gradient energy) in B."""
    g = np.abs(np.diff(source_b, axis=0))[:, :-1] + np.abs(np.diff(source_b, axis=1))[:-1, :]
    h, w = g.shape
    if h < size or w < size:
        return 0, 0
    cs = np.pad(g.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    sums = cs[size:, size:] - cs[:-size, size:] - cs[size:, :-size] + cs[:-size, :-size]
    r, c = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return int(r), int(c)


def save_montage(path: Path, kept: Sequence[Mapping], labels: tuple[str, str],
                 methods: Sequence[str] = MONTAGE_METHODS, tile: int = 256) -> Path:
    """Per pair, two rows: A | B | each of ``methods`` (colour restored), then the same columns as 2x crops of the
    window where B has the most detail (nearest-neighbour, so edges and noise show as they are)."""
    from PIL import Image, ImageDraw

    names = [m for m in methods if m in kept[0]["colour"]]
    titles = [labels[0], labels[1], *names]
    pad = 18
    canvas = Image.new("RGB", (tile * len(titles), pad + 2 * tile * len(kept)), "white")
    draw = ImageDraw.Draw(canvas)
    for c, t in enumerate(titles):
        draw.text((c * tile + 4, 3), t, fill="black")
    for r, res in enumerate(kept):
        cols = [res["sources"][0], res["sources"][1], *[res["colour"][n] for n in names]]
        images = [_to_rgb8(img) for img in cols]
        b_luma = np.asarray(res["image"][1], dtype=np.float64)
        half = max(8, min(b_luma.shape) // 2)  # a quarter of the image, shown at 2x
        top, left = _crop_box(b_luma, half)
        for c, arr in enumerate(images):
            im = Image.fromarray(arr)
            im.thumbnail((tile, tile))
            canvas.paste(im, (c * tile, pad + 2 * r * tile))
            crop = Image.fromarray(arr[top:top + half, left:left + half]).resize((2 * half, 2 * half), Image.NEAREST)
            crop.thumbnail((tile, tile))
            canvas.paste(crop, (c * tile, pad + (2 * r + 1) * tile))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


def write_report(out_dir: str | Path, task: str, rows: Sequence[Mapping], kept: Sequence[Mapping],
                 header: str = "", paper: Mapping[str, float] | None = None,
                 labels: tuple[str, str] = ("A", "B")) -> dict[str, Path]:
    """Write ``<task>.csv`` (per pair), ``<task>.md`` (mean ± sd per method; best per metric in bold) and
    ``<task>_examples.png`` (every method) and ``<task>_montage.png`` (sources | ours | IFCNN-MAX | max rule, with 2x
    crops; :func:`save_montage`). ``paper``: metric values copied from the FusionMamba paper, shown as a separate
    row."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / f"{task}.csv"
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    summary = summarise(rows)
    metrics = [m for m in METRICS if m in next(iter(summary.values()))]
    best = {m: max(summary, key=lambda k: summary[k][m][0]) for m in metrics}
    lines = [header, "", "| method | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
    for method, vals in summary.items():
        cells = []
        for m in metrics:
            mean, sd = vals[m]
            cell = f"{mean:.3f} ± {sd:.3f}"
            cells.append(f"**{cell}**" if best[m] == method else cell)
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    if paper:
        lines.append("| FusionMamba paper (copied, their code & split) | "
                     + " | ".join(f"{paper[m]:.3f}" if m in paper else "–" for m in metrics) + " |")
    n_pairs = len({r["pair"] for r in rows})
    lines += ["", f"{n_pairs} pairs; higher is better for every metric; bold = best of the methods computed here."]
    md_path = out / f"{task}.md"
    md_path.write_text("\n".join(lines) + "\n")
    fig = save_figure(out / f"{task}_examples.png", kept, labels) if kept else None
    montage = save_montage(out / f"{task}_montage.png", kept[:3], labels) if kept else None
    (out / f"{task}_summary.json").write_text(json.dumps(
        {m: {k: v[0] for k, v in vals.items()} for m, vals in summary.items()}, indent=1))
    return {"csv": csv_path, "md": md_path, "figure": fig, "montage": montage}
