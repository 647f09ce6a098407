"""``plutosync run`` applies retention by itself, on its schedule, with the same rules."""

from __future__ import annotations

import json
from pathlib import Path

from pluto_offline import journal as J
from tests.fixtures.daemon import DaemonProcess, wait_for
from tests.ops.conftest import Builder, cli

DAY_MS = 86_400_000


def _kinds(path: Path, run_id: str) -> list[str]:
    with J.Journal.open(path) as j:
        key = J.find_run(j, project="proj", run_id=run_id).key
        return [k for (k,) in j.conn.execute(
            "SELECT kind FROM events WHERE run = ? ORDER BY seq", (key,))]


def test_the_service_prunes_old_delivered_events_and_keeps_pending_ones(tmp_path, pluto_server):
    b = Builder(tmp_path / "journal")
    old = b.run("old", metrics=5, end="COMPLETED", old_ms=10 * DAY_MS)
    b.run("pending", metrics=4, end="COMPLETED", old_ms=10 * DAY_MS)
    b.ack_all(old, server_id=pluto_server.create_run("proj", "old", externalId="old")["runId"])
    b.close()
    pluto_server.stop()  # "pending" cannot be delivered: its old events must stay
    with DaemonProcess(pluto_server, tmp_path / "journal", "--retention", "7d",
                       "--prune-every", "0.2") as daemon:
        try:  # a daemon starting on a loaded machine can take its time: a generous wait
            wait_for(lambda: _kinds(tmp_path / "journal", "old") == ["create", "metrics",
                                                                     "status"], timeout=60,
                     what="the old delivered run pruned to its newest event of each kind")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; daemon log:\n{daemon.log()[-3000:]}") from None
        assert _kinds(tmp_path / "journal", "pending") == ["create"] + ["metrics"] * 4 + ["status"]
        assert daemon.terminate() == 0
    assert "retention: pruned 4 delivered events of 1 runs" in daemon.log()


def test_retention_off_and_a_bad_age(tmp_path, pluto_server):
    b = Builder(tmp_path / "journal")
    old = b.run("old", metrics=5, end="COMPLETED", old_ms=10 * DAY_MS)
    b.ack_all(old)
    b.close()
    with DaemonProcess(pluto_server, tmp_path / "journal", "--retention", "off",
                       "--prune-every", "0.1", "--exit-when-idle") as daemon:
        assert daemon.wait(30) == 0, daemon.log()
    assert len(_kinds(tmp_path / "journal", "old")) == 7
    res = cli("run", "--dir", str(tmp_path / "journal"), "--retention", "7 days",
              env=pluto_server.env())
    assert res.returncode == 2
    assert "--retention: cannot read the duration '7 days'" in res.stderr
    assert json.loads(cli("status", "--dir", str(tmp_path / "journal"), "--json").stdout)
