"""A run's logged files in this process: written before ``log()`` returns, journaled by the
writer's fold, staged by a thread of their own.

``log()`` (training thread) → :meth:`MediaLog.add`: per file, cheap conversions and one
incoming file (``journal.staged.write_incoming``: the bytes are in the page cache, so they
survive SIGKILL); a file given by path costs one ``stat``. The writer thread's fold →
:meth:`MediaLog.fold`: the rows (and ``lognames`` of new log names) in the fold's transaction.
After the commit, a stager thread (started on demand) encodes, hashes and stages them; the
run's end waits for it (:meth:`MediaLog.drain`), so a job that ends normally has staged every
file it logged. A job killed before that leaves the incoming files to recovery (plutosync, the
next ``init()``): nothing is lost.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from pluto_offline.journal import Journal, append_event, filerows, staged
from pluto_offline.media import kinds, stock

logger = logging.getLogger("pluto_offline")
USAGE_RESCAN_S = 10.0  # past the quota, look at the disk again at most this often


def as_files(value: Any) -> list[kinds.File] | None:
    """The files in a logged value (one, or a list of them: one step's samples in order), or
    None when the value holds none. Stock ``pluto`` objects are converted."""
    items = value if isinstance(value, (list, tuple)) else (value,)
    out = []
    for item in items:
        if isinstance(item, kinds.File):
            out.append(item)
        elif stock.is_stock(item):
            out.append(stock.convert(item))
        else:
            return None
    return out or None


class MediaLog:
    """The files one :class:`~pluto_offline.run.Run` logs in this process."""

    def __init__(self, journal_path: Path, run_key: int) -> None:
        self.journal_path = journal_path
        self.dir = journal_path.parent
        self.run_key = run_key
        self.pid = os.getpid()
        self.lock = threading.Lock()
        self.rows: list[dict[str, Any]] = []  # logged, not yet journaled
        self.new_names: dict[str, list[str]] = {}  # kind -> names not yet registered
        self.journaled_names: dict[str, list[str]] = {}  # the fold under way's (folded())
        self.names: set[tuple[str, str]] = set()
        self.number = 0
        try:
            self.quota = staged.max_staged()
        except ValueError as exc:  # a typo in the environment must not stop the training
            logger.warning("pluto_offline: %s; using the default, %d bytes", exc,
                           staged.DEFAULT_MAX_STAGED)
            self.quota = staged.DEFAULT_MAX_STAGED
        self.used: int | None = None  # bytes under files/ (estimated between scans)
        self.scanned = 0.0
        self.refused = 0
        self.writers: set[str] = set()
        self.stager: threading.Thread | None = None
        self.wake = threading.Event()

    @property
    def pending(self) -> bool:
        return bool(self.rows)

    # ------------------------------------------------------------------ training thread
    def add(self, key: str, files: list[kinds.File], step: int, t: int, writer: str) -> None:
        """Write one incoming file per file of ``files`` (``key``'s samples at ``step``)."""
        if os.getpid() != self.pid:  # a forked child: the parent's rows are the parent's
            self.__init__(self.journal_path, self.run_key)  # type: ignore[misc]
        inc = staged.ensure_dirs(self.dir)
        for index, f in enumerate(files):
            self.number += 1
            name = f"{writer}.{self.number}.in"
            meta: dict[str, Any] = {
                "run": self.run_key, "writer": writer, "log_name": key, "kind": f.kind,
                "step": step, "time": t, "sample_index": index, "caption": f._caption,
            }
            try:
                prepared = f._prepare()
                size = self._describe(meta, f, prepared)
                if self._over_quota(size):
                    meta["lost"] = self._refuse(key, size)
                    meta["payload"] = 0
                else:
                    staged.write_incoming(inc / name, meta, prepared.payload)
            except (OSError, ValueError, RuntimeError) as exc:
                if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:  # ENOSPC: like the quota
                    exc = RuntimeError(f"the disk is full ({exc.strerror})")
                meta.setdefault("file_name", kinds.file_name(f._name, f._ext))
                meta.setdefault("file_type", f._ext.lstrip("."))
                meta.setdefault("content_type", kinds.content_type(meta["file_name"]))
                meta["lost"] = f"{type(exc).__name__}: {exc}"
                logger.warning("pluto_offline: log(): %r at step %d is not kept: %s",
                               key, step, meta["lost"])
            with self.lock:
                self.rows.append(staged.row_values(meta, name))
                if (f.kind, key) not in self.names:
                    self.names.add((f.kind, key))
                    self.new_names.setdefault(f.kind, []).append(key)
            self.writers.add(writer)

    def _describe(self, meta: dict[str, Any], f: kinds.File, p: kinds.Prepared) -> int:
        file_name = kinds.file_name(f._name, p.ext)  # fixed here: a resend reuses it
        meta.update(file_name=file_name, file_type=p.ext.lstrip("."),
                    content_type=kinds.content_type(file_name), how=p.how, params=p.params)
        if p.how == "path":
            st = os.stat(p.path)  # the O(1) part: the copy is checked against it later
            meta.update(path=p.path, stat=[st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev],
                        payload=0)
            return st.st_size
        size = memoryview(p.payload).nbytes
        meta["payload"] = size
        return size

    def _over_quota(self, size: int) -> bool:
        now = time.monotonic()
        if self.used is None or (self.used + size > self.quota
                                 and now - self.scanned > USAGE_RESCAN_S):
            self.used, self.scanned = staged.usage(self.dir), now  # blobs pruned meanwhile
        if self.used + size > self.quota:
            return True
        self.used += size
        return False

    def _refuse(self, key: str, size: int) -> str:
        self.refused += 1
        if self.refused == 1:
            logger.warning(
                "pluto_offline: log(): %r (%d bytes) is not kept: the journal's staged files "
                "would exceed %s=%d bytes; further files are refused until plutosync has "
                "delivered and pruned some (each refusal is recorded: plutosync status shows "
                "them)", key, size, staged.QUOTA_ENV, self.quota)
        return (f"over the staging quota ({staged.QUOTA_ENV}={self.quota} bytes; "
                f"{self.used} staged)")

    # ------------------------------------------------------------------ writer thread
    def fold(self, j: Journal, time_ms: int) -> int:
        """Journal the logged files (inside the fold's transaction); returns how many, for
        :meth:`folded` after the commit."""
        with self.lock:
            rows = list(self.rows)
            names = {kind: list(logged) for kind, logged in self.new_names.items()}
        for kind, logged in names.items():
            append_event(j, self.run_key, "lognames", payload={"type": kind, "names": logged},
                         time=time_ms)
        if rows:
            staged.insert_rows(j, rows)
        self.journaled_names = names
        return len(rows)

    def folded(self, n: int) -> None:
        """The fold's transaction committed ``n`` rows: forget them and the names journaled
        with them (not names logged since: the training thread goes on meanwhile), stage them."""
        with self.lock:
            del self.rows[:n]
            for kind, logged in self.journaled_names.items():
                left = [x for x in self.new_names.get(kind, ()) if x not in logged]
                if left:
                    self.new_names[kind] = left
                else:
                    self.new_names.pop(kind, None)
            self.journaled_names = {}
        if n:
            self._start_stager()

    # ------------------------------------------------------------------ stager thread
    def _start_stager(self) -> None:
        with self.lock:
            self.wake.set()
            if self.stager is None:
                # daemon=False said outright: a thread inherits it from its starter, and the
                # writer thread, which starts most stagers, is a daemon thread
                self.stager = threading.Thread(target=self._stage_loop, daemon=False,
                                               name="pluto-offline-stager")
                try:
                    self.stager.start()
                except RuntimeError:  # at interpreter shutdown (3.12+): drain() stages them
                    self.stager = None

    def _stage_loop(self) -> None:
        try:
            with Journal.open(self.journal_path) as j:
                while True:
                    with self.lock:
                        if not self.wake.is_set():
                            self.stager = None
                            return
                        self.wake.clear()
                    filerows.stage_rows(j, writers=set(self.writers))
        except Exception as exc:  # recovery (plutosync) stages them once this process ends
            logger.warning("pluto_offline: staging logged files failed (%s); plutosync "
                           "stages them after the job ends", exc)
            with self.lock:
                self.stager = None

    def drain(self) -> None:
        """Return once every file this process journaled is staged (or lost): the run's end
        calls it, since the interpreter's exit waits for no thread started after its
        threading shutdown (an end at exit runs in atexit, after it). Never raises."""
        if os.getpid() != self.pid or not self.writers:
            return  # a forked child: the parent's files are the parent's to stage
        self.wait_staged()
        try:  # what no stager got to (one could not start, or failed): on this thread
            with Journal.open(self.journal_path, create=False) as j:
                filerows.stage_rows(j, writers=set(self.writers))
        except Exception as exc:
            logger.warning("pluto_offline: staging logged files failed (%s); plutosync "
                           "stages them after the job ends", exc)

    def wait_staged(self, timeout: float | None = None) -> None:
        """Wait until the files journaled so far are staged (tests, benchmarks)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while (stager := self.stager) is not None:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return
            stager.join(left)
