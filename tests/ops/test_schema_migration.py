"""A journal written by an older pluto-offline (schema 1) is read as it is and migrated forward
by the first process that opens it for writing, with nothing lost."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pluto_offline as pluto
from pluto_offline import journal
from tests.badinput.helpers import status_rows
from tests.fixtures.daemon import DaemonProcess, wait_for
from tests.fixtures.server import user_config


def _schema_1(jdir: Path) -> Path:
    """A finished run journaled by today's SDK, then put back to schema 1 as it was written."""
    run = pluto.init(dir=jdir, project="old", run_id="old-0", config={"lr": 0.1},
                     settings={"autostart": False})
    for step in range(50):
        run.log({"loss": 1.0 / (step + 1)}, step=step)
    run.finish()
    file = jdir / journal.JOURNAL_FILE
    conn = sqlite3.connect(file)
    conn.execute("ALTER TABLE delivery DROP COLUMN reassert_due")
    conn.execute("ALTER TABLE delivery DROP COLUMN reassert_kinds")
    conn.execute("ALTER TABLE delivery DROP COLUMN resent")
    conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    return file


def _columns(file: Path) -> set[str]:
    conn = sqlite3.connect(file)
    try:
        return {r[1] for r in conn.execute("PRAGMA table_info(delivery)")}
    finally:
        conn.close()


def test_status_reads_a_schema_1_journal_without_changing_it(tmp_path):
    file = _schema_1(tmp_path)
    [row] = status_rows(tmp_path)
    assert (row["run_id"], row["state"], row["pending"], row["synced"]) == ("old-0", "finished",
                                                                          row["events"], False)
    assert row["reassert_due"] is None
    with journal.Journal.open(tmp_path, readonly=True) as j:
        assert j.schema == 1
        assert journal.runs_to_reassert(j) == []
    assert "reassert_due" not in _columns(file)


def test_the_daemon_migrates_a_schema_1_journal_and_delivers_it(tmp_path, pluto_server):
    file = _schema_1(tmp_path)
    with DaemonProcess(pluto_server, tmp_path) as daemon:
        wait_for(lambda: [r["status"] for r in pluto_server.list_runs("old")] == ["COMPLETED"],
                 what="the run delivered")
        daemon.terminate()
    with journal.Journal.open(tmp_path, readonly=True) as j:
        assert (j.schema, j.meta("schema_version")) == (journal.SCHEMA_VERSION, str(journal.SCHEMA_VERSION))
    assert {"reassert_due", "reassert_kinds", "resent"} <= _columns(file)
    run = pluto_server.list_runs("old")[0]
    assert user_config(run["config"]) == {"lr": 0.1}
    assert len(pluto_server.metrics(run["id"], "old", "loss")) == 50
    [row] = status_rows(tmp_path)
    assert row["synced"] and row["pending"] == 0
