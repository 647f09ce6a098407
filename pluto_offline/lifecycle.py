"""How a process's end reaches its runs: atexit, uncaught exceptions, SIGTERM, SIGINT, SIGHUP.

| how the process ends                 | status journaled                          |
|--------------------------------------|-------------------------------------------|
| ``finish()``, normal exit (atexit)   | COMPLETED (each run registers its atexit) |
| ``finish(code=n)``, n != 0           | FAILED ``{"exit_code": n}``               |
| uncaught exception                   | FAILED ``{"traceback", "exception"}``     |
| SIGTERM, SIGHUP, SIGINT, uncaught KeyboardInterrupt | TERMINATED ``{"signal": name}`` |
| SIGKILL                              | nothing; the spill is recovered later     |

The handlers are installed at the first ``init()`` made on the main thread (Python allows it
nowhere else; an ``init()`` on another thread before that warns once), never over a signal
that is ignored (``nohup``). A handler journals the status durably, then chains to the handler
it replaced, so the process dies as it would have: SIG_DFL re-raises the signal, and if that
does not kill it (PID 1 in a container, where a signal's default action is ignored) the process
exits ``128 + signum``, never training on with its runs ended. A handler of the user's is called
first: if it lets the process go on (a graceful-stop flag), the runs stay open. Python's SIGINT
handler raises ``KeyboardInterrupt``, which ends the runs only if nothing catches it.

In an interactive session (``python -i``, the REPL, IPython, Jupyter: :mod:`interactive`), an
exception or ``KeyboardInterrupt`` at the prompt ends nothing: ``finish()`` or the interpreter's
exit decides. If a signal lands while this thread is inside a journal transaction, the status is
journaled right after that transaction ends.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from types import FrameType
from typing import TYPE_CHECKING, Any

from pluto_offline.interactive import interactive

if TYPE_CHECKING:
    from pluto_offline.run import Run

logger = logging.getLogger("pluto_offline")
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
ops: list[Run] = []  # open runs, oldest first (``pluto_offline.ops``)
_lock = threading.Lock()
_hooked = False  # sys.excepthook
_signals_installed = False
_warned_thread = False
_told_interactive = False
_previous: dict[int, Any] = {}
_previous_excepthook: Any = None
_deferred: list[int] = []
_ending: dict[int, int] = {}  # thread ident -> how many run ends it is inside
# called with each run that ended (after its end is journaled): console capture lets go
on_forget: list[Callable[[Run], None]] = []
# called as a run's end begins, before it is journaled: console lines written so far go first
on_ending: list[Callable[[], None]] = []


def register(run: Run) -> None:
    """Track an open run, and install the process hooks (signals: from the main thread)."""
    with _lock:
        ops.append(run)
    _install()


def forget(run: Run) -> None:
    with _lock:
        if run in ops:
            ops.remove(run)
    for hook in list(on_forget):
        hook(run)


def latest() -> Run | None:
    with _lock:
        return ops[-1] if ops else None


def after_fork_in_child() -> None:
    """In a forked child: locks that another thread of the parent may have held are replaced."""
    global _lock
    _lock = threading.Lock()
    _deferred.clear()
    _ending.clear()


def _install() -> None:
    global _hooked, _previous_excepthook, _signals_installed, _warned_thread
    with _lock:
        if not _hooked:
            _hooked = True
            _previous_excepthook = sys.excepthook
            sys.excepthook = _excepthook
        if _signals_installed:
            return
        if threading.current_thread() is not threading.main_thread():
            if not _warned_thread:
                _warned_thread = True
                logger.warning(
                    "pluto_offline: init() called outside the main thread, where Python cannot "
                    "install signal handlers: until an init() on the main thread, a run ended by "
                    "SIGTERM, SIGINT or SIGHUP is not journaled TERMINATED (it is found dead "
                    "later and reported FAILED killed)")
            return
        _signals_installed = True
    for signum in SIGNALS:
        try:
            current = signal.getsignal(signum)
            if current is _on_signal or current == signal.SIG_IGN:
                continue  # ignored on purpose (nohup): the process does not end by it
            _previous[signum] = current
            signal.signal(signum, _on_signal)
        except (ValueError, OSError):  # embedded interpreters
            pass


def _end_all(status: str, metadata: dict) -> None:
    for run in list(ops):
        run._end(status, metadata)


def _excepthook(tp: type[BaseException], value: BaseException, tb: Any) -> None:
    try:
        if interactive():
            _tell_interactive(tp)
        elif issubclass(tp, KeyboardInterrupt):
            _end_all("TERMINATED", {"signal": "SIGINT"})
        else:
            text = "".join(traceback.format_exception(tp, value, tb))
            _end_all("FAILED", {"traceback": text, "exception": f"{tp.__name__}: {value}"})
    finally:
        (_previous_excepthook or sys.__excepthook__)(tp, value, tb)


def _tell_interactive(tp: type[BaseException]) -> None:
    global _told_interactive
    if ops and not _told_interactive:
        _told_interactive = True
        logger.warning(
            "pluto_offline: interactive session: a %s does not end the open run(s) %s; "
            "run.finish() (or finish(code=1)) ends a run, and exiting the interpreter "
            "completes it", tp.__name__, ", ".join(r.run_id for r in list(ops)))


@contextlib.contextmanager
def ending() -> Iterator[None]:
    """Around a run's end: a signal landing meanwhile (a Pool worker's finalizer ending its
    writer when ``terminate()`` sends SIGTERM) waits for it, rather than kill it half done."""
    me = threading.get_ident()
    _ending[me] = _ending.get(me, 0) + 1
    try:
        if _ending[me] == 1:
            for hook in list(on_ending):
                hook()
        yield
    finally:
        if _ending[me] == 1:
            del _ending[me]
        else:
            _ending[me] -= 1
    after_fold()


def _busy(me: int) -> bool:
    return me in _ending or any(run.busy_thread == me for run in list(ops))


def _on_signal(signum: int, frame: FrameType | None) -> None:
    # a KeyboardInterrupt raised through here is the user's: IPython and pytest leave these
    # frames out of the traceback they show
    __tracebackhide__ = True  # noqa: F841
    if _busy(threading.get_ident()):
        _deferred.append(signum)  # we interrupted our own transaction: finish it first
        return
    _terminate(signum, frame)


def after_fold() -> None:
    """Called when a fold or an end is done: act on a signal that arrived during it."""
    if _deferred and threading.current_thread() is threading.main_thread():
        if not _busy(threading.get_ident()):
            _terminate(_deferred.pop(0), None)


def _terminate(signum: int, frame: FrameType | None) -> None:
    __tracebackhide__ = True  # noqa: F841 (see _on_signal)
    metadata = {"signal": signal.Signals(signum).name}
    previous = _previous.get(signum, signal.SIG_DFL)
    if callable(previous):
        # the user's (or Python's SIGINT) handler first: if it lets the process go on, the
        # runs stay open; if it raises (SystemExit), they end TERMINATED. A KeyboardInterrupt
        # ends them only if nothing catches it (the excepthook), and not at a prompt.
        try:
            previous(signum, frame)
        except KeyboardInterrupt:
            raise
        except BaseException:
            _end_all("TERMINATED", metadata)
            raise
        return
    if previous == signal.SIG_IGN:  # cannot happen: never installed over SIG_IGN
        return
    if signum == signal.SIGINT and interactive():
        return  # a prompt goes on after Ctrl-C: so do the runs
    _end_all("TERMINATED", metadata)
    # SIG_DFL (or a handler installed outside Python): die by the signal
    signal.signal(signum, signal.SIG_DFL)
    signal.raise_signal(signum)
    # still alive: the default action did not kill us (PID 1 in a container): exit as a
    # shell reports a death by that signal, rather than train on with every run ended
    os._exit(128 + signum)
