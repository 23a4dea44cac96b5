"""The loader worker: the next study is read and preprocessed in another process, with the same result as here,
and its errors (and its crashes) come back as the study's failure."""

from __future__ import annotations

import os

import pytest
import torch
from monai.data import MetaTensor

from fusionmamba_med.errors import FusionInputError
from fusionmamba_med.inference.prefetch import Prefetcher, preprocess


class MakeStudyd:
    """A picklable stand-in for loading: a volume from the study's seed; "bad" raises, "crash" kills the worker."""

    def __call__(self, data):
        if data["study"] == "bad":
            raise FusionInputError("cannot read file", study="bad", path="/data/bad/mri.dcm")
        if data["study"] == "crash" and os.getpid() != data["parent"]:
            os._exit(9)  # a reader's segmentation fault, as the worker sees it
        g = torch.Generator().manual_seed(data["seed"])
        return {**data, "image": MetaTensor(torch.rand(2, 6, 5, 4, generator=g), meta={"seed": data["seed"]})}


def _studies(names):
    return [{"study": n, "seed": i, "parent": os.getpid()} for i, n in enumerate(names)]


def test_prefetched_studies_equal_those_loaded_here():
    studies = _studies(["a", "b", "c"])
    prefetcher = Prefetcher(MakeStudyd(), studies)
    try:
        for study in studies:
            data, seconds = prefetcher.take(study)
            here = preprocess(MakeStudyd(), study, {})
            assert torch.equal(data["image"], here["image"]) and data["image"].meta["seed"] == study["seed"]
            assert "MakeStudyd" in seconds
    finally:
        prefetcher.close()


def test_an_error_in_the_worker_names_the_study_and_file():
    studies = _studies(["a", "bad", "c"])
    prefetcher = Prefetcher(MakeStudyd(), studies)
    try:
        prefetcher.take(studies[0])
        with pytest.raises(FusionInputError) as err:
            prefetcher.take(studies[1])
        assert err.value.study == "bad" and err.value.path == "/data/bad/mri.dcm"
        assert prefetcher.take(studies[2])[0]["study"] == "c"
    finally:
        prefetcher.close()


def test_a_worker_that_dies_fails_its_study_and_the_next_goes_on():
    studies = _studies(["a", "crash", "c"])
    prefetcher = Prefetcher(MakeStudyd(), studies)
    try:
        prefetcher.take(studies[0])
        with pytest.raises(FusionInputError, match="worker process died") as err:
            prefetcher.take(studies[1])
        assert err.value.study == "crash"
        assert prefetcher.take(studies[2])[0]["study"] == "c"
    finally:
        prefetcher.close()
