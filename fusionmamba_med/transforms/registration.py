"""Bring the moving image (CT / PET / SPECT) onto the fixed MRI grid, by physical coordinates or by registration.

Modes:

- ``"none"``: the moving image must already be on the fixed grid (same shape, affine equal within
  :data:`GRID_TOLERANCE`); it is passed through with the fixed meta.
- ``"resample"``: resampled onto the fixed grid by physical (scanner) coordinates, identity transform. Right when both
  images come from one session / one frame of reference (hybrid PET/MR, PET/CT + MR registered upstream).
- ``"rigid"`` (``Euler3DTransform``) / ``"affine"`` (``AffineTransform``): SimpleITK registration with Mattes mutual
  information on a fixed random sample (seeded) computed by ``threads`` SimpleITK threads (1 by default: the sum of the
  metric over the samples is then always added up in one order, and repeated runs give bit-identical transforms and
  outputs; with more threads the order, hence the last bits, the iteration count and up to a few tenths of an
  intensity unit in some voxels vary from run to run), multi-resolution (smoothing sigmas in voxels; the shrunk levels get
  about as many samples as the full one), a centred initial transform (``CenteredTransformInitializer`` GEOMETRY,
  retried with MOMENTS when the first attempt fails), RegularStepGradientDescent with scales from physical shifts.
  The metric uses ``sampling_fraction`` of the fixed voxels at every level, at most ``max_samples`` (200,000 by
  default), so the cost stops growing with the MRI's size (see benchmarks/bench_registration.py).

The output is the moving image resampled onto the fixed grid, a ``MetaTensor`` (1, X, Y, Z) float32 carrying the FIXED
affine and meta plus ``meta["moving_source_path"]`` and ``meta["registration"]``: ``{"mode", "final_metric",
"iterations", "stop_condition", "transform_type", "transform_parameters", "transform_fixed_parameters",
"translation_mm", "translation_vector_mm", "rotation_deg", "overlap", "initializer", "samples_per_level"}``. The
transform maps fixed physical points (ITK LPS, mm) to moving ones, ``y = A (x - c) + c + t``; ``translation_mm`` is
``|t|`` and ``rotation_deg`` the angle of the rotation part of ``A``. Voxels of the fixed grid outside the moving
field of view get ``fill_value`` (e.g. -1024 for CT, 0 for PET).

Two backends optimise the rigid / affine transform (``backend``): ``"elastix"`` (default; itk-elastix: Mattes MI on
seeded random points, 4 pyramid levels (the MRI smoothed on its grid, the moving image smoothed and downsampled;
250 iterations of 1,024 points on the two coarse levels, 500 of 2,048 on the fine ones), image-centre start, one
thread, images over 4 M voxels block-averaged
(:func:`coarsened`): 1.5-2 s for a 256 x 256 x 200 MRI and the same transform every run; see :mod:`.elastix`) and
``"simpleitk"``
(the optimiser described above, kept as a fallback). When the moving image covers a small part of the MRI (a PET bed
position, a CT slab: its grid box under ``swap_below`` of the MRI's), elastix registers the MRI onto it and the
transform is inverted, which finds such a slab where the other direction does not. Either way SimpleITK resamples and
makes the checks below; ``final_metric`` is Mattes MI of the found transform evaluated by SimpleITK on a seeded sample
(of the images the backend registered).

Failures raise :class:`~fusionmamba_med.errors.RegistrationError` naming the study and the moving file: the images do
not overlap physically at the start (different frames of reference / wrong pair), the moving image covers less than
``min_overlap`` of the fixed grid after alignment, the final metric is worse (higher) than ``max_final_metric``, the
translation exceeds ``max_translation_mm``, or SimpleITK raised.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Hashable, Mapping, Sequence

import numpy as np
import SimpleITK as sitk
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from monai.utils import ensure_tuple_rep

from fusionmamba_med.errors import FusionInputError, RegistrationError
from fusionmamba_med.transforms.elastix import ElastixSettings, register_elastix
from fusionmamba_med.transforms.elastix import start_server as start_elastix_server
from fusionmamba_med.transforms.sitk_bridge import lps_geometry_to_ras_affine, metatensor_to_sitk

__all__ = [
    "REGISTRATION_MODES",
    "REGISTRATION_BACKENDS",
    "GRID_TOLERANCE",
    "RegistrationResult",
    "RegisterToFixed",
    "RegisterToFixedd",
    "sitk_threads",
    "target_registration_error",
    "rotation_angle_deg",
    "transform_from_info",
]

logger = logging.getLogger(__name__)

REGISTRATION_MODES = ("none", "resample", "rigid", "affine")
#: largest affine difference (mm) accepted by mode "none".
GRID_TOLERANCE = 1e-3
_INTERPOLATORS = {"nearest": sitk.sitkNearestNeighbor, "linear": sitk.sitkLinear, "bspline": sitk.sitkBSpline}
_METRICS = ("mattes", "correlation", "mean_squares")
_INITIALIZERS = ("geometry", "moments", "none")
REGISTRATION_BACKENDS = ("elastix", "simpleitk")
_MIN_SIZE = 4  # voxels per axis needed by the multi-resolution smoothing
#: images above this many voxels are registered (elastix backend) block-averaged, see :func:`coarsened`.
COARSEN_ABOVE_VOXELS = 4_000_000
#: only axes with voxels finer than this (mm) are block-averaged.
COARSEN_BELOW_MM = 1.5


@dataclass
class RegistrationResult:
    """What :meth:`RegisterToFixed.register` found: the transform (fixed -> moving physical LPS points), the moving
    image resampled onto the fixed grid (``sitk.Image``, float32, background = fill value) and the summary dict."""

    transform: sitk.Transform
    image: sitk.Image
    info: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------------------------
def _source_path(x: Any) -> str | None:
    meta = getattr(x, "meta", None)
    if not isinstance(meta, Mapping):
        return None
    for k in ("source_path", "filename_or_obj"):
        v = meta.get(k)
        if v:
            return str(v)
    return None


def _to_sitk(x: Any, what: str, study: str | None, path: str | None) -> sitk.Image:
    if isinstance(x, sitk.Image):
        img = x
    else:
        if x.ndim == 4 and x.shape[0] != 1:
            raise FusionInputError(f"the {what} image has {x.shape[0]} channels; registration needs one",
                                   study=study, path=path)
        img = metatensor_to_sitk(x)
    if img.GetDimension() != 3 or img.GetNumberOfComponentsPerPixel() != 1:
        raise FusionInputError(f"the {what} image is not a 3D scalar volume", study=study, path=path)
    return sitk.Cast(img, sitk.sitkFloat32) if img.GetPixelID() != sitk.sitkFloat32 else img


def _ras_affine(img: sitk.Image) -> np.ndarray:
    return lps_geometry_to_ras_affine(img.GetSpacing(), img.GetDirection(), img.GetOrigin())


def _corners(img: sitk.Image) -> np.ndarray:
    """Physical (LPS) corners of the voxel grid's outer faces, (8, 3)."""
    size = np.asarray(img.GetSize(), dtype=float)
    pts = []
    for c in np.ndindex(2, 2, 2):
        idx = np.where(np.asarray(c) == 0, -0.5, size - 0.5)
        pts.append(img.TransformContinuousIndexToPhysicalPoint([float(v) for v in idx]))
    return np.asarray(pts)


def _boxes_overlap(a: sitk.Image, b: sitk.Image) -> bool:
    """Whether b's grid box, mapped into a's index space, intersects a's grid (bounding-box test)."""
    idx = np.asarray([a.TransformPhysicalPointToContinuousIndex([float(v) for v in p]) for p in _corners(b)])
    lo, hi = idx.min(axis=0), idx.max(axis=0)
    size = np.asarray(a.GetSize(), dtype=float)
    return bool(np.all(hi > -0.5) and np.all(lo < size - 0.5))


def _extent(img: sitk.Image) -> str:
    """The LPS bounding box of an image grid (outer voxel faces), for messages: 'LPS x -10..90, y ..., z ... mm'."""
    c = np.asarray(_corners(img))
    lo, hi = c.min(axis=0), c.max(axis=0)
    return "LPS " + ", ".join(f"{a} {lo[i]:.0f}..{hi[i]:.0f}" for i, a in enumerate("xyz")) + " mm"


def _box_volume(img: sitk.Image) -> float:
    """Physical volume (mm^3) of an image's grid box (outer voxel faces)."""
    return float(np.prod(img.GetSize()) * np.prod(img.GetSpacing()) * abs(np.linalg.det(
        np.asarray(img.GetDirection()).reshape(3, 3))))


def _robust_clip(img: sitk.Image, lower: float = 0.5, upper: float = 99.5) -> sitk.Image:
    """Clamp intensities to the volume's percentiles so that outliers do not squeeze the histogram bins."""
    arr = sitk.GetArrayViewFromImage(img)
    lo, hi = (float(v) for v in np.percentile(arr, [lower, upper]))
    if hi <= lo:
        return img
    return sitk.Clamp(img, sitk.sitkFloat32, lo, hi)


def coarsened(img: sitk.Image) -> sitk.Image:
    """``img`` block-averaged 2 voxels to 1 along its axes finer than :data:`COARSEN_BELOW_MM`, when it has more than
    :data:`COARSEN_ABOVE_VOXELS` voxels (else ``img`` itself): what the elastix backend registers and the final metric
    is evaluated on. A 1 x 1 x 0.75 mm 256 x 256 x 200 MRI becomes 2 x 2 x 1.5 mm, 8 times fewer voxels to copy,
    smooth and sample; the found transform lands as close to the truth as on the full grid (TRE 0.1 mm on the
    phantom, benchmarks/bench_registration.py). Same physical box: the block's centre is the new voxel's centre."""
    if img.GetNumberOfPixels() <= COARSEN_ABOVE_VOXELS:
        return img
    factors = [2 if (sp < COARSEN_BELOW_MM and n >= 2 * _MIN_SIZE) else 1
               for sp, n in zip(img.GetSpacing(), img.GetSize())]
    return img if factors == [1, 1, 1] else sitk.BinShrink(img, factors)


def _matrix_and_translation(transform: sitk.Transform) -> tuple[np.ndarray, np.ndarray]:
    t = transform
    if isinstance(t, sitk.CompositeTransform) or t.GetName() == "CompositeTransform":
        t = sitk.CompositeTransform(t)
        if t.GetNumberOfTransforms() != 1:
            raise ValueError("expected a composite of one transform")
        t = t.GetNthTransform(0)
    if t.GetTransformEnum() == sitk.sitkIdentity:
        return np.eye(3), np.zeros(3)
    t = t.Downcast()
    if hasattr(t, "GetMatrix"):
        return np.asarray(t.GetMatrix(), dtype=float).reshape(3, 3), np.asarray(t.GetTranslation(), dtype=float)
    if isinstance(t, sitk.TranslationTransform):
        return np.eye(3), np.asarray(t.GetOffset(), dtype=float)
    raise ValueError(f"unsupported transform {t.GetName()}")


def rotation_angle_deg(transform: sitk.Transform | np.ndarray) -> float:
    """Rotation angle (degrees) of a transform's linear part (a 3x3 matrix or a SimpleITK matrix transform); for a
    non-rigid matrix the rotation of its polar decomposition is used."""
    m = transform if isinstance(transform, np.ndarray) else _matrix_and_translation(transform)[0]
    u, _, vt = np.linalg.svd(np.asarray(m, dtype=float).reshape(3, 3))
    r = u @ vt
    if np.linalg.det(r) < 0:  # a reflection: take the closest proper rotation
        u[:, -1] *= -1
        r = u @ vt
    return float(np.degrees(np.arccos(np.clip((np.trace(r) - 1.0) / 2.0, -1.0, 1.0))))


def target_registration_error(transform_a: sitk.Transform, transform_b: sitk.Transform, points) -> np.ndarray:
    """Distance (mm) between where two transforms send each point: ``|T_a(p) - T_b(p)|`` for ``points`` (N, 3) in
    the transforms' space (ITK LPS mm, fixed image). Used to score a registration against a known transform."""
    pts = np.asarray(points, dtype=float).reshape(-1, 3)
    a = np.asarray([transform_a.TransformPoint([float(v) for v in p]) for p in pts])
    b = np.asarray([transform_b.TransformPoint([float(v) for v in p]) for p in pts])
    return np.linalg.norm(a - b, axis=1)


@contextmanager
def sitk_threads(threads: int | None) -> Iterator[None]:
    """Run the block with SimpleITK's global default number of threads set to ``threads`` (``None``: unchanged),
    restored afterwards. ``ImageRegistrationMethod.SetNumberOfThreads`` does not reach the metric's own threader;
    the global default does (it is read when ``Execute`` builds the pipeline)."""
    if threads is None:
        yield
        return
    before = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(int(threads))
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(before)


def transform_from_info(info: Mapping[str, Any]) -> sitk.Transform:
    """Rebuild the transform (fixed -> moving physical LPS points) from a ``meta["registration"]`` summary."""
    kind = info["transform_type"]
    if kind == "IdentityTransform":
        return sitk.Transform(3, sitk.sitkIdentity)
    makers = {"Euler3DTransform": sitk.Euler3DTransform, "AffineTransform": lambda: sitk.AffineTransform(3)}
    if kind not in makers:
        raise ValueError(f"unsupported transform type '{kind}'")
    t = makers[kind]()
    t.SetFixedParameters([float(v) for v in info["transform_fixed_parameters"]])
    t.SetParameters([float(v) for v in info["transform_parameters"]])
    return t


# ---------------------------------------------------------------------------------------------------------------------
# array transform
# ---------------------------------------------------------------------------------------------------------------------
class RegisterToFixed(Transform):
    """Resample / register a moving volume onto a fixed volume's grid (see the module docstring for the modes).

    ``RegisterToFixed(mode="rigid", fill_value=-1024)(ct, mri, study="p01")`` -> ``MetaTensor`` (1, X, Y, Z) on the
    MRI grid (when ``mri`` is a ``MetaTensor``) or a ``sitk.Image`` (when ``mri`` is a ``sitk.Image``).

    Args:
        mode: ``"none"``, ``"resample"``, ``"rigid"`` or ``"affine"``.
        fill_value: value of fixed voxels outside the moving field of view.
        interpolation: ``"linear"``, ``"nearest"`` or ``"bspline"`` for the final resampling.
        metric: ``"mattes"`` (mutual information, any modality pair), ``"correlation"`` or ``"mean_squares"``
            (same modality).
        bins: histogram bins of Mattes MI.
        sampling_fraction: fraction of fixed voxels sampled (RANDOM) for the metric.
        max_samples: at most this many samples per level (``None``: no cap). Keeps a 256 x 256 x 200 MRI about as
            fast to register as a small one; the default is above what the 128 x 128 x 32 sample studies use.
        seed: seed of the metric sampling; the same seed gives the same result.
        threads: SimpleITK threads of the optimisation (1: bit-identical results from run to run with one SimpleITK
            build; ``None``: SimpleITK's default, faster on many cores but not reproducible to the last bit).
        shrink_factors, smoothing_sigmas: the multi-resolution pyramid; sigmas in voxels.
        max_iterations: optimizer iterations per level.
        min_overlap: smallest accepted fraction of fixed voxels covered by the moved image.
        max_final_metric: if set, a final metric value above it (Mattes MI is negative, lower is better) fails.
        max_translation_mm: if set, a larger translation fails.
        initializer: ``"geometry"`` (image centres; retried with ``"moments"`` on failure), ``"moments"`` (centres
            of mass) or ``"none"`` (scanner coordinates as they are).
        backend: ``"elastix"`` (default) or ``"simpleitk"`` (``metric``, ``sampling_fraction``, ``max_samples``,
            ``shrink_factors``, ``smoothing_sigmas`` and ``max_iterations`` are the SimpleITK optimiser's).
        elastix: the elastix backend's settings (:class:`~.elastix.ElastixSettings`, or a dict of its fields).
        swap_below: with elastix, register the MRI onto the moving image (and invert) when the moving image's grid
            box is smaller than this fraction of the MRI's.
    """

    def __init__(
        self,
        mode: str = "rigid",
        fill_value: float = 0.0,
        interpolation: str = "linear",
        metric: str = "mattes",
        bins: int = 32,
        sampling_fraction: float = 0.2,
        max_samples: int | None = 200_000,
        seed: int = 0,
        shrink_factors: Sequence[int] = (4, 2, 1),
        smoothing_sigmas: Sequence[float] = (2, 1, 0),
        max_iterations: int = 500,
        min_overlap: float = 0.2,
        max_final_metric: float | None = None,
        max_translation_mm: float | None = None,
        initializer: str = "geometry",
        backend: str = "elastix",
        elastix: ElastixSettings | Mapping | None = None,
        swap_below: float = 0.5,
        threads: int | None = 1,
    ):
        if mode not in REGISTRATION_MODES:
            raise ValueError(f"mode must be one of {REGISTRATION_MODES}, got '{mode}'")
        if interpolation not in _INTERPOLATORS:
            raise ValueError(f"interpolation must be one of {tuple(_INTERPOLATORS)}, got '{interpolation}'")
        if metric not in _METRICS:
            raise ValueError(f"metric must be one of {_METRICS}, got '{metric}'")
        if initializer not in _INITIALIZERS:
            raise ValueError(f"initializer must be one of {_INITIALIZERS}, got '{initializer}'")
        if len(shrink_factors) != len(smoothing_sigmas):
            raise ValueError("shrink_factors and smoothing_sigmas need one entry per level")
        if not 0.0 < sampling_fraction <= 1.0:
            raise ValueError("sampling_fraction must be in (0, 1]")
        if max_samples is not None and max_samples < 1000:
            raise ValueError("max_samples must be None or at least 1000")
        if threads is not None and int(threads) < 1:
            raise ValueError("threads must be None or at least 1")
        self.mode = mode
        self.fill_value = float(fill_value)
        self.interpolation = interpolation
        self.metric = metric
        self.bins = int(bins)
        self.sampling_fraction = float(sampling_fraction)
        self.max_samples = None if max_samples is None else int(max_samples)
        self.seed = int(seed)
        self.shrink_factors = [int(s) for s in shrink_factors]
        self.smoothing_sigmas = [float(s) for s in smoothing_sigmas]
        self.max_iterations = int(max_iterations)
        self.min_overlap = float(min_overlap)
        self.max_final_metric = max_final_metric
        self.max_translation_mm = max_translation_mm
        self.initializer = initializer
        if backend not in REGISTRATION_BACKENDS:
            raise ValueError(f"backend must be one of {REGISTRATION_BACKENDS}, got '{backend}'")
        self.backend = backend
        self.elastix = elastix if isinstance(elastix, ElastixSettings) else ElastixSettings(**dict(elastix or {}))
        self.swap_below = float(swap_below)
        if backend == "elastix" and mode in ("rigid", "affine"):
            start_elastix_server()  # in the background: ITK loads while the studies are found and read
        self.threads = None if threads is None else int(threads)

    # -- the pieces ---------------------------------------------------------------------------------------------
    def _resample(self, moving: sitk.Image, fixed: sitk.Image, transform: sitk.Transform) -> tuple[sitk.Image, float]:
        """Moving on the fixed grid with ``fill_value`` outside its field of view, and the covered fraction."""
        out = sitk.Resample(moving, fixed, transform, _INTERPOLATORS[self.interpolation], float("nan"),
                            sitk.sitkFloat32)
        arr = sitk.GetArrayFromImage(out)
        outside = np.isnan(arr)
        overlap = 1.0 - float(outside.mean())
        if outside.any():
            arr[outside] = self.fill_value
        img = sitk.GetImageFromArray(arr)
        img.CopyInformation(fixed)
        return img, overlap

    def _sampling_per_level(self, fixed: sitk.Image) -> list[float]:
        """Sampled fraction per level: ``sampling_fraction`` of the full-resolution voxels, at most ``max_samples``,
        and about the same number of samples on the shrunk levels (at most all their voxels), so that the coarse
        levels are not starved of samples."""
        voxels = float(fixed.GetNumberOfPixels())
        samples = self.sampling_fraction * voxels
        if self.max_samples is not None:
            samples = min(samples, float(self.max_samples))
        return [min(1.0, samples * float(s) ** 3 / voxels) for s in self.shrink_factors]

    def _optimise(self, fixed: sitk.Image, moving: sitk.Image, initializer: str) -> tuple[sitk.Transform, dict]:
        """Run the registration of the (intensity-clipped) images from one initial transform, with the backend."""
        if self.backend == "elastix":
            return self._optimise_elastix(fixed, moving, initializer)
        return self._optimise_simpleitk(fixed, moving, initializer)

    def _optimise_elastix(self, fixed: sitk.Image, moving: sitk.Image, initializer: str
                          ) -> tuple[sitk.Transform, dict]:
        """elastix on the :func:`coarsened` images (``register`` passes them); the MRI registered onto a moving image
        that covers a small part of it, and inverted."""
        swap = _box_volume(moving) < self.swap_below * _box_volume(fixed)
        if swap:
            found, info = register_elastix(moving, fixed, self.mode, self.elastix, initializer)
            transform = found.GetInverse().Downcast()
        else:
            transform, info = register_elastix(fixed, moving, self.mode, self.elastix, initializer)
        info.update(initializer=initializer, backend="elastix", swapped=swap,
                    final_metric=self._metric_value(fixed, moving, transform))
        return transform, info

    def _metric_value(self, fixed: sitk.Image, moving: sitk.Image, transform: sitk.Transform) -> float:
        """Mattes MI of ``transform`` on a seeded sample of the fixed voxels, summed on one thread (reproducible),
        evaluated by SimpleITK on the images elastix registered (the :func:`coarsened` ones: SimpleITK's metric makes
        a pass over the whole fixed grid, 1 s at 256 x 256 x 200 against 0.16 s coarsened; the value moves by about
        0.01)."""
        reg = sitk.ImageRegistrationMethod()
        reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=self.bins)
        reg.SetMetricSamplingStrategy(reg.RANDOM)
        reg.SetMetricSamplingPercentage(self._sampling_per_level(fixed)[-1], self.seed + 1)
        reg.SetMetricUseFixedImageGradientFilter(False)  # gradients only serve the optimiser, not the value
        reg.SetMetricUseMovingImageGradientFilter(False)
        reg.SetInterpolator(sitk.sitkLinear)
        reg.SetInitialTransform(transform)
        with sitk_threads(1):  # the metric's threads follow the global default, not the method's own setting
            return float(reg.MetricEvaluate(fixed, moving))

    def _optimise_simpleitk(self, fixed: sitk.Image, moving: sitk.Image, initializer: str
                            ) -> tuple[sitk.Transform, dict]:
        """SimpleITK's registration method (the fallback backend)."""
        base = sitk.Euler3DTransform() if self.mode == "rigid" else sitk.AffineTransform(3)
        if initializer == "none":
            centre = fixed.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2.0 for s in fixed.GetSize()])
            base.SetCenter(centre)
            initial = base
        else:
            how = (sitk.CenteredTransformInitializerFilter.GEOMETRY if initializer == "geometry"
                   else sitk.CenteredTransformInitializerFilter.MOMENTS)
            # moments need non-negative "mass" (CT has negative HU): use the images rescaled to [0, 1]
            unit = (lambda im: sitk.RescaleIntensity(im, 0.0, 1.0)) if initializer == "moments" else (lambda im: im)
            initial = sitk.CenteredTransformInitializer(unit(fixed), unit(moving), base, how)
        reg = sitk.ImageRegistrationMethod()
        if self.metric == "mattes":
            reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=self.bins)
        elif self.metric == "correlation":
            reg.SetMetricAsCorrelation()
        else:
            reg.SetMetricAsMeanSquares()
        reg.SetMetricSamplingStrategy(reg.RANDOM)
        # SimpleITK reads seed 0 as "seed from the wall clock": shift by one so that every seed is reproducible.
        fractions = self._sampling_per_level(fixed)
        reg.SetMetricSamplingPercentagePerLevel(fractions, self.seed + 1)
        reg.SetInterpolator(sitk.sitkLinear)
        # Steps in units of the largest voxel shift (mm) thanks to the physical-shift scales. A slow step decay
        # (0.8) with a small minimum step keeps the random-sample metric noise from stopping the descent early.
        reg.SetOptimizerAsRegularStepGradientDescent(
            learningRate=1.0, minStep=1e-5, numberOfIterations=self.max_iterations, relaxationFactor=0.8,
            gradientMagnitudeTolerance=1e-8)
        reg.SetOptimizerScalesFromPhysicalShift()
        reg.SetShrinkFactorsPerLevel(self.shrink_factors)
        reg.SetSmoothingSigmasPerLevel(self.smoothing_sigmas)
        reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
        reg.SetInitialTransform(initial, inPlace=False)
        iterations = [0]
        reg.AddCommand(sitk.sitkIterationEvent, lambda: iterations.__setitem__(0, iterations[0] + 1))
        with sitk_threads(self.threads):
            result = reg.Execute(fixed, moving)
        transform = sitk.CompositeTransform(result).GetNthTransform(0).Downcast() \
            if result.GetName() == "CompositeTransform" else result.Downcast()
        info = {
            "final_metric": float(reg.GetMetricValue()),
            "iterations": int(iterations[0]),
            "stop_condition": str(reg.GetOptimizerStopConditionDescription()),
            "initializer": initializer,
            "samples_per_level": [int(round(f * fixed.GetNumberOfPixels() / float(s) ** 3))
                                  for f, s in zip(fractions, self.shrink_factors)],
            "backend": "simpleitk",
        }
        return transform, info

    def _summary(self, transform: sitk.Transform, overlap: float, extra: dict) -> dict:
        matrix, translation = _matrix_and_translation(transform)
        identity = transform.GetTransformEnum() == sitk.sitkIdentity
        return {
            "mode": self.mode,
            "final_metric": extra.get("final_metric"),
            "iterations": extra.get("iterations", 0),
            "stop_condition": extra.get("stop_condition", f"no optimisation (mode '{self.mode}')"),
            "transform_type": "IdentityTransform" if identity else transform.GetName(),
            "transform_parameters": [] if identity else [float(v) for v in transform.GetParameters()],
            "transform_fixed_parameters": [] if identity else [float(v) for v in transform.GetFixedParameters()],
            "translation_mm": float(np.linalg.norm(translation)),
            "translation_vector_mm": [float(v) for v in translation],
            "rotation_deg": rotation_angle_deg(matrix),
            "overlap": float(overlap),
            "initializer": extra.get("initializer"),
            "samples_per_level": extra.get("samples_per_level", []),
            "backend": extra.get("backend"),
            "swapped": extra.get("swapped", False),
        }

    def _problem(self, info: dict) -> str | None:
        """Why an alignment is implausible, or None."""
        if info["overlap"] < self.min_overlap:
            return (f"the aligned moving image covers only {100 * info['overlap']:.1f}% of the fixed image "
                    f"(min_overlap={self.min_overlap:g})")
        if self.max_final_metric is not None and info["final_metric"] is not None \
                and info["final_metric"] > self.max_final_metric:
            return f"final metric {info['final_metric']:.4g} is worse than max_final_metric={self.max_final_metric:g}"
        if self.max_translation_mm is not None and info["translation_mm"] > self.max_translation_mm:
            return (f"translation {info['translation_mm']:.1f} mm exceeds max_translation_mm="
                    f"{self.max_translation_mm:g}")
        return None

    # -- public -------------------------------------------------------------------------------------------------
    def register(self, moving: Any, fixed: Any, study: str | None = None, path: str | None = None
                 ) -> RegistrationResult:
        """Align ``moving`` to ``fixed`` (``MetaTensor`` (1, X, Y, Z) or ``sitk.Image``) and resample it.

        ``path`` names the moving file in errors (default: ``moving.meta["source_path"]``).
        Raises :class:`FusionInputError` (mode "none", grid mismatch) or :class:`RegistrationError`.
        """
        path = path or _source_path(moving)
        fixed_img = _to_sitk(fixed, "fixed", study, _source_path(fixed))
        moving_img = _to_sitk(moving, "moving", study, path)

        if self.mode == "none":
            same_shape = fixed_img.GetSize() == moving_img.GetSize()
            diff = float(np.max(np.abs(_ras_affine(fixed_img) - _ras_affine(moving_img))))
            if not same_shape or diff > GRID_TOLERANCE:
                raise FusionInputError(
                    "registration mode 'none' needs the moving image on the fixed image's grid, but its "
                    + (f"shape {moving_img.GetSize()} differs from {fixed_img.GetSize()}" if not same_shape
                       else f"affine differs by up to {diff:.3g} mm")
                    + "; use registration mode 'resample' (same scanner coordinates) or 'rigid'",
                    study=study, path=path)
            out = sitk.Image(moving_img)
            out.CopyInformation(fixed_img)
            identity = sitk.Transform(3, sitk.sitkIdentity)
            return RegistrationResult(identity, out, self._summary(identity, 1.0, {}))

        if self.mode in ("rigid", "affine"):
            for name, img, img_path in (("moving", moving_img, path), ("fixed", fixed_img, _source_path(fixed))):
                stats = sitk.MinimumMaximumImageFilter()
                stats.Execute(img)
                if stats.GetMaximum() <= stats.GetMinimum():
                    raise RegistrationError(
                        f"the {name} image has no contrast (every voxel is {stats.GetMinimum():g}): there is nothing "
                        "to register (empty or blank series?)", study=study, path=img_path)
        if not _boxes_overlap(fixed_img, moving_img) or not _boxes_overlap(moving_img, fixed_img):
            raise RegistrationError(
                f"the moving image ({path}, {_extent(moving_img)}) and the fixed MRI ({_source_path(fixed)}, "
                f"{_extent(fixed_img)}) do not overlap in scanner coordinates (a mis-placed MRI or moving image, "
                "different frames of reference, or not the same patient?); check the pair, or align them upstream",
                study=study, path=path)

        if self.mode == "resample":
            identity = sitk.Transform(3, sitk.sitkIdentity)
            img, overlap = self._resample(moving_img, fixed_img, identity)
            info = self._summary(identity, overlap, {})
            problem = self._problem(info)
            if problem:
                raise RegistrationError(f"resampling by scanner coordinates: {problem}", study=study, path=path)
            return RegistrationResult(identity, img, info)

        for name, img, img_path in (("fixed (MRI)", fixed_img, _source_path(fixed)), ("moving", moving_img, path)):
            size = img.GetSize()
            if min(size) < _MIN_SIZE:
                raise RegistrationError(
                    f"the {name} image, {size[0]} x {size[1]} x {size[2]} voxels, is too thin for 3D {self.mode} "
                    f"registration ({min(size)} voxel(s) along an axis; at least {_MIN_SIZE} needed); use "
                    "registration mode 'resample' (same scanner coordinates) or 'none'", study=study, path=img_path)

        attempts = [self.initializer] + (["moments"] if self.initializer == "geometry" else [])
        reasons = []
        if self.backend == "elastix":  # it registers the coarsened images: clip those (8 times fewer voxels)
            fixed_clipped, moving_clipped = _robust_clip(coarsened(fixed_img)), _robust_clip(coarsened(moving_img))
        else:
            fixed_clipped, moving_clipped = _robust_clip(fixed_img), _robust_clip(moving_img)
        for initializer in attempts:
            try:
                transform, extra = self._optimise(fixed_clipped, moving_clipped, initializer)
            except RuntimeError as err:
                msg = str(err).strip().splitlines()
                backend = "elastix" if self.backend == "elastix" else "SimpleITK"
                reasons.append(f"{initializer} start: {backend} failed ({msg[-1][:300] if msg else err})")
                continue
            img, overlap = self._resample(moving_img, fixed_img, transform)
            info = self._summary(transform, overlap, extra)
            problem = self._problem(info)
            if problem is None:
                return RegistrationResult(transform, img, info)
            reasons.append(f"{initializer} start: {problem}")
            logger.warning("study '%s', file '%s': %s registration from the %s start failed: %s", study, path,
                           self.mode, initializer, problem)
        raise RegistrationError(f"{self.mode} registration failed: " + "; ".join(reasons), study=study, path=path)

    def __call__(self, moving: Any, fixed: Any, study: str | None = None) -> MetaTensor | sitk.Image:
        """``moving`` on ``fixed``'s grid: a ``MetaTensor`` with the fixed affine/meta plus ``"registration"`` and
        ``"moving_source_path"`` (``sitk.Image`` when ``fixed`` is one)."""
        result = self.register(moving, fixed, study=study)
        if isinstance(fixed, sitk.Image):
            return result.image
        arr = sitk.GetArrayFromImage(result.image).transpose(2, 1, 0)[None]
        meta = dict(getattr(fixed, "meta", {}) or {})
        affine = fixed.affine.clone() if isinstance(fixed, MetaTensor) else torch.as_tensor(
            lps_geometry_to_ras_affine(result.image.GetSpacing(), result.image.GetDirection(),
                                       result.image.GetOrigin()))
        meta["affine"] = affine
        meta["moving_source_path"] = _source_path(moving)
        meta["registration"] = result.info
        return MetaTensor(torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)), meta=meta)


# ---------------------------------------------------------------------------------------------------------------------
# dictionary transform
# ---------------------------------------------------------------------------------------------------------------------
class RegisterToFixedd(MapTransform):
    """Dictionary wrapper of :class:`RegisterToFixed`: ``d[key]`` is replaced by itself on ``d[fixed_key]``'s grid.

    ``RegisterToFixedd(keys="moving", fixed_key="mri", mode="rigid", fill_value=-1024)`` on
    ``{"study": "p01", "mri": MetaTensor, "moving": MetaTensor}``. ``fill_value`` may be one value per key. Errors
    name ``d[study_key]`` and the moving file. The other arguments are those of :class:`RegisterToFixed`.
    """

    def __init__(
        self,
        keys: KeysCollection,
        fixed_key: str,
        mode: str = "rigid",
        fill_value: float | Sequence[float] = 0.0,
        interpolation: str = "linear",
        metric: str = "mattes",
        bins: int = 32,
        sampling_fraction: float = 0.2,
        max_samples: int | None = 200_000,
        seed: int = 0,
        shrink_factors: Sequence[int] = (4, 2, 1),
        smoothing_sigmas: Sequence[float] = (2, 1, 0),
        max_iterations: int = 500,
        min_overlap: float = 0.2,
        max_final_metric: float | None = None,
        max_translation_mm: float | None = None,
        initializer: str = "geometry",
        backend: str = "elastix",
        elastix: ElastixSettings | Mapping | None = None,
        swap_below: float = 0.5,
        threads: int | None = 1,
        study_key: str = "study",
        allow_missing_keys: bool = False,
    ):
        super().__init__(keys, allow_missing_keys)
        self.fixed_key = fixed_key
        self.study_key = study_key
        fills = ensure_tuple_rep(fill_value, len(self.keys))
        common = dict(mode=mode, interpolation=interpolation, metric=metric, bins=bins,
                      sampling_fraction=sampling_fraction, max_samples=max_samples, seed=seed,
                      shrink_factors=shrink_factors, smoothing_sigmas=smoothing_sigmas, max_iterations=max_iterations,
                      min_overlap=min_overlap, max_final_metric=max_final_metric,
                      max_translation_mm=max_translation_mm, initializer=initializer, backend=backend,
                      elastix=elastix, swap_below=swap_below, threads=threads)
        self.registrators = {k: RegisterToFixed(fill_value=f, **common) for k, f in zip(self.keys, fills)}

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        study = d.get(self.study_key)
        study = None if study is None else str(study)
        if self.fixed_key not in d:
            raise FusionInputError(f"no fixed image under key '{self.fixed_key}'", study=study)
        fixed = d[self.fixed_key]
        for key in self.key_iterator(d):
            d[key] = self.registrators[key](d[key], fixed, study=study)
        return d
