"""Evaluation on 2D pairs: every method scored on every pair, a Markdown/CSV table and a figure."""

import csv

import numpy as np
import torch
from PIL import Image

from fusionmamba_med.evaluation import (evaluate_methods, items_by_folder, network_method, score_network, summarise,
                                        write_report)
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


def test_score_network_is_the_mean_over_pairs(tmp_path):
    items = _pairs(tmp_path, n=3)
    scores = score_network(TakeA(), items)
    rows, _ = evaluate_methods(items, {"take_a": network_method(TakeA())}, metrics=["Qabf", "SSIM"])
    assert set(scores) == {"Qabf", "SSIM"}
    for metric in scores:
        assert scores[metric] == np.mean([r[metric] for r in rows])
    assert 0.5 < scores["SSIM"] < 1.0  # perfect against A, not against B


def test_items_by_folder_scores_each_evaluation_set_on_its_own():
    items = [{"name": "TNO/01"}, {"name": "RoadScene/FLIR_00211"}, {"name": "TNO/02"}, {"name": "plain"}]
    groups = items_by_folder(items)
    assert list(groups) == ["TNO", "RoadScene", "plain"]  # order of first appearance
    assert [i["name"] for i in groups["TNO"]] == ["TNO/01", "TNO/02"]
    assert sum(map(len, groups.values())) == len(items)


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


def _task_tree(tmp_path, size=(24, 24)):
    """A tiny ct_mri data root (MRI_CT/MRI, MRI_CT/CT) and FusionMamba tiny weights."""
    from fusionmamba_med.networks import build_fusionmamba

    rng = np.random.default_rng(1)
    for sub in ("MRI", "CT"):
        folder = tmp_path / "data" / "MRI_CT" / sub
        folder.mkdir(parents=True)
        for i in range(2):
            Image.fromarray((rng.random(size) * 255).astype(np.uint8)).save(folder / f"{i}.png")
    torch.manual_seed(0)
    torch.save(build_fusionmamba("tiny").state_dict(), tmp_path / "model.pt")


def test_cli_lists_the_peer_rows_when_peer_weights_are_given(tmp_path, capsys):
    from fusionmamba_med.baselines.peers import IFCNN, MATR, PEER_WEIGHTS
    from fusionmamba_med.evaluation.__main__ import main

    _task_tree(tmp_path)
    peers = tmp_path / "peers"
    for name, net in (("ifcnn_max", IFCNN()), ("matr", MATR())):  # untrained stand-ins, same layout as shared/peers
        (peers / PEER_WEIGHTS[name]).parent.mkdir(parents=True)
        torch.save(net.state_dict(), peers / PEER_WEIGHTS[name])
    common = ["--task", "ct_mri", "--weights", str(tmp_path / "model.pt"), "--data-root", str(tmp_path / "data"),
              "--examples", "1", "--paper-numbers", str(tmp_path / "none.json")]
    main([*common, "--out", str(tmp_path / "with"), "--peers-dir", str(peers)])
    md = (tmp_path / "with" / "ct_mri.md").read_text()
    for row in ("| average |", "| ifcnn_max |", "| matr |", "| FusionMamba (ours) |"):
        assert row in md
    with open(tmp_path / "with" / "ct_mri.csv") as f:
        assert {r["method"] for r in csv.DictReader(f)} >= {"ifcnn_max", "matr"}
    main([*common, "--out", str(tmp_path / "without"), "--peers-dir", str(tmp_path / "empty")])
    md = (tmp_path / "without" / "ct_mri.md").read_text()
    assert "| FusionMamba (ours) |" in md and "ifcnn_max" not in md and "| matr |" not in md
    main([*common, "--out", str(tmp_path / "off"), "--peers-dir", str(peers), "--no-peers"])
    assert "ifcnn_max" not in (tmp_path / "off" / "ct_mri.md").read_text()


def test_montage_rows_and_detail_crop(tmp_path):
    import numpy as np
    import torch
    from PIL import Image

    from fusionmamba_med.evaluation.pair_evaluation import _crop_box, save_montage

    b = np.zeros((64, 64))
    b[40:56, 8:24] = np.indices((16, 16)).sum(0) % 2  # the only detail: a checkerboard at rows 40-55, cols 8-23
    assert _crop_box(b, 16) == (40, 8)
    grey = torch.rand(1, 64, 64)
    kept = [{"image": torch.cat([grey, torch.as_tensor(b, dtype=torch.float32)[None]]), "sources": (grey, grey),
             "colour": {"FusionMamba (ours)": grey, "max_abs": grey, "average": grey}}]
    path = save_montage(tmp_path / "m.png", kept, ("MRI", "CT"), tile=64)
    assert Image.open(path).size == (4 * 64, 18 + 2 * 64)  # A | B | ours | max_abs (no IFCNN here); image + crop rows
