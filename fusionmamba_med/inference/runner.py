"""Batch fusion of studies: preprocessing -> slice-wise network -> postprocessing -> writer, one study at a time.

A study that fails (bad file, failed registration, ...) is recorded with its reason and the run goes on; a JSON
summary (fused / skipped / failed, with reasons and per-stage seconds) is written next to the outputs, and the run
ends with a non-zero exit status when any study failed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from monai.data import MetaTensor
from monai.transforms import Compose, apply_transform

from fusionmamba_med.errors import FusionInputError
from fusionmamba_med.inference.qa import save_qa_montage
from fusionmamba_med.io.writers import write_summary

__all__ = ["StudyFusionRunner", "count_outcomes", "end_batch", "root_cause", "partition"]

logger = logging.getLogger("fusionmamba_med")


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


class StudyFusionRunner:
    """Fuse every study of a datalist and write the results.

    Args:
        studies: study dicts ``{"study", "study_id", "mri", "moving", ...}`` (see ``fusionmamba_med.io.studies``).
        preprocessing: a (MONAI) transform mapping a study dict to a dict with ``image_key`` (2, X, Y, Z) on the
            MRI grid and ``reference_key`` (the loaded MRI, whose geometry the output takes).
        network: the fusion network, [N, 2, H, W] -> [N, 1, H, W].
        inferer: e.g. ``monai.inferers.SliceInferer(spatial_dim=2, roi_size=[-1, -1], sw_batch_size=8)``; it holds at
            most ``sw_batch_size`` slices' activations at a time.
        writer: callable ``(pred, reference, study_id) -> Path`` with ``exists(study_id)`` and ``overwrite``
            (e.g. ``fusionmamba_med.io.FusedVolumeWriter``).
        postprocessing: optional transform on the dict after ``pred`` (C, X, Y, Z) is set (e.g. colour restore).
        device: where the network runs.
        amp: autocast (bfloat16) on CUDA.
        qa: write a PNG montage next to each output.
        errors: load-time errors from study discovery, reported as failed studies.
        summary_path: JSON summary; default ``<writer.output_dir>/fusion_summary.json``.
        fail_on_error: end with ``SystemExit`` (non-zero status) when any study failed.
        rank, world_size: this process's share of the studies (multi-GPU / multi-node inference).
        moving_name: what the moving modality is called in QA pictures ("CT", "PET", "SPECT").
    """

    def __init__(
        self,
        studies: Sequence[dict],
        preprocessing: Callable,
        network: torch.nn.Module,
        inferer: Callable,
        writer,
        postprocessing: Callable | None = None,
        device: str | torch.device = "cpu",
        amp: bool = False,
        qa: bool = True,
        errors: Sequence[FusionInputError] = (),
        summary_path: str | Path | None = None,
        fail_on_error: bool = True,
        image_key: str = "image",
        reference_key: str = "mri",
        moving_key: str = "moving",
        rank: int = 0,
        world_size: int = 1,
        moving_name: str = "moving",
    ):
        self.studies = partition(list(studies), rank, world_size)
        self.errors = list(errors) if rank == 0 else []
        self.preprocessing = preprocessing
        self.network = network
        self.inferer = inferer
        self.writer = writer
        self.postprocessing = postprocessing
        self.device = torch.device(device)
        self.amp = amp
        self.qa = qa
        self.fail_on_error = fail_on_error
        self.image_key, self.reference_key, self.moving_key = image_key, reference_key, moving_key
        self.rank, self.world_size = rank, world_size
        self.moving_name = moving_name
        out_dir = Path(getattr(writer, "output_dir", "."))
        self.summary_path = Path(summary_path) if summary_path else out_dir / "fusion_summary.json"

    # -- one study -------------------------------------------------------------------------------------------
    def _preprocess(self, study: dict, timings: dict) -> dict:
        data = dict(study)
        transforms = self.preprocessing.transforms if isinstance(self.preprocessing, Compose) else [self.preprocessing]
        for t in transforms:
            t0 = time.perf_counter()
            data = apply_transform(t, data)
            name = type(t).__name__
            timings[name] = timings.get(name, 0.0) + time.perf_counter() - t0
        return data

    def fuse_volume(self, image: torch.Tensor) -> torch.Tensor:
        """(2, X, Y, Z) -> (1, X, Y, Z) on CPU, slice by slice along Z."""
        batch = image.unsqueeze(0).as_tensor() if isinstance(image, MetaTensor) else image.unsqueeze(0)
        batch = batch.float()
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if (self.amp and self.device.type == "cuda") else None
        with torch.inference_mode():
            if autocast is not None:
                with autocast:
                    pred = self.inferer(batch, self.network)
            else:
                pred = self.inferer(batch, self.network)
        return pred[0].float().cpu()

    def fuse_study(self, study: dict) -> dict:
        """Fuse one study; returns its summary record. Raises on failure."""
        sid = study["study_id"]
        timings: dict[str, float] = {}
        data = self._preprocess(study, timings)
        t0 = time.perf_counter()
        fused = self.fuse_volume(data[self.image_key])
        timings["fuse"] = time.perf_counter() - t0
        reference = data[self.reference_key]
        data["pred"] = MetaTensor(fused, affine=reference.affine, meta=dict(reference.meta))
        if self.postprocessing is not None:
            t0 = time.perf_counter()
            data = apply_transform(self.postprocessing, data)
            timings["postprocessing"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        inputs = [study[k] for k in (self.reference_key, self.moving_key) if isinstance(study.get(k), (str, Path))]
        out = self.writer(data["pred"], reference, sid, input_paths=inputs)
        timings["write"] = time.perf_counter() - t0
        record = {"study": study.get("study", sid), "study_id": sid, "status": "fused", "output": str(out),
                  "shape": list(reference.shape[1:])}
        if isinstance(reference, MetaTensor) and "registration" in data[self.moving_key].meta:
            record["registration"] = data[self.moving_key].meta["registration"]
        if self.qa:
            t0 = time.perf_counter()
            qa_path = Path(out).parent / f"{sid}_qa.png"
            image = data[self.image_key]
            save_qa_montage(qa_path, [image[0:1], image[1:2], data["pred"]], ["MRI", self.moving_name, "fused"])
            record["qa"] = str(qa_path)
            timings["qa"] = time.perf_counter() - t0
        record["seconds"] = {k: round(v, 3) for k, v in timings.items()}
        return record

    # -- the batch --------------------------------------------------------------------------------------------
    def _distributed(self) -> bool:
        return self.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized()

    def _gather(self, records: list[dict]) -> list[dict]:
        """Every rank's records, in rank order (all ranks get the full list), when running under torch.distributed."""
        if not self._distributed():
            return records
        gathered: list = [None] * self.world_size
        torch.distributed.all_gather_object(gathered, records)
        return [r for part in gathered for r in part]

    def run(self) -> dict:
        """Fuse all studies, write the summary, and exit non-zero if any study failed (``fail_on_error``)."""
        self.network.eval()
        records = [
            {"study": e.study, "status": "failed", "reason": str(e)} for e in self.errors
        ]
        try:
            from tqdm import tqdm

            iterator = tqdm(self.studies, desc="studies", unit="study", disable=None)
        except ImportError:  # pragma: no cover - tqdm is a dependency
            iterator = self.studies
        for study in iterator:
            sid = study["study_id"]
            if getattr(self.writer, "overwrite", None) == "skip" and self.writer.exists(sid):
                logger.info("study %s: output exists, skipped (overwrite='skip')", sid)
                records.append({"study": study.get("study", sid), "study_id": sid, "status": "skipped",
                                "reason": "output exists", "output": str(self.writer.output_path(sid))})
                continue
            t0 = time.perf_counter()
            try:
                record = self.fuse_study(study)
            except Exception as err:  # one bad study must not stop the batch
                cause = root_cause(err)
                if isinstance(cause, FusionInputError):
                    reason = str(cause.with_study(study.get("study", sid)))
                else:
                    reason = f"study '{study.get('study', sid)}': {type(cause).__name__}: {cause}"
                logger.error("FAILED %s", reason)
                logger.debug("traceback of study %s", sid, exc_info=err)
                record = {"study": study.get("study", sid), "study_id": sid, "status": "failed", "reason": reason}
            record["total_seconds"] = round(time.perf_counter() - t0, 3)
            if self.world_size > 1:
                record["rank"] = self.rank
            records.append(record)
            if record["status"] == "fused":
                logger.info("study %s fused -> %s (%.1f s)", sid, record["output"], record["total_seconds"])
        records = self._gather(records)
        summary = {
            **count_outcomes(records),
            "world_size": self.world_size,
            "studies": records,
        }
        if not self._distributed():
            path = self.summary_path
            if self.world_size > 1:  # independent processes (no process group): one summary per rank
                path = path.with_name(f"{path.stem}_rank{self.rank}{path.suffix}")
            write_summary(path, summary)
        elif self.rank == 0:
            write_summary(self.summary_path, summary)
        return end_batch(summary, self.summary_path, self.fail_on_error, "study", "studies")

