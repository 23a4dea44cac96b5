"""Evaluation on 2D pairs: every method scored on every pair, a Markdown/CSV table and a figure."""

import csv

import numpy as np
import torch
from PIL import Image

from fusionmamba_med.evaluation import evaluate_methods, network_method, summarise, write_report
from fusionmamba_med.evaluation.pair_evaluation import baseline_methods


def _pairs(tmp_path, n=2, size=(40, 48)):
    rng = np.random.default_rng(0)
    (tmp_path / "MRI").mkdir()
    (tmp_path / "PET").mkdir()
    items = []
    for i in range(n):
        mri = (rng.random(size) * 255).astype(np.uint8)
        pet = np.zeros((*size, 3), np.uint8)
        pet[10:30, 10:30, 0] = 230  # a red hot spot: colour source
        Image.fromarray(mri).save(tmp_path / "MRI" / f"{i}.png")
        Image.fromarray(pet).save(tmp_path / "PET" / f"{i}.png")
        items.append({"name": str(i), "a": str(tmp_path / "MRI" / f"{i}.png"), "b": str(tmp_path / "PET" / f"{i}.png")})
    return items


class TakeA(torch.nn.Module):
    def forward(self, x):
        return x[:, :1]


def test_every_method_scored_on_every_pair(tmp_path):
    items = _pairs(tmp_path)
    methods = {**baseline_methods(), "take_a": network_method(TakeA())}
    rows, kept = evaluate_methods(items, methods, metrics=["EN", "SSIM", "Qabf"], keep=1)
    assert len(rows) == len(items) * len(methods)
    assert {r["method"] for r in rows} == set(methods)
    summary = summarise(rows)
    # returning A scores a perfect SSIM against A but not against B: exactly (1 + SSIM(A, B)) / 2 < 1
    assert summary["take_a"]["SSIM"][0] < 1.0
    # colour restored from the PET image for the figure
    assert kept[0]["colour"]["average"].shape[0] == 3


def test_report_files(tmp_path):
    items = _pairs(tmp_path)
    rows, kept = evaluate_methods(items, baseline_methods(), metrics=["EN", "SSIM"], keep=2)
    paths = write_report(tmp_path / "out", "pet_mri", rows, kept, header="### test",
                         paper={"SSIM": 0.5}, labels=("MRI", "PET"))
    md = paths["md"].read_text()
    assert md.startswith("### test") and "| average |" in md and "paper" in md and "**" in md
    with open(paths["csv"]) as f:
        assert len(list(csv.DictReader(f))) == len(rows)
    fig = Image.open(paths["figure"])
    assert fig.size[0] == 192 * 6 and fig.size[1] > 2 * 150
