"""Damaged journals: truncated, garbage, not ours, from a newer schema, copied without the WAL,
on a full disk. Each gets a clear message naming the file; the other journals still show and
still sync; nothing already journaled is lost.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

import pluto_offline as pluto
from pluto_offline import journal

from .helpers import child, clean_env, cli, integrity

OFF = {"autostart": False}
DAMAGES = ("truncated", "garbage", "not-a-journal", "newer-schema", "empty-dir")
CLUE = {
    "truncated": "is damaged",
    "garbage": "is damaged",
    "not-a-journal": "not a pluto-offline journal",
    "newer-schema": "schema version 99, written by a newer pluto-offline; this version reads "
                    f"schema {journal.SCHEMA_VERSION}",
    "empty-dir": "no journal at",
}


def _good(path: Path, run_id: str, steps: int = 20) -> None:
    run = pluto.init(dir=path, project="dmg", run_id=run_id, settings=OFF)
    for s in range(steps):
        run.log({"loss": 1 / (s + 1)}, step=s)
    run.finish()


def _damage(path: Path, how: str) -> Path:
    """A journal at ``path`` damaged ``how``; returns the journal file."""
    file = path / "journal.db"
    if how == "empty-dir":
        path.mkdir(parents=True)
        return file
    _good(path, "victim", steps=200)
    if how == "truncated":
        # cut inside the first pages, which opening a run reads (schema, meta, runs): SQLite
        # notices a missing page only when it reads it
        os.truncate(file, min(file.stat().st_size // 3, 2 * 4096))
    elif how == "garbage":
        with open(file, "r+b") as f:
            f.seek(0)
            f.write(os.urandom(4096))
    elif how == "not-a-journal":
        file.unlink()
        conn = sqlite3.connect(file)
        conn.execute("CREATE TABLE photos (id INTEGER PRIMARY KEY, path TEXT)")
        conn.commit()
        conn.close()
    elif how == "newer-schema":
        conn = sqlite3.connect(file)
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
        conn.commit()
        conn.close()
    return file


@pytest.fixture(scope="module")
def server(pluto_server_module):
    return pluto_server_module


@pytest.mark.parametrize("how", DAMAGES)
def test_status_reports_the_other_journals_and_names_the_bad_one(tmp_path, how):
    _good(tmp_path / "a", "run-a")
    bad = _damage(tmp_path / "bad", how)
    _good(tmp_path / "b", "run-b")
    before = bad.read_bytes() if bad.exists() else None
    res = cli("status", "--dir", str(tmp_path / "a"), "--dir", str(tmp_path / "bad"),
              "--dir", str(tmp_path / "b"))
    assert res.returncode == 2, res.stdout + res.stderr  # "a journal could not be read"
    assert "run-a" in res.stdout and "run-b" in res.stdout, res.stdout
    assert CLUE[how] in res.stderr and str(bad) in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
    if before is not None:
        assert bad.read_bytes() == before  # status never writes, let alone "repairs"


@pytest.mark.parametrize("how", [d for d in DAMAGES if d != "empty-dir"])  # push searches dirs
def test_push_delivers_the_other_journals_and_names_the_bad_one(tmp_path, server, how):
    _good(tmp_path / "a", f"push-a-{how}")
    bad = _damage(tmp_path / "bad", how)
    _good(tmp_path / "b", f"push-b-{how}")
    env = clean_env(PLUTO_API_KEY=server.api_key)
    res = cli("push", "--server", server.url, "--timeout", "30", str(tmp_path / "a"),
              str(bad), str(tmp_path / "b"), env=env)
    assert res.returncode != 0, res.stdout + res.stderr
    out = res.stdout + res.stderr
    assert CLUE[how] in out and str(bad) in out, out
    assert "Traceback" not in out
    delivered = {r["externalId"]: r for r in server.list_runs("dmg")}
    for run_id in (f"push-a-{how}", f"push-b-{how}"):
        run = delivered[run_id]
        assert run["status"] == "COMPLETED"
        assert len(server.metrics(run["id"], "dmg", "loss")) == 20


@pytest.mark.parametrize("how", ["truncated", "garbage", "newer-schema", "not-a-journal"])
def test_the_sdk_and_the_daemon_refuse_a_damaged_journal_clearly(tmp_path, server, how):
    bad = _damage(tmp_path / "bad", how)
    with pytest.raises(pluto.JournalError, match=CLUE[how].split(";")[0]):
        pluto.init(dir=bad.parent, project="dmg", settings=OFF)
    env = clean_env(PLUTO_API_KEY=server.api_key)
    res = cli("run", "--dir", str(bad.parent), "--server", server.url, "--once", env=env)
    assert res.returncode == 2 and CLUE[how].split(";")[0] in res.stderr, res.stderr
    assert "Traceback" not in res.stderr


def test_a_copy_without_its_wal_loses_only_the_uncheckpointed_tail_and_says_so(tmp_path):
    """A live writer's journal copied without ``-wal``: the copy holds the last checkpoint."""
    live = tmp_path / "live"
    _good(live, "checkpointed", steps=5)  # a closed journal: checkpointed into the main file
    code = """
    import sys, time, pluto_offline as pluto
    run = pluto.init(dir=sys.argv[1], project="dmg", run_id="in-wal", settings={"autostart": False})
    for s in range(50):
        run.log({"loss": float(s)}, step=s)
    run.flush()
    print("flushed", flush=True)
    time.sleep(30)
    """
    import sys
    import textwrap

    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), str(live)],
                            stdout=subprocess.PIPE, text=True, env=clean_env())
    try:
        assert proc.stdout.readline().strip() == "flushed"
        assert (live / "journal.db-wal").stat().st_size > 0
        copy = tmp_path / "copy"
        copy.mkdir(mode=0o700)
        shutil.copy(live / "journal.db", copy / "journal.db")  # without -wal and -shm
    finally:
        proc.kill()
        proc.wait()
    res = cli("status", "--dir", str(copy), "--json")
    assert "Traceback" not in res.stderr
    if res.returncode == 0:
        import json

        ids = {r["run_id"] for r in json.loads(res.stdout)}
        assert "checkpointed" in ids  # what the main file held is intact
        assert integrity(copy / "journal.db") == "ok"
    else:  # the schema itself was only in the WAL: the message must say what to copy
        assert "journal.db" in res.stderr and ("-wal" in res.stderr or "export" in res.stderr)
    # the original, with its WAL, has everything: a reader recovers the killed writer's runs
    res = cli("status", "--dir", str(live), "--json")
    assert res.returncode == 0 and '"in-wal"' in res.stdout


def _tmpfs(where: Path, size: str) -> bool:
    where.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs",
                        str(where)], capture_output=True)
    return r.returncode == 0


def test_a_full_disk_warns_from_log_raises_from_state_changes_and_loses_nothing(tmp_path):
    """A real ENOSPC on a small tmpfs (root only; RLIMIT_FSIZE is covered in tests/sdk)."""
    mnt = tmp_path / "mnt"
    if not _tmpfs(mnt, "4m"):
        pytest.skip("cannot mount a tmpfs here (not root?)")
    try:
        code = """
        import os, sys, time, pluto_offline as pluto
        d = sys.argv[1]
        run = pluto.init(dir=d + "/j", project="full", run_id="full",
                         settings={"autostart": False, "flush_interval": 0.01})
        for s in range(100):
            run.log({"loss": float(s)}, step=s)
        run.flush()
        with open(d + "/filler", "wb") as f:      # fill the disk to the last block
            try:
                while True:
                    f.write(b"\\0" * 65536)
                    f.flush()
            except OSError:
                pass
        for s in range(100, 400):                 # never raises: training goes on
            run.log({"loss": float(s)}, step=s)
        time.sleep(0.3)
        try:
            run.update_config({"lr": 0.1})
            print("update_config: ok")
        except pluto.JournalError as exc:
            print("update_config:", exc)
        os.unlink(d + "/filler")                  # space again: the spill is folded
        run.flush()
        run.finish()
        print("done", flush=True)
        """
        r = child(code, str(mnt))
        assert r.returncode == 0 and "done" in r.stdout, r.stdout + r.stderr
        assert "Traceback" not in r.stderr
        if "update_config: ok" not in r.stdout:  # the spill may have had room: no error due
            assert "the disk is full" in r.stdout, r.stdout
        j = journal.Journal.open(mnt / "j", readonly=True)
        try:
            steps = [s for ev in journal.pending_events(j, 1, after=0, limit=10**6)
                     if ev.kind == "metrics" for s, _t, _d in journal.unpack_metrics(ev.payload)]
        finally:
            j.close()
        assert steps == list(range(400))
        assert integrity(mnt / "j" / "journal.db") == "ok"
    finally:
        time.sleep(0.1)
        subprocess.run(["umount", "-l", str(mnt)], check=False)
