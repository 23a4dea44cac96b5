"""Runs that share an output folder: who this run is (:class:`RunInfo`), a per-output claim so that one run at a time
works on a study (:class:`OutputClaim`), and a lock on a folder for short critical sections (:func:`locked_dir`).

A claim is an exclusive ``fcntl.flock`` on a small hidden file next to the output (``.<output name>.claim``) holding
the claiming run's id. The kernel drops the lock when its process ends, however it ends (SIGKILL included), so a
claim left by a dead run is simply taken over by the next one; the file itself is removed on release (or by the next
run that takes it). On NFS, Linux maps ``flock`` to NFS byte-range locks, which the server drops when the client's
lease ends.
"""

from __future__ import annotations

import datetime as _dt
import errno
import fcntl
import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

__all__ = ["OutputClaim", "RunInfo", "locked_dir"]


@dataclass(frozen=True)
class RunInfo:
    """Who a run is: host, process id, start time (UTC, ISO 8601); ``run_id`` is ``host:pid:start``."""

    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    started: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds"))

    @property
    def run_id(self) -> str:
        return f"{self.host}:{self.pid}:{self.started}"

    def as_dict(self) -> dict:
        return {"run_id": self.run_id, **asdict(self)}


class OutputClaim:
    """An exclusive claim on one output, held by this run while it works on it.

    ``claim = OutputClaim(path, run)``; ``claim.acquire()`` is ``True`` when this run now holds it, ``False`` when
    another live run does (``claim.holder`` then names that run); ``claim.release()`` removes the claim file.
    """

    def __init__(self, path: str | os.PathLike, run: RunInfo):
        self.path = Path(path)
        self.run = run
        self.fd: int | None = None
        self.holder: str | None = None
        self.made_folder = False  # the claim created its folder: removed again on release when left empty

    @property
    def held(self) -> bool:
        return self.fd is not None

    def acquire(self) -> bool:
        """Try to take the claim without waiting."""
        if self.fd is not None:
            return True
        while True:
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                os.close(fd)
                if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                self.holder = self._read_holder()
                return False
            if self._is_current(fd):
                break
            os.close(fd)  # the holder released (removed) the file between our open and lock: take the new one
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(self.run.as_dict()).encode())
        os.fsync(fd)
        self.fd, self.holder = fd, self.run.run_id
        return True

    def release(self) -> None:
        """Remove the claim file (and the folder the claim created, when nothing else is in it) and drop the lock;
        nothing when not held."""
        if self.fd is None:
            return
        try:
            if self._is_current(self.fd):
                self.path.unlink()
            if self.made_folder:
                try:
                    self.path.parent.rmdir()
                except OSError:  # not empty: outputs, or another run's claim
                    pass
        finally:
            os.close(self.fd)
            self.fd = None

    def _open(self) -> int:
        """Open (create) the claim file, creating its folder when missing."""
        while True:
            if not self.path.parent.is_dir():
                self.path.parent.parent.mkdir(parents=True, exist_ok=True)
                try:
                    self.path.parent.mkdir()
                    self.made_folder = True
                except FileExistsError:
                    pass
            try:
                return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except FileNotFoundError:  # another run removed the (empty) folder just now
                continue

    def _is_current(self, fd: int) -> bool:
        try:
            return os.stat(self.path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            return False

    def _read_holder(self) -> str:
        try:
            return str(json.loads(self.path.read_text() or "{}").get("run_id") or "another run (not yet named)")
        except (OSError, ValueError):
            return "another run (unreadable claim)"

    def __enter__(self) -> OutputClaim:
        return self

    def __exit__(self, *exc) -> bool:
        self.release()
        return False


@contextmanager
def locked_dir(folder: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``folder`` itself (no lock file) while the block runs; waits for it."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
