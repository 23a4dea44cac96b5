"""The batch loop both runners share: skip or refuse existing outputs, fuse each item in its own ``try``, record the
outcome (with the failure's root cause), time it, write a JSON summary and end with a non-zero exit status when
anything failed.

:class:`BatchRunner` is the loop; an item type subclasses it and supplies what differs:

=======================  ==============================================================================
``identity(item)``       the fields that name an item in the summary (e.g. ``{"study", "study_id"}``)
``item_name(item)``      its name in messages
``existing_output(item)``  its output when one exists already (``None`` otherwise)
``load(item, timings)``  ``(data, image)``: whatever ``write`` needs, and the network input (2, *spatial)
``fuse(batch)``          (N, 2, *spatial) -> (N, 1, *spatial) (see :func:`~.forward.run_network`)
``write(item, data, pred, timings)``  post-process, write, and return the record's fields
=======================  ==============================================================================

Optional: ``group_key(item)`` (items are batched only within a group; read before loading, e.g. the image size
from a header), ``batch_size`` (items fused in one forward pass), ``prepare()``, ``plan(items)`` (the items about
to be loaded, in order: e.g. to load the next while one is fused), ``finish()``, ``summary_fields()``,
``order_records(records)``, ``claim_path(item)`` (see below).

Faults (docs/reliability/faults.md):

- **Several runs on one output folder.** When ``claim_path(item)`` gives a path, an item is worked on only under an
  :class:`~fusionmamba_med.io.claims.OutputClaim` on it: a run that finds an item claimed by another live run
  records it as skipped, naming that run; once it holds the claim it checks the output again (another run may have
  just written it). Every summary carries ``run`` (``run_id``: host, pid, start time).
- **A killed run.** Writes are atomic (``io.atomic``); what a killed run left in an item's folder (temporaries, its
  claim file) is removed by the next run that takes the item's claim, before it works on the item or skips it.
- **The summary.** ``fusion_summary.json`` is the summary of the run that finished last, replaced whole; every run
  also appends its summary as one line to ``fusion_summary.runs.jsonl`` beside it, so concurrent runs lose nothing.
  Both happen under a lock on the folder.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from fusionmamba_med.errors import FusionInputError
from fusionmamba_med.io.atomic import jsonable, remove_stale_temporaries
from fusionmamba_med.io.claims import OutputClaim, RunInfo, locked_dir
from fusionmamba_med.io.writers import write_summary

__all__ = ["BatchRunner", "ProgressBar", "count_outcomes", "end_batch", "failure_reason", "partition", "root_cause",
           "run_log_path", "stage", "write_run_summary"]

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------------------------
def root_cause(err: BaseException) -> BaseException:
    """The original exception behind MONAI's "applying transform ..." wrappers."""
    seen = set()
    while id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, FusionInputError):
            return err
        nxt = err.__cause__ or err.__context__
        if nxt is None:
            return err
        err = nxt
    return err


def failure_reason(err: BaseException, name: str | None, item: str = "study") -> str:
    """One line saying which item failed and why: the root cause's message, naming the item (and the file, for a
    :class:`FusionInputError`)."""
    cause = root_cause(err)
    if isinstance(cause, FusionInputError):
        return str(cause.with_study(name) if name else cause)
    return f"{item} '{name}': {type(cause).__name__}: {cause}"


def count_outcomes(records: Sequence[dict]) -> dict[str, int]:
    """``{"fused": n, "skipped": n, "failed": n}`` over per-item records with a ``"status"``."""
    return {status: sum(r["status"] == status for r in records) for status in ("fused", "skipped", "failed")}


def end_batch(summary: dict, summary_path: Path, fail_on_error: bool, item: str = "study",
              items: str = "studies") -> dict:
    """Log a batch's outcome and, when ``fail_on_error`` and anything failed, end with ``SystemExit`` (non-zero)."""
    logger.info("fused %d, skipped %d, failed %d; summary: %s", summary["fused"], summary["skipped"],
                summary["failed"], summary_path)
    if summary["failed"] and fail_on_error:
        raise SystemExit(f"{summary['failed']} {item if summary['failed'] == 1 else items} failed; see {summary_path}")
    return summary


def partition(items: Sequence, rank: int, world_size: int) -> list:
    """The items rank ``rank`` of ``world_size`` handles (round robin: every item exactly once)."""
    return list(items[rank::world_size])


@contextmanager
def stage(timings: dict[str, float], name: str) -> Iterator[None]:
    """Add the seconds the ``with`` block takes to ``timings[name]`` (also when it raises)."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - t0


def run_log_path(summary_path: str | os.PathLike) -> Path:
    """The append-only log of every run's summary beside ``summary_path``: ``<stem>.runs.jsonl``."""
    path = Path(summary_path)
    return path.with_name(f"{path.stem}.runs.jsonl")


def write_run_summary(path: str | os.PathLike, summary: dict) -> None:
    """Under a lock on its folder: remove temporaries a killed run left of this summary, append ``summary`` as one
    line to :func:`run_log_path`, and replace ``path`` with it atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with locked_dir(path.parent):
        remove_stale_temporaries(path.parent, [path.name])
        with open(run_log_path(path), "a", encoding="utf-8") as log:
            log.write(json.dumps(jsonable(summary), allow_nan=False) + "\n")
            log.flush()
            os.fsync(log.fileno())
        write_summary(path, summary)


class ProgressBar:
    """A ``tqdm`` bar, or nothing when ``enabled`` is false or tqdm is missing:
    ``with ProgressBar(n) as bar: bar.update()``.

    ``enabled=True`` leaves the choice to tqdm (no bar when the output is not a terminal).
    """

    def __init__(self, total: int, desc: str = "items", unit: str = "item", enabled: bool = True):
        self.bar = None
        try:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, unit=unit, disable=None if enabled else True)
        except ImportError:  # pragma: no cover - tqdm is a dependency
            pass

    def update(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        return False


# ---------------------------------------------------------------------------------------------------------------------
# the loop
# ---------------------------------------------------------------------------------------------------------------------
class BatchRunner:
    """Fuse a batch of items, one failure never stopping the others; see the module docstring for what a subclass
    supplies.

    Args:
        items: the items (this rank's share is taken: :func:`partition`).
        writer: has ``overwrite`` (``"skip"``, ``"overwrite"``, ``"error"``; ``None``: no check before fusing) and
            ``output_dir`` (default folder of the summary).
        errors: discovery errors (:class:`FusionInputError`), reported as failed items (by rank 0 only).
        summary_path: JSON summary; default ``<writer.output_dir>/fusion_summary.json``.
        fail_on_error: end with ``SystemExit`` (non-zero status) when any item failed.
        progress: show a progress bar.
        rank, world_size: this process's share of the items (under ``torch.distributed`` the records are gathered
            and rank 0 writes one summary; independent processes write ``fusion_summary_rank<r>.json`` each).
    """

    item_label = "item"  # in messages: "item 'x' fused"
    items_label = "items"  # in messages and as the summary's list of records
    identity_key = "name"  # the identity field a discovery error's name goes to
    batch_size = 1

    def __init__(self, items: Sequence, writer=None, errors: Sequence[FusionInputError] = (),
                 summary_path: str | os.PathLike | None = None, fail_on_error: bool = True, progress: bool = True,
                 rank: int = 0, world_size: int = 1):
        self.items = partition(list(items), rank, world_size)
        self.errors = list(errors) if rank == 0 else []
        self.writer = writer
        self.fail_on_error = fail_on_error
        self.progress = progress
        self.rank, self.world_size = rank, world_size
        out_dir = Path(getattr(writer, "output_dir", "."))
        self.summary_path = Path(summary_path) if summary_path else out_dir / "fusion_summary.json"
        self.run_info = RunInfo()

    # -- what an item type supplies ----------------------------------------------------------------------------------
    def identity(self, item) -> dict[str, Any]:
        raise NotImplementedError

    def item_name(self, item) -> str | None:
        raise NotImplementedError

    def existing_output(self, item) -> Path | None:
        return None

    def group_key(self, item):
        return None

    def claim_path(self, item) -> Path | None:
        """Where the item's claim lives (beside its output, in a folder of the item's own); ``None``: no claims."""
        return None

    def load(self, item, timings: dict[str, float]) -> tuple[Any, torch.Tensor]:
        raise NotImplementedError

    def fuse(self, batch: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def write(self, item, data, pred: torch.Tensor, timings: dict[str, float]) -> dict[str, Any]:
        raise NotImplementedError

    def prepare(self) -> None:
        """Called once before the first item (e.g. ``network.eval()``)."""

    def plan(self, items: list) -> None:
        """Called once with the items that will be loaded, in the order they will be (e.g. to prefetch)."""

    def finish(self) -> None:
        """Called once after the last item (also when the loop raised)."""

    def summary_fields(self) -> dict[str, Any]:
        """Extra summary entries, between the counts and the records."""
        return {}

    def order_records(self, records: list[dict]) -> list[dict]:
        return records

    # -- records -----------------------------------------------------------------------------------------------------
    @property
    def overwrite(self) -> str | None:
        return getattr(self.writer, "overwrite", None)

    def _failed(self, item, err: BaseException, timings: dict[str, float] | None = None) -> dict:
        name = self.item_name(item)
        reason = failure_reason(err, name, self.item_label)
        logger.error("FAILED %s", reason)
        logger.debug("traceback of %s %s", self.item_label, name, exc_info=err)
        return self._finish({**self.identity(item), "status": "failed", "reason": reason}, timings or {})

    def _fused(self, item, fields: dict, timings: dict[str, float]) -> dict:
        record = self._finish({**self.identity(item), "status": "fused", **fields,
                               "seconds": {k: round(v, 3) for k, v in timings.items()}}, timings)
        logger.info("%s %s fused -> %s (%.1f s)", self.item_label, self.item_name(item), record.get("output"),
                    record["total_seconds"])
        return record

    def _finish(self, record: dict, timings: dict[str, float]) -> dict:
        record["total_seconds"] = round(sum(timings.values()), 3)
        if self.world_size > 1:
            record["rank"] = self.rank
        return record

    def _skipped(self, item, reason: str, **fields) -> dict:
        logger.info("%s %s: skipped (%s)", self.item_label, self.item_name(item), reason)
        return {**self.identity(item), "status": "skipped", "reason": reason, **fields}

    # -- claims ------------------------------------------------------------------------------------------------------
    def _claim(self, item) -> OutputClaim | None:
        """Take ``item``'s claim and clear what a killed run left beside its output; ``None`` when the item has no
        claim. ``claim.held`` is false when another live run holds it."""
        path = self.claim_path(item)
        if path is None:
            return None
        claim = OutputClaim(path, self.run_info)
        if claim.acquire():
            for stale in remove_stale_temporaries(Path(path).parent):
                logger.warning("%s %s: removed %s, left by an interrupted run", self.item_label,
                               self.item_name(item), stale)
        return claim

    def _tidy(self, item) -> None:
        """Clear what a killed run left beside an existing output (unless another run works on it now); a folder
        that cannot be tidied is only logged (the output is there)."""
        try:
            claim = self._claim(item)
            if claim is not None:
                claim.release()
        except OSError as err:
            logger.warning("%s %s: could not check for leftovers of an interrupted run (%s)", self.item_label,
                           self.item_name(item), err)

    def _check_existing(self, item) -> dict | None:
        """The record of an item whose output exists and must not be written (policy "skip" or "error"), else None."""
        existing = self.existing_output(item) if self.overwrite in ("skip", "error") else None
        if existing is None:
            return None
        if self.overwrite == "skip":
            return self._skipped(item, "output exists", output=str(existing))
        return self._failed(item, FusionInputError("output exists (overwrite='error')", study=self.item_name(item),
                                                   path=existing))

    # -- the loop ----------------------------------------------------------------------------------------------------
    def run(self) -> dict:
        """Fuse all items, write the summary and return it; ``SystemExit`` if any failed (``fail_on_error``)."""
        self.prepare()
        records: list[dict] = []
        for e in self.errors:
            logger.error("FAILED %s", e)
            records.append({self.identity_key: e.study, "status": "failed", "reason": str(e), "path": e.path})
        outcomes: dict[int, dict] = {}  # item index -> record: the summary lists items in their given order
        pending = []
        for i, item in enumerate(self.items):  # a first look, before any header is read; checked again when claimed
            record = self._check_existing(item)
            if record is None:
                pending.append((i, item))
            else:
                self._tidy(item)
                outcomes[i] = record
        with ProgressBar(len(pending), self.items_label, self.item_label, self.progress) as bar:
            groups: dict[Any, list] = {}
            for i, item in pending:
                try:  # e.g. a header read: batches hold items of one size
                    key = self.group_key(item)
                except Exception as err:  # one bad item must not stop the batch
                    outcomes[i] = self._failed(item, err)
                    bar.update()
                    continue
                groups.setdefault(key, []).append((i, item))
            size = max(1, int(self.batch_size))
            self.plan([item for members in groups.values() for _, item in members])
            try:
                for members in groups.values():
                    for start in range(0, len(members), size):
                        outcomes.update(self._run_chunk(members[start:start + size], bar))
            finally:
                self.finish()
        records += [outcomes[i] for i in sorted(outcomes)]
        records = self.order_records(self._gather(records))
        summary = {**count_outcomes(records), "run": self.run_info.as_dict(), **self.summary_fields(),
                   self.items_label: records}
        self._write_summary(summary)
        return end_batch(summary, self.summary_path, self.fail_on_error, self.item_label, self.items_label)

    def _run_chunk(self, chunk: list[tuple[int, Any]], bar: ProgressBar) -> dict[int, dict]:
        """Load each ``(index, item)`` of ``chunk``, fuse those of one input shape together, write each."""
        claims: list[OutputClaim] = []
        try:
            return self._run_claimed_chunk(chunk, bar, claims)
        finally:
            for claim in claims:
                claim.release()

    def _start(self, item, claims: list[OutputClaim]) -> dict | None:
        """Claim an item about to be loaded: ``None`` when this run goes on with it, else its record (another run
        holds it, or its output appeared meanwhile)."""
        claim = self._claim(item)
        if claim is None:
            return None
        if not claim.held:
            return self._skipped(item, f"claimed by another run: {claim.holder}", claimed_by=claim.holder)
        claims.append(claim)
        return self._check_existing(item)

    def _run_claimed_chunk(self, chunk: list[tuple[int, Any]], bar: ProgressBar,
                           claims: list[OutputClaim]) -> dict[int, dict]:
        outcomes: dict[int, dict] = {}
        loaded: dict[tuple, list] = {}
        for i, item in chunk:
            timings: dict[str, float] = {}
            try:
                record = self._start(item, claims)
                if record is None:
                    data, image = self.load(item, timings)
            except Exception as err:  # one bad item must not stop the batch
                record = self._failed(item, err, timings)
            if record is not None:
                outcomes[i] = record
                bar.update()
                continue
            loaded.setdefault(tuple(image.shape), []).append((i, item, data, image, timings))
        for members in loaded.values():
            t0 = time.perf_counter()
            preds = self._fuse_members([m[3] for m in members])
            fuse_seconds = (time.perf_counter() - t0) / len(members)
            for (i, item, data, _, timings), pred in zip(members, preds):
                timings["fuse"] = fuse_seconds
                bar.update()
                if isinstance(pred, BaseException):
                    outcomes[i] = self._failed(item, pred, timings)
                    continue
                try:
                    fields = self.write(item, data, pred, timings)
                except Exception as err:
                    outcomes[i] = self._failed(item, err, timings)
                    continue
                outcomes[i] = self._fused(item, fields, timings)
        return outcomes

    def _fuse_members(self, images: list[torch.Tensor]) -> list:
        """One forward pass for all ``images``; when that fails, one pass each (a failure is returned in place)."""
        try:
            return list(self.fuse(torch.stack(images)))
        except Exception as err:
            if len(images) == 1:
                return [err]
            logger.warning("a batch of %d %s failed (%s); fusing them one by one", len(images), self.items_label, err)
        preds: list = []
        for image in images:
            try:
                preds.append(self.fuse(image[None])[0])
            except Exception as one_err:
                preds.append(one_err)
        return preds

    # -- several ranks -----------------------------------------------------------------------------------------------
    def _distributed(self) -> bool:
        return self.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized()

    def _gather(self, records: list[dict]) -> list[dict]:
        """Every rank's records, in rank order (all ranks get the full list), when running under torch.distributed."""
        if not self._distributed():
            return records
        gathered: list = [None] * self.world_size
        torch.distributed.all_gather_object(gathered, records)
        return [r for part in gathered for r in part]

    def _write_summary(self, summary: dict) -> None:
        if not self._distributed():
            path = self.summary_path
            if self.world_size > 1:  # independent processes (no process group): one summary per rank
                path = path.with_name(f"{path.stem}_rank{self.rank}{path.suffix}")
            write_run_summary(path, summary)
        elif self.rank == 0:
            write_run_summary(self.summary_path, summary)
