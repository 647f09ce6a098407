"""Where a run went, in one line at its end (issue 12 item 3), like the stock SDK's
``View run MMP-2 at URL``; read from local state only, never blocking, never the network::

    pluto_offline: View run MMP-2 at http://.../MMP-2
    pluto_offline: run baseline (id r1) is journaled in /data/pluto/journal.db; plutosync pid 4242 is delivering it
    pluto_offline: run baseline (id r1) is journaled in ...; not delivered: the server refused the API key (HTTP 401: ...) — see `plutosync status`
    pluto_offline: run baseline (id r1) is journaled in ...; not delivered: the plutosync this job started exited at once (exit 2): plutosync run: ... — see .../plutosync.log
    pluto_offline: run baseline (id r1) is journaled in ...; no plutosync is running: run `plutosync push /data/pluto/journal.db`

The sources: the journal's delivery table (ids, url, pending events, the daemon's last error),
the daemon's lock (its pid), and the note an autostarted daemon's exit left
(``journal.daemon_exit``). Printed to stderr, once per run end; a failure to read any of them
prints what is known and never raises.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pluto_offline import autostart
from pluto_offline.journal import Journal, daemon_exit
from pluto_offline.journal.progress import Progress, progress


def describe(run_id: str, name: str, key: int, journal_file: Path) -> str:
    """The line for a run (see the module's docstring)."""
    try:
        with Journal.peek(journal_file) as j:
            p = progress(j, key)
    except Exception:  # unreadable now (removed, full, locked): say where it was written
        p = Progress(None, None, None, 1, None)
    pid = autostart.daemon_pid(journal_file)
    who = f"plutosync pid {pid}" if pid and pid > 0 else "a plutosync"
    if not pid and autostart.starting(journal_file):  # spawned, not holding its lock yet
        pid, who = -1, "the plutosync this job started"
    if p.url:
        shown = f"View run {p.display_id} at {p.url}" if p.display_id else f"View run at {p.url}"
        if not p.pending:
            return f"pluto_offline: {shown}"
        if pid:
            return f"pluto_offline: {shown} ({who} is delivering the rest)"
        return (f"pluto_offline: {shown} (not all delivered: no plutosync is running: run "
                f"`plutosync push {journal_file}`)")
    where = f"pluto_offline: run {name} (id {run_id}) is journaled in {journal_file}"
    if p.last_error:
        return f"{where}; not delivered: {p.last_error} — see `plutosync status`"
    if pid:
        return f"{where}; {who} is delivering it"
    gone = daemon_exit.read(journal_file)
    if gone is not None:
        how = "gave up and exited" if gone.reason.startswith("gave up") else "exited at once"
        return (f"{where}; not delivered: the plutosync this job started {how} (exit "
                f"{gone.code}): {gone.reason} — see {gone.log}")
    return f"{where}; no plutosync is running: run `plutosync push {journal_file}`"


def tell(run_id: str, name: str, key: int, journal_file: Path) -> None:
    """Print the line to stderr; never raises (also from a signal handler)."""
    try:
        print(describe(run_id, name, key, journal_file), file=sys.stderr, flush=True)
    except Exception:
        pass
