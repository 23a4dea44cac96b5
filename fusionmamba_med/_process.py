"""Process helpers shared by the worker processes (prefetch worker, elastix server); no heavy imports."""

from __future__ import annotations

__all__ = ["die_with_parent"]


def die_with_parent(parent_pid: int | None = None) -> None:
    """Ask Linux to kill this (worker) process when its parent dies, however it dies (a scheduler's SIGKILL included),
    so that no orphan worker is left running, holding the parent's pipes open. Elsewhere: nothing.

    ``parent_pid``: the parent that started this process; if it has died already (before this call: a worker takes
    seconds to import what it needs), this process ends now. The signal follows the parent *thread* that started this
    process: call it only in children started from a thread that lives as long as the parent (its main thread)."""
    import ctypes
    import os
    import signal
    import sys

    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):  # pragma: no cover - a libc without prctl
            pass
    if parent_pid is not None and os.getppid() != parent_pid:  # orphaned before it asked: adopted by another
        os.kill(os.getpid(), signal.SIGKILL)
