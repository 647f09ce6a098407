"""Each logged file is one row on the server: a daemon killed mid-upload, an export pushed
beside the original journal, a presign without an answer (each presign inserts a row)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

import pluto_offline as pluto
from pluto_offline import journal
from pluto_offline.journal import filerows
from tests.fixtures.daemon import DaemonProcess, wait_for
from tests.media.helpers import PROJECT, counts, drain, file_rows, server_id, stock_client


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("PLUTO_OFFLINE_AUTOSTART", "0")
    for var in ("PLUTO_DIR", "PLUTO_PROJECT", "PLUTO_RUN_ID", "PLUTO_API_KEY"):
        monkeypatch.delenv(var, raising=False)


def offline_job(jdir: Path, run_id: str, blobs: dict[str, bytes]) -> None:
    """A run that logs one Artifact per entry of ``blobs`` (bytes), then finishes."""
    run = pluto.init(dir=str(jdir), project=PROJECT, name=run_id, run_id=run_id)
    for name, data in blobs.items():
        run.log({name: pluto.Artifact(data, caption=name)})
    run.finish()
    run._media.wait_staged()


def bytes_on_server(server, sid: int, log_name: str, tmp_path: Path) -> bytes:
    client = stock_client(server)
    try:
        return client.download_file(PROJECT, sid, log_name, tmp_path / "dl").read_bytes()
    finally:
        client.close()


def test_a_daemon_killed_mid_upload_restarts_without_a_second_row(tmp_path, pluto_server):
    data = os.urandom(2_000_000)
    offline_job(tmp_path / "j", "killed-upload", {"ckpt": data, "small": b"x" * 10})
    # the first PUT hangs in the server: the daemon is inside the upload when it is killed
    pluto_server.fault("stall", path="/_storage/", method="PUT", count=1, seconds=30)
    daemon = DaemonProcess(pluto_server, tmp_path / "j")

    def presigned() -> bool:
        with journal.Journal.open(tmp_path / "j", readonly=True) as j:
            return any(f.state == "presigned" for f in filerows.pending(j, 1))

    wait_for(presigned, timeout=20, what="a presigned upload in flight")
    daemon.kill()
    pluto_server.clear_faults()
    drain(pluto_server, tmp_path / "j")
    sid = server_id(tmp_path / "j", "killed-upload")
    assert file_rows(pluto_server, sid) == 2
    assert bytes_on_server(pluto_server, sid, "ckpt", tmp_path) == data
    assert pluto_server.get_run(sid)["status"] == "COMPLETED"
    assert pluto_server.request_counts().get("/files") == 1  # one presign, never repeated


def test_an_export_and_the_original_journal_pushed_add_no_row(tmp_path, pluto_server):
    data = os.urandom(300_000)
    offline_job(tmp_path / "j", "carried", {"ckpt": data})
    usb = tmp_path / "usb"
    usb.mkdir()
    export = DaemonProcess(pluto_server, tmp_path / "j", "--dir", str(tmp_path / "j"),
                           "--out", str(usb / "site.db"), command="export")
    assert export.wait(30) == 0, export.log()
    assert "1 staged file" in export.log()
    push = DaemonProcess(pluto_server, usb, str(usb / "site.db"), command="push")
    assert push.wait(60) == 0, push.log()
    sid = server_id(usb / "site.db", "carried")
    assert bytes_on_server(pluto_server, sid, "ckpt", tmp_path) == data
    drain(pluto_server, tmp_path / "j")  # the original, later: its file is known delivered
    assert file_rows(pluto_server, sid) == 1
    assert counts(tmp_path / "j")[1].done == 1
    assert pluto_server.request_counts().get("/files") == 1


def test_a_presign_whose_answer_is_lost_is_sent_again_and_counted(tmp_path, pluto_server):
    data = os.urandom(50_000)
    offline_job(tmp_path / "j", "lost-answer", {"ckpt": data})
    # the server inserts the row, then the connection drops before the answer is read
    pluto_server.fault("reset", path="/files", count=1)
    drain(pluto_server, tmp_path / "j")
    sid = server_id(tmp_path / "j", "lost-answer")
    assert bytes_on_server(pluto_server, sid, "ckpt", tmp_path) == data
    # the contract's one window (docs/media.md): a row without bytes cannot be uploaded to
    # without a new presign; the journal counts it, so a second row is never unexplained
    c = counts(tmp_path / "j")[1]
    assert file_rows(pluto_server, sid) == 1 + c.resent
    assert c.resent == 1 and c.done == 1


def test_a_presign_lost_before_the_server_stored_it_is_sent_once(tmp_path, pluto_server):
    offline_job(tmp_path / "j", "refused-once", {"ckpt": b"abc"})
    pluto_server.fault("refuse", path="/files", count=1)  # RST before anything is applied
    drain(pluto_server, tmp_path / "j")
    sid = server_id(tmp_path / "j", "refused-once")
    assert file_rows(pluto_server, sid) == 1
    # a reset before the server applied it reads as one after: counted as a *possible*
    # second row (never fewer than the rows there may be; the held presign below)
    assert counts(tmp_path / "j")[1].resent <= 1
    assert bytes_on_server(pluto_server, sid, "ckpt", tmp_path) == b"abc"


def test_a_file_the_server_refuses_is_recorded_and_the_run_still_ends(tmp_path, pluto_server):
    offline_job(tmp_path / "j", "refused-file", {"ckpt": b"abc"})
    pluto_server.fault("400", path="/files", count=1)
    drain(pluto_server, tmp_path / "j")
    sid = server_id(tmp_path / "j", "refused-file")
    assert pluto_server.get_run(sid)["status"] == "COMPLETED"
    c = counts(tmp_path / "j")[1]
    assert (c.rejected, c.done, c.pending) == (1, 0, 0)
    with journal.Journal.open(tmp_path / "j", readonly=True) as j:
        reason = j.conn.execute("SELECT reason FROM file_delivery").fetchone()[0]
    assert "injected fault: HTTP 400" in reason


def test_retention_deletes_delivered_bytes_and_never_pending_ones(tmp_path, pluto_server):
    from syncd.retention import prune_acked

    offline_job(tmp_path / "j", "kept", {"a": b"delivered bytes", "b": b"shared bytes"})
    drain(pluto_server, tmp_path / "j")
    run = pluto.init(dir=str(tmp_path / "j"), project=PROJECT, name="later", run_id="later")
    run.log({"c": pluto.Artifact(b"not uploaded yet")})
    run.log({"d": pluto.Artifact(b"shared bytes")})  # same content as a delivered file
    run.finish()
    run._media.wait_staged()
    blobs = tmp_path / "j" / "files"
    before = {p.name for p in blobs.iterdir() if p.is_file()}
    assert len(before) == 3  # content-addressed: the shared bytes are staged once
    with journal.Journal.open(tmp_path / "j") as j:
        result = prune_acked(j, 0)
        shared = j.conn.execute("SELECT blob FROM files WHERE log_name = 'd'").fetchone()[0]
        pending = j.conn.execute("SELECT blob FROM files WHERE log_name = 'c'").fetchone()[0]
    after = {p.name for p in blobs.iterdir() if p.is_file()}
    assert (result.files, result.file_bytes) == (1, len(b"delivered bytes"))
    assert after == {shared, pending}  # what the second run still has to upload stays
    drain(pluto_server, tmp_path / "j")
    with journal.Journal.open(tmp_path / "j") as j:
        assert prune_acked(j, 0).files == 2
    assert not [p for p in blobs.iterdir() if p.is_file()]
    assert file_rows(pluto_server, server_id(tmp_path / "j", "later")) == 2


def test_a_finished_replayer_lets_go_of_its_files_lane(tmp_path, pluto_server):
    """push delivers journal after journal: each one's files lane (a thread, a connection,
    HTTP sessions) must end with it, not live on until the push exits (a folder of 500
    journals would hold 500 threads and connections: past the usual 1024 descriptors)."""
    import threading

    from syncd.replayer import drain as drain_replayer
    from tests.fixtures.daemon import replayer_for

    offline_job(tmp_path / "j", "lane", {"a": b"x" * 1000})
    before = {t.ident for t in threading.enumerate()}
    r = replayer_for(tmp_path / "j", pluto_server)
    assert drain_replayer(r, deadline=None)
    lane = r.files.thread
    assert lane is not None and lane.is_alive()  # it uploaded the file
    r.close()
    assert not lane.is_alive()
    assert {t.ident for t in threading.enumerate()} <= before
    with pytest.raises(Exception, match="closed"):
        r.files.j.conn.execute("SELECT 1")  # its connection is closed too
    r.j.close()
    r.client.close()
    assert file_rows(pluto_server, server_id(tmp_path / "j", "lane")) == 1


def test_a_presign_held_past_the_timeout_and_applied_late_is_counted(tmp_path, pluto_server):
    """Seed 1199: the server held a presign past the daemon's timeout; the daemon looked, saw
    no row yet, presigned again, and the held one was applied after: two rows, none counted."""
    offline_job(tmp_path / "j", "held", {"ckpt": b"abc"})
    pluto_server.fault("stall", path="/files", count=1, seconds=3)
    d = DaemonProcess(pluto_server, tmp_path / "j", "--exit-when-idle",
                      env={"PLUTOSYNC_TIMEOUT": "1"})
    assert d.wait(60) == 0, d.log()
    time.sleep(2.5)  # the held presign has been applied
    sid = server_id(tmp_path / "j", "held")
    c = counts(tmp_path / "j")[1]
    assert c.done == 1 and c.resent == 1
    assert file_rows(pluto_server, sid) == 1 + c.resent  # the second row is accounted for
    assert bytes_on_server(pluto_server, sid, "ckpt", tmp_path) == b"abc"
