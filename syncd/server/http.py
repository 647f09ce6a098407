"""Sockets: a threaded HTTP/1.1 server that feeds :class:`~syncd.server.app.App` and acts out
the connection-level faults (reset, refuse, close, stall)."""

from __future__ import annotations

import os
import socket
import struct
import sys
import threading
import time
import traceback
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl

from syncd.server.app import App, Request, Response
from syncd.server.errors import HttpError
from syncd.server.faults import FaultRule
from syncd.server.files import PREFIX as STORAGE_PREFIX

_RST = struct.pack("ii", 1, 0)  # SO_LINGER on, timeout 0: close() sends RST


class PlutoHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], app: App, verbose: bool = False) -> None:
        self.app = app
        self.verbose = verbose
        self._aborted: set[socket.socket] = set()
        self._aborted_lock = threading.Lock()
        super().__init__(address, RequestHandler)

    def abort(self, sock: socket.socket) -> None:
        """Make the coming close of ``sock`` a reset instead of an orderly shutdown."""
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RST)
        with self._aborted_lock:
            self._aborted.add(sock)

    def shutdown_request(self, request: socket.socket) -> None:  # type: ignore[override]
        with self._aborted_lock:
            aborted = request in self._aborted
            self._aborted.discard(request)
        if aborted:
            request.close()  # no shutdown(SHUT_WR): that would send FIN before the RST
        else:
            super().shutdown_request(request)

    def handle_error(self, request: object, client_address: object) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return  # a client went away: nothing to report
        traceback.print_exc()


class RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: PlutoHTTPServer

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        if self.server.verbose:  # request lines only: they never carry the key
            sys.stderr.write(f"{self.address_string()} {format % args}\n")

    def do_GET(self) -> None:
        self._serve()

    do_POST = do_PUT = do_DELETE = do_GET

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _serve(self) -> None:
        path, _, query = self.path.partition("?")
        if path.startswith(STORAGE_PREFIX):  # presigned: streamed both ways, no API key
            self._storage(path, dict(parse_qsl(query)))
            return
        body = self._read_body()
        request = Request(self.command, path, dict(parse_qsl(query)), self.headers, body)
        rule = self.server.app.faults.pick(self.command, path)
        if self._before(rule):
            return
        response = None
        if rule is None or rule.status is None or rule.apply:
            response = self._apply(request)
        if rule is not None and rule.status is not None:
            response = _fault_response(rule)
        assert response is not None
        data = self._encode(response)
        if rule is not None and rule.mode == "reset":
            self.wfile.write(data[: max(1, len(data) // 2)])
            self.server.abort(self.connection)
            self.close_connection = True
            return
        self.wfile.write(data)
        self.log_request(response.status, len(response.body))

    def _before(self, rule: FaultRule | None) -> bool:
        """Apply a fault rule's connection part (refuse, close, stall); True: no answer."""
        if rule is not None and rule.mode in ("refuse", "close"):
            if rule.mode == "refuse":
                self.server.abort(self.connection)
            self.close_connection = True
            return True
        if rule is not None and rule.mode == "stall":
            time.sleep(rule.seconds)
        return False

    def _storage(self, path: str, query: dict[str, str]) -> None:
        """A presigned PUT or GET of an object (syncd/server/files.py), streamed in pieces."""
        files = self.server.app.files
        rule = self.server.app.faults.pick(self.command, path)
        if self._before(rule):
            return
        try:
            if rule is not None and rule.status is not None:
                self.close_connection = True  # the body is not read
                raise HttpError(rule.status, {"error": f"injected fault: HTTP {rule.status}"})
            if self.command == "PUT":
                key = files.authorize(path, query, "put")
                length = int(self.headers.get("Content-Length") or -1)
                if length < 0:
                    self.close_connection = True
                    raise HttpError(411, {"error": "MissingContentLength"})
                files.put(key, self.rfile, length)
                response = Response(200, b"", "text/plain")
            elif self.command == "GET":
                key = files.authorize(path, query, "get")
                with files.open(key) as f:
                    size = os.fstat(f.fileno()).st_size
                    self.wfile.write(self._encode(Response(200, b"", "application/octet-stream",
                                                           {}), length=size))
                    while piece := f.read(1 << 20):
                        self.wfile.write(piece)
                self.log_request(200, size)
                return
            else:
                raise HttpError(405, {"error": "MethodNotAllowed"})
        except HttpError as err:
            if self.command == "PUT" and not self.close_connection:
                self.close_connection = True  # an unread body must not become the next request
            response = Response.json(err.status, err.body)
        self.wfile.write(self._encode(response))
        self.log_request(response.status, len(response.body))

    def _apply(self, request: Request) -> Response:
        try:
            return self.server.app.handle(request)
        except Exception:
            traceback.print_exc()
            return Response.json(500, {"error": "Internal server error"})

    def _encode(self, response: Response, length: int | None = None) -> bytes:
        try:
            phrase = HTTPStatus(response.status).phrase
        except ValueError:
            phrase = "Error"
        lines = [
            f"HTTP/1.1 {response.status} {phrase}",
            f"Content-Type: {response.content_type}",
            f"Content-Length: {len(response.body) if length is None else length}",
        ]
        lines += [f"{k}: {v}" for k, v in response.headers.items()]
        if self.close_connection:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + response.body


def _fault_response(rule: FaultRule) -> Response:
    headers = {}
    if rule.retry_after is not None:
        headers["Retry-After"] = str(rule.retry_after)
    reason = f"injected fault: HTTP {rule.status}"
    return Response.json(rule.status or 500, {"error": reason, "message": reason}, headers)
