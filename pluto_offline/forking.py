"""Fork safety: what a process forked after ``init()`` may do with the runs it inherited.

``os.fork()``, ``multiprocessing`` (fork start method), a ``Pool``, DataLoader workers: the
child gets a copy of every open :class:`~pluto_offline.run.Run`, including the parent's SQLite
connection, its mmap'd spill file and its atexit hook. None of these may be used by the child:
it would write into the parent's spill at its own stale position, finish the parent's run at
its exit and delete the parent's spill file. So, from ``os.register_at_fork``:

- before the fork, each run's locks are taken, so that the child copies a consistent state and
  no writer thread of ours is inside SQLite;
- in the child, each run becomes a *guest*: it lets go of the parent's connection (never closed
  here: see :func:`keep_open`) and of its spill mapping (the parent's lock stays the parent's),
  and gets fresh locks. Nothing is opened until the child logs: DataLoader workers that never
  log cost nothing.
- the child's first ``log()`` (or state change) gives it a writer of its own for the same run
  (:func:`attach`): its own connection, its own spill file and ``writers`` row, its own writer
  thread. Its records are as durable as the parent's (a SIGKILL'd or ``os._exit``'d child is
  recovered like any dead writer) and delivered in the same run.
- a guest's end (``finish()``, ``close()``, its exit, an exception, a signal) journals only a
  ``close`` of its own writer: the run's status is the parent's to decide.

If the child cannot open a writer (no file descriptors left, journal gone), ``log()`` warns
once and drops its records; state changes raise ``JournalError``.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import uuid
from typing import TYPE_CHECKING, Any

from pluto_offline import lifecycle
from pluto_offline.errors import JournalError
from pluto_offline.journal import Journal, add_writer, append_event, forkguard
from pluto_offline.journal.forks import fork_writer_id
from pluto_offline.outage import Outage
from pluto_offline.spill import HEADER_SIZE, RECORD, Spill

if TYPE_CHECKING:
    from pluto_offline.run import Run

logger = logging.getLogger("pluto_offline")
LOCK_TIMEOUT_S = 30.0  # a fork waits at most this long for a run's fold to end
_installed = False
_held: list[Any] = []  # locks taken before a fork, released in the parent after it
_guarded = False  # whether the fork holds the journal's transaction guard (forkguard)
_kept: list[Any] = []  # the parent's connections, never closed in this child


def install() -> None:
    """Register the fork hooks (once per process; called at the first ``init()``)."""
    global _installed
    if not _installed:
        _installed = True
        os.register_at_fork(before=_before, after_in_parent=_after_in_parent,
                            after_in_child=_after_in_child)


def _before() -> None:
    global _guarded
    # the order log() takes them in: the append lock, then the fold lock; then no
    # transaction of any other thread (a stager's) may be open (forkguard)
    for run in list(lifecycle.ops):
        for lock in (run._append_lock, run._lock):
            if lock.acquire(timeout=LOCK_TIMEOUT_S):
                _held.append(lock)
    _guarded = forkguard.hold(LOCK_TIMEOUT_S)


def _after_in_parent() -> None:
    global _guarded
    forkguard.release(_guarded)
    _guarded = False
    while _held:
        _held.pop().release()


def _after_in_child() -> None:
    global _guarded
    forkguard.reset_in_child()
    _guarded = False
    _held.clear()  # copies of the parent's locks: replaced below, never released here
    lifecycle.after_fork_in_child()
    for run in list(lifecycle.ops):
        _become_guest(run)


def _become_guest(run: Run) -> None:
    """Let go of the parent's connection and spill; fresh locks; nothing opened yet."""
    spill = run._spill
    if run._j is not None:
        keep_open(run._j.conn)
    if isinstance(spill, Spill):
        try:
            # the child's copies of the fd and the mapping; the parent's flock and file stay
            spill.close(unlink=False)
        except OSError:
            pass
    run._lock = threading.RLock()
    run._append_lock = threading.Lock()
    run._end_lock = threading.Lock()
    run._stop = threading.Event()
    run.busy_thread = None
    run._j = None
    # the parent's files logged but not folded yet are the parent's to journal and stage:
    # a child folding its copy of them would journal each twice and race the parent's stager
    run._media = None
    run._spill = Unattached(run, spill.formats, list(spill.schemas), spill.path)
    run._outage = Outage()  # drops and backoff are the writer's: the child has its own
    if not run._guest:
        run._guest = True
        run._owner_pid = os.getppid()


class Unattached:
    """A guest run's spill until the child logs: the first record opens the child's writer
    (:func:`attach`), then goes to its spill; if that fails, records are dropped after one
    warning. It has the parent's fast-path key sets, so ``log()``'s fast path is unchanged."""

    def __init__(self, run: Run, formats: dict, schemas: list, path: Any):
        self._run = run
        self.formats = formats
        self.schemas = schemas
        self.path = path
        self.published = (HEADER_SIZE, 0)
        self.rpos = HEADER_SIZE
        self.drain = None
        self.refused: Exception | None = None

    def append(self, payload: bytes, tag: int = RECORD) -> None:
        spill = self._open()
        if spill is not None:
            spill.append(payload, tag)

    def append_values(self, fmt: Any, step: int, t: int, values: Any) -> None:
        spill = self._open()
        if spill is not None:
            spill.append_values(fmt, step, t, values)

    def add_schema(self, keys: tuple, names: tuple[str, ...]) -> Any:
        spill = self._open()
        return spill.add_schema(keys, names) if spill is not None else None

    def close(self, *, unlink: bool) -> None:
        pass

    def set_dropped(self, counts: Any) -> None:
        pass  # nothing is dropped before the child's own spill exists

    def _open(self) -> Spill | None:
        if self.refused is None:
            try:
                attach(self._run)
                return self._run._spill
            except JournalError as exc:
                self.refused = exc
                logger.warning(
                    "pluto_offline: run %s: this process (pid %d, forked from pid %d after "
                    "init()) cannot open a writer of its own on the journal: %s; its log() "
                    "calls are dropped (the parent's are not affected)",
                    self._run._run_id, os.getpid(), self._run._owner_pid, exc)
        return None


def attach(run: Run) -> None:
    """Give a guest run a writer of its own in this process (once; under the run's lock).

    Raises ``JournalError`` when the journal cannot be opened or written (nothing changes).
    """
    with run._lock:
        if run._j is not None:
            return
        run._identity.check(run._run_id)
        try:
            j = Journal.open(run._identity.path, create=False)
        except OSError as exc:
            raise JournalError(f"cannot open the journal at {run._identity.path}: "
                               f"{exc.strerror}") from exc
        writer_id = fork_writer_id(uuid.uuid4().hex)  # a worker: never ends the run
        try:
            run._identity.check(run._run_id)
            spill = Spill.create(j.spill_dir, writer_id)
        except BaseException as exc:
            j.close()
            if isinstance(exc, OSError):
                raise JournalError(f"cannot create a spill file in {j.spill_dir}: "
                                   f"{exc.strerror}") from exc
            raise
        try:
            spill.adopt(run._formats, run._spill.schemas)
            with j.transaction():
                add_writer(j, run._key, writer_id, os.getpid(), os.uname().nodename)
                # names the parent registered may not be folded yet: register them again
                # (idempotent), before any record of this writer uses them
                by_type: dict[str, list[str]] = {"METRIC": sorted(run._metric_names)}
                for name, log_type in sorted(run._data_types.items()):
                    by_type.setdefault(log_type, []).append(name)
                for kind, names in by_type.items():
                    if names:
                        append_event(j, run._key, "lognames", time=run._clock_ms(),
                                     payload={"type": kind, "names": names})
        except BaseException:
            spill.close(unlink=True)
            j.close()
            raise
        spill.drain = run._drain_and_wrap
        run._j, run._spill, run._writer_id = j, spill, writer_id
        run._thread = threading.Thread(
            target=run._writer_loop, args=(run._flush_interval,), daemon=True,
            name=f"pluto-offline-writer-{run._run_id[:12]}")
        run._thread.start()
        _end_with_multiprocessing_worker(run)


def _end_with_multiprocessing_worker(run: Run) -> None:
    """A multiprocessing worker leaves through ``os._exit`` after running its finalizers:
    close the writer there, so a Pool or DataLoader worker ends it cleanly."""
    util = sys.modules.get("multiprocessing.util")
    if util is not None:
        util.Finalize(None, run._at_exit, exitpriority=0)


def warn_guest_finish(run: Run) -> None:
    run._warn_once(("guest", "finish"), (
        f"pluto_offline: finish() in process {os.getpid()}, forked from pid {run._owner_pid} "
        f"after init(): only this process's writer of run {run._run_id} is closed; the run's "
        "status is left to the process that started it"))


def keep_open(conn: Any) -> None:
    """Never close ``conn`` (a sqlite3 connection) in this process.

    Closing a connection opened by another process, or whose file was replaced, is not safe:
    as the last connection SQLite checkpoints and unlinks the ``-wal`` file *by name*. A kept
    connection is released by the kernel at exit. Kept alive past the interpreter's teardown
    (which would deallocate, hence close, it) by one extra reference taken at exit.
    """
    if not _kept:
        atexit.register(_pin_kept)
    _kept.append(conn)


def _pin_kept() -> None:
    try:
        import ctypes

        for obj in _kept:
            ctypes.pythonapi.Py_IncRef(ctypes.py_object(obj))
    except Exception:  # no ctypes (a minimal build): teardown may close them
        pass
