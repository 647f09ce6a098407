"""Retention: only old acknowledged events go; pending, rejected, live and newest ones stay."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pluto_offline import journal as J
from syncd import retention
from tests.ops.conftest import Builder, cli, run_inproc

DAY_MS = 86_400_000


def _seqs(b: Builder, key: int) -> list[tuple[int, str]]:
    return list(b.j.conn.execute("SELECT seq, kind FROM events WHERE run = ? ORDER BY seq", (key,)))


def test_rules(builder: Builder) -> None:
    old_acked = builder.run("old", metrics=5, end="COMPLETED", old_ms=10 * DAY_MS)
    builder.ack_all(old_acked)
    half = builder.run("half", metrics=5, end="COMPLETED", old_ms=10 * DAY_MS)
    J.ack(builder.j, half, _seqs(builder, half)[3][0])  # create + 3 metrics acked, rest pending
    live = builder.run("live", metrics=5, end=None, old_ms=10 * DAY_MS)
    builder.ack_all(live)
    builder.hold("live")
    fresh = builder.run("fresh", metrics=5, end="COMPLETED")
    builder.ack_all(fresh)
    rej = builder.run("rej", metrics=3, end="COMPLETED", old_ms=10 * DAY_MS)
    bad = J.pending_events(builder.j, rej, after=0)[1]
    J.reject(builder.j, bad, code=400, reason="bad")
    builder.ack_all(rej)
    before = {k: _seqs(builder, k) for k in (old_acked, half, live, fresh, rej)}

    dry = retention.prune_acked(builder.j, 7 * 86400, dry_run=True)
    assert (dry.events, dry.runs, dry.live_runs_skipped) == (4 + 3 + 1, 3, 1)
    assert {k: _seqs(builder, k) for k in before} == before

    res = retention.prune_acked(builder.j, 7 * 86400)
    assert (res.events, res.runs, res.dry_run) == (8, 3, False)
    # newest of each kind stays: a later resume continues from the last step
    assert [k for _, k in _seqs(builder, old_acked)] == ["create", "metrics", "status"]
    assert _seqs(builder, old_acked)[1][0] == before[old_acked][5][0]
    # pending untouched; of the acked part the create stays (the newest of its kind)
    assert _seqs(builder, half) == [before[half][0], *before[half][4:]]
    assert _seqs(builder, live) == before[live]
    assert _seqs(builder, fresh) == before[fresh]
    assert bad.seq in [s for s, _ in _seqs(builder, rej)]
    assert len(_seqs(builder, rej)) == 4  # create, the rejected metrics, newest metrics, status
    # a second pass finds nothing more
    assert retention.prune_acked(builder.j, 7 * 86400).events == 0


def test_nothing_acked_nothing_pruned(builder: Builder) -> None:
    key = builder.run("a", metrics=20, end="COMPLETED", old_ms=30 * DAY_MS)
    assert retention.prune_acked(builder.j, 0).events == 0
    assert len(_seqs(builder, key)) == 22


def test_cli(builder: Builder, tmp_path: Path) -> None:
    key = builder.run("a", metrics=10, end="COMPLETED", old_ms=3 * DAY_MS)
    builder.ack_all(key)
    d = str(tmp_path / "journal")
    res = cli("prune", "--dir", d, "--dry-run")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "would delete 0 acknowledged events of 0 runs older than 7d"
    res = cli("prune", "--dir", d, "--dry-run", env={"PLUTOSYNC_RETENTION": "2d"})
    assert res.stdout.strip() == "would delete 9 acknowledged events of 1 run older than 2d"
    res = cli("prune", "--dir", d, "--older-than", "36h", "--json")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert (data["events"], data["older_than_s"], data["dry_run"]) == (9, 36 * 3600, False)
    assert len(_seqs(builder, key)) == 3


def test_cli_errors(tmp_path: Path, capsys, monkeypatch) -> None:
    code, _, err = run_inproc(capsys, "prune", "--dir", str(tmp_path), "--older-than", "3x")
    assert code == 2
    assert "plutosync prune: cannot read the duration '3x': write a number and a unit" in err
    monkeypatch.setenv("PLUTOSYNC_RETENTION", "soon")
    code, _, err = run_inproc(capsys, "prune", "--dir", str(tmp_path))
    assert code == 2 and "PLUTOSYNC_RETENTION: cannot read the duration 'soon'" in err
    monkeypatch.delenv("PLUTOSYNC_RETENTION")
    code, _, err = run_inproc(capsys, "prune", "--dir", str(tmp_path / "none"))
    assert code == 2 and "plutosync prune: no journal at" in err
    assert not (tmp_path / "none").exists()  # never creates a journal by mistake


@pytest.mark.parametrize("text,seconds", [("0", 0), ("90s", 90), ("15m", 900), ("12h", 43200),
                                          ("7d", 604800), ("2w", 1209600), ("1.5d", 129600)])
def test_durations(text: str, seconds: float) -> None:
    assert retention.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "7", "d", "-1d", "7 days"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="write a number and a unit"):
        retention.parse_duration(text)
