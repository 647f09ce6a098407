"""The run object ``init()`` returns: ``log`` into the spill, state changes into the journal.

    run = pluto_offline.init(project="mnist", config={"lr": 0.1})
    for step in range(100):
        run.log({"loss": 1 / (step + 1)})
    run.update_config({"epochs": 100})
    run.finish()

Threads: ``log()`` may be called from any thread; a writer thread folds the spill into the
journal every ``flush_interval`` seconds; state changes fold it first, then commit their own
event in the same fsync'd transaction, so journal order is call order.
"""

from __future__ import annotations

import atexit
import logging
import marshal
import os
import sqlite3
import struct
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from pluto_offline import datatypes, fold, forking, lifecycle
from pluto_offline.alerts import RunAlerts
from pluto_offline.changes import StateChanges
from pluto_offline.ending import RunEnd
from pluto_offline.errors import JournalError
from pluto_offline.identity import JournalIdentity
from pluto_offline.ids import clean_chars, rename_note
from pluto_offline.journal import (
    Journal,
    _explain,
    drops,
    server_fields,
)
from pluto_offline.media.recorder import MediaLog, as_files
from pluto_offline.outage import Outage
from pluto_offline.runinfo import RunInfo
from pluto_offline.spill import Spill, SpillFull
from pluto_offline.values import (
    MAX_STEP,
    bad_step,
    check_step,
    check_timestamp,
    route,
)

logger = logging.getLogger("pluto_offline")
FLUSH_INTERVAL = 0.05
_PLAIN_NUMBERS = frozenset((float, int))


class Run(StateChanges, RunEnd, RunInfo, RunAlerts):
    """One open run in this process (see ``pluto_offline.init``); its properties are
    :class:`RunInfo`'s."""

    def __init__(
        self, *, journal: Journal, key: int, run_id: str, ref_kind: str, project: str,
        name: str, config: Any, tags: list[str], step: int, writer_id: str, spill: Spill,
        metric_names: set[str], data_names: set[str], resumed: bool,
        fork: dict | None, flush_interval: float = FLUSH_INTERVAL, time_floor: int = 0,
    ):
        self._j: Journal | None = journal  # None in a forked child until it writes (forking)
        self._identity = JournalIdentity(journal.path)
        self._guest = False  # a copy inherited by a forked child (forking.py)
        self._owner_pid = os.getpid()  # the process whose run this is
        self._flush_interval = flush_interval
        self._t_last = time_floor  # the latest time this writer journaled (ms): see _clock_ms
        self._key = key
        self._run_id = run_id
        self._ref_kind = ref_kind
        self._project = project
        self._name = name
        self._config = config
        self._tags = tags
        self._step = step
        self._writer_id = writer_id
        self._spill = spill
        self._metric_names = metric_names  # registered METRIC names
        self._formats = spill.formats  # key tuples whose every key is one: the fast path
        # registered data names and their logName types (DATA, HISTOGRAM, TABLE...): a
        # forked child registers them again under the same types
        self._data_types: dict[str, str] = dict.fromkeys(data_names, "DATA")
        self._resumed = resumed
        self._fork = fork
        self._server: tuple | None = None
        self._warned: set = set()
        self._media: MediaLog | None = None  # files logged here (created at the first)
        self._outage = Outage()  # backoff while the journal cannot be written; drops counted
        self._lock = threading.RLock()  # the connection and the fold position
        self._append_lock = threading.Lock()  # the spill's write position and the step
        self._end_lock = threading.Lock()
        self._ended: str | None = None
        self.busy_thread: int | None = None  # thread inside a fold (see lifecycle)
        self._stop = threading.Event()
        spill.drain = self._drain_and_wrap
        self._thread = threading.Thread(
            target=self._writer_loop, args=(flush_interval,), daemon=True,
            name=f"pluto-offline-writer-{run_id[:12]}",
        )

    def _start(self) -> None:
        forking.install()
        self._thread.start()
        atexit.register(self._at_exit)

    # ------------------------------------------------------------------ logging (hot path)

    def log(self, data: Mapping[str, Any], step: int | None = None,
            timestamp: float | None = None) -> None:
        """Log metrics (numbers) and string series (short strs) at a step.

        Each call advances the step by one; an explicit ``step`` resets the counter. Once
        this returns, the values survive even a SIGKILL of the process.
        """
        if self._ended:
            self._warn_once(("ended", "log"), f"run {self._run_id} has ended: log() ignored")
            return
        if type(data) is not dict:
            data = self._check_data(data)
        if timestamp is None:
            t = time.time_ns() // 1_000_000
            if t < self._t_last:  # the clock was stepped back: see _clock_ms
                t = self._t_last
            else:
                self._t_last = t
        else:
            t = self._time_ms(timestamp)
        with self._append_lock:
            if step is None:
                step = self._step + 1
            elif type(step) is not int:
                step = check_step(step)
            elif not 0 <= step <= MAX_STEP:
                raise ValueError(bad_step(step))
            self._step = step
            fmt = self._formats.get(tuple(data))
            # exact types only: a bool, a numpy scalar or a str is routed by _log_slow
            if fmt is not None and {*map(type, data.values())} <= _PLAIN_NUMBERS:
                try:
                    self._spill.append_values(fmt, step, t, data)
                    return
                except (struct.error, TypeError, OverflowError):
                    pass  # an int no f64 holds: the slow path keeps it exact
                except Exception as exc:
                    self._append_failed(exc)
                    return
            self._log_slow(data, step, t)

    def _log_slow(self, data: dict, step: int, t: int) -> None:
        metrics: dict[str, Any] = {}
        strings: dict[str, str] = {}
        new_metric: list[str] = []
        new_data: list[str] = []
        structured: list[tuple] = []  # Histogram, Table, Graph (datatypes.py)
        if not all(isinstance(key, str) for key in data):
            # before any name is registered: a refused call must leave no trace
            raise ValueError("unsupported type for key in dict of logged data")
        for key, value in data.items():
            key = str(key)  # a str subclass (numpy.str_) becomes a plain str
            if not key.isprintable() or not key.strip():
                key = self._renamed(key)
            raw, (kind, value) = value, route(value)
            if kind == "metric":
                metrics[key] = value
                if key not in self._metric_names:
                    self._metric_names.add(key)
                    new_metric.append(key)
            elif kind == "data":
                strings[key] = value
                if key not in self._data_types:
                    self._data_types[key] = "DATA"
                    new_data.append(key)
            elif (files := as_files(raw)) is not None:  # an Image, a list of them...
                self._log_files(key, files, step, t)
            elif (item := datatypes.entry(key, raw, self._data_types)) is not None:
                if isinstance(item, str):
                    self._warn_once(("drop", key), f"log(): {key!r} dropped: {item}")
                else:
                    structured.append(item)
            else:
                self._warn_once(("drop", key), f"log(): {key!r} dropped: {value} "
                                "(further values of this key are dropped without a warning)")
        if metrics or strings or new_metric or new_data or structured:
            self._append(marshal.dumps((step, t, metrics, strings, new_metric, new_data)
                                       + ((structured,) if structured else ())))
        if metrics and len(metrics) == len(data):
            # every key a registered metric name: later calls with these keys take the fast path
            self._add_schema(tuple(data), tuple(metrics))

    def _renamed(self, key: str) -> str:
        """The journaled name of a key with unprintable characters, warned about once."""
        name = clean_chars(key)
        self._warn_once(("renamed", key), rename_note("log(): key", key, name))
        return name

    def _log_files(self, key: str, files: list, step: int, t: int) -> None:
        """Files under ``key`` (media/recorder.py): on disk before this returns."""
        if self._media is None:
            self._media = MediaLog(self._identity.path, self._key)
        self._media.add(key, files, step, t, self._writer_id)

    def _add_schema(self, keys: tuple, names: tuple[str, ...]) -> None:
        try:
            self._spill.add_schema(keys, names)
        except Exception as exc:  # the spill is full and the journal unwritable: stay slow
            logger.debug("no fast path for %d keys: %s", len(keys), exc)

    def _append(self, payload: bytes) -> None:
        try:
            self._spill.append(payload)
        except Exception as exc:
            self._append_failed(exc)

    def _append_failed(self, exc: Exception) -> None:
        if isinstance(exc, (SpillFull, JournalError)):
            if self._outage.drop(exc):
                logger.warning(
                    "pluto_offline: log(): the journal cannot be written (%s) and the spill "
                    "file is full: log records are dropped until it can be; each is counted, "
                    "and the count is journaled once it can (plutosync status shows it)",
                    self._outage.error or exc)
            try:  # in the spill's header too: the count outlives a killed process
                self._spill.set_dropped(self._outage.counts)
            except (ValueError, AttributeError):
                pass  # closed by the run's end meanwhile
        elif not (isinstance(exc, ValueError) and self._ended):
            raise exc  # a ValueError after the end: the spill was closed by another thread

    def _check_data(self, data: Any) -> dict:
        if not isinstance(data, Mapping):
            raise ValueError(f"unsupported type for logged data: {type(data).__name__}, expected dict")
        return dict(data)

    def _clock_ms(self) -> int:
        """Now (epoch ms), never earlier than the latest time this writer journaled for the run
        (at a resume: the latest the journal holds). A clock stepped backwards is clamped, so
        journal order is time order and a later ``log()`` of a step wins at the server, which
        keeps the point with the later time. ``timestamp=`` values are kept as given."""
        t = time.time_ns() // 1_000_000
        if t < self._t_last:
            return self._t_last
        self._t_last = t
        return t

    def _time_ms(self, timestamp: Any) -> int:
        ts = check_timestamp(timestamp)
        if ts is None:
            self._warn_once(("timestamp",), f"log(): ignoring invalid timestamp {timestamp!r}; "
                            "using current time")
            ts = time.time()
        return int(ts * 1000)

    # ------------------------------------------------------------------ folding

    def flush(self) -> None:
        """Return once everything logged before this call is committed (fsync'd) in the journal.

        Raises ``JournalError`` when the journal cannot be written; the records stay in the
        spill file and are folded later (or recovered after a crash).
        """
        if not self._ended:
            self._fold()

    def _fold(self, extra: Callable[[Journal], None] | None = None) -> None:
        """Fold the published spill records (and ``extra``'s events) in one transaction."""
        with self._lock:
            if self._j is None:  # a forked child that has not written yet
                if extra is None:
                    return
                forking.attach(self)
            self.busy_thread = threading.get_ident()
            try:
                end, number = self._spill.published
                start = self._spill.rpos
                outage = self._outage
                media = self._media
                if (start == end and extra is None and not outage.unjournaled()
                        and not (media is not None and media.pending)):
                    return
                records = self._spill.read(start, end) if end != start else []
                self._identity.check(self._run_id)
                counts = tuple(outage.counts)
                try:
                    with self._j.transaction():
                        if records:
                            fold.write(self._j, self._key, self._writer_id, records, number,
                                       self._spill.schemas)
                        if counts != outage.journaled:
                            drops.record(self._j, self._writer_id, self._key,
                                         outage.by_reason())
                        files = media.fold(self._j, self._clock_ms()) if media else 0
                        if extra is not None:
                            extra(self._j)
                except sqlite3.DatabaseError as exc:
                    error = _explain(exc, self._j.path)
                    outage.failed(error)
                    raise error from exc
                except JournalError as exc:  # the transaction's BEGIN or COMMIT, explained
                    outage.failed(exc)
                    raise
                self._identity.check(self._run_id)  # committed into the file we opened?
                self._spill.rpos = end
                outage.journaled = counts
                if media is not None:
                    media.folded(files)
                if outage.recovered() and outage.total():
                    self._tell_recovered()
            finally:
                self.busy_thread = None
        lifecycle.after_fold()

    def _tell_recovered(self) -> None:
        logger.warning(
            "pluto_offline: run %s: the journal can be written again. While it could not, %s "
            "(the count is journaled: plutosync status shows it)", self._run_id,
            "; ".join(drops.describe(n, r) for r, n in self._outage.by_reason().items()))

    def _drain_and_wrap(self) -> None:
        with self._lock:
            if not self._outage.ready():  # it just failed: log() must not pay for a retry
                raise SpillFull("the spill file is full", self._outage.reason())
            self._fold()
            self._spill.wrap()

    def _writer_loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            if not self._outage.ready():
                continue  # backing off after a failed fold (a full disk)
            try:
                self._fold()
            except JournalError as exc:
                if self._identity.gone:
                    return  # said loudly once (identity.py): nothing can be written any more
                self._warn_once(("journal", str(exc)), f"log(): {exc}; the records are kept "
                                "in the spill file and written when the journal recovers")
            except Exception as exc:  # never let the writer die silently
                self._warn_once(("writer", repr(exc)), f"pluto_offline writer thread: {exc!r}")

    def _ignored(self, what: str) -> bool:
        if self._ended:
            self._warn_once(("ended", what), f"run {self._run_id} has ended: {what}() ignored")
            return True
        return False

    def _warn_once(self, key: tuple, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            # every SDK warning names its source, as the module's own do
            logger.warning(message if message.startswith("pluto_offline")
                           else f"pluto_offline: {message}")

    def _read_delivery(self) -> tuple | None:
        with self._lock:
            if not self._ended and self._j is not None:
                return server_fields(self._j, self._key)
        with Journal.open(self._identity.path, readonly=True) as j:  # its own one is closed
            return server_fields(j, self._key)
