"""The stock Pluto client (pluto-ml 0.0.29), unchanged, against ``plutosync serve``.

Writes go through ``pluto.init``/``log``/``finish`` in a child process; reads go through
``pluto.query`` in this process: two independent clients agreeing on what was stored.
"""

from __future__ import annotations

import pluto.query as pq
import pytest

from tests.fixtures.server import LocalServer
from tests.server.stock import run_pluto

PROJECT = "stock-client"
METRICS = ("train/loss", "train/acc", "val/loss", "lr")


def expected(name: str, step: int) -> float:
    return {"train/loss": 1.0 / (step + 1), "train/acc": step / 1000,
            "val/loss": 2.0 / (step + 1), "lr": 0.1}[name]


def points_of(got) -> list[dict]:
    """``get_metrics``'s answer as records: a DataFrame when pandas is installed (the stock
    client's documented behaviour), else a list of dicts."""
    return got.to_dict("records") if hasattr(got, "to_dict") else list(got)


@pytest.fixture
def query(pluto_server: LocalServer) -> pq.Client:
    client = pq.Client(api_token=pluto_server.api_key, host=pluto_server.url)
    yield client
    client.close()


def test_full_run_lands_completed_with_every_point(pluto_server, query, tmp_path):
    out, _ = run_pluto(pluto_server, tmp_path, """
        run = pluto.init(project="stock-client", name="main", run_id="ext-main",
                         config={"lr": 0.1, "model": {"depth": 3}}, tags=["a"], settings=SETTINGS)
        for s in range(1000):
            run.log({"train/loss": 1.0 / (s + 1), "train/acc": s / 1000,
                     "val/loss": 2.0 / (s + 1), "lr": 0.1}, step=s)
        run.update_config({"model": {"width": 64}, "epochs": 5})
        run.add_tags(["b", "group:x"])
        emit({"id": run.id, "display_id": run.settings._display_id})
        run.finish()
    """)
    assert out["display_id"] == "SCL-1"
    run = query.get_run(PROJECT, "SCL-1")
    assert run["id"] == out["id"]
    assert run["status"] == "COMPLETED"
    assert run["config"] == {"lr": 0.1, "model": {"depth": 3, "width": 64}, "epochs": 5}
    assert sorted(run["tags"]) == ["a", "b", "group:x"]
    assert run["externalId"] == "ext-main"
    assert sorted(query.get_metric_names(PROJECT, run_ids=[run["id"]])) == sorted(METRICS)
    points = points_of(query.get_metrics(PROJECT, "SCL-1", metric_names=list(METRICS)))
    assert len(points) == 4000
    for point in points:
        assert point["value"] == pytest.approx(expected(point["metric"], point["step"]))
    assert {(p["metric"], p["step"]) for p in points} == {
        (m, s) for m in METRICS for s in range(1000)}
    assert [r["displayId"] for r in query.list_runs(PROJECT)] == ["SCL-1"]
    assert pluto_server.metric_counts(run["id"])["stored"] == 4000


def test_resume_by_display_id_appends_and_completes(pluto_server, query, tmp_path):
    run_pluto(pluto_server, tmp_path, """
        run = pluto.init(project="stock-client", name="first", settings=SETTINGS)
        for s in range(10):
            run.log({"loss": float(s)}, step=s)
        run.finish()
    """)
    out, _ = run_pluto(pluto_server, tmp_path, """
        run = pluto.init(project="stock-client", run_id="SCL-1", settings=SETTINGS)
        emit({"resumed": run.resumed, "id": run.id})
        for s in range(10, 20):
            run.log({"loss": float(s)}, step=s)
        run.finish()
    """)
    assert out["resumed"] is True
    run = query.get_run(PROJECT, out["id"])
    assert run["status"] == "COMPLETED" and run["name"] == "first"
    points = points_of(query.get_metrics(PROJECT, out["id"], metric_names=["loss"]))
    assert [p["step"] for p in points] == list(range(20))


def test_fork_inherits_config_and_tags(pluto_server, query, tmp_path):
    out, _ = run_pluto(pluto_server, tmp_path, """
        parent = pluto.init(project="stock-client", name="parent", tags=["base"],
                            config={"lr": 0.1, "opt": {"name": "adam", "beta": 0.9}},
                            settings=SETTINGS)
        for s in range(100):
            parent.log({"loss": 1.0 / (s + 1)}, step=s)
        parent.finish()
        child = pluto.init(project="stock-client", name="child", fork_run_id=parent.id,
                           fork_step=50, inherit_tags=True, tags=["tuned"],
                           config={"lr": 0.01, "opt": {"beta": 0.95}}, settings=SETTINGS)
        for s in range(51, 60):
            child.log({"loss": 0.5}, step=s)
        emit({"parent": parent.id, "child": child.id, "forked_from": child._fork_run_id,
              "fork_step": child._fork_step})
        child.finish()
    """)
    assert out["forked_from"] == out["parent"] and out["fork_step"] == 50
    child = query.get_run(PROJECT, out["child"])
    assert child["forkedFromRunId"] == out["parent"] and child["forkStep"] == 50
    assert child["config"] == {"lr": 0.01, "opt": {"name": "adam", "beta": 0.95}}
    assert sorted(child["tags"]) == ["base", "tuned"]
    # Fork children keep only their own points; the parent's are not copied.
    assert [p["step"] for p in points_of(query.get_metrics(PROJECT, out["child"]))] == \
        list(range(51, 60))


def test_close_leaves_the_run_running(pluto_server, query, tmp_path):
    out, _ = run_pluto(pluto_server, tmp_path, """
        run = pluto.init(project="stock-client", name="eval", settings=SETTINGS)
        run.log({"acc": 0.9}, step=1)
        emit({"id": run.id})
        run.close()
    """)
    assert query.get_run(PROJECT, out["id"])["status"] == "RUNNING"
    assert len(points_of(query.get_metrics(PROJECT, out["id"]))) == 1


def test_external_id_collision_needs_resume(pluto_server, query, tmp_path):
    script = """
        run = pluto.init(project="stock-client", name="ddp", run_id="shared", settings=SETTINGS,
                         resume={resume})
        emit({{"id": run.id, "resumed": run.resumed}})
        run.finish()
    """
    first, _ = run_pluto(pluto_server, tmp_path, script.format(resume=False))
    assert first["resumed"] is False
    refused, stderr = run_pluto(pluto_server, tmp_path, script.format(resume=False),
                                expect_ok=False)
    assert refused["returncode"] != 0 and "already exists" in stderr
    again, _ = run_pluto(pluto_server, tmp_path, script.format(resume=True))
    assert again == {"id": first["id"], "resumed": True, "returncode": 0}
    assert [r["id"] for r in query.list_runs(PROJECT)] == [first["id"]]
    assert query.get_run(PROJECT, first["id"])["status"] == "COMPLETED"


def test_bad_api_key_is_refused(pluto_server, tmp_path):
    out, stderr = run_pluto(pluto_server, tmp_path, """
        run = pluto.init(project="stock-client", name="nope", settings=SETTINGS)
    """, api_key="plt_wrong", expect_ok=False)
    assert out["returncode"] != 0
    assert "401" in stderr
    assert pluto_server.projects() == []
    with pytest.raises(pq.QueryError) as info:
        pq.Client(api_token="plt_wrong", host=pluto_server.url).list_projects()
    assert info.value.status_code == 401
