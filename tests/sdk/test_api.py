"""init() validation, run identity, log() rules and state changes, in this process."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest

import pluto_offline as pluto
from pluto_offline import journal
from pluto_offline.ids import RunRef, classify_run_id

from .conftest import events, metric_lines


def test_fork_params_must_come_together(jdir):
    with pytest.raises(ValueError, match="^fork_run_id and fork_step must be provided together$"):
        pluto.init(dir=jdir, fork_run_id=3)
    with pytest.raises(ValueError, match="^fork_run_id and fork_step must be provided together$"):
        pluto.init(dir=jdir, fork_step=3)
    assert not jdir.exists()  # checked before anything else


def test_bad_fork_run_id_is_named(jdir):
    with pytest.raises(ValueError) as err:
        pluto.init(dir=jdir, fork_run_id="nope", fork_step=1)
    assert str(err.value) == ('fork_run_id must be a numeric run ID, a display ID (e.g. "T0-123") '
                              "or the run_id of a run in this journal, got: 'nope'")
    with pytest.raises(ValueError, match="got: 1.5"):
        pluto.init(dir=jdir, fork_run_id=1.5, fork_step=1)


def test_name_and_project_types(jdir):
    with pytest.raises(TypeError, match="^name must be a str, got int$"):
        pluto.init(dir=jdir, name=5)
    run = pluto.init(dir=jdir, project="caf\u00e9", name="n\u00e4me")
    # a project keeps printable ASCII (an HTTP header), a name any printable character
    assert run.project.startswith("caf-~") and run.name == "n\u00e4me"
    run.finish()


@pytest.mark.parametrize("value, ref", [
    (42, RunRef("id", "42")), ("42", RunRef("id", "42")), ("MMP-7", RunRef("display", "MMP-7")),
    ("2024-1", RunRef("display", "2024-1")), ("mmp-7", RunRef("external", "mmp-7")),
    ("exp-a", RunRef("external", "exp-a")),
])
def test_run_id_classification(value, ref):
    assert classify_run_id(value) == ref


def test_new_run_gets_an_unguessable_run_id_and_create_event(jdir, monkeypatch):
    monkeypatch.delenv("PLUTO_DISABLE_SYSTEM_METRICS", raising=False)  # the default: on
    run = pluto.init(dir=jdir, project="p", name="n", config={"a": (1, 2), 3: "x"},
                     tags="t1", settings={"k": 1})
    assert len(run.run_id) >= 22 and run.id is None and run.display_id is None and run.url is None
    assert run.config == {"a": [1, 2], "3": "x"} and run.tags == ["t1"]
    run.finish()
    create = events(jdir)[0]
    assert create.kind == "create"
    payload = create.data()
    system, logger = payload.pop("system"), payload.pop("logger")  # issue 10: host facts
    assert payload == {"name": "n", "config": {"a": [1, 2], "3": "x"}, "tags": ["t1"],
                       "settings": {"k": 1}, "fork": None, "resume": False, "resume_asked": False,
                       "chosen": False}
    assert system["process"]["pid"] > 0 and logger["k"] == 1
    row = journal.find_run(journal.Journal.open(jdir), project="p", run_id=run.run_id)
    assert row.created_at == create.time


def test_env_vars(jdir, monkeypatch):
    monkeypatch.setenv("PLUTO_DIR", str(jdir))
    monkeypatch.setenv("PLUTO_PROJECT", "envproj")
    monkeypatch.setenv("PLUTO_RUN_ID", "shared")
    a = pluto.init()
    b = pluto.init()  # from PLUTO_RUN_ID: resumes without resume=True
    assert (a.project, a.run_id, b.run_id, b.resumed) == ("envproj", "shared", "shared", True)
    b.close()
    a.finish()
    assert (jdir / "journal.db").exists()


def test_reused_external_id_needs_resume(jdir):
    pluto.init(dir=jdir, project="p", run_id="exp").finish()
    with pytest.raises(pluto.RunExistsError) as err:
        pluto.init(dir=jdir, project="p", run_id="exp")
    assert str(err.value).startswith("Run with externalId 'exp' already exists.")
    assert isinstance(err.value, RuntimeError)
    assert not list((jdir / "spill").iterdir())  # the failed init left nothing behind


def test_local_resume_continues_steps_config_and_tags(jdir):
    a = pluto.init(dir=jdir, project="p", run_id="exp", config={"a": 1}, tags=["x"])
    for i in range(5):
        a.log({"loss": float(i)})
    a.update_config({"b": 2})
    a.finish()
    b = pluto.init(dir=jdir, project="p", run_id="exp", resume=True, config={"c": 3})
    assert b.resumed and b.step == 5 and b.tags == ["x"]
    assert b.config == {"a": 1, "b": 2, "c": 3}
    b.log({"loss": 9.0})
    b.finish()
    kinds = [e.kind for e in events(jdir)]
    assert kinds == ["create", "lognames", "metrics", "config", "status", "resume", "config",
                     "metrics", "status"]
    assert events(jdir, "resume")[0].data() == {"by": "external"}
    assert [m["step"] for m in metric_lines(jdir)] == [1, 2, 3, 4, 5, 6]
    assert len(events(jdir, "lognames")) == 1  # 'loss' registered once across processes


@pytest.mark.parametrize("ref, kind", [(42, "id"), ("MMP-42", "display")])
def test_unknown_server_ref_is_journaled_for_the_daemon(jdir, ref, kind):
    run = pluto.init(dir=jdir, project="p", run_id=ref)
    assert run.resumed and run.run_id == str(ref)
    run.finish()
    j = journal.Journal.open(jdir)
    row = journal.find_run(j, project="p", run_id=str(ref), ref_kind=kind)
    assert row is not None
    assert [(e.kind, e.data()) for e in events(jdir)][0] == ("resume", {"by": kind})


def test_known_server_ref_resumes_the_local_run(jdir):
    a = pluto.init(dir=jdir, project="p", run_id="exp")
    a.log({"x": 1.0})
    a.finish()
    j = journal.Journal.open(jdir)
    key = journal.find_run(j, project="p", run_id="exp").key
    journal.ack(j, key, 0, server_id=77, display_id="P-3", url="http://x/3")
    b = pluto.init(dir=jdir, project="p", run_id="P-3")
    assert (b.run_id, b.id, b.display_id, b.url, b.step) == ("exp", 77, "P-3", "http://x/3", 1)
    b.finish()


def test_fork_of_a_local_parent_inherits_config(jdir):
    parent = pluto.init(dir=jdir, project="p", run_id="par", config={"a": {"b": 1, "c": 2}, "x": 1})
    parent.finish()
    child = pluto.init(dir=jdir, project="p", fork_run_id="par", fork_step=3,
                       config={"a": {"c": 9}})
    assert child.config == {"a": {"b": 1, "c": 9}, "x": 1}
    child.finish()
    create = events(jdir, "create")[1].data()
    assert create["fork"] == {"parent": {"key": 1}, "step": 3, "inherit_config": True,
                              "inherit_tags": False}
    assert create["config"] == {"a": {"b": 1, "c": 9}, "x": 1}


def test_fork_of_a_local_parent_inherits_tags_when_asked(jdir):
    parent = pluto.init(dir=jdir, project="p", run_id="par", tags=["base", "shared"])
    parent.finish()
    child = pluto.init(dir=jdir, project="p", fork_run_id="par", fork_step=0,
                       tags=["shared", "tuned"], inherit_tags=True)
    assert child.tags == ["base", "shared", "tuned"]  # the server's order: parent's first
    child.finish()
    assert events(jdir, "create")[1].data()["tags"] == ["base", "shared", "tuned"]
    plain = pluto.init(dir=jdir, project="p", fork_run_id="par", fork_step=0, tags=["x"])
    assert plain.tags == ["x"]  # inherit_tags defaults to False, as in the stock SDK
    plain.finish()


def test_fork_of_a_server_run(jdir):
    run = pluto.init(dir=jdir, project="p", fork_run_id="T0-12", fork_step=4,
                     inherit_config=False, inherit_tags=True)
    assert (run.fork_run_id, run.fork_step) == ("T0-12", 4)
    run.finish()
    assert events(jdir, "create")[0].data()["fork"] == {
        "parent": {"display_id": "T0-12"}, "step": 4, "inherit_config": False,
        "inherit_tags": True}


def test_log_values_and_steps(jdir, caplog):
    run = pluto.init(dir=jdir, project="p")
    with caplog.at_level(logging.WARNING, logger="pluto_offline"):
        run.log({"a": 1.5, "b": 2})                      # step 1
        run.log({"a": float("nan"), "b": float("inf"), "c": -math.inf})  # step 2
        run.log({"a": np.float32(0.5), "n": np.int64(3), "l": [1.0, 2.0]}, step=10)
        run.log({})                                      # step 11: nothing to send
        run.log({"s": "warmup", "flag": True, "d": {"x": 1}, "none": None}, step=20)
        run.log({"flag": False, "s": "x" * 201})         # step 21: warned once only
    assert run.step == 21
    warnings = [r.getMessage() for r in caplog.records]
    assert len([w for w in warnings if "'flag'" in w]) == 1
    assert any("'d' dropped" in w for w in warnings) and any("'none' dropped" in w for w in warnings)
    assert any("'s' dropped: a string of 201 chars" in w for w in warnings)
    run.finish()
    lines = metric_lines(jdir)
    assert [(m["step"], m["data"]) for m in lines[:1]] == [(1, {"a": 1.5, "b": 2})]
    assert math.isnan(lines[1]["data"]["a"]) and lines[1]["data"]["b"] == math.inf
    assert lines[1]["data"]["c"] == -math.inf
    assert lines[2] == {"time": lines[2]["time"], "step": 10, "data": {"a": 0.5, "n": 3, "l": 2.0}}
    assert len(lines) == 3
    raw = journal.metrics_ndjson(events(jdir, "metrics")[0].payload)
    assert "NaN" in raw and "-Infinity" in raw
    data = [json.loads(x) for e in events(jdir, "data") for x in e.payload.split("\n")]
    assert data == [{"time": data[0]["time"], "data": "warmup", "dataType": "string-series",
                     "logName": "s", "step": 20}]
    names = [e.data() for e in events(jdir, "lognames")]
    assert {"type": "DATA", "names": ["s"]} in names
    assert sorted(n for p in names if p["type"] == "METRIC" for n in p["names"]) == [
        "a", "b", "c", "l", "n"]


def test_lognames_come_before_first_use(jdir):
    run = pluto.init(dir=jdir, project="p")
    run.log({"a": 1.0})
    run.flush()
    run.log({"a": 2.0, "b": 3.0})
    run.finish()
    seen: set[str] = set()
    for e in events(jdir):
        if e.kind == "lognames":
            seen.update(e.data()["names"])
        elif e.kind == "metrics":
            for line in journal.metrics_ndjson(e.payload).split("\n"):
                assert set(json.loads(line)["data"]) <= seen


def test_log_argument_errors(jdir, caplog):
    run = pluto.init(dir=jdir, project="p")
    with pytest.raises(ValueError, match="^unsupported type for logged data: list, expected dict$"):
        run.log([1, 2])
    with pytest.raises(ValueError, match="^unsupported type for key in dict of logged data$"):
        run.log({1: 2.0})
    with pytest.raises(TypeError, match="^step must be an int, got str$"):
        run.log({"a": 1.0}, step="3")
    with pytest.raises(ValueError, match="^step must be >= 0, got -1$"):
        run.log({"a": 1.0}, step=-1)
    with caplog.at_level(logging.WARNING, logger="pluto_offline"):
        run.log({"a": 1.0}, timestamp=-5)
        run.log({"a": 1.0}, timestamp=1700000000.25)
    assert "ignoring invalid timestamp -5" in caplog.text
    run.finish()
    assert metric_lines(jdir)[-1]["time"] == 1700000000250


def test_state_changes_are_journaled_in_call_order(jdir):
    run = pluto.init(dir=jdir, project="p", config={"a": {"b": 1, "c": 2}, "x": 1}, tags=["t"])
    run.log({"m": 1.0})
    run.update_config({"a": {"c": 3, "d": 4}, "y": 2})
    run.update_config({})  # an empty delta is not journaled
    run.log({"m": 2.0})
    run.add_tags(["u", "t"])
    run.remove_tags("t")
    run.close()
    assert run.config == {"a": {"b": 1, "c": 3, "d": 4}, "x": 1, "y": 2}
    got = [(e.kind, e.data() if e.kind not in ("metrics",) else e.step) for e in events(jdir)]
    assert got == [("create", got[0][1]), ("lognames", {"type": "METRIC", "names": ["m"]}),
                   ("metrics", 1), ("config", {"a": {"c": 3, "d": 4}, "y": 2}), ("metrics", 2),
                   ("tags", ["t", "u"]), ("tags", ["u"]), ("close", None)]
    row = journal.all_runs(journal.Journal.open(jdir))[0]
    assert row.config == run.config and row.tags == ["u"]


def test_after_finish_calls_are_ignored_with_a_warning(jdir, caplog):
    run = pluto.init(dir=jdir, project="p")
    run.close()
    run.finish()  # finish after close: a no-op
    with caplog.at_level(logging.WARNING, logger="pluto_offline"):
        run.log({"a": 1.0})
        run.update_config({"a": 1})
        run.add_tags("x")
    assert "log() ignored" in caplog.text and "update_config() ignored" in caplog.text
    assert [e.kind for e in events(jdir)] == ["create", "close"]
    assert journal.writers(journal.Journal.open(jdir))[0]["ended_how"] == "closed"


def test_finish_codes_and_thread_safety(jdir):
    import threading

    run = pluto.init(dir=jdir, project="p")
    threads = [threading.Thread(target=run.finish, args=(1,)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [e.data() for e in events(jdir, "status")] == [
        {"status": "FAILED", "metadata": {"exit_code": 1}}]


def test_module_level_functions(jdir):
    a = pluto.init(dir=jdir, project="p", run_id="a")
    b = pluto.init(dir=jdir, project="p", run_id="b")
    assert pluto.ops == [a, b]
    pluto.log({"x": 1.0})  # the latest run
    pluto.finish()
    assert pluto.ops == []
    assert [e.run for e in events(jdir, "metrics")] == [2]
    assert len(events(jdir, "status")) == 2
    with pytest.raises(RuntimeError, match="before pluto_offline.init"):
        pluto.log({"x": 1.0})


def test_run_ids_from_the_daemon_are_read_from_the_journal(jdir):
    run = pluto.init(dir=jdir, project="p")
    assert run.id is None
    j = journal.Journal.open(jdir)
    journal.ack(j, 1, 1, server_id=5, display_id="P-5", url="http://app/p/5")
    assert (run.id, run.display_id, run.url) == (5, "P-5", "http://app/p/5")
    run.finish()
