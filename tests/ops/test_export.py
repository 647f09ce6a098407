"""plutosync export: a consistent 0600 snapshot, taken while a job writes; refusals explained."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from pluto_offline import journal as J
from tests.ops.conftest import ROOT, Builder, by_run_id, cli, needs_sdk, run_inproc, status_json

# A job that appends pairs of events in one transaction each, as fast as it can: a consistent
# snapshot holds whole pairs only.
WRITER = textwrap.dedent("""
    import sys, time
    from pluto_offline import journal as J
    j = J.Journal.open(sys.argv[1])
    with j.transaction():
        key = J.add_run(j, project="proj", run_id="busy", name="busy")
        J.append_event(j, key, "create", payload={})
    print("ready", flush=True)
    step = 0
    while True:
        with j.transaction():
            J.append_event(j, key, "metrics", step=step, raw=True, payload='{"x": 1}')
            J.append_event(j, key, "metrics", step=step, raw=True, payload='{"y": 2}')
        step += 1
""")


def test_export_is_a_private_consistent_journal(builder: Builder, tmp_path: Path) -> None:
    key = builder.run("a", end="COMPLETED")
    builder.ack_all(key, server_id=3, display_id="PRO-3")
    builder.run("b", end=None)
    out = tmp_path / "carry" / "site.db"
    out.parent.mkdir()
    res = cli("export", "--dir", str(tmp_path / "journal"), "--out", str(out))
    assert res.returncode == 0, res.stderr
    # b's writer never ended and is dead: export's recovery journals its FAILED "killed"
    assert "2 runs, 10 events, 5 not yet delivered" in res.stdout
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert sorted(p.name for p in out.parent.iterdir()) == ["site.db"]  # no temp, no -wal
    with sqlite3.connect(out) as c:
        assert c.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    rows = by_run_id(status_json(out))
    assert rows["a"]["synced"] and rows["a"]["display_id"] == "PRO-3"
    assert rows["b"]["pending"] == 5
    snap = J.Journal.open(out, readonly=True)
    assert snap.id == builder.j.id  # the same journal, delivery state and all
    snap.close()


def test_export_refuses_and_explains(builder: Builder, tmp_path: Path, capsys) -> None:
    builder.run("a", end="COMPLETED")
    src = str(tmp_path / "journal")
    out = tmp_path / "x.db"
    out.write_text("keep me")

    def export(*args: str) -> tuple[int, str, str]:
        return run_inproc(capsys, "export", *args)

    code, _, err = export("--dir", src, "--out", str(out))
    assert code == 2
    assert err.strip() == f"plutosync export: {out} exists; pass --force to replace it"
    assert out.read_text() == "keep me"

    code, stdout, err = export("--dir", src, "--out", str(out), "--force", "--json")
    assert code == 0, err
    data = json.loads(stdout)
    assert (data["runs"], data["events"], data["out"]) == (1, 5, str(out))
    assert data["bytes"] == out.stat().st_size

    code, _, err = export("--dir", src, "--out", str(tmp_path / "journal" / "journal.db"), "--force")
    assert code == 2 and "is the journal itself" in err

    code, _, err = export("--dir", src, "--out", str(tmp_path / "no" / "such" / "x.db"))
    assert code == 2
    assert f"cannot write {tmp_path}/no/such/x.db: no such directory" in err

    code, _, err = export("--dir", src, "--out", str(tmp_path))
    assert code == 2 and "is a directory: give a file name" in err

    code, _, err = export("--dir", str(tmp_path / "missing"), "--out", str(tmp_path / "y.db"))
    assert code == 2 and "plutosync export: no journal at" in err
    assert not (tmp_path / "y.db").exists()

    code, _, err = export("--dir", src)
    assert code == 2 and "--out" in err  # argparse: the option is required


def test_export_while_a_job_writes(tmp_path: Path) -> None:
    src = tmp_path / "journal"
    job = subprocess.Popen([sys.executable, "-c", WRITER, str(src)], cwd=ROOT,
                           stdout=subprocess.PIPE, text=True)
    try:
        assert job.stdout.readline().strip() == "ready"
        time.sleep(0.3)
        outs = []
        for i in range(3):
            out = tmp_path / f"snap{i}.db"
            res = cli("export", "--dir", str(src), "--out", str(out))
            assert res.returncode == 0, res.stderr
            outs.append(out)
        assert job.poll() is None, "the job kept writing through the exports"
    finally:
        job.kill()
        job.wait()
    counts = []
    for out in outs:
        with sqlite3.connect(out) as c:
            assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            n, lo, hi = c.execute("SELECT count(*), min(seq), max(seq) FROM events").fetchone()
        assert n % 2 == 1, "create + whole pairs only: one instant of the journal"
        assert hi - lo + 1 == n
        counts.append(n)
    assert counts == sorted(counts) and counts[-1] > 1


@needs_sdk
def test_export_folds_a_dead_writers_spill(tmp_path: Path) -> None:
    """A job SIGKILLed right after log(): what it logged reaches the snapshot."""
    src = tmp_path / "journal"
    code = textwrap.dedent(f"""
        import os, signal
        import pluto_offline as pluto
        run = pluto.init(dir={str(src)!r}, project="proj", run_id="k", name="k")
        for step in range(50):
            run.log({{"x": step}})
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=60,
                   env={**os.environ, "PLUTO_OFFLINE_AUTOSTART": "0"})
    out = tmp_path / "snap.db"
    res = cli("export", "--dir", str(src), "--out", str(out))
    assert res.returncode == 0, res.stderr
    rows = by_run_id(status_json(out))
    assert rows["k"]["state"] == "killed"
    with sqlite3.connect(out) as c:
        batches = [p for (p,) in c.execute("SELECT payload FROM events WHERE kind = 'metrics'")]
    points = [data["x"] for b in batches for _, _, data in J.unpack_metrics(b)]
    assert points == list(range(50))


def test_export_says_when_it_could_not_fold_spills(builder: Builder, tmp_path: Path, capsys,
                                                   monkeypatch) -> None:
    builder.run("a", end="COMPLETED")

    def refuse(j: J.Journal) -> int:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(J, "recover", refuse)
    code, stdout, err = run_inproc(capsys, "export", "--dir", str(tmp_path / "journal"),
                                   "--out", str(tmp_path / "s.db"))
    assert code == 0, err
    assert "note: could not fold the spill files of jobs that died" in stdout
    assert "their last records are not in the snapshot" in stdout
    assert (tmp_path / "s.db").exists()
