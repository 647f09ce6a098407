"""How a process's end reaches its runs: atexit, uncaught exceptions, SIGTERM and SIGINT.

| how the process ends                 | status journaled                          |
|--------------------------------------|-------------------------------------------|
| ``finish()``, normal exit (atexit)   | COMPLETED (each run registers its atexit) |
| ``finish(code=n)``, n != 0           | FAILED ``{"exit_code": n}``               |
| uncaught exception                   | FAILED ``{"traceback", "exception"}``     |
| SIGTERM, SIGINT, KeyboardInterrupt   | TERMINATED ``{"signal": name}``           |
| SIGKILL                              | nothing; the spill is recovered later     |

The signal handler journals the status durably, then chains to the handler it replaced, so
the process dies as it would have (SIG_DFL: the signal is re-raised; Python's SIGINT
handler: KeyboardInterrupt). If the signal lands while this thread is inside a journal
transaction, the status is journaled right after that transaction ends.
"""

from __future__ import annotations

import signal
import sys
import threading
import traceback
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pluto_offline.run import Run

ops: list[Run] = []  # open runs, oldest first (``pluto_offline.ops``)
_lock = threading.Lock()
_installed = False
_previous: dict[int, Any] = {}
_previous_excepthook: Any = None
_deferred: list[int] = []


def register(run: Run) -> None:
    """Track an open run, and install the process hooks once (signals: main thread only)."""
    with _lock:
        ops.append(run)
    _install()


def forget(run: Run) -> None:
    with _lock:
        if run in ops:
            ops.remove(run)


def latest() -> Run | None:
    with _lock:
        return ops[-1] if ops else None


def _install() -> None:
    global _installed, _previous_excepthook
    with _lock:
        if _installed:
            return
        _installed = True
        _previous_excepthook = sys.excepthook
        sys.excepthook = _excepthook
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGTERM, signal.SIGINT):
        try:
            current = signal.getsignal(signum)
            if current is not _on_signal:
                _previous[signum] = current
                signal.signal(signum, _on_signal)
        except (ValueError, OSError):  # embedded interpreters
            pass


def _end_all(status: str, metadata: dict) -> None:
    for run in list(ops):
        run._end(status, metadata)


def _excepthook(tp: type[BaseException], value: BaseException, tb: Any) -> None:
    try:
        if issubclass(tp, KeyboardInterrupt):
            _end_all("TERMINATED", {"signal": "SIGINT"})
        else:
            text = "".join(traceback.format_exception(tp, value, tb))
            _end_all("FAILED", {"traceback": text, "exception": f"{tp.__name__}: {value}"})
    finally:
        (_previous_excepthook or sys.__excepthook__)(tp, value, tb)


def _on_signal(signum: int, frame: FrameType | None) -> None:
    me = threading.get_ident()
    if any(run.busy_thread == me for run in list(ops)):
        _deferred.append(signum)  # we interrupted our own transaction: finish it first
        return
    _terminate(signum, frame)


def after_fold() -> None:
    """Called when a fold ends: act on a signal that arrived during it."""
    if _deferred and threading.current_thread() is threading.main_thread():
        me = threading.get_ident()
        if not any(run.busy_thread == me for run in list(ops)):
            _terminate(_deferred.pop(0), None)


def _terminate(signum: int, frame: FrameType | None) -> None:
    _end_all("TERMINATED", {"signal": signal.Signals(signum).name})
    previous = _previous.get(signum, signal.SIG_DFL)
    if callable(previous):
        previous(signum, frame)
    elif previous == signal.SIG_IGN:
        return
    else:  # SIG_DFL (or a handler installed outside Python): die by the signal
        signal.signal(signum, signal.SIG_DFL)
        signal.raise_signal(signum)
