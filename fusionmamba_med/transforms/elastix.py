"""Rigid / affine registration with elastix (``itk-elastix``, on the ``itk`` we already depend on): the fast backend
of :class:`~fusionmamba_med.transforms.registration.RegisterToFixed`.

elastix's stochastic optimiser (adaptive stochastic gradient descent) draws a few thousand random points per
iteration on a four-level smoothing pyramid, so its cost does not grow with the size of the MRI: about 2-3 s for a
256 x 256 x 200 MRI on two CPU cores where the SimpleITK backend takes 35 s. The random points are drawn from a fixed
seed and the metric's sums are made on one thread, so the same inputs give the same transform every time.

Images come in and transforms go out as SimpleITK objects (ITK LPS physical space, the transform maps fixed points to
moving points, as ``sitk.ImageRegistrationMethod`` gives it), so resampling and the plausibility checks stay in
SimpleITK.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

__all__ = ["ElastixSettings", "INITIALIZERS", "register_elastix", "elastix_available"]


def elastix_available() -> bool:
    """Whether itk-elastix is installed."""
    try:
        import itk

        return hasattr(itk, "ElastixRegistrationMethod")
    except ImportError:  # pragma: no cover - itk is a dependency
        return False


@dataclass
class ElastixSettings:
    """elastix parameters that matter for a rigid / affine multi-modal registration.

    Args:
        resolutions: levels of the smoothing pyramid (the coarsest smooths with sigma 2^(resolutions-1) voxels).
        iterations: optimiser iterations per level (ASGD runs them all).
        samples: random voxels per iteration (``Random`` sampler, new voxels every iteration).
        bins: histogram bins of Mattes mutual information.
        seed: seed of the random points.
        threads: threads elastix uses; 1 makes the metric's sums in one order, i.e. the same transform every run.
    """

    resolutions: int = 4
    iterations: int = 500
    samples: int = 2048
    bins: int = 32
    seed: int = 121212
    threads: int = 1


def _to_itk(img: sitk.Image):
    """A SimpleITK float image as an ITK one (same voxels, spacing, origin, direction)."""
    import itk

    out = itk.image_from_array(np.ascontiguousarray(sitk.GetArrayViewFromImage(img), dtype=np.float32))
    out.SetSpacing([float(v) for v in img.GetSpacing()])
    out.SetOrigin([float(v) for v in img.GetOrigin()])
    out.SetDirection(itk.matrix_from_array(np.asarray(img.GetDirection(), dtype=np.float64).reshape(3, 3)))
    return out


#: our initializer names -> elastix's AutomaticTransformInitializationMethod (None: no automatic initialisation).
INITIALIZERS = {"geometry": "GeometricalCenter", "moments": "CenterOfGravity", "none": None}


def _parameter_object(mode: str, s: ElastixSettings, initializer: str = "geometry"):
    import itk

    params = itk.ParameterObject.New()
    pmap = params.GetDefaultParameterMap("rigid" if mode == "rigid" else "affine", s.resolutions)
    pmap["Metric"] = ["AdvancedMattesMutualInformation"]
    pmap["NumberOfHistogramBins"] = [str(s.bins)]
    pmap["MaximumNumberOfIterations"] = [str(s.iterations)]
    pmap["NumberOfSpatialSamples"] = [str(s.samples)]
    # "Random" (voxel centres), not "RandomCoordinate" (off-grid points): with the latter, a registration repeated in
    # one process gave another transform depending on what ran before it (measured: tests run in another order)
    pmap["ImageSampler"] = ["Random"]
    pmap["NewSamplesEveryIteration"] = ["true"]
    pmap["RandomSeed"] = [str(s.seed)]
    method = INITIALIZERS[initializer]
    pmap["AutomaticTransformInitialization"] = ["true" if method else "false"]
    if method:
        pmap["AutomaticTransformInitializationMethod"] = [method]
    pmap["WriteResultImage"] = ["false"]
    pmap["ResultImageFormat"] = ["nii"]
    pmap["MaximumNumberOfThreads"] = [str(s.threads)]
    params.AddParameterMap(pmap)
    return params


def _transform_of(pmap, mode: str) -> sitk.Transform:
    """elastix's result (its TransformParameters and CenterOfRotationPoint) as a SimpleITK transform."""
    params = [float(v) for v in pmap["TransformParameters"]]
    centre = [float(v) for v in pmap["CenterOfRotationPoint"]]
    if mode == "rigid":
        t = sitk.Euler3DTransform()
        t.SetCenter(centre)
        zyx = "ComputeZYX" in pmap and str(pmap["ComputeZYX"][0]).lower() == "true"
        t.SetComputeZYX(zyx)
        t.SetParameters(params)
        return t
    t = sitk.AffineTransform(3)
    t.SetCenter(centre)
    t.SetParameters(params)
    return t


def register_elastix(fixed: sitk.Image, moving: sitk.Image, mode: str = "rigid",
                     settings: ElastixSettings | None = None, initializer: str = "geometry"
                     ) -> tuple[sitk.Transform, dict]:
    """Register ``moving`` to ``fixed`` (3D float ``sitk.Image``s) with elastix; returns the transform (fixed ->
    moving LPS points: ``sitk.Euler3DTransform`` for ``"rigid"``, ``sitk.AffineTransform`` for ``"affine"``) and
    ``{"iterations", "stop_condition", "samples_per_level"}``. ``initializer``: ``"geometry"`` (image centres),
    ``"moments"`` (centres of gravity) or ``"none"`` (scanner coordinates as they are).

    Raises ``RuntimeError`` when elastix fails (e.g. too few samples inside both images).
    """
    import itk

    s = settings or ElastixSettings()
    # elastix draws from ITK's process-wide Mersenne twister, whose state its RandomSeed does not fully reset: a
    # second registration in one process would start elsewhere. Seed it here so that every call is the first.
    itk.MersenneTwisterRandomVariateGenerator.GetInstance().SetSeed(s.seed)
    # elastix sets ITK's global thread count from MaximumNumberOfThreads only once it runs: the filters it makes
    # before (the first call's pyramids and samplers) would use every core and sum in another order. Set it first.
    threads_before = itk.MultiThreaderBase.GetGlobalDefaultNumberOfThreads()
    itk.MultiThreaderBase.SetGlobalDefaultNumberOfThreads(s.threads)
    try:
        method = itk.ElastixRegistrationMethod.New(_to_itk(fixed), _to_itk(moving))
        method.SetParameterObject(_parameter_object(mode, s, initializer))
        method.SetLogToConsole(False)
        method.SetLogToFile(False)
        method.SetNumberOfThreads(s.threads)
        method.UpdateLargestPossibleRegion()
    finally:
        itk.MultiThreaderBase.SetGlobalDefaultNumberOfThreads(threads_before)
    result = method.GetTransformParameterObject()
    transform = _transform_of(result.GetParameterMap(result.GetNumberOfParameterMaps() - 1), mode)
    info = {
        "iterations": s.resolutions * s.iterations,
        "stop_condition": f"elastix ASGD: {s.iterations} iterations x {s.resolutions} levels",
        "samples_per_level": [s.samples] * s.resolutions,
    }
    return transform, info
