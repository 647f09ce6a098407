"""The console helper: a small process that drains the job's stdout/stderr and outlives it.

The job's fds 1 and 2 are the write ends of pipes (or ptys) whose read ends this process
holds; its own fds 1 and 2 are the job's original stdout and stderr. Every byte it reads is
first written, unchanged and in order, to the original stream ("tee"), then cut into lines,
redacted and journaled as ``logs`` events every ``COMMIT_S`` seconds. Because it is another
process (in its own session: a Ctrl-C or a hangup of the job's terminal spares it), what the
job wrote before a SIGKILL or an OOM kill is still in the pipe when the job is gone: this
process reads it to the end, tees it, journals it, and exits once every writer of the pipes
(the job and the children that inherited its stdout) has closed them.

Control pipe (job -> helper): ``<n>\\n`` asks for everything written before it to be
journaled; the answer on the ack pipe (helper -> job) is ``<n>\\n``. The job's end of the
ack pipe reaching EOF tells it this process died (``capture.py``).

Started by ``capture.py`` as ``python -S -c BOOT CONFIG`` (``-S``: no site hooks, a fast
start); ``CONFIG`` is JSON: ``{"path": sys.path, "journal": str, "run": int, "run_id": str, "streams":
[[fd, "INFO" | "ERROR", tee_fd], ...], "ctrl": fd, "ack": fd, "shapes": bool, "prefix": str}``.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import signal
import struct
import sys
import termios

from pluto_offline.console.lines import LineSplitter
from pluto_offline.console.redact import Redactor, api_key_from_env
from pluto_offline.console.sink import LogSink

READ_SIZE = 1 << 16
_ENDED = (select.POLLHUP | select.POLLERR | select.POLLNVAL)


class Stream:
    """One captured stream: the fd it is read from, where it is teed, its line splitter."""

    def __init__(self, fd: int, log_type: str, tee: int, splitter: LineSplitter) -> None:
        self.fd, self.log_type, self.tee, self.splitter = fd, log_type, tee, splitter
        self.tee_ok = True

    def write_tee(self, data: bytes) -> None:
        """Every byte to the original stream; a stream gone (a closed terminal) is let go."""
        if not self.tee_ok:
            return
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self.tee, view):]
        except OSError:
            self.tee_ok = False  # nobody reads the original any more: keep journaling


class Helper:
    def __init__(self, cfg: dict) -> None:
        redactor = Redactor(api_key_from_env(), shapes=bool(cfg.get("shapes", True)))
        prefix = cfg.get("prefix") or ""
        self.streams = {fd: Stream(fd, kind, tee, LineSplitter(redactor.text, prefix))
                        for fd, kind, tee in cfg["streams"]}
        self.ctrl: int | None = cfg["ctrl"]
        self.ack: int = cfg["ack"]
        self.sink = LogSink(cfg["journal"], int(cfg["run"]), cfg.get("run_id"))
        self.poller = select.poll()
        for fd in self.streams:
            self.poller.register(fd, select.POLLIN)
        self.poller.register(self.ctrl, select.POLLIN)
        self._ctrl_buf = b""

    def run(self) -> None:
        while self.streams:
            timeout = self.sink.wait_ms()
            for fd, mask in self.poller.poll(timeout):
                if fd == self.ctrl:
                    self._control()
                elif fd in self.streams:
                    self._pump(self.streams[fd], mask)
            self.sink.commit_if_due()
        self.sink.close()

    def _pump(self, stream: Stream, mask: int, size: int = READ_SIZE) -> int:
        """Read once from ``stream``; returns the bytes read (0 at its end)."""
        try:
            data = os.read(stream.fd, size) if mask & (select.POLLIN | _ENDED) else b""
        except OSError:  # EIO: a pty's every writer has closed it
            data = b""
        if not data:
            self._ended(stream)
            return 0
        stream.write_tee(data)
        self.sink.add(stream.splitter.feed(data), stream.log_type)
        return len(data)

    def _ended(self, stream: Stream) -> None:
        self.sink.add(stream.splitter.end(), stream.log_type)
        self.poller.unregister(stream.fd)
        del self.streams[stream.fd]
        os.close(stream.fd)

    def _control(self) -> None:
        try:
            data = os.read(self.ctrl, 4096)
        except OSError:
            data = b""
        if not data:  # the job's side is gone (stopped, or killed): read on to EOF
            self.poller.unregister(self.ctrl)
            self.ctrl = None
            return
        self._ctrl_buf += data
        *requests, self._ctrl_buf = self._ctrl_buf.split(b"\n")
        if not requests:
            return
        self._drain_available()
        self.sink.commit()
        try:
            os.write(self.ack, requests[-1] + b"\n")
        except OSError:
            pass  # the job is gone

    def _drain_available(self) -> None:
        """Read what each stream holds right now: everything written before the request."""
        for stream in list(self.streams.values()):
            left = _available(stream.fd)
            while left > 0 and stream.fd in self.streams:
                left -= self._pump(stream, select.POLLIN, min(left, READ_SIZE)) or left


def _available(fd: int) -> int:
    try:
        return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]
    except OSError:
        return 0


def main() -> None:
    # Only the end of the job's streams ends this process: a signal meant for the job (a
    # Ctrl-C, a hangup, a kill of its process group) must not lose what it still has to say.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    Helper(json.loads(sys.argv[1])).run()


if __name__ == "__main__":
    main()
