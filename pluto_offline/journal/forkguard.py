"""No SQLite transaction of this process is open across a ``fork()``.

A child process inherits SQLite's in-process lock bookkeeping but not the locks themselves:
if another thread (a stager, a writer thread) was inside a transaction when the process
forked, the child's own connections find the journal locked by a connection that will never
finish, and wait out their busy timeout (sqlite.org/howtocorrupt.html, 2.6: a connection must
not be carried across a fork). So every :meth:`~pluto_offline.journal.Journal.transaction`
holds :func:`lock`, and the SDK's fork hook (``pluto_offline/forking.py``) takes it before the
fork::

    held = forkguard.hold(timeout=30.0)   # before: no transaction open in any thread
    pid = os.fork()
    forkguard.release(held) if pid else forkguard.reset_in_child()

Uncontended in a process that never forks (plutosync): one lock per transaction.
"""

from __future__ import annotations

import threading

_lock = threading.RLock()


def lock() -> threading.RLock:
    """The lock a transaction holds (looked up each time: a child replaces it)."""
    return _lock


def hold(timeout: float) -> bool:
    """Wait (at most ``timeout`` seconds) until no transaction is open and keep others out;
    False if one stayed open that long (the fork goes ahead: the child may then find the
    journal locked and says so)."""
    return _lock.acquire(timeout=timeout)


def release(held: bool) -> None:
    """In the parent after the fork."""
    if held:
        _lock.release()


def reset_in_child() -> None:
    """In the child: a fresh lock (the copy is held by the thread that forked)."""
    global _lock
    _lock = threading.RLock()
