"""The ingest service: NDJSON bodies, deduplication, errors (422 for everything but headers)."""

from __future__ import annotations

import pytest

from tests.fixtures.server import LocalServer

P = "ingest"


@pytest.fixture
def srv(pluto_server_module: LocalServer) -> LocalServer:
    pluto_server_module.clear_faults()
    return pluto_server_module


@pytest.fixture
def run_id(srv: LocalServer) -> int:
    return srv.create_run(P)["runId"]


def send(srv: LocalServer, run_id: int, body: bytes, kind: str = "metrics", **headers):
    sent = {"Content-Type": "application/x-ndjson", "X-Run-Id": str(run_id), "X-Project-Name": P}
    sent.update(headers)
    return srv.request("POST", f"/ingest/{kind}", data=body, headers=sent)


def values(srv: LocalServer, run_id: int, name: str) -> dict[int, tuple]:
    return {p["step"]: (p["value"], p["valueFlag"]) for p in srv.metrics(run_id, P, name)}


def test_metrics_are_stored_with_special_values(srv, run_id):
    body = (b'{"time": 1000, "step": 0, "data": {"a": 1.5, "b": NaN, "c": Infinity, "d": null}}\n'
            b'{"time": 1000, "step": 1, "data": {"a": 2, "b": "NaN", "c": "-Infinity"}}\n')
    response = send(srv, run_id, body)
    assert response.status_code == 200
    assert response.text == "Stream processed successfully: 2 records"
    assert values(srv, run_id, "a") == {0: (1.5, ""), 1: (2.0, "")}
    assert values(srv, run_id, "b") == {0: (0, "NaN"), 1: (0, "NaN")}
    assert values(srv, run_id, "c") == {0: (0, "Inf"), 1: (0, "-Inf")}
    assert values(srv, run_id, "d") == {}
    point = srv.metrics(run_id, P, "a")[0]
    assert point["time"] == "1970-01-01 00:00:01.000" and point["logGroup"] == ""


def test_dedup_keeps_the_latest_time(srv, run_id):
    lines = [{"time": 10, "step": s, "data": {"train/loss": float(s)}} for s in range(5)]
    assert srv.ingest("metrics", run_id, P, lines).status_code == 200
    assert srv.ingest("metrics", run_id, P, lines).status_code == 200  # replay: harmless
    srv.ingest("metrics", run_id, P, [{"time": 9, "step": 1, "data": {"train/loss": -1.0}},
                                      {"time": 11, "step": 2, "data": {"train/loss": 20.0}},
                                      {"time": 10, "step": 3, "data": {"train/loss": 30.0}}])
    got = values(srv, run_id, "train/loss")
    assert got == {0: (0.0, ""), 1: (1.0, ""), 2: (20.0, ""), 3: (30.0, ""), 4: (4.0, "")}
    assert srv.metric_counts(run_id) == {"received": 13, "stored": 5, "duplicates": 8}
    assert srv.metrics(run_id, P, "train/loss")[0]["logGroup"] == "train"


def test_a_bad_line_fails_the_request_naming_it(srv, run_id):
    body = (b'{"time": 1, "step": 0, "data": {"a": 1}}\n'
            b'{"time": 1, "step": 1, "data": {"a": 2}}\n'
            b'{"time": 1, "step": 2, "data": {"a": \n')
    response = send(srv, run_id, body)
    assert response.status_code == 422 and "line 3" in response.json()["message"]
    # The lines before it may be stored (here they are, as a streaming ingest would).
    assert sorted(values(srv, run_id, "a")) == [0, 1]


@pytest.mark.parametrize("line", [
    b'[1, 2]', b'{"step": 0, "data": {"a": 1}}', b'{"time": 1, "step": -1, "data": {"a": 1}}',
    b'{"time": 1, "step": 1.5, "data": {"a": 1}}', b'{"time": 1, "step": 0, "data": [1]}',
    b'{"time": 1, "step": 0, "data": {"a": "text"}}', b'{"time": 1, "step": 0, "data": {"a": true}}',
    b'{"time": 1, "step": 0, "data": {"a": {"b": 1}}}', b'{"time": 1, "step": 0}{"time": 2}',
])
def test_invalid_metric_lines_are_422(srv, run_id, line):
    response = send(srv, run_id, b'{"time": 1, "step": 5, "data": {"ok": 1}}\n' + line + b"\n")
    assert response.status_code == 422
    assert "line 2" in response.json()["message"]


def test_blank_lines_and_empty_bodies(srv, run_id):
    body = b'\n{"time": 1, "step": 0, "data": {"x": 1}}\n\n{"time": 1, "step": 1, "data": {"x": 2}}\n'
    assert send(srv, run_id, body).text == "Stream processed successfully: 2 records"
    assert send(srv, run_id, b"").text == "Stream processed successfully: 0 records"


def test_ingest_auth_and_headers(srv, run_id):
    body = b'{"time": 1, "step": 0, "data": {"x": 1}}\n'
    for kind in ("metrics", "logs", "data"):
        bad = srv.request("POST", f"/ingest/{kind}", data=body, auth=False,
                          headers={"X-Run-Id": str(run_id), "X-Project-Name": P,
                                   "Authorization": "Bearer wrong"})
        assert bad.status_code == 422 and "API key" in bad.json()["message"]
    missing = srv.request("POST", "/ingest/metrics", data=body, headers={"X-Project-Name": P})
    assert missing.status_code == 400 and "X-Run-Id" in missing.json()["message"]
    missing = srv.request("POST", "/ingest/metrics", data=body, headers={"X-Run-Id": "1"})
    assert missing.status_code == 400 and "X-Project-Name" in missing.json()["message"]


def test_run_id_is_not_checked_and_non_numeric_is_run_zero(srv):
    body = b'{"time": 1, "step": 0, "data": {"orphan": 1}}\n'
    assert send(srv, "abc", body).status_code == 200
    assert send(srv, 424242, body).status_code == 200
    assert values(srv, 0, "orphan") == {0: (1.0, "")}
    assert srv.metric_names(P, 424242) == ["orphan"]


def test_logs_and_data_lines(srv, run_id):
    logs = [{"time": 5, "message": f"line {i}", "lineNumber": i, "logType": "INFO"} for i in range(3)]
    assert srv.ingest("logs", run_id, P, logs).text == "Stream processed successfully: 3 records"
    assert [entry["message"] for entry in srv.logs(run_id, P)] == ["line 0", "line 1", "line 2"]
    data = [{"time": 5, "data": '{"bins": [1]}', "dataType": "HISTOGRAM", "logName": "h", "step": 1}]
    assert srv.ingest("data", run_id, P, data).status_code == 200
    assert srv.ingest("logs", run_id, P, [{"time": "x", "message": "m"}]).status_code == 422
    assert srv.ingest("data", run_id, P, [{"time": 1, "data": {}, "dataType": "T",
                                           "logName": "h", "step": 1}]).status_code == 422


def test_metrics_read_limit_and_step_range(srv, run_id):
    srv.ingest("metrics", run_id, P, [{"time": 1, "step": s, "data": {"m": float(s)}}
                                      for s in range(100)])
    sampled = [p["step"] for p in srv.metrics(run_id, P, "m", limit=10)]
    assert sampled[0] == 0 and sampled[-1] == 99 and len(sampled) == 11
    window = [p["step"] for p in srv.metrics(run_id, P, "m", stepMin=10, stepMax=12)]
    assert window == [10, 11, 12]
