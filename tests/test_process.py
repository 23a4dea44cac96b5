"""die_with_parent: a helper process ends with the process that started it, even one that died first."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("parent_dies_first", [False, True])
def test_a_helper_ends_with_its_parent(tmp_path, parent_dies_first):
    # the parent starts a helper that (after a delay when the parent dies first) asks to die with it, then sleeps
    delay = 1.5 if parent_dies_first else 0.0
    helper = ("import os, sys, time; time.sleep(%r); from fusionmamba_med._process import die_with_parent; "
              "die_with_parent(int(sys.argv[1])); open(sys.argv[2], 'w').write(str(os.getpid())); time.sleep(60)")
    parent = ("import os, subprocess, sys, time; subprocess.Popen([sys.executable, '-c', %r, str(os.getpid()), "
              "sys.argv[1]]); time.sleep(%r)") % (helper % delay, 0.0 if parent_dies_first else 3.0)
    pid_file = tmp_path / "helper.pid"
    started = subprocess.Popen([sys.executable, "-c", parent, str(pid_file)])
    if not parent_dies_first:
        for _ in range(100):
            if pid_file.exists() and pid_file.read_text():
                break
            time.sleep(0.05)
        assert _alive(int(pid_file.read_text()))  # the helper runs while its parent does
    started.wait(timeout=30)
    if parent_dies_first:  # the helper asks after its parent ended: it ends at once, before writing its pid
        time.sleep(4.0)
        assert not pid_file.exists()
        return
    helper_pid = int(pid_file.read_text())
    for _ in range(100):
        if not _alive(helper_pid):
            break
        time.sleep(0.05)
    assert not _alive(helper_pid), "the helper outlived its parent"
