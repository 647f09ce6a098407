"""Behind a proxy (issue 11 item 9): a real forward proxy of the test's own on loopback.

A proxy asking for its login (407), or answering in the server's place with an HTML error page,
is not the Pluto server refusing an event: nothing is refused for good, the delivery waits, and
once the proxy is fixed everything arrives. Events refused earlier for a cause since fixed are
sent again on request (``plutosync push --retry-rejected``), listed before and after.
"""

from __future__ import annotations

import json

import pytest

from pluto_offline import journal
from tests.badinput.helpers import clean_env, cli, status_rows
from tests.badinput.proxy import PASSWORD, USER, Proxy
from tests.fixtures.daemon import DaemonProcess, JournalBuilder, wait_for

STEPS = 30


def _journal(path, run_id: str = "behind-proxy") -> tuple[JournalBuilder, int]:
    jb = JournalBuilder(path)
    key = jb.run(run_id, config={"lr": 0.1}, tags=["t"])
    jb.metrics(key, range(STEPS), per_event=10)
    jb.status(key, "COMPLETED")
    return jb, key


def _env(server, proxy_url: str) -> dict[str, str]:
    # requests reads both spellings; an inherited NO_PROXY=127.0.0.1 would bypass the proxy
    return clean_env(**server.env(), HTTP_PROXY=proxy_url, http_proxy=proxy_url, NO_PROXY="",
                     no_proxy="")


def _steps(server, run: dict) -> list[int]:
    return [p["step"] for p in server.metrics(run["id"], "proj", "train/loss")]


def test_a_proxy_asking_for_its_login_refuses_nothing_and_push_delivers_once_given(
        tmp_path, pluto_server):
    jb, key = _journal(tmp_path / "j")
    with Proxy("login") as proxy:
        res = cli("push", str(tmp_path / "j"), env=_env(pluto_server, proxy.address))
        assert res.returncode == 1, res.stderr
        said = (f"the proxy {proxy.address} between plutosync and the server refused the "
                "request (HTTP 407: Proxy Authentication Required): put the proxy's "
                "credentials in HTTPS_PROXY / HTTP_PROXY (http://USER:PASSWORD@PROXY:PORT), or "
                "list the server in NO_PROXY if it needs no proxy, then run `plutosync push` "
                "again; nothing was dropped")
        assert res.stderr.count(said) == 1, res.stderr
        assert "everything delivered" not in res.stderr and "rejected in" not in res.stderr
        assert "5 events left: not sent: the proxy asked for its credentials (HTTP 407) " \
               "(above)" in res.stderr
        shown = status_rows(tmp_path / "j")[0]
        assert shown["rejected"] == 0 and shown["pending"] == shown["events"]
        assert "HTTP 407" in shown["last_error"]
        assert proxy.forwarded.total() == 0

        fixed = cli("push", str(tmp_path / "j"),
                    env=_env(pluto_server, proxy.url_with(USER, PASSWORD)))
        assert fixed.returncode == 0, fixed.stderr
        assert "everything delivered" in fixed.stderr
        assert PASSWORD not in res.stderr + res.stdout + fixed.stderr + fixed.stdout
        assert proxy.forwarded["/api/runs/create"] == 1
    (run,) = pluto_server.list_runs("proj")
    assert run["status"] == "COMPLETED" and _steps(pluto_server, run) == list(range(STEPS))
    assert status_rows(tmp_path / "j")[0]["synced"] is True


def test_plutosync_run_behind_a_407_proxy_waits_slowly_and_refuses_nothing(
        tmp_path, pluto_server):
    jb, key = _journal(tmp_path / "j")
    with Proxy("login") as proxy:
        with DaemonProcess(pluto_server, tmp_path / "j",
                           env=_env(pluto_server, proxy.address)) as d:
            wait_for(lambda: jb.delivery(key).last_error, what="the 407 recorded")
            row = jb.delivery(key)
            assert "HTTP 407" in row.last_error and "restart plutosync" in row.last_error
            assert row.next_try - journal.now_ms() / 1000 > 50  # the refused key's slow pace
            assert not jb.rejected() and row.acked_seq == 0
            assert d.proc.poll() is None
            assert d.terminate() == 0
        assert d.log().count("Proxy Authentication Required") == 1, d.log()


@pytest.mark.parametrize("mode", ["html-404", "html-400"])
def test_an_html_error_page_in_the_servers_place_is_never_a_refusal(
        tmp_path, pluto_server, mode):
    jb, key = _journal(tmp_path / "j")
    with Proxy(mode) as proxy:
        env = _env(pluto_server, proxy.address)
        res = cli("push", str(tmp_path / "j"), "--timeout", "1", env=env)
        assert res.returncode == 1, res.stderr
        assert f"answered HTTP {mode[-3:]} with an answer that is not the Pluto server's " \
               "error" in res.stderr
        assert "is a proxy in the way, or the URL wrong?" in res.stderr
        assert "rejected in" not in res.stderr and not jb.rejected()
        assert jb.delivery(key).acked_seq == 0

        proxy.mode = "forward"  # the route is fixed
        fixed = cli("push", str(tmp_path / "j"), env=env)
        assert fixed.returncode == 0, fixed.stderr
    (run,) = pluto_server.list_runs("proj")
    assert run["status"] == "COMPLETED" and _steps(pluto_server, run) == list(range(STEPS))


def test_a_proxys_401_or_403_page_is_not_a_refused_key(tmp_path, pluto_server):
    """A proxy's own 403/401 HTML page (Squid's ACL) says nothing about the API key: push does
    not stop at once with advice to fix a key that is fine; it retries, as for any answer
    that is not the server's, and nothing is refused."""
    jb, key = _journal(tmp_path / "j")
    with Proxy("html-403") as proxy:
        for mode in ("html-403", "html-401"):
            proxy.mode = mode
            res = cli("push", str(tmp_path / "j"), "--timeout", "0.5",
                      env=_env(pluto_server, proxy.address))
            assert res.returncode == 1, res.stderr
            assert f"answered HTTP {mode[-3:]} with an answer that is not the Pluto server's " \
                   "error" in res.stderr and f"<h1>{mode[-3:]} " in res.stderr
            assert "is a proxy in the way, or the URL wrong?" in res.stderr
            assert "API key" not in res.stderr and "PLUTO_API_KEY" not in res.stderr
            assert "rejected in" not in res.stderr and not jb.rejected()
            assert f"HTTP {mode[-3:]}" in jb.delivery(key).last_error
            assert proxy.seen["/api/runs/create"] >= 1


def test_push_retry_rejected_sends_again_what_was_refused_for_a_cause_since_fixed(
        tmp_path, pluto_server):
    """Refusals of every kind the server can give, with the Pluto error shape: a run whose
    create was refused, another's config (at create and later), tags, and metrics."""
    jb = JournalBuilder(tmp_path / "j")
    lost = jb.run("never-opened")  # no tags: one create request, refused
    jb.metrics(lost, range(10), per_event=5)
    jb.status(lost, "COMPLETED")
    kept = jb.run("opened", config={"lr": 0.1}, tags=["a"])
    jb.metrics(kept, range(STEPS), per_event=10)
    jb.event(kept, "config", {"epochs": 3})
    jb.event(kept, "tags", ["a", "b"])
    with jb.j.transaction():  # the run's final state, as the SDK keeps it beside its events
        journal.set_run_state(jb.j, kept, config={"lr": 0.1, "epochs": 3}, tags=["a", "b"])
    jb.status(kept, "COMPLETED")
    # config updates: the create's config (refused: the open's ledger note is then sent on
    # its own, and refused too, which only warns), then the config event
    for path, count in (("/api/runs/create", 1), ("/api/runs/config/update", 3),
                        ("/api/runs/tags/update", 1), ("/ingest/metrics", 1000)):
        pluto_server.fault("400", path=path, count=count)
    first = cli("push", str(tmp_path / "j"), env=clean_env(**pluto_server.env()))
    assert first.returncode == 1, first.stderr
    refused = {r["seq"] for r in jb.rejected()}
    assert len(refused) == 4 + 6  # never-opened: all 4; opened: create's config, 3 metrics...
    pluto_server.clear_faults()

    again = cli("push", str(tmp_path / "j"), env=clean_env(**pluto_server.env()))
    assert again.returncode == 1 and "refused earlier" in again.stderr
    assert "`plutosync push --retry-rejected` sends them again" in again.stderr

    res = cli("push", "--retry-rejected", str(tmp_path / "j"),
              env=clean_env(**pluto_server.env()))
    assert res.returncode == 0, res.stderr
    err = res.stderr
    where = tmp_path / "j"
    listed = err.index(f"sending again from {where}: 10 events refused earlier:\n")
    lines = err[listed:].splitlines()[1:10]
    fault = "injected fault: HTTP 400"
    assert lines[:4] == [
        f"  proj/never-opened: event 1 (create): HTTP 400: {fault}",
        f"  proj/never-opened: 2 metrics events (seq 2-3): the run does not exist on the server "
        f"(its create was refused: HTTP 400: {fault})",
        f"  proj/never-opened: event 4 (status): the run does not exist on the server (its "
        f"create was refused: HTTP 400: {fault})",
        f"  proj/opened: event 5 (config): the server refused the run's config: HTTP 400: "
        f"{fault}",
    ]
    assert lines[-2:] == [f"  proj/opened: event 9 (config): HTTP 400: {fault}",
                          f"  proj/opened: event 10 (tags): HTTP 400: {fault}"]
    after = err.index(f"sent again from {where}: 10 events refused earlier: 10 delivered\n")
    assert after > listed and "10/10 events" in err
    assert "everything delivered" in err and "rejected in" not in err
    runs = {r["name"]: r for r in pluto_server.list_runs("proj")}
    assert runs["never-opened"]["status"] == "COMPLETED"
    assert [p["step"] for p in pluto_server.metrics(runs["never-opened"]["id"], "proj",
                                                    "train/loss")] == list(range(10))
    opened = pluto_server.get_run(runs["opened"]["id"])
    assert opened["status"] == "COMPLETED" and opened["tags"] == ["a", "b"]
    assert {k: opened["config"][k] for k in ("lr", "epochs")} == {"lr": 0.1, "epochs": 3}
    assert _steps(pluto_server, runs["opened"]) == list(range(STEPS))
    assert not jb.rejected()
    assert all(r["synced"] for r in status_rows(tmp_path / "j"))


def test_retry_rejected_lists_what_is_refused_again(tmp_path, pluto_server):
    jb, key = _journal(tmp_path / "j")
    pluto_server.fault("400", path="/api/runs/config/update", count=1)
    assert cli("push", str(tmp_path / "j"), env=clean_env(**pluto_server.env())).returncode == 1
    (rej,) = jb.rejected()
    pluto_server.fault("400", path="/api/runs/config/update", count=1)  # not fixed yet
    res = cli("push", "--retry-rejected", "--dir", str(tmp_path / "j"),
              env=clean_env(**pluto_server.env()))
    assert res.returncode == 1, res.stderr
    assert "1 event refused earlier: 0 delivered, 1 refused again (listed below)" in res.stderr
    line = f"rejected in {tmp_path / 'j'}: proj/behind-proxy: event {rej['seq']} (config): "
    assert line in res.stderr and "refused earlier, at" not in res.stderr.split(line)[1]
    assert json.loads(cli("status", "--dir", str(tmp_path / "j"), "--json",
                          env=clean_env()).stdout)[0]["rejected"] == 1
