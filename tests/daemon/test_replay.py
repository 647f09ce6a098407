"""Replay of journals written event by event, checked on the local server's read endpoints."""

from __future__ import annotations

import json

from pluto_offline import journal
from syncd.replayer import drain
from tests.fixtures.daemon import JournalBuilder, replayer_for
from tests.fixtures.server import user_config

T0 = 1_600_000_000_000  # journaled times in 2020: the server must keep them, not "now"


def _stored(server, run_id: int, name: str = "train/loss") -> list[int]:
    return [p["step"] for p in server.metrics(run_id, "proj", name)]


def test_full_run_is_delivered_with_real_times_and_nothing_twice(tmp_path, pluto_server):
    jb = JournalBuilder(tmp_path / "j")
    key = jb.run("trainer-1", config={"lr": 0.1}, tags=["base"], created_at=T0)
    jb.event(key, "lognames", {"type": "METRIC", "names": ["train/loss"]})
    jb.metrics(key, range(1000), per_event=50)
    jb.event(key, "config", {"opt": {"momentum": 0.9}})
    jb.event(key, "config", {})  # an empty delta is never sent (the server refuses it)
    jb.event(key, "tags", ["base", "best"])
    jb.status(key, "COMPLETED", time=T0 + 60_000)

    rep = replayer_for(jb.path, pluto_server)
    assert drain(rep, deadline=None)
    row = jb.delivery(key)
    assert row.server_id and row.display_id == "PRO-1" and row.url
    assert row.acked_seq == journal.pending_events(jb.j, key, after=0)[-1].seq

    run = pluto_server.get_run(row.server_id)
    assert run["status"] == "COMPLETED"
    assert run["externalId"] == "trainer-1"
    assert user_config(run["config"]) == {"lr": 0.1, "opt": {"momentum": 0.9}}
    assert run["tags"] == ["base", "best"]
    assert run["createdAt"].startswith("2020-09-13")
    assert run["statusUpdated"].startswith("2020-09-13")
    assert [n["logName"] for n in run["logNames"]] == ["train/loss"]
    assert _stored(pluto_server, row.server_id) == list(range(1000))
    # 20 metrics events, one NDJSON request
    counts = pluto_server.request_counts()
    assert counts["/ingest/metrics"] == 1
    # the create's config, the delta, the time of the tags event and the note of the end
    # (the run's id was chosen: other journals may join it, so config and tags go with their
    # times and the status changes are noted in the run's ledger: docs/delivery.md)
    assert counts["/api/runs/config/update"] == 4

    # A second replay of the same journal sends nothing.
    assert drain(replayer_for(jb.path, pluto_server), deadline=None)
    assert pluto_server.request_counts() == {**counts, "/_admin/stats": counts["/_admin/stats"] + 1}


def test_metrics_batches_respect_the_size_limit(tmp_path, pluto_server):
    jb = JournalBuilder(tmp_path / "j")
    key = jb.run("big")
    jb.metrics(key, range(2000), per_event=100)  # 20 events of ~6 KB
    rep = replayer_for(jb.path, pluto_server, batch_bytes=30_000)
    assert drain(rep, deadline=None)
    assert 4 <= pluto_server.request_counts()["/ingest/metrics"] <= 5
    assert pluto_server.metric_counts(jb.delivery(key).server_id) == {
        "received": 2000, "stored": 2000, "duplicates": 0}


def test_close_sends_nothing_and_the_run_stays_running(tmp_path, pluto_server):
    jb = JournalBuilder(tmp_path / "j")
    key = jb.run("eval-target")
    jb.metrics(key, range(10))
    jb.event(key, "close")
    assert drain(replayer_for(jb.path, pluto_server), deadline=None)
    assert pluto_server.get_run(jb.delivery(key).server_id)["status"] == "RUNNING"
    # the only status request is the open's RUNNING mark (docs/delivery.md): no end
    assert pluto_server.request_counts()["/api/runs/status/update"] == 1


def test_resume_by_display_id_and_by_numeric_id(tmp_path, pluto_server):
    made = pluto_server.create_run("proj", "elsewhere", externalId="made-elsewhere")
    pluto_server.request("POST", "/api/runs/status/update",
                         json={"runId": made["runId"], "status": "COMPLETED"})
    jb = JournalBuilder(tmp_path / "j")
    by_display = jb.ref_run(made["displayId"], "display")
    jb.metrics(by_display, range(5), names=["eval/acc"])
    jb.event(by_display, "close")
    by_id = jb.ref_run(str(made["runId"]), "id")
    jb.event(by_id, "config", {"evaluated": True})
    jb.event(by_id, "close")

    assert drain(replayer_for(jb.path, pluto_server), deadline=None)
    assert jb.delivery(by_display).server_id == made["runId"]
    assert jb.delivery(by_id).display_id == made["displayId"]
    run = pluto_server.get_run(made["runId"])
    assert run["status"] == "RUNNING"  # resumed, then only closed
    assert user_config(run["config"]) == {"evaluated": True}
    assert _stored(pluto_server, made["runId"], "eval/acc") == list(range(5))


def test_resume_of_a_run_the_server_does_not_have_rejects_its_events_with_a_reason(
        tmp_path, pluto_server):
    jb = JournalBuilder(tmp_path / "j")
    ghost = jb.ref_run("PRO-99", "display")
    jb.metrics(ghost, range(5))
    jb.event(ghost, "close")
    fine = jb.run("fine")
    jb.status(fine, "COMPLETED")

    assert drain(replayer_for(jb.path, pluto_server), deadline=None)
    rejected = jb.rejected(ghost)
    assert [r["kind"] for r in rejected] == ["resume", "metrics", "close"]
    assert rejected[0]["code"] == 404 and "Run not found" in rejected[0]["reason"]
    assert "does not exist on the server" in rejected[1]["reason"]
    assert pluto_server.get_run(jb.delivery(fine).server_id)["status"] == "COMPLETED"


def test_fork_of_an_unsynced_parent_waits_for_it(tmp_path, pluto_server):
    jb = JournalBuilder(tmp_path / "j")
    parent = jb.run("parent", config={"lr": 0.1, "depth": 3}, tags=["p"])
    jb.metrics(parent, range(100))
    # as the SDK journals it: the parent's config and tags (as of the fork) merged in
    child = jb.run("child", config={"lr": 0.01, "depth": 3}, tags=["p"],
                   fork={"parent": {"key": parent}, "step": 50, "inherit_config": True,
                         "inherit_tags": True})
    jb.metrics(child, range(51, 60))
    jb.status(child, "COMPLETED")
    jb.event(parent, "config", {"after_the_fork": 1})  # delivered before the child: not inherited
    jb.event(parent, "tags", ["p", "after_the_fork"])
    jb.status(parent, "COMPLETED")
    # The child's row comes first in this pass: it must wait, not fail.
    rep = replayer_for(jb.path, pluto_server)
    rep._deliver(journal.get_run(jb.j, child))
    assert jb.delivery(child).server_id is None
    assert "waiting for fork parent proj/parent" in jb.delivery(child).last_error

    assert drain(rep, deadline=None)
    p_id, c_id = jb.delivery(parent).server_id, jb.delivery(child).server_id
    run = pluto_server.get_run(c_id)
    assert (run["forkedFromRunId"], run["forkStep"]) == (p_id, 50)
    assert user_config(run["config"]) == {"lr": 0.01, "depth": 3}
    assert run["tags"] == ["p"]
    assert run["status"] == "COMPLETED"
    assert not jb.rejected()


def test_fork_of_a_server_run_by_display_id(tmp_path, pluto_server):
    parent = pluto_server.create_run("proj", "p", externalId="server-parent")
    pluto_server.ingest("metrics", parent["runId"], "proj",
                        [{"time": T0, "step": s, "data": {"x": s}} for s in range(10)])
    jb = JournalBuilder(tmp_path / "j")
    child = jb.run("child", fork={"parent": {"display_id": parent["displayId"]}, "step": 5,
                                  "inherit_config": False, "inherit_tags": False})
    assert drain(replayer_for(jb.path, pluto_server), deadline=None)
    run = pluto_server.get_run(jb.delivery(child).server_id)
    assert (run["forkedFromRunId"], run["forkStep"]) == (parent["runId"], 5)


def test_an_existing_external_id_is_a_conflict_not_a_merge(tmp_path, pluto_server):
    other = pluto_server.create_run("proj", "someone-else", externalId="taken",
                                    config=json.dumps({"theirs": 1}))
    jb = JournalBuilder(tmp_path / "j")
    clash = jb.run("taken", config={"mine": 2})
    jb.metrics(clash, range(10))
    fine = jb.run("fine")
    jb.metrics(fine, range(10))

    rep = replayer_for(jb.path, pluto_server)
    assert drain(rep, deadline=None)  # nothing left that can go without a person
    row = jb.delivery(clash)
    assert row.server_id is None
    assert "externalId 'taken' already exists" in row.conflict
    assert [r.key for r in rep.stuck()] == [clash]
    assert pluto_server.get_run(other["runId"])["config"] == {"theirs": 1}
    assert pluto_server.metric_counts(other["runId"])["stored"] == 0
    assert _stored(pluto_server, jb.delivery(fine).server_id) == list(range(10))


def test_a_create_answered_but_not_acked_before_a_crash_is_not_a_conflict(tmp_path, pluto_server):
    jb = JournalBuilder(tmp_path / "j")
    key = jb.run("crashed-after-send")
    jb.metrics(key, range(3))
    # The daemon marked the create sent, the server created the run, the daemon died.
    create = journal.pending_events(jb.j, key, after=0)[0]
    journal.mark_sent(jb.j, key, create.seq)
    made = pluto_server.create_run("proj", "crashed-after-send", externalId="crashed-after-send")

    assert drain(replayer_for(jb.path, pluto_server), deadline=None)
    assert jb.delivery(key).server_id == made["runId"]
    assert jb.delivery(key).conflict is None
    assert len(pluto_server.list_runs("proj")) == 1


def test_a_refused_event_is_recorded_and_the_run_continues(tmp_path, pluto_server):
    jb = JournalBuilder(tmp_path / "j")
    key = jb.run("with-bad-tags")
    bad = jb.event(key, "tags", ["group:a", "group:b"])
    jb.event(key, "tags", ["group:a", "ok"])
    jb.status(key, "COMPLETED")
    assert drain(replayer_for(jb.path, pluto_server), deadline=None)
    [rej] = jb.rejected(key)
    assert (rej["seq"], rej["code"]) == (bad, 400)
    assert "at most one group" in rej["reason"]
    run = pluto_server.get_run(jb.delivery(key).server_id)
    assert run["tags"] == ["group:a", "ok"] and run["status"] == "COMPLETED"


def test_a_bad_ndjson_line_costs_only_its_own_event(tmp_path, pluto_server):
    jb = JournalBuilder(tmp_path / "j")
    key = jb.run("bad-line")
    jb.metrics(key, range(0, 40), per_event=10)
    good_then_bad = "\n".join([
        json.dumps({"time": T0, "step": 40, "data": {"train/loss": 4.0}}),
        '{"time": 1, "step": -3, "data": {"train/loss": 1}}',
        json.dumps({"time": T0, "step": 42, "data": {"train/loss": 4.2}}),
    ])
    bad_seq = jb.event(key, "metrics", good_then_bad, raw=True, step=42)
    jb.metrics(key, range(50, 90), per_event=10)
    assert drain(replayer_for(jb.path, pluto_server), deadline=None)
    [rej] = jb.rejected(key)
    assert rej["seq"] == bad_seq and rej["code"] == 422
    assert "1 of 3 lines refused" in rej["reason"] and '"step": -3' in rej["reason"]
    assert _stored(pluto_server, jb.delivery(key).server_id) == [*range(40), 40, 42, *range(50, 90)]
