"""How far plutosync has delivered one run, read from the journal (the SDK never asks the
network): for the job's end-of-run line (``whereabouts``) and ``finish(timeout=...)``::

    p = progress(j, run_key)
    p.url, p.pending, p.last_error     # 'http://.../MMP-2', 0, None
"""

from __future__ import annotations

from typing import NamedTuple

from pluto_offline.journal.store import Journal


class Progress(NamedTuple):
    server_id: int | None
    display_id: str | None
    url: str | None
    pending: int  # the run's events the server has not acknowledged yet
    last_error: str | None  # the daemon's last failed try, cleared by its next success
    next_try: float | None = None  # when the daemon tries again after it (epoch s), if it said


def progress(j: Journal, run: int) -> Progress:
    """The run's delivery as the daemon recorded it (nothing yet: no ids, all pending)."""
    row = j.conn.execute(
        "SELECT d.server_id, d.display_id, d.url, d.last_error, d.next_try, "
        "coalesce(d.acked_seq, 0), "
        "(SELECT count(*) FROM events e WHERE e.run = r.key AND e.seq > coalesce(d.acked_seq, 0))"
        " FROM runs r LEFT JOIN delivery d ON d.run = r.key WHERE r.key = ?", (run,)).fetchone()
    if row is None:
        return Progress(None, None, None, 0, None)
    server_id, display_id, url, last_error, next_try, _acked, pending = row
    return Progress(server_id, display_id, url, pending, last_error, next_try)
