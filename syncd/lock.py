"""One deliverer per journal: an exclusive ``flock`` on ``<journal>.lock`` beside the journal.

The lock file holds the holder's pid, so a second ``plutosync run`` (or a ``push`` of a journal a
daemon is delivering) can say who holds it. The kernel drops the lock when the holder dies, even
by SIGKILL, so a stale file never blocks a restart.

Only the user whose jobs write a journal may deliver it (:func:`check_owner`): the journal is
private to that user (0700 / 0600), and files a deliverer creates beside it (this lock, SQLite's
``-wal`` / ``-shm``) would otherwise belong to another user and shut the jobs out.
"""

from __future__ import annotations

import fcntl
import os
import pwd
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


class JournalAccessError(Exception):
    """This process may not deliver the journal: it belongs to another user, or a directory
    on the way does not let this user in. The message says which user to run as."""


HOW = ("run plutosync as the user whose jobs write the journal (User= in the service unit; "
       "docs/deploy.md, \"Users and permissions\")")


def resolve(journal_path: str | os.PathLike[str] | None) -> Path:
    """:func:`journal.resolve_path`, with a directory on the way this user may not enter
    raised as :class:`JournalAccessError` (saying which) instead of a bare PermissionError."""
    try:
        return journal.resolve_path(journal_path)
    except PermissionError as exc:
        where = Path(exc.filename or journal_path or ".")
        closed = _closed_ancestor(where / "x")
        me = os.geteuid()
        raise JournalAccessError(
            f"cannot reach journal {where} as {_user(me)}: {closed} (owner "
            f"{_user(_owner(closed))}) does not let {_user(me)} in; {HOW}") from None


def check_owner(journal_file: Path) -> None:
    """Raise :class:`JournalAccessError` unless this process's user owns ``journal_file`` (when
    it exists) and may create files in its directory."""
    me = os.geteuid()
    try:
        st = os.stat(journal_file)
    except FileNotFoundError:
        st = None
    except PermissionError:
        closed = _closed_ancestor(journal_file)
        raise JournalAccessError(
            f"cannot reach journal {journal_file} as {_user(me)}: {closed} (owner "
            f"{_user(_owner(closed))}) does not let {_user(me)} in; {HOW}") from None
    if st is not None and st.st_uid != me:
        owner = _name(st.st_uid)
        raise JournalAccessError(
            f"journal {journal_file} belongs to {_user(st.st_uid)} and this plutosync runs as "
            f"{_user(me)}: a journal is private to the user whose jobs write it, and the files "
            "plutosync adds beside it (its lock, SQLite's -wal/-shm) would lock those jobs out; "
            f"run plutosync as {owner} (User={owner} in the service unit; docs/deploy.md, "
            "\"Users and permissions\")")
    d = journal_file.parent
    if d.exists() and not os.access(d, os.W_OK | os.X_OK):
        raise JournalAccessError(
            f"cannot write in journal directory {d} as {_user(me)} (it belongs to "
            f"{_user(_owner(d))}, mode {_mode(d)}); {HOW}")


def check_readable(journal_file: Path, command: str) -> None:
    """Raise :class:`JournalAccessError` when this user may not read ``journal_file`` (for the
    read-only commands: ``status``, ``export``, ``prune --dry-run``), naming what is closed and
    whom to run ``plutosync COMMAND`` as. A missing file is left to the caller to report."""
    me = os.geteuid()
    try:
        st = os.stat(journal_file)
    except FileNotFoundError:
        return
    except PermissionError:
        closed = _closed_ancestor(journal_file)
        owner = _owner(closed)
        raise JournalAccessError(
            f"cannot read journal {journal_file} as {_user(me)}: {closed} (owner "
            f"{_user(owner)}, mode {_mode(closed)}) does not let {_user(me)} in; run plutosync "
            f"{command} as {_name(owner) if owner is not None else 'the journal owner'} (the "
            "user whose jobs write the journal)") from None
    if not os.access(journal_file, os.R_OK):
        raise JournalAccessError(
            f"cannot read journal {journal_file} as {_user(me)}: it belongs to "
            f"{_user(st.st_uid)} with mode {st.st_mode & 0o7777:04o}; run plutosync {command} "
            f"as {_name(st.st_uid)} (the user whose jobs write the journal)")


def readonly_trouble(journal_file: Path, command: str) -> str | None:
    """Why SQLite cannot open a journal this user may read but not write, read-only, or None
    when it can be read as it is now (no write-ahead log beside it: see ``_common``)."""
    me = os.geteuid()
    d = journal_file.parent
    wal = journal_file.with_name(journal_file.name + "-wal")
    shm = journal_file.with_name(journal_file.name + "-shm")
    try:
        st = os.stat(journal_file)
    except OSError:
        return None
    run_as = f"run plutosync {command} as {_name(st.st_uid)} (the journal's owner)"
    for side in (wal, shm):
        if side.exists() and not os.access(side, os.R_OK):
            return (f"cannot read journal {journal_file} as {_user(me)}: {side.name} beside it "
                    f"(owner {_user(_owner(side))}, mode {_mode(side)}) is not readable by "
                    f"{_user(me)}; {run_as}")
    if wal.exists() and not shm.exists() and not os.access(d, os.W_OK | os.X_OK):
        return (f"cannot read journal {journal_file} as {_user(me)}: it has a write-ahead log "
                f"({wal.name}) but no {shm.name} index, and {_user(me)} may not create one in "
                f"{d} (owner {_user(_owner(d))}, mode {_mode(d)}); {run_as}")
    return None


def _closed_ancestor(path: Path) -> Path:
    """The nearest directory above ``path`` this user may not enter."""
    for parent in reversed(path.parents):
        if not os.access(parent, os.X_OK):
            return parent
    return path.parent


def _owner(path: Path) -> int | None:
    try:
        return os.stat(path).st_uid
    except OSError:
        return None


def _mode(path: Path) -> str:
    try:
        return f"{os.stat(path).st_mode & 0o7777:04o}"
    except OSError:
        return "unknown"


def _name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _user(uid: int | None) -> str:
    if uid is None:
        return "another user"
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def lock_path(journal_path: str | os.PathLike[str] | None) -> Path:
    file = journal.resolve_path(journal_path)
    return file.with_name(file.name + ".lock")


class JournalLock:
    def __init__(self, journal_path: str | os.PathLike[str] | None) -> None:
        self.journal_file = journal.resolve_path(journal_path)
        self.path = lock_path(journal_path)
        self.fd: int | None = None

    def acquire(self) -> JournalLock:
        """Take the lock or raise :class:`LockHeldError` naming the holder's pid, or
        :class:`JournalAccessError` when this user may not deliver the journal."""
        check_owner(self.journal_file)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except PermissionError as exc:
            raise JournalAccessError(
                f"cannot create {exc.filename or self.path} as {_user(os.geteuid())} "
                f"({exc.strerror}); {HOW}") from None
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
