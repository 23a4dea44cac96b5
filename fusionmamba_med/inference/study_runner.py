"""Batch fusion of studies (volumes): preprocessing -> slice-wise network -> postprocessing -> writer, one study at a
time.

A study that fails (bad file, failed registration, ...) is recorded with its reason and the run goes on; a JSON
summary (fused / skipped / failed, with reasons and per-stage seconds) is written next to the outputs, and the run
ends with a non-zero exit status when any study failed.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from monai.data import MetaTensor
from monai.transforms import apply_transform

from fusionmamba_med.errors import FusionInputError, OutputError
from fusionmamba_med.inference.anatomy import fuse_within_anatomy
from fusionmamba_med.inference.batch import BatchRunner, stage
from fusionmamba_med.inference.forward import fuse_cpu_threads, fuse_slices_in_threads, run_network
from fusionmamba_med.inference.prefetch import Prefetcher, preprocess
from fusionmamba_med.inference.qa import save_qa_montage
from fusionmamba_med.inference.review import source_files, write_study_review
from fusionmamba_med.io.dicom_write import FUSED_DICOM_MAX
from fusionmamba_med.io.naming import safe_name
from fusionmamba_med.io.review_scene import REVIEW_SCENE_FORMATS

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
        moving_writer: writes the moving image registered onto the MRI grid (``moving_on_mri_key``, in its own
            values, before normalisation), e.g. a ``FusedVolumeWriter`` with ``output_postfix="pet_on_mri"``;
            ``None``: not written.
        review_scene: ``"mrml"`` (default): a 3D Slicer review scene ``<study>_review.mrml`` beside the outputs,
            referencing them; ``"mrb"``: a self-contained ``<study>_review.mrb``; ``"none"``. It needs the
            registered moving image written (``moving_writer``) and the MRI's own values (``mri_display_key``) for
            its window (see :mod:`fusionmamba_med.inference.review`).
        overlay_opacity: opacity of the registered moving image over the MRI in the review scene.
        anatomy_crop: fuse only the box where either input has signal (plus ``anatomy_margin`` voxels in-plane and a
            slice), the rest filled as the full-grid fusion fills background (:mod:`~.anatomy`); the output grid
            is unchanged.
        anatomy_threshold: signal level (normalised inputs, 4 x 4 block means) that counts as anatomy.
        anatomy_margin: in-plane voxels of background kept around the anatomy.
        prefetch: load and register the next study in a worker process while this one is fused and written
            (:mod:`~.prefetch`), so that a batch runs at the pace of its slowest stage.
        fuse_threads: on CPU, how many slice batches are fused at once, each by its own thread with one torch
            thread (the batches are the inferer's ``sw_batch_size`` consecutive slices, so every slice gets the same
            result whatever the count); ``None``: the CPU cores this process may use. Two such threads fuse a
            256 x 256 x 200 volume in 12.7-13.1 s where torch's two threads on one batch at a time take 16.1 s
            (benchmarks/bench_volume.py). ``1``: one batch at a time on torch's own threads (and on GPU, always).

    A study is done when its fused output and, unless ``review_scene="none"``, its review scene exist (the scene is
    written last): a run stopped in between leaves a study that the next run with ``overwrite="skip"`` completes.

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
        moving_writer=None,
        review_scene: str = "mrml",
        overlay_opacity: float = 0.6,
        moving_on_mri_key: str = "moving_on_mri",
        mri_display_key: str = "mri_display",
        anatomy_crop: bool = True,
        anatomy_threshold: float = 0.1,
        anatomy_margin: int = 16,
        prefetch: bool = True,
        fuse_threads: int | None = None,
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
        if review_scene not in REVIEW_SCENE_FORMATS:
            raise ValueError(f"review_scene must be one of {REVIEW_SCENE_FORMATS}, got {review_scene!r}")
        self.moving_writer = moving_writer
        self.review_scene = review_scene
        self.overlay_opacity = float(overlay_opacity)
        self.moving_on_mri_key, self.mri_display_key = moving_on_mri_key, mri_display_key
        self.anatomy_crop = anatomy_crop
        self.anatomy_threshold, self.anatomy_margin = float(anatomy_threshold), int(anatomy_margin)
        self.prefetch = prefetch
        self._prefetcher: Prefetcher | None = None
        if fuse_threads is not None and int(fuse_threads) < 1:
            raise ValueError(f"fuse_threads must be at least 1 (or None for one per core), got {fuse_threads}")
        self.fuse_threads = fuse_cpu_threads() if fuse_threads is None else int(fuse_threads)

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
        if not self.writer.exists(sid):
            return None
        if self.review_scene != "none" and self.moving_writer is not None and not self.review_path(sid).is_file():
            return None
        return Path(self.writer.output_path(sid))

    def review_path(self, sid: str) -> Path:
        """``<output_dir>/<study>/<study>_review.<mrml|mrb>``."""
        return self.writer.output_path(sid).parent / f"{safe_name(sid)}_review.{self.review_scene}"

    def claim_path(self, study: dict) -> Path | None:
        claim_path = getattr(self.writer, "claim_path", None)
        return None if claim_path is None else Path(claim_path(study["study_id"]))

    def prepare(self) -> None:
        self.network.eval()

    def summary_fields(self) -> dict:
        return {"world_size": self.world_size}

    def load(self, study: dict, timings: dict) -> tuple[dict, torch.Tensor]:
        """Preprocessing, timed per transform (in the prefetch worker when it has this study already); the network
        input is ``image_key`` (2, X, Y, Z)."""
        if self._prefetcher is not None:
            data, seconds = self._prefetcher.take(study)
            timings.update(seconds)
        else:
            data = preprocess(self.preprocessing, study, timings)
        image = data[self.image_key]
        return data, image.as_tensor() if isinstance(image, MetaTensor) else torch.as_tensor(image)

    def plan(self, items: list) -> None:
        """With ``prefetch`` and two or more studies, start the worker that loads the next study meanwhile."""
        if self.prefetch and len(items) > 1:
            self._prefetcher = Prefetcher(self.preprocessing, items)

    def finish(self) -> None:
        if self._prefetcher is not None:
            self._prefetcher.close()
            self._prefetcher = None

    def fuse(self, batch: torch.Tensor) -> torch.Tensor:
        """(N, 2, X, Y, Z) -> (N, 1, X, Y, Z) on CPU through the inferer (slice by slice along Z); with
        ``anatomy_crop``, each volume's anatomy box only."""
        if not self.anatomy_crop:
            return self._fuse_grid(batch)
        stride = int(getattr(self.network, "stride", 1))
        fused = [fuse_within_anatomy(image, lambda x: self._fuse_grid(x[None])[0], self.anatomy_threshold,
                                     self.anatomy_margin, stride)[0] for image in batch]
        return torch.stack(fused)

    def _fuse_grid(self, batch: torch.Tensor) -> torch.Tensor:
        if self.device.type != "cpu" or self.fuse_threads <= 1:
            return run_network(self.network, batch, self.device, inferer=self.inferer, amp=self.amp, move_batch=False)
        return fuse_slices_in_threads(
            lambda part, inferer: run_network(self.network, part, self.device, inferer=inferer, amp=self.amp,
                                              move_batch=False),
            batch, self.inferer, self.fuse_threads)

    def fuse_volume(self, image: torch.Tensor) -> torch.Tensor:
        """(2, X, Y, Z) -> (1, X, Y, Z) on CPU, slice by slice along Z."""
        return self.fuse(image.unsqueeze(0))[0]

    def write(self, study: dict, data: dict, fused: torch.Tensor, timings: dict) -> dict:
        """Postprocessing, the registered moving image, the QA montage, the fused output and, last, the review
        scene (a study is complete when both exist: :meth:`existing_output`); returns the record's fields. When the
        fused output cannot be written, the study's other files are removed again."""
        sid = study["study_id"]
        reference = data[self.reference_key]
        data["pred"] = MetaTensor(fused, affine=reference.affine, meta=dict(reference.meta))
        if self.postprocessing is not None:
            with stage(timings, "postprocessing"):
                data = apply_transform(self.postprocessing, data)
        inputs = [study[k] for k in (self.reference_key, self.moving_key) if isinstance(study.get(k), (str, Path))]
        fields: dict = {"shape": list(reference.shape[1:])}
        if isinstance(reference, MetaTensor) and "registration" in data[self.moving_key].meta:
            fields["registration"] = data[self.moving_key].meta["registration"]
        written: list[Path] = []
        try:
            moving_out = None
            if self.moving_writer is not None and self.moving_on_mri_key in data:
                with stage(timings, "write_moving"):
                    moving_out = self.moving_writer(data[self.moving_on_mri_key], reference, sid, input_paths=inputs)
                written.append(Path(moving_out))
                fields["moving_on_mri"] = str(moving_out)
            if self.qa:
                with stage(timings, "qa"):
                    fields["qa"] = str(self._write_qa(sid, data))
                written.append(Path(fields["qa"]))
            with stage(timings, "write"):
                out = self.writer(data["pred"], reference, sid, input_paths=inputs)
        except BaseException:  # no moving image or QA montage of a study without an output
            for path in written:
                if path.is_file():
                    path.unlink()
                elif path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
            raise
        if self.review_scene != "none" and moving_out is not None:
            with stage(timings, "review_scene"):
                scene = self._write_review(sid, data, reference)
            fields["review_scene"] = str(scene)
        return {"output": str(out), **fields}

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

    def _write_review(self, sid: str, data: dict, reference) -> Path:
        """``<study>_review.<mrml|mrb>`` beside the outputs: MRI, registered moving image and fused volume."""
        n_slices = int(reference.shape[-1])
        pred = data["pred"]
        grey_dicom = self.writer.output_format == "dicom" and int(pred.shape[0]) == 1
        path = self.review_path(sid)
        try:
            return write_study_review(
                path, study=sid, mri=data.get(self.mri_display_key, reference), fused=pred,
                fused_files=self.writer.output_files(sid, n_slices), moving=data[self.moving_on_mri_key],
                moving_files=self.moving_writer.output_files(sid, n_slices), moving_name=self.moving_name,
                overlay_opacity=self.overlay_opacity, mri_files=source_files(reference),
                fused_scale=FUSED_DICOM_MAX if grey_dicom else 1.0)
        except OSError as err:
            raise OutputError(f"writing the review scene failed ({type(err).__name__}: {err})", study=sid,
                              path=path) from err
