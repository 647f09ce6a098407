"""The daemon against broken or hostile server answers (a real HTTP peer on loopback).

For every misbehaviour: the pass does not raise, nothing is acknowledged or rejected on the
strength of a non-answer, the run's ``last_error`` (what ``plutosync status`` shows) says what
went wrong, retries back off instead of spinning, and once the real server answers the run is
delivered whole.
"""

from __future__ import annotations

import json
import time

import pytest

from pluto_offline import journal
from syncd import runstate
from syncd.replayer import drain
from tests.fixtures.daemon import JournalBuilder
from tests.fixtures.server import user_config

from .helpers import child, clean_env, replayer_at, status_rows
from .hostile import MODES, HostileServer

STEPS = 30
# what the run's error must say, per mode: the user's clue to the cause
CLUE = {
    "malformed-json-200": "not JSON",
    "html-200": "HTML page",
    "html-502": "502 Bad Gateway",
    "wrong-type-200": "runId",
    "truncated": "IncompleteRead",
    "missing-fields-200": "runId",
    "list-200": "JSON list",
    "redirect-loop": "does not follow redirects",
    "redirect-elsewhere": "redirected to /moved",
    "gigantic-200": "MiB; not read",
    "gigantic-500": "MiB; not read",
}
# an update or ingest answered 200 {"success": true} is a valid answer; a list or text is not
AFTER_CREATE_CLUE = {**CLUE, "wrong-type-200": None, "missing-fields-200": None,
                     "malformed-json-200": "not JSON", "list-200": "JSON list"}


def _journal(tmp_path, project: str = "proj") -> tuple[JournalBuilder, int]:
    jb = JournalBuilder(tmp_path / "j")
    key = jb.run("hostile-1", project=project, config={"lr": 0.1}, tags=["t"])
    jb.event(key, "lognames", {"type": "METRIC", "names": ["train/loss"]})
    jb.metrics(key, range(STEPS), per_event=10)
    jb.event(key, "tags", ["t", "done"])
    jb.status(key, "COMPLETED")
    return jb, key


def _assert_delivered(server, jb: JournalBuilder, key: int) -> None:
    row = jb.delivery(key)
    project = row.project
    assert row.last_error is None and not jb.rejected(key)
    run = server.get_run(row.server_id)
    assert run["status"] == "COMPLETED" and run["tags"] == ["t", "done"]
    assert user_config(run["config"]) == {"lr": 0.1}
    points = server.metrics(row.server_id, project, "train/loss")
    assert [p["step"] for p in points] == list(range(STEPS))
    assert len(server.list_runs(project)) == 1


@pytest.fixture
def server(pluto_server_module):
    """One local server for the module: each test uses its own project."""
    pluto_server_module.clear_faults()
    return pluto_server_module


@pytest.mark.parametrize("mode", MODES)
def test_a_broken_answer_to_create_acks_nothing_and_delivery_resumes(tmp_path, server, mode):
    jb, key = _journal(tmp_path, f"create-{mode}")
    with HostileServer(mode) as bad:
        rep = replayer_at(jb.path, bad.url, server.api_key)
        # a second of trying: backoff, not a hot loop, and the pass never raises
        assert not drain(rep, deadline=time.monotonic() + 0.6)
        assert 1 <= bad.requests <= 15, bad.requests
        if mode.startswith("gigantic"):
            assert bad.streamed < 64 << 20  # read bounded, the connection dropped
    row = jb.delivery(key)
    assert row.acked_seq == 0 and row.server_id is None and not jb.rejected(key)
    assert CLUE[mode] in (row.last_error or ""), row.last_error
    assert server.api_key not in row.last_error
    shown = runstate.journal_status(jb.j)[0]  # what `plutosync status` prints (CLI: below)
    assert shown.pending == shown.events and CLUE[mode] in shown.last_error

    # a daemon restarted against the real server picks up from the journal's delivery state
    assert drain(replayer_at(jb.path, server.url, server.api_key),
                 deadline=time.monotonic() + 30)
    _assert_delivered(server, jb, key)


@pytest.mark.parametrize("mode", MODES)
def test_a_broken_answer_after_create_acks_nothing_it_did_not_deliver(tmp_path, server, mode):
    jb, key = _journal(tmp_path, f"after-{mode}")
    good = replayer_at(jb.path, server.url, server.api_key)
    good.delivery.step(*_opened(good, jb, key))  # create (and config) on the real server
    created = jb.delivery(key)
    assert created.server_id is not None and created.acked_seq == 1

    with HostileServer(mode) as bad:
        rep = replayer_at(jb.path, bad.url, server.api_key)
        drain(rep, deadline=time.monotonic() + 0.6)
        assert bad.requests <= 40
    row = jb.delivery(key)
    assert not jb.rejected(key)
    clue = AFTER_CREATE_CLUE[mode]
    if clue is None:
        # {"success": true} is what the contract answers to updates and ingest: acked
        return
    assert row.acked_seq == 1, "acked events the hostile server never stored"
    assert clue in (row.last_error or ""), row.last_error

    assert drain(replayer_at(jb.path, server.url, server.api_key),
                 deadline=time.monotonic() + 30)
    _assert_delivered(server, jb, key)


def _opened(rep, jb: JournalBuilder, key: int) -> tuple:
    from syncd.replayer import Cursor, RunCtx

    row = journal.get_run(jb.j, key)
    return RunCtx(row, None, 0), Cursor(rep.j, key, 0)


def test_a_gigantic_answer_does_not_blow_the_daemons_memory(tmp_path):
    """The whole daemon in a child process: its peak RSS stays far below the 200 MB body."""
    jb, key = _journal(tmp_path)
    code = """
    import resource, sys, time
    from syncd.replayer import drain
    from tests.badinput.helpers import replayer_at
    rep = replayer_at(sys.argv[1], sys.argv[2], "k")
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    drain(rep, deadline=time.monotonic() + 1.5)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print((peak - base) // 1024, rep.j.conn.execute(
        "SELECT acked_seq FROM delivery").fetchone()[0])
    """
    for mode in ("gigantic-200", "gigantic-500"):
        with HostileServer(mode) as bad:
            r = child(code, str(jb.path), bad.url, env=clean_env())
        assert r.returncode == 0, r.stderr
        grown_mb, acked = map(int, r.stdout.split())
        assert grown_mb < 48, f"{mode}: the daemon grew by {grown_mb} MB"
        assert acked == 0


def test_plutosync_run_survives_a_hostile_server_then_delivers(tmp_path, pluto_server):
    """The real service process: a proxy's HTML 200 for a while, then the real server."""
    from tests.fixtures.daemon import DaemonProcess, wait_for

    jb, key = _journal(tmp_path)
    with HostileServer("html-200") as bad:
        env = {**clean_env(), **pluto_server.env(), "PLUTO_URL_API": bad.url,
               "PLUTO_URL_INGEST": bad.url, "PLUTO_URL_PY": bad.url}
        with DaemonProcess(pluto_server, jb.path.parent, env=env) as d:
            wait_for(lambda: jb.delivery(key).last_error, timeout=15, what="an error recorded")
            time.sleep(1.0)
            assert d.proc.poll() is None, d.log()  # still running
            assert bad.requests <= 15
            assert "protocol error" in d.log() and "HTML page" in d.log()
            shown = status_rows(jb.path.parent)[0]  # the CLI, while the daemon holds on
            assert shown["daemon_pid"] == d.pid and shown["pending"] == shown["events"]
            assert "protocol error" in shown["last_error"]
            assert d.terminate() == 0
    assert jb.delivery(key).acked_seq == 0
    with DaemonProcess(pluto_server, jb.path.parent, "--once", env=clean_env()) as d:
        assert d.wait() == 0, d.log()
    _assert_delivered(pluto_server, jb, key)


def test_a_reset_in_the_middle_of_run_details_is_transient(tmp_path, server):
    """The status check streams /details; a connection reset halfway through its body (urllib3's
    ProtocolError, not a requests error) is a retry, never an unexpected error of the run."""
    from syncd.client import PlutoClient, TransientError
    from syncd.settings import Settings

    run = server.create_run("reset-details", config=json.dumps({"big": "x" * 200_000}))
    client = PlutoClient(Settings.from_env(server=server.url,
                                           env={"PLUTO_API_KEY": server.api_key}))
    server.fault("reset", "/api/runs/details", count=1)
    with pytest.raises(TransientError, match="cannot read"):
        client.run_fields(run["runId"], ("status", "statusMetadata"))
    assert client.run_fields(run["runId"], ("status",)) == {"status": "RUNNING"}
