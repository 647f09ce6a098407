"""Start a detached ``plutosync run`` from ``init()``, as the stock SDK starts its uploader.

When a server is configured (``PLUTO_API_KEY`` and a ``PLUTO_URL_*``), autostart is not turned
off (``PLUTO_OFFLINE_AUTOSTART=0`` or ``init(settings={"autostart": False})``), plutosync is
installed, and no daemon holds the journal's lock, ``init()`` spawns::

    python -m syncd run --dir JOURNAL --exit-when-idle

in its own session (it outlives a Ctrl-C of the job's terminal), with its output appended to
``plutosync.log`` (0600) beside the journal. It exits once everything is delivered and no job
writes the journal. The key reaches it through the inherited environment, never its command
line (which every user of the machine can read in /proc).

Rules for this module: cheap, never raises into ``init()``, never touches the network, and never
imports ``syncd`` (the SDK installs without it). The lock probe mirrors ``syncd/lock.py``:
``<journal file>.lock``, held with an exclusive ``flock`` by the delivering daemon.
"""

from __future__ import annotations

import fcntl
import importlib.util
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pluto_offline.journal import daemon_exit

log = logging.getLogger("pluto_offline")

ENV_SWITCH = "PLUTO_OFFLINE_AUTOSTART"
LOG_FILE = "plutosync.log"
GATE_SUFFIX = ".autostart"
GATE_TIMEOUT_S = 15.0
_URL_VARS = ("PLUTO_URL_API", "PLUTO_URL_INGEST", "PLUTO_URL_PY", "PLUTO_URL_APP",
             "MLOP_URL_API", "MLOP_URL_INGEST", "MLOP_URL_PY", "MLOP_URL_APP")
_OFF = {"0", "false", "no", "off"}
_warned: set[str] = set()
_starting: dict[Path, subprocess.Popen] = {}  # daemons this process spawned, until they lock


def starting(file: Path) -> bool:
    """Whether this process spawned a daemon for ``file`` that has not taken its lock yet."""
    proc = _starting.get(file)
    return proc is not None and proc.poll() is None


def enabled(settings: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None) -> bool:
    """Whether autostart is wanted: on by default; the env var or the init setting turn it off."""
    env = os.environ if env is None else env
    if env.get(ENV_SWITCH, "").strip().lower() in _OFF:
        return False
    value = (settings or {}).get("autostart", True)
    if isinstance(value, str):
        return value.strip().lower() not in _OFF
    return bool(value)


def server_configured(env: Mapping[str, str] | None = None) -> bool:
    """A key and at least one server URL: the daemon knows where to deliver."""
    env = os.environ if env is None else env
    key = env.get("PLUTO_API_KEY") or env.get("MLOP_API_KEY")
    return bool(key) and any(env.get(v) for v in _URL_VARS)


def journal_file(journal_path: str | os.PathLike[str]) -> Path:
    """The journal file for a directory or a ``.db`` path (as ``journal.resolve_path``)."""
    from pluto_offline.journal import resolve_path

    return resolve_path(journal_path)


def daemon_running(file: Path) -> bool:
    """Whether a plutosync holds the journal's lock (a shared probe, as ``syncd.lock.holder``)."""
    return daemon_pid(file) is not None


def daemon_pid(file: Path) -> int | None:
    """The pid of the plutosync holding the journal's lock (-1 if it wrote none yet), or None.

    The lock file holds the holder's pid (``syncd/lock.py``)."""
    try:
        fd = os.open(file.with_name(file.name + ".lock"), os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            return int(os.pread(fd, 32, 0).decode().strip() or -1)
        except (OSError, ValueError):
            return -1
    finally:
        os.close(fd)  # also drops our probe lock
    return None


def _maybe_start_daemon(
    journal_path: str | os.PathLike[str], settings: Mapping[str, Any] | None = None
) -> int | None:
    """Spawn a detached daemon for the journal if wanted and none runs; its pid, else None.

    ``journal_path``: the journal directory or its ``.db`` file. Never raises: a failure to
    spawn is a warning, the job goes on and the journal keeps everything for a later plutosync.
    """
    try:
        if not enabled(settings) or not server_configured():
            return None
        file = journal_file(journal_path)
        if daemon_running(file):
            return None
        if importlib.util.find_spec("syncd") is None:
            _warn_once("missing", "pluto_offline: a Pluto server is configured but plutosync is "
                       "not installed (it comes with pluto-offline: reinstall it); runs stay in the "
                       f"journal {file} until a plutosync delivers them")
            return None
        gate = _take_gate(file)
        if gate is None:
            return None  # another process (or run) is starting one right now
        try:
            if daemon_running(file):  # started while we took the gate
                os.close(gate)
                return None
            proc, log_at = _spawn(file)
            _starting[file] = proc
        except BaseException:
            os.close(gate)
            raise
        threading.Thread(target=_watch, args=(proc, file, gate, log_at),
                         name="plutosync-autostart", daemon=True).start()
        return proc.pid
    except Exception as exc:  # never break init() over delivery
        _warn_once("spawn", f"pluto_offline: could not start plutosync ({exc}); runs stay in "
                   "the journal until a plutosync delivers them")
        return None


def _take_gate(file: Path) -> int | None:
    """The spawn gate: one starter at a time per journal, across ranks and runs of a process.

    Held from just before the spawn until the new daemon holds the journal lock, so that the
    ranks of a job calling init() at once start one daemon, not one each.
    """
    fd = os.open(file.with_name(file.name + GATE_SUFFIX), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _watch(proc: subprocess.Popen, file: Path, gate: int, log_at: int) -> None:
    """Open the gate once the daemon holds the lock (or gave up), then reap it when it exits.

    A daemon that exits with an error leaves its reason beside the journal
    (``journal.daemon_exit``: its last line of output), for the job's end-of-run line and
    ``plutosync status``; one that started fine clears an older reason."""
    try:
        deadline = time.monotonic() + GATE_TIMEOUT_S
        while proc.poll() is None and not daemon_running(file) and time.monotonic() < deadline:
            time.sleep(0.05)
        if proc.poll() is None and daemon_running(file):
            daemon_exit.clear(file)
    finally:
        _starting.pop(file, None)
        os.close(gate)
    code = proc.wait()  # no zombie left behind in a long job
    noted = daemon_exit.read(file)
    if code != 0 and (noted is None or noted.pid != proc.pid):  # (one that gave up noted why)
        log = file.parent / LOG_FILE
        try:
            daemon_exit.write(file, pid=proc.pid, code=code, reason=_last_line(log, log_at),
                              log=log)
        except OSError as exc:  # (the job's end-of-run line then just says none runs)
            _warn_once("exit", f"pluto_offline: plutosync (pid {proc.pid}) exited (code "
                       f"{code}) and its reason could not be noted beside the journal: {exc}")


def _last_line(log: Path, since: int) -> str:
    """The daemon's last non-empty line of output after offset ``since`` (its error)."""
    try:
        with open(log, "rb") as fh:
            fh.seek(since)
            tail = fh.read()[-8192:].decode(errors="replace")
    except OSError:
        return "(no output)"
    lines = [ln.strip() for ln in tail.splitlines() if ln.strip()]
    return lines[-1][:500] if lines else "(no output)"


def _spawn(file: Path) -> tuple[subprocess.Popen, int]:
    """The daemon's process, and the size of ``plutosync.log`` before it wrote anything."""
    logfd = os.open(file.parent / LOG_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    log_at = os.fstat(logfd).st_size
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "syncd", "run", "--dir", str(file), "--exit-when-idle"],
            stdin=subprocess.DEVNULL, stdout=logfd, stderr=logfd, close_fds=True,
            start_new_session=True,  # its own session: a Ctrl-C or hangup of the job spares it
        )
    finally:
        os.close(logfd)
    log.info("pluto_offline: started plutosync (pid %d) for %s; log: %s", proc.pid, file,
             file.parent / LOG_FILE)
    return proc, log_at


def _warn_once(what: str, message: str) -> None:
    if what not in _warned:
        _warned.add(what)
        log.warning(message)
