"""Rigid / affine registration with elastix (``itk-elastix``, on the ``itk`` we already depend on): the fast backend
of :class:`~fusionmamba_med.transforms.registration.RegisterToFixed`.

elastix's stochastic optimiser (adaptive stochastic gradient descent) draws a few thousand random points per
iteration on four pyramid levels, so its cost hardly grows with the size of the MRI: the whole registration step of a
256 x 256 x 200 MRI (registered block-averaged to 2 x 2 x 1.5 mm, see ``registration.coarsened``) takes 1.5-2 s on two
CPU cores where the SimpleITK backend takes 35 s (benchmarks/bench_registration.py). The random voxels are drawn from
a fixed seed, the metric's sums are made on one thread, and every registration runs in a fresh process forked from a
server that has loaded elastix (below; ready about 1 s after it is started), so the same inputs give the same
transform every time, whatever ran before.

Images come in and transforms go out as SimpleITK objects (ITK LPS physical space, the transform maps fixed points to
moving points, as ``sitk.ImageRegistrationMethod`` gives it), so resampling and the plausibility checks stay in
SimpleITK.
"""

from __future__ import annotations

import atexit
import os
import pickle
import struct
import subprocess
import sys
import threading
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

__all__ = ["ElastixSettings", "INITIALIZERS", "PYRAMIDS", "register_elastix", "start_server"]


@dataclass
class ElastixSettings:
    """elastix parameters that matter for a rigid / affine multi-modal registration.

    Args:
        resolutions: levels of the image pyramids (the coarsest smooths with sigma 2^(resolutions-1) / 2 voxels).
        fixed_pyramid, moving_pyramid: ``"smoothing"`` (every level smoothed, on the image's own grid) or
            ``"recursive"`` (smoothed and downsampled 2^level times: the coarse levels cost little), or for the moving
            image ``"auto"``: recursive above :data:`RECURSIVE_ABOVE_VOXELS` voxels, where it saves seconds, smoothing
            below (a 4.4 mm SPECT lost accuracy downsampled: TRE 1.6 instead of 1.3 mm on the sample study). The fixed
            image (whose voxels are sampled) keeps its grid: downsampling it lost the anatomy for a CT with couch and
            head holder (TRE 8 mm instead of 0.1 on the phantom).
        iterations: optimiser iterations per level, coarsest first, or one count for every level (ASGD runs them
            all). The two coarse levels only bring the transform near: half the iterations and samples there took
            the registration step at 256 x 256 x 200 from 1.9 to 1.5 s, the robustness phantoms' TRE unchanged to
            0.02 mm.
        samples: random voxels per iteration, per level or one count (``Random`` sampler, new voxels every
            iteration).
        bins: histogram bins of Mattes mutual information.
        seed: seed of the random points.
        threads: threads elastix uses; 1 makes the metric's sums in one order, i.e. the same transform every run.
    """

    resolutions: int = 4
    fixed_pyramid: str = "smoothing"
    moving_pyramid: str = "auto"
    iterations: int | tuple[int, ...] = (250, 250, 500, 500)
    samples: int | tuple[int, ...] = (1024, 1024, 2048, 2048)
    bins: int = 32
    seed: int = 121212
    threads: int = 1

    def per_level(self, which: str) -> list[int]:
        """``iterations`` or ``samples`` for each level, coarsest first."""
        value = getattr(self, which)
        return [int(value)] * self.resolutions if isinstance(value, int) else [int(v) for v in value]

    def __post_init__(self) -> None:
        for which in ("iterations", "samples"):
            value = getattr(self, which)
            if not isinstance(value, int) and len(value) != self.resolutions:
                raise ValueError(f"elastix {which} needs one count per level ({self.resolutions}), got {value!r}")
        for which, allowed in (("fixed_pyramid", sorted(PYRAMIDS)), ("moving_pyramid", sorted(PYRAMIDS) + ["auto"])):
            if getattr(self, which) not in allowed:
                raise ValueError(f"elastix {which} must be one of {allowed}, got {getattr(self, which)!r}")


def _elastix_wrapping():
    """elastix's ITK wrapping (registration method, parameter object, NumPy bridge, ITK's global random generator and
    thread settings), loaded without the rest of ITK.

    ``itk.ElastixRegistrationMethod`` through ITK's lazy loader loads every ITK module elastix's wrapping declares as a
    dependency (intensity, thresholding, FFT, ... filters: 1 GB, 11-15 s on two cores); these swig modules load only
    what the classes we call need (0.7 s, 240 MB). The objects are the same C++ classes either way. ITK's array helpers
    would also import torch to accept tensors (2.4 s); we only pass NumPy arrays, so that is switched off here.
    """
    from types import SimpleNamespace

    import itk.support.helpers

    itk.support.helpers._HAVE_TORCH = False  # only NumPy arrays are passed; torch would add 2.4 s to the server start
    from itk import ITKCommonBasePython, elxParameterObjectPython, itkElastixRegistrationMethodPython, itkPyBufferPython

    return SimpleNamespace(
        method=itkElastixRegistrationMethodPython.itkElastixRegistrationMethodIF3IF3,
        parameters=elxParameterObjectPython.elastixParameterObject,
        image_from_array=itkPyBufferPython.itkPyBufferIF3.GetImageFromArray,
        random=ITKCommonBasePython.itkMersenneTwisterRandomVariateGenerator,
        threads=ITKCommonBasePython.itkMultiThreaderBase,
    )


def _to_itk(img: sitk.Image, elx):
    """A SimpleITK float image as an ITK one (same voxels, spacing, origin, direction)."""
    out = elx.image_from_array(np.ascontiguousarray(sitk.GetArrayViewFromImage(img), dtype=np.float32))
    out.SetSpacing([float(v) for v in img.GetSpacing()])
    out.SetOrigin([float(v) for v in img.GetOrigin()])
    out.SetDirection(np.asarray(img.GetDirection(), dtype=np.float64).reshape(3, 3))
    return out


#: our pyramid names -> elastix's FixedImagePyramid / MovingImagePyramid components (without the prefix).
PYRAMIDS = {"recursive": "RecursiveImagePyramid", "smoothing": "SmoothingImagePyramid"}

#: our initializer names -> elastix's AutomaticTransformInitializationMethod (None: no automatic initialisation).
INITIALIZERS = {"geometry": "GeometricalCenter", "moments": "CenterOfGravity", "none": None}


#: moving images above this many voxels get the downsampling pyramid (``moving_pyramid="auto"``).
RECURSIVE_ABOVE_VOXELS = 1_000_000
#: a downsampling pyramid keeps at least this many voxels along every axis at every level.
MIN_PYRAMID_VOXELS = 8


def pyramid_schedule(size: tuple[int, ...], resolutions: int) -> list[list[int]]:
    """Downsampling factors per level (coarsest first) and axis for a recursive pyramid of an image of ``size``
    voxels: ``2^(resolutions - 1 - level)``, capped so that every axis keeps at least :data:`MIN_PYRAMID_VOXELS`
    voxels (elastix crashes on a level with an axis shrunk to nothing, e.g. 12 slices shrunk 8 times)."""
    return [[max(1, min(2 ** (resolutions - 1 - level), n // MIN_PYRAMID_VOXELS)) for n in size]
            for level in range(resolutions)]


def _parameter_object(mode: str, s: ElastixSettings, initializer: str, elx, moving_size: tuple[int, ...]):
    params = elx.parameters.New()
    pmap = params.GetDefaultParameterMap("rigid" if mode == "rigid" else "affine", s.resolutions)
    pmap["Metric"] = ["AdvancedMattesMutualInformation"]
    pmap["NumberOfHistogramBins"] = [str(s.bins)]
    pmap["FixedImagePyramid"] = ["Fixed" + PYRAMIDS[s.fixed_pyramid]]
    moving_pyramid = s.moving_pyramid
    if moving_pyramid == "auto":
        moving_pyramid = "recursive" if int(np.prod(moving_size)) > RECURSIVE_ABOVE_VOXELS else "smoothing"
    pmap["MovingImagePyramid"] = ["Moving" + PYRAMIDS[moving_pyramid]]
    if moving_pyramid == "recursive":
        pmap["MovingImagePyramidSchedule"] = [str(f) for level in pyramid_schedule(moving_size, s.resolutions)
                                              for f in level]
    pmap["MaximumNumberOfIterations"] = [str(v) for v in s.per_level("iterations")]
    pmap["NumberOfSpatialSamples"] = [str(v) for v in s.per_level("samples")]
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
    elx = _elastix_wrapping()
    s = settings or ElastixSettings()
    # elastix's generators come from ITK's process-wide Mersenne twister: new ones are seeded from its seed plus a
    # count of the generators made so far in the process, which RandomSeed does not reset; without resetting both, a
    # registration's transform depends on the registrations run before it in the process.
    elx.random.GetInstance().SetSeed(s.seed)
    elx.random.ResetNextSeed()  # new generators are seeded from a process-wide count
    # elastix sets ITK's global thread count from MaximumNumberOfThreads only once it runs: the filters it makes
    # before (the first call's pyramids and samplers) would use every core and sum in another order. Set it first.
    threads_before = elx.threads.GetGlobalDefaultNumberOfThreads()
    elx.threads.SetGlobalDefaultNumberOfThreads(s.threads)
    try:
        method = elx.method.New()
        fixed_itk, moving_itk = _to_itk(fixed, elx), _to_itk(moving, elx)
        method.SetFixedImage(fixed_itk)
        method.SetMovingImage(moving_itk)
        method.SetParameterObject(_parameter_object(mode, s, initializer, elx, moving.GetSize()))
        method.SetLogToConsole(False)
        method.SetLogToFile(False)
        method.SetNumberOfThreads(s.threads)
        method.UpdateLargestPossibleRegion()
    finally:
        elx.threads.SetGlobalDefaultNumberOfThreads(threads_before)
    result = method.GetTransformParameterObject()
    pmap = result.GetParameterMap(result.GetNumberOfParameterMaps() - 1)
    transform = _transform_of({k: tuple(pmap[k]) for k in ("TransformParameters", "CenterOfRotationPoint")
                               + (("ComputeZYX",) if "ComputeZYX" in pmap else ())}, mode)
    info = {
        "iterations": sum(s.per_level("iterations")),
        "stop_condition": "elastix ASGD: " + "/".join(str(v) for v in s.per_level("iterations"))
                          + " iterations per level",
        "samples_per_level": s.per_level("samples"),
    }
    return transform, info


# -- one fresh process per registration ------------------------------------------------------------------------------
# elastix keeps state between registrations in a process (measured: the same registration gave another transform
# after other tests had read DICOM with ITK or run other registrations, with every seed and thread count fixed). So
# each registration runs in a process forked from a server that has loaded elastix, run one tiny registration (its
# components install at the first run) and nothing else: its transform depends on its inputs only, in any run and
# any order. The server is a plain ``python -c`` child talking pickles over its stdin / stdout (started in the
# background by :func:`start_server`; ready in about a second, see :func:`_elastix_wrapping`); not a multiprocessing
# worker, which would re-import the parent's main module (``monai.bundle``, torch: seconds). Each registration is an
# ``os.fork`` of the server (milliseconds). The server exits when the pipe from its parent closes, i.e. when the parent
# exits or dies, so a killed run leaves no process behind holding its pipes.
_SERVER: "_Server | None" = None
_SERVER_LOCK = threading.Lock()


def _send(pipe, obj) -> None:
    payload = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    pipe.write(struct.pack("<Q", len(payload)))
    pipe.write(payload)
    pipe.flush()


def _receive(pipe):
    """The next message on ``pipe``; ``EOFError`` when the other end has closed."""
    head = pipe.read(8)
    if len(head) < 8:
        raise EOFError
    size = struct.unpack("<Q", head)[0]
    payload = pipe.read(size)
    if len(payload) < size:
        raise EOFError
    return pickle.loads(payload)


def _serve(die_with_parent: bool, parent_pid: int | None = None) -> None:
    """The server's main loop (``python -c``): load elastix, run it once, then one forked registration per request
    until stdin closes. Replies ``("ok", result)`` or ``("error", message)``; the first message is
    ``("ready", pid)``."""
    if die_with_parent:
        from fusionmamba_med._process import die_with_parent as _die

        _die(parent_pid)
    # the replies get their own descriptor; fd 1 becomes stderr, so that nothing ITK prints can corrupt them
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    requests = sys.stdin.buffer
    elx = _elastix_wrapping()
    elx.threads.SetGlobalDefaultNumberOfThreads(1)  # no worker threads before the server forks
    elx.threads.SetGlobalMaximumNumberOfThreads(1)
    tiny = sitk.GetImageFromArray(np.random.default_rng(0).random((24, 24, 24), dtype=np.float32))
    for mode in ("rigid", "affine"):
        _register_here(tiny, tiny, mode, ElastixSettings(iterations=2, samples=256))
    _send(replies, ("ready", os.getpid()))
    while True:
        try:
            request = _receive(requests)
        except EOFError:  # the parent closed the pipe or died
            return
        try:
            _send(replies, ("ok", _forked_registration(*request)))
        except RuntimeError as err:
            _send(replies, ("error", str(err)))


class _Server:
    """The parent's side of one server process: start it, send it registrations, stop it."""

    def __init__(self) -> None:
        import fusionmamba_med

        root = os.path.dirname(os.path.dirname(os.path.abspath(fusionmamba_med.__file__)))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p))
        # the kernel's parent-death signal follows the thread that started the child: ask for it from the main thread
        main = threading.current_thread() is threading.main_thread()
        code = f"from fusionmamba_med.transforms.elastix import _serve; _serve({main}, {os.getpid()})"
        self.process = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        env=env, close_fds=True)
        self.ready = False

    def wait_ready(self) -> None:
        """Block until the server has sent its ``("ready", pid)``; ``EOFError`` if it ended first."""
        if not self.ready:
            kind, _ = _receive(self.process.stdout)
            self.ready = kind == "ready"

    def call(self, request: tuple):
        try:
            self.wait_ready()
            _send(self.process.stdin, request)
            kind, result = _receive(self.process.stdout)
        except (EOFError, BrokenPipeError, OSError) as err:
            code = self.process.poll()
            raise _ServerDied(f"the elastix server process died (exit code {code})") from err
        if kind == "error":
            raise RuntimeError(result)
        return result

    def stop(self) -> None:
        for pipe in (self.process.stdin, self.process.stdout):
            try:
                pipe.close()
            except OSError:
                pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - a registration that does not end
            self.process.kill()
            self.process.wait()


class _ServerDied(RuntimeError):
    pass


def _stop_server() -> None:
    global _SERVER
    with _SERVER_LOCK:
        if _SERVER is not None:
            _SERVER.stop()
            _SERVER = None


def start_server(wait: bool = False) -> None:
    """Start the registration server now (in the background) rather than at the first registration; ``wait``: return
    only once it is ready (e.g. to time registrations without its one-time start)."""
    global _SERVER
    with _SERVER_LOCK:
        if _SERVER is None or _SERVER.process.poll() is not None:
            if _SERVER is None:
                atexit.register(_stop_server)
            _SERVER = _Server()
        if wait:
            try:
                _SERVER.wait_ready()
            except EOFError as err:
                raise RuntimeError(f"the elastix server did not start (exit code {_SERVER.process.wait()})") from err


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
    read_end, write_end = os.pipe()
    server = os.getpid()
    pid = os.fork()
    if pid == 0:  # the child: one registration, its result down the pipe, and out
        try:
            os.close(read_end)
            from fusionmamba_med._process import die_with_parent

            die_with_parent(server)  # a server killed mid-registration takes its registration with it
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
    global _SERVER
    start_server()
    request = (_as_arrays(fixed), _as_arrays(moving), mode, settings or ElastixSettings(), initializer)
    with _SERVER_LOCK:
        server = _SERVER
        try:
            params, fixed_params, info = server.call(request)
        except _ServerDied:
            _SERVER = None  # the next registration starts a new one
            raise
    transform = sitk.Euler3DTransform() if mode == "rigid" else sitk.AffineTransform(3)
    transform.SetFixedParameters(fixed_params)
    transform.SetParameters(params)
    return transform, info
