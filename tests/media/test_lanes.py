"""Files travel in a lane of their own (docs/media.md): an upload the storage keeps failing
holds back neither the run's metrics nor anything else, while the run's final status waits for
every file logged before it; a storage URL refused as expired is presigned again."""

from __future__ import annotations

import os
import signal

import pluto_offline as pluto
from tests.fixtures.daemon import DaemonProcess, wait_for
from tests.media.helpers import PROJECT, counts, drain, file_rows, server_id
from tests.media.test_exactly_once import bytes_on_server, offline_job


def test_a_failing_upload_holds_back_no_metric_and_the_status_waits_for_it(tmp_path,
                                                                          pluto_server):
    jdir = tmp_path / "j"
    data = os.urandom(3_000_000)
    run = pluto.init(dir=str(jdir), project=PROJECT, name="lanes", run_id="lanes")
    run.log({"ckpt": pluto.Artifact(data)}, step=0)
    for i in range(1, 201):
        run.log({"loss": 1.0 / i}, step=i)
    run.finish()
    run._media.wait_staged()
    # every upload fails (a storage outage), until the rule is cleared
    pluto_server.fault("503", path="/_storage/", method="PUT")
    with DaemonProcess(pluto_server, jdir) as daemon:
        def metrics_in() -> bool:
            runs = pluto_server.list_runs(PROJECT)
            return bool(runs) and len(pluto_server.metrics(runs[0]["id"], PROJECT, "loss")) == 200

        wait_for(metrics_in, timeout=30, what="the run's 200 points")
        wait_for(lambda: sum(r["fired"] for r in pluto_server.faults()) >= 3, timeout=30,
                 what="uploads tried and failed")
        assert daemon.log().count("files paused") == 1  # once a minute, not per failure
        sid = server_id(jdir, "lanes")
        # the finish() journaled after the artifact is not sent while the artifact is not up
        assert pluto_server.get_run(sid)["status"] == "RUNNING"
        assert counts(jdir)[1].done == 0
        pluto_server.clear_faults()
        os.kill(daemon.pid, signal.SIGUSR1)  # try now, as push beside a daemon asks
        wait_for(lambda: pluto_server.get_run(sid)["status"] == "COMPLETED", timeout=60,
                 what="COMPLETED once the artifact is up")
    assert bytes_on_server(pluto_server, sid, "ckpt", tmp_path) == data
    assert file_rows(pluto_server, sid) == 1


def test_a_storage_url_refused_as_expired_is_presigned_again_and_counted(tmp_path,
                                                                        pluto_server):
    data = os.urandom(100_000)
    offline_job(tmp_path / "j", "expired", {"ckpt": data})
    # the kept URL is refused as S3 refuses an expired one (403), once
    pluto_server.fault("403", path="/_storage/", method="PUT", count=1)
    drain(pluto_server, tmp_path / "j")
    sid = server_id(tmp_path / "j", "expired")
    assert bytes_on_server(pluto_server, sid, "ckpt", tmp_path) == data
    c = counts(tmp_path / "j")[1]
    assert (c.done, c.resent) == (1, 1)  # the second presign: a second row, counted
    assert file_rows(pluto_server, sid) == 2
    assert pluto_server.get_run(sid)["status"] == "COMPLETED"


def test_staged_bytes_deleted_from_the_journal_are_recorded_and_the_run_still_ends(
        tmp_path, pluto_server):
    offline_job(tmp_path / "j", "gone", {"ckpt": os.urandom(1000), "kept": b"kept bytes"})
    from pluto_offline import journal
    from pluto_offline.journal import staged

    with journal.Journal.open(tmp_path / "j", readonly=True) as j:
        [(sha,)] = j.conn.execute("SELECT blob FROM files WHERE log_name = 'ckpt'").fetchall()
    staged.blob_path(tmp_path / "j", sha).unlink()  # a cleaner, a careless rm
    drain(pluto_server, tmp_path / "j")
    sid = server_id(tmp_path / "j", "gone")
    assert pluto_server.get_run(sid)["status"] == "COMPLETED"
    assert bytes_on_server(pluto_server, sid, "kept", tmp_path) == b"kept bytes"
    c = counts(tmp_path / "j")[1]
    assert (c.done, c.rejected) == (1, 1)
    with journal.Journal.open(tmp_path / "j", readonly=True) as j:
        [(reason,)] = j.conn.execute("SELECT reason FROM file_delivery WHERE state = 'rejected'"
                                     ).fetchall()
    assert reason == "its staged bytes are missing from the journal"
