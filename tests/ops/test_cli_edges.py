"""The first hour's rough edges of the CLI (issue 12 items 6, 7, 10-13), as a user meets them:
the exact text and exit code of real ``plutosync`` processes against a real local server."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap

from tests.badinput.helpers import ROOT, clean_env, cli
from tests.fixtures.daemon import DaemonProcess, JournalBuilder, wait_for

BAD_KEY = "plt_not_the_right_key_123"


def _journal(path, run_id: str = "edge") -> JournalBuilder:
    jb = JournalBuilder(path)
    key = jb.run(run_id)
    jb.metrics(key, range(20), per_event=10)
    jb.status(key, "COMPLETED")
    return jb


# --------------------------------------------------------------------------- 6: status, no journal

def test_status_before_any_job_says_no_runs_yet(tmp_path):
    env = clean_env(XDG_DATA_HOME=str(tmp_path / "data"))  # no PLUTO_DIR: the default place
    where = tmp_path / "data" / "pluto-offline"
    res = cli("status", env=env)
    assert (res.returncode, res.stdout, res.stderr) == (0, f"no runs yet (journal: {where})\n", "")
    res = cli("status", "--json", "--check", env=env)
    assert (res.returncode, json.loads(res.stdout), res.stderr) == (0, [], "")
    assert not (tmp_path / "data").exists()  # status creates nothing
    typo = cli("status", "--dir", str(tmp_path / "typo"), env=env)  # named on purpose: an error
    assert typo.returncode == 2 and typo.stderr.startswith("plutosync status: no journal at")


# --------------------------------------------------------------------------- 7: run on a missing path

def test_run_once_on_a_path_without_journal_fails_as_push_does(tmp_path, pluto_server):
    typo = tmp_path / "a" / "typo"
    env = clean_env(**pluto_server.env())
    once = cli("run", "--once", "--dir", str(typo), env=env)
    push = cli("push", str(typo), env=env)
    message = (f"no journal found in {typo} (a journal directory holds journal.db; an export is "
               "a .db file)\n")
    assert (once.returncode, once.stderr) == (2, f"plutosync run: {message}")
    assert (push.returncode, push.stderr) == (2, f"plutosync push: {message}")
    assert not (tmp_path / "a").exists()


def test_run_waits_for_the_journal_jobs_have_not_written_yet(tmp_path, pluto_server):
    d = tmp_path / "later"
    with DaemonProcess(pluto_server, d) as daemon:
        wait_for(lambda: "waiting for a journal" in daemon.log(), what="the waiting line")
        assert not d.exists()
        _journal(d).close()  # the first job
        wait_for(lambda: [r["status"] for r in pluto_server.list_runs("proj")] == ["COMPLETED"],
                 what="the run delivered")
        assert daemon.terminate() == 0
    text = daemon.log()
    assert text.count(f"waiting for a journal in {d}: no job has written one there yet") == 1


# --------------------------------------------------------------------------- 10, 11: a refused key

def test_run_once_with_a_refused_key_stops_at_once_saying_so_once(tmp_path, pluto_server):
    _journal(tmp_path / "j").close()
    res = cli("run", "--once", "--dir", str(tmp_path / "j"),
              env=clean_env(**{**pluto_server.env(), "PLUTO_API_KEY": BAD_KEY}))
    assert res.returncode == 1
    said = ("the server refused the API key (HTTP 401: Unauthorized): set a valid "
            "PLUTO_API_KEY for this server, then run `plutosync run --once` again; nothing was "
            "dropped")
    assert res.stderr.count(said) == 1, res.stderr
    assert "run proj/edge not fully delivered: not sent: the API key was refused (above)" \
        in res.stderr
    assert "restart plutosync" not in res.stderr and "next try" not in res.stderr
    assert BAD_KEY not in res.stderr


def test_push_with_a_refused_key_says_so_once_with_advice_for_push(tmp_path, pluto_server):
    _journal(tmp_path / "j").close()
    _journal(tmp_path / "k", "edge-2").close()
    res = cli("push", str(tmp_path / "j"), str(tmp_path / "k"),
              env=clean_env(**{**pluto_server.env(), "PLUTO_API_KEY": BAD_KEY}))
    assert res.returncode == 1
    said = ("the server refused the API key (HTTP 401: Unauthorized): set a valid "
            "PLUTO_API_KEY for this server, then run `plutosync push` again; nothing was "
            "dropped")
    assert res.stderr.count(said) == 2, res.stderr  # once per journal, each named
    assert f"not delivered from {tmp_path / 'j'}: proj/edge: 4 events left: not sent: the API " \
           "key was refused (above)" in res.stderr
    assert "restart plutosync" not in res.stderr and "next try" not in res.stderr


def test_a_server_address_with_a_path_refuses_nothing_and_says_to_fix_it(tmp_path, pluto_server):
    """``--server http://host:port/api`` (the address plus the API's path): the server answers
    the create 404, which a Pluto server never answers a create. Taken as a refusal, every
    event of the run was recorded rejected for good; it is a wrong address, handled like a
    refused key: said once with the fix, nothing rejected, delivered once the address is right."""
    _journal(tmp_path / "j").close()
    wrong = pluto_server.url + "/api"
    env = clean_env(PLUTO_API_KEY=pluto_server.api_key)
    res = cli("push", "--server", wrong, str(tmp_path / "j"), env=env)
    assert res.returncode == 1, res.stderr
    said = (f"{wrong} has no Pluto API: creating a run there answered HTTP 404 (Not found): set "
            "--server / PLUTO_URL_API to the server's base address, without a path such as /api "
            "(e.g. http://HOST:3001), then run `plutosync push` again; nothing was dropped")
    assert res.stderr.count(said) == 1, res.stderr
    assert "refused" not in res.stderr.replace("nothing was dropped", ""), res.stderr
    status = json.loads(cli("status", "--json", "--dir", str(tmp_path / "j"), env=env).stdout)
    assert [r["rejected"] for r in status] == [0], status
    res = cli("push", "--server", pluto_server.url, str(tmp_path / "j"), env=env)
    assert res.returncode == 0, res.stderr
    [run] = pluto_server.list_runs("proj")
    assert pluto_server.get_run(run["id"])["status"] == "COMPLETED"


# --------------------------------------------------------------------------- 12: serve

def test_serve_on_a_busy_port_exits_2_and_creates_nothing(tmp_path):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    data = tmp_path / "server"
    try:
        res = cli("serve", "--port", str(port), "--data", str(data), env=clean_env(), timeout=30)
    finally:
        busy.close()
    assert res.returncode == 2
    assert res.stderr == (f"plutosync serve: cannot listen on 127.0.0.1:{port}: Address already "
                          "in use; nothing was created (choose another --port, or 0 for any "
                          "free one)\n")
    assert not data.exists()  # no directory, no pluto-server.db, objects/ or url-secret
    first = _serve_banner(data)
    assert "new API key (shown once): plt_" in first
    # the address line pastes into a shell as it is, reaching plutosync and jobs started there
    assert "\n  export PLUTO_URL_API=http://127.0.0.1:" in first, first
    assert oct(data.stat().st_mode & 0o777) == "0o700"
    assert oct((data / "pluto-server.db").stat().st_mode & 0o777) == "0o600"  # it holds keys
    again = _serve_banner(data)
    assert "new API key" not in again
    assert f"API keys: those stored in {data / 'pluto-server.db'}" in again


def _serve_banner(data) -> str:
    proc = subprocess.Popen([sys.executable, "-m", "syncd", "serve", "--port", "0", "--data",
                             str(data)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=clean_env(), cwd=ROOT)
    try:
        lines = [proc.stdout.readline() for _ in range(3)]
    finally:
        proc.terminate()
        assert proc.wait(30) == 0
    return "".join(lines)


# --------------------------------------------------------------------------- 13: the small ones

def test_messages_in_a_log_file_are_whole_lines(tmp_path):
    deep = tmp_path / ("a-rather-long-directory-name-" * 3) / "and-a-typo-at-the-end"
    env = clean_env(PLUTO_API_KEY="plt_x")
    del env["COLUMNS"]  # a cron job or a CI log: no terminal, no width
    res = cli("push", str(deep), env=env)
    assert res.returncode == 2
    assert res.stderr == (f"plutosync push: no journal found in {deep} (a journal directory "
                          "holds journal.db; an export is a .db file)\n")


def test_push_without_a_key_says_where_to_set_it_for_push(tmp_path):
    _journal(tmp_path / "j").close()
    res = cli("push", str(tmp_path / "j"), env=clean_env())
    assert res.returncode == 2
    assert res.stderr == ("plutosync push: PLUTO_API_KEY is not set: export the API key of your "
                          "Pluto server (Settings → API keys) in the shell that runs plutosync "
                          "push (`export PLUTO_API_KEY=...`; it is read only from the "
                          "environment, never from an option)\n")
    (row,) = json.loads(cli("status", "--dir", str(tmp_path / "j"), "--json").stdout)
    assert row["daemon_exit"] is None  # no daemon a job started has exited here


def test_a_repeat_push_says_nothing_to_send(tmp_path, pluto_server):
    _journal(tmp_path / "j").close()
    env = clean_env(**pluto_server.env())
    assert cli("push", str(tmp_path / "j"), env=env).returncode == 0
    again = cli("push", str(tmp_path / "j"), env=env)
    assert again.returncode == 0
    assert "nothing to send: everything was delivered before" in again.stderr
    assert "0/1" not in again.stderr


def test_export_names_a_live_run_by_its_name(tmp_path):
    env = clean_env(PLUTO_DIR=str(tmp_path / "j"), PLUTO_OFFLINE_AUTOSTART="0")
    job = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import sys, pluto_offline as pluto
        run = pluto.init(project="proj", name="nice-name", run_id="abc123")
        run.log({"x": 1})
        run.flush()
        print("ready", flush=True)
        sys.stdin.readline()
        run.finish()
        """)], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert job.stdout.readline() == "ready\n"
        res = cli("export", "--dir", str(tmp_path / "j"), "--out", str(tmp_path / "x.db"),
                  env=env)
        as_json = cli("export", "--dir", str(tmp_path / "j"), "--out", str(tmp_path / "y.db"),
                      "--json", env=env)
    finally:
        job.communicate("go\n", timeout=30)
    assert res.returncode == 0, res.stderr
    assert "still running: proj/nice-name (run id abc123); the snapshot" in res.stdout
    assert json.loads(as_json.stdout)["live_runs"] == ["proj/abc123"]


def test_a_value_that_is_not_a_metric_is_named_with_its_article(tmp_path):
    env = clean_env(PLUTO_DIR=str(tmp_path / "j"), PLUTO_OFFLINE_AUTOSTART="0")
    res = subprocess.run([sys.executable, "-c", textwrap.dedent("""
        import pluto_offline as pluto
        class Image: pass
        run = pluto.init(project="proj", name="media")
        run.log({"sample": Image(), "table": {1: 2}})
        run.finish()
        """)], env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "an Image is not a metric" in res.stderr and "a Image" not in res.stderr


# --------------------------------------------------------------------------- 4: push beside a daemon

def test_push_beside_a_daemon_that_cannot_deliver_stops_at_its_timeout(tmp_path, pluto_server):
    _journal(tmp_path / "j").close()
    pluto_server.stop()
    with DaemonProcess(pluto_server, tmp_path / "j") as daemon:
        wait_for(lambda: "delivery paused" in daemon.log(), what="the daemon backing off")
        res = cli("push", str(tmp_path / "j"), "--timeout", "1",
                  env=clean_env(**pluto_server.env()))
        assert res.returncode == 1
        assert f"{tmp_path / 'j'}: followed the plutosync already delivering it (pid " \
               f"{daemon.pid}, asked to try now)" in res.stderr
        assert f"not delivered from {tmp_path / 'j'}: proj/edge: 4 events left: cannot reach " \
               in res.stderr and "(the daemon goes on delivering it)" in res.stderr
        assert "everything delivered" not in res.stderr
        assert daemon.proc.poll() is None  # left to go on
        assert daemon.terminate() == 0


def test_a_file_that_is_no_journal_is_called_so_not_damaged(tmp_path):
    """``plutosync push train.py`` (the script named by mistake): not "damaged, restore it
    from a backup" — it is not a journal, and the line says what to give instead. A .db file
    that is not SQLite may be a damaged journal, and is still called so."""
    script = tmp_path / "train.py"
    script.write_text("import pluto_offline\n")
    said = ": give a journal.db, an export (.db), or the directory holding them"
    for args in (("push", str(script)), ("status", "--dir", str(script))):
        res = cli(*args, env=clean_env(PLUTO_API_KEY=BAD_KEY))
        assert res.returncode != 0, res
        assert f"{script} is not a journal (" in res.stderr and said in res.stderr, res.stderr
        assert "damaged" not in res.stderr and "backup" not in res.stderr, res.stderr
        assert script.read_text() == "import pluto_offline\n"  # never written
    bad = tmp_path / "site-a.db"
    bad.write_text("import pluto_offline\n")
    res = cli("push", str(bad), env=clean_env(PLUTO_API_KEY=BAD_KEY))
    assert f"journal {bad} is damaged or is not a journal" in res.stderr, res.stderr


def test_help_names_the_key_the_servers_and_where_to_start():
    """A new user's first look: where the key and the server come from, and serve's port."""
    top = cli("--help", env=clean_env())
    assert top.returncode == 0
    text = " ".join(top.stdout.split())
    assert "PLUTO_API_KEY" in text and "PLUTO_URL_API" in text
    assert "plutosync push DIR" in text and "plutosync run --dir" in text
    serve = cli("serve", "--help", env=clean_env())
    assert serve.returncode == 0
    assert "default 3001" in serve.stdout
    assert "Example: `plutosync serve --port 0" in " ".join(serve.stdout.split())
