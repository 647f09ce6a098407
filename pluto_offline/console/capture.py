"""The job's side of console capture: its fds 1 and 2 handed to the helper process.

    cap = Capture.start(journal_path, run_key, shapes=True)   # None when it cannot start
    ...                                                      # print, logging, C, children
    cap.stop()        # everything written so far journaled, fds restored, helper gone
                      # (each a bounded wait)

At ``start`` each of fds 1 and 2 that is open becomes the write end of a new pipe — or of a
pty in raw mode, with the terminal's window size, when it was a terminal, so ``isatty()``,
colours, line buffering and progress bars behave as before — and the helper
(``helper.py``, its own session) gets the read ends and the original fds. Python's own
buffering is unchanged: ``sys.stdout`` keeps the mode it chose at startup.

The job keeps a copy of each read end. Should the helper die (killed on its own), a watcher
thread sees its ack pipe close, points fds 1 and 2 back at the originals and forwards what
was left in the pipes, so the job never blocks or gets EPIPE; from then on nothing more is
journaled, which it says once on stderr.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import subprocess
import sys
import termios
import threading
import tty

logger = logging.getLogger("pluto_offline")

FLUSH_TIMEOUT_S = 5.0  # the longest a run's end waits for its console lines to be journaled
# The longest a run's end then waits for the helper to close the journal and exit. It exits
# at once unless a process the job started still holds the captured fds (its lines are the
# run's too, so the helper stays for them); waiting leaves the journal quiet when the run's
# end returns, so a copy or a check of the file made right after sees its final state.
EXIT_TIMEOUT_S = 3.0
# The helper imports only the modules it runs: the packages above them are made empty in it
# (their __init__ would import the whole SDK: its start took ~120 ms instead of ~60, and a job
# printing fast right after init() waited that long on the full pipe).
_PACKAGES = ("pluto_offline", "pluto_offline.console", "pluto_offline.journal")
_BOOT = ("import json, sys, types; cfg = json.loads(sys.argv[1]); sys.path[:0] = cfg['path']\n"
         "for name, path in cfg['packages']:\n"
         "    sys.modules[name] = package = types.ModuleType(name); package.__path__ = [path]\n"
         "from pluto_offline.console.helper import main; main()")
_TYPES = {1: "INFO", 2: "ERROR"}  # stdout lines are INFO, stderr lines ERROR (stock SDK)


class _Redirect:
    """One redirected fd: where it pointed (``orig``), and our copy of the pipe's read end."""

    def __init__(self, fd: int, orig: int, read: int, write: int) -> None:
        self.fd, self.orig, self.read, self.write = fd, orig, read, write


class Capture:
    def __init__(self, proc: subprocess.Popen, redirects: list[_Redirect], ctrl: int,
                 ack: int) -> None:
        self.proc = proc
        self.pid = os.getpid()  # the process whose fds these are (a forked child's are not)
        self._redirects = redirects
        self._ctrl, self._ack = ctrl, ack
        self._cond = threading.Condition()
        self._asked = self._acked = 0
        self._stopping = False
        self._dead = False
        self._watcher = threading.Thread(target=self._watch, name="pluto-offline-console",
                                         daemon=True)

    @classmethod
    def start(cls, journal: str, run: int, run_id: str, *, shapes: bool = True,
              prefix: str = "") -> Capture | None:
        """Redirect fds 1 and 2 through a new helper; None (nothing changed) if impossible."""
        if not sys.executable:
            return None
        for stream in (sys.stdout, sys.stderr):  # what was printed before init is not the run's
            try:
                stream.flush()
            except Exception:
                pass
        made: list[_Redirect] = []
        fds: list[int] = []
        try:
            for fd in (1, 2):
                if _is_open(fd):
                    made.append(_make(fd))
            if not made:
                return None
            ctrl_r, ctrl_w = os.pipe()
            ack_r, ack_w = os.pipe()
            fds = [ctrl_r, ctrl_w, ack_r, ack_w]
            # where this package is first: an editable install finds it through a finder
            # that -S (no site hooks) skips, so sys.path alone may not hold it
            here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
            cfg = {"path": [here, *(p for p in sys.path if isinstance(p, str))],
                   "packages": [[name, os.path.join(here, *name.split("."))]
                                for name in _PACKAGES],
                   "journal": journal,
                   "run": run, "run_id": run_id, "ctrl": ctrl_r, "ack": ack_w, "shapes": shapes,
                   "prefix": prefix,
                   "streams": [[r.read, _TYPES[r.fd], r.fd] for r in made]}
            std = {r.fd: r.orig for r in made}
            proc = subprocess.Popen(
                [sys.executable, "-S", "-c", _BOOT, json.dumps(cfg)],
                stdin=subprocess.DEVNULL, stdout=std.get(1, subprocess.DEVNULL),
                stderr=std.get(2, subprocess.DEVNULL),
                pass_fds=[r.read for r in made] + [ctrl_r, ack_w],
                start_new_session=True)  # a Ctrl-C or hangup of the job's group spares it
        except OSError as exc:
            for r in made:
                for fd in (r.orig, r.read, r.write):
                    os.close(fd)
            for fd in fds:
                os.close(fd)
            logger.warning("pluto_offline: console capture is off for this run: %s", exc)
            return None
        os.close(ctrl_r)
        os.close(ack_w)
        for r in made:
            os.dup2(r.write, r.fd)  # from here on, fd 1/2 writes go through the helper
            os.close(r.write)
        cap = cls(proc, made, ctrl_w, ack_r)
        cap._watcher.start()
        return cap

    def flush(self, timeout: float = FLUSH_TIMEOUT_S) -> bool:
        """Return once everything written to fds 1/2 before this call is journaled (True),
        or after ``timeout`` (False: the helper journals it later)."""
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        with self._cond:
            if self._dead:
                return False
            self._asked += 1
            n = self._asked
            try:
                os.write(self._ctrl, b"%d\n" % n)
            except OSError:
                return False
            return self._cond.wait_for(lambda: self._acked >= n or self._dead, timeout) \
                and not self._dead

    def stop(self, timeout: float = FLUSH_TIMEOUT_S) -> None:
        """Journal what was written (bounded wait), then point fds 1/2 back at the originals.
        Only in the process that started it; never raises."""
        if os.getpid() != self.pid or self._stopping:
            return
        flushed = self.flush(timeout)
        self._stopping = True
        if not flushed and not self._dead:
            logger.warning("pluto_offline: the console helper did not confirm the last lines "
                           "within %.0f s; it journals them when it can", timeout)
        self._restore()
        os.close(self._ctrl)  # the helper reads on to the end of the streams, then exits
        if not self._dead:
            try:
                self.proc.wait(EXIT_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                pass  # a child of the job still writes to the captured fds

    def _restore(self) -> None:
        with self._cond:
            for r in self._redirects:
                if r.orig < 0:
                    continue
                try:
                    os.dup2(r.orig, r.fd)
                    os.close(r.orig)
                except OSError:
                    pass
                r.orig = -1
                if not self._dead:
                    os.close(r.read)

    def _watch(self) -> None:
        """The helper's acks; its death (EOF) while capturing hands the fds back."""
        buf = b""
        while True:
            try:
                data = os.read(self._ack, 4096)
            except OSError:
                data = b""
            if not data:
                break
            buf += data
            *acks, buf = buf.split(b"\n")
            if acks:
                with self._cond:
                    self._acked = max(self._acked, int(acks[-1]))
                    self._cond.notify_all()
        os.close(self._ack)
        if self._stopping or os.getpid() != self.pid:
            return
        with self._cond:
            self._dead = True
            self._cond.notify_all()
        reads = [(r.read, r.orig) for r in self._redirects if r.orig >= 0]
        forwards = [(read, os.dup(orig)) for read, orig in reads]
        self._restore()
        for read, out in forwards:  # unblock writers still on the pipe: forward to the end
            threading.Thread(target=_forward, args=(read, out), daemon=True,
                             name="pluto-offline-console-forward").start()
        logger.error("pluto_offline: the console helper process exited (%s): console lines "
                     "are no longer journaled for this run; the terminal gets them as before",
                     _exit_text(self.proc.wait()))


def _make(fd: int) -> _Redirect:
    orig = os.dup(fd)
    if os.isatty(fd):
        read, write = os.openpty()
        try:
            size = fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8)
            fcntl.ioctl(write, termios.TIOCSWINSZ, size)
        except OSError:
            pass
        tty.setraw(write)  # no \n -> \r\n, no echo: the bytes pass unchanged
    else:
        read, write = os.pipe()
    return _Redirect(fd, orig, read, write)


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False


def _forward(read: int, out: int) -> None:
    while True:
        try:
            data = os.read(read, 1 << 16)
        except OSError:
            data = b""
        if not data:
            break
        try:
            os.write(out, data)
        except OSError:
            pass
    os.close(read)
    os.close(out)


def _exit_text(code: int) -> str:
    return f"killed by signal {-code}" if code < 0 else f"exit code {code}"
