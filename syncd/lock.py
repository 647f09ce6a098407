"""One deliverer per journal: an exclusive ``flock`` on ``<journal>.lock`` beside the journal.

The lock file holds the holder's pid, so a second ``plutosync run`` (or a ``push`` of a journal a
daemon is delivering) can say who holds it. The kernel drops the lock when the holder dies, even
by SIGKILL, so a stale file never blocks a restart.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from pluto_offline import journal


class LockHeldError(Exception):
    """Another plutosync process is delivering this journal."""

    def __init__(self, path: Path, pid: int | None) -> None:
        who = f"pid {pid}" if pid else "another process"
        super().__init__(
            f"{path} is already being delivered by plutosync ({who}); only one plutosync may "
            "deliver a journal at a time: stop that one first, or leave the delivery to it"
        )
        self.pid = pid


def lock_path(journal_path: str | os.PathLike[str] | None) -> Path:
    file = journal.resolve_path(journal_path)
    return file.with_name(file.name + ".lock")


class JournalLock:
    def __init__(self, journal_path: str | os.PathLike[str] | None) -> None:
        self.journal_file = journal.resolve_path(journal_path)
        self.path = lock_path(journal_path)
        self.fd: int | None = None

    def acquire(self) -> JournalLock:
        """Take the lock or raise :class:`LockHeldError` naming the holder's pid."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            raise LockHeldError(self.journal_file, pid) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            os.close(self.fd)  # closing drops the flock
            self.fd = None

    def __enter__(self) -> JournalLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def holder(journal_path: str | os.PathLike[str] | None) -> int | None:
    """The pid of the plutosync delivering this journal now, or None (for ``status``)."""
    path = lock_path(journal_path)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_pid(fd) or -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode().strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None
