"""What the oracle reads besides the server's answers: a journal's backlog after the drain
(read-only), and the string rows of the local server's own database."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def journal_backlog(journal_dir: Path) -> dict[str, Any]:
    """Pending events per run, runs whose final state is still to be re-asserted (due time),
    rejected events, and unfolded spill files, read-only."""
    from pluto_offline import journal as J
    from pluto_offline.journal import filerows, history, staged
    from pluto_offline.spill import SUFFIX

    j = J.Journal.open(journal_dir, readonly=True)
    try:
        spills = len(list(j.spill_dir.glob(f"*{SUFFIX}")))
        pending: dict[str, int] = {}
        for row in J.runs_with_pending(j):
            pending[row.run_id] = len(J.pending_events(j, row.key, after=row.acked_seq,
                                                       limit=1_000_000))
        reasserts = {row.run_id: row.reassert_due for row in J.runs_to_reassert(j)}
        rejected: dict[str, list] = {}
        conflicts: dict[str, str] = {}
        resent: dict[str, int] = {}
        keys = {row.key: row.run_id for row in J.all_runs(j)}
        files = {keys.get(k, str(k)): fc for k, fc in filerows.counts(j).items()}
        lost_files = [(keys.get(f["run"], str(f["run"])), f["file_name"], f["reason"])
                      for f in filerows.lost_files(j)]
        inbox = staged.incoming_dir(j.dir)
        journaled = {n for (n,) in j.conn.execute(
            "SELECT json_extract(source, '$.incoming') FROM files")} if files else set()
        incoming = sum(p.is_file() and p.name not in journaled
                       for p in inbox.glob("*.in")) if inbox.is_dir() else 0
        for row in J.all_runs(j):
            n = history.resent(j, row.key)
            if n:
                resent[row.run_id] = n
            rej = J.rejected_events(j, row.key)
            if rej:
                rejected[row.run_id] = [(r.get("kind"), r.get("reason")) for r in rej]
            if row.conflict:
                conflicts[row.run_id] = row.conflict
    finally:
        j.close()
    return {"pending": pending, "reasserts": reasserts, "rejected": rejected, "spills": spills,
            "conflicts": conflicts, "resent": resent, "incoming": incoming,
            "files_pending": {r: fc.pending for r, fc in files.items() if fc.pending},
            "files_rejected": {r: fc.rejected for r, fc in files.items() if fc.rejected},
            "files_resent": {r: fc.resent for r, fc in files.items() if fc.resent},
            "lost_files": lost_files}


def server_strings(server: Any, sid: int) -> list[tuple[str, int, str]]:
    """The string-series rows the server stored for a run, one per row, duplicates kept.

    The server has no read endpoint for data records: read its SQLite file (read-only)."""
    reader = getattr(server, "data_rows", None)
    if reader is not None:
        return list(reader(sid))
    import json
    import sqlite3

    path = Path(server.data_dir) / "pluto-server.db"
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        rows = conn.execute("SELECT log_name, step, data FROM data WHERE run_id = ? AND "
                            "log_name NOT LIKE 'hist/%'", (sid,)).fetchall()
    finally:
        conn.close()
    out = []
    for name, step, data in rows:
        if isinstance(data, str) and data.startswith('"'):
            try:
                data = json.loads(data)
            except ValueError:
                pass
        out.append((name, int(step), data))
    return out
