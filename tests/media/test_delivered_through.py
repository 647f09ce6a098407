"""``filesDelivered``: what the run's ledger may call delivered, read while a writer folds new
files in (chaos seed 1117: two files a job logged mid-delivery were marked delivered by the
daemon's own note and never sent).

The interleaving is made for real: SQLite calls a progress handler while the daemon's query
runs, and from there a second connection, as a job's writer does, commits two new files.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import pluto_offline as pluto
from pluto_offline import journal
from pluto_offline.journal import filerows


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("PLUTO_OFFLINE_AUTOSTART", "0")
    for var in ("PLUTO_DIR", "PLUTO_PROJECT", "PLUTO_RUN_ID", "PLUTO_API_KEY"):
        monkeypatch.delenv(var, raising=False)


def journal_with_files(jdir: Path, n: int) -> int:
    """A run with ``n`` artifacts journaled and staged; returns its key."""
    run = pluto.init(dir=str(jdir), project="p", run_id="r",
                     settings={"disable_console": True, "disable_system_metrics": True})
    for i in range(n):
        run.log({"ckpt": pluto.Artifact(bytes([i]) * 10)}, step=i)
    run.finish()
    run._media.wait_staged()
    with journal.Journal.open(jdir) as j:
        [row] = journal.all_runs(j)
        return row.key


def fold_two_more(jdir: Path, key: int) -> None:
    """Commit two more files of the run from a connection of its own (a writer's fold)."""
    with journal.Journal.open(jdir) as w, w.transaction():
        w.conn.execute(
            "INSERT INTO files (run, writer, after_seq, log_name, file_name, file_type, kind, "
            "content_type, step, time, sample_index, caption, source) "
            "SELECT run, writer, after_seq, log_name, file_name || '-' || ?, file_type, kind, "
            "content_type, step + 100, time, sample_index, caption, source "
            "FROM files WHERE run = ? ORDER BY id LIMIT 2", ("later", key))


def test_files_all_done_is_every_id(tmp_path):
    key = journal_with_files(tmp_path, 3)
    with journal.Journal.open(tmp_path) as j:
        assert filerows.delivered_through(j, key) == 0  # none delivered yet
        ids = [f.id for f in filerows.pending(j, key)]
        filerows.set_state(j, ids[:1], "done")
        filerows.set_state(j, ids[2:], "done")
        assert filerows.delivered_through(j, key) == ids[0]  # stops below the open one
        filerows.set_state(j, ids[1:2], "rejected", reason="refused")
        assert filerows.delivered_through(j, key) == ids[2]


def test_files_folded_in_during_the_read_are_never_counted_delivered(tmp_path):
    key = journal_with_files(tmp_path, 3)
    with journal.Journal.open(tmp_path) as j:
        ids = [f.id for f in filerows.pending(j, key)]
        filerows.set_state(j, ids, "done")
        folded = []

        def writer_folds() -> int:  # called by SQLite in the middle of the daemon's read
            if not folded:
                folded.append(True)
                fold_two_more(tmp_path, key)
            return 0  # go on

        j.conn.set_progress_handler(writer_folds, 1)
        try:
            top = filerows.delivered_through(j, key)
        finally:
            j.conn.set_progress_handler(None, 0)
        assert folded, "the fold did not happen during the read: the test proves nothing"
        new = [f.id for f in filerows.pending(j, key)]
        assert len(new) == 2 and min(new) > ids[-1]
        # what the read saw (all three done) or less; never the two files not sent yet
        assert top == ids[-1] and top < min(new)
        assert filerows.delivered_through(j, key) == ids[-1]  # read again: stops below them
