"""Journals that cannot be written, newer schemas, and the promise of no network."""

from __future__ import annotations

import os
import sqlite3

import pytest

import pluto_offline as pluto
from pluto_offline import journal

from .conftest import metric_lines, run_child, statuses


def test_newer_schema_fails_clearly(jdir):
    journal.Journal.open(jdir).close()
    conn = sqlite3.connect(jdir / "journal.db")
    conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(pluto.JournalVersionError, match="schema version 99, written by a newer"):
        pluto.init(dir=jdir)


def test_unwritable_directory_fails_clearly(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    os.chmod(locked, 0o500)
    code = """
import os, sys, pluto_offline as pluto
if os.geteuid() == 0:  # root ignores permissions: drop to nobody (modules already imported)
    os.setgid(65534)
    os.setuid(65534)
try:
    pluto.init(dir=sys.argv[1])
except pluto.JournalError as exc:
    print("JournalError:", exc)
"""
    os.chmod(tmp_path, 0o755)
    r = run_child(code, str(locked / "journal"))
    assert r.stdout.startswith("JournalError: cannot "), r.stderr
    assert "Permission denied" in r.stdout


def test_disk_full_warns_from_log_raises_from_state_changes_and_keeps_the_records(jdir):
    code = """
import resource, signal, sys, pluto_offline as pluto
run = pluto.init(dir=sys.argv[1], project="p", run_id="full", settings={"flush_interval": 0.01})
run.log({"x": 0.0})
run.flush()
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)       # EFBIG instead of a killed process
resource.setrlimit(resource.RLIMIT_FSIZE, (1, 1))   # the disk is now "full"
for i in range(1, 201):
    run.log({"x": float(i)})                        # warns, never raises
import time; time.sleep(0.2)                        # the writer thread meets the full disk
try:
    run.update_config({"a": 1})
except pluto.JournalError as exc:
    print("update_config:", exc, flush=True)
try:
    run.flush()
except pluto.JournalError as exc:
    print("flush: JournalError", flush=True)
print("training goes on", flush=True)
"""
    r = run_child(code, str(jdir))
    assert r.returncode == 0, r.stderr
    assert "update_config: journal" in r.stdout and "the disk is full" in r.stdout
    assert "flush: JournalError" in r.stdout and "training goes on" in r.stdout
    assert "the records are kept in the spill file" in r.stderr  # log()'s warning, once
    assert r.stderr.count("the records are kept in the spill file") == 1
    # finish() at exit: logged, not raised, and the end kept in the spill for recovery
    assert "could not journal its end (COMPLETED) now" in r.stderr
    assert "It is kept in" in r.stderr
    # the limit is gone with the child: recovery folds every record the spill kept
    assert [m["step"] for m in metric_lines(jdir)] == list(range(1, 202))
    # ... and the end the job reached: the run ends COMPLETED, not FAILED killed (issue 12)
    assert statuses(jdir) == [{"status": "COMPLETED", "metadata": None}]


def test_init_never_opens_a_socket(jdir):
    code = """
import sys
def hook(event, args):
    if event.startswith("socket."):
        raise RuntimeError(f"network touched: {event}")
sys.addaudithook(hook)
before = set(sys.modules)  # (pluto-ml's .pth hook may already have imported socket)
import pluto_offline as pluto
run = pluto.init(dir=sys.argv[1], project="p", config={"a": 1})
run.log({"x": 1.0}); run.log({"s": "text"})
run.update_config({"b": 2}); run.add_tags("t")
run.finish()
print("ok", sorted(m for m in set(sys.modules) - before if "socket" in m or "ssl" in m))
"""
    r = run_child(code, str(jdir))
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["ok", "[]"]
