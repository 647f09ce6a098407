"""Files that can never be delivered ("lost": a source changed or deleted before it was staged,
or refused by the staging quota) are never hidden behind "everything delivered": ``plutosync
push`` lists them per run and exits 1, a repeat push too; ``plutosync status`` does not call
the run synced and ``--check`` exits 1. Everything else about the run is still delivered.

Real SDK jobs in their own processes, a real ``plutosync push``/``status``, the local server.
"""

from __future__ import annotations

import json
from pathlib import Path

from pluto_offline import journal
from syncd import lock
from tests.badinput.helpers import clean_env, cli
from tests.daemon.test_push_robust import flat, push
from tests.fixtures.daemon import DaemonProcess, wait_for
from tests.media.helpers import (
    PROJECT,
    file_rows,
    job,
    run_job,
    server_id,
    stock_client,
)

# two checkpoints past a 3 KiB quota: refused, recorded lost; the small one and the metrics go
OVER_QUOTA = """
    run = pluto.init(name="quota", run_id="quota")
    run.log({"ckpt": pluto.Artifact(b"a" * 2000)}, step=0)  # fits
    for s in range(5):
        run.log({"loss": 1 / (s + 1)}, step=s)
    run.log({"ckpt": pluto.Artifact(b"b" * 2000)}, step=1)  # 4000 > 3072: lost
    run.log({"ckpt": pluto.Artifact(b"c" * 2000)}, step=2)  # lost too
    run.finish()
"""


def _quota_job(tmp_path: Path) -> Path:
    jdir = tmp_path / "j"
    run_job(jdir, OVER_QUOTA, PLUTO_OFFLINE_MAX_STAGED="3K")
    return jdir


def _status(server, jdir: Path, *args: str) -> DaemonProcess:
    p = DaemonProcess(server, jdir, "--dir", str(jdir), *args, command="status",
                      env={"COLUMNS": "200"})
    p.wait(30)
    return p


def test_push_lists_files_lost_to_the_quota_and_exits_1_every_time(tmp_path, pluto_server):
    jdir = _quota_job(tmp_path)
    lost = (f"lost in {jdir}: {PROJECT}/quota: 2 files lost before they were staged: over the "
            "staging quota (PLUTO_OFFLINE_MAX_STAGED=3072 bytes;")
    closing = ("push incomplete: 2 files lost before they were staged, never deliverable "
               "(listed above; `plutosync status` names each)")
    first = push(pluto_server, tmp_path, str(jdir))
    assert first.wait(60) == 1, first.log()
    text = flat(first)
    assert lost in text and "(log name 'ckpt')" in text and closing in text
    assert "everything delivered" not in text
    assert "1 (2.0 kB), 2 lost" in text  # the table's files column
    # everything else about the run is delivered: metrics, the file that fit, its final status
    sid = server_id(jdir, "quota")
    run = pluto_server.get_run(sid)
    assert run["status"] == "COMPLETED"
    assert [p["step"] for p in pluto_server.metrics(sid, PROJECT, "loss")] == list(range(5))
    assert file_rows(pluto_server, sid) == 1
    client = stock_client(pluto_server)
    try:
        got = client.download_file(PROJECT, sid, "ckpt", tmp_path / "o")
    finally:
        client.close()
    assert got.read_bytes() == b"a" * 2000

    again = push(pluto_server, tmp_path, str(jdir))  # lost for good: said on every push
    assert again.wait(60) == 1, again.log()
    text = flat(again)
    assert lost in text and closing in text
    assert "everything delivered" not in text and "nothing to send" not in text
    assert file_rows(pluto_server, sid) == 1  # nothing sent twice


def test_status_does_not_call_a_run_with_lost_files_synced(tmp_path, pluto_server):
    jdir = _quota_job(tmp_path)
    p = push(pluto_server, tmp_path, str(jdir))
    assert p.wait(60) == 1, p.log()
    table = _status(pluto_server, jdir)
    assert table.proc.returncode == 0, table.log()
    lines = table.log().splitlines()
    header = next(x for x in lines if "synced" in x and "rejected" in x)
    cols = [c.strip() for c in header.split("┃")]
    assert cols[-5:] == ["pending", "delivered", "rejected", "lost files", "synced"], header
    row = next(x for x in lines if x.startswith(f"{PROJECT}/quota"))
    cells = [c.strip() for c in row.split("│")]
    assert cells[-5] == "0" and cells[-3:] == ["0", "2", "no"], row  # pending; rejected, lost
    assert "1 run, 0 synced, 1 with lost files" in table.log()
    assert "2 files lost (never uploaded):" in table.log()
    assert "over the staging quota" in table.log()

    check = _status(pluto_server, jdir, "--check")
    assert check.proc.returncode == 1, check.log()
    res = cli("status", "--dir", str(jdir), "--json", env=clean_env())
    assert res.returncode == 0, res.stderr
    [r] = json.loads(res.stdout)
    assert (r["synced"], r["pending"], r["rejected"]) == (False, 0, 0)
    assert (r["files"]["lost"], r["files"]["done"], r["files"]["pending"]) == (2, 1, 0)
    assert [f["log_name"] for f in r["files"]["lost_files"]] == ["ckpt", "ckpt"]


KILL_AFTER_LOG = """
    run = pluto.init(name="ckpt", run_id="ckpt")
    for s in range(3):
        run.log({{"loss": 1 / (s + 1)}}, step=s)
    run.log({{"ckpt": pluto.Artifact({path!r})}})
    os.kill(os.getpid(), 9)  # before the writer thread's fold: staging is left to recovery
"""


def test_a_checkpoint_deleted_before_staging_is_listed_by_push(tmp_path, pluto_server):
    """The new-user trial: a checkpoint logged by path, deleted before it was staged."""
    src = tmp_path / "model.pt"
    src.write_bytes(b"weights")
    jdir = tmp_path / "j"
    proc = job(jdir, KILL_AFTER_LOG.format(path=str(src)))
    proc.wait(30)
    assert proc.returncode == -9, proc.communicate()[0]
    src.unlink()
    p = push(pluto_server, tmp_path, str(jdir))
    assert p.wait(60) == 1, p.log()
    text = flat(p)
    assert (f"lost in {jdir}: {PROJECT}/ckpt: 1 file lost before it was staged: {src} was "
            "deleted before it was staged (log name 'ckpt')") in text
    assert "push incomplete: 1 file lost before it was staged, never deliverable" in text
    assert "everything delivered" not in text
    sid = server_id(jdir, "ckpt")
    assert pluto_server.get_run(sid)["status"] == "FAILED"  # killed: the run still ends
    assert [p["step"] for p in pluto_server.metrics(sid, PROJECT, "loss")] == [0, 1, 2]
    assert _status(pluto_server, jdir, "--check").proc.returncode == 1


def test_push_following_a_daemon_lists_lost_files(tmp_path, pluto_server):
    """A journal a live plutosync delivers: push follows it, and still names the lost files."""
    jdir = _quota_job(tmp_path)
    daemon = DaemonProcess(pluto_server, jdir)
    try:
        wait_for(lambda: lock.holder(jdir / journal.JOURNAL_FILE) == daemon.pid, 30)
        p = push(pluto_server, tmp_path, str(jdir), "--timeout", "30")
        assert p.wait(60) == 1, p.log()
    finally:
        daemon.terminate()
    text = flat(p)
    assert "followed the plutosync already delivering it" in text
    assert f"lost in {jdir}: {PROJECT}/quota: 2 files lost before they were staged" in text
    assert "everything delivered" not in text


def test_push_refuses_jobs_and_timeout_out_of_range():
    for args, line in (
        (("--jobs", "0"), "plutosync push: --jobs 0: give 1 or more journals to deliver in "
                          "parallel (default 4)"),
        (("--jobs", "-3"), "plutosync push: --jobs -3: give 1 or more journals to deliver in "
                           "parallel (default 4)"),
        (("--timeout", "-1"), "plutosync push: --timeout -1: give 0 (keep trying) or more "
                              "seconds (default 300)"),
        (("--timeout", "nan"), "plutosync push: --timeout nan: give 0 (keep trying) or more "
                               "seconds (default 300)"),
    ):
        res = cli("push", "/nonexistent", *args, env=clean_env(PLUTO_API_KEY="k"))
        assert res.returncode == 2, (args, res.stderr)
        assert res.stderr.strip() == line, res.stderr
        assert res.stdout == ""


def test_an_export_made_before_staging_is_not_a_loss_and_the_original_delivers(
        tmp_path, pluto_server):
    """A copy taken while a file's bytes were not staged yet holds the file's row without its
    bytes: its push says nothing is lost (the original delivers the file) and exits 0 —
    chaos seed 1122 pushed such a live export and was told "2 files lost" (exit 1). The job
    kills itself right after the row is journaled, so the bytes are unstaged for certain."""
    import signal
    import sqlite3

    jdir = tmp_path / "j"
    big = 64 << 20  # staging (hash + copy) outlasts the kill below by far
    proc = job(jdir, f"""
        import os, signal
        run = pluto.init(name="early", run_id="early")
        run.log({{"loss": 0.5}}, step=0)
        run.log({{"ckpt": pluto.Artifact(b"z" * {big})}}, step=0)
        run.flush()                        # the row is journaled; its bytes are being staged
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    with journal.Journal.open(jdir, readonly=True) as j:
        [(blob,)] = j.conn.execute("SELECT blob FROM files").fetchall()
    assert blob is None  # not staged when the copy is taken: the case under test
    # the journal file alone, copied as a user copies a database (SQLite's online backup):
    # the file's row without its bytes, which are in the original's directory only
    carry = tmp_path / "carry" / "x0.db"
    carry.parent.mkdir()
    src, dst = sqlite3.connect(jdir / "journal.db"), sqlite3.connect(carry)
    with dst:
        src.backup(dst)
    src.close()
    dst.close()

    x0 = push(pluto_server, tmp_path, str(carry))
    assert x0.wait(120) == 0, x0.log()
    said = flat(x0)
    assert "everything delivered" in said and "lost before" not in said, x0.log()
    sid = server_id(carry, "early")
    assert file_rows(pluto_server, sid) == 0  # the copy had no bytes to send

    original = push(pluto_server, tmp_path, str(jdir))
    assert original.wait(120) == 0, original.log()
    assert file_rows(pluto_server, sid) == 1  # the original staged and delivered it, once
    client = stock_client(pluto_server)
    try:
        [f] = client.get_files(PROJECT, sid, file_name="ckpt")
        assert f["fileSize"] == big
    finally:
        client.close()
