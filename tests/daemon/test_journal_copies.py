"""Copies of one journal, and journals of one run that set the same config and tags (issue 8).

- An export taken while the job ran, another after it ended, and the original journal:
  string series (which the server keeps every copy of) arrive exactly once, pushed one by one
  in time order or in another order, or together. (Console lines, histograms and files:
  test_journal_copies_kinds.py.)
- Config keys and tags set by several journals: the value set last **by event time** stays on
  the server, whatever order the journals arrive in.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pluto_offline import journal
from pluto_offline.journal import history
from tests.daemon.test_many_journals import push, the_run
from tests.daemon.test_sdk_jobs import finished, job, steps
from tests.fixtures.daemon import DaemonProcess, JournalBuilder, wait_for
from tests.fixtures.server import LEDGER_KEY, LocalServer, user_config
from tests.ops.conftest import cli

COPIED = """
    import pathlib
    gate = pathlib.Path(os.environ["GATE"])
    run = pluto.init(name="copied")
    for i in range(20):
        if i == 10:
            print("half", flush=True)
            while not gate.exists():
                time.sleep(0.02)
        run.log({"train/loss": 1.0 / (i + 1), "note": f"step {i}"}, step=i)
    run.finish()
"""


def take_copies(tmp_path: Path, code: str = COPIED,
                ready: Callable[[Path], None] | None = None) -> tuple[Path, Path, Path]:
    """Run ``code`` (a job that prints "half" then waits for the file $GATE) and return its
    journal and two exports of it: x0 taken while it waits (once ``ready(journal)`` returns),
    x1 after it ended."""
    src = tmp_path / "node"
    gate = tmp_path / "gate"
    proc = job(src, code, GATE=str(gate), HERE=str(tmp_path))
    for line in proc.stdout:  # the job's own stdout (console capture passes it through)
        if line.strip() == b"half":
            break
    else:
        raise AssertionError(f"the job ended before its midpoint (exit {proc.wait()})")
    time.sleep(0.3)  # the writer thread commits the first half
    if ready is not None:
        ready(src)
    x0, x1 = tmp_path / "carry" / "x0.db", tmp_path / "carry" / "x1.db"
    x0.parent.mkdir()
    res = cli("export", "--dir", str(src), "--out", str(x0))
    assert res.returncode == 0, res.stderr
    gate.touch()
    assert finished(proc) == 0
    res = cli("export", "--dir", str(src), "--out", str(x1))
    assert res.returncode == 0, res.stderr
    return src, x0, x1


def data_rows(server: LocalServer, run: dict, log_name: str | None = None) -> list[dict]:
    """The data rows (string series, histograms...) the server holds for a run, duplicates
    kept, by time: its own read endpoint (docs/server.md), which returns what was stored."""
    params: dict[str, Any] = {"runId": run["id"], "projectName": run.get("projectName", "proj")}
    if log_name is not None:
        params["logName"] = log_name
    r = server.request("GET", "/api/runs/data", params=params)
    assert r.status_code == 200, r.text
    return r.json()["data"]


def _notes(server: LocalServer, run: dict) -> list[tuple[str, int, str]]:
    # every data row of the run, not only "note": a stray row would show here too
    return sorted((r["logName"], r["step"], r["data"]) for r in data_rows(server, run))


# the export taken while the job ran (x0), the one taken after it ended (x1) and the original
# journal (src), pushed one by one in these orders (indexes into (x0, x1, src)), or together
ORDERS = {"x0-x1-src": (0, 1, 2), "src-x1-x0": (2, 1, 0), "x1-src-x0": (1, 2, 0),
          "together": None}


def push_copies(server: LocalServer, where: Path, copies: tuple[Path, ...], order: str) -> None:
    """Push ``copies`` in ``order`` (a key of ORDERS): one push each, or one push of all."""
    seq = ORDERS[order]
    if seq is None:
        p = push(server, where / "p", *copies)
        assert p.proc.returncode == 0, p.log()
        return
    for k in seq:
        p = push(server, where / f"p{k}", copies[k])
        assert p.proc.returncode == 0, p.log()


@pytest.mark.parametrize("order", list(ORDERS))
def test_copies_of_one_journal_deliver_each_string_once(tmp_path, pluto_server, order):
    """An export at step 10, another after the end and the original journal, pushed in time
    order, in two other orders or together: each string once, at its step."""
    src, x0, x1 = take_copies(tmp_path)
    with journal.Journal.open(x0, readonly=True) as j:
        assert len([e for r in journal.all_runs(j) for e in
                    journal.pending_events(j, r.key, after=0) if e.kind == "data"]) >= 1
    push_copies(pluto_server, tmp_path, (x0, x1, src), order)
    run = the_run(pluto_server)
    assert run["status"] == "COMPLETED"
    assert steps(pluto_server, run, "train/loss") == list(range(20))
    assert _notes(pluto_server, run) == sorted(("note", i, f"step {i}") for i in range(20))
    # how far each journal's strings reached the server is kept on the run, one entry per
    # journal (the copies share the original's id)
    delivered = run["config"][LEDGER_KEY]["delivered"]
    with journal.Journal.open(src, readonly=True) as j:
        [row] = journal.all_runs(j)
        assert list(delivered) == [f"{j.id}:{row.key}"]
        assert history.resent(j, row.key) == 0
    # a run whose id the job did not choose keeps no config/tags times: nobody else can join
    assert set(run["config"][LEDGER_KEY]) == {"delivered", "sending"}


def test_a_string_batch_the_daemon_sent_without_an_answer_is_counted(tmp_path, pluto_server):
    """The one window the contract leaves open: the server stored a data request whose answer
    was lost. It is sent again (nothing is lost) and the journal counts the resend."""
    jb = JournalBuilder(tmp_path / "j")
    key = jb.run("resent")
    # one event, two records: the count is in records (the oracle's unit), not events
    jb.event(key, "data", "\n".join(
        json.dumps({"time": 1, "data": v, "dataType": "string-series", "logName": "note",
                    "step": 0}) for v in ("a", "b")), raw=True, step=0)
    jb.status(key, "COMPLETED")
    jb.close()
    pluto_server.fault("reset", "/ingest/data", count=1)  # applied, then the answer is cut
    p = push(pluto_server, tmp_path / "p", tmp_path / "j")
    assert p.proc.returncode == 0, p.log()
    run = the_run(pluto_server)
    notes = _notes(pluto_server, run)
    assert notes.count(("note", 0, "a")) >= 1 and notes.count(("note", 0, "b")) >= 1
    with journal.Journal.open(tmp_path / "j", readonly=True) as j:
        assert history.resent(j, key) == 2


T0 = 1_700_000_000_000


def _training(path) -> None:
    """The run's own journal: created at T0, its lr set again at T0+30 s, finished at T0+40 s."""
    jb = JournalBuilder(path)
    key = jb.run("shared", name="training", config={"lr": 0.1, "opt": {"wd": 1}},
                 tags=["train"], created_at=T0)
    jb.metrics(key, range(5))
    jb.event(key, "config", {"lr": 0.3}, time=T0 + 30_000)
    jb.status(key, "COMPLETED", time=T0 + 40_000)
    jb.close()


def _eval(path) -> None:
    """Another node's job on the same run: attached at T0+10 s, set lr, opt.mom and the tags
    at T0+20 s (between the training's create and its second lr), then closed."""
    jb = JournalBuilder(path)
    key = jb.run("shared", name="eval", created_at=T0 + 10_000, resume_ok=True)
    jb.event(key, "config", {"lr": 0.2, "opt": {"mom": 0.9}}, time=T0 + 20_000)
    jb.event(key, "tags", ["train", "evaluated"], time=T0 + 20_000)
    jb.event(key, "close", time=T0 + 25_000)
    with jb.j.transaction():  # its writer ended by close(), as the SDK journals it
        journal.add_writer(jb.j, key, "eval-writer", pid=1, host="node-b")
        journal.end_writer(jb.j, "eval-writer", "closed")
    jb.close()


@pytest.mark.parametrize("order", ["training-first", "eval-first", "together"])
def test_config_and_tags_are_as_last_set_by_time_in_any_order(tmp_path, pluto_server, order):
    _training(tmp_path / "a")
    _eval(tmp_path / "b")
    paths = [tmp_path / "a", tmp_path / "b"]
    if order == "together":
        p = push(pluto_server, tmp_path / "p", *paths)
        assert p.proc.returncode == 0, p.log()
    else:
        if order == "eval-first":
            # the eval journal only attached: its daemon waits for the training's journal,
            # which then creates the run
            with DaemonProcess(pluto_server, paths[1]) as daemon:
                wait_for(lambda: "waiting for run 'shared'" in daemon.log(), timeout=30,
                         what="the eval journal waiting for its creator")
                p = push(pluto_server, tmp_path / "p1", paths[0])
                assert p.proc.returncode == 0, p.log()
                wait_for(lambda: _synced(paths[1]), timeout=60, what="the eval journal delivered")
        else:
            for k, path in enumerate(paths):
                p = push(pluto_server, tmp_path / f"p{k}", path)
                assert p.proc.returncode == 0, p.log()
    run = the_run(pluto_server)
    assert run["name"] == "training" and run["status"] == "COMPLETED"
    # lr: the training's T0+30 s beats the eval's T0+20 s; opt: keys of both
    assert user_config(run["config"]) == {"lr": 0.3, "opt": {"wd": 1, "mom": 0.9}}
    # tags: the eval's T0+20 s beats the training's create (T0)
    assert sorted(run["tags"]) == ["evaluated", "train"]
    times = run["config"][LEDGER_KEY]
    assert times["configTimes"]["lr"] == T0 + 30_000 and times["tagsTime"] == T0 + 20_000


def test_an_older_tags_set_arriving_later_is_left_out(tmp_path, pluto_server):
    """Tags are replaced whole: the later set by time stays, whichever journal comes last."""
    a = JournalBuilder(tmp_path / "a")
    ka = a.run("tagged", name="first", tags=["old"], created_at=T0, resume_ok=True)
    a.event(ka, "tags", ["old", "early"], time=T0 + 5_000)
    a.status(ka, "COMPLETED", time=T0 + 6_000)
    a.close()
    b = JournalBuilder(tmp_path / "b")
    kb = b.run("tagged", name="second", created_at=T0 + 7_000, resume_ok=True)
    b.event(kb, "tags", ["late"], time=T0 + 8_000)
    b.status(kb, "COMPLETED", time=T0 + 9_000)
    b.close()
    for k, path in enumerate((tmp_path / "b", tmp_path / "a")):
        p = push(pluto_server, tmp_path / f"p{k}", path)
        assert p.proc.returncode == 0, p.log()
    run = the_run(pluto_server)
    assert run["tags"] == ["late"]
    assert run["status"] == "COMPLETED"


def _synced(path) -> bool:
    with journal.Journal.open(path, readonly=True) as j:
        return not journal.runs_with_pending(j)


def _alloc(path, k: int, *, tags: list[str], at: int, tags_set: list[str] | None = None) -> None:
    """A Slurm allocation's journal: init(run_id="alloc-run", resume=True, tags=...) at
    ``at``, maybe an add_tags 5 s later, then the end (the last one finishes)."""
    jb = JournalBuilder(path)
    key = jb.run("alloc-run", name="slurm", tags=tags, created_at=at, resume_ok=True)
    jb.metrics(key, range(10 * k, 10 * k + 10))
    if tags_set is not None:
        jb.event(key, "tags", tags_set, time=at + 5_000)
    jb.status(key, "COMPLETED" if k == 2 else "TERMINATED", time=at + 9_000)
    jb.close()


@pytest.mark.parametrize("with_set", [False, True], ids=["first-create", "a-later-set"])
def test_tags_of_the_first_create_or_a_later_set_win_over_a_later_create(tmp_path, pluto_server,
                                                                         with_set):
    """Allocations delivered newest first: the newest one's create makes the run with its
    tags, yet the run's tags are those of its first create by time (the server ignores the
    tags of a create that finds the run), or of a later add_tags."""
    _alloc(tmp_path / "a0", 0, tags=["first"], at=T0)
    _alloc(tmp_path / "a1", 1, tags=["second"], at=T0 + 10_000,
           tags_set=["first", "added"] if with_set else None)
    _alloc(tmp_path / "a2", 2, tags=["third"], at=T0 + 20_000)
    for k in (2, 1, 0):
        p = push(pluto_server, tmp_path / f"p{k}", tmp_path / f"a{k}")
        assert p.proc.returncode == 0, p.log()
    run = the_run(pluto_server)
    assert run["status"] == "COMPLETED"
    assert sorted(run["tags"]) == (["added", "first"] if with_set else ["first"])
    assert run["config"][LEDGER_KEY]["firstCreate"] == T0
    assert steps(pluto_server, run, "train/loss") == list(range(30))
