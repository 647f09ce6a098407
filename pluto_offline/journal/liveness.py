"""Whether a writer's process is alive, from the process itself: its pid and its start time.

A writer's spill file lock says it is alive as long as the file is there; a ``/tmp`` cleaner
(or a person) deleting spill files under a live job must not make it read as killed. So a
writer is also alive while its process runs: a process with its pid that **started before the
writer opened** (``writers.opened_at``; a pid reused by a later process does not count). The
start time is the kernel's (``/proc/PID/stat``, ticks since boot, placed on the wall clock with
the boot time of ``/proc/stat``).

A pid means something only in its PID namespace (a container's job is often PID 1, and the
host has a PID 1 of its own). So each writer records, when it registers, the kernel it runs on
and its PID namespace (``register``: the optional table ``writer_ns``: ``boot`` =
``/proc/sys/kernel/random/boot_id``, ``pid_ns`` = the inode of ``/proc/self/ns/pid``), and a
reader judges it by its process as follows:

- **same kernel, same PID namespace as the reader's** ``/proc``: the pid and start time;
- **same kernel, another PID namespace**: while its spill file is there, its spill lock alone
  decides (locked: alive; not locked: dead, recovered and reported killed). Once the file is
  gone (deleted under it), the reader looks for the process in its own ``/proc``, where a
  reader in an ancestor namespace (the host's plutosync beside a container's job) sees it
  under another pid: the one whose namespace is the writer's and whose pid there
  (``NSpid``) is the writer's, started before the writer opened, is the writer. Not finding
  it proves the writer dead only where the reader sees every process of the machine: a
  ``/proc`` of the initial PID namespace, without ``hidepid``, every process readable. A
  reader that cannot see the writer's namespace (a daemon in a sibling container, not
  sharing the job's process namespace) has no evidence either way, and **does not declare
  the writer dead**: it reads as running until a reader that can see its namespace (the
  host's plutosync, one in the job's PID namespace) finds it gone, and the server's reaper
  ends the run there meanwhile. A live job must never be reported killed; a dead one is
  reported late, by the reader that can tell;
- **another kernel** (the boot id differs: another machine sharing the journal, or this one
  before a reboot): its spill lock alone decides, and its file gone reads as dead, as before;
- **no identity recorded** (a writer of an older version, or one registered with a pid and
  host not its own): as before, the pid and start time when ``writers.host`` is this host's
  name, whatever the namespaces;
- **no** ``/proc`` (macOS): nothing is recorded, and the spill lock alone decides.

The table is optional (``CREATE TABLE IF NOT EXISTS`` by the first writer that registers, as
``dropped``): no schema version is needed, an older version ignores it, and a journal without
it (an older one, or one opened read-only) reads as writers without identity. A wall clock
stepped forward by more than ``SLACK_S`` between a job's start and its ``init()`` hides its
process from these checks.

    alive = running_writers(j)   # ids of open writers whose process runs (as seen from here)
"""

from __future__ import annotations

import os
from functools import cache
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from pluto_offline.journal.store import Journal

SLACK_S = 2.0  # /proc/stat's boot time is whole seconds; the rest is rounding
INIT_PID_NS = 0xEFFFFFFC  # the initial PID namespace's inode on every Linux (PROC_PID_INIT_INO)
TABLE = "writer_ns"


class Identity(NamedTuple):
    """The kernel a process runs on and its PID namespace."""

    boot: str
    pid_ns: int


def identity() -> Identity | None:
    """The calling process's :class:`Identity`, or None where there is no ``/proc`` to tell."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as fh:
            boot = fh.read().strip()
        pid_ns = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None
    return Identity(boot, pid_ns) if boot else None


def register(j: Journal, writer_id: str, pid: int, host: str) -> None:
    """Record the identity of the calling process for its writer ``writer_id`` (``add_writer``,
    inside its transaction). Only a process registering itself has one to record."""
    me = identity()
    if me is None or pid != os.getpid() or host != os.uname().nodename:
        return
    j.conn.execute(
        f"CREATE TABLE IF NOT EXISTS {TABLE} ("
        " writer TEXT PRIMARY KEY,"   # writers.id
        " boot   TEXT NOT NULL,"      # the kernel's boot id
        " pid_ns INTEGER NOT NULL)")  # the inode of the writer's /proc/self/ns/pid
    j.conn.execute(f"INSERT OR REPLACE INTO {TABLE} (writer, boot, pid_ns) VALUES (?, ?, ?)",
                   (writer_id, me.boot, me.pid_ns))


def running_writers(j: Journal) -> set[str]:
    """Ids of writers not ended whose process runs, as far as this reader can tell (see the
    module docstring: a writer it cannot judge by its process is left to its spill lock, or
    counted alive when it has no spill file and its process may run out of sight)."""
    from pluto_offline.journal.store import SPILL_SUFFIX

    host = os.uname().nodename
    me = identity()
    proc_ns = _proc_ns()
    has_table = j.conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (TABLE,)).fetchone()
    ident = "n.boot, n.pid_ns" if has_table else "NULL, NULL"
    join = f"LEFT JOIN {TABLE} n ON n.writer = w.id " if has_table else ""
    rows = j.conn.execute(
        f"SELECT w.id, w.pid, w.host, w.opened_at, {ident} FROM writers w {join}"
        "WHERE w.ended_at IS NULL").fetchall()
    alive: set[str] = set()
    unseen: list[_Wanted] = []
    for w, pid, w_host, opened_ms, boot, pid_ns in rows:
        when = opened_ms / 1000
        if boot is None:  # no identity: as before
            if w_host == host and process_started_by(pid, when):
                alive.add(w)
        elif me is None or boot != me.boot:
            continue  # another kernel: its spill lock only
        elif pid_ns == proc_ns:
            if process_started_by(pid, when):
                alive.add(w)
        elif not (j.spill_dir / f"{w}{SPILL_SUFFIX}").exists():
            unseen.append(_Wanted(w, pid_ns, pid, when))
        # else: another namespace with its spill file there: the spill lock decides
    if unseen:
        alive |= _found_or_unknown(unseen, proc_ns)
    return alive


class _Wanted(NamedTuple):
    writer: str
    pid_ns: int
    pid: int  # in its namespace
    opened: float


def _found_or_unknown(wanted: list[_Wanted], proc_ns: int | None) -> set[str]:
    """Of writers in PID namespaces other than this ``/proc``'s, those whose process this
    ``/proc`` shows (a reader in an ancestor namespace) or that it cannot rule out."""
    by_pid: dict[int, list[_Wanted]] = {}
    for w in wanted:
        by_pid.setdefault(w.pid, []).append(w)
    found: set[str] = set()
    unsure: set[str] = set()
    sees_all = proc_ns == INIT_PID_NS and not _hidepid()
    try:
        entries = os.listdir("/proc")
    except OSError:
        return {w.writer for w in wanted}
    for name in entries:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status", "rb") as fh:
                nspid = next((line.split()[1:] for line in fh if line.startswith(b"NSpid:")), None)
        except (FileNotFoundError, ProcessLookupError):
            continue  # ended meanwhile
        except OSError:
            sees_all = False  # a process this reader cannot read may be the writer
            continue
        if not nspid:
            sees_all = False  # a kernel older than 4.1: no NSpid to tell
            continue
        for w in by_pid.get(int(nspid[-1]), ()):
            if len(nspid) == 1 and proc_ns is not None:
                continue  # a process of this /proc's own namespace, which is not the writer's
            try:
                ns = os.stat(f"/proc/{name}/ns/pid").st_ino
            except (FileNotFoundError, ProcessLookupError):
                continue
            except OSError:
                unsure.add(w.writer)  # another user's process: it may be this writer
                continue
            if ns == w.pid_ns and process_started_by(int(name), w.opened):
                found.add(w.writer)
    if not sees_all:
        return {w.writer for w in wanted}  # no evidence either way: not declared dead
    return found | unsure


def _proc_ns() -> int | None:
    """The PID namespace of the ``/proc`` this process reads (its pids are that namespace's):
    that of its PID 1, or when that cannot be read (another user's), this process's own when
    ``/proc`` shows it under a single pid. None if neither tells."""
    try:
        return os.stat("/proc/1/ns/pid").st_ino
    except OSError:
        pass
    try:
        with open("/proc/self/status", "rb") as fh:
            nspid = next((line.split()[1:] for line in fh if line.startswith(b"NSpid:")), None)
        if nspid is not None and len(nspid) == 1:
            return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        pass
    return None


def _hidepid() -> bool:
    """Whether ``/proc`` is mounted with ``hidepid`` (other users' processes hidden)."""
    opts: list[str] = []
    try:
        with open("/proc/self/mountinfo") as fh:
            for line in fh:  # the last mount on /proc is the one seen
                fields = line.split()
                if len(fields) > 4 and fields[4] == "/proc":
                    opts = line.split(" - ", 1)[-1].split()[-1].split(",")
    except OSError:
        pass
    return any(o.startswith("hidepid=") and o not in ("hidepid=0", "hidepid=off") for o in opts)


def process_started_by(pid: int, when: float) -> bool:
    """Whether a live (not zombie) process ``pid`` runs that started by wall time ``when``."""
    started = process_start(pid)
    return started is not None and started <= when + SLACK_S


def process_start(pid: int) -> float | None:
    """The wall time (epoch seconds) process ``pid`` started, or None: no such process, a
    zombie, or no ``/proc`` to tell."""
    try:
        with open(f"/proc/{int(pid)}/stat", "rb") as fh:
            stat = fh.read().decode("ascii", "replace")
    except (OSError, ValueError):
        return None
    fields = stat[stat.rfind(")") + 2:].split()  # the name may hold spaces and parentheses
    if len(fields) < 20 or fields[0] in ("Z", "X"):
        return None
    boot = _boot_time()
    if boot is None:
        return None
    return boot + int(fields[19]) / _ticks()


def _boot_time() -> float | None:
    try:
        with open("/proc/stat", "rb") as fh:
            for line in fh:
                if line.startswith(b"btime "):
                    return float(line.split()[1])
    except OSError:
        pass
    return None


@cache
def _ticks() -> int:
    return os.sysconf("SC_CLK_TCK")
