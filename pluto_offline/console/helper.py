"""The console helper: a small process that drains the job's stdout/stderr and outlives it.

The job's fds 1 and 2 are the write ends of pipes (or ptys) whose read ends this process
holds; its own fds 1 and 2 are the job's original stdout and stderr. Every byte it reads is
first written, unchanged and in order, to the original stream ("tee"), then cut into lines,
redacted and journaled as ``logs`` events every ``COMMIT_S`` seconds. Because it is another
process (in its own session: a Ctrl-C or a hangup of the job's terminal spares it), what the
job wrote before a SIGKILL or an OOM kill is still in the pipe when the job is gone: this
process reads it to the end, tees it, journals it, and exits once every writer of the pipes
(the job and the children that inherited its stdout) has closed them.

While output flows, this process reads it every ``GATHER_MS`` rather than at each write (a
write to a pipe its reader waits on wakes the reader, and that cost a printing job more than
everything else here); output on a stream that was quiet, or a request of the job's, wakes
it at once, and what the busy streams gathered is read first, so the order across stdout
and stderr is kept unless both are busy at once. A pipe found half full grows to
``PIPE_SIZE``. docs/benchmarks.md has the figures.

Control pipe (job -> helper): ``<n>\\n`` asks for everything written before it to be
journaled; the answer on the ack pipe (helper -> job) is ``<n>\\n``. The job's end of the
ack pipe reaching EOF tells it this process died (``capture.py``).

Started by ``capture.py`` as ``python -S -c BOOT CONFIG`` (``-S``: no site hooks, a fast
start); ``CONFIG`` is JSON: ``{"path": sys.path, "packages": [[name, dir], ...], "journal": str,
"run": int, "run_id": str, "streams": [[fd, "INFO" | "ERROR", tee_fd], ...], "ctrl": fd,
"ack": fd, "shapes": bool, "prefix": str}``. ``packages`` are made empty modules before the
import: this process runs only its own modules, the console's and the journal's store, never
a package's ``__init__`` (so nothing here may import a name from one).
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

# After a read, output gathers this long before the next (unless a stream was found at least
# half full: the writer is ahead). Waking at every write cost a printing job ~1.4x its time
# in a print loop; 1, 2 and 4 ms measured alike.
GATHER_MS = 2
# A pipe found half full grows to this (from the kernel's 64 KiB; once, when the kernel allows
# it), so a job printing fast rarely waits while this process commits or is not scheduled
# (with 64 KiB the print loop took ~1.5x). Only then: a pipe's size counts against its
# user's pipe quota (fs/pipe-user-pages-soft), so quiet jobs keep the default.
PIPE_SIZE = 1 << 20
READ_SIZE = PIPE_SIZE  # the most one read takes
PTY_READ = 4096  # the most one read of a pty takes (N_TTY_BUF_SIZE)
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", 1032)
_ENDED = (select.POLLHUP | select.POLLERR | select.POLLNVAL)


class Stream:
    """One captured stream: the fd it is read from, where it is teed, its line splitter."""

    def __init__(self, fd: int, log_type: str, tee: int, splitter: LineSplitter) -> None:
        self.fd, self.log_type, self.tee, self.splitter = fd, log_type, tee, splitter
        self.tee_ok = True
        try:
            self.size = fcntl.fcntl(fd, _F_GETPIPE_SZ)  # what the pipe holds
            self.pipe = True
        except OSError:  # a pty: what one read of it takes at most (its line discipline's
            self.size, self.pipe = PTY_READ, False  # buffer; the pty holds ~16 KiB more)

    def ahead(self, n: int) -> bool:
        """Whether the writer is ahead: the read of ``n`` bytes found the stream at least half
        full. A pipe then grows, once, to ``PIPE_SIZE``."""
        if 2 * n < self.size:
            return False
        if self.pipe and self.size < PIPE_SIZE:
            self.size = grow_pipe(self.fd, PIPE_SIZE) or self.size
        return True

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
        busy: set[int] = set()  # the streams the last read found output in
        while self.streams:
            ready = self.poller.poll(self.sink.wait_ms())
            if len(ready) > 1:  # output that gathered first, then what woke this process
                ready.sort(key=lambda r: r[0] not in busy)
            busy = set()
            ahead = False
            for fd, mask in ready:
                if fd == self.ctrl:
                    self._control()
                elif fd in self.streams:
                    stream = self.streams[fd]
                    n = self._pump(stream, mask)
                    if n:
                        busy.add(fd)
                        ahead = stream.ahead(n) or ahead
            self.sink.commit_if_due()
            if busy and not ahead:
                self._gather(busy)
        self.sink.close()

    def _gather(self, busy: set[int]) -> None:
        """Let the output of the ``busy`` streams gather in their pipes for ``GATHER_MS``
        (what the job writes meanwhile stays there: a kill loses none of it). A request of the
        job's, or output on another stream, ends the wait at once."""
        poller = select.poll()
        for fd in self.streams:
            if fd not in busy:
                poller.register(fd, select.POLLIN)
        if self.ctrl is not None:
            poller.register(self.ctrl, select.POLLIN)
        poller.poll(GATHER_MS)

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


def grow_pipe(fd: int, size: int) -> int:
    """Ask for a pipe of ``size`` bytes; the size it has after: the old one when the kernel
    refuses (over ``/proc/sys/fs/pipe-max-size`` or the user's pipe quota), 0 for what is not
    a pipe. Never raises."""
    try:
        return fcntl.fcntl(fd, _F_SETPIPE_SZ, size)
    except OSError:
        try:
            return fcntl.fcntl(fd, _F_GETPIPE_SZ)
        except OSError:
            return 0


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
