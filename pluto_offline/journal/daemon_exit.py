"""Why the plutosync a job started exited at once: a note beside the journal (issue 12 item 3).

An autostarted daemon that cannot start (a bad setting, a missing dependency, another user's
journal) used to die silently, its reason only in ``plutosync.log``. The job that started it
sees it exit (``autostart``) and leaves the reason here, for the job's end-of-run line
(``whereabouts``) and ``plutosync status`` to show::

    write(journal_file, pid=123, code=2, reason="plutosync run: PLUTOSYNC_TIMEOUT=...")
    read(journal_file)    # DaemonExit(pid=123, code=2, at=..., reason=..., log=...) or None
    clear(journal_file)   # a later daemon started fine

File: ``<journal file>.plutosync-exit``, JSON, 0600. Read-only readers never write it.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import NamedTuple

SUFFIX = ".plutosync-exit"


class DaemonExit(NamedTuple):
    pid: int
    code: int
    at: float  # epoch seconds
    reason: str  # the daemon's last line of output: its error
    log: str  # where the rest is


def path(journal_file: Path) -> Path:
    return journal_file.with_name(journal_file.name + SUFFIX)


def write(journal_file: Path, *, pid: int, code: int, reason: str, log: Path) -> None:
    """Record a daemon's exit (written to a temporary name, then renamed: never half read)."""
    target = path(journal_file)
    tmp = target.with_name(target.name + f".{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"pid": pid, "code": code, "at": time.time(), "reason": reason,
                   "log": str(log)}, fh)
    os.replace(tmp, target)


def read(journal_file: Path) -> DaemonExit | None:
    """The recorded exit, or None (none, or unreadable)."""
    try:
        d = json.loads(path(journal_file).read_text())
        return DaemonExit(int(d["pid"]), int(d["code"]), float(d["at"]), str(d["reason"]),
                          str(d["log"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def clear(journal_file: Path) -> None:
    try:
        path(journal_file).unlink()
    except OSError:
        pass
