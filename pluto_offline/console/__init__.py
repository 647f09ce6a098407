"""Console capture: the job's stdout and stderr lines journaled for its run (issue 10).

On by default, as in the stock SDK; off with ``settings={"disable_console": True}`` (the stock
setting's name) or ``PLUTO_DISABLE_CONSOLE=1``. Secret shapes are redacted unless
``settings={"sanitize_logs": False}`` or ``PLUTO_SANITIZE_LOGS=0`` (stock names); the API
key's own value always is.

One capture per process: it belongs to the first run opened while none is held, and ends
(journaled, fds restored) when that run ends; a run opened after that takes it again. Lines
of processes forked or spawned by the job go through the same fds, so they are the run's too.
How: ``capture.py`` (the job's side), ``helper.py`` (the process that outlives the job),
``lines.py`` (what a line is), ``redact.py`` (secrets), ``sink.py`` (the journal).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from pluto_offline import lifecycle
from pluto_offline.console.capture import Capture

_OFF = ("0", "false", "no", "off")
_lock = threading.Lock()
_active: Capture | None = None
_owner: Any = None  # the run the capture journals for


def enabled(settings: dict | None) -> bool:
    """Whether console capture is on: the setting wins over ``PLUTO_DISABLE_CONSOLE``."""
    settings = settings or {}
    if "disable_console" in settings:
        return not settings["disable_console"]
    return os.environ.get("PLUTO_DISABLE_CONSOLE", "").strip().lower() in ("", *_OFF)


def sanitizing(settings: dict | None) -> bool:
    """Whether the stock token shapes are redacted (the API key always is)."""
    return _shapes(settings)


def _shapes(settings: dict | None) -> bool:
    settings = settings or {}
    if "sanitize_logs" in settings:
        return bool(settings["sanitize_logs"])
    return os.environ.get("PLUTO_SANITIZE_LOGS", "1").strip().lower() not in _OFF


def attach(run: Any, journal: Path, settings: dict | None) -> None:
    """Capture this process's console for ``run`` if it is on and nothing captures it yet."""
    global _active, _owner
    if not enabled(settings):
        return
    with _lock:
        if _active is not None:
            return  # another run holds it (or, in a forked child, the parent's run does)
        rank = os.environ.get("RANK")
        cap = Capture.start(str(journal), run._key, run._run_id, shapes=_shapes(settings),
                            prefix=f"[rank{rank}] " if rank is not None else "")
        if cap is None:
            return
        _active, _owner = cap, run
        if detach not in lifecycle.on_forget:
            lifecycle.on_forget.append(detach)
            lifecycle.on_ending.append(_before_end)


def _before_end() -> None:
    """A run's end begins: the lines written so far are journaled before its end is (so a
    run's status stays its last event)."""
    cap = _active
    if cap is not None and cap.pid == os.getpid():
        cap.flush()


def detach(run: Any) -> None:
    """At ``run``'s end: if it holds the capture, journal the last lines and let go."""
    global _active, _owner
    with _lock:
        cap = _active
        if cap is None or _owner is not run or cap.pid != os.getpid():
            return
        _active = _owner = None
    cap.stop()


def active() -> Capture | None:
    """The capture of this process, if one is running (for tests and diagnostics)."""
    return _active
