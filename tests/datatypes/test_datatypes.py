"""Histogram, Table, Graph and alerts: a real job, a real daemon, the local server read back."""

from __future__ import annotations

import json

import pytest

from pluto_offline import Graph, Histogram, Table, journal
from tests.console import jobs
from tests.fixtures.daemon import DaemonProcess


def test_every_data_type_and_an_alert_reach_the_server(tmp_path, pluto_server):
    code, _, err = jobs.run(tmp_path / "j", """
        import pluto as stock
        run = pluto.init(name="d", run_id="d1")
        g = pluto.Graph()
        g.add_edge("conv", "relu", weight=2)
        for step in range(2):
            run.log({"w": pluto.Histogram([0, 1, 1, 2, 3, 3, 3], bins=3),
                     "t": pluto.Table([[1, "a"], [2, "b"]], columns=["n", "s"]),
                     "g": g, "stock": stock.Histogram([1, 2, 3], bins=2), "loss": 0.5},
                    step=step)
        run.alert("loss is NaN", title="divergence", level="ERROR")
        run.finish()
    """, PLUTO_DISABLE_SYSTEM_METRICS="1")
    assert code == 0, err
    with journal.Journal.open(tmp_path / "j", readonly=True) as j:
        types = {json.loads(p)["type"]: json.loads(p)["names"] for (p,) in j.conn.execute(
            "SELECT payload FROM events WHERE kind = 'lognames'")}
    assert types == {"METRIC": ["loss"], "HISTOGRAM": ["w", "stock"], "TABLE": ["t"],
                     "DATA": ["g"]}
    d = DaemonProcess(pluto_server, tmp_path / "j", "--exit-when-idle")
    assert d.wait(60) == 0, d.log()
    sid = pluto_server.list_runs("proj")[0]["id"]
    rows = pluto_server.request("GET", "/api/runs/data",
                                params={"runId": sid, "projectName": "proj"}).json()["data"]
    by = {(r["logName"], r["step"]): r for r in rows}
    assert len(rows) == 8 and {s for _, s in by} == {0, 1}
    assert by[("w", 1)]["dataType"] == "HISTOGRAM"
    assert json.loads(by[("w", 1)]["data"]) == {
        "freq": [1, 2, 4], "maxFreq": 4, "bins": {"min": 0, "max": 3, "num": 3},
        "shape": "uniform", "type": "Histogram", "v": 1}
    assert json.loads(by[("t", 0)]["data"]) == {
        "table": [[1, "a"], [2, "b"]], "col": [{"name": "n", "dtype": "int"},
                                             {"name": "s", "dtype": "str"}],
        "type": "Table", "v": 1}
    graph = json.loads(by[("g", 0)]["data"])
    assert by[("g", 0)]["dataType"] == "GRAPH"
    assert graph["edges"] == [["conv", "relu", {"weight": 2}]]
    assert graph["successors"] == {"conv": ["relu"], "relu": []}
    assert json.loads(by[("stock", 0)]["data"])["freq"] == [1, 2]
    one = pluto_server.request("GET", "/api/runs/data",
                               params={"runId": sid, "projectName": "proj", "logName": "t"})
    assert [r["logName"] for r in one.json()["data"]] == ["t", "t"]
    alerts = pluto_server.request("GET", "/_admin/alerts", params={"runId": sid}).json()
    (alert,) = alerts["alerts"]
    assert (alert["title"], alert["body"], alert["level"], alert["email"]) == (
        "divergence", "loss is NaN", "ERROR", True)


def test_the_stock_shapes_without_numpy_rules_broken():
    assert Histogram([5, 5, 5], bins=2).to_dict()["bins"] == {"min": 4.5, "max": 5.5, "num": 2}
    pre = Histogram(([1, 2], [0, 1, 2]), bins=None).to_dict()
    assert pre["shape"] == "uniform" and pre["freq"] == [1, 2]
    assert Histogram(([1, 2], [0, 1]), bins=None).to_dict()["shape"] == "generic"
    assert Table([[1, 2]], columns=["a"]).to_dict() == {"table": [[1, 2]], "type": "Table",
                                                        "v": 1}
    g = Graph({"nodes": {"a": {"k": 1}}, "edges": [["a", "b"]]})
    assert g.edges() == [("a", "b")] and g.nodes == {"a": {"k": 1}, "b": {}}


def test_a_value_that_is_not_json_is_dropped_with_a_warning(tmp_path, caplog):
    import pluto_offline as pluto

    run = pluto.init(dir=tmp_path, project="p", settings={"disable_console": True,
                                                         "disable_system_metrics": True})
    # NaN is not JSON: the server could not parse the row
    run.log({"bad": Table([[float("nan")]]), "ok": 1.0})
    run.finish()
    assert "'bad' dropped: a Table that cannot be written as JSON" in caplog.text
    with journal.Journal.open(tmp_path, readonly=True) as j:
        kinds = [k for (k,) in j.conn.execute("SELECT kind FROM events")]
    assert "data" not in kinds and "metrics" in kinds


@pytest.mark.parametrize("level", ["INFO", "warning"])
def test_an_alert_after_the_end_is_ignored_and_levels_are_upper_case(tmp_path, level):
    import pluto_offline as pluto

    run = pluto.init(dir=tmp_path, project="p", settings={"disable_console": True,
                                                         "disable_system_metrics": True})
    run.alert(text="via text=", level=level)
    run.finish()
    run.alert("too late")
    with journal.Journal.open(tmp_path, readonly=True) as j:
        alerts = [json.loads(p) for (p,) in j.conn.execute(
            "SELECT payload FROM events WHERE kind = 'alert'")]
    assert [(a["body"], a["level"], a["title"]) for a in alerts] == [
        ("via text=", level.upper(), "pluto")]


def test_an_alert_with_wait_never_sleeps(tmp_path):
    """The stock SDK sleeps ``wait`` seconds in ``alert()``; here the call journals and
    returns (an alert never holds up the training loop). 600 s asked: back long before."""
    import time

    import pluto_offline as pluto

    run = pluto.init(dir=tmp_path, project="p", settings={"disable_console": True,
                                                         "disable_system_metrics": True})
    t0 = time.monotonic()
    run.alert("slow down", title="throttle", wait=600)
    assert time.monotonic() - t0 < 60  # not 600: nothing slept
    run.finish()
    with journal.Journal.open(tmp_path, readonly=True) as j:
        [(payload,)] = j.conn.execute("SELECT payload FROM events WHERE kind = 'alert'")
    assert (json.loads(payload)["title"], json.loads(payload)["body"]) == ("throttle",
                                                                           "slow down")
