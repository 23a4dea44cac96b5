"""Rigid / affine registration with elastix (``itk-elastix``, on the ``itk`` we already depend on): the fast backend
of :class:`~fusionmamba_med.transforms.registration.RegisterToFixed`.

elastix's stochastic optimiser (adaptive stochastic gradient descent) draws a few thousand random points per
iteration on a four-level smoothing pyramid, so its cost hardly grows with the size of the MRI: the whole registration step
of a 256 x 256 x 200 MRI took 8.1 s on two CPU cores where the SimpleITK backend takes 35 s
(benchmarks/bench_registration.py). The random voxels are drawn from a
fixed seed, the metric's sums are made on one thread, and every registration runs in a fresh process forked from a
server that has loaded elastix (below), so the same inputs give the same transform every time, whatever ran before.

Images come in and transforms go out as SimpleITK objects (ITK LPS physical space, the transform maps fixed points to
moving points, as ``sitk.ImageRegistrationMethod`` gives it), so resampling and the plausibility checks stay in
SimpleITK.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

__all__ = ["ElastixSettings", "INITIALIZERS", "register_elastix", "start_server"]


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


def _register_here(fixed: sitk.Image, moving: sitk.Image, mode: str = "rigid",
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
    # elastix's generators come from ITK's process-wide Mersenne twister: new ones are seeded from its seed plus a
    # count of the generators made so far in the process, which RandomSeed does not reset; without resetting both, a
    # registration's transform depends on the registrations run before it in the process.
    itk.MersenneTwisterRandomVariateGenerator.GetInstance().SetSeed(s.seed)
    itk.MersenneTwisterRandomVariateGenerator.ResetNextSeed()  # new generators are seeded from a process-wide count
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
    pmap = result.GetParameterMap(result.GetNumberOfParameterMaps() - 1)
    transform = _transform_of({k: tuple(pmap[k]) for k in ("TransformParameters", "CenterOfRotationPoint")
                               + (("ComputeZYX",) if "ComputeZYX" in pmap else ())}, mode)
    info = {
        "iterations": s.resolutions * s.iterations,
        "stop_condition": f"elastix ASGD: {s.iterations} iterations x {s.resolutions} levels",
        "samples_per_level": [s.samples] * s.resolutions,
    }
    return transform, info


# -- one fresh process per registration ------------------------------------------------------------------------------
# elastix keeps state between registrations in a process (measured: the same registration gave another transform
# after other tests had read DICOM with ITK or run other registrations, with every seed and thread count fixed). So
# each registration runs in a process forked from a server that has loaded elastix, run one tiny registration (its
# components install at the first run) and nothing else: its transform depends on its inputs only, in any run and
# any order. The server is one spawned worker (started in the background by :func:`start_server`, so that importing
# ITK, ~10 s, overlaps other work); each registration is an ``os.fork`` of it (milliseconds).
_POOL = None


def _server_preload() -> None:
    """Make the server ready to fork registrations: elastix loaded and run once, on one thread."""
    import itk

    from fusionmamba_med.inference.prefetch import die_with_parent

    die_with_parent()  # a killed run leaves no server behind
    itk.MultiThreaderBase.SetGlobalDefaultNumberOfThreads(1)  # no worker threads before the server forks
    itk.MultiThreaderBase.SetGlobalMaximumNumberOfThreads(1)
    tiny = sitk.GetImageFromArray(np.random.default_rng(0).random((24, 24, 24), dtype=np.float32))
    for mode in ("rigid", "affine"):
        _register_here(tiny, tiny, mode, ElastixSettings(iterations=2, samples=256))


def _ready() -> bool:
    return True


def _stop_server() -> None:
    global _POOL
    if _POOL is not None:
        _POOL.shutdown(wait=True, cancel_futures=True)
        _POOL = None


def start_server(wait: bool = False) -> None:
    """Start the registration server now (in the background) rather than at the first registration; ``wait``: return
    only once it is ready (e.g. to time registrations without its one-time start)."""
    global _POOL
    if _POOL is None:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        from multiprocessing.util import Finalize

        _POOL = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                                    initializer=_server_preload)
        _POOL.submit(_ready)
        # stop the server before multiprocessing joins this process's children at exit (in a worker process,
        # e.g. the study prefetcher's, that join would otherwise wait for the server forever)
        Finalize(None, _stop_server, exitpriority=100)  # before the finalizers that close its queues (10)
    if wait:
        _POOL.submit(_ready).result()


def _as_arrays(img: sitk.Image) -> tuple:
    return (sitk.GetArrayFromImage(img), img.GetSpacing(), img.GetOrigin(), img.GetDirection())


def _from_arrays(arrays: tuple) -> sitk.Image:
    arr, spacing, origin, direction = arrays
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    img.SetDirection(direction)
    return img


def _forked_registration(fixed: tuple, moving: tuple, mode: str, settings: ElastixSettings, initializer: str):
    """In the server: fork, register in the child, return its ``(parameters, fixed parameters, info)``."""
    import os
    import pickle

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: one registration, its result down the pipe, and out
        try:
            os.close(read_end)
            transform, info = _register_here(_from_arrays(fixed), _from_arrays(moving), mode, settings, initializer)
            payload = pickle.dumps(("ok", (transform.GetParameters(), transform.GetFixedParameters(), info)))
        except BaseException as err:  # noqa: BLE001 - everything goes back to the caller
            payload = pickle.dumps(("error", f"{type(err).__name__}: {err}"))
        with os.fdopen(write_end, "wb") as pipe:
            pipe.write(payload)
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        payload = pipe.read()
    _, status = os.waitpid(pid, 0)
    if not payload:
        raise RuntimeError(f"the elastix process died (wait status {status})")
    kind, result = pickle.loads(payload)
    if kind == "error":
        raise RuntimeError(result)
    return result


def register_elastix(fixed: sitk.Image, moving: sitk.Image, mode: str = "rigid",
                     settings: ElastixSettings | None = None, initializer: str = "geometry"
                     ) -> tuple[sitk.Transform, dict]:
    """Register ``moving`` to ``fixed`` (3D float ``sitk.Image``s) with elastix, in a fresh process (see above);
    returns the transform (fixed -> moving LPS points: ``sitk.Euler3DTransform`` for ``"rigid"``,
    ``sitk.AffineTransform`` for ``"affine"``) and ``{"iterations", "stop_condition", "samples_per_level"}``.
    ``initializer``: ``"geometry"`` (image centres), ``"moments"`` (centres of gravity) or ``"none"`` (scanner
    coordinates as they are).

    Raises ``RuntimeError`` when elastix fails (e.g. too few samples inside both images) or its process dies.
    """
    from concurrent.futures.process import BrokenProcessPool

    global _POOL
    start_server()
    try:
        params, fixed_params, info = _POOL.submit(_forked_registration, _as_arrays(fixed), _as_arrays(moving), mode,
                                                  settings or ElastixSettings(), initializer).result()
    except BrokenProcessPool as err:
        _POOL = None
        raise RuntimeError(f"the elastix server process died ({err})") from err
    transform = sitk.Euler3DTransform() if mode == "rigid" else sitk.AffineTransform(3)
    transform.SetFixedParameters(fixed_params)
    transform.SetParameters(params)
    return transform, info
