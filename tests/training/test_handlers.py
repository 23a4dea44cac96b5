"""Training handlers on a toy ignite trainer: iteration budget, CSV logs, checkpoints that resume the trainer and
weight export."""

import csv

import torch
import torch.nn as nn
from ignite.engine import Engine, Events

from fusionmamba_med.losses import FusionLoss
from fusionmamba_med.training import (
    ExportWeights,
    IterationBudget,
    LossCSVLogger,
    TrainingCheckpointLoader,
    TrainingCheckpointSaver,
    ValidationCSVLogger,
    latest_checkpoint,
)

DATA = [{"image": torch.rand(2, 2, 16, 16, generator=torch.Generator().manual_seed(i))} for i in range(4)]


def _trainer(max_epochs=10):
    torch.manual_seed(0)
    net = nn.Conv2d(2, 1, 3, padding=1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    loss_fn = FusionLoss(win_size=7)

    def step(engine, batch):
        opt.zero_grad()
        pred = net(batch["image"])
        loss = loss_fn(pred, batch["image"])
        loss.backward()
        opt.step()
        return {"pred": pred.detach(), "label": batch["image"], "loss": loss.detach()}

    engine = Engine(step)
    engine.network, engine.optimizer = net, opt
    engine.state.max_epochs = max_epochs  # as MONAI's Workflow sets it
    return engine, net, opt, loss_fn


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_iteration_budget_stops_mid_epoch():
    engine, *_ = _trainer()
    IterationBudget(6).attach(engine)
    state = engine.run(DATA, max_epochs=10)  # 4 iterations per epoch
    assert state.iteration == 6 and state.epoch == 2


def test_loss_csv_has_components_every_interval(tmp_path):
    engine, _, _, loss_fn = _trainer()
    IterationBudget(4).attach(engine)
    LossCSVLogger(tmp_path / "train_log.csv", loss_function=loss_fn, interval=2).attach(engine)
    engine.run(DATA, max_epochs=10)
    rows = _rows(tmp_path / "train_log.csv")
    assert [int(r["iteration"]) for r in rows] == [2, 4]
    assert set(rows[0]) == {"iteration", "epoch", "seconds", "lr", "loss", "loss_ssim", "loss_int", "loss_grad"}
    r = rows[-1]
    weighted = 10 * float(r["loss_ssim"]) + 10 * float(r["loss_int"]) + float(r["loss_grad"])
    assert abs(weighted - float(r["loss"])) < 1e-4 and float(r["lr"]) == 0.1


def test_validation_csv_records_the_trainer_iteration(tmp_path):
    trainer, *_ = _trainer()
    validator = Engine(lambda e, b: None)

    @validator.on(Events.EPOCH_COMPLETED)
    def _metrics(engine):
        engine.state.metrics.update({"val_score": 0.5, "SSIM": 0.7, "note": "not a number"})

    ValidationCSVLogger(tmp_path / "val_log.csv", validator).attach(trainer)
    trainer.add_event_handler(Events.ITERATION_COMPLETED(every=3), lambda e: validator.run([0]))
    IterationBudget(6).attach(trainer)
    trainer.run(DATA, max_epochs=10)
    rows = _rows(tmp_path / "val_log.csv")
    assert [(r["iteration"], r["val_score"], r["SSIM"]) for r in rows] == [("3", "0.5", "0.7"), ("6", "0.5", "0.7")]


def test_checkpoints_resume_the_trainer_and_export_weights(tmp_path):
    ckpt_dir, export = tmp_path / "checkpoints", tmp_path / "model.pt"
    engine, net, opt, _ = _trainer()
    TrainingCheckpointSaver(str(ckpt_dir), {"network": net, "optimizer": opt}, engine_key="trainer",
                            save_interval=2, epoch_level=False, save_final=True).attach(engine)
    ExportWeights(export).attach(engine)
    IterationBudget(5).attach(engine)
    engine.run(DATA, max_epochs=10)

    assert not [p for p in ckpt_dir.iterdir() if not p.name.endswith(".pt")]  # written atomically
    latest = latest_checkpoint(ckpt_dir)
    assert latest.endswith("checkpoint_final_iteration=5.pt")
    saved = torch.load(latest, weights_only=True)
    assert saved["trainer"]["iteration"] == 5
    exported = torch.load(export, weights_only=True)
    assert all(torch.equal(exported[k], v) for k, v in net.state_dict().items())

    # a new process: fresh network and trainer, resumed from the checkpoint, trains on to iteration 7
    resumed, net2, opt2, _ = _trainer()
    assert not torch.equal(net2.weight, net.weight)
    TrainingCheckpointLoader(latest, {"network": net2, "optimizer": opt2}, engine_key="trainer").attach(resumed)
    seen, loaded = [], []
    resumed.add_event_handler(Events.STARTED, lambda e: loaded.append(torch.equal(net2.weight, net.weight)))
    resumed.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(e.state.iteration))
    IterationBudget(7).attach(resumed)
    resumed.run(DATA, max_epochs=10)
    assert loaded == [True] and seen == [6, 7]
    assert not torch.equal(net2.weight, net.weight)  # it trained on from the restored weights


def test_crash_resume_logs_each_iteration_once_and_prunes_old_checkpoints(tmp_path):
    """A run killed after iteration 5 whose newest checkpoint is iteration 4: the resumed run logs 5 again, so the
    first run's row 5 is dropped; interval checkpoints of both runs are pruned to the newest ``n_saved``."""
    ckpt_dir, log = tmp_path / "checkpoints", tmp_path / "train_log.csv"

    def handlers(engine, net, opt, loss_fn, budget, resume_from=None):
        if resume_from:
            TrainingCheckpointLoader(resume_from, {"network": net, "optimizer": opt}, engine_key="trainer").attach(
                engine)
        IterationBudget(budget).attach(engine)
        LossCSVLogger(log, loss_function=loss_fn).attach(engine)
        TrainingCheckpointSaver(str(ckpt_dir), {"network": net, "optimizer": opt}, engine_key="trainer",
                                save_interval=2, epoch_level=False, n_saved=2, save_final=False).attach(engine)

    engine, net, opt, loss_fn = _trainer()
    handlers(engine, net, opt, loss_fn, budget=5)
    engine.run(DATA, max_epochs=10)  # "crashes" after iteration 5: no final checkpoint, newest is iteration 4
    assert [int(r["iteration"]) for r in _rows(log)] == [1, 2, 3, 4, 5]
    assert sorted(p.name for p in ckpt_dir.glob("*.pt")) == ["checkpoint_iteration=2.pt", "checkpoint_iteration=4.pt"]

    resumed, net2, opt2, loss_fn2 = _trainer()
    handlers(resumed, net2, opt2, loss_fn2, budget=9, resume_from=latest_checkpoint(ckpt_dir))
    resumed.run(DATA, max_epochs=10)
    assert [int(r["iteration"]) for r in _rows(log)] == list(range(1, 10))  # 5 once, from the resumed run
    # the first run's iteration-2 file is gone too (ignite alone only prunes what its own process saved)
    assert sorted(p.name for p in ckpt_dir.glob("*.pt")) == ["checkpoint_iteration=6.pt", "checkpoint_iteration=8.pt"]


def test_validation_csv_drops_rows_after_the_resumed_iteration(tmp_path):
    path = tmp_path / "val_log.csv"
    path.write_text("iteration,val_score\n2,0.4\n4,0.5\n6,0.6\n")
    trainer, *_ = _trainer()
    trainer.add_event_handler(Events.STARTED, lambda e: setattr(e.state, "iteration", 4))  # a loader, attached first
    ValidationCSVLogger(path, Engine(lambda e, b: None)).attach(trainer)
    trainer.fire_event(Events.STARTED)
    assert [r["iteration"] for r in _rows(path)] == ["2", "4"]
