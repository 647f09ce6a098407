"""The end of a run: ``finish()``, ``close()``, the process's exit, and an end kept in the
spill when the journal cannot take it (a full disk).

The end is journaled durably after everything logged before it (one fold with the status or
close event, ``Run._fold``); first caller wins, and ``finish()`` never raises. When the journal
cannot be written, the end goes into the spill file's reserved tail (``Spill.append_end``), and
recovery journals it later, so the run ends as the job ended it rather than FAILED killed.
:class:`RunEnd` is a part of :class:`~pluto_offline.run.Run`.
"""

from __future__ import annotations

import atexit
import logging
import threading
from collections.abc import Callable
from typing import Any

from pluto_offline import forking, lifecycle, waiting, whereabouts
from pluto_offline.identity import JournalIdentity
from pluto_offline.journal import Journal, append_event, drops, end_writer
from pluto_offline.outage import Outage

logger = logging.getLogger("pluto_offline")


class RunEnd:
    """How a run ends (the fields and helpers are :class:`~pluto_offline.run.Run`'s)."""

    _run_id: str
    _name: str
    _key: int
    _writer_id: str
    _guest: bool
    _ended: str | None
    _end_lock: threading.Lock
    _lock: threading.RLock
    _stop: threading.Event
    _thread: threading.Thread
    _j: Journal | None
    _spill: Any
    _identity: JournalIdentity
    _outage: Outage
    _fold: Callable[..., None]
    _clock_ms: Callable[[], int]
    _media: Any  # MediaLog | None: the files logged in this process

    def finish(self, code: int | None = None, timeout: float | None = None) -> None:
        """End the run: COMPLETED, or FAILED when ``code`` is non-zero. Never raises (but a bad
        ``timeout`` is a ``TypeError``/``ValueError``, before anything is done).

        ``timeout`` (seconds; else ``PLUTO_OFFLINE_WAIT``, else no wait): then wait, at most
        that long, until a live plutosync has delivered the run (read from the journal, never
        the network), or return at once when none is delivering it (``waiting``). Either way
        one line then says where the run went (``whereabouts``).

        In a process forked after ``init()`` it closes only that process's writer (a warning
        says so): the run's status is its starting process's to decide.
        """
        wait = waiting.check_timeout(timeout) if timeout is not None else waiting.env_timeout()
        if self._guest:
            forking.warn_guest_finish(self)
        if code:
            self._end("FAILED", {"exit_code": code}, wait=wait)
        else:
            self._end("COMPLETED", None, wait=wait)

    def close(self) -> None:
        """Release this process's hold on the run without changing its status.

        For an eval job attached to a live run: its exit must not complete the run.
        """
        self._end(None, None)

    def _end(self, status: str | None, metadata: dict | None, *, at: int | None = None,
             wait: float | None = None) -> bool:
        """Journal the end (status, or a close) durably and release everything; first caller
        wins. After a status journaled here, ``wait`` (seconds; None: no wait, also for
        signals and exceptions) for its delivery, then say where the run went."""
        with self._end_lock:
            if self._ended:
                return False
            self._ended = status or "closed"
        with lifecycle.ending():
            told = self._journal_end(status, metadata, at)
        if self._media is not None and status != "TERMINATED":
            # every file logged here staged before the end returns: at exit nothing else
            # waits for the stager (docs/media.md). A signal's end does not wait: the files
            # stay in files/incoming for recovery, and the process dies as it would have
            self._media.drain()
        if told:
            self._tell_where(wait)
        return True

    def _tell_where(self, wait: float | None) -> None:
        target = waiting.Target(self._run_id, self._name, self._key, self._identity.path)
        waiting.ended.append(target)  # for pluto_offline.wait()
        if wait:
            left = waiting.until_delivered([target], wait)
            waiting.report(left, wait, f"finish(timeout={wait:g})")
        whereabouts.tell(*target)

    def _journal_end(self, status: str | None, metadata: dict | None, at: int | None) -> bool:
        """True when the run's status (not a close) was journaled by this process."""
        if self._guest:  # a forked child: never the parent's status, only its own writer
            if self._j is None:
                lifecycle.forget(self)
                return False
            status = metadata = None
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()
        when = at or self._clock_ms()

        def extra(j: Journal) -> None:
            if status is None:
                append_event(j, self._key, "close", time=when)
            else:
                append_event(j, self._key, "status", time=when,
                             payload={"status": status, "metadata": metadata})
            end_writer(j, self._writer_id, status or "closed")

        folded = False
        try:
            self._fold(extra)
            folded = True
        except Exception as exc:  # finish() never raises
            if self._identity.gone:
                logger.error("pluto_offline: run %s: its end (%s) is not saved: %s",
                             self._run_id, status or "close", exc)
            else:
                self._keep_end(status, metadata, when, exc)
        finally:
            self._release(folded)
        return folded and status is not None

    def _keep_end(self, status: str | None, metadata: dict | None, when: int,
                  exc: Exception) -> None:
        """The journal cannot take the end (a full disk): keep it in the spill file's reserved
        tail, after the records not yet journaled, for recovery (the next ``init()`` on this
        journal, or plutosync) to journal once it can: the run then ends as it did here, not
        FAILED killed (issue 12 item 14)."""
        what = status or "close"
        try:
            self._spill.set_dropped(self._outage.counts)
            self._spill.append_end(status, metadata, when)
        except Exception as keep_exc:  # nothing more to try: recovery reports it killed
            logger.error("pluto_offline: run %s: could not journal its end (%s): %s, nor keep "
                         "it in %s (%s); the logged records there are recovered later",
                         self._run_id, what, exc, self._spill.path, keep_exc)
            return
        dropped = "; ".join(drops.describe(n, r) for r, n in self._outage.by_reason().items()
                            ) if self._outage.unjournaled() else ""
        logger.error("pluto_offline: run %s: could not journal its end (%s) now: %s. It is kept "
                     "in %s with the records logged since the last write%s; the next init() on "
                     "this journal or plutosync journals them once there is space",
                     self._run_id, what, exc, self._spill.path,
                     f" (and the count: {dropped})" if dropped else "")

    def _release(self, folded: bool) -> None:
        try:
            atexit.unregister(self._at_exit)
        except Exception:
            pass
        lifecycle.forget(self)
        with self._lock:
            self._spill.close(unlink=folded)
            # (a journal removed or replaced under us is safe to close: SQLite sees the file
            # moved, and neither checkpoints nor unlinks the -wal by name)
            self._j.close()

    def _at_exit(self) -> None:
        self._end("COMPLETED", None, wait=waiting.env_timeout())

