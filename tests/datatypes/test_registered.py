"""Log names registered on the server (``logName/add``), read back from it, not from the
journal: a real job logs a Table, Histograms (ours and the stock SDK's) and a Graph beside a
metric, ``plutosync push`` delivers it, the stock client reads the run's ``logNames``."""

from __future__ import annotations

import pluto.query as pq

from tests.console import jobs
from tests.fixtures.daemon import DaemonProcess
from tests.fixtures.server import LocalServer


def push(server: LocalServer, journal_dir) -> None:
    """``plutosync push DIR``: delivered, nothing left."""
    d = DaemonProcess(server, journal_dir, str(journal_dir), command="push")
    assert d.wait(60) == 0, d.log()


def registered(server: LocalServer, run: str) -> dict[str, str]:
    """``{logName: logType}`` of a run as the stock client reads them from the server."""
    client = pq.Client(api_token=server.api_key, host=server.url)
    try:
        names = client.get_run("proj", run)["logNames"]
    finally:
        client.close()
    out = {n["logName"]: n["logType"] for n in names}
    assert len(out) == len(names), names  # one registration per name
    return out


def test_each_data_type_is_registered_on_the_server_with_its_type(tmp_path, pluto_server):
    code, _, err = jobs.run(tmp_path / "j", """
        import pluto as stock
        run = pluto.init(name="d", run_id="d1", settings={"disable_console": True})
        g = pluto.Graph()
        g.add_edge("conv", "relu")
        for step in range(3):  # logged again and again: registered once
            run.log({"eval/w": pluto.Histogram([0, 1, 1, 2], bins=2),
                     "t": pluto.Table([[1, "a"]], columns=["n", "s"]), "g": g,
                     "stock": stock.Histogram([1, 2, 3], bins=2), "loss": 1.0}, step=step)
        run.finish()
    """, PLUTO_DISABLE_SYSTEM_METRICS="1")
    assert code == 0, err
    push(pluto_server, tmp_path / "j")
    # the server has no GRAPH log type: a graph is DATA (docs/console.md)
    assert registered(pluto_server, "PRO-1") == {
        "loss": "METRIC", "eval/w": "HISTOGRAM", "stock": "HISTOGRAM", "t": "TABLE", "g": "DATA"}
    # and every name the data rows carry is one of them, with a row per step
    sid = pluto_server.list_runs("proj")[0]["id"]
    rows = pluto_server.request("GET", "/api/runs/data",
                                params={"runId": sid, "projectName": "proj"}).json()["data"]
    assert sorted({(r["logName"], r["dataType"]) for r in rows}) == [
        ("eval/w", "HISTOGRAM"), ("g", "GRAPH"), ("stock", "HISTOGRAM"), ("t", "TABLE")]
    assert len(rows) == 4 * 3


def test_names_first_logged_by_a_resumed_run_are_registered_too(tmp_path, pluto_server):
    """A second process resumes the run, delivered already, and logs names of its own: they
    are added to the first process's on the server, its types kept."""
    for code in ("""
        run = pluto.init(name="r", run_id="r1", resume=True)
        run.log({"t": pluto.Table([[1]]), "loss": 1.0})
        run.finish()
    """, """
        run = pluto.init(name="r", run_id="r1", resume=True)
        run.log({"h": pluto.Histogram([1, 2]), "acc": 0.5, "t": pluto.Table([[2]])})
        run.finish()
    """):
        rc, _, err = jobs.run(tmp_path / "j", code, PLUTO_DISABLE_SYSTEM_METRICS="1",
                              PLUTO_DISABLE_CONSOLE="1")
        assert rc == 0, err
        push(pluto_server, tmp_path / "j")  # each process's names to a run the server has
    assert registered(pluto_server, "PRO-1") == {
        "loss": "METRIC", "acc": "METRIC", "t": "TABLE", "h": "HISTOGRAM"}
