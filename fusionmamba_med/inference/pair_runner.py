"""Batch fusion of 2D image pairs (IR-VIS, GFP-PC, ...) at native resolution.

Pairs (``{"name", "a", "b"}`` from :func:`fusionmamba_med.io.pairs.discover_pairs`) are loaded and turned into the
network input by ``preprocessing`` (default: ``LoadImagePaird`` + ``PairToFusionInputd``), grouped by image size into
batches (never resized: the network pads internally to its stride), fused under ``torch.inference_mode``, given back
their colour (``RestorePairColord``) and written as ``<output_dir>/<safe name>.png`` (``.tif`` for 16-bit RGB, see
:mod:`fusionmamba_med.io.images2d`) with the inputs' bit depth. A pair that fails is recorded with its reason (the bad
file named) and the run goes on; a JSON summary (fused / skipped / failed) is written to
``<output_dir>/fusion_summary.json`` and the run ends with ``SystemExit`` when any pair failed.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from monai.transforms import Compose, apply_transform

from fusionmamba_med.transforms.pairs import LoadImagePaird, PairToFusionInputd, RestorePairColord
from fusionmamba_med.errors import FusionInputError
from fusionmamba_med.inference.batch import BatchRunner, stage
from fusionmamba_med.inference.forward import run_network
from fusionmamba_med.io.images2d import ImagePairWriter, image_size2d
from fusionmamba_med.io.naming import unique_names

__all__ = ["PairFusionRunner"]


class PairFusionRunner(BatchRunner):
    """Fuse every pair and write the results.

    Args:
        pairs: items ``{"name", "a", "b"}`` (a = channel 0: visible / GFP; b = channel 1: IR / PC).
        errors: discovery errors (e.g. files without a partner), reported as failed pairs.
        network: [N, 2, H, W] -> [N, 1, H, W], any H, W.
        output_dir: where ``<safe name>.png`` files and the summary go (created); with ``writer``, its
            ``output_dir`` is used instead.
        device: where the network runs.
        batch_size: most pairs of one size fused in one forward pass.
        overwrite: existing output: ``"skip"`` (keep it), ``"overwrite"`` (replace atomically), ``"error"`` (the
            pair fails). Used when ``writer`` is not given, like ``output_bit_depth``.
        output_bit_depth: ``"auto"`` (16 if either input is 16-bit, else 8), 8 or 16. 16-bit output uses the full
            scale of the 16-bit inputs (see ``LoadImagePaird(sixteen_bit_range=...)``).
        progress: show a progress bar.
        preprocessing: item -> dict with ``image`` (2, H, W) and the keys ``postprocessing`` needs; default
            ``Compose([LoadImagePaird(), PairToFusionInputd(task=task, resize=resize)])``. Old name: ``transform``
            (deprecated alias, still accepted).
        summary_path: default ``<output_dir>/fusion_summary.json``.
        fail_on_error: end with ``SystemExit`` when any pair failed.
        task, resize: for the default preprocessing (see :class:`PairToFusionInputd`).
        postprocessing: dict transform applied after ``pred`` (1, H, W) is set; default ``RestorePairColord()``.
        inferer: ``(images, network) -> pred`` (e.g. ``monai.inferers.SimpleInferer()``); default: ``network(images)``.
            Whole images only: a patch-wise inferer would change the result of the global-context network.
        writer: default ``ImagePairWriter(output_dir, overwrite, output_bit_depth)``
            (:class:`fusionmamba_med.io.images2d.ImagePairWriter`).
        amp: autocast (bfloat16) on CUDA.

    The loop (skip / overwrite, per-pair errors, summary, exit status) is :class:`~.batch.BatchRunner`'s; this class
    loads (``preprocessing``), fuses (:func:`~.forward.run_network`) and writes (``postprocessing``, ``writer``).
    """

    item_label, items_label, identity_key = "pair", "pairs", "name"

    def __init__(
        self,
        pairs: Sequence[dict],
        errors: Sequence[FusionInputError],
        network: torch.nn.Module,
        output_dir: str | os.PathLike | None = None,
        device: str | torch.device = "cpu",
        batch_size: int = 4,
        overwrite: str = "skip",
        output_bit_depth: str | int = "auto",
        progress: bool = True,
        preprocessing: Callable | None = None,
        summary_path: str | os.PathLike | None = None,
        fail_on_error: bool = True,
        task: str = "auto",
        resize: bool = False,
        postprocessing: Callable | None = None,
        inferer: Callable | None = None,
        writer: ImagePairWriter | None = None,
        amp: bool = False,
        transform: Callable | None = None,
    ):
        if transform is not None:  # the keyword's old name, kept so that existing bundle configs run unchanged
            if preprocessing is not None:
                raise TypeError("give 'preprocessing' or its deprecated alias 'transform', not both")
            warnings.warn("PairFusionRunner(transform=...) is deprecated; use preprocessing=...", DeprecationWarning,
                          stacklevel=2)
            preprocessing = transform
        if writer is None:
            if output_dir is None:
                raise TypeError("PairFusionRunner needs output_dir or writer")
            writer = ImagePairWriter(output_dir, overwrite=overwrite, output_bit_depth=output_bit_depth)
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, not {batch_size!r}")
        pairs = list(pairs)
        names = unique_names([p.get("name", Path(str(p.get("a", "pair"))).stem) for p in pairs])
        super().__init__(list(zip(pairs, names)), writer, errors=errors, summary_path=summary_path,
                         fail_on_error=fail_on_error, progress=progress)
        self.network = network
        self.output_dir = Path(writer.output_dir)
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        self.amp = amp
        self.preprocessing = preprocessing or Compose([LoadImagePaird(), PairToFusionInputd(task=task, resize=resize)])
        self.postprocessing = postprocessing or RestorePairColord()
        self.inferer = inferer

    @property
    def pairs(self) -> list[dict]:
        """The pair items this runner (this rank) fuses."""
        return [pair for pair, _ in self.items]

    @property
    def transform(self) -> Callable:
        """Deprecated name of :attr:`preprocessing`."""
        return self.preprocessing

    # -- the item type: (pair, safe output name) ---------------------------------------------------------------------
    def identity(self, item: tuple[dict, str]) -> dict:
        pair = item[0]
        return {"name": pair.get("name"), "a": pair.get("a"), "b": pair.get("b")}

    def item_name(self, item: tuple[dict, str]) -> str | None:
        return item[0].get("name")

    def existing_output(self, item: tuple[dict, str]) -> Path | None:
        return self.writer.existing(item[1])

    def group_key(self, item: tuple[dict, str]) -> tuple[int, int]:
        """The image size, from the header only: batches hold pairs of one size, read just before they are fused."""
        return image_size2d(item[0]["a"])

    def prepare(self) -> None:
        self.network.to(self.device).eval()
        self.output_dir.mkdir(parents=True, exist_ok=True)

    def summary_fields(self) -> dict:
        return {"output_dir": str(self.output_dir)}

    def order_records(self, records: list[dict]) -> list[dict]:
        return sorted(records, key=lambda r: (str(r.get("name") or "").lower(), str(r.get("name") or "")))

    def load(self, item: tuple[dict, str], timings: dict) -> tuple[dict, torch.Tensor]:
        with stage(timings, "load"):
            data = apply_transform(self.preprocessing, dict(item[0]))
            image = data["image"]
            image = image.as_tensor() if hasattr(image, "as_tensor") else torch.as_tensor(image)
            if image.ndim != 3 or image.shape[0] != 2:
                raise RuntimeError(f"the transform gave 'image' of shape {tuple(image.shape)}, not (2, H, W)")
        return data, image

    def fuse(self, batch: torch.Tensor) -> torch.Tensor:
        """(N, 2, H, W) -> (N, 1, H, W) float32 on CPU."""
        return run_network(self.network, batch, self.device, inferer=self.inferer, amp=self.amp)

    def write(self, item: tuple[dict, str], data: dict, pred: torch.Tensor, timings: dict) -> dict:
        pair, name = item
        with stage(timings, "write"):
            data = apply_transform(self.postprocessing, {**data, "pred": pred})
            out = data["pred"]
            depth, full_scale = self.writer.bit_depth_and_scale([data.get("a_meta"), data.get("b_meta")])
            written = self.writer(out, name, bit_depth=depth, full_scale=full_scale,
                                  input_paths=[pair.get("a"), pair.get("b")])
        return {"output": str(written), "size": [int(out.shape[1]), int(out.shape[2])],
                "colour": int(out.shape[0]) == 3, "bit_depth": depth, "full_scale": full_scale}
