"""``plutosync push`` on what real folders hold: damaged, empty and foreign files among good
journals, events the server refused (now or earlier), exports found by a directory search, and
``--dir`` (issue 8 items 6 and 7, issue 12 items 8 and 9).

Journals are written by the real SDK; damage is real bytes written into the file; push runs as
a real process against the local server, and what reached the server is read back from it.
"""

from __future__ import annotations

import os
import random
import re
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import pluto_offline as pluto
from pluto_offline import journal
from syncd.commands._common import probe_journal
from syncd.commands.push import find_journals, push_one
from syncd.replayer import Replayer
from tests.fixtures.daemon import DaemonProcess, JournalBuilder, settings_for

PAGE = 4096
# flush_interval: the writer thread never folds on its own, so each flush() makes one event and
# the file's layout (hence which pages the damage hits) is the same on every run.
OFF = {"autostart": False, "flush_interval": 3600}


@pytest.fixture(autouse=True)
def _no_pluto_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK in this process must not start a daemon or take a run id from the environment."""
    for var in list(os.environ):
        if var.startswith(("PLUTO_", "MLOP_")):
            monkeypatch.delenv(var)


def _run(path: Path, run_id: str, steps: int = 20, names: int = 1,
         flush_every: int | None = None) -> None:
    """One finished run, logged through the real SDK into the journal at ``path``."""
    run = pluto.init(dir=path, project="dmg", name=run_id, run_id=run_id, settings=OFF)
    for s in range(steps):
        run.log({f"m{i}": s + i / 10 for i in range(names)}, step=s)
        if flush_every and s % flush_every == flush_every - 1:
            run.flush()
    run.finish()


def _damaged_in_the_middle(path: Path) -> Path:
    """A journal of three runs, the middle one spanning ~130 pages, with 16 KiB of random bytes
    written over the data pages in the middle of the file (inside the big run's events)."""
    _run(path, "small-1")
    _run(path, "big", steps=6000, names=5, flush_every=100)
    _run(path, "small-2")
    file = path / journal.JOURNAL_FILE
    assert not Path(f"{file}-wal").exists()  # everything is in the file we damage
    at = file.stat().st_size // 2 // PAGE * PAGE
    with open(file, "r+b") as f:
        f.seek(at)
        f.write(random.Random(7).randbytes(16 * 1024))
    return file


def _bad(path: Path, how: str) -> Path:
    file = path / journal.JOURNAL_FILE
    if how == "page":
        return _damaged_in_the_middle(path)
    if how == "header":
        _run(path, "victim", steps=200)
        with open(file, "r+b") as f:
            f.write(random.Random(8).randbytes(100))
    elif how == "empty":
        path.mkdir(parents=True)
        file.touch()
    return file


def _pending(path: Path) -> dict[str, int]:
    """Events pending per run name, read from the journal (read-only) before a push."""
    with journal.Journal.open(path, readonly=True) as j:
        names = {r.key: r.name for r in journal.all_runs(j)}
        return {names[k]: c["pending"] for k, c in journal.event_counts(j).items()}


def push(server, tmp_path: Path, *args: str) -> DaemonProcess:
    """``plutosync push ARGS`` as a real process, its stdout and stderr in one log."""
    return DaemonProcess(server, tmp_path / "push", *args, command="push",
                         env={"COLUMNS": "200"})


def flat(p: DaemonProcess) -> str:
    return " ".join(p.log().split())


def _runs(server) -> dict[str, dict]:
    return {r["name"]: r for r in server.list_runs("dmg")}


def _assert_complete(server, name: str, steps: int = 20) -> None:
    run = _runs(server)[name]
    assert run["status"] == "COMPLETED", run
    assert [p["step"] for p in server.metrics(run["id"], "dmg", "m0")] == list(range(steps))


# --------------------------------------------------------------------------- A: damaged journals

CLUE = {
    "page": "is damaged (database disk image is malformed)",
    "header": "is damaged or is not a journal (its first bytes are not an SQLite header)",
    "empty": "is empty (0 bytes): it is not a journal and holds nothing to deliver",
}


@pytest.mark.parametrize("how", ["page", "header", "empty"])
def test_one_bad_journal_in_a_folder_is_named_and_every_other_one_delivered(
        tmp_path, pluto_server, how):
    site = tmp_path / "site"
    bad = _bad(site / "a-bad", how)  # first in order: with --jobs 1 the others queue behind it
    _run(site / "b-good", "good-b")
    _run(site / "c-good", "good-c")
    before = bad.read_bytes()

    start = time.monotonic()
    p = push(pluto_server, tmp_path, "--jobs", "1", "--timeout", "120", str(site))
    assert p.wait(90) == 1, p.log()
    assert time.monotonic() - start < 60  # the bad journal is not retried until --timeout
    text = flat(p)
    assert "Traceback" not in text
    assert f"not delivered from {site / 'a-bad'}: " in text and str(bad) in text
    assert CLUE[how] in text
    assert "move it aside" in text
    assert "┃ journal" in p.log() and "plutosync push" in text  # the summary table
    assert "everything delivered" not in text
    _assert_complete(pluto_server, "good-b")
    _assert_complete(pluto_server, "good-c")
    if how != "page":  # refused before any write: not even a lock or WAL beside it
        assert bad.read_bytes() == before
        assert sorted(f.name for f in bad.parent.iterdir()
                      if f.name.startswith(journal.JOURNAL_FILE)) == [journal.JOURNAL_FILE]


def test_a_page_damaged_mid_journal_stops_its_run_and_the_journals_other_runs_are_delivered(
        tmp_path, pluto_server):
    bad = _damaged_in_the_middle(tmp_path / "j")
    pending = _pending(bad)  # the index is intact: counting works, reading big's events not
    p = push(pluto_server, tmp_path, "--timeout", "120", str(bad.parent))
    assert p.wait(90) == 1, p.log()
    text = flat(p)
    assert "Traceback" not in text
    # the run whose events sit on the damaged pages: named, with how far it got and why
    m = re.search(rf"dmg/big: (\d+) of its {pending['big']} pending events were delivered, "
                  rf"then it stopped: journal {re.escape(str(bad))} is damaged \(database disk "
                  r"image is malformed\); move it aside", text)
    assert m, text
    sent = int(m.group(1))
    assert sent < pending["big"]
    assert "the journal's other runs were still tried" in text
    assert "push incomplete: 1 journal could not be delivered in full" in text
    _assert_complete(pluto_server, "small-1")  # before the damage ...
    _assert_complete(pluto_server, "small-2")  # ... and after it
    big = _runs(pluto_server)["big"]
    assert big["status"] != "COMPLETED"
    assert len(pluto_server.metrics(big["id"], "dmg", "m0")) < 6000
    # the summary row: 3 runs; the small runs' events and big's first ones delivered
    row = next(line.strip() for line in p.log().splitlines()
               if line.startswith("│") and "j " in line)
    delivered = pending["small-1"] + pending["small-2"] + sent
    assert [c.strip() for c in row.strip("│").split("│")][1:] == [
        "3", str(delivered), "0", str(pending["big"] - sent)]


def test_damage_met_before_any_run_names_the_journal_and_sends_nothing_from_it(
        tmp_path, pluto_server):
    """Random bytes over the events index: the journal cannot even be counted."""
    _run(tmp_path / "good", "good")
    _run(tmp_path / "bad", "victim")
    file = tmp_path / "bad" / journal.JOURNAL_FILE
    conn = sqlite3.connect(file)
    root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'events_run_seq'"
                        ).fetchone()[0]
    conn.close()
    with open(file, "r+b") as f:
        f.seek((root - 1) * PAGE)
        f.write(random.Random(9).randbytes(PAGE))
    p = push(pluto_server, tmp_path, str(tmp_path / "bad"), str(tmp_path / "good"))
    assert p.wait(60) == 1, p.log()
    text = flat(p)
    assert "Traceback" not in text
    assert (f"not delivered from {tmp_path / 'bad'}: journal {file} is damaged (database disk "
            "image is malformed); move it aside") in text
    assert "nothing was sent from it" in text
    assert "victim" not in _runs(pluto_server)
    _assert_complete(pluto_server, "good")


def test_an_unexpected_error_in_one_run_stops_that_run_only(tmp_path, pluto_server, monkeypatch):
    from syncd.delivery import Delivery

    _run(tmp_path / "j", "fine")
    _run(tmp_path / "j", "cursed")
    step = Delivery.step

    def step_or_bug(self, ctx, cursor):
        if ctx.row.run_id == "cursed":
            raise RuntimeError("a bug in plutosync")
        return step(self, ctx, cursor)

    monkeypatch.setattr(Delivery, "step", step_or_bug)
    n = _pending(tmp_path / "j")["cursed"]
    start = time.monotonic()
    out = push_one(journal.resolve_path(tmp_path / "j"), settings_for(pluto_server),
                   threading.Event(), 60.0)
    assert time.monotonic() - start < 30  # given up at once, not retried until the timeout
    assert not out.clean and out.failed
    assert any(line.startswith(f"dmg/cursed: 0 of its {n} pending events were delivered, then "
                               "it stopped: ") and "RuntimeError: a bug in plutosync" in line
               for line in out.problems), out.problems
    assert out.left == n
    _assert_complete(pluto_server, "fine")


def test_an_unexpected_error_of_the_journal_is_its_outcome_not_the_pushs(tmp_path, pluto_server,
                                                                         monkeypatch):
    _run(tmp_path / "j", "half")
    n = _pending(tmp_path / "j")["half"]

    def boom(self) -> None:
        raise sqlite3.DatabaseError("database disk image is malformed")

    # the damage met after everything was delivered, while sending the final state again
    monkeypatch.setattr(Replayer, "reassert_now", boom)
    out = push_one(journal.resolve_path(tmp_path / "j"), settings_for(pluto_server),
                   threading.Event(), 60.0)
    assert out.left == -1 and out.failed and out.delivered == n
    assert out.problems == [
        f"journal {tmp_path / 'j' / 'journal.db'} is damaged (database disk image is malformed); "
        f"move it aside and restore it from a backup or an export (plutosync export); {n} of its "
        "events were delivered before that (they stay delivered), the rest was not tried"]

    monkeypatch.setattr(journal, "event_counts", lambda j: 1 / 0)
    out = push_one(journal.resolve_path(tmp_path / "j"), settings_for(pluto_server),
                   threading.Event(), 60.0)
    assert out.left == -1 and out.failed
    assert out.problems[0].startswith("unexpected error (ZeroDivisionError: division by zero): "
                                      "a plutosync bug")
    assert out.problems[0].endswith("nothing was sent from it")


def test_a_foreign_database_named_on_purpose_is_refused_and_not_written(tmp_path, pluto_server):
    other = tmp_path / "photos.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE photos (id INTEGER PRIMARY KEY, path TEXT)")
    conn.commit()
    conn.close()
    before = other.read_bytes()
    _run(tmp_path / "good", "good")
    p = push(pluto_server, tmp_path, str(other), str(tmp_path / "good"))
    assert p.wait(60) == 1, p.log()
    text = flat(p)
    assert (f"{other} is not a pluto-offline journal (no meta/events/runs table; it holds "
            "photos); nothing was sent from it") in text
    assert other.read_bytes() == before
    assert not Path(f"{other}-wal").exists() and not Path(f"{other}.lock").exists()
    _assert_complete(pluto_server, "good")


# --------------------------------------------------------------------------- B: rejections


def _refusing_journal(path: Path) -> None:
    """A run whose tags events the server refuses (two group: tags; an SDK from before its own
    check wrote such journals), and a healthy run."""
    jb = JournalBuilder(path)
    jb.run("clean", project="dmg")
    refused = jb.run("refused", project="dmg")
    for n in range(3):
        jb.event(refused, "tags", [f"group:a{n}", f"group:b{n}"])
    jb.status(refused, "COMPLETED")
    jb.close()


def test_a_push_with_refused_events_lists_each_and_never_says_everything_delivered(
        tmp_path, pluto_server):
    _refusing_journal(tmp_path / "j")
    p = push(pluto_server, tmp_path, str(tmp_path / "j"))
    assert p.wait(60) == 1, p.log()
    text = flat(p)
    assert (f"rejected in {tmp_path / 'j'}: dmg/refused: 3 tags events (seq 3-5): HTTP 400:"
            in text), text
    assert "at most one group" in text and "refused earlier" not in text
    assert "push incomplete: 3 events refused by the server for good" in text
    assert "everything delivered" not in text
    runs = _runs(pluto_server)
    assert runs["refused"]["status"] == "COMPLETED" and runs["clean"]["status"] == "RUNNING"

    # pushed again: nothing is sent, but the refusals are still there, and still the answer
    again = push(pluto_server, tmp_path, str(tmp_path / "j"))
    assert again.wait(60) == 1, again.log()
    text = flat(again)
    assert "dmg/refused: 3 tags events (seq 3-5): HTTP 400:" in text
    assert "(refused earlier, at " in text and "by a previous push or plutosync run)" in text
    assert "everything delivered" not in text and "nothing to send" not in text
    assert "3 (3 earlier)" in again.log()  # the summary's rejected column


def test_events_refused_by_the_daemon_earlier_make_push_exit_1(tmp_path, pluto_server):
    jb = JournalBuilder(tmp_path / "j")
    key = jb.run("one-refusal", project="dmg")
    jb.event(key, "tags", ["group:x", "group:y"])
    jb.status(key, "COMPLETED")
    jb.close()
    daemon = DaemonProcess(pluto_server, tmp_path / "j", "--once")
    assert daemon.wait(60) in (0, 1), daemon.log()
    assert _runs(pluto_server)["one-refusal"]["status"] == "COMPLETED"

    p = push(pluto_server, tmp_path, str(tmp_path / "j"))
    assert p.wait(60) == 1, p.log()
    text = flat(p)
    assert f"rejected in {tmp_path / 'j'}: dmg/one-refusal: event 2 (tags): HTTP 400:" in text
    assert "refused earlier" in text and "everything delivered" not in text


def test_a_repeat_push_of_a_delivered_journal_says_nothing_to_send_and_exits_0(
        tmp_path, pluto_server):
    _run(tmp_path / "j", "done")
    first = push(pluto_server, tmp_path, str(tmp_path / "j"))
    assert first.wait(60) == 0, first.log()
    assert "everything delivered" in first.log()
    again = push(pluto_server, tmp_path, str(tmp_path / "j"))
    assert again.wait(60) == 0, again.log()
    text = flat(again)
    assert "nothing to send: everything was delivered before" in text
    assert "0/0 events" not in text and "0/1" not in text  # no bar for nothing to send


# --------------------------------------------------------------------------- C: --dir


def test_push_takes_dir_like_the_other_commands(tmp_path, pluto_server):
    _run(tmp_path / "a", "via-dir-a")
    _run(tmp_path / "b", "via-dir-b")
    _run(tmp_path / "c", "via-path-c")
    p = push(pluto_server, tmp_path, str(tmp_path / "c"), "--dir", str(tmp_path / "a"),
             "--dir", str(tmp_path / "b"))
    assert p.wait(60) == 0, p.log()
    assert set(_runs(pluto_server)) == {"via-dir-a", "via-dir-b", "via-path-c"}
    p = push(pluto_server, tmp_path, "--dir", str(tmp_path / "nowhere"))
    assert p.wait(60) == 2
    assert f"no journal found in {tmp_path / 'nowhere'}" in flat(p)


def test_push_help_documents_dir():
    res = subprocess.run([sys.executable, "-m", "syncd", "push", "--help"], capture_output=True,
                         text=True, env={**os.environ, "COLUMNS": "100"}, check=True)
    assert "--dir PATH" in res.stdout and "repeat for several" in res.stdout


# --------------------------------------------------------------------------- D: the search


def _folder(tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    """A carried folder: an export, a journal directory, and files that are not journals."""
    src = tmp_path / "src"
    _run(src, "exported")
    folder = tmp_path / "usb"
    folder.mkdir()
    res = subprocess.run([sys.executable, "-m", "syncd", "export", "--dir", str(src), "--out",
                          str(folder / "site-a-day1.db")], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    _run(folder / "node2", "in-a-dir")
    conn = sqlite3.connect(folder / "photos.db")
    conn.execute("CREATE TABLE photos (id INTEGER PRIMARY KEY)")
    conn.commit()
    conn.close()
    (folder / "notes.db").touch()
    (folder / "README.txt").write_text("carried from site A\n")
    # SQLite's side files: a -wal/-shm never counts, whatever it holds
    (folder / "old.db-wal").write_bytes((folder / "site-a-day1.db").read_bytes())
    (folder / "old.db-shm").write_bytes(b"\0" * 32768)
    return folder, {f.name: f.read_bytes() for f in folder.iterdir() if f.is_file()}


def test_a_directory_search_finds_exports_and_checks_files_read_only(tmp_path):
    folder, before = _folder(tmp_path)
    notes: list[tuple[str, str]] = []
    found, empty = find_journals([str(folder)], notes)
    assert found == [(folder / "site-a-day1.db").resolve(),
                     (folder / "node2" / "journal.db").resolve()]
    assert empty == []
    assert sorted(n for _, n in notes) == [
        f"skipped {folder / 'notes.db'}: not a journal: empty (0 bytes)",
        f"skipped {folder / 'photos.db'}: not a journal: no meta/events/runs table; it holds "
        "photos",
    ]
    # read-only: nothing changed, nothing created beside the files
    assert {f.name: f.read_bytes() for f in folder.iterdir() if f.is_file()} == before


def test_push_of_a_folder_delivers_its_exports_and_names_skipped_files_with_v(
        tmp_path, pluto_server):
    folder, _ = _folder(tmp_path)
    p = push(pluto_server, tmp_path, str(folder))
    assert p.wait(60) == 0, p.log()
    assert "skipped" not in p.log()
    assert "everything delivered" in p.log()
    _assert_complete(pluto_server, "exported")
    _assert_complete(pluto_server, "in-a-dir")

    p = push(pluto_server, tmp_path, "-v", str(folder))
    assert p.wait(60) == 0, p.log()
    text = flat(p)
    assert f"skipped {folder / 'photos.db'}: not a journal" in text
    assert f"skipped {folder / 'notes.db'}: not a journal: empty (0 bytes)" in text
    assert "README" not in text and "old.db" not in text


def test_a_folder_with_only_other_databases_is_a_usage_error_that_says_what_was_skipped(
        tmp_path, pluto_server):
    folder = tmp_path / "nothing"
    folder.mkdir()
    conn = sqlite3.connect(folder / "cache.db")
    conn.execute("CREATE TABLE cache (k, v)")
    conn.commit()
    conn.close()
    p = push(pluto_server, tmp_path, str(folder))
    assert p.wait(60) == 2, p.log()
    text = flat(p)
    assert f"no journal found in {folder}" in text
    assert f"skipped {folder / 'cache.db'}: not a journal: no meta/events/runs table" in text


# --------------------------------------------------------------------------- the read-only probe


def _sqlite(file: Path, *statements: str) -> Path:
    conn = sqlite3.connect(file)
    for sql in statements:
        conn.execute(sql)
    conn.commit()
    conn.close()
    return file


def _page_one_damaged(file: Path) -> Path:
    """A journal whose schema page (after the 100-byte header) is random bytes."""
    _run(file.parent, "victim")
    with open(file, "r+b") as f:
        f.seek(100)
        f.write(random.Random(10).randbytes(PAGE - 100))
    return file


PROBES = {
    "missing": (lambda d: d / "nothing.db", "missing",
                "no journal at {f}: check the path"),
    "through-a-file": (lambda d: (d / "plain").write_text("x") and d / "plain" / "j.db",
                       "unreadable", "journal {f} cannot be read (Not a directory)"),
    "empty": (lambda d: (d / "e.db").touch() or d / "e.db", "empty",
              "{f} is empty (0 bytes): it is not a journal"),
    "no-tables": (lambda d: _sqlite(d / "n.db", "PRAGMA user_version = 3"), "empty",
                  "{f} is an empty SQLite database (no tables): it is not a journal"),
    "text": (lambda d: (d / "t.db").write_text("hello") and d / "t.db", "not-sqlite",
             "journal {f} is damaged or is not a journal (its first bytes are not an SQLite "
             "header)"),
    "directory": (lambda d: (d / "dir.db").mkdir() or d / "dir.db", "not-sqlite",
                  "journal {f} is damaged or is not a journal (not a regular file)"),
    "foreign": (lambda d: _sqlite(d / "f.db", "CREATE TABLE runs (x)"), "foreign",
                "{f} is not a pluto-offline journal (no meta/events table; it holds runs)"),
    "no-version": (lambda d: _sqlite(d / "v.db", "CREATE TABLE meta (key, value)",
                                     "CREATE TABLE events (x)", "CREATE TABLE runs (x)"),
                   "foreign", "{f} is not a pluto-offline journal (its meta table has no "
                              "schema_version)"),
    "damaged": (lambda d: _page_one_damaged(d / "j" / "journal.db"), "damaged",
                "journal {f} is damaged ("),
}


@pytest.mark.parametrize("case", list(PROBES))
def test_the_probe_says_what_a_file_is_without_writing_anything(tmp_path, case):
    make, kind, message = PROBES[case]
    file = make(tmp_path)
    listing = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    probe = probe_journal(file)
    assert probe.kind == kind, probe
    assert not probe.is_journal
    assert probe.message.startswith(message.format(f=file)), probe.message
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == listing


def test_the_probe_reads_a_live_journal_through_its_wal(tmp_path):
    """A journal still open by a writer: its schema may be only in the -wal so far."""
    j = journal.Journal.open(tmp_path / "live")
    try:
        with j.transaction():
            journal.add_run(j, project="p", run_id="r", name="r")
        assert Path(f"{j.path}-wal").stat().st_size > 0
        assert probe_journal(j.path).is_journal
    finally:
        j.close()
    assert probe_journal(j.path).is_journal  # checkpointed, no -wal: read immutable


def test_a_search_takes_damaged_db_files_and_notes_other_damaged_databases(tmp_path):
    folder = tmp_path / "carried"
    folder.mkdir()
    export = _page_one_damaged(tmp_path / "src" / "journal.db")
    (folder / "site-b.db").write_bytes(export.read_bytes())  # a damaged export: taken
    (folder / "site-b.backup").write_bytes(export.read_bytes())  # not a .db: noted only
    notes: list[tuple[str, str]] = []
    found, empty = find_journals([str(folder)], notes)
    assert found == [(folder / "site-b.db").resolve()] and empty == []
    assert len(notes) == 1, notes
    assert notes[0][1].startswith(f"skipped {folder / 'site-b.backup'}: cannot be read as SQLite: ")
    assert "malformed" in notes[0][1] or "not a database" in notes[0][1]


def test_push_names_a_damaged_export_found_by_a_search(tmp_path, pluto_server):
    folder = tmp_path / "carried"
    folder.mkdir()
    export = _page_one_damaged(tmp_path / "src" / "journal.db")
    (folder / "site-b.db").write_bytes(export.read_bytes())
    _run(folder / "good", "good")
    p = push(pluto_server, tmp_path, str(folder))
    assert p.wait(60) == 1, p.log()
    text = flat(p)
    assert f"not delivered from {folder / 'site-b.db'}: journal {folder / 'site-b.db'} is " \
           "damaged (" in text
    assert "Traceback" not in text
    _assert_complete(pluto_server, "good")
