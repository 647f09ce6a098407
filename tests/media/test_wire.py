"""The file protocol on the wire (issue 9, pluto-api.md ``POST /files``): the PUT of each kind
carries the Content-Type the stock SDK sends for it, and each file's row carries the time of
its ``log()`` (ms) and its log group.

The local server does not keep a PUT's headers, so a small recording forward proxy of the
test's own (loopback, reached through ``HTTP_PROXY`` as a corporate proxy is) sits between the
clients and the server: it forwards every request unchanged and notes what it saw. The stock
SDK's own job goes through it too, so "what the stock SDK sends" is measured, not assumed.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import mimetypes
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image as PILImage

from tests.fixtures.daemon import DaemonProcess
from tests.fixtures.server import LocalServer
from tests.media.helpers import PROJECT, run_job, server_id, stock_client
from tests.server.stock import run_pluto

_HOP = {"proxy-connection", "connection", "keep-alive", "host", "content-length",
        "transfer-encoding"}


class _Recorder(BaseHTTPRequestHandler):
    """Forwards one request to the server its absolute URL names; notes (method, path,
    Content-Type, body) of it in ``server.seen``."""

    server: _RecordingServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def do_GET(self) -> None:
        target = urllib.parse.urlsplit(self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with self.server.lock:
            self.server.seen.append({"method": self.command, "path": target.path,
                                     "content_type": self.headers.get("Content-Type"),
                                     "body": body})
        conn = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
        try:
            conn.request(self.command, target.path + (f"?{target.query}" if target.query else ""),
                         body=body if body or self.command in ("PUT", "POST") else None,
                         headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            self.send_response(resp.status)
            for k, v in resp.getheaders():
                if k.lower() not in _HOP:
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        finally:
            conn.close()

    do_POST = do_PUT = do_DELETE = do_GET


class _RecordingServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Recorder)
        self.lock = threading.Lock()
        self.seen: list[dict[str, Any]] = []


@pytest.fixture
def recorder() -> Iterator[_RecordingServer]:
    srv = _RecordingServer()
    threading.Thread(target=srv.serve_forever, daemon=True, name="recorder").start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()


def _proxy_env(srv: _RecordingServer) -> dict[str, str]:
    host, port = srv.server_address[:2]
    url = f"http://{host}:{port}"
    # both spellings; an inherited NO_PROXY=127.0.0.1 would let requests bypass the recorder
    return {"HTTP_PROXY": url, "http_proxy": url, "NO_PROXY": "", "no_proxy": ""}


def _put_types(srv: _RecordingServer, run_id: int) -> dict[str, list[str | None]]:
    """Content-Types of the storage PUTs for one run, by logName
    (the key is ``/_storage/<project>/<runId>/<logName>/<fileName>``)."""
    out: dict[str, list[str | None]] = {}
    for r in srv.seen:
        parts = r["path"].split("/")
        if r["method"] == "PUT" and r["path"].startswith("/_storage/") and \
                parts[3] == str(run_id):
            out.setdefault(urllib.parse.unquote(parts[4]), []).append(r["content_type"])
    return out


def _sources(d: Path) -> None:
    rng = np.random.default_rng(3)
    PILImage.fromarray(rng.integers(0, 256, (6, 7, 3), dtype=np.uint8)).save(d / "photo.jpg")
    (d / "movie.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + rng.bytes(300))
    (d / "notes.md").write_text("# notes\n")
    (d / "conf.json").write_text('{"lr": 0.1}\n')
    (d / "model.pt").write_bytes(rng.bytes(5000))
    frames = [PILImage.new("RGB", (8, 6), (40 * t, 0, 0)) for t in range(3)]
    frames[0].save(d / "anim.gif", save_all=True, append_images=frames[1:])


EXPECTED = {  # the types pluto-api.md names, as mimetypes knows them without /etc/mime.types
    "img": "image/png", "jpg": "image/jpeg", "clip": "audio/x-wav", "anim": "image/gif",
    "movie": "video/mp4", "note": "text/plain", "readme": "text/markdown",
    "conf": "application/json",
    # guessed from the name as the stock SDK does (this machine's mime.types may know .pt)
    "ckpt": mimetypes.guess_type("m.pt")[0] or "application/octet-stream",
    "blob": "application/octet-stream",
}


def test_each_kind_is_put_with_the_content_type_the_stock_sdk_sends(
        tmp_path: Path, pluto_server: LocalServer, recorder: _RecordingServer) -> None:
    d = tmp_path / "src"
    d.mkdir()
    _sources(d)
    jdir = tmp_path / "j"
    run_job(jdir, f"""
        import numpy as np
        d = pathlib.Path({str(d)!r})
        frames = np.stack([np.full((3, 6, 8), 40 * t, dtype=np.uint8) for t in range(3)])
        run = pluto.init(name="wire", run_id="wire")
        run.log({{"img": pluto.Image(np.full((4, 5, 3), 9, dtype=np.uint8)),
                 "jpg": pluto.Image(str(d / "photo.jpg")),
                 "clip": pluto.Audio(np.arange(800, dtype=np.int16), rate=8000),
                 "anim": pluto.Video(frames, rate=5, format="gif"),
                 "movie": pluto.Video(str(d / "movie.mp4")),
                 "note": pluto.Text("hello"), "readme": pluto.Text(str(d / "notes.md")),
                 "conf": pluto.File(str(d / "conf.json")),
                 "ckpt": pluto.Artifact(str(d / "model.pt"), caption="best"),
                 "blob": pluto.Artifact(b"raw bytes")}})
        run.finish()
    """)
    with DaemonProcess(pluto_server, jdir, "--exit-when-idle", env=_proxy_env(recorder)) as dm:
        assert dm.wait(60) == 0, dm.log()
    ours = _put_types(recorder, server_id(jdir, "wire"))
    # the stock SDK (a video from an array needs moviepy there: a GIF's bytes stand in)
    out, _ = run_pluto(pluto_server, tmp_path / "stock", f"""
        import os, pathlib, numpy as np
        os.environ.update({_proxy_env(recorder)!r})  # before init: its sync process inherits
        d = pathlib.Path({str(d)!r})
        run = pluto.init(project="stock-wire", name="stock", settings=SETTINGS)
        run.log({{"img": pluto.Image(np.full((4, 5, 3), 9, dtype=np.uint8)),
                 "jpg": pluto.Image(str(d / "photo.jpg")),
                 "clip": pluto.Audio(np.arange(800, dtype=np.int16), rate=8000),
                 "anim": pluto.Video((d / "anim.gif").read_bytes(), format="gif"),
                 "movie": pluto.Video(str(d / "movie.mp4")),
                 "note": pluto.Text("hello"), "readme": pluto.Text(str(d / "notes.md")),
                 "conf": pluto.File(str(d / "conf.json")),
                 "ckpt": pluto.Artifact(str(d / "model.pt"), caption="best"),
                 "blob": pluto.Artifact(b"raw bytes")}})
        emit({{"id": run.id}})
        run.finish()
    """)
    stock = _put_types(recorder, out["id"])
    assert stock == {k: [v] for k, v in EXPECTED.items()}  # measured: what the stock SDK sends
    assert ours == stock  # one PUT per file, each with the stock SDK's Content-Type


def _ms(iso: str) -> int:
    return round(dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def test_each_file_row_carries_its_log_time_in_ms_and_its_log_group(
        tmp_path: Path, pluto_server: LocalServer, recorder: _RecordingServer) -> None:
    jdir = tmp_path / "j"
    out = run_job(jdir, """
        import json, numpy as np
        run = pluto.init(name="times", run_id="times")
        img = np.zeros((2, 2), dtype=np.uint8)
        run.log({"eval/samples": [pluto.Image(img), pluto.Image(img + 1)],
                 "a/b/ckpt": pluto.Artifact(b"x")}, timestamp=1_700_000_000.123)
        before = time.time_ns() // 1_000_000
        run.log({"notes": pluto.Text("now")})  # the default time: the clock at log()
        after = time.time_ns() // 1_000_000
        print("CLOCK", json.dumps([before, after]))
        run.finish()
    """)
    [line] = [ln for ln in out.splitlines() if ln.startswith("CLOCK ")]
    before, after = json.loads(line[len("CLOCK "):])
    with DaemonProcess(pluto_server, jdir, "--exit-when-idle", env=_proxy_env(recorder)) as dm:
        assert dm.wait(60) == 0, dm.log()
    sid = server_id(jdir, "times")
    # on the wire: the presign body's time, in ms, is the log() time
    sent = [f for r in recorder.seen if r["method"] == "POST" and r["path"] == "/files"
            for f in json.loads(r["body"])["files"]]
    times = {(f["logName"], f["sampleIndex"]): f["time"] for f in sent}
    assert {k: v for k, v in times.items() if k[0] != "notes"} == {
        ("eval/samples", 0): 1_700_000_000_123, ("eval/samples", 1): 1_700_000_000_123,
        ("a/b/ckpt", 0): 1_700_000_000_123}
    assert before <= times[("notes", 0)] <= after
    # read back with the stock client: the same time, and the group before the last "/"
    client = stock_client(pluto_server)
    try:
        rows = {(f["logName"], f["sampleIndex"]): f for f in client.get_files(PROJECT, sid)}
    finally:
        client.close()
    assert {k: _ms(r["time"]) for k, r in rows.items()} == times
    assert {k: r["logGroup"] for k, r in rows.items() if k[0] != "notes"} == {
        ("eval/samples", 0): "eval", ("eval/samples", 1): "eval", ("a/b/ckpt", 0): "a/b"}
    assert not rows[("notes", 0)]["logGroup"]  # no "/": no group
