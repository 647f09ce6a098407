"""Issue 8 items 1, 5 and 9 end to end, as a user meets them (docs/delivery.md).

Real SDK jobs in their own processes (one ``PLUTO_DIR`` per node), real SIGKILL, real
``plutosync push`` / ``plutosync run`` / ``plutosync status`` processes against the local
server; the server is read back with the stock client (``pluto.query``) and its read endpoints.

- item 1: DDP, two nodes x two ranks on the stock multi-rank pattern: one run, every rank's
  points, COMPLETED, no conflict, whichever node's journal is pushed first;
- item 5: a create refused for its config never stops a live daemon: the run is still created
  with its data, the refusal shown by ``status``; NaN/Inf config lands in its documented form;
- item 9: a SIGKILLed writer is reported FAILED ``{"reason": "killed"}`` at its last event's
  time, and a later resume from another node wins in either delivery order.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pluto.query as pq
import pytest

from pluto_offline import journal
from tests.daemon.test_many_journals import _killed_job, push, the_run
from tests.daemon.test_sdk_jobs import finished, job, steps
from tests.fixtures.daemon import DaemonProcess, wait_for
from tests.fixtures.server import LocalServer, user_config
from tests.sdk.jobs import status

N = 30  # points per rank

# The stock SDK's documented multi-rank pattern, verbatim; the ranks of a DDP job live together,
# so none ends before every rank has opened the run (the gate), and every rank finish()es.
RANK = """
    rank = int(os.environ["RANK"])
    gate = pathlib.Path(os.environ["GATE"])
    run = pluto.init(project="p", run_id=os.environ.get("PLUTO_RUN_ID"),
                     settings={"autostart": False})
    (gate / f"up{rank}").touch()
    for step in range(int(os.environ["POINTS"])):
        run.log({f"rank{rank}/loss": rank * 1000.0 + step}, step=step)
    while len(list(gate.glob("up*"))) < 4:
        time.sleep(0.02)
    run.finish()
"""


def stock_client(server: LocalServer) -> pq.Client:
    return pq.Client(api_token=server.api_key, host=server.url)


def records(got: Any) -> list[dict]:
    """``get_metrics``'s answer as records (a DataFrame when pandas is installed)."""
    return got.to_dict("records") if hasattr(got, "to_dict") else list(got)


def status_json(*dirs: Path) -> list[dict]:
    """``plutosync status --json`` over the journals, as a script reads it."""
    r = status(dirs[0], *[a for d in dirs[1:] for a in ("--dir", str(d))], "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def ms(iso: str) -> int:
    """The server's ``...T12:00:00.123Z`` as epoch ms."""
    stamp = dt.datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.timezone.utc)
    return round(stamp.timestamp() * 1000)


# ------------------------------------------------------------ item 1: two nodes x two ranks

@pytest.mark.parametrize("first", [0, 1])
def test_two_nodes_of_two_ranks_deliver_one_completed_run_in_either_order(
        tmp_path, pluto_server, first):
    """DDP with node-local journals: ranks 0,1 on node 0 and 2,3 on node 1, all with the same
    PLUTO_RUN_ID. Each node's journal pushed on its own, either node first: one run on the
    server holding all four ranks' points, COMPLETED, and no node held as a conflict."""
    gate = tmp_path / "gate"
    gate.mkdir()
    nodes = [tmp_path / f"node{n}" for n in (0, 1)]
    ranks = [job(nodes[r // 2], RANK, PLUTO_RUN_ID="ddp-x", RANK=str(r), GATE=str(gate),
                 POINTS=str(N))
             for r in range(4)]

    def all_up() -> bool:  # a rank that failed its init() fails the test now, not at a timeout
        for p in ranks:
            if p.poll() not in (None, 0):
                raise AssertionError(p.communicate()[0].decode(errors="replace"))
        return len(list(gate.glob("up*"))) == 4

    try:
        wait_for(all_up, timeout=60, what="every rank's init()")
        outs = [p.communicate(timeout=60)[0].decode(errors="replace") for p in ranks]
    finally:  # the others would wait for a failed rank forever
        for p in ranks:
            if p.poll() is None:
                p.kill()
                p.wait(10)
    for p, out in zip(ranks, outs, strict=True):
        assert p.returncode == 0, out  # the second rank of a node used to raise RunExistsError

    for i, node in enumerate((nodes[first], nodes[1 - first])):
        p = push(pluto_server, tmp_path / f"push{i}", node)
        assert p.proc.returncode == 0, p.log()
        assert "conflict" not in p.log().lower(), p.log()

    rows = status_json(*nodes)
    assert [(r["run_id"], r["conflict"], r["synced"]) for r in rows] == [("ddp-x", None, True)] * 2
    text = status(nodes[0], "--dir", str(nodes[1]))
    assert text.returncode == 0 and "conflict" not in text.stdout.lower(), text.stdout

    client = stock_client(pluto_server)
    try:
        (listed,) = client.list_runs("p")
        run = client.get_run("p", listed["id"])
        assert run["status"] == "COMPLETED"
        names = [f"rank{r}/loss" for r in range(4)]
        assert sorted(client.get_metric_names("p", run_ids=[run["id"]])) == names
        points = records(client.get_metrics("p", run["id"], metric_names=names))
    finally:
        client.close()
    assert sorted((p["metric"], p["step"], p["value"]) for p in points) == sorted(
        (f"rank{r}/loss", s, r * 1000.0 + s) for r in range(4) for s in range(N))
    assert pluto_server.get_run(run["id"])["externalId"] == "ddp-x"


# ----------------------------------------------------- item 5: refused config, live daemon

REFUSED = """
    run = pluto.init(name="refused", run_id="bad-config", config="lr=0.1")
    for i in range(10):
        run.log({"x": float(i)}, step=i)
    run.finish()
"""
HEALTHY = """
    run = pluto.init(name="healthy", run_id="healthy", config={"lr": 0.1})
    for i in range(10):
        run.log({"x": float(i)}, step=i)
    run.finish()
"""
NON_FINITE = """
    run = pluto.init(name="non-finite", run_id="non-finite",
                     config={"lr": float("nan"), "sched": {"max": float("inf")}})
    run.update_config({"clip": float("-inf")})
    run.log({"x": 0.0}, step=0)
    run.finish()
"""


def test_a_live_daemon_survives_a_refused_config_and_delivers_everything_else(
        tmp_path, pluto_server):
    """One journal: a run whose create the server refuses for its config (a string), a
    healthy run, and a run whose config held NaN/Inf. A long-lived ``plutosync run`` drains
    it: it is still running afterwards, every run is on the server with its points and
    COMPLETED, the refused config is recorded with the server's reason (``status``, text and
    --json), and the non-finite values read back as the documented strings."""
    d = tmp_path / "j"
    for code in (REFUSED, HEALTHY, NON_FINITE):
        assert finished(job(d, code)) == 0

    with DaemonProcess(pluto_server, d) as daemon:
        def drained() -> list[dict] | None:
            rows = status_json(d)
            return rows if rows and all(r["pending"] == 0 for r in rows) else None

        rows = {r["name"]: r for r in wait_for(drained, timeout=60, what="the journal drained")}
        # the 400 answer did not stop it (it used to exit with RejectedError, every retry)
        assert daemon.proc.poll() is None, daemon.log()
        assert "Traceback" not in daemon.log(), daemon.log()
        assert daemon.terminate() == 0, daemon.log()

    runs = {r["name"]: pluto_server.get_run(r["id"]) for r in pluto_server.list_runs("proj")}
    assert {n: r["status"] for n, r in runs.items()} == {
        "refused": "COMPLETED", "healthy": "COMPLETED", "non-finite": "COMPLETED"}
    assert steps(pluto_server, runs["refused"], "x") == list(range(10))
    assert steps(pluto_server, runs["healthy"], "x") == list(range(10))
    assert user_config(runs["healthy"]["config"]) == {"lr": 0.1}
    assert user_config(runs["non-finite"]["config"]) == {
        "lr": "NaN", "sched": {"max": "Infinity"}, "clip": "-Infinity"}  # docs/sdk.md

    # the refused create is recorded with the server's reason; nothing else is
    (rejection,) = rows["refused"]["rejections"]
    assert (rejection["kind"], rejection["code"]) == ("config", 400), rejection
    assert "Invalid config JSON" in rejection["reason"], rejection
    assert not rows["refused"]["synced"]
    assert rows["healthy"]["synced"] and rows["non-finite"]["synced"]
    assert [r["rejections"] for n, r in rows.items() if n != "refused"] == [[], []]
    text = status(d).stdout
    assert [ln for ln in text.splitlines() if ln.startswith("rejected proj/refused ")
            and "(config)" in ln and "Invalid config JSON" in ln], text
    assert status(d, "--check").returncode == 1  # a refusal is not "synced"


# --------------------------------------------- item 9: a SIGKILLed writer, resumed elsewhere

RESUME = """
    run = pluto.init(name="spot", run_id="spot-k", resume=True)
    for i in range(20, 30):
        run.log({"x": float(i)}, step=i)
    run.finish()
"""


def killed_status(where: Path) -> tuple[int, int]:
    """(time of the journaled FAILED killed, time of the run's last other event)."""
    with journal.Journal.open(where) as j:
        (run,) = journal.all_runs(j)
        ((at, payload),) = j.conn.execute(
            "SELECT time, payload FROM events WHERE run = ? AND kind = 'status'", (run.key,))
        assert json.loads(payload) == {"status": "FAILED", "metadata": {"reason": "killed"}}
        (last,) = j.conn.execute("SELECT max(time) FROM events WHERE run = ? AND kind != "
                                 "'status'", (run.key,)).fetchone()
    return at, last


@pytest.mark.parametrize("first", ["killed", "resume"])
def test_a_sigkilled_writer_is_failed_at_its_last_event_and_a_resume_elsewhere_wins(
        tmp_path, pluto_server, first):
    """Node 1's job logs 20 points and is SIGKILLed; pushed, its run is FAILED
    ``{"reason": "killed"}`` timed at the run's last journaled event (not at the push). Node 2
    then resumes the run and finishes it: pushed after or before node 1's journal, the run
    ends COMPLETED with all 30 points, neither journal held as a conflict."""
    n1, n2 = tmp_path / "node1", tmp_path / "node2"
    _killed_job(n1, "spot-k")  # a real SIGKILL (it asserts the exit was -9)

    if first == "killed":
        p = push(pluto_server, tmp_path / "p1", n1)
        assert p.proc.returncode == 0, p.log()
        run = the_run(pluto_server)
        assert run["status"] == "FAILED", run["statusMetadata"]
        assert run["statusMetadata"]["reason"] == "killed"
        at, last = killed_status(n1)
        assert at == last  # the daemon journals it at the run's last event...
        # ...and the server holds that time, not the push's
        assert ms(run["statusUpdated"]) == last
        assert run["statusMetadata"]["plutoOffline"] == {"time": last, "status": "FAILED"}
        (row,) = status_json(n1)
        assert (row["state"], row["synced"]) == ("killed", True)

    assert finished(job(n2, RESUME)) == 0
    order = [n1, n2] if first == "killed" else [n2, n1]
    for i, node in enumerate(order if first == "resume" else order[1:]):
        p = push(pluto_server, tmp_path / f"p{i + 2}", node)
        assert p.proc.returncode == 0, p.log()
    if first == "resume":  # node 1's kill, delivered last, is older than node 2's finish()
        at, last = killed_status(n1)
        assert at == last

    run = the_run(pluto_server)
    assert run["status"] == "COMPLETED", run["statusMetadata"]
    assert steps(pluto_server, run, "x") == list(range(30))
    rows = status_json(n1, n2)
    assert [(r["conflict"], r["synced"]) for r in rows] == [(None, True)] * 2
