"""Load the next study while this one is fused: the preprocessing (read, register, normalise) of a batch's studies
runs in one worker process, a study ahead of the network.

A process, not a thread: elastix (ITK's Python wrapping) holds the GIL while it registers, which would stall the
network's Python-level work in the same process. The worker is started with ``spawn`` (never ``fork`` after torch's
thread pools exist), uses one torch thread, and sends back each study's data dict (MetaTensors pickle with their
meta) and its per-transform seconds; an error travels back with its study and file
(:class:`~fusionmamba_med.errors.FusionInputError` pickles whole) and is raised where the study is taken.
"""

from __future__ import annotations

import multiprocessing
import pickle
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from monai.transforms import Compose, apply_transform

from fusionmamba_med._process import die_with_parent
from fusionmamba_med.errors import FusionInputError
from fusionmamba_med.inference.batch import root_cause, stage

__all__ = ["Prefetcher", "preprocess"]

_WORKER_PREPROCESSING: Callable | None = None


def preprocess(preprocessing: Callable, study: dict, timings: dict[str, float]) -> dict:
    """Run ``preprocessing`` (a ``Compose`` or one transform) on a copy of ``study``, adding each transform's seconds
    to ``timings`` under its class name."""
    data = dict(study)
    transforms = preprocessing.transforms if isinstance(preprocessing, Compose) else [preprocessing]
    for t in transforms:
        with stage(timings, type(t).__name__):
            data = apply_transform(t, data)
    return data


def _init_worker(preprocessing: Callable) -> None:
    import torch

    parent = multiprocessing.parent_process()
    die_with_parent(parent.pid if parent is not None else None)
    global _WORKER_PREPROCESSING
    _WORKER_PREPROCESSING = preprocessing
    torch.set_num_threads(1)  # the network has the other threads


def _load_in_worker(study: dict) -> bytes:
    """The study's ``(data, seconds)``, pickled here into plain bytes: tensors then travel through the pipe, not
    through shared-memory files (which a full /dev/shm or a file-size limit would make fail)."""
    timings: dict[str, float] = {}
    try:
        return pickle.dumps((preprocess(_WORKER_PREPROCESSING, study, timings), timings),
                            protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as err:  # the cause, not MONAI's wrapper: a chained cause does not survive pickling
        raise root_cause(err) from None


class Prefetcher:
    """Loads ``studies`` (in this order) one ahead of :meth:`take` in a worker process.

    ``take(study)`` returns ``(data, seconds)`` for the next study (loading it in this process if it was not
    submitted) and submits the one after it.
    """

    def __init__(self, preprocessing: Callable, studies: Sequence[dict]):
        self.preprocessing = preprocessing
        self.queue = list(studies)
        self.pending: dict[int, Future] = {}
        self.pool = self._start()
        self.position = 0
        self._submit(1)  # the first study loads here while the worker starts; the second there meanwhile

    def _start(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_init_worker, initargs=(self.preprocessing,))

    def _submit(self, index: int) -> None:
        if index < len(self.queue) and index not in self.pending:
            self.pending[index] = self.pool.submit(_load_in_worker, self.queue[index])

    def take(self, study: dict) -> tuple[dict, dict[str, float]]:
        index = next((i for i in range(self.position, len(self.queue)) if self.queue[i] is study), None)
        if index is None:  # not planned: load it here
            timings: dict[str, float] = {}
            return preprocess(self.preprocessing, study, timings), timings
        self.position = index + 1
        future = self.pending.pop(index, None)
        if future is None:
            self._submit(index + 1)
            timings = {}
            return preprocess(self.preprocessing, study, timings), timings
        try:
            result = pickle.loads(future.result())
        except BrokenProcessPool as err:  # the worker died on this study (e.g. a crash in a reader): a new one goes on
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pending.clear()
            self.pool = self._start()
            self._submit(index + 1)
            raise FusionInputError("the loading worker process died while reading this study (a crash in a reader; "
                                   "the other studies go on)", study=study.get("study", study.get("study_id"))
                                   ) from err
        self._submit(index + 1)
        return result

    def close(self) -> None:
        for future in self.pending.values():
            future.cancel()
        self.pool.shutdown(wait=True, cancel_futures=True)
