"""The ``plutosync run`` service loop: lock, watch, replay, heartbeat, stop cleanly.

SIGTERM / SIGINT set a stop flag: the request in flight finishes and is acknowledged, then the
loop ends and the process exits 0. A second signal exits at once (acks are transactional, so
even that loses nothing; at most one batch is sent again by the next daemon).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from dataclasses import dataclass

from pluto_offline import journal
from syncd.client import PlutoClient
from syncd.heartbeat import HEARTBEAT_S, Heartbeat, live_runs
from syncd.lock import JournalLock
from syncd.replayer import Replayer, drain
from syncd.settings import Settings
from syncd.watch import Watcher

log = logging.getLogger("plutosync")

POLL_S = 0.5
RECOVER_EVERY_S = 2.0
PRUNE_EVERY_S = 3600.0
IDLE_GRACE_S = 1.0  # --exit-when-idle: idle this long (a job may be starting up)
# --exit-when-idle: with no job left, how long a delivery the daemon cannot make on its own
# (a refused key, a URL that answers nothing Pluto-like) is tried before it gives up
GIVE_UP_S = 300.0
ENV_GIVE_UP = "PLUTOSYNC_GIVE_UP"
EXIT_GAVE_UP = 1  # as `run --once` that left something undelivered


@dataclass
class Options:
    exit_when_idle: bool = False
    once: bool = False
    timeout: float | None = None  # --once: give up on transient errors after this long
    poll: float = POLL_S
    heartbeat: float = HEARTBEAT_S
    retention_s: float | None = None  # prune acknowledged events older than this; None: never
    prune_every: float = PRUNE_EVERY_S
    give_up_after: float = GIVE_UP_S  # --exit-when-idle only (see GIVE_UP_S)


def recover(j: journal.Journal) -> None:
    """Fold the spill files of killed writers into the journal (their last log() calls)."""
    try:
        n = journal.recover(j)
    except ImportError:  # SDK without spill support
        return
    if n:
        log.info("recovered %d records from writers that were killed", n)


def prune(j: journal.Journal, older_than_s: float) -> None:
    """Apply the retention rules (syncd.retention); a failure is logged, never fatal."""
    from syncd.retention import prune_acked

    try:
        result = prune_acked(j, older_than_s)
    except journal.JournalError as exc:
        log.warning("retention: could not prune the journal: %s", exc)
        return
    done = []
    if result.events:
        done.append(f"{result.events} delivered events of {result.runs} runs")
    if result.files:
        from rich.filesize import decimal

        done.append(f"the staged bytes of {result.files} delivered files "
                    f"({decimal(result.file_bytes)})")
    if done:
        log.info("retention: pruned %s", " and ".join(done))


HURRY_SIGNAL = signal.SIGUSR1  # sent by `plutosync push` to the daemon holding the journal


def _try_now(j: journal.Journal, replayer: Replayer) -> None:
    """Skip every run's backoff and the pauses over all runs: a person is waiting (push)."""
    log.info("asked by plutosync push to try now: every pending run is tried at once")
    replayer.try_now([r.key for r in journal.runs_with_pending(j)], pauses=True)


class Daemon:
    def __init__(self, journal_path: str | os.PathLike[str] | None, settings: Settings,
                 options: Options | None = None) -> None:
        self.file = journal.resolve_path(journal_path)
        self.settings = settings
        self.options = options or Options()
        self.stop = threading.Event()
        self.wake = threading.Event()
        self._signals = 0
        self.hurry = threading.Event()

    def install_signal_handlers(self) -> None:
        def handler(signum: int, frame: object) -> None:
            self._signals += 1
            if self._signals > 1:
                os._exit(128 + signum)
            log.info("%s received: finishing the request in flight, then exiting",
                     signal.Signals(signum).name)
            self.stop.set()
            self.wake.set()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)
        # plutosync push of this journal asks: try every run now, whatever its backoff
        signal.signal(HURRY_SIGNAL, lambda *_: (self.hurry.set(), self.wake.set()))

    def run(self) -> int:
        """Deliver until stopped (or idle / drained, per the options); returns the exit code."""
        with JournalLock(self.file):
            j = journal.Journal.open(self.file)
            client = PlutoClient(self.settings)
            # --once: a refused key ends it, said once with advice for --once
            replayer = Replayer(j, client, stop=self.stop,
                                one_shot="run --once" if self.options.once else None)
            try:
                if self.options.once:
                    return self._once(j, replayer)
                return self._serve(j, replayer)
            finally:
                replayer.close()
                client.close()
                j.close()

    def _once(self, j: journal.Journal, replayer: Replayer) -> int:
        recover(j)
        replayer.wait_for_creators = lambda: False  # nothing else here could create them
        deadline = None if self.options.timeout is None else time.monotonic() + self.options.timeout
        done = drain(replayer, deadline=deadline, give_up_on_auth=True)
        if replayer.one_shot and replayer.last_auth_error is not None:
            log.error("%s", replayer.last_auth_error.describe_once(replayer.one_shot))
        left = replayer.outstanding() + replayer.stuck()
        for row in left:
            reason = row.conflict or replayer.hold_reason(row.key) or row.last_error or "pending"
            reason = replayer.refused_key_note(reason) or reason
            log.error("run %s/%s not fully delivered: %s", row.project, row.name or row.run_id,
                      reason)
        return 0 if done and not left else 1

    def _serve(self, j: journal.Journal, replayer: Replayer) -> int:
        watcher = Watcher(self.file, self.wake)
        notified = watcher.start()
        beat = Heartbeat(self.file, self.settings, self.stop, self.options.heartbeat)
        beat.start()
        log.info("delivering %s to %s (pid %d, %s)", self.file, self.settings.api_url,
                 os.getpid(), "file notifications + polling" if notified else "polling")
        last_recover = 0.0
        last_prune = 0.0
        idle_since: float | None = None
        blocked_since: float | None = None
        code = 0
        try:
            while not self.stop.is_set():
                now = time.monotonic()
                if now - last_recover >= RECOVER_EVERY_S:
                    recover(j)
                    last_recover = now
                if (self.options.retention_s is not None
                        and now - last_prune >= self.options.prune_every):
                    prune(j, self.options.retention_s)
                    last_prune = now
                self.wake.clear()
                if self.hurry.is_set():
                    self.hurry.clear()
                    _try_now(j, replayer)
                progress = replayer.run_pass()
                if self.options.exit_when_idle:
                    live = live_runs(j)
                    outstanding = replayer.outstanding()
                    idle = not outstanding and not live
                    idle_since = (idle_since or now) if idle else None
                    if idle_since is not None and now - idle_since >= IDLE_GRACE_S:
                        log.info("everything delivered and no job is writing: exiting")
                        break
                    # no job left, and what is left cannot go without a person's fix
                    why = (None if live or not outstanding or progress.events
                           else _blocked(replayer, outstanding))
                    blocked_since = (blocked_since or now) if why else None
                    if why and now - blocked_since >= self.options.give_up_after:
                        self._give_up(why, j)
                        code = EXIT_GAVE_UP
                        break
                if progress.events and replayer.outstanding():
                    continue  # a backlog: go straight on with the next pass
                due = replayer.next_due()
                wait = self.options.poll if due is None else min(self.options.poll, due)
                if self.wake.wait(wait):
                    time.sleep(0.02)  # let a burst of commits land: fewer, larger requests
        finally:
            self.stop.set()
            watcher.stop()
            replayer.reassert_now()
            beat.join(timeout=5)
        return code

    def _give_up(self, why: str, j: journal.Journal) -> None:
        """Say why in the log, and leave it beside the journal (``journal.daemon_exit``) for
        ``plutosync status`` and the next job's end-of-run line; the journal keeps it all."""
        from pluto_offline.journal import daemon_exit

        where = str(self.file.parent if self.file.name == journal.JOURNAL_FILE else self.file)
        left = sum(c["pending"] for c in journal.event_counts(j).values())
        reason = (f"gave up after {_seconds(self.options.give_up_after)} with no job writing "
                  f"the journal: {why}; the {left} events left stay in the journal: fix that, "
                  f"then run `plutosync push {where}`")
        log.error("%s", reason)
        try:
            daemon_exit.write(self.file, pid=os.getpid(), code=EXIT_GAVE_UP, reason=reason,
                              log=self.file.parent / "plutosync.log")
        except OSError as exc:
            log.warning("could not note why beside the journal: %s", exc)


def _blocked(replayer: Replayer, outstanding: list[journal.RunRow]) -> str | None:
    """Why nothing left can be delivered without a person's fix, or None: the key is refused,
    or every run left last met an answer that is not a Pluto server's (a wrong URL, a proxy).
    A server that does not answer at all (down, no network) is waited for."""
    exc = replayer.last_auth_error
    if replayer.server_state == "auth" and exc is not None:
        return f"{exc.problem()}: {exc.fix()}"
    errors = [r.last_error for r in outstanding]
    if errors and all(e and "protocol error:" in e for e in errors):
        return errors[0]
    return None


def _seconds(s: float) -> str:
    for unit, n in (("h", 3600), ("min", 60)):
        if s >= n and s % n == 0:
            return f"{int(s // n)} {unit}"
    return f"{s:g} s"
