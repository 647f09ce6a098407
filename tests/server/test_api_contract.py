"""The api service's endpoints over HTTP: answers, semantics and every validation error."""

from __future__ import annotations

import json

import pytest

from tests.fixtures.server import LocalServer

P = "contract"


@pytest.fixture
def srv(pluto_server_module: LocalServer) -> LocalServer:
    pluto_server_module.clear_faults()
    return pluto_server_module


def post(srv: LocalServer, path: str, body: dict, **kw) -> tuple[int, dict]:
    response = srv.request("POST", path, json=body, **kw)
    return response.status_code, response.json()


def error_of(body: dict) -> str:
    error = body["error"]
    return error if isinstance(error, str) else error["message"]


def new_run(srv: LocalServer, project: str = P, **fields) -> dict:
    return srv.create_run(project, "r", **fields)


# --- auth -------------------------------------------------------------------------------------
@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nope"},
                                     {"Authorization": "Basic plt_test_0123456789abcdef"}])
def test_api_without_valid_key_is_401(srv, headers):
    for method, path in [("POST", "/api/slug"), ("POST", "/api/runs/create"),
                         ("GET", "/api/runs/projects"), ("POST", "/_admin/faults")]:
        response = srv.request(method, path, json={}, headers=headers, auth=False)
        assert response.status_code == 401, path
        assert response.json()["error"]


def test_slug_answers_the_organization(srv):
    status, body = post(srv, "/api/slug", {})
    assert status == 200 and body["organization"]["slug"] == "local"


# --- create -----------------------------------------------------------------------------------
def test_create_numbers_runs_per_project_with_display_ids(srv):
    first = new_run(srv, "image-classification")
    second = new_run(srv, "image-classification")
    other = new_run(srv, "training")
    assert (first["number"], first["displayId"]) == (1, "ICL-1")
    assert (second["number"], second["displayId"]) == (2, "ICL-2")
    assert other["displayId"] == "TRA-1"
    assert first["resumed"] is False and first["organizationSlug"] == "local"
    assert first["url"].startswith(srv.url)
    assert srv.get_run(first["runId"])["status"] == "RUNNING"


def test_create_with_known_external_id_resumes_the_same_run(srv):
    run = new_run(srv, externalId="same", tags=["t"], config=json.dumps({"a": {"x": 1}}))
    status, _ = post(srv, "/api/runs/status/update", {"runId": run["runId"], "status": "FAILED"})
    assert status == 200
    again = new_run(srv, externalId="same", tags=["ignored"], config=json.dumps({"a": {"y": 2}}))
    assert again["runId"] == run["runId"] and again["resumed"] is True
    assert again["forkedFromRunId"] is None
    stored = srv.get_run(run["runId"])
    assert stored["status"] == "RUNNING" and stored["tags"] == ["t"]
    assert stored["config"] == {"a": {"x": 1, "y": 2}}


def test_create_stores_backfill_times(srv):
    run = new_run(srv, createdAt=1_600_000_000_123, updatedAt=1_600_000_100_000)
    stored = srv.get_run(run["runId"])
    assert stored["createdAt"] == "2020-09-13T12:26:40.123Z"
    assert stored["updatedAt"] == "2020-09-13T12:28:20.000Z"


@pytest.mark.parametrize("body, reason", [
    ({"projectName": P}, "runName"),
    ({"runName": "r"}, "projectName"),
    ({"runName": 3, "projectName": P}, "runName"),
    ({"runName": "r", "projectName": P, "externalId": ""}, "externalId"),
    ({"runName": "r", "projectName": P, "tags": ["x"] * 51}, "tags"),
    ({"runName": "r", "projectName": P, "tags": "x"}, "tags"),
    ({"runName": "r", "projectName": P, "tags": ["group:a", "group:b"]},
     "A run can have at most one group:* tag."),
    ({"runName": "r", "projectName": P, "config": "{nope"}, "Invalid JSON format in request body"),
    ({"runName": "r", "projectName": P, "loggerSettings": "{"}, "Invalid JSON format in request body"),
    ({"runName": "r", "projectName": P, "systemMetadata": "["}, "Invalid JSON format in request body"),
    ({"runName": "r", "projectName": P, "createdAt": "now"}, "createdAt"),
    ({"runName": "r", "projectName": P, "forkRunId": 1},
     "forkStep is required when forkRunId is provided"),
    ({"runName": "r", "projectName": P, "forkRunId": 999999, "forkStep": 0},
     "Fork parent run not found in this project"),
    ({"runName": "r", "projectName": P, "inheritConfig": "yes"}, "inheritConfig"),
])
def test_create_validation_errors(srv, body, reason):
    status, answer = post(srv, "/api/runs/create", body)
    assert status == 400
    assert reason in error_of(answer)


def test_create_without_json_content_type_sees_an_empty_body(srv):
    response = srv.request("POST", "/api/runs/create", data=b'{"runName": "r"}',
                           headers={"Content-Type": "text/plain"})
    assert response.status_code == 400 and "runName" in error_of(response.json())
    response = srv.request("POST", "/api/runs/create", data=b"{bad",
                           headers={"Content-Type": "application/json"})
    assert response.status_code == 400


def test_fork_rules(srv):
    parent = new_run(srv, "fork-proj", config=json.dumps({"a": 1, "n": {"x": 1}}), tags=["p"])
    srv.ingest("metrics", parent["runId"], "fork-proj",
               [{"time": 1, "step": s, "data": {"m": 1.0}} for s in range(10)])
    child = new_run(srv, "fork-proj", forkRunId=parent["runId"], forkStep=9, tags=["c"],
                    config=json.dumps({"n": {"y": 2}}))
    assert (child["forkedFromRunId"], child["forkStep"]) == (parent["runId"], 9)
    stored = srv.get_run(child["runId"])
    assert stored["config"] == {"a": 1, "n": {"y": 2}}  # shallow: the child's keys win
    assert stored["tags"] == ["c"]  # inheritTags defaults to false
    both = new_run(srv, "fork-proj", forkRunId=parent["runId"], forkStep=0, tags=["c"],
                   inheritTags=True, inheritConfig=False)
    stored = srv.get_run(both["runId"])
    assert stored["tags"] == ["p", "c"] and stored["config"] is None
    status, answer = post(srv, "/api/runs/create", {"runName": "r", "projectName": "fork-proj",
                                                    "forkRunId": parent["runId"], "forkStep": 10})
    assert status == 400 and "forkStep" in answer["error"]
    status, answer = post(srv, "/api/runs/create", {"runName": "r", "projectName": "elsewhere",
                                                    "forkRunId": parent["runId"], "forkStep": 1})
    assert status == 400 and answer["error"] == "Fork parent run not found in this project"
    status, answer = post(srv, "/api/runs/create", {
        "runName": "r", "projectName": "fork-proj", "forkRunId": parent["runId"], "forkStep": 1,
        "tags": ["group:a"], "inheritTags": True})
    assert status == 200
    status, answer = post(srv, "/api/runs/create", {
        "runName": "r", "projectName": "fork-proj", "forkRunId": status and answer["runId"],
        "forkStep": 0, "tags": ["group:b"], "inheritTags": True})
    assert status == 400 and answer["error"] == "A run can have at most one group:* tag."


# --- resume -----------------------------------------------------------------------------------
def test_resume_by_each_reference_reopens_the_run(srv):
    run = new_run(srv, "resume-proj", externalId="ext-r")
    for body in ({"runId": run["runId"]}, {"displayId": run["displayId"].lower()},
                 {"displayId": run["displayId"], "projectName": "resume-proj"},
                 {"externalId": "ext-r", "projectName": "resume-proj"}):
        post(srv, "/api/runs/status/update", {"runId": run["runId"], "status": "COMPLETED"})
        status, answer = post(srv, "/api/runs/resume", body)
        assert status == 200, body
        assert answer["runId"] == run["runId"] and answer["resumed"] is True
        assert answer["displayId"] == run["displayId"]
        assert srv.get_run(run["runId"])["status"] == "RUNNING"


@pytest.mark.parametrize("body, status, reason", [
    ({}, 400, "Exactly one"),
    ({"runId": 1, "displayId": "RES-1"}, 400, "Exactly one"),
    ({"externalId": "x"}, 400, "projectName is required when using externalId"),
    ({"displayId": "nope"}, 400, "Invalid displayId format. Expected PREFIX-NUMBER (e.g., 'MMP-1')"),
    ({"runId": 987654}, 404, "Run not found"),
    ({"displayId": "ZZZ-1"}, 404, "Run not found"),
    ({"externalId": "missing", "projectName": P}, 404, "Run not found"),
    ({"runId": "one"}, 400, "runId"),
])
def test_resume_errors(srv, body, status, reason):
    code, answer = post(srv, "/api/runs/resume", body)
    assert code == status and reason in error_of(answer)


def test_resume_ambiguous_display_id_is_409(srv):
    a, b = new_run(srv, "dup-proj"), new_run(srv, "dup_proj")  # both DPR-1
    assert a["displayId"] == b["displayId"]
    code, _ = post(srv, "/api/runs/resume", {"displayId": a["displayId"]})
    assert code == 409
    code, answer = post(srv, "/api/runs/resume", {"displayId": a["displayId"], "projectName": "dup_proj"})
    assert code == 200 and answer["runId"] == b["runId"]


# --- status -----------------------------------------------------------------------------------
def status_of(srv: LocalServer, run_id: int) -> str:
    return srv.get_run(run_id)["status"]


def test_status_severity_order(srv):
    run_id = new_run(srv)["runId"]
    for sent, kept in [("COMPLETED", "COMPLETED"), ("FAILED", "FAILED"), ("COMPLETED", "FAILED"),
                       ("CANCELLED", "FAILED"), ("RUNNING", "RUNNING"), ("TERMINATED", "TERMINATED"),
                       ("COMPLETED", "TERMINATED"), ("CANCELLED", "CANCELLED"),
                       ("TERMINATED", "CANCELLED")]:
        code, answer = post(srv, "/api/runs/status/update", {"runId": run_id, "status": sent})
        assert (code, answer) == (200, {"success": True})
        assert status_of(srv, run_id) == kept, sent


def test_status_keeps_the_given_time_and_metadata(srv):
    run_id = new_run(srv)["runId"]
    post(srv, "/api/runs/status/update", {
        "runId": run_id, "status": "FAILED", "statusUpdated": 1_700_000_000_000,
        "statusMetadata": json.dumps({"trace": "boom"}),
        "loggerSettings": json.dumps({"a": {"b": 1}})})
    assert srv.get_run(run_id)["statusMetadata"] == {"trace": "boom"}
    post(srv, "/api/runs/status/update", {"runId": run_id, "status": "FAILED",
                                          "loggerSettings": json.dumps({"a": {"c": 2}})})
    run = srv.get_run(run_id)
    assert run["loggerSettings"] == {"a": {"b": 1, "c": 2}}
    post(srv, "/api/runs/status/update", {"runId": run_id, "status": "FAILED",
                                          "statusUpdated": 1_700_000_000_000})
    assert srv.get_run(run_id)["statusUpdated"] == "2023-11-14T22:13:20.000Z"


@pytest.mark.parametrize("body, status, reason", [
    ({"status": "COMPLETED"}, 400, "runId"),
    ({"runId": 1}, 400, "status"),
    ({"runId": 1, "status": "DONE"}, 400, "status"),
    ({"runId": 1, "status": "FAILED", "statusMetadata": "{"}, 400, "Invalid statusMetadata JSON"),
    ({"runId": 987654, "status": "FAILED"}, 404, "Run not found"),
])
def test_status_errors(srv, body, status, reason):
    new_run(srv)
    code, answer = post(srv, "/api/runs/status/update", body)
    assert code == status and reason in error_of(answer)


# --- config, tags, log names, heartbeat -------------------------------------------------------
def test_config_update_deep_merges(srv):
    run_id = new_run(srv, config=json.dumps({"opt": {"lr": 0.1, "beta": 0.9}, "e": 1}))["runId"]
    code, answer = post(srv, "/api/runs/config/update", {
        "runId": run_id, "config": json.dumps({"opt": {"lr": 0.01}, "new": [1]})})
    assert (code, answer) == (200, {"success": True})
    assert srv.get_run(run_id)["config"] == {"opt": {"lr": 0.01, "beta": 0.9}, "e": 1, "new": [1]}
    bare = new_run(srv)["runId"]
    post(srv, "/api/runs/config/update", {"runId": bare, "config": json.dumps({"a": 1})})
    assert srv.get_run(bare)["config"] == {"a": 1}


@pytest.mark.parametrize("body, status, reason", [
    ({"runId": 1, "config": None}, 400, "config"),
    ({"runId": 1}, 400, "config"),
    ({"runId": 1, "config": "{nope"}, 400, "Invalid config JSON"),
    ({"runId": 1, "config": "[1, 2]"}, 400, "Invalid config JSON: expected an object"),
    ({"runId": 987654, "config": "{}"}, 404, "Run not found"),
])
def test_config_errors(srv, body, status, reason):
    new_run(srv)
    code, answer = post(srv, "/api/runs/config/update", body)
    assert code == status and reason in error_of(answer)


def test_tags_update_replaces(srv):
    run_id = new_run(srv, tags=["a", "b"])["runId"]
    assert post(srv, "/api/runs/tags/update", {"runId": run_id, "tags": ["c", "group:g"]})[0] == 200
    assert srv.get_run(run_id)["tags"] == ["c", "group:g"]
    assert post(srv, "/api/runs/tags/update", {"runId": run_id, "tags": []})[0] == 200
    assert srv.get_run(run_id)["tags"] == []


@pytest.mark.parametrize("body, status, reason", [
    ({"runId": 1}, 400, "tags"),
    ({"runId": 1, "tags": [1]}, 400, "tags"),
    ({"runId": 1, "tags": ["t"] * 51}, 400, "tags"),
    ({"runId": 1, "tags": ["group:a", "group:b"]}, 400, "A run can have at most one group:* tag."),
    ({"runId": 987654, "tags": []}, 404, "Run not found"),
])
def test_tags_errors(srv, body, status, reason):
    new_run(srv)
    code, answer = post(srv, "/api/runs/tags/update", body)
    assert code == status and reason in error_of(answer)


def test_log_names_are_registered_once(srv):
    run_id = new_run(srv)["runId"]
    for _ in range(2):
        code, _ = post(srv, "/api/runs/logName/add",
                       {"runId": run_id, "logName": ["train/loss", "acc"], "logType": "METRIC"})
        assert code == 200
    names = srv.get_run(run_id)["logNames"]
    assert names == [{"logName": "acc", "logType": "METRIC", "logGroup": None},
                     {"logName": "train/loss", "logType": "METRIC", "logGroup": "train"}]


@pytest.mark.parametrize("body, status, reason", [
    ({"runId": 1, "logName": ["a"]}, 400, "logType"),
    ({"runId": 1, "logName": ["a"], "logType": "PLOT"}, 400, "logType"),
    ({"runId": 1, "logName": "a", "logType": "METRIC"}, 400, "logName"),
    ({"runId": 987654, "logName": ["a"], "logType": "METRIC"}, 404, "Run not found"),
])
def test_log_name_errors(srv, body, status, reason):
    new_run(srv)
    code, answer = post(srv, "/api/runs/logName/add", body)
    assert code == status and reason in error_of(answer)


def test_heartbeat_reports_the_status(srv):
    run_id = new_run(srv)["runId"]
    assert post(srv, "/api/runs/trigger", {"runId": run_id}) == (
        200, {"success": True, "status": "RUNNING"})
    post(srv, "/api/runs/status/update", {"runId": run_id, "status": "CANCELLED"})
    assert post(srv, "/api/runs/trigger", {"runId": run_id})[1]["status"] == "CANCELLED"
    assert post(srv, "/api/runs/trigger", {"runId": 987654})[0] == 404
    assert post(srv, "/api/runs/trigger", {})[0] == 400


# --- reads ------------------------------------------------------------------------------------
def test_read_endpoints_shapes_and_errors(srv):
    run = new_run(srv, "reads-proj", tags=["x"])
    assert any(p["name"] == "reads-proj" and p["runCount"] == 1 for p in srv.projects())
    listed = srv.list_runs("reads-proj", tags="x")
    assert [r["id"] for r in listed] == [run["runId"]]
    assert srv.list_runs("reads-proj", tags="y") == []
    assert srv.list_runs("reads-proj", search="R")[0]["displayId"] == "RPR-1"
    assert srv.get_run("RPR-1", "reads-proj")["id"] == run["runId"]
    for path, params, status in [
        ("/api/runs/details/987654", None, 404),
        ("/api/runs/details/abc", None, 400),
        ("/api/runs/details/by-display-id/bad", None, 400),
        ("/api/runs/details/by-display-id/RPR-99", None, 404),
        ("/api/runs/list", {}, 400),
        ("/api/runs/metrics", {"projectName": "reads-proj"}, 400),
        ("/api/runs/metrics", {"projectName": "reads-proj", "runId": 1, "stepMin": -1}, 400),
        ("/api/runs/metric-names", {"projectName": "reads-proj", "runIds": "a,b"}, 400),
        ("/api/runs/nothing", None, 404),
    ]:
        assert srv.request("GET", path, params=params).status_code == status, path
