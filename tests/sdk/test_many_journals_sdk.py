"""SDK half of issue 8: one run written by many processes and journals, and inputs the server
refuses. DDP ranks sharing PLUTO_RUN_ID, the implicit-step warning on a resume this journal has
never seen, non-finite config values, and the server's tag limits."""

from __future__ import annotations

import json
import logging
import math
import subprocess
import time

import pytest

import pluto_offline as pluto
from pluto_offline import journal, values

from .conftest import child_env, events, metric_lines, script

# --------------------------------------------------------------------------- DDP ranks (item 1)

RANK = """
import os, sys, time
from pathlib import Path
import pluto_offline as pluto
rank, gate = sys.argv[1], Path(sys.argv[2])
while not (gate / "go").exists():          # both ranks call init() at the same moment
    time.sleep(0.005)
run = pluto.init(project="p", run_id=os.environ.get("PLUTO_RUN_ID"))
print("resumed", run.resumed, run.run_id, flush=True)
(gate / f"ready{rank}").touch()
while not all((gate / f"ready{r}").exists() for r in "01"):  # both open at once
    time.sleep(0.005)
for step in range(1, 6):
    run.log({f"rank{rank}/loss": 1.0 / step}, step=step)
"""  # the script ends: atexit finishes the run COMPLETED


def test_ddp_ranks_with_pluto_run_id_share_one_run(jdir, tmp_path):
    gate = tmp_path / "gate"
    gate.mkdir()
    env = child_env(PLUTO_DIR=str(jdir), PLUTO_RUN_ID="ddp-x")
    procs = [subprocess.Popen(script(RANK) + [str(rank), str(gate)], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for rank in (0, 1)]
    time.sleep(0.3)  # both interpreters are up and waiting at the gate
    (gate / "go").touch()
    outs = [p.communicate(timeout=60) for p in procs]
    for p, (_out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
        assert "RunExistsError" not in err
    # one rank created the run, the other attached to it
    assert sorted(out.split()[1] for out, _ in outs) == ["False", "True"]
    assert all(out.split()[2] == "ddp-x" for out, _ in outs)

    j = journal.Journal.open(jdir)
    try:
        runs = journal.all_runs(j)
        assert [(r.project, r.run_id) for r in runs] == [("p", "ddp-x")]
        ws = journal.writers(j, runs[0].key)
        assert len(ws) == 2 and {w["ended_how"] for w in ws} == {"COMPLETED"}
    finally:
        j.close()
    (create,) = events(jdir, "create")
    assert create.data()["resume"] is True  # the daemon attaches, it does not call it a conflict
    assert [e.data() for e in events(jdir, "resume")] == [{"by": "external"}]
    lines = metric_lines(jdir)
    for rank in "01":
        assert sorted(m["step"] for m in lines if f"rank{rank}/loss" in m["data"]) == [1, 2, 3,
                                                                                         4, 5]


def test_pluto_run_id_keeps_the_exemption_when_run_id_is_passed(jdir, monkeypatch):
    monkeypatch.setenv("PLUTO_RUN_ID", "shared")
    a = pluto.init(dir=jdir, project="p", run_id="shared")
    b = pluto.init(dir=jdir, project="p", run_id="shared")  # no RunExistsError
    assert (a.resumed, b.resumed, b.run_id) == (False, True, "shared")
    # as the stock SDK: the flag comes from PLUTO_RUN_ID being set, whatever run_id is passed
    c = pluto.init(dir=jdir, project="p", run_id="other")
    d = pluto.init(dir=jdir, project="p", run_id="other")
    assert d.resumed
    for run in (d, c, b, a):
        run.close()
    assert [e.data()["resume"] for e in events(jdir, "create")] == [True, True]


def test_without_pluto_run_id_a_reused_run_id_still_raises(jdir):
    pluto.init(dir=jdir, project="p", run_id="shared").close()
    with pytest.raises(pluto.RunExistsError, match="^Run with externalId 'shared' already exists"):
        pluto.init(dir=jdir, project="p", run_id="shared")


# ---------------------------------------------------------- implicit steps on resume (item 3)

RESTART = "log() without step= counts from step 1 again"


def _restart_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if RESTART in r.getMessage()]


def test_resume_of_a_run_this_journal_never_saw_warns_once(jdir, caplog):
    with caplog.at_level(logging.WARNING, logger="pluto_offline"):
        run = pluto.init(dir=jdir, project="p", run_id="slurm-run", resume=True)
        run.log({"loss": 1.0})
    (warning,) = _restart_warnings(caplog)
    assert warning == (
        "pluto_offline: run 'slurm-run' may already exist on the server (resume=True), but this "
        "journal has no record of it: log() without step= counts from step 1 again, and the "
        "server keeps one point per metric and step, so if the run was started elsewhere "
        "(another node, an earlier Slurm allocation) its points at those steps are overwritten. "
        "To continue it, pass step= explicitly (e.g. the step saved in your checkpoint + 1); "
        "later log() calls without step= count on from there.")
    # the advice works: an explicit step, then implicit ones count on from it
    run.log({"loss": 0.5}, step=41)
    run.log({"loss": 0.4})
    run.finish()
    assert [m["step"] for m in metric_lines(jdir)] == [1, 41, 42]
    assert events(jdir, "create")[0].data()["resume"] is True


def test_pluto_run_id_unknown_to_the_journal_warns(jdir, monkeypatch, caplog):
    monkeypatch.setenv("PLUTO_RUN_ID", "from-env")
    with caplog.at_level(logging.WARNING, logger="pluto_offline"):
        pluto.init(dir=jdir, project="p").finish()
    (warning,) = _restart_warnings(caplog)
    assert warning.startswith("pluto_offline: run 'from-env' may already exist on the server "
                              "(PLUTO_RUN_ID is set), but this journal has no record of it")


def test_server_id_unknown_to_the_journal_warns(jdir, caplog):
    with caplog.at_level(logging.WARNING, logger="pluto_offline"):
        pluto.init(dir=jdir, project="p", run_id=42).finish()
    (warning,) = _restart_warnings(caplog)
    assert warning.startswith("pluto_offline: run 42 is a server run this journal has no "
                              f"record of: {RESTART}")


def test_no_step_warning_for_a_new_run_or_a_run_the_journal_knows(jdir, caplog, monkeypatch):
    with caplog.at_level(logging.WARNING, logger="pluto_offline"):
        a = pluto.init(dir=jdir, project="p", run_id="known")  # brand new, no resume
        a.log({"loss": 1.0})
        a.log({"loss": 0.9})
        a.finish()
        b = pluto.init(dir=jdir, project="p", run_id="known", resume=True)  # local resume
        b.log({"loss": 0.8})
        b.finish()
        monkeypatch.setenv("PLUTO_RUN_ID", "known")  # a rank attaching to a known run
        pluto.init(dir=jdir, project="p").close()
    assert _restart_warnings(caplog) == []
    assert [m["step"] for m in metric_lines(jdir)] == [1, 2, 3]  # continued from the journal


def test_second_rank_on_one_journal_does_not_warn_again(jdir, monkeypatch, caplog):
    monkeypatch.setenv("PLUTO_RUN_ID", "ddp")
    with caplog.at_level(logging.WARNING, logger="pluto_offline"):
        a = pluto.init(dir=jdir, project="p")
        b = pluto.init(dir=jdir, project="p")
    assert len(_restart_warnings(caplog)) == 1
    b.close()
    a.finish()


# ------------------------------------------------------------- non-finite config (item 5)

@pytest.fixture
def fresh_warnings(monkeypatch):
    """The non-finite warning is once per key path per process: start each test afresh."""
    monkeypatch.setattr(values, "_warned_non_finite", set())


def _strict(text: str) -> object:
    """Parse as the server's JSON.parse does: bare NaN / Infinity tokens are an error."""
    def refuse(token: str) -> None:
        raise AssertionError(f"bare {token} in journaled JSON: {text}")
    return json.loads(text, parse_constant=refuse)


NON_FINITE = "which the Pluto server cannot parse in a config"


def test_non_finite_config_is_journaled_as_strings_with_one_warning_each(
        jdir, caplog, fresh_warnings):
    config = {"lr": float("nan"), "sched": {"max": float("inf"), "steps": [1, float("-inf")]},
              "pair": (2.5, float("nan")), "ok": 0.1}
    with caplog.at_level(logging.WARNING, logger="pluto_offline"):
        run = pluto.init(dir=jdir, project="p", config=config)
    expected = {"lr": "NaN", "sched": {"max": "Infinity", "steps": [1, "-Infinity"]},
                "pair": [2.5, "NaN"], "ok": 0.1}
    assert run.config == expected  # the run holds what the journal holds
    warnings = [r.getMessage() for r in caplog.records if NON_FINITE in r.getMessage()]
    assert warnings == [
        "pluto_offline: config['lr'] is NaN, which the Pluto server cannot parse in a config "
        "(bare NaN/Infinity is not JSON); journaled as the string 'NaN', which run.config "
        "holds too",
        "pluto_offline: config['sched']['max'] is Infinity, which the Pluto server cannot parse "
        "in a config (bare NaN/Infinity is not JSON); journaled as the string 'Infinity', "
        "which run.config holds too",
        "pluto_offline: config['sched']['steps'][1] is -Infinity, which the Pluto server cannot "
        "parse in a config (bare NaN/Infinity is not JSON); journaled as the string "
        "'-Infinity', which run.config holds too",
        "pluto_offline: config['pair'][1] is NaN, which the Pluto server cannot parse in a "
        "config (bare NaN/Infinity is not JSON); journaled as the string 'NaN', which "
        "run.config holds too",
    ]
    run.log({"loss": float("nan"), "grad": float("inf")})  # metrics keep non-finite values
    run.finish()
    (create,) = events(jdir, "create")
    assert _strict(create.payload)["config"] == expected
    j = journal.Journal.open(jdir)
    try:
        assert journal.all_runs(j)[0].config == expected
    finally:
        j.close()
    (line,) = metric_lines(jdir)
    assert math.isnan(line["data"]["loss"]) and line["data"]["grad"] == math.inf
    assert "NaN" in journal.metrics_ndjson(events(jdir, "metrics")[0].payload)


def test_non_finite_update_config_is_journaled_as_strings_warned_once_per_key(
        jdir, caplog, fresh_warnings):
    run = pluto.init(dir=jdir, project="p", config={"a": {"b": 1}})
    with caplog.at_level(logging.WARNING, logger="pluto_offline"):
        run.update_config({"a": {"c": float("-inf")}, "np": float("nan")})
        run.update_config({"np": float("nan")})  # the same key path again: no new warning
    assert run.config == {"a": {"b": 1, "c": "-Infinity"}, "np": "NaN"}
    warnings = [r.getMessage() for r in caplog.records if NON_FINITE in r.getMessage()]
    assert [w.split(" is ")[0] for w in warnings] == ["pluto_offline: config['a']['c']",
                                                      "pluto_offline: config['np']"]
    run.finish()
    deltas = [_strict(e.payload) for e in events(jdir, "config")]
    assert deltas == [{"a": {"c": "-Infinity"}, "np": "NaN"}, {"np": "NaN"}]
    j = journal.Journal.open(jdir)
    try:
        assert journal.all_runs(j)[0].config == run.config
    finally:
        j.close()


def test_non_finite_top_level_config_and_settings(jdir, caplog, fresh_warnings):
    with caplog.at_level(logging.WARNING, logger="pluto_offline"):
        run = pluto.init(dir=jdir, project="p", config=float("inf"), settings={"x": math.nan})
    assert run.config == "Infinity"
    run.finish()
    payload = _strict(events(jdir, "create")[0].payload)
    assert (payload["config"], payload["settings"]) == ("Infinity", {"x": "NaN"})
    assert "pluto_offline: config is Infinity" in caplog.text
    assert "pluto_offline: settings['x'] is NaN" in caplog.text


def test_a_config_cycle_is_still_refused(jdir):
    loop: dict = {}
    loop["self"] = loop
    with pytest.raises(ValueError, match="^config cannot be journaled: it refers to itself"):
        pluto.init(dir=jdir, project="p", config=loop)


# ------------------------------------------------------------------- tag limits (item 6)

def test_init_refuses_more_than_50_tags_before_journaling(jdir):
    with pytest.raises(ValueError) as err:
        pluto.init(dir=jdir, project="p", tags=[f"t{i}" for i in range(51)])
    assert str(err.value) == ("init(tags=...): a run can have at most 50 tags (the Pluto "
                              "server's limit), this would give it 51; pass at most 50 tags")
    assert not jdir.exists()  # checked before the journal is even opened
    # duplicates do not count: 51 names, 50 tags
    run = pluto.init(dir=jdir, project="p", tags=[f"t{i}" for i in range(50)] + ["t0"])
    assert len(run.tags) == values.MAX_TAGS
    run.finish()


def test_init_refuses_two_group_tags(jdir):
    with pytest.raises(ValueError) as err:
        pluto.init(dir=jdir, project="p", tags=["group:a", "x", "group:b"])
    assert str(err.value) == ("init(tags=...): a run can have at most one 'group:' tag (the "
                              "Pluto server's limit), this would give it 2: 'group:a', "
                              "'group:b'; pass only one group: tag")
    assert not jdir.exists()
    run = pluto.init(dir=jdir, project="p", tags=["group:a", "x"])  # one is fine
    run.finish()
    assert events(jdir, "create")[0].data()["tags"] == ["group:a", "x"]


def test_add_tags_refuses_the_51st_tag(jdir):
    run = pluto.init(dir=jdir, project="p", tags=[f"t{i}" for i in range(49)])
    run.add_tags("t49")  # the 50th
    with pytest.raises(ValueError) as err:
        run.add_tags(["t50", "t0"])
    assert str(err.value) == ("add_tags(): a run can have at most 50 tags (the Pluto server's "
                              "limit), this would give it 51; the run has 50 already: "
                              "remove_tags() some first, or add fewer")
    assert len(run.tags) == 50
    run.remove_tags("t0")
    run.add_tags("t50")
    run.finish()
    tag_events = [e.data() for e in events(jdir, "tags")]
    assert [len(t) for t in tag_events] == [50, 49, 50]  # the refused call journaled nothing


def test_add_tags_refuses_a_second_group_tag(jdir):
    run = pluto.init(dir=jdir, project="p", tags=["group:a"])
    with pytest.raises(ValueError) as err:
        run.add_tags("group:b")
    assert str(err.value) == ("add_tags(): a run can have at most one 'group:' tag (the Pluto "
                              "server's limit), this would give it 2: 'group:a', 'group:b'; "
                              "remove_tags('group:a') first to change the run's group")
    assert run.tags == ["group:a"]
    run.remove_tags("group:a")
    run.add_tags("group:b")
    run.finish()
    assert [e.data() for e in events(jdir, "tags")] == [[], ["group:b"]]


def test_add_tags_refuses_two_group_tags_at_once(jdir):
    run = pluto.init(dir=jdir, project="p")
    with pytest.raises(ValueError, match="this would give it 2: 'group:a', 'group:b'; add only "
                                         "one group: tag$"):
        run.add_tags(["group:a", "group:b"])
    run.finish()
    assert events(jdir, "tags") == []


def test_fork_inheriting_tags_is_checked_against_the_limits(jdir):
    parent = pluto.init(dir=jdir, project="p", run_id="par",
                        tags=["group:base"] + [f"p{i}" for i in range(29)])
    parent.finish()
    with pytest.raises(ValueError) as err:
        pluto.init(dir=jdir, project="p", fork_run_id="par", fork_step=1, inherit_tags=True,
                   tags=[f"c{i}" for i in range(21)])
    assert str(err.value) == (
        "init(inherit_tags=True): a run can have at most 50 tags (the Pluto server's limit), "
        "this would give it 51; the fork parent's 30 tags count too: pass fewer tags, or "
        "inherit_tags=False")
    with pytest.raises(ValueError) as err:
        pluto.init(dir=jdir, project="p", fork_run_id="par", fork_step=1, inherit_tags=True,
                   tags=["group:tuned"])
    assert str(err.value) == (
        "init(inherit_tags=True): a run can have at most one 'group:' tag (the Pluto server's "
        "limit), this would give it 2: 'group:base', 'group:tuned'; the fork parent's tags "
        "count too: pass no group: tag of your own, or inherit_tags=False")
    assert len(events(jdir, "create")) == 1  # the refused forks journaled nothing
    assert not list((jdir / "spill").iterdir())
    child = pluto.init(dir=jdir, project="p", fork_run_id="par", fork_step=1,
                       tags=["group:tuned"])  # without inherit_tags: one group tag each
    child.finish()
    assert events(jdir, "create")[1].data()["tags"] == ["group:tuned"]
