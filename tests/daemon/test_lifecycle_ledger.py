"""``finalstate.repair`` against the local server: the run's latest status change is put back
from what the server's marker and the run's ledger (``plutoOffline.lifecycle``) say, whichever
journal it came from. The daemon-level cases (requests held past the timeout, daemons killed)
are in tests/chaos/test_stall_journals.py."""

from __future__ import annotations

import json

import pytest

from syncd import finalstate, ledger
from syncd.client import PlutoClient
from tests.fixtures.daemon import settings_for
from tests.fixtures.server import LocalServer, user_config


@pytest.fixture
def client(pluto_server: LocalServer) -> PlutoClient:
    return PlutoClient(settings_for(pluto_server))


def _run(server: LocalServer, project: str) -> int:
    return server.create_run(project, externalId=f"{project}-x")["runId"]


def _state(server: LocalServer, run_id: int) -> tuple[str, dict]:
    run = server.get_run(run_id)
    meta = run["statusMetadata"]
    return run["status"], json.loads(meta) if isinstance(meta, str) else meta


def test_a_later_end_from_another_journal_is_put_back_with_its_metadata(
        pluto_server: LocalServer, client: PlutoClient) -> None:
    sid = _run(pluto_server, "lc-a")
    ledger.record_change(client, sid, "j1:1:9", 2_000, "TERMINATED", {"signal": "SIGTERM"})
    finalstate.mark_open(client, sid, 500)  # a RUNNING mark applied late, over that end
    put = finalstate.repair(client, sid, finalstate.Change(1_000, "FAILED"), ledgered=True)
    assert put == finalstate.Change(2_000, "TERMINATED", {"signal": "SIGTERM"})
    status, meta = _state(pluto_server, sid)
    assert status == "TERMINATED"
    assert meta == {"signal": "SIGTERM", "plutoOffline": {"time": 2_000, "status": "TERMINATED"}}
    # done: the next repair sends nothing
    assert finalstate.repair(client, sid, finalstate.Change(1_000, "FAILED"),
                             ledgered=True) is None


def test_a_later_end_of_lower_severity_reopens_first(pluto_server: LocalServer,
                                                     client: PlutoClient) -> None:
    sid = _run(pluto_server, "lc-b")
    ledger.record_change(client, sid, "j1:1:4", 3_000, "COMPLETED")
    finalstate.end(client, sid, "FAILED", {"reason": "killed"}, 1_000)  # applied late
    assert _state(pluto_server, sid)[0] == "FAILED"
    finalstate.repair(client, sid, finalstate.Change(1_000, "FAILED", {"reason": "killed"}),
                      ledgered=True)
    assert _state(pluto_server, sid)[0] == "COMPLETED"


def test_without_the_ledger_the_marker_still_wins_over_an_older_own_end(
        pluto_server: LocalServer, client: PlutoClient) -> None:
    """A run no other journal joins has no ledger: the marker's later end, reopened by a late
    create (status RUNNING, marker kept), is put back over the journal's older one."""
    sid = _run(pluto_server, "lc-c")
    finalstate.end(client, sid, "COMPLETED", None, 2_000)
    client.update_status(sid, "RUNNING")  # a reopen leaves the marker as it was
    put = finalstate.repair(client, sid, finalstate.Change(1_000, "FAILED"), ledgered=False)
    assert put == finalstate.Change(2_000, "COMPLETED")
    assert _state(pluto_server, sid)[0] == "COMPLETED"


def test_a_later_open_is_the_runs_state(pluto_server: LocalServer,
                                        client: PlutoClient) -> None:
    """A resume elsewhere after this journal's end: the run is RUNNING, marked with that open
    and the end it reopened."""
    sid = _run(pluto_server, "lc-d")
    ledger.record_change(client, sid, "j1:1:2", 5_000, "RUNNING")
    finalstate.end(client, sid, "COMPLETED", None, 1_000)
    finalstate.repair(client, sid, finalstate.Change(1_000, "COMPLETED"), ledgered=True)
    status, meta = _state(pluto_server, sid)
    assert status == "RUNNING"
    assert meta["plutoOffline"]["time"] == 5_000
    assert meta["plutoOffline"]["end"]["status"] == "COMPLETED"


def test_a_cancel_from_the_ui_is_never_overridden(pluto_server: LocalServer,
                                                  client: PlutoClient) -> None:
    sid = _run(pluto_server, "lc-e")
    client.update_status(sid, "CANCELLED")  # no marker: a person in the UI
    finalstate.repair(client, sid, finalstate.Change(9_000, "COMPLETED"), ledgered=True)
    assert _state(pluto_server, sid)[0] == "CANCELLED"


def test_the_ledger_keeps_an_ends_metadata_only_up_to_16_kib(pluto_server: LocalServer,
                                                             client: PlutoClient) -> None:
    sid = _run(pluto_server, "lc-f")
    small = {"traceback": "x" * 100}
    ledger.record_change(client, sid, "j:1:3", 1_000, "FAILED", small)
    ledger.record_change(client, sid, "j:1:7", 2_000, "FAILED",
                         {"traceback": "y" * ledger.MAX_CHANGE_METADATA})
    config = pluto_server.get_run(sid)["config"]
    assert config["plutoOffline"]["lifecycle"] == {
        "j:1:3": {"time": 1_000, "status": "FAILED", "metadata": small},
        "j:1:7": {"time": 2_000, "status": "FAILED"}}
    assert user_config(config) == {}
    assert sorted(ledger.changes(config["plutoOffline"]["lifecycle"])) == [
        (1_000, "FAILED", small), (2_000, "FAILED", None)]


def test_a_reopen_never_sets_the_marker_back_before_a_later_open(pluto_server: LocalServer,
                                                                 client: PlutoClient) -> None:
    """The heartbeat's reopen of a FAILED run (finalstate.reopen): a marker that tells of a
    later open, with the end it reopened, is written back as it was, not replaced by this
    journal's older open (an end between the two would then win over the later open)."""
    sid = _run(pluto_server, "lc-g")
    marker = {"time": 3_000, "status": "RUNNING",
              "end": {"time": 2_500, "status": "COMPLETED", "metadata": None}}
    client.update_status(sid, "FAILED", metadata=json.dumps({"plutoOffline": marker}))
    finalstate.reopen(client, sid, finalstate.ServerState.read(client, sid), 2_000)
    assert _state(pluto_server, sid) == ("RUNNING", {"plutoOffline": marker})
    # a marker lost to the reaper: opened at this journal's open
    client.update_status(sid, "FAILED", metadata=json.dumps({"reason": "no heartbeat"}))
    finalstate.reopen(client, sid, finalstate.ServerState.read(client, sid), 2_000)
    assert _state(pluto_server, sid) == (
        "RUNNING", {"plutoOffline": {"time": 2_000, "status": "RUNNING", "end": None}})
