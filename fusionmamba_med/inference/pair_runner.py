"""Batch fusion of 2D image pairs (IR-VIS, GFP-PC, ...) at native resolution.

Pairs (``{"name", "a", "b"}`` from :func:`fusionmamba_med.data.pairs.discover_pairs`) are loaded and turned into the
network input by ``transform`` (default: ``LoadImagePaird`` + ``PairToFusionInputd``), grouped by image size into
batches (never resized: the network pads internally to its stride), fused under ``torch.inference_mode``, given back
their colour (``RestorePairColourd``) and written as ``<output_dir>/<safe name>.png`` (``.tif`` for 16-bit RGB, see
:mod:`fusionmamba_med.io.images2d`) with the inputs' bit depth. A pair that fails is recorded with its reason (the bad
file named) and the run goes on; a JSON summary (fused / skipped / failed) is written to
``<output_dir>/fusion_summary.json`` and the run ends with ``SystemExit`` when any pair failed.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from monai.transforms import Compose, apply_transform

from fusionmamba_med.data.pairs import LoadImagePaird, PairToFusionInputd, RestorePairColourd
from fusionmamba_med.errors import FusionInputError
from fusionmamba_med.inference.runner import count_outcomes, end_batch, root_cause
from fusionmamba_med.io.images2d import image_size2d, output_extension, write_image2d
from fusionmamba_med.io.naming import unique_names
from fusionmamba_med.io.writers import OVERWRITE_POLICIES, write_summary
from fusionmamba_med.networks.fusionmamba import load_network

__all__ = ["PairFusionRunner"]

logger = logging.getLogger("fusionmamba_med.inference.pair_runner")

_OUTPUT_EXTENSIONS = (".png", ".tif")


class PairFusionRunner:
    """Fuse every pair and write the results.

    Args:
        pairs: items ``{"name", "a", "b"}`` (a = channel 0: visible / GFP; b = channel 1: IR / PC).
        errors: discovery errors (e.g. files without a partner), reported as failed pairs.
        network: [N, 2, H, W] -> [N, 1, H, W], any H, W.
        output_dir: where ``<safe name>.png`` files and the summary go (created).
        device: where the network runs.
        batch_size: most pairs of one size fused in one forward pass.
        overwrite: existing output: ``"skip"`` (keep it), ``"overwrite"`` (replace atomically), ``"error"`` (the
            pair fails).
        output_bit_depth: ``"auto"`` (16 if either input is 16-bit, else 8), 8 or 16. 16-bit output uses the full
            scale of the 16-bit inputs (see ``LoadImagePaird(sixteen_bit_range=...)``).
        progress: show a progress bar.
        transform: item -> dict with ``image`` (2, H, W) and the keys ``postprocessing`` needs; default
            ``Compose([LoadImagePaird(), PairToFusionInputd(task=task, resize=resize)])``.
        summary_path: default ``<output_dir>/fusion_summary.json``.
        fail_on_error: end with ``SystemExit`` when any pair failed.
        task, resize: for the default transform (see :class:`PairToFusionInputd`).
        postprocessing: dict transform applied after ``pred`` (1, H, W) is set; default ``RestorePairColourd()``.
        inferer: ``(images, network) -> pred`` (e.g. ``monai.inferers.SimpleInferer()``); default: ``network(images)``.
            Whole images only: a patch-wise inferer would change the result of the global-context network.
    """

    def __init__(
        self,
        pairs: Sequence[dict],
        errors: Sequence[FusionInputError],
        network: torch.nn.Module,
        output_dir: str | os.PathLike,
        device: str | torch.device = "cpu",
        batch_size: int = 4,
        overwrite: str = "skip",
        output_bit_depth: str | int = "auto",
        progress: bool = True,
        transform: Callable | None = None,
        summary_path: str | os.PathLike | None = None,
        fail_on_error: bool = True,
        task: str = "auto",
        resize: bool = False,
        postprocessing: Callable | None = None,
        inferer: Callable | None = None,
    ):
        if overwrite not in OVERWRITE_POLICIES:
            raise ValueError(f"overwrite must be one of {OVERWRITE_POLICIES}, not {overwrite!r}")
        if output_bit_depth not in ("auto", 8, 16):
            raise ValueError(f"output_bit_depth must be 'auto', 8 or 16, not {output_bit_depth!r}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, not {batch_size!r}")
        self.pairs = list(pairs)
        self.errors = list(errors)
        self.names = unique_names([p.get("name", Path(str(p.get("a", "pair"))).stem) for p in self.pairs])
        self.network = network
        self.output_dir = Path(output_dir)
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        self.overwrite = overwrite
        self.output_bit_depth = output_bit_depth
        self.progress = progress
        self.transform = transform or Compose([LoadImagePaird(), PairToFusionInputd(task=task, resize=resize)])
        self.postprocessing = postprocessing or RestorePairColourd()
        self.summary_path = Path(summary_path) if summary_path else self.output_dir / "fusion_summary.json"
        self.fail_on_error = fail_on_error
        self.inferer = inferer

    # -- helpers ---------------------------------------------------------------------------------------------------
    def existing_output(self, name: str) -> Path | None:
        """The output already written for safe name ``name`` (``.png`` or ``.tif``), if any."""
        for ext in _OUTPUT_EXTENSIONS:
            path = self.output_dir / f"{name}{ext}"
            if path.exists():
                return path
        return None

    def _output_depth_and_scale(self, data: dict) -> tuple[int, int]:
        """Output bit depth and full scale (the pixel value of 1.0): 255 for 8-bit output; for 16-bit output the
        largest full scale of the 16-bit inputs (65535, or e.g. 4095 when 12-bit inputs were read with
        ``sixteen_bit_range="data"``), so the result keeps their units."""
        metas = [data[k] for k in ("a_meta", "b_meta") if isinstance(data.get(k), dict)]
        depth = 16 if any(m.get("bit_depth") == 16 for m in metas) else 8
        if self.output_bit_depth != "auto":
            depth = int(self.output_bit_depth)
        if depth != 16:
            return depth, 255
        scales = [int(m["full_scale"]) for m in metas if m.get("bit_depth") == 16 and m.get("full_scale")]
        return 16, max(scales, default=65535)

    @staticmethod
    def _reason(err: BaseException, item: dict) -> str:
        cause = root_cause(err)
        name = item.get("name")
        if isinstance(cause, FusionInputError):
            return str(cause.with_study(name) if name else cause)
        return f"pair '{name}': {type(cause).__name__}: {cause}"

    def _failed(self, item: dict, err: BaseException) -> dict:
        reason = self._reason(err, item)
        logger.error("FAILED %s", reason)
        logger.debug("traceback of pair %s", item.get("name"), exc_info=err)
        return {"name": item.get("name"), "a": item.get("a"), "b": item.get("b"), "status": "failed",
                "reason": reason}

    def fuse_batch(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 2, H, W) -> (N, 1, H, W) float32 on CPU."""
        with torch.inference_mode():
            images = images.to(self.device, dtype=torch.float32)
            pred = self.network(images) if self.inferer is None else self.inferer(images, self.network)
        if pred.ndim != 4 or pred.shape[0] != images.shape[0] or pred.shape[1] != 1 \
                or pred.shape[2:] != images.shape[2:]:
            raise RuntimeError(f"the network gave {tuple(pred.shape)} for input {tuple(images.shape)}; "
                               "expected (N, 1, H, W)")
        return pred.float().cpu()

    def _write(self, item: dict, name: str, data: dict, pred: torch.Tensor) -> dict:
        t0 = time.perf_counter()
        data = dict(data)
        data["pred"] = pred
        data = apply_transform(self.postprocessing, data)
        out = data["pred"]
        depth, full_scale = self._output_depth_and_scale(data)
        path = self.output_dir / f"{name}{output_extension(int(out.shape[0]), depth)}"
        inputs = {os.path.realpath(str(item[k])) for k in ("a", "b") if item.get(k)}
        if os.path.realpath(path) in inputs:
            raise FusionInputError("the output would overwrite an input image; choose another output_dir",
                                   study=item.get("name"), path=path)
        if self.overwrite == "error" and path.exists():
            raise FusionInputError("output exists (overwrite='error')", study=item.get("name"), path=path)
        written = write_image2d(path, out, bit_depth=depth, full_scale=full_scale)
        return {"output": str(written), "size": [int(out.shape[1]), int(out.shape[2])],
                "colour": int(out.shape[0]) == 3, "bit_depth": depth, "full_scale": full_scale,
                "write": time.perf_counter() - t0}

    # -- one batch of pairs ------------------------------------------------------------------------------------------
    def _process(self, chunk: list[tuple[dict, str]], records: list[dict], bar) -> None:
        loaded: dict[tuple, list] = {}
        for item, name in chunk:
            t0 = time.perf_counter()
            try:
                data = apply_transform(self.transform, dict(item))
                image = data["image"]
                image = image.as_tensor() if hasattr(image, "as_tensor") else torch.as_tensor(image)
                if image.ndim != 3 or image.shape[0] != 2:
                    raise RuntimeError(f"the transform gave 'image' of shape {tuple(image.shape)}, not (2, H, W)")
            except Exception as err:  # one bad pair must not stop the batch
                records.append(self._failed(item, err))
                bar.update(1)
                continue
            loaded.setdefault(tuple(image.shape), []).append((item, name, data, image, time.perf_counter() - t0))
        for members in loaded.values():
            t0 = time.perf_counter()
            try:
                preds = list(self.fuse_batch(torch.stack([m[3] for m in members])))
            except Exception as err:
                if len(members) == 1:
                    records.append(self._failed(members[0][0], err))
                    bar.update(1)
                    continue
                logger.warning("a batch of %d pairs failed (%s); fusing them one by one", len(members), err)
                preds = []
                for m in members:
                    try:
                        preds.append(self.fuse_batch(m[3][None])[0])
                    except Exception as one_err:
                        preds.append(one_err)
            fuse_seconds = (time.perf_counter() - t0) / len(members)
            for (item, name, data, _, load_seconds), pred in zip(members, preds):
                bar.update(1)
                if isinstance(pred, BaseException):
                    records.append(self._failed(item, pred))
                    continue
                try:
                    written = self._write(item, name, data, pred)
                except Exception as err:
                    records.append(self._failed(item, err))
                    continue
                seconds = {"load": load_seconds, "fuse": fuse_seconds, "write": written.pop("write")}
                record = {"name": item.get("name"), "a": item.get("a"), "b": item.get("b"), "status": "fused",
                          **written, "seconds": {k: round(v, 4) for k, v in seconds.items()}}
                logger.info("pair %s fused -> %s", record["name"], record["output"])
                records.append(record)

    # -- the run -----------------------------------------------------------------------------------------------------
    def run(self) -> dict:
        """Fuse all pairs, write the summary and return it; ``SystemExit`` if any pair failed (``fail_on_error``)."""
        self.network.to(self.device).eval()
        self.output_dir.mkdir(parents=True, exist_ok=True)
        records: list[dict] = [{"name": e.study, "status": "failed", "reason": str(e), "path": e.path}
                               for e in self.errors]
        for e in self.errors:
            logger.error("FAILED %s", e)
        groups: dict[tuple, list] = {}
        for item, name in zip(self.pairs, self.names):
            existing = self.existing_output(name)
            if existing is not None and self.overwrite == "skip":
                logger.info("pair %s: output exists, skipped (overwrite='skip')", item.get("name"))
                records.append({"name": item.get("name"), "a": item.get("a"), "b": item.get("b"),
                                "status": "skipped", "reason": "output exists", "output": str(existing)})
                continue
            if existing is not None and self.overwrite == "error":
                records.append(self._failed(item, FusionInputError("output exists (overwrite='error')",
                                                                   study=item.get("name"), path=existing)))
                continue
            try:  # header only: batches hold pairs of one size, read just before they are fused
                size = image_size2d(item["a"])
            except Exception as err:
                records.append(self._failed(item, err))
                continue
            groups.setdefault(size, []).append((item, name))
        try:
            from tqdm import tqdm

            bar = tqdm(total=sum(len(g) for g in groups.values()), desc="pairs", unit="pair",
                       disable=None if self.progress else True)
        except ImportError:  # pragma: no cover - tqdm is a dependency
            bar = None
        with _Bar(bar) as progress:
            for members in groups.values():
                for start in range(0, len(members), self.batch_size):
                    self._process(members[start:start + self.batch_size], records, progress)
        records.sort(key=lambda r: (str(r.get("name") or "").lower(), str(r.get("name") or "")))
        summary = {
            **count_outcomes(records),
            "output_dir": str(self.output_dir),
            "pairs": records,
        }
        write_summary(self.summary_path, summary)
        return end_batch(summary, self.summary_path, self.fail_on_error, "pair", "pairs")


class _Bar:
    """A tqdm bar or nothing, usable as ``with _Bar(bar) as b: b.update(1)``."""

    def __init__(self, bar):
        self.bar = bar

    def __enter__(self):
        return self

    def update(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.close()
        return False
