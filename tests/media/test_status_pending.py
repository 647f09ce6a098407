"""``plutosync status`` shows each run's files and bytes still to upload (issue 9,
docs/media.md "status, export, prune"): while no plutosync runs, while the storage refuses the
uploads, and what is left once some went through; nothing once every file is delivered."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

from tests.badinput.helpers import cli
from tests.fixtures.daemon import DaemonProcess, wait_for
from tests.fixtures.server import LocalServer
from tests.media.helpers import PROJECT, counts, run_job, server_id

BIG, SMALL, NOTE = 1_500_000, 300_000, b"hello"


def _row(jdir: Path) -> dict[str, Any]:
    """The run's row of ``plutosync status --json``."""
    res = cli("status", "--dir", str(jdir), "--json")
    assert res.returncode == 0, res.stderr
    [row] = json.loads(res.stdout)
    return row


def _status(jdir: Path) -> tuple[dict[str, Any], str, int]:
    """The run's ``status --json`` row, the text table's output and ``--check``'s exit code."""
    row = _row(jdir)
    text = cli("status", "--dir", str(jdir))
    assert text.returncode == 0, text.stderr
    return row, text.stdout, cli("status", "--dir", str(jdir), "--check").returncode


def _files(pending: int, pending_bytes: int, done: int) -> dict[str, Any]:
    return {"pending": pending, "pending_bytes": pending_bytes, "unstaged": 0, "done": done,
            "lost": 0, "rejected": 0, "resent": 0, "lost_files": []}


def test_files_to_upload_are_shown_per_run_until_delivered(tmp_path: Path,
                                                           pluto_server: LocalServer) -> None:
    jdir = tmp_path / "j"
    run_job(jdir, f"""
        run = pluto.init(name="pending", run_id="pending")
        # "big" last: files go in the order logged, and one the storage keeps refusing
        # holds back those after it in its run
        run.log({{"small": pluto.Artifact(os.urandom({SMALL})),
                 "note": pluto.Text({NOTE.decode()!r}),
                 "big": pluto.Artifact(os.urandom({BIG})), "loss": 0.5}})
        run.finish()
    """)
    # no plutosync: every file is left, with its bytes (1,800,005 B = 1.7 MiB)
    row, text, check = _status(jdir)
    assert row["files"] == _files(3, BIG + SMALL + len(NOTE), 0)
    assert "files proj/pending: 3 to upload (1.7 MiB), 0 done" in text, text
    assert row["synced"] is False and check == 1

    # the storage refuses every upload (an outage): the run's metrics go, its files stay
    pluto_server.fault("503", path="/_storage/", method="PUT")
    with DaemonProcess(pluto_server, jdir) as daemon:
        wait_for(lambda: pluto_server.list_runs(PROJECT) and pluto_server.metrics(
            pluto_server.list_runs(PROJECT)[0]["id"], PROJECT, "loss"), timeout=30,
            what="the run's metric delivered")
        wait_for(lambda: sum(r["fired"] for r in pluto_server.faults()) >= 1, timeout=30,
                 what="an upload refused")
        row, text, check = _status(jdir)
        assert row["files"] == _files(3, BIG + SMALL + len(NOTE), 0)
        assert "files proj/pending: 3 to upload (1.7 MiB), 0 done" in text, text
        assert row["synced"] is False and check == 1

        # only the big artifact is still refused: what is left is its count and its bytes
        sid = server_id(jdir, "pending")
        pluto_server.clear_faults()
        pluto_server.fault("503", path=f"/_storage/{PROJECT}/{sid}/big/", method="PUT")
        os.kill(daemon.pid, signal.SIGUSR1)  # try the files now, whatever their backoff
        wait_for(lambda: counts(jdir)[1].done == 2, timeout=60,
                 what="the two files the storage accepts delivered")
        row, text, check = _status(jdir)
        assert row["files"] == _files(1, BIG, 2)
        assert "files proj/pending: 1 to upload (1.4 MiB), 2 done" in text, text
        assert row["synced"] is False and check == 1
        assert pluto_server.get_run(sid)["status"] == "RUNNING"  # the end waits for "big"

        pluto_server.clear_faults()
        os.kill(daemon.pid, signal.SIGUSR1)
        wait_for(lambda: _row(jdir)["synced"], timeout=60, every=0.5, what="the run synced")
    row, text, check = _status(jdir)
    assert row["files"] == _files(0, 0, 3)
    assert "to upload" not in text and "files proj/pending" not in text, text
    assert check == 0
    assert pluto_server.get_run(sid)["status"] == "COMPLETED"
