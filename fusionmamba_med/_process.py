"""Process helpers shared by the worker processes (prefetch worker, elastix server); no heavy imports."""

from __future__ import annotations

__all__ = ["die_with_parent"]


def die_with_parent() -> None:
    """Ask Linux to kill this (worker) process when its parent dies, however it dies (a scheduler's SIGKILL included),
    so that no orphan worker is left running, holding the parent's pipes open. Elsewhere: nothing.

    The signal follows the parent *thread* that started this process: call it only in children started from a thread
    that lives as long as the parent (its main thread)."""
    import ctypes
    import signal
    import sys

    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):  # pragma: no cover - a libc without prctl
            pass
