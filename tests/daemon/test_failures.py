"""Failure handling: bad keys, rate limits, 5xx bursts, resets, outages and the reaper."""

from __future__ import annotations

import logging
import time

import pytest

from syncd.client import AuthError, TransientError
from syncd.replayer import drain
from syncd.retry import BACKOFF_CAP_S, next_delay
from tests.fixtures.daemon import JournalBuilder, replayer_for
from tests.fixtures.server import LocalServer

T0 = 1_600_000_000_000


def _trainer(jb: JournalBuilder, run_id: str = "trainer", steps: int = 200) -> int:
    key = jb.run(run_id, config={"lr": 0.1}, tags=["t"])
    jb.metrics(key, range(steps), per_event=20)
    jb.event(key, "tags", ["t", "done"])
    jb.status(key, "COMPLETED", time=T0)
    return key


def _assert_delivered_once(server, jb: JournalBuilder, key: int, steps: int = 200) -> None:
    row = jb.delivery(key)
    run = server.get_run(row.server_id)
    assert run["status"] == "COMPLETED" and run["tags"] == ["t", "done"]
    assert [p["step"] for p in server.metrics(row.server_id, "proj", "train/loss")] == list(
        range(steps))
    assert len([r for r in server.list_runs("proj") if r["name"] == row.name]) == 1
    assert not jb.rejected(key)


def test_retry_policy_backoff_is_capped_jittered_and_honours_retry_after():
    waits = [next_delay(TransientError(503, "busy"), n) for n in range(1, 40)]
    assert all(0 <= w <= BACKOFF_CAP_S for w in waits)
    assert len({round(w, 3) for w in waits}) > 30  # full jitter, not a fixed ladder
    assert 7 <= next_delay(TransientError(429, "slow down", retry_after=7), 1) <= 7.7
    assert next_delay(AuthError(401, "bad key"), 1) >= 60


def test_a_bad_key_is_one_clear_error_and_nothing_is_dropped(tmp_path, pluto_server, caplog):
    jb = JournalBuilder(tmp_path / "j")
    key = _trainer(jb)
    bad = "plt_wrong_key_for_this_server"
    rep = replayer_for(jb.path, pluto_server, api_key=bad)
    with caplog.at_level(logging.INFO, logger="plutosync"):
        rep.run_pass()
        rep.run_pass()  # paused: no second request, no second line
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "refused the API key" in errors[0] and "PLUTO_API_KEY" in errors[0]
    assert bad not in caplog.text
    row = jb.delivery(key)
    assert row.acked_seq == 0 and row.server_id is None
    assert "refused the API key" in row.last_error and row.next_try > time.time() + 30
    assert pluto_server.request_counts()["/api/runs/create"] == 1

    assert drain(replayer_for(jb.path, pluto_server), deadline=None)  # the right key
    _assert_delivered_once(pluto_server, jb, key)


def test_an_ingest_422_about_the_key_is_an_auth_error_not_a_rejection(tmp_path, pluto_server):
    jb = JournalBuilder(tmp_path / "j")
    key = jb.run("trainer")
    assert drain(replayer_for(jb.path, pluto_server), deadline=None)  # created with a good key
    jb.metrics(key, range(50))
    rep = replayer_for(jb.path, pluto_server, api_key="plt_revoked")
    rep.run_pass()
    assert rep.server_state == "auth"
    assert isinstance(rep.last_auth_error, AuthError) and rep.last_auth_error.code == 422
    assert not jb.rejected(key)
    assert jb.delivery(key).acked_seq == 1  # only the create


def test_429_with_retry_after_is_waited_for(tmp_path, pluto_server):
    jb = JournalBuilder(tmp_path / "j")
    key = _trainer(jb)
    pluto_server.fault("429", path="/ingest/metrics", count=1, retry_after=1)
    start = time.monotonic()
    assert drain(replayer_for(jb.path, pluto_server), deadline=time.monotonic() + 30)
    assert time.monotonic() - start >= 1.0
    assert pluto_server.faults()[0]["fired"] == 1
    _assert_delivered_once(pluto_server, jb, key)


def test_503_bursts_on_every_endpoint_deliver_everything_once(tmp_path, pluto_server, caplog):
    jb = JournalBuilder(tmp_path / "j")
    keys = [_trainer(jb, f"trainer-{i}") for i in range(3)]
    pluto_server.fault("503", path="/", p=0.25, seed=7)
    with caplog.at_level(logging.INFO, logger="plutosync"):
        assert drain(replayer_for(jb.path, pluto_server, batch_bytes=4000),
                     deadline=time.monotonic() + 60)
    assert caplog.text.count("delivery paused") == 1  # not one line per failed request
    assert pluto_server.faults()[0]["fired"] >= 5
    pluto_server.clear_faults()
    for key in keys:
        _assert_delivered_once(pluto_server, jb, key)


def _failures(rep, jb: JournalBuilder, key: int, server) -> list[tuple[int, float]]:
    """Deliver one pass at a time; for each failed try: (the run's backoff rung, seconds until
    its next try as recorded in the journal)."""
    seen, out = 0, []
    while rep.outstanding():
        rep.run_pass()
        fired = sum(f["fired"] for f in server.faults())
        if fired > seen:
            seen = fired
            row = jb.delivery(key)
            out.append((rep._sched[key].attempts, row.next_try - time.time()))
        time.sleep(min(rep.next_due() or 0.0, 10.0))
        assert len(out) < 20, out
    return out


def test_a_server_failing_now_one_request_now_another_is_retried_as_after_a_first_failure(
        tmp_path, pluto_server):
    """A fresh run's open sends create, config and the RUNNING mark, retried whole: each of
    them failing once, in turn, is a flapping server, not three failures in a row (a 25 % 5xx
    proxy otherwise pushed every multi-request step towards the 60 s backoff cap)."""
    jb = JournalBuilder(tmp_path / "j")
    key = _trainer(jb)
    for path in ("/api/runs/create", "/api/runs/config/update", "/api/runs/status/update"):
        pluto_server.fault("503", path=path, count=1)
    failures = _failures(replayer_for(jb.path, pluto_server), jb, key, pluto_server)
    assert [rung for rung, _ in failures] == [1, 1, 1]
    assert all(wait <= 1.0 + 0.1 for _, wait in failures)  # full jitter of the first rung
    pluto_server.clear_faults()
    _assert_delivered_once(pluto_server, jb, key)


def test_one_request_failing_again_and_again_still_backs_off(tmp_path, pluto_server):
    """The requests before it answered every time: the backoff still grows, so a server
    refusing one request is not asked again and again at the first rung's pace."""
    jb = JournalBuilder(tmp_path / "j")
    key = _trainer(jb)
    pluto_server.fault("503", path="/api/runs/config/update", count=3)
    failures = _failures(replayer_for(jb.path, pluto_server), jb, key, pluto_server)
    assert [rung for rung, _ in failures] == [1, 2, 3]
    assert pluto_server.request_counts()["/api/runs/create"] == 4  # answered every time
    pluto_server.clear_faults()
    _assert_delivered_once(pluto_server, jb, key)


def test_a_rate_limit_climbs_the_ladder_whichever_request_it_falls_on(tmp_path, pluto_server):
    """429 says slow down: unlike a flapping 5xx, it never holds the rung."""
    jb = JournalBuilder(tmp_path / "j")
    key = _trainer(jb)
    for path in ("/api/runs/create", "/api/runs/config/update"):
        pluto_server.fault("429", path=path, count=1, retry_after=0)
    failures = _failures(replayer_for(jb.path, pluto_server), jb, key, pluto_server)
    assert [rung for rung, _ in failures] == [1, 2]
    pluto_server.clear_faults()
    _assert_delivered_once(pluto_server, jb, key)


@pytest.mark.parametrize("path", ["/api/runs/create", "/ingest/metrics", "/api/runs/tags/update",
                                  "/api/runs/status/update"])
def test_a_reset_after_the_server_applied_the_request_duplicates_nothing(
        tmp_path, pluto_server, path):
    jb = JournalBuilder(tmp_path / "j")
    key = _trainer(jb)
    pluto_server.fault("reset", path=path, count=1)  # applied, then the answer is cut
    assert drain(replayer_for(jb.path, pluto_server), deadline=time.monotonic() + 30)
    assert pluto_server.faults()[0]["fired"] == 1
    _assert_delivered_once(pluto_server, jb, key)
    assert jb.delivery(key).conflict is None


def test_an_outage_pauses_every_run_and_delivery_resumes_after_it(tmp_path, pluto_server, caplog):
    jb = JournalBuilder(tmp_path / "j")
    keys = [_trainer(jb, f"trainer-{i}") for i in range(2)]
    pluto_server.stop()
    rep = replayer_for(jb.path, pluto_server)
    with caplog.at_level(logging.INFO, logger="plutosync"):
        rep.run_pass()
        assert "cannot reach" in jb.delivery(keys[0]).last_error
        # one request failed; the other run was not tried into the same wall
        assert jb.delivery(keys[1]).last_error is None
        pluto_server.start()
        assert drain(rep, deadline=time.monotonic() + 30)
    assert caplog.text.count("delivery paused") == 1
    assert "the server answers again" in caplog.text
    for key in keys:
        _assert_delivered_once(pluto_server, jb, key)
        assert jb.delivery(key).last_error is None


def test_a_terminal_status_lands_after_the_reaper_marked_the_run_failed(tmp_path):
    server = LocalServer(tmp_path / "srv", reaper=(0.2, 0.2)).start()
    try:
        jb = JournalBuilder(tmp_path / "j")
        key = jb.run("long-offline", created_at=T0 - 60_000)
        jb.metrics(key, range(10))
        assert drain(replayer_for(jb.path, server), deadline=None)
        time.sleep(0.3)  # no heartbeat meanwhile (the network was down, say)
        server.reap()
        assert server.get_run(jb.delivery(key).server_id)["status"] == "FAILED"
        jb.status(key, "COMPLETED", time=T0)
        assert drain(replayer_for(jb.path, server), deadline=None)
        run = server.get_run(jb.delivery(key).server_id)
        assert run["status"] == "COMPLETED"
        assert run["statusUpdated"].startswith("2020-09-13")
    finally:
        server.stop()


def test_the_latest_end_wins_even_below_the_servers_severity(tmp_path, pluto_server):
    # docs/delivery.md: the latest status change by time decides, not the server's severity
    # order (a rank that failed, then another that finished later: COMPLETED)
    jb = JournalBuilder(tmp_path / "j")
    key = jb.run("failed-then-completed", created_at=T0)
    jb.status(key, "FAILED", time=T0 + 1_000)
    jb.status(key, "COMPLETED", time=T0 + 2_000)
    assert drain(replayer_for(jb.path, pluto_server), deadline=None)
    run = pluto_server.get_run(jb.delivery(key).server_id)
    assert run["status"] == "COMPLETED"
    assert run["statusMetadata"]["plutoOffline"] == {"time": T0 + 2_000, "status": "COMPLETED"}


def test_an_earlier_end_delivered_last_does_not_undo_the_later_one(tmp_path, pluto_server):
    first, second = JournalBuilder(tmp_path / "a"), JournalBuilder(tmp_path / "b")
    k1 = first.run("shared", created_at=T0)
    first.status(k1, "FAILED", time=T0 + 1_000)
    k2 = second.run("shared", created_at=T0 + 2_000, resume_ok=True)
    second.status(k2, "COMPLETED", time=T0 + 3_000)
    assert drain(replayer_for(second.path, pluto_server), deadline=None)
    assert drain(replayer_for(first.path, pluto_server), deadline=None)
    run = pluto_server.get_run(second.delivery(k2).server_id)
    assert first.delivery(k1).server_id == run["id"]
    assert run["status"] == "COMPLETED"
    assert not first.rejected() and not second.rejected()
