"""An opt-in, bounded wait for delivery (issue 12 item 5): ``run.finish(timeout=S)``,
``pluto_offline.wait(timeout=S)`` and ``PLUTO_OFFLINE_WAIT=S``. Once the job has exited, the
test kills the daemon at once: whatever the server holds then was delivered before the job
exited."""

from __future__ import annotations

import pytest

from pluto_offline import journal
from tests.fixtures.daemon import DaemonProcess, wait_for

from .jobs import ended, line, open_gate, start_job, status_row

JOB = """
run = pluto.init(dir=D, project="proj", name="ci", run_id="ci-1", settings={"autostart": False})
gate("locked")
for s in range(1, 201):
    run.log({"loss": 1.0 / s})
"""


def server_run(server, jdir) -> tuple[dict, list[int]]:
    with journal.Journal.open(jdir) as j:
        row = journal.find_run(j, project="proj", run_id="ci-1")
    assert row is not None and row.server_id, "not created"
    steps = [p["step"] for p in server.metrics(row.server_id, "proj", "loss")]
    return server.get_run(row.server_id), steps


def job_with_daemon(server, jdir, code: str, **env: str) -> tuple[str, str]:
    """Run the job beside a live daemon; kill the daemon as soon as the job has exited.
    Returns the job's ``(stdout, stderr)``."""
    with DaemonProcess(server, jdir) as daemon:
        proc = start_job(code, jdir, **env)
        wait_for(lambda: (status_row(jdir) or {}).get("daemon_pid"), what="the daemon's lock")
        open_gate(jdir, "locked")
        out, err = ended(proc)
        daemon.kill()
    return out, err


def test_finish_with_a_timeout_returns_once_the_run_is_on_the_server(jdir, pluto_server):
    _, err = job_with_daemon(pluto_server, jdir, JOB + "run.finish(timeout=30)\n")
    run, steps = server_run(pluto_server, jdir)
    assert run["status"] == "COMPLETED" and steps == list(range(1, 201))
    row = status_row(jdir)
    assert line(err) == f"pluto_offline: View run {row['display_id']} at {row['url']}"


def test_the_env_var_waits_at_the_exit_of_a_script_that_cannot_be_edited(jdir, pluto_server):
    _, err = job_with_daemon(pluto_server, jdir, JOB, PLUTO_OFFLINE_WAIT="30")  # no finish()
    run, steps = server_run(pluto_server, jdir)
    assert run["status"] == "COMPLETED" and steps == list(range(1, 201))
    assert line(err).startswith("pluto_offline: View run ")


def test_wait_for_every_run_of_the_process(jdir, pluto_server):
    out, err = job_with_daemon(pluto_server, jdir, JOB + """
run.finish()
print("delivered:", pluto.wait(timeout=30))
""")
    assert out.strip().splitlines()[-1] == "delivered: True"
    run, steps = server_run(pluto_server, jdir)
    assert run["status"] == "COMPLETED" and steps == list(range(1, 201))
    assert "wait(timeout=30)" not in err  # nothing left to report


def test_without_a_daemon_nothing_is_waited_for(jdir):
    proc = start_job("""
        run = pluto.init(dir=D, project="proj", name="ci", run_id="ci-1",
                         settings={"autostart": False})
        run.log({"loss": 1.0})
        run.finish(timeout=3600)   # would outlast the test's own timeout if it waited
        print("delivered:", pluto.wait(timeout=3600))
    """, jdir)
    out, err = ended(proc, timeout=60)
    assert out.strip() == "delivered: False"
    for how in ("finish(timeout=3600)", "wait(timeout=3600)"):
        assert (f"pluto_offline: {how}: run ci (id ci-1): no plutosync is delivering it, so "
                "there was nothing to wait for; 4 events left") in err, err


def test_a_timeout_that_passes_says_what_is_left(jdir, pluto_server):
    pluto_server.stop()  # the daemon cannot deliver
    _, err = job_with_daemon(pluto_server, jdir, JOB + "run.finish(timeout=0.5)\n")
    assert ("pluto_offline: finish(timeout=0.5): run ci (id ci-1): not delivered after 0.5 s; "
            "4 events left") in err, err


def test_a_bad_timeout_is_refused_before_the_run_ends(jdir):
    import pluto_offline as pluto

    run = pluto.init(dir=jdir, project="proj", settings={"autostart": False})
    with pytest.raises(ValueError, match=r"^timeout must be >= 0 seconds, got -1$"):
        run.finish(timeout=-1)
    with pytest.raises(TypeError, match="^timeout must be a number of seconds, got str$"):
        pluto.wait(timeout="5")
    run.log({"x": 1.0})  # still open
    run.finish()


def test_a_refused_key_ends_the_wait_and_says_why(jdir, pluto_server):
    """The daemon's next try after a refused key is a minute or more away (it waits for a
    fix): finish(timeout=3600) returns as soon as the daemon said so, with its words."""
    with DaemonProcess(pluto_server, jdir, env={"PLUTO_API_KEY": "plt_not_the_right_key_123"}):
        proc = start_job("""
            run = pluto.init(dir=D, project="proj", name="ci", run_id="ci-1",
                             settings={"autostart": False})
            gate("locked")
            run.log({"loss": 1.0})
            run.finish(timeout=3600)   # would outlast the test's own timeout if it waited
        """, jdir)
        wait_for(lambda: (status_row(jdir) or {}).get("daemon_pid"), what="the daemon's lock")
        open_gate(jdir, "locked")
        _, err = ended(proc, timeout=60)
    assert ("pluto_offline: finish(timeout=3600): run ci (id ci-1): not delivered: the server "
            "refused the API key (HTTP 401: ") in err, err
    assert "nothing to wait for" not in err, err
