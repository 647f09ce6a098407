"""``plutosync push``: one-shot delivery of many journals, as a real process."""

from __future__ import annotations

import time

from syncd.commands.push import find_journals
from tests.fixtures.daemon import DaemonProcess, JournalBuilder, wait_for


def _journal(path, run_id: str, steps: int = 300) -> int:
    jb = JournalBuilder(path)
    key = jb.run(run_id, tags=["pushed"])
    jb.metrics(key, range(steps), per_event=50)
    jb.status(key, "COMPLETED")
    jb.close()
    return key


def push(server, tmp_path, *args: str, env: dict[str, str] | None = None) -> DaemonProcess:
    """``plutosync push ARGS`` with its output in a log file under ``tmp_path``."""
    return DaemonProcess(server, tmp_path / "push", *args, command="push",
                         env={"COLUMNS": "200", **(env or {})})


def test_push_delivers_many_journals_and_a_second_push_sends_nothing(tmp_path, pluto_server):
    _journal(tmp_path / "a", "run-a")
    _journal(tmp_path / "site" / "n1", "run-b")
    _journal(tmp_path / "site" / "n2" / "journal.db", "run-c")
    paths = [str(tmp_path / "a"), str(tmp_path / "site")]
    assert len(find_journals(paths)[0]) == 3

    first = push(pluto_server, tmp_path, *paths)
    assert first.wait(60) == 0, first.log()
    assert "everything delivered" in first.log()
    runs = {r["name"]: r for r in pluto_server.list_runs("proj")}
    assert set(runs) == {"run-a", "run-b", "run-c"}
    for run in runs.values():
        assert run["status"] == "COMPLETED"
        points = pluto_server.metrics(run["id"], "proj", "train/loss")
        assert [p["step"] for p in points] == list(range(300))
    before = pluto_server.request_counts()

    again = push(pluto_server, tmp_path, *paths)
    assert again.wait(60) == 0, again.log()
    after = pluto_server.request_counts()
    assert {k: v for k, v in after.items() if not k.startswith("/_admin")} == {
        k: v for k, v in before.items() if not k.startswith("/_admin")}


def test_push_follows_a_daemon_holding_the_journal(tmp_path, pluto_server):
    """Issue 12 item 4: push never delivers beside a live daemon; it asks it to try now (its
    backoff skipped) and follows it to the end, with the same summary."""
    _journal(tmp_path / "j", "held")
    pluto_server.fault("429", path="/api/runs/create", count=1, retry_after=60)  # a long wait
    with DaemonProcess(pluto_server, tmp_path / "j") as daemon:
        wait_for(lambda: "delivery paused" in daemon.log(), what="the daemon backing off")
        p = push(pluto_server, tmp_path, str(tmp_path / "j"))
        assert p.wait(30) == 0, p.log()
        text = p.log()
        assert f"followed the plutosync already delivering it (pid {daemon.pid}, asked to " \
               "try now)" in text and "everything delivered" in text
        assert "asked by plutosync push to try now" in daemon.log()
        assert daemon.terminate() == 0
    (run,) = pluto_server.list_runs("proj")
    assert run["status"] == "COMPLETED"


def test_push_gives_up_after_the_timeout_naming_what_is_left(tmp_path, pluto_server):
    _journal(tmp_path / "j", "unlucky")
    pluto_server.stop()
    start = time.monotonic()
    p = push(pluto_server, tmp_path, str(tmp_path / "j"), "--timeout", "2")
    assert p.wait(30) == 1
    assert time.monotonic() - start < 15
    text = p.log()
    assert "proj/unlucky" in text and "events left" in text and "cannot reach" in text


def test_push_with_a_bad_key_stops_at_once_and_says_so(tmp_path, pluto_server):
    _journal(tmp_path / "j", "locked-out")
    p = push(pluto_server, tmp_path, str(tmp_path / "j"), env={"PLUTO_API_KEY": "plt_not_this_one"})
    assert p.wait(30) == 1
    text = p.log()
    assert "refused the API key" in text and "PLUTO_API_KEY" in text
    assert "plt_not_this_one" not in text


def test_push_lists_rejections_and_conflicts(tmp_path, pluto_server):
    pluto_server.create_run("proj", "theirs", externalId="clash")
    jb = JournalBuilder(tmp_path / "j")
    jb.run("clash")
    ok = jb.run("ok")
    jb.event(ok, "tags", ["group:a", "group:b"])
    jb.close()
    p = push(pluto_server, tmp_path, str(tmp_path / "j"))
    assert p.wait(30) == 1
    text = p.log()
    assert "already exists" in text and "proj/clash" in text
    assert "rejected in" in text and "at most one group" in text


def test_push_without_a_journal_is_a_usage_error(tmp_path, pluto_server):
    p = push(pluto_server, tmp_path, str(tmp_path / "nothing-here"))
    assert p.wait(30) == 2
    assert "no journal found" in p.log()


def test_a_named_path_without_a_journal_is_reported_and_the_others_delivered(tmp_path,
                                                                            pluto_server):
    _journal(tmp_path / "good", "run-good")
    (tmp_path / "typo").mkdir()
    p = push(pluto_server, tmp_path, str(tmp_path / "good"), str(tmp_path / "typo"),
             str(tmp_path / "missing"))
    assert p.wait(60) == 2, p.log()
    log = " ".join(p.log().split())  # rich may wrap long lines
    assert f"no journal found in {tmp_path / 'typo'}" in log
    assert f"no journal found in {tmp_path / 'missing'}" in log
    assert [r["name"] for r in pluto_server.list_runs("proj")] == ["run-good"]


def test_a_push_that_ends_before_a_reassert_is_due_says_so_and_the_next_push_does_it(
        tmp_path, pluto_server):
    # The server holds the create past the 1 s request timeout and applies it at 1.5 s, after
    # the run's COMPLETED (delivered by the retry, at most 1 s after the timeout): it reopens
    # the run. The re-assert is due 3 timeouts after the unanswered create (4 s), after this
    # push's 3 s deadline.
    _journal(tmp_path / "j", "late", steps=10)
    pluto_server.fault("stall", path="/api/runs/create", count=1, seconds=1.5)
    first = push(pluto_server, tmp_path, str(tmp_path / "j"), "--timeout", "3",
                 "--request-timeout", "1")
    assert first.wait(30) == 1, first.log()
    text = " ".join(first.log().split())
    assert "proj/late: a create request got no answer and may still land late" in text
    assert "proj/late: its final config/tags/status are to be sent again" in text
    assert "push again after that time" in text and "everything delivered" not in text
    run = pluto_server.list_runs("proj")[0]
    assert run["status"] == "COMPLETED"  # sent once more on the way out ...
    assert len(pluto_server.metrics(run["id"], "proj", "train/loss")) == 10

    time.sleep(2)  # ... and once more when due, by the next push
    again = push(pluto_server, tmp_path, str(tmp_path / "j"), "--request-timeout", "1")
    assert again.wait(30) == 0, again.log()
    assert "everything delivered" in again.log()
    assert [r["status"] for r in pluto_server.list_runs("proj")] == ["COMPLETED"]


def test_off_a_terminal_paths_are_whole_and_a_repeat_push_draws_no_bar(tmp_path, pluto_server):
    """Issue 12 item 13: in a log, the bar and the summary name each journal by its whole path
    (a cut one cannot be told from its neighbour's); a push with nothing to send draws no
    ``0/0 events`` bar, only says so."""
    deep = tmp_path / "verify-u" / "i12" / "carry" / "sub" / "site-a-day1.db"
    deep.parent.mkdir(parents=True)
    _journal(deep, "deep", steps=50)
    first = push(pluto_server, tmp_path, str(deep))
    assert first.wait(60) == 0, first.log()
    assert "…" not in first.log() and first.log().count(str(deep)) == 2  # its bar, the table
    assert "3/3 events" in first.log()

    again = push(pluto_server, tmp_path, str(deep))
    assert again.wait(60) == 0, again.log()
    text = again.log()
    assert "0/0" not in text and " events " not in text, text
    assert "nothing to send: everything was delivered before" in text
    assert "…" not in text and f"│ {deep} │" in text, text
