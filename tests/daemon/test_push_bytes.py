"""``plutosync push`` shows the bytes of the files it uploads (issue 9): a byte bar beside the
event bar (rich's DownloadColumn and TransferSpeedColumn), files and bytes in the summary.

A real job logs a multi-MB artifact with no server configured; ``plutosync push`` runs as a real
process against the local server, and the tests read what a user reads: its log (a pipe), or
the frames it draws on a terminal (a pty).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from pathlib import Path

from tests.daemon.test_push import _journal, push
from tests.fixtures.daemon import DaemonProcess, wait_for
from tests.fixtures.server import LocalServer
from tests.media.helpers import downloaded, run_job, server_id, stock_client

MB = 1_000_000  # rich's DownloadColumn counts in decimal units
ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\r")


def _artifact_job(tmp_path: Path, size: int) -> tuple[Path, bytes]:
    """A job that logs one artifact of ``size`` random bytes offline; (journal dir, bytes)."""
    data = os.urandom(size)
    (tmp_path / "model.pt").write_bytes(data)
    jdir = tmp_path / "j"
    run_job(jdir, f"""
        run = pluto.init(name="ckpt", run_id="ckpt-1")
        run.log({{"loss": 0.5}})
        run.log({{"ckpt": pluto.Artifact({str(tmp_path / "model.pt")!r}, caption="best")}})
        run.finish()
    """)
    return jdir, data


def _server_bytes(server: LocalServer, jdir: Path, dest: Path) -> bytes:
    client = stock_client(server)
    try:
        (got,) = downloaded(client, server_id(jdir, "ckpt-1"), "ckpt", dest)
    finally:
        client.close()
    return got


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_push_shows_the_bytes_it_uploads_and_the_server_has_them(tmp_path, pluto_server):
    jdir, data = _artifact_job(tmp_path, 12 * MB)
    p = push(pluto_server, tmp_path, str(jdir))
    assert p.wait(60) == 0, p.log()
    text = _flat(p.log())
    # the byte bar, as a log or a pipe gets it (drawn once, at the end), under the event bar
    assert re.search(r"(\d+)/\1 events [0-9:]+ \S*/j ━+ 12\.0/12\.0 MB 1/1 file [0-9.]+ [kMG]?B/s",
                     text), text
    # the summary: the files delivered and their bytes
    assert re.search(r"┃ left ┃ +files ┃", text) and "│ 1 (12.0 MB) │" in text, text
    assert "everything delivered" in text
    assert _server_bytes(pluto_server, jdir, tmp_path / "dl") == data


def test_a_push_without_files_has_no_byte_bar(tmp_path, pluto_server):
    _journal(tmp_path / "j", "plain")
    p = push(pluto_server, tmp_path, str(tmp_path / "j"))
    assert p.wait(60) == 0, p.log()
    text = p.log().replace(str(tmp_path), "J")  # the test's name says "files"
    assert re.search(r"\d+/\d+ events", text) and "everything delivered" in text
    assert not re.search(r"\d B\b|[kMG]B\b|files?\b|/s\b", text), text


def _on_a_terminal(server: LocalServer, *args: str, timeout: float = 60) -> tuple[int, str]:
    """``plutosync push ARGS`` on a pty 200 columns wide: (exit code, every frame it drew, the
    terminal's control sequences taken out)."""
    master, slave = os.openpty()
    env = {**os.environ, **server.env(), "COLUMNS": "200", "TERM": "xterm-256color"}
    proc = subprocess.Popen([sys.executable, "-m", "syncd", "push", *args], stdin=slave,
                            stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    chunks: list[bytes] = []

    def read() -> None:
        while True:
            try:
                piece = os.read(master, 1 << 16)
            except OSError:  # EIO: the process and its pty are gone
                return
            if not piece:
                return
            chunks.append(piece)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        code = proc.wait(timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        reader.join(10)
        os.close(master)
    return code, ANSI.sub(b"", b"".join(chunks)).decode(errors="replace")


def test_a_stalled_upload_shows_how_far_it_got_on_a_terminal(tmp_path, pluto_server):
    """The byte bar moves during a file's upload, not only when it completes: the storage
    holds the PUT for 3 s before reading it, and the terminal shows the part already sent
    (the connection's buffers: a few MB of the 48)."""
    jdir, data = _artifact_job(tmp_path, 48 * MB)
    pluto_server.fault("stall", path="/_storage/", method="PUT", count=1, seconds=3)
    code, text = _on_a_terminal(pluto_server, str(jdir))
    assert code == 0, text
    sent = {float(x) for x in re.findall(r"(\d+\.\d)/48\.0 MB", text)}
    assert any(0 < x < 48 for x in sent), (sent, text[-4000:])
    assert "48.0/48.0 MB 1/1 file" in text and "│ 1 (48.0 MB) │" in text, text[-4000:]
    assert _server_bytes(pluto_server, jdir, tmp_path / "dl") == data


def test_push_following_a_daemon_shows_the_bytes_it_delivered(tmp_path, pluto_server):
    """The follow path reads the byte bar from the journal (a file at a time)."""
    jdir, data = _artifact_job(tmp_path, 8 * MB)
    pluto_server.fault("429", path="/api/runs/create", count=1, retry_after=60)  # a long wait
    with DaemonProcess(pluto_server, jdir) as daemon:
        wait_for(lambda: "delivery paused" in daemon.log(), what="the daemon backing off")
        p = push(pluto_server, tmp_path, str(jdir))
        assert p.wait(60) == 0, p.log()
        text = _flat(p.log())
        assert "followed the plutosync already delivering it" in text, text
        assert "8.0/8.0 MB 1/1 file" in text and "│ 1 (8.0 MB) │" in text, text
        assert daemon.terminate() == 0
    assert _server_bytes(pluto_server, jdir, tmp_path / "dl") == data


def test_a_push_beside_a_daemon_whose_files_back_off_gets_them_sent_now(tmp_path, pluto_server):
    """push asks the daemon to try now: its files lane's backoff is skipped too, not only the
    ordered lane's (it waited out a 60 s Retry-After on the presign while push waited)."""
    jdir, data = _artifact_job(tmp_path, 1 * MB)
    pluto_server.fault("429", path="/files", count=1, retry_after=60)  # a long wait
    with DaemonProcess(pluto_server, jdir) as daemon:
        wait_for(lambda: "files paused" in daemon.log(), what="the files lane backing off")
        p = push(pluto_server, tmp_path, str(jdir))
        assert p.wait(40) == 0, p.log()  # well before the 60 s
        assert "1.0/1.0 MB 1/1 file" in _flat(p.log()), p.log()
        assert daemon.terminate() == 0
    assert _server_bytes(pluto_server, jdir, tmp_path / "dl") == data
