"""A small real HTTP forward proxy on loopback, as the tests' own corporate proxy.

Clients reach it through ``HTTP_PROXY`` (requests then sends the absolute URL in the request
line) and it forwards to the server named there, unless its ``mode`` says otherwise:

- ``"login"``: asks for ``user:password`` (``Proxy-Authorization: Basic``); without them it
  answers 407 with an HTML page, as Squid does;
- ``"forward"``: forwards everything;
- ``"html-404"`` / ``"html-400"``: answers every request with that status and an HTML error
  page of its own, as a load balancer with a wrong route does (not the Pluto server's shape);
- ``"html-403"`` / ``"html-401"``: the same with Squid's "403 Forbidden" page (an ACL that
  denies the destination): nothing to do with the API key.

``mode`` can be changed while clients use it (the proxy "is fixed"). ``seen`` counts the
requests per path that reached the proxy, ``forwarded`` those passed on to the server.

    with Proxy("login") as proxy:
        env = {"HTTP_PROXY": proxy.url_with("user", "password"), "NO_PROXY": ""}
"""

from __future__ import annotations

import base64
import http.client
import threading
import urllib.parse
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

USER, PASSWORD = "alice", "s3cret-proxy-pw"
LOGIN_PAGE = (b"<!DOCTYPE html><html><head><title>ERROR: Cache Access Denied</title></head><body>"
              b"<h1>Cache Access Denied</h1><p>Sorry, you are not currently allowed to request "
              b"this page until you have authenticated yourself.</p></body></html>")
_HOP = {"proxy-authorization", "proxy-connection", "connection", "keep-alive", "host",
        "content-length", "transfer-encoding"}


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def _handle(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        target = urllib.parse.urlsplit(self.path)
        srv = self.server
        with srv.lock:
            srv.seen[target.path] += 1
        mode = srv.mode
        if mode == "login" and self.headers.get("Proxy-Authorization") != srv.expected:
            self._send(407, LOGIN_PAGE, {"Proxy-Authenticate": 'Basic realm="corp"'})
        elif mode in ("html-403", "html-401"):
            code = int(mode[-3:])
            title = f"{code} {'Forbidden' if code == 403 else 'Unauthorized'}"
            self._send(code, f"<html><head><title>{title}</title></head><body><h1>"
                             f"{title}</h1><p>Access denied by the cache.</p><hr>"
                             "<address>squid/5.7</address></body></html>".encode(), {})
        elif mode in ("html-404", "html-400"):
            code = int(mode[-3:])
            self._send(code, f"<html><body><h1>{code}</h1><p>The requested URL was not found "
                             "on this server.</p></body></html>".encode(), {})
        else:
            self._forward(target, body)

    def _forward(self, target: urllib.parse.SplitResult, body: bytes) -> None:
        conn = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
        path = target.path + (f"?{target.query}" if target.query else "")
        try:
            conn.request(self.command, path, body=body or None, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            with self.server.lock:
                self.server.forwarded[target.path] += 1
            extra = {k: v for k, v in resp.getheaders() if k.lower() not in _HOP}
            self._send(resp.status, data, extra)
        except OSError:
            self._send(502, b"<html><body>502 Bad Gateway</body></html>", {})
        finally:
            conn.close()

    def _send(self, code: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(code)
        headers.setdefault("Content-Type", "text/html")
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, mode: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.mode = mode
        self.lock = threading.Lock()
        self.seen: Counter[str] = Counter()
        self.forwarded: Counter[str] = Counter()
        token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        self.expected = f"Basic {token}"


class Proxy:
    """A started proxy; a context manager that shuts it down."""

    def __init__(self, mode: str = "forward") -> None:
        self._srv = _Server(mode)
        self._thread = threading.Thread(target=self._srv.serve_forever, daemon=True,
                                        name=f"proxy-{mode}")
        self._thread.start()

    @property
    def address(self) -> str:
        host, port = self._srv.server_address[:2]
        return f"http://{host}:{port}"

    def url_with(self, user: str, password: str) -> str:
        """The proxy's URL carrying credentials, as HTTP_PROXY holds them."""
        return self.address.replace("http://", f"http://{user}:{password}@")

    @property
    def mode(self) -> str:
        return self._srv.mode

    @mode.setter
    def mode(self, value: str) -> None:
        self._srv.mode = value

    @property
    def seen(self) -> Counter[str]:
        with self._srv.lock:
            return Counter(self._srv.seen)

    @property
    def forwarded(self) -> Counter[str]:
        with self._srv.lock:
            return Counter(self._srv.forwarded)

    def close(self) -> None:
        self._srv.shutdown()
        self._srv.server_close()

    def __enter__(self) -> Proxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
