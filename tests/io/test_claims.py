"""Claims on outputs: one holder at a time, the holder named, released on exit, taken over from a dead process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from fusionmamba_med.io.claims import OutputClaim, RunInfo, locked_dir

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def test_one_holder_at_a_time_and_the_other_is_named(tmp_path):
    first, second = RunInfo(host="a", pid=1), RunInfo(host="b", pid=2)
    path = tmp_path / "s1" / ".s1_fused.nii.gz.claim"
    mine, theirs = OutputClaim(path, first), OutputClaim(path, second)
    assert mine.acquire() and mine.held and json.loads(path.read_text())["run_id"] == first.run_id
    assert not theirs.acquire() and theirs.holder == first.run_id and not theirs.held
    mine.release()
    assert not (tmp_path / "s1").exists()  # the claim made the folder and it is empty again
    with theirs:
        assert theirs.acquire() and json.loads(path.read_text())["run_id"] == second.run_id
    assert not path.exists()


def test_the_folder_is_kept_when_it_holds_outputs(tmp_path):
    claim = OutputClaim(tmp_path / "s1" / ".x.claim", RunInfo())
    assert claim.acquire()
    (tmp_path / "s1" / "x").write_text("output")
    claim.release()
    assert os.listdir(tmp_path / "s1") == ["x"]


def test_a_claim_of_a_killed_process_is_free(tmp_path):
    path = tmp_path / ".x.claim"
    code = ("import sys, time; from fusionmamba_med.io.claims import OutputClaim, RunInfo; "
            f"c = OutputClaim({str(path)!r}, RunInfo()); assert c.acquire(); print('held', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        assert proc.stdout.readline().strip() == "held"
        waiting = OutputClaim(path, RunInfo(pid=1))
        assert not waiting.acquire() and waiting.holder.split(":")[1] == str(proc.pid)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert path.exists()  # the file stays, the lock is gone with the process
    assert waiting.acquire()
    waiting.release()


def test_locked_dir_can_be_taken_again_after_release(tmp_path):
    for _ in range(2):
        with locked_dir(tmp_path):
            (tmp_path / "x").write_text("x")
    assert (tmp_path / "x").exists()
