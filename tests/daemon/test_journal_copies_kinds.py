"""Copies of one journal deliver every record kind the server does not deduplicate exactly
once (issue 8 item 10, issue 10): console lines, string series, histogram rows and files.

A real job prints lines and logs metrics, strings, histograms, a File and an Image; one
``plutosync export`` of its live journal is taken at its midpoint, another after it ended. The
two exports and the original journal are pushed one by one in time order and in two other
orders, or together: the server holds each record once, at its step, in order, and the run is
COMPLETED. (The server deduplicates metrics itself; the rest relies on the run's ledger,
docs/delivery.md and docs/media.md.)
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import httpx
import pytest

from pluto_offline import Histogram, journal
from pluto_offline.journal import filerows
from tests.daemon.test_journal_copies import ORDERS, data_rows, push_copies, take_copies
from tests.daemon.test_many_journals import the_run
from tests.daemon.test_sdk_jobs import steps
from tests.fixtures.daemon import wait_for
from tests.media.helpers import file_rows, pixels, stock_client

N = 20
FILE_STEPS = (5, 15)  # one File and one Image at each: one before the live export, one after

KINDS = f"""
    import numpy as np
    gate = pathlib.Path(os.environ["GATE"])
    here = pathlib.Path(os.environ["HERE"])
    run = pluto.init(name="kinds")
    for i in range({N}):
        if i == {N // 2}:
            # the first half's files are staged, so the live export carries their bytes
            run._media.wait_staged()
            print("half", flush=True)
            while not gate.exists():
                time.sleep(0.02)
        print(f"line {{i}}", flush=True)
        run.log({{"train/loss": 1.0 / (i + 1), "note": f"step {{i}}",
                 "hist": pluto.Histogram([i, i + 1, i + 1], bins=2)}}, step=i)
        if i in {FILE_STEPS}:
            src = here / f"ckpt-{{i}}.bin"
            src.write_bytes(bytes([i]) * (1000 + i))
            run.log({{"ckpt": pluto.File(str(src)),
                     "img": pluto.Image(np.full((4, 3, 3), i, dtype=np.uint8))}}, step=i)
    run.finish()
"""


def _console(path: Path) -> list[str]:
    """The console lines journaled so far (read-only: the job may still be writing)."""
    with journal.Journal.open(path, readonly=True) as j:
        payloads = [p for (p,) in j.conn.execute(
            "SELECT payload FROM events WHERE kind = 'logs' ORDER BY seq")]
    return [json.loads(line)["message"] for p in payloads for line in p.split("\n")]


def _first_half_journaled(path: Path) -> None:
    # the console helper journals lines on its own schedule: wait until the first half's
    # are in, so the live export holds console lines that the later copies hold again
    wait_for(lambda: f"line {N // 2 - 1}" in _console(path), timeout=30,
             what="the first half's console lines journaled")


def _holds(x0: Path) -> tuple[set[str], set[str], int]:
    """What the live export holds: console lines, kinds of data rows, staged files."""
    with journal.Journal.open(x0, readonly=True) as j:
        [row] = journal.all_runs(j)
        kinds = {json.loads(line)["logName"]
                 for e in journal.pending_events(j, row.key, after=0) if e.kind == "data"
                 for line in e.payload.split("\n")}
        files = filerows.counts(j)[row.key]
    return set(_console(x0)), kinds, files.pending - files.unstaged


@pytest.mark.parametrize("order", list(ORDERS))
def test_copies_deliver_lines_strings_histograms_and_files_once(tmp_path, pluto_server, order):
    """A live export, a later one and the original journal, in any order or together: every
    console line, string, histogram row and file once on the server, at its step."""
    src, x0, x1 = take_copies(tmp_path, KINDS, ready=_first_half_journaled)
    # the live export already holds some of every kind: pushed before or after the others,
    # each of them is a second copy the ledger must leave out
    lines, kinds, staged = _holds(x0)
    assert {f"line {i}" for i in range(N // 2)} <= lines
    assert {"note", "hist"} <= kinds
    assert staged == 2 * len([s for s in FILE_STEPS if s < N // 2])

    push_copies(pluto_server, tmp_path, (x0, x1, src), order)

    run = the_run(pluto_server)
    assert run["status"] == "COMPLETED", run["statusMetadata"]
    assert steps(pluto_server, run, "train/loss") == list(range(N))

    client = stock_client(pluto_server)
    try:
        logs = client.get_logs("proj", run["id"])
        files = {name: sorted(client.get_files("proj", run["id"], file_name=name),
                              key=lambda f: f["step"]) for name in ("ckpt", "img")}
    finally:
        client.close()
    # console: each line once (line numbers too), in the order printed (the server reads by time)
    ours = [r["message"] for r in logs if r["message"].startswith("line ")]
    assert ours == [f"line {i}" for i in range(N)], ours
    assert Counter(r["message"] for r in logs)["half"] == 1
    numbers = [r["lineNumber"] for r in logs]
    assert len(set(numbers)) == len(numbers), sorted(numbers)

    # string series and histograms: one row per step, by time, nothing else
    rows = data_rows(pluto_server, run)
    notes = [(r["step"], r["data"]) for r in rows if r["logName"] == "note"]
    assert notes == [(i, f"step {i}") for i in range(N)]
    hists = [(r["step"], r["dataType"], json.loads(r["data"]))
             for r in rows if r["logName"] == "hist"]
    assert hists == [(i, "HISTOGRAM", Histogram([i, i + 1, i + 1], bins=2).to_dict())
                     for i in range(N)]
    assert len(rows) == 2 * N

    # files: one row each (get_files and the server's own count of rows), the bytes exact
    assert [f["step"] for f in files["ckpt"]] == list(FILE_STEPS)
    assert [httpx.get(f["url"], timeout=30).content for f in files["ckpt"]] == [
        bytes([s]) * (1000 + s) for s in FILE_STEPS]
    assert [f["step"] for f in files["img"]] == list(FILE_STEPS)
    for f, s in zip(files["img"], FILE_STEPS, strict=True):
        assert (pixels(httpx.get(f["url"], timeout=30).content) == s).all()
    assert file_rows(pluto_server, run["id"]) == 2 * len(FILE_STEPS)
