"""Batch fusion of studies (volumes): preprocessing -> slice-wise network -> postprocessing -> writer, one study at a
time.

A study that fails (bad file, failed registration, ...) is recorded with its reason and the run goes on; a JSON
summary (fused / skipped / failed, with reasons and per-stage seconds) is written next to the outputs, and the run
ends with a non-zero exit status when any study failed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from monai.data import MetaTensor
from monai.transforms import Compose, apply_transform

from fusionmamba_med.errors import FusionInputError, OutputError
from fusionmamba_med.inference.batch import BatchRunner, stage
from fusionmamba_med.inference.forward import run_network
from fusionmamba_med.inference.qa import save_qa_montage
from fusionmamba_med.io.naming import safe_name

__all__ = ["StudyFusionRunner"]


class StudyFusionRunner(BatchRunner):
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
        progress: show a progress bar over the studies.

    The loop (skip / overwrite, per-study errors, summary, exit status, ranks) is :class:`~.batch.BatchRunner`'s;
    this class loads (``preprocessing``), fuses (:func:`~.forward.run_network` through ``inferer``) and writes.
    """

    item_label, items_label, identity_key = "study", "studies", "study"

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
        progress: bool = True,
    ):
        super().__init__(studies, writer, errors=errors, summary_path=summary_path, fail_on_error=fail_on_error,
                         progress=progress, rank=rank, world_size=world_size)
        self.preprocessing = preprocessing
        self.network = network
        self.inferer = inferer
        self.postprocessing = postprocessing
        self.device = torch.device(device)
        self.amp = amp
        self.qa = qa
        self.image_key, self.reference_key, self.moving_key = image_key, reference_key, moving_key
        self.moving_name = moving_name

    @property
    def studies(self) -> list[dict]:
        """This rank's studies."""
        return self.items

    # -- the item type ---------------------------------------------------------------------------------------------
    def identity(self, study: dict) -> dict:
        sid = study["study_id"]
        return {"study": study.get("study", sid), "study_id": sid}

    def item_name(self, study: dict) -> str:
        return study.get("study", study["study_id"])

    def existing_output(self, study: dict) -> Path | None:
        sid = study["study_id"]
        return Path(self.writer.output_path(sid)) if self.writer.exists(sid) else None

    def claim_path(self, study: dict) -> Path | None:
        claim_path = getattr(self.writer, "claim_path", None)
        return None if claim_path is None else Path(claim_path(study["study_id"]))

    def prepare(self) -> None:
        self.network.eval()

    def summary_fields(self) -> dict:
        return {"world_size": self.world_size}

    def load(self, study: dict, timings: dict) -> tuple[dict, torch.Tensor]:
        """Preprocessing, timed per transform; the network input is ``image_key`` (2, X, Y, Z)."""
        data = dict(study)
        transforms = self.preprocessing.transforms if isinstance(self.preprocessing, Compose) else [self.preprocessing]
        for t in transforms:
            with stage(timings, type(t).__name__):
                data = apply_transform(t, data)
        image = data[self.image_key]
        return data, image.as_tensor() if isinstance(image, MetaTensor) else torch.as_tensor(image)

    def fuse(self, batch: torch.Tensor) -> torch.Tensor:
        """(N, 2, X, Y, Z) -> (N, 1, X, Y, Z) on CPU through the inferer (slice by slice along Z)."""
        return run_network(self.network, batch, self.device, inferer=self.inferer, amp=self.amp, move_batch=False)

    def fuse_volume(self, image: torch.Tensor) -> torch.Tensor:
        """(2, X, Y, Z) -> (1, X, Y, Z) on CPU, slice by slice along Z."""
        return self.fuse(image.unsqueeze(0))[0]

    def write(self, study: dict, data: dict, fused: torch.Tensor, timings: dict) -> dict:
        """Postprocessing, the QA montage, then the writer (last: a study whose output exists is complete); returns
        the record's fields."""
        sid = study["study_id"]
        reference = data[self.reference_key]
        data["pred"] = MetaTensor(fused, affine=reference.affine, meta=dict(reference.meta))
        if self.postprocessing is not None:
            with stage(timings, "postprocessing"):
                data = apply_transform(self.postprocessing, data)
        fields: dict = {}
        if self.qa:
            with stage(timings, "qa"):
                fields["qa"] = str(self._write_qa(sid, data))
        with stage(timings, "write"):
            inputs = [study[k] for k in (self.reference_key, self.moving_key) if isinstance(study.get(k), (str, Path))]
            try:
                out = self.writer(data["pred"], reference, sid, input_paths=inputs)
            except BaseException:  # no QA montage of a study without an output
                if "qa" in fields:
                    Path(fields["qa"]).unlink(missing_ok=True)
                raise
        fields = {"output": str(out), "shape": list(reference.shape[1:]), **fields}
        if isinstance(reference, MetaTensor) and "registration" in data[self.moving_key].meta:
            fields["registration"] = data[self.moving_key].meta["registration"]
        return fields

    def _write_qa(self, sid: str, data: dict) -> Path:
        """The QA montage (MRI | moving | fused) beside the study's output; a failed write names the file."""
        qa_path = Path(self.writer.output_path(sid)).parent / f"{safe_name(sid)}_qa.png"
        image = data[self.image_key]
        try:
            save_qa_montage(qa_path, [image[0:1], image[1:2], data["pred"]], ["MRI", self.moving_name, "fused"])
        except OSError as err:
            raise OutputError(f"writing the QA montage failed ({type(err).__name__}: {err})", study=sid,
                              path=qa_path) from err
        return qa_path
