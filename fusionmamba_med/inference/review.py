"""The review scene of one fused study: which volumes go into it and how each is shown (colour map, window / level,
threshold), from the study's data; :mod:`fusionmamba_med.io.review_scene` writes the scene."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from fusionmamba_med.io.review_scene import COLOUR_NODES, SceneVolume, display_window, write_review_scene

__all__ = ["OVERLAY_THRESHOLDS", "overlay_volume", "source_files", "write_study_review"]

#: where an overlay starts to show: PET / SPECT above a fraction of the volume's 99.9th percentile (uptake over the
#: background), CT above a Hounsfield value (bone). Below it the overlay is transparent and the MRI shows.
OVERLAY_THRESHOLDS: dict[str, tuple[str, float]] = {
    "PET": ("fraction", 0.25),
    "SPECT": ("fraction", 0.25),
    "CT": ("value", 300.0),
}


def _values(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def source_files(image) -> list[Path]:
    """The files a loaded volume came from: its DICOM series' files in slice order, else its ``source_path``."""
    meta = getattr(image, "meta", {}) or {}
    files = meta.get("dicom_files")
    if files:
        return [Path(f) for f in files]
    src = meta.get("source_path") or meta.get("filename_or_obj")
    if not src:
        raise ValueError("the volume has no source file in its meta ('dicom_files' or 'source_path')")
    return [Path(str(src))]


def overlay_volume(name: str, files: Sequence[Path], values, modality: str, top_percentile: float = 99.9) -> SceneVolume:
    """The registered moving image as a coloured overlay: Slicer's colour node for ``modality`` (PET-Heat; CT:
    Ocean), shown from the threshold of :data:`OVERLAY_THRESHOLDS` up to the 99.5th percentile, transparent below.

    ``values``: the volume as written (any shape), in its own units (kBq/ml, counts, HU).
    """
    v = _values(values).ravel()
    v = v[np.isfinite(v)]
    hi = float(np.percentile(v, top_percentile)) if v.size else 1.0
    kind, amount = OVERLAY_THRESHOLDS.get(modality.upper(), ("fraction", 0.25))
    lower = amount if kind == "value" else float(v.min(initial=0.0)) + amount * (hi - float(v.min(initial=0.0)))
    if not hi > lower:
        hi = lower + 1.0
    upper = float(v.max(initial=hi)) + 1.0  # everything above the threshold shows (saturated above the window)
    return SceneVolume(name=name, files=list(files), colour_node=COLOUR_NODES.get(modality.upper(), COLOUR_NODES["PET"]),
                       window=hi - lower, level=(hi + lower) / 2, threshold=(lower, upper))


def write_study_review(path: str | os.PathLike, study: str, mri, fused, fused_files: Sequence[Path], moving,
                       moving_files: Sequence[Path], moving_name: str = "PET", overlay_opacity: float = 0.6,
                       mri_files: Sequence[Path] | None = None, fused_scale: float = 1.0) -> Path:
    """Write ``<study>_review.mrml`` (or ``.mrb``) for one study.

    Args:
        path: the scene file, ``.mrml`` or ``.mrb``.
        mri: the MRI in its own values (1, X, Y, Z) with meta (its files: :func:`source_files`) and affine (RAS).
        fused: the fused volume as written, (1 or 3, X, Y, Z); ``fused_files`` its output file(s).
        moving: the moving image on the MRI grid as written, (1, X, Y, Z); ``moving_files`` its output file(s).
        moving_name: "PET", "SPECT" or "CT": its colour map and threshold.
        mri_files: the MRI's files; default from its meta.
        fused_scale: stored value of a fused value in the output file (4095 for a grey DICOM output, stored 0..4095
            = fused 0..1), so that the window matches what Slicer reads.
    """
    affine = _values(getattr(mri, "affine", np.eye(4))).astype(np.float64)
    shape = tuple(int(s) for s in mri.shape[-3:])
    mri_window = display_window(_values(mri))
    mri_volume = SceneVolume(name=f"{study} MRI", files=list(mri_files or source_files(mri)), window=mri_window[0],
                             level=mri_window[1])
    colour = int(fused.shape[0]) == 3
    fused_window = (1.0, 0.5) if colour else tuple(fused_scale * w for w in display_window(_values(fused)))
    fused_volume = SceneVolume(name=f"{study} fused", files=list(fused_files), colour=colour,
                               window=fused_window[0], level=fused_window[1])
    overlay = overlay_volume(f"{study} {moving_name} on MRI", moving_files, moving, moving_name)
    return write_review_scene(path, mri_volume, fused_volume, overlay, affine, shape, overlay_opacity)
