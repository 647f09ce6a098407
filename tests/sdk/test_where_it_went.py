"""A job says where its run went, at finish() or exit (issue 12 item 3): one line, from local
state only (the journal's delivery table, the daemon's lock, the note an autostarted daemon's
exit left), never blocking and never touching the network."""

from __future__ import annotations

import os

from tests.fixtures.daemon import DaemonProcess, wait_for

from .conftest import REPO
from .jobs import ended, line, open_gate, start_job, status, status_row


def test_without_a_daemon_the_line_says_to_push(jdir):
    proc = start_job("""
        run = pluto.init(dir=D, project="proj", name="alone", run_id="r1",
                         settings={"autostart": False})
        run.log({"x": 1.0})
        run.finish()
    """, jdir)
    _, err = ended(proc)
    file = jdir / "journal.db"
    assert line(err) == (f"pluto_offline: run alone (id r1) is journaled in {file}; no "
                         f"plutosync is running: run `plutosync push {file}`")


def test_a_created_run_shows_its_display_id_and_url(jdir, pluto_server):
    with DaemonProcess(pluto_server, jdir) as daemon:
        proc = start_job("""
            run = pluto.init(dir=D, project="proj", name="seen", settings={"autostart": False})
            run.log({"x": 1.0})
            gate("created")
            run.finish()
        """, jdir)
        wait_for(lambda: (status_row(jdir) or {}).get("url"), what="the run on the server")
        open_gate(jdir, "created")
        _, err = ended(proc)
    row = status_row(jdir)
    # its end was just journaled: the daemon delivers it after (finish(timeout=) waits for
    # it), or already did while the run's end waited for the console helper to exit
    view = f"pluto_offline: View run {row['display_id']} at {row['url']}"
    assert line(err) in (f"{view} (plutosync pid {daemon.pid} is delivering the rest)", view)


def test_a_live_daemon_without_the_run_yet_is_named(jdir, pluto_server):
    pluto_server.stop()  # the daemon cannot deliver: the run stays journaled
    with DaemonProcess(pluto_server, jdir) as daemon:
        proc = start_job("""
            run = pluto.init(dir=D, project="proj", name="waiting", run_id="r3",
                             settings={"autostart": False})
            gate("locked")
            run.finish()
        """, jdir)
        wait_for(lambda: (status_row(jdir) or {}).get("daemon_pid"), what="the daemon's lock")
        open_gate(jdir, "locked")
        _, err = ended(proc)
    where = f"pluto_offline: run waiting (id r3) is journaled in {jdir / 'journal.db'}; "
    assert line(err) in (f"{where}plutosync pid {daemon.pid} is delivering it",
                         # it may have tried already: then its error is named
                         f"{where}not delivered: {status_row(jdir)['last_error']} — see "
                         "`plutosync status`")


def test_a_refused_key_is_named_with_where_to_look(jdir, pluto_server):
    with DaemonProcess(pluto_server, jdir, env={"PLUTO_API_KEY": "plt_not_this_one"}):
        proc = start_job("""
            run = pluto.init(dir=D, project="proj", name="refused", run_id="r4",
                             settings={"autostart": False})
            gate("refused")
            run.finish()
        """, jdir)
        wait_for(lambda: (status_row(jdir) or {}).get("last_error"), what="the refusal")
        open_gate(jdir, "refused")
        _, err = ended(proc)
    assert line(err).startswith(
        f"pluto_offline: run refused (id r4) is journaled in {jdir / 'journal.db'}; not "
        "delivered: the server refused the API key (HTTP 401"), err
    assert line(err).endswith(" — see `plutosync status`")


def test_an_autostarted_daemon_that_exits_at_once_leaves_its_reason(jdir, pluto_server):
    # a real reason to exit at start: a setting plutosync cannot read
    proc = start_job("""
        run = pluto.init(dir=D, project="proj", name="auto", run_id="r5")
        run.log({"x": 1.0})
        gate("died")
        run.finish()
    """, jdir, PLUTOSYNC_RETENTION="bogus", **pluto_server.env())
    said = ("the plutosync a job started exited at once (pid ")
    shown = wait_for(lambda: said in (r := status(jdir)).stdout and r.stdout,
                     what="status to show the daemon's exit")
    reason = ("plutosync run: PLUTOSYNC_RETENTION: cannot read the duration 'bogus': write a "
              "number and a unit")
    assert reason in shown and "exit 2" in shown and "plutosync.log" in shown
    open_gate(jdir, "died")
    _, err = ended(proc)
    assert line(err).startswith(
        f"pluto_offline: run auto (id r5) is journaled in {jdir / 'journal.db'}; not "
        f"delivered: the plutosync this job started exited at once (exit 2): {reason}"), err
    assert line(err).endswith(f" — see {jdir / 'plutosync.log'}")


def test_an_autostarted_daemon_missing_a_dependency_says_which(jdir, pluto_server, tmp_path):
    """A broken install (issue 12 item 1): ``requests`` does not import in the daemon the job
    starts. Its traceback's last line is the reason the job's end line and ``status`` show,
    not a daemon that dies silently. (The job itself never imports ``requests``.)"""
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    # a real import failure, worded as when the package is not installed at all
    (shadow / "requests.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'requests'\", name='requests')\n")
    proc = start_job("""
        run = pluto.init(dir=D, project="proj", name="nodeps", run_id="r6")
        run.log({"x": 1.0})
        gate("died")
        run.finish()
    """, jdir, PYTHONPATH=f"{shadow}{os.pathsep}{REPO}", **pluto_server.env())
    said = "the plutosync a job started exited at once (pid "
    # status run as a user does, with a working install
    shown = wait_for(lambda: said in (r := status(jdir)).stdout and r.stdout,
                     what="status to show the daemon's exit")
    reason = "ModuleNotFoundError: No module named 'requests'"
    log = jdir / "plutosync.log"
    assert f"{jdir}: {said}" in shown and "exit 1, " in shown, shown
    assert f"): {reason} — see {log}" in shown, shown
    assert status_row(jdir)["daemon_exit"]["reason"] == reason
    open_gate(jdir, "died")
    _, err = ended(proc)
    assert line(err) == (f"pluto_offline: run nodeps (id r6) is journaled in "
                         f"{jdir / 'journal.db'}; not delivered: the plutosync this job started "
                         f"exited at once (exit 1): {reason} — see {log}"), err


def test_a_run_on_the_server_with_events_left_and_no_daemon_says_to_push(jdir, pluto_server):
    """The run was created (its URL is known) by a daemon that stopped since: what the job
    logged after is not delivered, and the line says so next to the URL."""
    with DaemonProcess(pluto_server, jdir) as daemon:
        proc = start_job("""
            run = pluto.init(dir=D, project="proj", name="left", settings={"autostart": False})
            run.log({"x": 1.0})
            gate("stopped")
            run.log({"x": 2.0})
            run.finish()
        """, jdir)
        wait_for(lambda: (status_row(jdir) or {}).get("url"), what="the run on the server")
        assert daemon.terminate() == 0
    open_gate(jdir, "stopped")
    _, err = ended(proc)
    row = status_row(jdir)
    assert row["pending"] > 0, row  # the second log() and the end wait for a push
    file = jdir / "journal.db"
    assert line(err) == (f"pluto_offline: View run {row['display_id']} at {row['url']} (not all "
                         f"delivered: no plutosync is running: run `plutosync push {file}`)")
