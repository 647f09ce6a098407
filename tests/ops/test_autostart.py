"""Autostart: init() spawns a detached daemon that delivers and exits; off switches; key hygiene."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pluto_offline import autostart
from tests.ops.conftest import ROOT, by_run_id, needs_sdk, status_json

# A job: init, log, then wait for the test's go before finishing, and print the daemon's pid.
JOB = textwrap.dedent("""
    import sys
    import pluto_offline as pluto
    settings = {"autostart": False} if sys.argv[2] == "off" else None
    run = pluto.init(dir=sys.argv[1], project="auto", run_id=sys.argv[3], name="job",
                     settings=settings)
    for step in range(20):
        run.log({"loss": 1.0 / (step + 1)})
    print("logged", flush=True)
    sys.stdin.readline()
    run.finish()
""")


def _daemons_for(journal_dir: Path) -> list[int]:
    """Pids of plutosync processes whose command line names this journal."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"syncd" in argv and str(journal_dir).encode() in b" ".join(argv):
            pids.append(int(entry.name))
    return pids


def _job(journal_dir: Path, env: dict[str, str], mode: str = "on", run_id: str = "job-1",
         wait: bool = True) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", JOB, str(journal_dir), mode, run_id],
                            cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    if wait:
        assert proc.stdout.readline().strip() == "logged"
    return proc


def _finish(*jobs: subprocess.Popen) -> None:
    for job in jobs:
        job.stdin.write("\n")
        job.stdin.close()
    for job in jobs:
        assert job.wait(timeout=30) == 0


def _wait_gone(journal_dir: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while _daemons_for(journal_dir) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _daemons_for(journal_dir), "the daemon exits once idle and no writer is alive"


def _base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("PLUTO_", "MLOP_")) and k != autostart.ENV_SWITCH}


@needs_sdk
def test_init_starts_a_daemon_that_delivers_and_exits(pluto_server, tmp_path: Path) -> None:
    jdir = tmp_path / "journal"
    env = {**_base_env(), **pluto_server.env()}
    job = _job(jdir, env)
    try:
        deadline = time.monotonic() + 10
        while not (pids := _daemons_for(jdir)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(pids) == 1, "exactly one daemon for the journal"
        argv = Path(f"/proc/{pids[0]}/cmdline").read_bytes().split(b"\0")
        assert b"--exit-when-idle" in argv
        assert not any(pluto_server.api_key.encode() in a for a in argv), "key on the command line"
        environ = Path(f"/proc/{pids[0]}/environ").read_bytes()
        assert f"PLUTO_API_KEY={pluto_server.api_key}".encode() in environ
        assert os.getsid(pids[0]) == pids[0], "detached: its own session"
    finally:
        _finish(job)
    _wait_gone(jdir)
    row = by_run_id(status_json(jdir))["job-1"]
    assert row["synced"] and row["state"] == "finished", row
    server_run = pluto_server.get_run(row["server_id"])
    assert server_run["status"] == "COMPLETED"
    log = jdir / autostart.LOG_FILE
    assert oct(log.stat().st_mode & 0o777) == "0o600"
    assert pluto_server.api_key not in log.read_text()


@needs_sdk
@pytest.mark.parametrize("how", ["env", "setting", "no-url"])
def test_turned_off_or_unconfigured_spawns_nothing(pluto_server, tmp_path: Path, how: str) -> None:
    jdir = tmp_path / "journal"
    env = {**_base_env(), **pluto_server.env()}
    if how == "env":
        env[autostart.ENV_SWITCH] = "0"
    if how == "no-url":
        env = {**_base_env(), "PLUTO_API_KEY": pluto_server.api_key}
    job = _job(jdir, env, mode="off" if how == "setting" else "on")
    try:
        time.sleep(0.5)
        assert _daemons_for(jdir) == []
    finally:
        _finish(job)
    assert not (jdir / autostart.LOG_FILE).exists()
    assert by_run_id(status_json(jdir))["job-1"]["pending"] > 0


@needs_sdk
def test_ranks_starting_together_start_one_daemon(pluto_server, tmp_path: Path) -> None:
    jdir = tmp_path / "journal"
    env = {**_base_env(), **pluto_server.env()}
    jobs = [_job(jdir, env, run_id=f"rank-{i}", wait=False) for i in range(4)]
    try:
        for job in jobs:
            assert job.stdout.readline().strip() == "logged"
        time.sleep(1.0)
        assert len(_daemons_for(jdir)) == 1
    finally:
        _finish(*jobs)
    _wait_gone(jdir)
    assert "already being delivered" not in (jdir / autostart.LOG_FILE).read_text()
    rows = status_json(jdir)
    assert len(rows) == 4 and all(r["synced"] for r in rows), rows


def test_a_daemon_holding_the_lock_means_no_spawn(tmp_path: Path, monkeypatch) -> None:
    jdir = tmp_path / "journal"
    jdir.mkdir()
    monkeypatch.setenv("PLUTO_API_KEY", "k")
    monkeypatch.setenv("PLUTO_URL_API", "http://127.0.0.1:9")
    monkeypatch.delenv(autostart.ENV_SWITCH, raising=False)
    fd = os.open(jdir / "journal.db.lock", os.O_CREAT | os.O_RDWR, 0o600)  # as syncd/lock.py
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        assert autostart.daemon_running(jdir / "journal.db")
        assert autostart._maybe_start_daemon(jdir) is None
    finally:
        os.close(fd)
    assert not autostart.daemon_running(jdir / "journal.db")


@pytest.mark.parametrize("env,settings,want", [
    ({}, None, True),
    ({"PLUTO_OFFLINE_AUTOSTART": "0"}, None, False),
    ({"PLUTO_OFFLINE_AUTOSTART": "false"}, None, False),
    ({"PLUTO_OFFLINE_AUTOSTART": "1"}, {"autostart": False}, False),
    ({}, {"autostart": "off"}, False),
    ({}, {"autostart": True}, True),
])
def test_switches(env: dict, settings: dict | None, want: bool) -> None:
    assert autostart.enabled(settings, env) is want


def test_server_configured_needs_key_and_url() -> None:
    assert not autostart.server_configured({})
    assert not autostart.server_configured({"PLUTO_API_KEY": "k"})
    assert not autostart.server_configured({"PLUTO_URL_API": "http://x"})
    assert autostart.server_configured({"PLUTO_API_KEY": "k", "PLUTO_URL_INGEST": "http://x"})


@needs_sdk
@pytest.mark.parametrize("trouble", ["refused-key", "not-pluto-url"])
def test_an_autostarted_daemon_that_cannot_deliver_gives_up_once_the_job_is_gone(
        pluto_server, tmp_path: Path, trouble: str) -> None:
    """A refused key (or a URL answering nothing like a Pluto server) cannot be fixed by the
    daemon a job started: once no job writes the journal it gives up after a bounded time
    (PLUTOSYNC_GIVE_UP, here 0.5 s), says why in its log and beside the journal, where
    `status` reads it, and keeps everything journaled."""
    from pluto_offline.journal import daemon_exit
    from tests.badinput.proxy import Proxy

    jdir = tmp_path / "journal"
    with Proxy("html-404") as other:
        env = {**_base_env(), **pluto_server.env(), "PLUTOSYNC_GIVE_UP": "0.5s"}
        if trouble == "refused-key":
            env["PLUTO_API_KEY"] = "plt_not_a_key_this_server_knows"
            why = "the server refused the API key (HTTP 401: Unauthorized): set a valid " \
                  "PLUTO_API_KEY for this server"
        else:
            env.update({v: other.address for v in
                        ("PLUTO_URL_API", "PLUTO_URL_INGEST", "PLUTO_URL_PY")})
            why = f"HTTP 404: protocol error: {other.address}/api/runs/create answered HTTP 404"
        _finish(_job(jdir, env))
        _wait_gone(jdir)
    note = daemon_exit.read(jdir / "journal.db")
    assert note is not None and note.code == 1
    assert note.reason.startswith(f"gave up after 0.5 s with no job writing the journal: {why}")
    assert note.reason.endswith(f"stay in the journal: fix that, then run `plutosync push {jdir}`")
    log = (jdir / autostart.LOG_FILE).read_text()
    assert log.count("ERROR gave up after 0.5 s") == 1 and env["PLUTO_API_KEY"] not in log
    (row,) = status_json(jdir)
    assert row["daemon_exit"] == {"pid": note.pid, "code": 1, "at": note.at,
                                  "reason": note.reason, "log": str(jdir / autostart.LOG_FILE)}
    assert row["pending"] > 0 and row["rejected"] == 0 and row["state"] == "finished"
    table = subprocess.run([sys.executable, "-m", "syncd", "status", "--dir", str(jdir)],
                           capture_output=True, text=True, cwd=ROOT, env=_base_env()).stdout
    assert f"{jdir}: the plutosync a job started gave up and exited (pid {note.pid}, exit 1" \
        in table, table
