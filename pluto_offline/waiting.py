"""An opt-in, bounded wait for delivery (issue 12 item 5): ``run.finish(timeout=S)``,
``pluto_offline.wait(timeout=S)``, or ``PLUTO_OFFLINE_WAIT=S`` for scripts that cannot be
edited (it sets ``finish()``'s and the normal exit's timeout).

The stock SDK's ``finish()`` blocks until its uploader drains; ours returns at once, which a CI
job, a notebook or a preempted spot instance may not want. The wait reads local state only,
never the network: the journal's delivery table (a run is delivered once the server has its id
and every event of it is acknowledged) and whether a plutosync holds the journal's lock (or is
being started by this process). It ends as soon as the runs are delivered, the timeout passes,
or no plutosync is delivering them: it never waits on nothing. The default stays: no wait.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import NamedTuple

from pluto_offline import autostart
from pluto_offline.journal import Journal, daemon_exit
from pluto_offline.journal.delivery import waits_for_restart
from pluto_offline.journal.progress import Progress, progress

logger = logging.getLogger("pluto_offline")
ENV = "PLUTO_OFFLINE_WAIT"
POLL_S = 0.1


class Target(NamedTuple):
    """A run to wait for: its ids and where it is journaled."""

    run_id: str
    name: str
    key: int
    journal_file: Path


def env_timeout() -> float | None:
    """``PLUTO_OFFLINE_WAIT`` in seconds, or None (unset, 0, or not a number: warned once)."""
    text = os.environ.get(ENV, "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        if text not in _warned:
            _warned.add(text)
            logger.warning("pluto_offline: %s=%r is not a number of seconds: not waiting for "
                           "delivery", ENV, text)
        return None
    return value if value > 0 else None


_warned: set[str] = set()


def check_timeout(timeout: object) -> float:
    """A ``timeout=`` argument in seconds (``TypeError``/``ValueError`` otherwise)."""
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise TypeError(f"timeout must be a number of seconds, got {type(timeout).__name__}")
    if not timeout >= 0:
        raise ValueError(f"timeout must be >= 0 seconds, got {timeout!r}")
    return float(timeout)


def read(target: Target) -> Progress | None:
    """The run's delivery now, or None when the journal cannot be read."""
    try:
        with Journal.peek(target.journal_file) as j:
            return progress(j, target.key)
    except Exception:
        return None


def delivered(p: Progress | None) -> bool:
    return p is not None and p.server_id is not None and p.pending == 0


def delivering(journal_file: Path) -> bool:
    """A plutosync holds the journal, or this process is starting one for it."""
    return autostart.daemon_pid(journal_file) is not None or autostart.starting(journal_file)


def held_past(p: Progress | None, deadline: float) -> bool:
    """Waiting longer cannot help: the daemon waits for a fix and a restart (a refused key, a
    wrong address), or said it tries again only after ``deadline`` (epoch s)."""
    if p is None or not p.last_error:
        return False
    return waits_for_restart(p.last_error) or (p.next_try is not None and p.next_try > deadline)


def until_delivered(targets: list[Target], timeout: float) -> list[tuple[Target, Progress | None]]:
    """Wait until every target is delivered, ``timeout`` seconds pass, no plutosync delivers
    those left, or the daemon's next try on each of them is after the timeout; returns those
    left with their progress (empty: all delivered)."""
    deadline = time.monotonic() + timeout
    wall_deadline = time.time() + timeout
    while True:
        left = [(t, p) for t in targets if not delivered(p := read(t))]
        if (not left or time.monotonic() >= deadline
                or not any(delivering(t.journal_file) for t, _ in left)
                or all(held_past(p, wall_deadline) for _, p in left)):
            return left
        time.sleep(POLL_S)


def report(left: list[tuple[Target, Progress | None]], timeout: float, how: str) -> None:
    """One line per run left after a wait, saying what is left and why (stderr)."""
    for t, p in left:
        what = f"{p.pending} events" if p is not None and p.pending else "its create"
        gone = daemon_exit.read(t.journal_file)
        if p is not None and p.last_error and waits_for_restart(p.last_error):
            why = f"not delivered: {p.last_error}"  # the daemon's words: what to fix
        elif not delivering(t.journal_file) and gone is not None:
            why = (f"not delivered: the plutosync this job started exited (exit {gone.code}): "
                   f"{gone.reason} — see {gone.log}")
        elif not delivering(t.journal_file):
            why = "no plutosync is delivering it, so there was nothing to wait for"
        else:
            why = f"not delivered after {timeout:g} s"
        logger.warning("pluto_offline: %s: run %s (id %s): %s; %s left", how, t.name, t.run_id,
                       why, what)


ended: list[Target] = []  # runs whose status this process journaled, for wait()


def wait(timeout: float) -> bool:
    """``pluto_offline.wait(timeout=S)``: wait, at most ``timeout`` seconds, until a live
    plutosync has delivered every run this process started: those it ended, and the open ones
    as logged so far (flushed first). Returns True when all are delivered; otherwise says per
    run what is left and why, and returns False. Returns at once when no plutosync is
    delivering them. Reads the journal only, never the network."""
    from pluto_offline import lifecycle

    timeout = check_timeout(timeout)
    targets = list(dict.fromkeys(ended))
    for run in list(lifecycle.ops):
        try:
            run.flush()
        except Exception:  # a journal that cannot be written: what it has is still delivered
            pass
        targets.append(Target(run.run_id, run.name, run._key, run._identity.path))
    left = until_delivered(targets, timeout)
    report(left, timeout, f"wait(timeout={timeout:g})")
    return not left
