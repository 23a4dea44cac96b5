"""Ignite handlers for iteration-based fusion training: iteration budget, CSV logs, weight export, checkpoints that
save and restore the trainer itself.

Every handler has ``attach(engine)``, so it can sit in a MONAI trainer's ``train_handlers`` list. Handlers that write
files write only on rank 0 of a ``torch.distributed`` run.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from ignite.engine import Engine, Events
from monai.handlers import CheckpointLoader, CheckpointSaver

from fusionmamba_med.training.checkpoint import checkpoint_iteration, export_weights

__all__ = [
    "ExportWeights",
    "IterationBudget",
    "LossCSVLogger",
    "TrainingCheckpointLoader",
    "TrainingCheckpointSaver",
    "ValidationCSVLogger",
]

logger = logging.getLogger(__name__)


def _rank() -> int:
    """This process's rank under ``torch.distributed`` (0 otherwise). Not ``ignite.distributed.get_rank()``: its first
    call creates process groups with a collective call, which deadlocks when only rank 0 makes it."""
    dist = torch.distributed
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _scalar(value: Any) -> float | None:
    if isinstance(value, torch.Tensor):
        return float(value.detach().float().mean()) if value.numel() else None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


class _CSVFile:
    """Rows appended to a CSV file; the header is written when the file is new, and grows if new columns appear
    (the file is then rewritten through a temporary file)."""

    def __init__(self, filename: str | os.PathLike):
        self.path = Path(filename)
        self.fields: list[str] | None = None

    def write(self, row: Mapping[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.fields is None and self.path.is_file() and self.path.stat().st_size > 0:
            with self.path.open(newline="") as f:
                self.fields = next(csv.reader(f), None)
        if self.fields is None:
            self.fields = list(row)
            with self.path.open("w", newline="") as f:
                csv.DictWriter(f, self.fields).writeheader()
        elif new := [k for k in row if k not in self.fields]:
            self._extend(new)
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, self.fields, restval="").writerow(dict(row))

    def _extend(self, new: Sequence[str]) -> None:
        with self.path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        self.fields = list(self.fields or []) + list(new)
        self._rewrite(rows)

    def drop_after(self, iteration: int) -> None:
        """Remove the rows of iterations after ``iteration``: a run resumed from an earlier checkpoint (after a
        crash, or from an explicit older file) logs those iterations again, so each appears once."""
        if not self.path.is_file() or self.path.stat().st_size == 0:
            return
        with self.path.open(newline="") as f:
            reader = csv.DictReader(f)
            self.fields = list(reader.fieldnames or [])
            rows = list(reader)
        kept = [r for r in rows if not (r.get("iteration") or "").isdigit() or int(r["iteration"]) <= iteration]
        if len(kept) != len(rows):
            self._rewrite(kept)

    def _rewrite(self, rows: list[dict]) -> None:
        from fusionmamba_med.io.atomic import atomic_path

        with atomic_path(self.path) as tmp, tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, self.fields, restval="")
            writer.writeheader()
            writer.writerows(rows)


class IterationBudget:
    """Train for exactly ``max_iterations`` iterations, whatever the epoch length.

    MONAI trainers count epochs; with a fixed ``epoch_length`` (a "virtual epoch" of N iterations) this handler sets
    ``max_epochs`` from the epoch length in force once the run has started (after a ``CheckpointLoader`` restored a
    saved state: put this handler after it) and terminates the run at ``max_iterations``.
    """

    def __init__(self, max_iterations: int) -> None:
        if max_iterations < 1:
            raise ValueError(f"max_iterations must be >= 1, got {max_iterations}")
        self.max_iterations = int(max_iterations)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._set_max_epochs)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._check)

    def _set_max_epochs(self, engine: Engine) -> None:
        epoch_length = engine.state.epoch_length
        if epoch_length:
            engine.state.max_epochs = max(math.ceil(self.max_iterations / epoch_length), engine.state.epoch, 1)

    def _check(self, engine: Engine) -> None:
        if engine.state.iteration >= self.max_iterations:
            engine.terminate()


class LossCSVLogger:
    """Append ``iteration, epoch, seconds, lr, loss[, loss_<component>...]`` to a CSV file every ``interval``
    iterations.

    Components come from ``loss_function.components(pred, label)`` (e.g. ``FusionLoss``) on the iteration's output;
    ``seconds`` is the wall time since the run (or the resumed run) started.

    Args:
        filename: the CSV file (appended to, so a resumed run continues it; rows after the iteration the run starts
            from are dropped, so that no iteration appears twice).
        loss_function: optional loss with a ``components(input, target) -> dict`` method.
        interval: write every N iterations.
    """

    def __init__(self, filename: str | os.PathLike, loss_function: nn.Module | None = None, interval: int = 1):
        self.csv = _CSVFile(filename)
        self.loss_function = loss_function
        self.interval = max(int(interval), 1)
        self._start = time.perf_counter()

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.interval), self)

    def _started(self, engine: Engine) -> None:
        self._start = time.perf_counter()
        if _rank() == 0:  # after a checkpoint loader restored the iteration (it runs first)
            self.csv.drop_after(engine.state.iteration)

    @staticmethod
    def _output(engine: Engine) -> dict[str, Any]:
        out = engine.state.output
        if isinstance(out, Sequence) and out and isinstance(out[0], Mapping):  # decollated
            return {k: torch.stack([o[k] for o in out]) if k in ("pred", "label") else out[0][k] for k in out[0]}
        return dict(out) if isinstance(out, Mapping) else {}

    def __call__(self, engine: Engine) -> None:
        if _rank() != 0:
            return
        out = self._output(engine)
        row: dict[str, Any] = {
            "iteration": engine.state.iteration,
            "epoch": engine.state.epoch,
            "seconds": round(time.perf_counter() - self._start, 3),
        }
        optimizer = getattr(engine, "optimizer", None)
        if optimizer is not None:
            row["lr"] = optimizer.param_groups[0]["lr"]
        row["loss"] = _scalar(out.get("loss"))
        components = getattr(self.loss_function, "components", None)
        pred, label = out.get("pred"), out.get("label")
        if callable(components) and isinstance(pred, torch.Tensor) and isinstance(label, torch.Tensor):
            with torch.no_grad():
                for name, value in components(pred.detach(), label.detach()).items():
                    if name != "total":  # the total is the loss
                        row[f"loss_{name}"] = _scalar(value)
        self.csv.write(row)


class ValidationCSVLogger:
    """Append the validator's metrics, with the trainer's iteration, to a CSV file after every validation run.

    Attach it to the trainer; it listens to ``validator``'s ``EPOCH_COMPLETED`` (after the metrics are computed).
    """

    def __init__(self, filename: str | os.PathLike, validator: Engine) -> None:
        self.csv = _CSVFile(filename)
        self.validator = validator
        self.trainer: Engine | None = None

    def attach(self, engine: Engine) -> None:
        self.trainer = engine
        engine.add_event_handler(Events.STARTED, self._started)
        self.validator.add_event_handler(Events.EPOCH_COMPLETED, self)

    def _started(self, engine: Engine) -> None:
        if _rank() == 0:  # as LossCSVLogger: rows after the (restored) starting iteration are dropped
            self.csv.drop_after(engine.state.iteration)

    def __call__(self, validator: Engine) -> None:
        if _rank() != 0:
            return
        row: dict[str, Any] = {"iteration": self.trainer.state.iteration if self.trainer is not None else None}
        for name, value in validator.state.metrics.items():
            if (v := _scalar(value)) is not None:
                row[name] = v
        self.csv.write(row)


class ExportWeights:
    """When the run completes, save the network's weights as a plain CPU state dict at ``path`` (rank 0 only).

    Args:
        path: the ``.pt`` file (e.g. a bundle's ``models/model.pt``), written atomically.
        network: the network (a DDP wrapper is unwrapped); default: the engine's ``network``.
    """

    def __init__(self, path: str | os.PathLike, network: nn.Module | None = None) -> None:
        self.path = path
        self.network = network

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if _rank() != 0:
            return
        network = self.network if self.network is not None else engine.network
        path = export_weights(network, self.path)
        logger.info("exported weights at iteration %d to %s", engine.state.iteration, path)


class TrainingCheckpointSaver(CheckpointSaver):
    """MONAI's ``CheckpointSaver`` (same arguments) that can also save the engine it is attached to, and writes each
    file to a temporary name, renamed when complete (MONAI writes in place), so a run killed while saving never
    leaves a truncated checkpoint.

    With iteration-level saving and ``n_saved``, interval checkpoints beyond the ``n_saved`` newest are removed
    from ``save_dir`` after each save, including those of an earlier run that this one resumed from.

    Args:
        engine_key: if given, ``save_dict[engine_key]`` is set to the engine at ``attach``, so the trainer's state
            (iteration, epoch) is saved without the config referring to the trainer from inside its own handlers
            (a circular reference).
    """

    def __init__(self, save_dir: str, save_dict: dict, engine_key: str | None = None, **kwargs: Any) -> None:
        super().__init__(save_dir, dict(save_dict), **kwargs)
        self.engine_key = engine_key
        self.n_saved = kwargs.get("n_saved")
        for checkpoint in (self._interval_checkpoint, self._final_checkpoint, self._key_metric_checkpoint):
            saver = getattr(checkpoint, "save_handler", None)
            if saver is not None and hasattr(saver, "_atomic"):
                saver._atomic = True

    def attach(self, engine: Engine) -> None:
        if self.engine_key is not None:
            # the ignite Checkpoint objects hold this same dictionary
            self.save_dict[self.engine_key] = engine
        super().attach(engine)
        if self.save_interval > 0 and self.n_saved is not None and not self.epoch_level:
            # after the interval save of the same event (attached above, so it runs first)
            engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.save_interval), self._prune)

    def _prune(self, engine: Engine) -> None:
        """Keep the ``n_saved`` newest interval checkpoints on disk, also those a previous (resumed) run wrote,
        which ignite's own bookkeeping does not know about. Final checkpoints are never removed."""
        interval = sorted(
            (it, p) for p in Path(self.save_dir).glob("*.pt")
            if "final" not in p.name and "key_metric" not in p.name and (it := checkpoint_iteration(p)) is not None
        )
        for _, path in interval[: max(0, len(interval) - int(self.n_saved))]:
            path.unlink(missing_ok=True)
            logger.info("removed old checkpoint %s", path.name)


class TrainingCheckpointLoader(CheckpointLoader):
    """MONAI's ``CheckpointLoader`` (same arguments) that also restores the engine it is attached to, from
    ``checkpoint[engine_key]``: a resumed trainer goes on from the saved iteration. Put it first in the handlers."""

    def __init__(self, load_path: str, load_dict: dict, engine_key: str | None = "trainer", **kwargs: Any) -> None:
        super().__init__(load_path, dict(load_dict), **kwargs)
        self.engine_key = engine_key

    def attach(self, engine: Engine) -> None:
        if self.engine_key is not None:
            self.load_dict[self.engine_key] = engine
        super().attach(engine)
