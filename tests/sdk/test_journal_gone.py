"""The journal directory removed under a running job (issue 11, item 6): real ``rm -rf``
(``shutil.rmtree``) in a real job. The writer notices at its next fold, says so loudly once, and
every state change raises ``JournalError``: nothing pretends to be saved."""

from __future__ import annotations

from .conftest import run_child

GONE = "was removed while run r was running: nothing this process logs from now on is saved"

REMOVED = """
import shutil, sys, pluto_offline as pluto
from pluto_offline import JournalError

run = pluto.init(dir=sys.argv[1], project="p", run_id="r")
run.log({"x": 1.0})
run.flush()
shutil.rmtree(sys.argv[1])  # rm -rf $PLUTO_DIR, or a /tmp cleaner
for i in range(100):
    run.log({"x": float(i)})
for name, call in (("flush", run.flush), ("update_config", lambda: run.update_config({"a": 1})),
                   ("add_tags", lambda: run.add_tags("t")),
                   ("remove_tags", lambda: run.remove_tags("t"))):
    try:
        call()
        print(name, "returned as if saved", flush=True)
    except JournalError as exc:
        print(name, "JournalError:", exc, flush=True)
run.log({"x": 0.5})
"""


def test_a_removed_journal_is_said_loudly_once_and_state_changes_raise(tmp_path):
    jdir = tmp_path / "journal"
    r = run_child(REMOVED, str(jdir))
    assert r.returncode == 0, r.stderr  # the job itself goes on; what it says is the point
    assert "as if saved" not in r.stdout
    for name in ("flush", "update_config", "add_tags", "remove_tags"):
        assert f"{name} JournalError: the journal {jdir / 'journal.db'} {GONE}" in r.stdout
    assert r.stderr.count(GONE) == 2  # the loud error once, and the exit's own line
    assert "pluto_offline: run r: its end (COMPLETED) is not saved" in r.stderr
    assert "recovered later" not in r.stderr  # nothing is left to recover
    assert not jdir.exists()  # nothing was quietly made again in its place


REPLACED = """
import shutil, sys, pluto_offline as pluto
from pluto_offline import JournalError, journal

old = pluto.init(dir=sys.argv[1], project="p", run_id="r")
old.flush()
shutil.rmtree(sys.argv[1])
new = pluto.init(dir=sys.argv[1], project="p", run_id="new")  # a new journal in its place
new.log({"y": 1.0})
new.flush()  # in the new journal's -wal file only, for now
try:
    old.update_config({"a": 1})
except JournalError as exc:
    print("old:", exc, flush=True)
old.finish()  # must not close its connection: SQLite would unlink journal.db-wal by name
with journal.Journal.open(sys.argv[1]) as j:
    print("new run:", [e[0] for e in j.conn.execute(
        "SELECT kind FROM events e JOIN runs r ON r.key = e.run WHERE r.run_id = 'new'")])
new.finish()
"""


def test_a_replaced_journal_is_left_alone_by_the_old_run(tmp_path):
    jdir = tmp_path / "journal"
    r = run_child(REPLACED, str(jdir))
    assert r.returncode == 0, r.stderr
    assert "was replaced by another file while run r was running" in r.stdout
    assert "new run: ['create', 'lognames', 'metrics']" in r.stdout
