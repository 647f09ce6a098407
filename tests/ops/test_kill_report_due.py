"""A killed trainer whose run an eval job still holds (chaos seed 1016): the FAILED the next
recovery journals once the eval job has exited is not there yet, so the run is not delivered —
``status`` must not call it synced, or a drain (or a script polling ``--check``) stops the
daemon before the report and the server keeps the run RUNNING."""

from __future__ import annotations

import json
import signal

from pluto_offline import journal
from tests.sdk.jobs import ended, open_gate, start_job, status


def rows(jdir) -> dict:
    r = status(jdir, "--json")
    assert r.returncode == 0, r.stderr
    return {row["run_id"]: row for row in json.loads(r.stdout)}


def statuses(jdir) -> list[dict]:
    with journal.Journal.open(jdir, readonly=True) as j:
        return [json.loads(p) for (p,) in j.conn.execute(
            "SELECT payload FROM events WHERE kind = 'status' ORDER BY seq")]


def test_a_kill_not_reported_yet_keeps_the_run_from_synced(tmp_path):
    jdir = tmp_path / "journal"
    off = {"autostart": False, "disable_console": True, "disable_system_metrics": True}
    trainer = start_job(f"""
        run = pluto.init(dir=D, project="p", run_id="r", settings={off!r})
        run.log({{"x": 1.0}})
        run.flush()
        print("ready", flush=True)
        gate("never")
    """, jdir)
    assert trainer.stdout.readline().strip() == "ready"
    evaluator = start_job(f"""
        run = pluto.init(dir=D, project="p", run_id="r", resume=True, settings={off!r})
        run.log({{"acc": 0.9}}, step=1)
        run.flush()
        print("attached", flush=True)
        gate("eval-close")
        run.close()
    """, jdir)
    assert evaluator.stdout.readline().strip() == "attached"
    trainer.send_signal(signal.SIGKILL)
    trainer.wait(30)

    with journal.Journal.open(jdir) as j:
        journal.recover(j)  # marks the trainer killed; the eval job still runs: no report
    assert statuses(jdir) == []
    open_gate(jdir, "eval-close")
    ended(evaluator)  # closed and gone: the kill is due, and no recovery has run since

    with journal.Journal.open(jdir, readonly=True) as j:
        [run] = journal.all_runs(j)
    with journal.Journal.open(jdir) as j:  # every event acknowledged, as a daemon would have
        top = j.conn.execute("SELECT max(seq) FROM events WHERE run = ?", (run.key,)).fetchone()[0]
        journal.ack(j, run.key, top, server_id=1)
    row = rows(jdir)["r"]
    assert (row["state"], row["pending"], row["synced"]) == ("killed", 0, False), row
    assert statuses(jdir) == []  # status only reads

    with journal.Journal.open(jdir) as j:
        journal.recover(j)  # the daemon's next recovery reports it
    assert statuses(jdir) == [{"status": "FAILED", "metadata": {"reason": "killed"}}]
    row = rows(jdir)["r"]
    assert (row["pending"], row["synced"]) == (1, False), row  # the FAILED, to deliver
