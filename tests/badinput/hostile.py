"""A tiny real HTTP server on loopback that answers the daemon in broken or hostile ways.

The local ``plutosync serve`` can only fail politely (refuse, reset, 5xx, 429); real networks
also bring proxies that answer 200 with an HTML login page, load balancers that truncate bodies,
misconfigured servers that redirect in circles, and answers missing the fields the contract
promises. ``HostileServer(mode)`` answers *every* request with ``mode``'s misbehaviour and counts
what it received, so a test can point the daemon at it, then at the real server.

    with HostileServer("html-200") as bad:
        rep = replayer_at(journal_path, bad.url)
        ...
"""

from __future__ import annotations

import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HTML = (b"<!DOCTYPE html><html><head><title>Sign in</title></head><body><h1>Corporate proxy"
        b"</h1><p>Please sign in to continue.</p></body></html>")
GIGANTIC_BYTES = 200 * 1024 * 1024  # what the gigantic modes claim and stream, if read
MODES = (
    "malformed-json-200",   # 200, Content-Type JSON, a body that is not JSON
    "html-200",             # 200 text/html: a captive portal / proxy login page
    "html-502",             # an nginx-style HTML error page
    "wrong-type-200",       # 200 with a JSON body but Content-Type text/plain
    "truncated",            # Content-Length says more than is sent, then the socket closes
    "missing-fields-200",   # 200 {"success": true} everywhere: no runId, no displayId
    "list-200",             # 200 with a JSON list instead of an object
    "redirect-loop",        # 307 to itself, forever
    "redirect-elsewhere",   # 307 to /moved<path> on this server, which answers 404 HTML
    "gigantic-200",         # 200 with a 200 MB body streamed slowly
    "gigantic-500",         # the same as an error page
)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read counts
        pass

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self._answer()

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        srv = self.server
        with srv.lock:
            srv.counts[self.path.split("?")[0]] += 1
            srv.auth_headers.append(self.headers.get("Authorization") or "")
        mode = srv.mode
        try:
            if mode == "malformed-json-200":
                self._send(200, b'{"runId": 1, "displayId": "PRO-', "application/json")
            elif mode == "html-200":
                self._send(200, HTML, "text/html; charset=utf-8")
            elif mode == "html-502":
                self._send(502, b"<html><body><center><h1>502 Bad Gateway</h1></center><hr>"
                                b"<center>nginx</center></body></html>", "text/html")
            elif mode == "wrong-type-200":
                self._send(200, b'{"success": true}', "text/plain")
            elif mode == "truncated":
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "4096")
                self.end_headers()
                self.wfile.write(b'{"runId": 7, "number": 1, "displayId": "PR')
                self.wfile.flush()
                self.close_connection = True
            elif mode == "missing-fields-200":
                self._send(200, b'{"success": true}', "application/json")
            elif mode == "list-200":
                self._send(200, b"[1, 2, 3]", "application/json")
            elif mode == "redirect-loop":
                self._redirect(self.path)
            elif mode == "redirect-elsewhere":
                if self.path.startswith("/moved"):
                    self._send(404, b"<html>Not Found</html>", "text/html")
                else:
                    self._redirect("/moved" + self.path)
            elif mode in ("gigantic-200", "gigantic-500"):
                self._gigantic(200 if mode == "gigantic-200" else 500)
            else:
                self._send(500, f"unknown mode {mode}".encode(), "text/plain")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client stopped reading: what a bounded read does

    def _send(self, code: int, body: bytes, ctype: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _redirect(self, location: str) -> None:
        self.send_response(307)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _gigantic(self, code: int) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(GIGANTIC_BYTES))
        self.end_headers()
        chunk = b'{"runId": 1, "pad": "' + b"x" * (1 << 20)
        sent = 0
        while sent < GIGANTIC_BYTES and not self.server.closing.is_set():
            piece = chunk[: GIGANTIC_BYTES - sent]
            self.wfile.write(piece)
            sent += len(piece)
            with self.server.lock:
                self.server.streamed += len(piece)
        self.close_connection = True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, mode: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.mode = mode
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.auth_headers: list[str] = []
        self.streamed = 0
        self.closing = threading.Event()


class HostileServer:
    """A started hostile server; a context manager that shuts it down."""

    def __init__(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}")
        self._srv = _Server(mode)
        self._thread = threading.Thread(target=self._srv.serve_forever, daemon=True,
                                        name=f"hostile-{mode}")
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._srv.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def requests(self) -> int:
        with self._srv.lock:
            return sum(self._srv.counts.values())

    @property
    def streamed(self) -> int:
        with self._srv.lock:
            return self._srv.streamed

    def close(self) -> None:
        self._srv.closing.set()
        self._srv.shutdown()
        self._srv.server_close()

    def __enter__(self) -> HostileServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
