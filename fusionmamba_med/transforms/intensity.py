"""Intensity scaling of whole volumes to the network's [0, 1] range.

- MRI, PET, SPECT: :class:`PercentileNormalize` maps the volume's ``[p_lower, p_upper]`` percentiles to [0, 1]. The
  percentiles come from the whole volume (all slices, all channels), never per slice, so a slice keeps its brightness
  relative to its neighbours.
- CT: :class:`WindowIntensity` maps a Hounsfield window (a preset of :data:`CT_WINDOWS` or ``(center, width)``) to
  [0, 1].
"""

from __future__ import annotations

import logging
from typing import Any, Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform, ScaleIntensityRange, Transform
from monai.utils import convert_to_dst_type

__all__ = [
    "CT_WINDOWS",
    "PercentileNormalize",
    "PercentileNormalized",
    "WindowIntensity",
    "WindowIntensityd",
    "resolve_window",
]

logger = logging.getLogger(__name__)

#: CT windows ``(center, width)`` in Hounsfield units.
CT_WINDOWS: dict[str, tuple[float, float]] = {
    "brain": (40.0, 80.0),
    "subdural": (75.0, 215.0),
    "soft_tissue": (40.0, 400.0),
    "bone": (600.0, 2800.0),
}


def _source_of(img: Any) -> str | None:
    meta = getattr(img, "meta", None)
    if isinstance(meta, Mapping):
        v = meta.get("source_path") or meta.get("filename_or_obj")
        return str(v) if v else None
    return None


class PercentileNormalize(Transform):
    """Map the ``lower`` and ``upper`` percentiles of the whole image to 0 and 1.

    Args:
        lower, upper: percentiles in [0, 100], ``lower < upper``.
        clip: clip the result to [0, 1].
        nonzero: take the percentiles over the non-zero voxels only and leave zero voxels at 0 (e.g. a skull-stripped
            MRI or a PET with a zero background).

    Any shape (C, X, Y, Z), (C, H, W), ...; the output has the input's type, float32, meta kept. A volume whose
    percentile range is empty falls back to its min..max range; a constant volume becomes zeros (with a warning).
    """

    def __init__(self, lower: float = 0.5, upper: float = 99.5, clip: bool = True, nonzero: bool = False):
        if not 0.0 <= lower < upper <= 100.0:
            raise ValueError(f"need 0 <= lower < upper <= 100, got lower={lower}, upper={upper}")
        self.lower, self.upper = float(lower), float(upper)
        self.clip = clip
        self.nonzero = nonzero

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        t = img if isinstance(img, torch.Tensor) else torch.as_tensor(np.asarray(img))
        x = t.as_tensor() if hasattr(t, "as_tensor") else t
        x = x.detach().float()
        mask = x != 0 if self.nonzero else None
        values = x[mask] if mask is not None else x.reshape(-1)
        out = torch.zeros_like(x)
        if values.numel() == 0:
            logger.warning("file '%s': no non-zero voxels to normalise; the image becomes zeros", _source_of(img))
            return convert_to_dst_type(out, img, dtype=torch.float32)[0]
        v = values.cpu().numpy().astype(np.float64)
        lo, hi = (float(p) for p in np.percentile(v, [self.lower, self.upper]))
        if hi <= lo:  # e.g. more than 99.5 % of the voxels share one value: use the full range instead
            lo, hi = float(v.min()), float(v.max())
        if hi <= lo:
            logger.warning("file '%s': constant image (value %g); normalised to zeros", _source_of(img), lo)
            return convert_to_dst_type(out, img, dtype=torch.float32)[0]
        scaled = (x - lo) / (hi - lo)
        if self.clip:
            scaled = scaled.clamp(0.0, 1.0)
        out = torch.where(mask, scaled, out) if mask is not None else scaled
        return convert_to_dst_type(out, img, dtype=torch.float32)[0]


class PercentileNormalized(MapTransform):
    """Dictionary wrapper of :class:`PercentileNormalize`, e.g. ``PercentileNormalized("mri", 0.5, 99.5)``."""

    def __init__(self, keys: KeysCollection, lower: float = 0.5, upper: float = 99.5, clip: bool = True,
                 nonzero: bool = False, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.normalizer = PercentileNormalize(lower=lower, upper=upper, clip=clip, nonzero=nonzero)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.normalizer(d[key])
        return d


def resolve_window(window: str | Sequence[float]) -> tuple[float, float]:
    """A preset name of :data:`CT_WINDOWS` (case-insensitive, "soft-tissue" works too) or ``(center, width)`` ->
    ``(center, width)``."""
    if isinstance(window, str):
        name = window.strip().lower().replace("-", "_").replace(" ", "_")
        if name not in CT_WINDOWS:
            raise ValueError(f"unknown CT window '{window}'; presets: {sorted(CT_WINDOWS)} or (center, width)")
        return CT_WINDOWS[name]
    values = [float(v) for v in window]
    if len(values) != 2 or values[1] <= 0:
        raise ValueError(f"a CT window is (center, width) with width > 0, got {window!r}")
    return values[0], values[1]


class WindowIntensity(Transform):
    """Map the CT window ``[center - width / 2, center + width / 2]`` (HU) to [0, 1], clipped.

    Args:
        window: a preset of :data:`CT_WINDOWS` (``"brain"``, ``"subdural"``, ``"soft_tissue"``, ``"bone"``) or
            ``(center, width)`` in HU.
        clip: clip the result to [0, 1].
    """

    def __init__(self, window: str | Sequence[float] = "brain", clip: bool = True):
        self.center, self.width = resolve_window(window)
        self.scaler = ScaleIntensityRange(a_min=self.center - self.width / 2.0, a_max=self.center + self.width / 2.0,
                                          b_min=0.0, b_max=1.0, clip=clip, dtype=np.float32)

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        return self.scaler(img)


class WindowIntensityd(MapTransform):
    """Dictionary wrapper of :class:`WindowIntensity`, e.g. ``WindowIntensityd("moving", window="brain")``."""

    def __init__(self, keys: KeysCollection, window: str | Sequence[float] = "brain", clip: bool = True,
                 allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.windower = WindowIntensity(window=window, clip=clip)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.windower(d[key])
        return d
