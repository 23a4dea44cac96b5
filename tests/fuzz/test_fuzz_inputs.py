"""The seeded input fuzz harness (``benchmarks/fuzz_inputs.py``) in CI: a small campaign of mutated real inputs
(sample data, and ``../shared/dicom_qa`` when present) must end in correct outputs and clear refusals only; and the
harness itself must tell a hang, a crash, a huge allocation and a wrong volume apart from those (else a clean
campaign would prove nothing). The large campaign and its figures: ``docs/reliability/inputs.md``."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
CI_COUNT = 48


def _harness():
    spec = importlib.util.spec_from_file_location("fuzz_inputs", REPO / "benchmarks" / "fuzz_inputs.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("fuzz_inputs", module)
    spec.loader.exec_module(module)
    return module


fz = _harness()
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork, /proc and RLIMIT_AS")


@linux_only
def test_small_campaign_has_only_good_outcomes(tmp_path):
    """The CLI in its own process (it forks children and sets one torch / ITK thread: nothing of that leaks here)."""
    out = tmp_path / "fuzz.json"
    start = time.monotonic()
    run = subprocess.run([sys.executable, str(REPO / "benchmarks" / "fuzz_inputs.py"), "--count", str(CI_COUNT),
                          "--seed", "0", "--out", str(out), "--work", str(tmp_path / "work")],
                         capture_output=True, text=True, timeout=300, cwd=REPO)
    assert out.is_file(), run.stderr[-2000:]
    report = json.loads(out.read_text())
    bad = [(r["index"], r["source"], r.get("mutation"), r["outcome"], r.get("detail")) for r in report["bad"]]
    assert not bad and run.returncode == 0, bad
    counts = report["counts"]
    assert sum(counts.values()) == CI_COUNT
    assert counts["skipped"] <= CI_COUNT // 10, [r.get("detail") for r in report["cases"] if r["outcome"] == "skipped"]
    assert counts["correct output"] > 0 and counts["clear refusal"] > 0, counts
    assert report["refused_harmless"] == 0, [r for r in report["cases"] if r.get("note")]
    assert {r["source"].split("/")[0] for r in report["cases"]} >= {"sample", "variant"}
    assert report["command"].startswith("python benchmarks/fuzz_inputs.py --count 48 --seed 0")
    assert time.monotonic() - start < 240


def test_same_seed_same_mutations(tmp_path):
    sources = fz.discover_sources(tmp_path, use_qa=False)
    first = [fz.choose_operator(np.random.default_rng([7, i]), sources[i % len(sources)]) for i in range(30)]
    again = [fz.choose_operator(np.random.default_rng([7, i]), sources[i % len(sources)]) for i in range(30)]
    assert first == again and len(set(first)) > 3


@linux_only
def test_the_harness_tells_bad_outcomes_apart():
    assert fz._in_child(lambda: time.sleep(30) or {}, timeout_s=1, mem_limit_mb=256)["outcome"] == "timeout"
    crashed = fz._in_child(lambda: os.kill(os.getpid(), signal.SIGSEGV) or {}, timeout_s=20, mem_limit_mb=256)
    assert crashed["outcome"] == "crash" and "SIGSEGV" in crashed["detail"]
    exited = fz._in_child(lambda: os._exit(3), timeout_s=20, mem_limit_mb=256)
    assert exited["outcome"] == "crash" and "exit status 3" in exited["detail"]
    huge = fz._in_child(lambda: {"n": len(bytearray(4 << 30))}, timeout_s=20, mem_limit_mb=256)
    assert huge["outcome"] == "memory"


def test_a_wrong_volume_disagrees_with_its_reference():
    data = np.arange(24, dtype=np.float64).reshape(2, 3, 4)
    aff = np.diag([1.0, 2.0, 3.0, 1.0])
    assert fz.agree(data, aff, data, aff) is None
    assert "voxels differ" in fz.agree(data[::-1], aff, data, aff)
    assert "affine differs" in fz.agree(data, aff * 1.01, data, aff)
    assert "shape" in fz.agree(data[:1], aff, data, aff)


def test_a_refusal_must_name_study_and_file(tmp_path):
    from fusionmamba_med.errors import FusionInputError

    inside = tmp_path / "case" / "vol.nii.gz"
    assert fz._names_case(FusionInputError("bad", study="fz1", path=inside), "fz1", tmp_path / "case")
    assert not fz._names_case(FusionInputError("bad", study="fz1"), "fz1", tmp_path / "case")
    assert not fz._names_case(FusionInputError("bad", path=inside), "fz1", tmp_path / "case")
    assert not fz._names_case(FusionInputError("bad", study="fz1", path="/elsewhere/x"), "fz1", tmp_path / "case")
