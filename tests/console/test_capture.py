"""Console capture end to end: real jobs, their real stdout/stderr, the journal, the server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pluto.query as pq

from pluto_offline import journal
from tests.console import jobs
from tests.fixtures.daemon import DaemonProcess

KEY = "plk_live_7f3a9c2e5b1d4a8f"  # an API key as a job's environment holds it


def test_every_writer_reaches_stdout_unchanged_and_the_server_typed(tmp_path, pluto_server):
    code, out, err = jobs.run(tmp_path / "j", """
        run = pluto.init(name="c", run_id="c1")
        print("from print", flush=True)
        os.write(1, b"from os.write(1)\\n")
        subprocess.run([sys.executable, "-c", "print('from a subprocess')"])
        logging.basicConfig(level=logging.INFO)
        logging.getLogger("train").warning("from logging")
        print("to stderr", file=sys.stderr, flush=True)
        sys.stdout.write("no newline at the end")
        run.finish()
        print("after finish")
    """)
    assert code == 0, err
    # the terminal sees every byte, in order, exactly as written
    assert out == (b"from print\nfrom os.write(1)\nfrom a subprocess\nno newline at the end"
                   b"after finish\n")
    # (what finish() itself says afterwards is not the run's console)
    assert err.startswith(b"WARNING:train:from logging\nto stderr\n")
    assert jobs.messages(tmp_path / "j", "c1", "INFO") == [
        "from print", "from os.write(1)", "from a subprocess", "no newline at the end"]
    assert jobs.messages(tmp_path / "j", "c1", "ERROR") == [
        "WARNING:train:from logging", "to stderr"]

    d = DaemonProcess(pluto_server, tmp_path / "j", "--exit-when-idle")
    assert d.wait(60) == 0, d.log()
    client = pq.Client(api_token=pluto_server.api_key, host=pluto_server.url)
    try:
        logs = client.get_logs("proj", "PRO-1")
        errors = client.get_logs("proj", "PRO-1", log_type="error")
    finally:
        client.close()
    assert sorted(r["message"] for r in logs) == sorted(
        ["from print", "from os.write(1)", "from a subprocess", "no newline at the end",
         "WARNING:train:from logging", "to stderr"])
    assert sorted(r["lineNumber"] for r in logs) == [1, 2, 3, 4, 5, 6]
    assert [r["message"] for r in errors] == ["WARNING:train:from logging", "to stderr"]


def test_the_line_before_a_sigkill_reaches_stdout_and_the_server(tmp_path, pluto_server):
    code, out, _ = jobs.run(tmp_path / "j", """
        run = pluto.init(name="k", run_id="k1")
        for i in range(3):
            print(f"step {i}", flush=True)
        os.write(2, b"CUDA out of memory: the reason it died\\n")
        os.write(1, b"last words")
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    assert code == -signal.SIGKILL
    assert out == b"step 0\nstep 1\nstep 2\nlast words"
    assert jobs.messages(tmp_path / "j", "k1") == [
        "step 0", "step 1", "step 2", "CUDA out of memory: the reason it died", "last words"]
    # delivered as a crash report is read: the reason it died, typed, on the server
    d = DaemonProcess(pluto_server, tmp_path / "j", "--exit-when-idle")
    assert d.wait(60) == 0, d.log()
    client = pq.Client(api_token=pluto_server.api_key, host=pluto_server.url)
    try:
        logs = client.get_logs("proj", "PRO-1")
        errors = client.get_logs("proj", "PRO-1", log_type="error")
        status = client.get_run("proj", "PRO-1")["status"]
    finally:
        client.close()
    assert [r["message"] for r in sorted(logs, key=lambda r: r["lineNumber"])][-2:] == [
        "CUDA out of memory: the reason it died", "last words"]
    assert [r["message"] for r in errors] == ["CUDA out of memory: the reason it died"]
    assert status == "FAILED"  # the dead writer reported: FAILED {"reason": "killed"}


def _raw_journal(journal_dir) -> dict[str, bytes]:
    """Every file of a journal directory, byte for byte: the database, its write-ahead log
    (where committed lines live until a checkpoint copies them), the spill files..."""
    return {str(p.relative_to(journal_dir)): p.read_bytes()
            for p in sorted(journal_dir.rglob("*")) if p.is_file()}


def _messages_so_far(journal_dir, run_id: str) -> list[str] | None:
    try:
        return jobs.messages(journal_dir, run_id)
    except (journal.JournalError, AssertionError):  # no journal, or no run in it, yet
        return None


def test_the_api_key_and_token_shapes_never_reach_the_journal(tmp_path):
    go = tmp_path / "go"
    proc = jobs.start(tmp_path / "j", f"""
        run = pluto.init(name="s", run_id="s1")
        print("key:", os.environ["PLUTO_API_KEY"])
        print("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload")
        print("hf token hf_abcdefghijklmnop and password=hunter22")
        os.write(2, b"postgres://bob:s3cret@db:5432/x\\n")
        while not os.path.exists({str(go)!r}):  # the test reads the journal's files meanwhile
            time.sleep(0.01)
        run.finish()
    """, PLUTO_API_KEY=KEY)
    want = ["key: ***REDACTED***", "Authorization: Bearer ***REDACTED***",
            "hf token ***REDACTED*** and ***REDACTED***", "postgres://bob:***REDACTED***@db:5432/x"]
    try:
        deadline = time.monotonic() + 20
        while _messages_so_far(tmp_path / "j", "s1") != want and time.monotonic() < deadline:
            time.sleep(0.05)
        running = _raw_journal(tmp_path / "j")  # the lines committed, the run still open
    finally:
        go.touch()
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert KEY.encode() in out  # the terminal is the user's: unchanged
    assert jobs.messages(tmp_path / "j", "s1") == want
    assert running["journal.db-wal"]  # the lines were there, not yet checkpointed
    for when, files in (("running", running), ("finished", _raw_journal(tmp_path / "j"))):
        assert "journal.db" in files and "journal.db-wal" in running, (when, sorted(files))
        for name, raw in files.items():
            for secret in (KEY.encode(), b"hunter22", b"s3cret", b"eyJhbGciOiJIUzI1NiJ9"):
                assert secret not in raw, (when, name, secret)


def test_capture_off_by_setting_or_env_leaves_no_lines_and_the_output_alone(tmp_path):
    for run_id, settings, env in (("off1", '{"disable_console": True}', {}),
                                  ("off2", "None", {"PLUTO_DISABLE_CONSOLE": "1"})):
        code, out, _ = jobs.run(tmp_path / "j", f"""
            run = pluto.init(name="o", run_id="{run_id}", settings={settings})
            print("not captured")
            run.finish()
        """, **env)
        assert code == 0 and out == b"not captured\n"
        assert jobs.messages(tmp_path / "j", run_id) == []


def test_a_killed_helper_hands_the_output_back_and_the_job_goes_on(tmp_path):
    code, out, err = jobs.run(tmp_path / "j", """
        from pluto_offline import console
        run = pluto.init(name="h", run_id="h1")
        print("before", flush=True)
        run.flush()
        helper = console.active().proc
        os.kill(helper.pid, signal.SIGKILL)
        helper.wait()
        time.sleep(0.2)
        for i in range(20000):  # more than a pipe holds: nothing may block
            print(f"after {i}")
        run.finish()
    """)
    assert code == 0, err
    assert out.split(b"\n")[0] == b"before" or b"before\n" in out
    assert out.endswith(b"after 19999\n") and out.count(b"\nafter ") == 20000
    assert b"console helper process exited (killed by signal 9)" in err


def test_a_terminal_stays_a_terminal_and_its_bytes_are_unchanged(tmp_path):
    """Under a real pty, the job still sees a terminal (colours, line buffering, tqdm) and
    the terminal gets its bytes unchanged: no \\n -> \\r\\n, the colour codes kept."""
    master, slave = os.openpty()
    proc = jobs.start(tmp_path / "j", """
        run = pluto.init(name="t", run_id="t1")
        print("isatty", os.isatty(1))
        print("\\x1b[32mgreen\\x1b[0m")
        for p in (10, 60, 100):
            print(f"\\r{p}%", end="")
        print()
        run.finish()
    """, stdout=slave, stderr=slave)  # (finish() then says where the run is: not compared)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: every writer closed the pty
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(30) == 0
    shown = b"".join(chunks)
    # the outer pty (ours) does its own \n -> \r\n; the job's bytes pass unchanged inside it
    assert shown.split(b"pluto_offline: ")[0] == b"isatty True\r\n\x1b[32mgreen\x1b[0m\r\n\r10%\r60%\r100%\r\n"
    assert jobs.messages(tmp_path / "j", "t1") == ["isatty True", "green", "100%"]


def test_a_resumed_run_numbers_its_lines_on(tmp_path):
    for _ in range(2):
        code, _, err = jobs.run(tmp_path / "j", """
            run = pluto.init(name="r", run_id="r1", resume=True)
            print("one"); print("two")
            run.finish()
        """)
        assert code == 0, err
    assert [r["lineNumber"] for r in jobs.journaled(tmp_path / "j", "r1")] == [1, 2, 3, 4]


def test_the_journal_file_stays_owner_only_and_lines_are_one_event_kind(tmp_path):
    code, _, _ = jobs.run(tmp_path / "j", """
        run = pluto.init(name="p", run_id="p1")
        print("x")
        run.finish()
    """)
    assert code == 0
    assert (tmp_path / "j" / "journal.db").stat().st_mode & 0o077 == 0
    with journal.Journal.open(tmp_path / "j", readonly=True) as j:
        kinds = [k for (k,) in j.conn.execute("SELECT kind FROM events ORDER BY seq")]
    assert kinds == ["create", "status", "logs"] or kinds == ["create", "logs", "status"]


def test_a_job_started_outside_the_source_tree_is_captured(tmp_path):
    """The helper process starts without site hooks (-S): it must find the package where the
    job found it, also in an editable install run from another directory."""
    proc = subprocess.Popen(
        [sys.executable, "-c", jobs.PREAMBLE + "run = pluto.init(run_id='elsewhere')\n"
         "print('from elsewhere', flush=True)\nrun.finish()\n"],
        env=jobs.job_env(tmp_path / "j"), cwd=tmp_path, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert b"console helper process exited" not in err, err
    assert "from elsewhere" in jobs.messages(tmp_path / "j", "elsewhere")


def test_the_journal_is_quiet_when_finish_returns(tmp_path):
    """finish() returns after the helper closed the journal: a copy of the file made right
    then (as a user carrying it out would) holds every line, and nothing writes it later."""
    code, _, err = jobs.run(tmp_path / "j", """
        import shutil
        from pluto_offline import console
        run = pluto.init(name="q", run_id="q1")
        helper = console.active().proc
        for i in range(50):
            print(f"line {i}")
        run.finish()
        j = os.path.join(os.environ["PLUTO_DIR"], "journal.db")
        print("helper exited:", helper.poll() is not None, file=sys.stderr)
        print("wal left:", os.path.exists(j + "-wal"), file=sys.stderr)
        shutil.copy(j, os.path.join(os.environ["PLUTO_DIR"] + "-copy.db"))
    """)
    assert code == 0, err
    assert b"helper exited: True" in err and b"wal left: False" in err, err
    copy = tmp_path / "copy"
    copy.mkdir()
    (tmp_path / "j-copy.db").rename(copy / "journal.db")
    assert jobs.messages(copy, "q1") == [f"line {i}" for i in range(50)]
