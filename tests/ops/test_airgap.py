"""The air-gap workflow: export while a job logs, carry the file, push it; pushing again is a no-op."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

from pluto_offline import journal as J
from tests.fixtures.server import user_config
from tests.ops.conftest import ROOT, by_run_id, cli, needs_sdk, status_json

# Logs until told to stop on stdin, then finishes.
JOB = textwrap.dedent("""
    import sys, threading
    import pluto_offline as pluto
    run = pluto.init(dir=sys.argv[1], project="gap", run_id="job", name="job", config={"lr": 0.1})
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
    step = 0
    while not stop.is_set():
        run.log({"loss": 1.0 / (step + 1)})
        step += 1
        if step == 500:
            run.flush()
            print("logging", flush=True)
    run.finish()
    print(step, flush=True)
""")


def _points(db: Path) -> int:
    with sqlite3.connect(db) as c:
        rows = c.execute("SELECT payload FROM events WHERE kind = 'metrics'").fetchall()
    return sum(len(J.unpack_metrics(p)) for (p,) in rows)


@needs_sdk
def test_export_inside_push_outside_twice(pluto_server, tmp_path: Path) -> None:
    inside = tmp_path / "inside"
    carry = tmp_path / "carry"
    carry.mkdir()
    snap = carry / "site.db"
    offline = {**os.environ, "PLUTO_OFFLINE_AUTOSTART": "0"}
    for k in [k for k in offline if k.startswith("PLUTO_URL") or k == "PLUTO_API_KEY"]:
        del offline[k]
    job = subprocess.Popen([sys.executable, "-c", JOB, str(inside)], cwd=ROOT, env=offline,
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert job.stdout.readline().strip() == "logging"
        res = cli("export", "--dir", str(inside), "--out", str(snap))
        assert res.returncode == 0, res.stderr
        assert "still running: gap/job" in res.stdout
    finally:
        job.stdin.write("\n")
        job.stdin.close()
        assert job.wait(timeout=30) == 0
    exported = _points(snap)
    assert exported >= 500

    env = pluto_server.env()
    res = cli("push", str(snap), env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert pluto_server.api_key not in res.stdout + res.stderr
    row = by_run_id(status_json(snap))["job"]
    assert row["synced"] and row["server_id"], row
    assert pluto_server.metric_counts(row["server_id"])["stored"] == exported
    server_run = pluto_server.get_run(row["server_id"])
    assert user_config(server_run["config"]) in ({"lr": 0.1}, '{"lr": 0.1}')

    before = pluto_server.request_counts()
    res = cli("push", str(snap), env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    after = pluto_server.request_counts()
    sent = {p: n - before.get(p, 0) for p, n in after.items() if n != before.get(p, 0)}
    assert not {p for p in sent if p.startswith(("/ingest", "/api/runs/create",
                                                 "/api/runs/config", "/api/runs/status"))}, sent
    assert cli("status", "--dir", str(snap), "--check").returncode == 0


FINISHED_JOB = textwrap.dedent("""
    import sys
    import pluto_offline as pluto
    run = pluto.init(dir=sys.argv[1], project="gap", run_id=sys.argv[2], name=sys.argv[2])
    for step in range(20):
        run.log({"loss": float(step)})
    run.finish()
""")


@needs_sdk
def test_a_later_export_of_the_same_journal(pluto_server, tmp_path: Path) -> None:
    """Carrying a journal twice: the second file knows nothing of the first push, yet push
    recognises the run the first carry created as its own (not a conflict) and duplicates
    nothing."""
    inside = tmp_path / "inside"
    env_off = {k: v for k, v in os.environ.items() if not k.startswith("PLUTO_")}
    env_off["PLUTO_OFFLINE_AUTOSTART"] = "0"
    subprocess.run([sys.executable, "-c", FINISHED_JOB, str(inside), "first"], cwd=ROOT,
                   env=env_off, check=True, timeout=60)
    assert cli("export", "--dir", str(inside), "--out", str(tmp_path / "one.db")).returncode == 0
    assert cli("push", str(tmp_path / "one.db"), env=pluto_server.env()).returncode == 0
    subprocess.run([sys.executable, "-c", FINISHED_JOB, str(inside), "second"], cwd=ROOT,
                   env=env_off, check=True, timeout=60)
    assert cli("export", "--dir", str(inside), "--out", str(tmp_path / "two.db")).returncode == 0
    res = cli("push", str(tmp_path / "two.db"), env=pluto_server.env())
    rows = by_run_id(status_json(tmp_path / "two.db"))
    assert rows["second"]["synced"], rows["second"]
    assert res.returncode == 0, res.stdout + res.stderr
    assert rows["first"]["synced"] and not rows["first"]["conflict"], rows["first"]
    runs = pluto_server.list_runs("gap")
    assert sorted(r["name"] for r in runs) == ["first", "second"]
    for r in runs:
        assert pluto_server.get_run(r["id"])["status"] == "COMPLETED"
        assert pluto_server.metric_counts(r["id"])["stored"] == 20
