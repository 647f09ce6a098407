"""``run.alert(..., url=..., remote=False)``: the stock SDK's webhook message, POSTed by
plutosync to a real HTTP receiver on loopback, never with the Pluto key; a refusing or failing
webhook never stops the rest of the run."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pluto.query as pq
import pytest
from pluto.api import make_compat_webhook_v1

from pluto_offline import journal
from syncd import alerts
from syncd.client import RejectedError, TransientError
from tests.console import jobs
from tests.fixtures.daemon import DaemonProcess

SECRET = "/services/T0AAA/B0BBB/s3cretT0ken"  # a Slack webhook's path is its secret


class Hook:
    """A webhook receiver on loopback: answers the given statuses in turn (then 200)."""

    def __init__(self, *statuses: int) -> None:
        self.statuses = list(statuses)
        self.got: list[tuple[str, dict[str, str], bytes]] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                hook.got.append((self.path, dict(self.headers), body))
                status = hook.statuses.pop(0) if hook.statuses else 200
                answer = b"ok" if status < 300 else b"invalid_payload " + SECRET.encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook():
    made: list[Hook] = []

    def make(*statuses: int) -> Hook:
        made.append(Hook(*statuses))
        return made[-1]

    yield make
    for h in made:
        h.close()


def _alerts(journal_dir) -> tuple[list[dict], str]:
    with journal.Journal.open(journal_dir, readonly=True) as j:
        payloads = [json.loads(p) for (p,) in j.conn.execute(
            "SELECT payload FROM events WHERE kind = 'alert' ORDER BY seq")]
        (row,) = journal.all_runs(j)
    return payloads, row.url


def _stock(alert: dict, view_url: str) -> bytes:
    """What the stock SDK would POST for these facts."""
    return make_compat_webhook_v1(alert["timestamp"] / 1000, alert["level"], alert["title"],
                                  alert["body"], alert["step"], view_url)


def test_a_webhook_alert_is_the_stock_message_once_without_the_key(tmp_path, pluto_server,
                                                                  hook):
    h = hook()
    code, _, err = jobs.run(tmp_path / "j", f"""
        run = pluto.init(name="w", run_id="w1", settings={{"url_webhook": "{h.url}/setting"}})
        for i in range(3):
            run.log({{"loss": 1.0 / (i + 1)}})
        run.alert("loss is NaN", title="divergence", level="WARNING", url="{h.url}{SECRET}",
                  remote=False)
        run.alert("to the server", title="plain", url="{h.url}{SECRET}")  # remote=True
        run.alert("via the setting", remote=False)
        run.finish()
    """, PLUTO_DISABLE_SYSTEM_METRICS="1")
    assert code == 0, err
    d = DaemonProcess(pluto_server, tmp_path / "j", "--exit-when-idle")
    assert d.wait(60) == 0, d.log()
    (hooked, plain, setting), view_url = _alerts(tmp_path / "j")
    sid = pluto_server.list_runs("proj")[0]["id"]
    assert view_url and view_url.endswith(f"/{sid}")
    assert hooked["step"] == setting["step"] == 3  # the run's step, as the stock message says
    # exactly once each, byte for byte the stock SDK's message, to the URL given
    assert [(path, body) for path, _, body in h.got] == [
        (SECRET, _stock(hooked, view_url)), ("/setting", _stock(setting, view_url))]
    for _, headers, _ in h.got:
        assert "authorization" not in {k.lower() for k in headers}
        assert not any(pluto_server.api_key in v for v in headers.values())
        assert headers["Content-Type"] == "application/json"
    # remote=True (the default) goes to the Pluto server, without the webhook URL (the stock
    # SDK sends its url field empty)
    (stored,) = pluto_server.request("GET", "/_admin/alerts",
                                     params={"runId": sid}).json()["alerts"]
    assert (stored["title"], stored["body"], stored["url"]) == ("plain", "to the server", None)
    assert "webhook" not in plain
    assert SECRET not in d.log() and "s3cret" not in d.log()
    assert pluto_server.get_run(sid)["status"] == "COMPLETED"


def test_the_webhook_setting_never_reaches_the_pluto_server(tmp_path, pluto_server, hook):
    """A job passes its Slack webhook (and a proxy with a password) as settings: the webhook
    still gets the alert, but the run's loggerSettings on the server, and every byte of the
    server's data directory, hold neither; the job's other settings do arrive."""
    h = hook()
    proxy = "http://bob:pr0xyPassw0rd@proxy.example:3128"
    code, _, err = jobs.run(tmp_path / "j", f"""
        run = pluto.init(name="s", run_id="s1", settings={{
            "url_webhook": "{h.url}{SECRET}", "https_proxy": "{proxy}", "mine": 1}})
        run.alert("via the setting", remote=False)
        run.finish()
    """, PLUTO_DISABLE_SYSTEM_METRICS="1")
    assert code == 0, err
    d = DaemonProcess(pluto_server, tmp_path / "j", "--exit-when-idle")
    assert d.wait(60) == 0, d.log()
    assert [path for path, _, _ in h.got] == [SECRET]  # the setting is still the job's
    client = pq.Client(api_token=pluto_server.api_key, host=pluto_server.url)
    try:
        run = client.get_run("proj", "PRO-1")
    finally:
        client.close()
    settings = run["loggerSettings"]
    settings = json.loads(settings) if isinstance(settings, str) else settings
    assert settings["mine"] == 1 and settings["mode"] == "offline"  # the settings did arrive
    assert "url_webhook" not in settings
    assert settings["https_proxy"] == "http://bob:***@proxy.example:3128"
    assert "s3cret" not in json.dumps(run) and "pr0xyPassw0rd" not in json.dumps(run)
    # nor anywhere the server keeps anything: its database, its write-ahead log, its log
    files = [p for p in pluto_server.data_dir.rglob("*") if p.is_file()]
    assert any(p.name == "pluto-server.db-wal" for p in files)
    for path in files:
        raw = path.read_bytes()
        assert b"s3cretT0ken" not in raw and b"pr0xyPassw0rd" not in raw, path


def test_a_refusing_or_failing_webhook_never_stops_the_run(tmp_path, pluto_server, hook):
    # the first alert: a 503, then taken on the retry; the second: refused (400)
    h = hook(503, 200, 400)
    code, _, err = jobs.run(tmp_path / "j", f"""
        run = pluto.init(name="r", run_id="r1")
        run.log({{"loss": 1.0}})
        run.alert("first", url="{h.url}{SECRET}", remote=False)
        run.log({{"loss": 0.5}})
        run.alert("second", url="{h.url}{SECRET}", remote=False)
        run.log({{"loss": 0.25}})
        run.finish()
    """, PLUTO_DISABLE_SYSTEM_METRICS="1")
    assert code == 0, err
    d = DaemonProcess(pluto_server, tmp_path / "j", "--exit-when-idle")
    assert d.wait(60) == 0, d.log()
    (first, second), view_url = _alerts(tmp_path / "j")
    assert [body for _, _, body in h.got] == [_stock(first, view_url)] * 2 + [
        _stock(second, view_url)]
    sid = pluto_server.list_runs("proj")[0]["id"]
    assert pluto_server.get_run(sid)["status"] == "COMPLETED"
    assert [p["value"] for p in pluto_server.metrics(sid, "proj", "loss")] == [1.0, 0.5, 0.25]
    with journal.Journal.open(tmp_path / "j", readonly=True) as j:
        (refused,) = journal.rejected_events(j)
    assert (refused["kind"], refused["code"]) == ("alert", 400)
    assert f"the webhook at {h.url} refused the alert (invalid_payload ***)" in refused["reason"]
    log = d.log()
    assert "refused" in log and h.url in log  # scheme and host only:
    assert "s3cret" not in log and "s3cret" not in refused["reason"]


def test_a_webhook_down_is_retried_then_given_up_and_never_pauses_other_runs(hook):
    h = hook(*[503] * alerts.WEBHOOK_TRIES)
    alert = {"timestamp": 1_700_000_000_000, "level": "INFO", "title": "t", "body": "b",
             "step": 1, "localtime": "2023-11-14 22:13:20", "webhook": h.url + SECRET}
    for _ in range(alerts.WEBHOOK_TRIES - 1):
        with pytest.raises(TransientError) as exc:
            alerts.post_webhook(alert, "http://view", ("j", 1))
        assert exc.value.code == 503
    with pytest.raises(RejectedError, match="given up after 5 tries") as given_up:
        alerts.post_webhook(alert, "http://view", ("j", 1))
    assert len(h.got) == alerts.WEBHOOK_TRIES and "s3cret" not in str(given_up.value)
    # no answer at all: this run's trouble, not the Pluto server's (a code None would pause
    # every run), and the error names the host only
    h.close()
    with pytest.raises(TransientError) as exc:
        alerts.post_webhook(alert, "http://view", ("j", 2))
    assert exc.value.code is not None and "s3cret" not in exc.value.describe()
    assert h.url in exc.value.describe()
    alert["webhook"] = "ftp://example.org/x"
    with pytest.raises(RejectedError, match="not an http"):
        alerts.post_webhook(alert, "http://view", ("j", 3))


def test_messages_name_a_webhook_by_scheme_and_host_only():
    assert alerts.where("https://user:pw@hooks.slack.com/services/A/B/C?token=x") == \
        "https://hooks.slack.com"
    assert alerts.where("http://[::1]:8080/x") == "http://[::1]:8080"
    assert alerts.where("not a url") == "(an unusable URL)"
