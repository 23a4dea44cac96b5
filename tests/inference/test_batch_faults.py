"""Faults during a batch, through the user's own command (``python -m monai.bundle run`` of the PET-MRI bundle) on a
few tiny generated studies (docs/reliability/faults.md):

- two clean runs give byte-identical outputs (NIfTI volumes and QA montages; DICOM: everything but the UIDs, dates
  and times made for each new series);
- SIGKILL at seeded random moments and at chosen points (before / after a rename), then the same command again: every
  study is fused exactly once (an output, once there, is never rewritten), outputs are byte-identical to a clean run,
  and no temporary or claim file is left;
- a file size limit (RLIMIT_FSIZE, as a full disk) while writing one study: it fails by name and file, nothing of it
  is left, the others are fused;
- two runs at once on one output folder: each study is written once, whole; the summaries say which run did what;
- an output folder that cannot be written: a clear error naming it before the network is built.
"""

from __future__ import annotations

import json
import os
import random
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pydicom
import pytest

from fusionmamba_med.data import sample_medical
from fusionmamba_med.io.atomic import TEMPORARY_NAME
from fusionmamba_med.io.claims import OutputClaim, RunInfo

ROOT = Path(__file__).resolve().parents[2]
STUDIES = ("s0", "s1", "s2")
SMALL = {"mri_shape": (40, 48, 12), "mri_spacing": (5.0, 5.0, 10.0), "moving_shape": (32, 36, 12),
         "moving_spacing": (6.5, 6.5, 10.0)}
ENV = {**os.environ, "PYTHONWARNINGS": "ignore",  # this checkout's package in the child processes
       "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}

#: runs SIGKILL themselves at the n-th ``os.replace`` (every atomic write ends with one): KILL_AT="before:2"
KILL_HOOK = """
import os, runpy, signal, sys
when, n = os.environ["KILL_AT"].split(":")
real, count = os.replace, [0]
def replace(src, dst, *args, **kwargs):
    count[0] += 1
    if when == "before" and count[0] == int(n):
        os.kill(os.getpid(), signal.SIGKILL)
    real(src, dst, *args, **kwargs)
    if when == "after" and count[0] == int(n):
        os.kill(os.getpid(), signal.SIGKILL)
os.replace = replace
sys.argv[0] = "monai.bundle"
runpy.run_module("monai.bundle", run_name="__main__", alter_sys=True)
"""

pytestmark = pytest.mark.slow


# ---------------------------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------------------------
def command(dataset: Path, out: Path, *extra: str, hook: Path | None = None) -> list[str]:
    """The user's command (through the kill hook when given)."""
    head = [sys.executable, str(hook)] if hook else [sys.executable, "-m", "monai.bundle"]
    return [*head, "run", "--config_file", "bundles/pet_mri/inference.json", "--dataset_dir", str(dataset),
            "--output_dir", str(out), "--device", "cpu", "--progress", "False", *extra]


def run(dataset: Path, out: Path, *extra: str, env: dict | None = None, hook: Path | None = None,
        preexec=None) -> subprocess.CompletedProcess:
    return subprocess.run(command(dataset, out, *extra, hook=hook), cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env=env or ENV, preexec_fn=preexec)


def outputs(out: Path) -> dict[str, bytes]:
    """Every final-named file under ``out`` but the summaries (no hidden temporaries or claims), by relative path."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and not p.name.startswith(("fusion_summary", "."))}


def leftovers(out: Path) -> list[str]:
    """Temporaries and claim files under ``out``."""
    return [str(p) for p in out.rglob(".*") if TEMPORARY_NAME.match(p.name) or p.name.endswith(".claim")]


def summary(out: Path) -> dict:
    return json.loads((out / "fusion_summary.json").read_text())


def run_log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "fusion_summary.runs.jsonl").read_text().splitlines()]


def snapshot(out: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime) of every study's fused volume, the last file written for a study (its QA montage is written
    before it, and written again with the study when a run was killed in between): a volume written again gets a
    new inode (atomic rename)."""
    return {k: ((out / k).stat().st_ino, (out / k).stat().st_mtime_ns) for k in outputs(out)
            if k.endswith("_fused.nii.gz")}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("faults_data")
    for i, study in enumerate(STUDIES):
        sample_medical.make_medical_study(root, "pet_mri", study=study, seed=i, patient_id=f"P{i}",
                                          rotation_deg=(2.0 + i, 0.0, -3.0), translation_mm=(3.0, -2.0 * i, 4.0),
                                          **SMALL)
    return root / "pet_mri"


@pytest.fixture(scope="module")
def clean(dataset, tmp_path_factory) -> dict:
    """An uninterrupted run: its outputs and how long it took."""
    out = tmp_path_factory.mktemp("clean") / "out"
    t0 = time.perf_counter()
    proc = run(dataset, out)
    seconds = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    files = outputs(out)
    assert sorted(files) == sorted(f"{s}/{s}_{k}" for s in STUDIES
                                   for k in ("pet_on_mri.nii.gz", "qa.png", "fused.nii.gz", "review.mrml"))
    return {"out": out, "files": files, "seconds": seconds}


@pytest.fixture()
def kill_hook(tmp_path) -> Path:
    path = tmp_path / "kill_hook.py"
    path.write_text(KILL_HOOK)
    return path


# ---------------------------------------------------------------------------------------------------------------------
# determinism
# ---------------------------------------------------------------------------------------------------------------------
def test_two_clean_runs_are_byte_identical(dataset, clean, tmp_path):
    proc = run(dataset, tmp_path / "again")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert outputs(tmp_path / "again") == clean["files"]
    first, second = summary(clean["out"]), summary(tmp_path / "again")
    assert first["run"]["run_id"] != second["run"]["run_id"]
    for a, b in zip(first["studies"], second["studies"]):  # the registration too, to the last bit
        assert a["registration"] == b["registration"]


#: DICOM elements made new for every written series (a new series is a new object for a PACS).
DICOM_PER_WRITE = {"SeriesInstanceUID", "SOPInstanceUID", "SeriesDate", "SeriesTime", "ContentDate", "ContentTime",
                   "InstanceCreationDate", "InstanceCreationTime"}


def _dicom_series(folder: Path) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(p) for p in sorted(folder.iterdir())]


def test_two_dicom_runs_differ_only_in_new_series_uids_dates_and_times(dataset, tmp_path):
    subset = tmp_path / "one"
    subset.mkdir()
    os.symlink(dataset / "s0", subset / "s0")
    series = []
    for name in ("a", "b"):
        proc = run(subset, tmp_path / name, "--output_format", "dicom", "--qa", "False")
        assert proc.returncode == 0, proc.stderr[-2000:]
        series.append(_dicom_series(tmp_path / name / "s0" / "s0_fused_dicom"))
    assert len(series[0]) == len(series[1]) > 0
    for a, b in zip(*series):
        assert a.PixelData == b.PixelData
        differing = {e.keyword for e in a if e.keyword and b.get(e.keyword) != e.value}
        assert differing <= DICOM_PER_WRITE, differing
        assert a.file_meta.MediaStorageSOPInstanceUID == a.SOPInstanceUID


# ---------------------------------------------------------------------------------------------------------------------
# kill and resume
# ---------------------------------------------------------------------------------------------------------------------
def _check_after_kill(out: Path, clean_files: dict[str, bytes], seen: dict) -> None:
    """Whatever is final-named is complete and as in a clean run, and no study's volume once there was rewritten."""
    files = outputs(out)
    for name, data in files.items():
        assert data == clean_files[name], f"{name} differs from a clean run's"
    now = snapshot(out)
    for name, ident in seen.items():
        assert now.get(name) == ident, f"{name} was rewritten or removed"
    seen.update(now)


def _check_resumed(out: Path, clean_files: dict[str, bytes]) -> None:
    assert outputs(out) == clean_files
    assert not leftovers(out), leftovers(out)
    assert {r["study"]: r["status"] for r in summary(out)["studies"]}.keys() == set(STUDIES)
    assert all(r["status"] in ("fused", "skipped") for r in summary(out)["studies"])


def test_sigkill_at_random_moments_then_rerun(dataset, clean, tmp_path):
    out, seen = tmp_path / "out", {}
    rng = random.Random(25)
    delays = []
    for _ in range(3):
        delay = rng.uniform(0.3, 0.95) * clean["seconds"]
        proc = subprocess.Popen(command(dataset, out), cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        delays.append((round(delay, 2), proc.returncode))
        if out.exists():
            _check_after_kill(out, clean["files"], seen)
    done_before = {s for s in STUDIES if f"{s}/{s}_fused.nii.gz" in seen}
    done = run(dataset, out)
    assert done.returncode == 0, (delays, done.stderr[-2000:])
    _check_after_kill(out, clean["files"], seen)
    _check_resumed(out, clean["files"])
    status = {r["study"]: r["status"] for r in summary(out)["studies"]}
    assert status == {s: "skipped" if s in done_before else "fused" for s in STUDIES}, delays


# (point, the n-th rename): per study 1 = the registered PET, 2 = the QA montage, 3 = the volume, 4 = the review
# scene; 3 = s0's volume, 13 = the summary (after 3 studies x 4 files)
KILL_POINTS = [("before", 3), ("after", 3), ("before", 13)]


@pytest.mark.parametrize("when,n", KILL_POINTS, ids=[f"{w}-rename-{n}" for w, n in KILL_POINTS])
def test_sigkill_at_a_rename_then_rerun(dataset, clean, tmp_path, kill_hook, when, n):
    out = tmp_path / "out"
    killed = run(dataset, out, env={**ENV, "KILL_AT": f"{when}:{n}"}, hook=kill_hook)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    left = leftovers(out)
    if when == "before":  # the complete temporary was never renamed
        assert any(TEMPORARY_NAME.match(Path(p).name) for p in left), left
    if n == 3:  # killed while holding s0's claim
        assert (out / "s0" / ".s0_fused.nii.gz.claim").exists()
    assert (out / "s0" / "s0_fused.nii.gz").exists() == (when == "after" or n > 3)
    seen: dict = {}
    _check_after_kill(out, clean["files"], seen)
    done = run(dataset, out)
    assert done.returncode == 0, done.stderr[-2000:]
    _check_after_kill(out, clean["files"], seen)  # what the killed run finished is kept as it is
    _check_resumed(out, clean["files"])


# ---------------------------------------------------------------------------------------------------------------------
# disk full
# ---------------------------------------------------------------------------------------------------------------------
def _file_size_limit(limit: int):
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_a_write_past_the_file_size_limit_fails_that_study_alone(dataset, clean, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for s in STUDIES[:2]:
        os.symlink(dataset / s, data / s)
    big = tmp_path / "big_root"  # a study whose fused volume (~280 kB) is over the limit; the others' (~78 kB) not
    sample_medical.make_medical_study(big, "pet_mri", study="big", seed=7, patient_id="PB", mri_shape=(64, 64, 20),
                                      mri_spacing=(3.5, 3.5, 7.0), moving_shape=(32, 36, 12),
                                      moving_spacing=(6.5, 6.5, 10.0))
    os.symlink(big / "pet_mri" / "big", data / "big")
    out = tmp_path / "out"
    proc = run(data, out, preexec=_file_size_limit(150_000))  # the limit binds every process of the run
    assert proc.returncode != 0
    records = {r["study"]: r for r in summary(out)["studies"]}
    assert records["big"]["status"] == "failed"
    reason = records["big"]["reason"]
    # its first file over the limit is named: the registered PET (written first) or the fused volume
    assert "study 'big'" in reason and "File too large" in reason
    assert str(out / "big" / "big_pet_on_mri.nii.gz") in reason or str(out / "big" / "big_fused.nii.gz") in reason
    assert not (out / "big").exists()  # nothing of it: no partial volume, no QA montage, no claim
    for s in STUDIES[:2]:
        assert records[s]["status"] == "fused"
        assert (out / s / f"{s}_fused.nii.gz").read_bytes() == clean["files"][f"{s}/{s}_fused.nii.gz"]
    assert not leftovers(out)


# ---------------------------------------------------------------------------------------------------------------------
# concurrent runs
# ---------------------------------------------------------------------------------------------------------------------
def test_two_runs_at_once_write_each_study_once(dataset, clean, tmp_path):
    out = tmp_path / "out"
    logs = [open(tmp_path / f"run{i}.log", "w") for i in range(2)]
    procs = [subprocess.Popen(command(dataset, out), cwd=ROOT, env=ENV, stdout=log, stderr=log) for log in logs]
    for p, log in zip(procs, logs):
        code = p.wait(timeout=600)
        log.close()
        assert code == 0, Path(log.name).read_text()[-2000:]
    assert outputs(out) == clean["files"] and not leftovers(out)
    runs = run_log(out)
    assert len(runs) == 2 and runs[0]["run"]["run_id"] != runs[1]["run"]["run_id"]
    assert summary(out) == runs[1]  # the summary is the run that finished last, whole
    for study in STUDIES:
        records = [next(r for r in log["studies"] if r["study"] == study) for log in runs]
        assert sorted(r["status"] for r in records) == ["fused", "skipped"], records
        for this, other in ((0, 1), (1, 0)):
            if "claimed_by" in records[this]:  # skipped while the other run was on it: names that run
                assert records[this]["claimed_by"] == runs[other]["run"]["run_id"]
                assert records[other]["status"] == "fused"


def test_a_study_claimed_by_a_live_run_is_skipped_naming_it(dataset, clean, tmp_path):
    out = tmp_path / "out"
    other = RunInfo(host="elsewhere", pid=4242, started="2026-01-01T00:00:00+00:00")
    claim = OutputClaim(out / "s1" / ".s1_fused.nii.gz.claim", other)
    assert claim.acquire()
    try:
        proc = run(dataset, out)
    finally:
        claim.release()
    assert proc.returncode == 0, proc.stderr[-2000:]
    records = {r["study"]: r for r in summary(out)["studies"]}
    assert records["s1"]["status"] == "skipped" and records["s1"]["claimed_by"] == other.run_id
    assert other.run_id in records["s1"]["reason"]
    assert not (out / "s1").exists() and {records[s]["status"] for s in ("s0", "s2")} == {"fused"}


def test_a_claim_left_by_a_killed_run_is_taken_over(dataset, clean, tmp_path):
    out = tmp_path / "out"
    (out / "s0").mkdir(parents=True)
    dead = RunInfo(host="vm", pid=999_999, started="2026-01-01T00:00:00+00:00")
    (out / "s0" / ".s0_fused.nii.gz.claim").write_text(json.dumps(dead.as_dict()))  # on disk, no lock held
    (out / "s0" / ".s0_fused.partial-0123abcd.nii.gz").write_bytes(b"half")
    proc = run(dataset, out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert outputs(out) == clean["files"] and not leftovers(out)
    assert {r["status"] for r in summary(out)["studies"]} == {"fused"}


# ---------------------------------------------------------------------------------------------------------------------
# a bad output folder
# ---------------------------------------------------------------------------------------------------------------------
def _refused(proc: subprocess.CompletedProcess, folder: Path | str, why: str) -> None:
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert f"output folder '{folder}': {why}" in log, log[-3000:]
    assert "network weights" not in log  # before the network was built


def test_an_output_folder_that_is_a_file_is_refused_before_any_work(dataset, tmp_path):
    target = tmp_path / "taken"
    target.write_text("not a folder")
    _refused(run(dataset, target), target, "not a folder")
    # a missing dataset folder too: the output folder is checked before the studies are looked for
    _refused(run(tmp_path / "no_such_dataset", target / "sub"), target / "sub", "not a folder")
    assert target.read_text() == "not a folder"


def _probe_fails(folder: str) -> bool:
    try:
        with open(os.path.join(folder, ".fusionmamba-probe"), "w"):
            pass
    except OSError:
        return True
    os.unlink(os.path.join(folder, ".fusionmamba-probe"))
    return False


@pytest.mark.skipif(not os.path.isdir("/sys") or not _probe_fails("/sys"), reason="needs an unwritable /sys")
def test_an_unwritable_output_folder_is_refused_before_any_work(dataset):
    """``/sys`` refuses new files even to root: a real unwritable folder wherever the test runs as root."""
    _refused(run(dataset, Path("/sys/fusion_out")), "/sys/fusion_out", "cannot be written")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads and writes whatever the permissions say")
@pytest.mark.parametrize("mode,why", [(0o555, "cannot be written"), (0o333, "cannot be read")])
def test_a_read_only_or_unreadable_output_folder_is_refused_before_any_work(dataset, tmp_path, mode, why):
    target = tmp_path / "locked"
    target.mkdir()
    target.chmod(mode)
    try:
        _refused(run(dataset, target), target, why)
    finally:
        target.chmod(0o755)
