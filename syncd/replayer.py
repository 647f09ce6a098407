"""The replayer: delivers each run's journaled events to the server, in ``seq`` order.

One :meth:`Replayer.run_pass` visits every run with unacknowledged events and delivers what it
can right now, giving each run a short time slice so a long backlog cannot starve a live run.
Per-run state machine (the translation of each event into requests is in
:mod:`syncd.delivery`):

- no server id yet: the run's ``create`` (or ``resume``) must go first; a fork child waits
  (:class:`Hold`) until its local parent is on the server with everything logged before the fork;
- then events in order: consecutive ``metrics`` (or ``data``) events are joined into one NDJSON
  request up to ``batch_bytes``; other kinds are one request each; ``close`` sends nothing;
- every success advances the run's acked seq in the journal (with the server ids, in the same
  transaction); a refusal (4xx) is recorded in ``rejected`` and the run moves past it.

Failures never sleep here: a transient error schedules that run's next try (a network-level one,
the server's, as it affects every run), an auth error pauses all runs slowly. The delivery state a
person needs (``last_error``, ``attempts``, ``next_try`` in epoch seconds, ``conflict``) is
written to the journal's ``delivery`` table for ``plutosync status``.
"""

from __future__ import annotations

import logging
import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pluto_offline import journal
from pluto_offline.journal import filerows
from syncd import finalstate, retry, runstate
from syncd.client import AuthError, ClientError, PlutoClient, RejectedError, TransientError
from syncd.cursor import Cursor, Hold, RunCtx  # noqa: F401 (Hold, RunCtx: part of its API)
from syncd.delivery import Delivery  # the per-event requests
from syncd.files import FileLane

log = logging.getLogger("plutosync")

BATCH_BYTES = 4 * 1024 * 1024  # one NDJSON request: big enough to amortize, small for RSS
REASSERT_AFTER = 3.0  # request timeouts after an unanswered state request
REASSERT_HOLD = ("its final config/tags/status are to be sent again: a request got no answer "
                 "and may still land late")
RUN_SLICE_S = 0.5  # a run's turn in a pass, so one backlog cannot starve a live run
QUIET_S = 60.0  # the same trouble is logged at most once a minute
CREATOR_POLL_MAX_S = 30.0  # a run waiting for another journal to create it asks this often


@dataclass
class Progress:
    requests: int = 0
    events: int = 0  # events acknowledged (delivered or recorded as rejected)
    rejected: int = 0


@dataclass
class _Sched(retry.Backoff):
    hold: str | None = None  # why the run waits (shown once in the log and in status)
    stuck: bool = False
    creator: bool = False  # waits for another journal to create the run


@dataclass
class _Gate(retry.Backoff):
    """A pause over all runs: the network is down, or the key is refused."""


@dataclass
class Replayer:
    j: journal.Journal
    client: PlutoClient
    batch_bytes: int = BATCH_BYTES
    stop: threading.Event = field(default_factory=threading.Event)
    on_progress: Callable[[Progress], None] | None = None
    totals: Progress = field(default_factory=Progress)
    server_state: str = "ok"  # ok | transient | auth: the log says when it changes
    last_auth_error: AuthError | None = None
    _sched: dict[int, _Sched] = field(default_factory=dict)
    _net: _Gate = field(default_factory=_Gate)
    _auth: _Gate = field(default_factory=_Gate)
    _warned: retry.Quiet = field(default_factory=lambda: retry.Quiet(QUIET_S))
    _paused_at: float = 0.0
    # Whether a run waiting for another journal to create it is still worth waiting for: a
    # service waits (None); a one-shot delivery says until when (push: while other journals
    # of the same push are still being delivered).
    wait_for_creators: Callable[[], bool] | None = None
    # The one-shot command delivering (``"push"``, ``"run --once"``), or None for the service.
    # One-shot: a run whose delivery fails for a reason neither transient nor an event's
    # refusal (its events unreadable, a journal error, a bug) is given up for this delivery
    # (``given_up``) and the others go on, instead of the service's slow retries; a refused key
    # is recorded with the command's own advice (AuthError.describe_once), not logged.
    one_shot: str | None = None
    given_up: dict[int, tuple[journal.RunRow, BaseException | str]] = field(default_factory=dict)
    moved: dict[int, int] = field(default_factory=dict)  # events acknowledged per run
    opened_here: set[int] = field(default_factory=set)  # runs this process sent an open for
    ended_here: set[tuple[int, int]] = field(default_factory=set)  # (run, seq) of ends sent
    changes_noted: set[tuple[int, int]] = field(default_factory=set)  # (run, seq) in lifecycle

    def __post_init__(self) -> None:
        self.delivery = Delivery(self)
        # logged files go in a lane of their own (its thread, connection and client)
        self.files = FileLane(str(self.j.path), self.client.settings, self.stop)

    # ------------------------------------------------------------------ passes
    def run_pass(self) -> Progress:
        """Deliver what can be delivered now; returns what this pass did."""
        before = Progress(self.totals.requests, self.totals.events, self.totals.rejected)
        for row in journal.runs_with_pending(self.j):
            if self.stop.is_set():
                break
            if self._ready(row):
                self._deliver(row)
        self._run_reasserts()
        if filerows.runs_with_pending(self.j):
            self.files.start()
        return Progress(self.totals.requests - before.requests,
                        self.totals.events - before.events,
                        self.totals.rejected - before.rejected)

    def close(self) -> None:
        """Stop the files lane and release its thread and connection (the replayer's own
        journal and client are the caller's to close)."""
        self.files.shutdown()

    def outstanding(self) -> list[journal.RunRow]:
        """Runs with pending events that can still be delivered without a person's help, and
        runs whose final state is still to be re-asserted."""
        patient = self.wait_for_creators is None or self.wait_for_creators()

        def movable(r: journal.RunRow) -> bool:
            sched = self._sched.get(r.key, _Sched())
            return (not r.conflict and not sched.stuck and r.key not in self.given_up
                    and (patient or not sched.creator))

        rows = [r for r in journal.runs_with_pending(self.j) if movable(r)]
        keys = {r.key for r in rows}
        rows += [r for r in journal.runs_to_reassert(self.j) if r.key not in keys and movable(r)]
        keys = {r.key for r in rows}
        for key in filerows.runs_with_pending(self.j):  # files still to upload (syncd/files.py)
            row = journal.get_run(self.j, key) if key not in keys else None
            if row is not None and row.server_id is not None and movable(row):
                rows.append(row)
        return rows

    # ------------------------------------------------------------------ late requests
    def ambiguous(self, key: int, kind: str, request: str | None = None) -> None:
        """A state request (config, tags, status; a create or resume, which set RUNNING) got
        no answer: the server may still apply it, late, after the requests that follow it.
        Once it can no longer land (``REASSERT_AFTER`` request timeouts later), send the run's
        final state again. The note is kept in the journal: a daemon killed or stopped
        meanwhile leaves it to the next one, and the run does not read as synced until done.
        ``kind`` is the part of the state to re-assert; ``request`` names the request (default:
        ``kind``) in the log."""
        due = reassert_due(self.client.settings.timeout)
        if journal.note_reassert(self.j, key, due, {kind}):
            # one line per note, not per timeout: a long wait is explained
            row = journal.get_run(self.j, key)
            if row is not None:
                log.warning("run %s/%s: a %s request got no answer and may still land late; "
                            "its final state will be sent again at %s", row.project,
                            row.name or row.run_id, request or kind,
                            runstate.clock(row.reassert_due or due))

    def reassert_now(self) -> None:
        """On the way out: re-assert at once what is noted, due or not. A note not yet due
        stays in the journal: a request still held by the server may land after this one."""
        rows = journal.runs_to_reassert(self.j)
        if rows:
            log.info("sending the final state of %d run(s) again before exiting; a note not yet "
                     "due stays in the journal for the next plutosync", len(rows))
            self._run_reasserts(final=True)

    def _run_reasserts(self, final: bool = False) -> None:
        """Send the final state of runs whose re-assert is due (``final``: all, now)."""
        now = time.time()
        for row in journal.runs_to_reassert(self.j):
            due, kinds = row.reassert or (0.0, frozenset())
            if not final and (due > now or self.stop.is_set()):
                continue
            if journal.pending_events(self.j, row.key, after=row.acked_seq, limit=1):
                continue  # after the run's own pending updates, not before them
            if row.server_id is None:  # never opened (its create was refused): nothing to undo
                journal.clear_reassert(self.j, row.key)
                continue
            try:
                with finalstate.run_lock(row.project, row.run_id):
                    self.delivery.reassert(RunCtx(row, row.server_id, row.acked_seq), kinds)
            except (TransientError, AuthError) as exc:
                log.warning("run %s/%s: could not re-assert its final state%s: %s",
                            row.project, row.name or row.run_id,
                            " before exiting; the next plutosync will" if final else "",
                            exc.describe())
                if not final:
                    journal.note_reassert(self.j, row.key,
                                          time.time() + (retry.next_delay(exc, 1) or 1.0), kinds)
                continue
            except ClientError as exc:  # the run is gone or refuses: nothing left to correct
                log.warning("run %s/%s: could not re-assert its final state: %s",
                            row.project, row.name or row.run_id, exc.describe())
            if due <= time.time():
                journal.clear_reassert(self.j, row.key, due)

    def waiting_for_creators(self) -> list[int]:
        """Keys of runs waiting for another journal to create them on the server."""
        return [k for k, s in self._sched.items() if s.creator]

    def try_now(self, keys: list[int], *, pauses: bool = False) -> None:
        """Try these runs on the next pass, whatever their backoff says (``pauses``: and
        whatever pause holds every run: the network's backoff, a refused key's)."""
        for key in keys:
            self._sched.setdefault(key, _Sched()).due = 0.0
        if pauses:
            self._net.due = self._auth.due = 0.0
            self.files.try_now()

    def refused_key_note(self, reason: str | None) -> str | None:
        """For a run a one-shot delivery left undelivered: a short word for the refused key
        when ``reason`` is its full advice (said once already), else None."""
        exc = self.last_auth_error
        if exc is not None and self.one_shot and reason == exc.describe_once(self.one_shot):
            return f"not sent: {exc.short()} (above)"
        return None

    def stuck(self) -> list[journal.RunRow]:
        """Runs with pending events held until a person acts (a conflict), with the reason."""
        return [r for r in journal.runs_with_pending(self.j)
                if r.conflict or self._sched.get(r.key, _Sched()).stuck]

    def held(self, key: int) -> bool:
        """Whether the run is held until a person acts (a conflict, or a parent in one)."""
        s = self._sched.get(key)
        return s is not None and s.stuck

    def hold_reason(self, key: int) -> str | None:
        s = self._sched.get(key)
        if s and s.hold:
            return s.hold
        row = journal.get_run(self.j, key)
        return REASSERT_HOLD if row is not None and row.reassert is not None else None

    def next_due(self) -> float | None:
        """Seconds until the earliest paused run may be tried again (None: nothing paused)."""
        now = time.monotonic()
        dues = [s.due for s in self._sched.values() if s.due > now]
        dues += [g.due for g in (self._net, self._auth) if g.due > now]
        wall = time.time()  # re-assert notes are due in wall time: they outlive the process
        dues += [now + max(r.reassert_due - wall, 0.05) for r in journal.runs_to_reassert(self.j)
                 if r.reassert_due is not None]
        return min(dues) - now if dues else None

    def _ready(self, row: journal.RunRow) -> bool:
        now = time.monotonic()
        if row.conflict or now < self._auth.due or now < self._net.due or row.key in self.given_up:
            return False
        return self._sched.setdefault(row.key, _Sched()).due <= now

    # ------------------------------------------------------------------ one run's turn
    def _deliver(self, row: journal.RunRow) -> None:
        if self.one_shot is None:
            self._turn(row)
            return
        try:
            self._turn(row)
        except Exception as exc:  # escaped the run's own handling (its journal reads): still
            self.given_up.setdefault(row.key, (row, exc))  # this run's, given up for now
            if not journal_trouble(exc):
                log.info("run %s/%s stopped by an unexpected error", row.project,
                         row.name or row.run_id, exc_info=exc)

    def _turn(self, row: journal.RunRow) -> None:
        sched = self._sched.setdefault(row.key, _Sched())
        ctx = RunCtx(row, row.server_id, row.acked_seq)
        cursor = Cursor(self.j, row.key, row.acked_seq)
        end = time.monotonic() + RUN_SLICE_S
        try:
            while not self.stop.is_set() and time.monotonic() < end:
                if cursor.peek() is None:
                    break
                self.delivery.step(ctx, cursor)
                sched.attempts = 0
                self._answered()
        except Hold as hold:
            if hold.reason != sched.hold:
                log.info("run %s: %s", ctx.label, hold.reason)
                journal.record_error(self.j, row.key, hold.reason)
            sched.hold, sched.stuck, sched.creator = hold.reason, hold.stuck, hold.creator
            if hold.creator:  # asked the server: ask again later, not on every pass
                sched.attempts += 1
                sched.due = time.monotonic() + min(CREATOR_POLL_MAX_S, 0.5 * 2 ** sched.attempts)
            return
        except TransientError as exc:
            self._transient(ctx, sched, exc)
            return
        except AuthError as exc:
            self._auth_refused(ctx, exc)
            return
        except RejectedError as exc:  # a refusal no sender placed on an event
            self._failed(ctx, sched, f"the server refused a request: {exc.describe()}")
            return
        except Exception as exc:  # noqa: BLE001 - one run's trouble must not stop the others
            log.exception("run %s: unexpected error while delivering", ctx.label)
            self._failed(ctx, sched, f"unexpected error: {type(exc).__name__}: {exc}")
            return
        sched.hold, sched.stuck, sched.creator = None, False, False

    def _transient(self, ctx: RunCtx, sched: _Sched, exc: TransientError) -> None:
        # No answer at all is the server's trouble, not the run's: pause every run.
        gate = self._net if exc.code is None else sched
        delay = gate.failure(exc, self.client.answers)
        journal.record_error(self.j, ctx.row.key, exc.describe(), next_try=time.time() + delay)
        now = time.monotonic()
        if self.server_state != "transient":
            self.server_state, self._paused_at = "transient", now
        # One line per kind of trouble per minute, however the server flaps.
        kind = exc.code or "network"
        if self._warned.says(kind):
            log.warning("delivery paused: %s; retrying with backoff, nothing is lost",
                        exc.describe())

    def _failed(self, ctx: RunCtx, sched: _Sched, reason: str) -> None:
        """Something neither transient nor an event's refusal went wrong with this run: keep
        its events, note why (plutosync status), and try the run again later, slowly."""
        if self.one_shot is not None:  # the error itself when the journal is at fault
            exc = sys.exc_info()[1]
            self.given_up.setdefault(ctx.row.key, (ctx.row, exc if journal_trouble(exc)
                                                   else reason))
        sched.attempts += 1
        delay = min(retry.BACKOFF_CAP_S, 2.0 ** sched.attempts)
        sched.due = time.monotonic() + delay
        journal.record_error(self.j, ctx.row.key, reason[:500], next_try=time.time() + delay)

    def _auth_refused(self, ctx: RunCtx, exc: AuthError) -> None:
        if self.one_shot is not None:  # said once, at the end, by the command
            self._auth.due = time.monotonic() + 60.0
            self.last_auth_error = exc
            self.server_state = "auth"
            journal.record_error(self.j, ctx.row.key, exc.describe_once(self.one_shot))
            return
        self._auth.attempts += 1
        delay = retry.next_delay(exc, self._auth.attempts) or 60.0
        self._auth.due = time.monotonic() + delay
        self.last_auth_error = exc
        journal.record_error(self.j, ctx.row.key, exc.describe(), next_try=time.time() + delay)
        if self.server_state != "auth":
            log.error("%s (next try in %.0f s)", exc.describe(), delay)
            self.server_state = "auth"

    def _answered(self) -> None:
        self._net.attempts = self._auth.attempts = 0
        self.last_auth_error = None
        if self.server_state != "ok":
            # An outage or a refused key ends with a line; a flapping 5xx does not.
            long = time.monotonic() - self._paused_at > QUIET_S / 10
            if self.server_state == "auth" or self._warned.kind == "network" or long:
                log.info("the server answers again: delivering")
            self.server_state = "ok"

    # ------------------------------------------------------------------ bookkeeping
    def acked(self, ctx: RunCtx, seq: int, events: int, requests: int = 1,
              **server: object) -> None:
        """Record a success: the run's acked seq (and server ids) in one transaction."""
        journal.ack(self.j, ctx.row.key, seq, **server)
        ctx.acked = seq
        self.moved[ctx.row.key] = self.moved.get(ctx.row.key, 0) + events
        self._count(events, requests)

    def rejected(self, ctx: RunCtx, ev: journal.Event, exc: ClientError | None,
                 reason: str | None = None) -> None:
        """Record an event refused for good, and move past it."""
        code = exc.code if exc else None
        text = reason or (exc.describe() if exc else "refused")
        journal.reject(self.j, ev, code=code, reason=text)
        ctx.acked = ev.seq
        self.moved[ctx.row.key] = self.moved.get(ctx.row.key, 0) + 1
        self.totals.rejected += 1
        self._count(1, 0)
        # the reason names who refused it: the server, or a webhook's host (an alert)
        log.warning("run %s: its %s event was refused (%s); recorded, moving on",
                    ctx.label, ev.kind, text)

    def _count(self, events: int, requests: int) -> None:
        self.totals.events += events
        self.totals.requests += requests
        if self.on_progress:
            self.on_progress(self.totals)


def reassert_due(timeout: float) -> float:
    """When (epoch seconds) a state request sent now with ``timeout`` and unanswered can no
    longer land: ``REASSERT_AFTER`` timeouts from now."""
    return time.time() + REASSERT_AFTER * timeout


def drain(replayer: Replayer, *, deadline: float | None = None,
          give_up_on_auth: bool = False) -> bool:
    """Run passes until nothing deliverable is pending (True) or ``deadline`` (monotonic),
    a stop, or (with ``give_up_on_auth``) a refused key ends it (False)."""
    while not replayer.stop.is_set():
        progress = replayer.run_pass()
        if not replayer.outstanding():
            return True
        if progress.events and (deadline is None or time.monotonic() < deadline):
            continue  # a backlog, not a wait
        if give_up_on_auth and replayer.server_state == "auth":
            return False
        wait = replayer.next_due()
        now = time.monotonic()
        if deadline is not None and now + (wait or 0) > deadline:
            if now >= deadline:
                return False
            wait = deadline - now
        replayer.stop.wait(min(wait if wait is not None else 0.05, 1.0))
    return False


def journal_trouble(exc: BaseException | None) -> bool:
    """Whether ``exc`` is the journal's trouble (damage, a journal or file error), not a bug."""
    return isinstance(exc, (sqlite3.DatabaseError, journal.JournalError, OSError))
