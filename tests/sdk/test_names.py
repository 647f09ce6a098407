"""Names in any script, and names that cannot be shown (issue 12 item 15).

The stock SDK turns every character outside printable ASCII into ``-``, so ``loss_α`` and
``loss_β`` became one series ``loss_-`` and a run named ``训练-基线`` became ``-----``,
silently. pluto_offline keeps printable names as given (the Pluto server stores them as UTF-8
and its ingest takes any non-empty metric name); a name with unprintable characters gets a name
of its own (``-`` for each such character, then ``~`` and 6 hex digits of its SHA-256) and one
warning saying what it became. Checked on the local server after a real delivery.
"""

from __future__ import annotations

import subprocess
import sys

from pluto_offline import journal
from pluto_offline.ids import clean_chars, clean_project

from .conftest import child_env, run_child


def deliver(server, jdir) -> None:
    r = subprocess.run([sys.executable, "-m", "syncd", "push", str(jdir)], capture_output=True,
                       text=True, timeout=60, env=child_env(**server.env()))
    assert r.returncode == 0, r.stdout + r.stderr


def server_run(server, jdir, project: str, run_id: str) -> dict:
    with journal.Journal.open(jdir) as j:
        row = journal.find_run(j, project=project, run_id=run_id)
    assert row is not None and row.server_id, f"{run_id} not delivered"
    return server.get_run(row.server_id)


def values(server, run: dict, project: str, name: str) -> list[tuple[int, float]]:
    return [(p["step"], p["value"]) for p in server.metrics(run["id"], project, name)]


def test_non_ascii_keys_and_names_stay_apart_and_as_given(jdir, pluto_server):
    code = """
import sys, pluto_offline as pluto
run = pluto.init(dir=sys.argv[1], project="proj", name="训练-基线", run_id="cn",
                 settings={"autostart": False})
for s in range(1, 4):
    run.log({"loss_α": 1.0 * s, "loss_β": 2.0 * s})
run.log({"loss_α": 10.0}, step=4)                 # separate calls: still two curves
run.log({"loss_β": 20.0}, step=4)
run.log({"阶段": "热身", "準確率": 0.5}, step=5)   # a string series and a metric
run.finish()
"""
    r = run_child(code, str(jdir))
    assert r.returncode == 0, r.stderr
    assert "journaled as" not in r.stderr  # nothing was rewritten: no warning
    deliver(pluto_server, jdir)
    run = server_run(pluto_server, jdir, "proj", "cn")
    assert run["name"] == "训练-基线"
    assert values(pluto_server, run, "proj", "loss_α") == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 10.0)]
    assert values(pluto_server, run, "proj", "loss_β") == [(1, 2.0), (2, 4.0), (3, 6.0), (4, 20.0)]
    assert values(pluto_server, run, "proj", "準確率") == [(5, 0.5)]
    assert {"loss_α", "loss_β", "準確率"} <= set(pluto_server.metric_names("proj", run["id"]))


def test_unprintable_names_get_distinct_names_with_one_warning_each(jdir, pluto_server):
    code = """
import sys, pluto_offline as pluto
run = pluto.init(dir=sys.argv[1], project="proj", name="tab\\there", run_id="ctl",
                 settings={"autostart": False})
for s in range(1, 4):
    run.log({"acc\\n": 0.1 * s, "acc\\r": 0.2 * s, "  ": 7.0})
run.finish()
other = pluto.init(dir=sys.argv[1], project="实验", run_id="p", settings={"autostart": False})
other.log({"x": 1.0})
other.finish()
"""
    r = run_child(code, str(jdir))
    assert r.returncode == 0, r.stderr
    lf, cr, blank = clean_chars("acc\n"), clean_chars("acc\r"), clean_chars("  ")
    assert lf != cr and lf.startswith("acc-~") and cr.startswith("acc-~")
    # one warning per rewritten key or name, saying what it became
    for given, became in (("acc\n", lf), ("acc\r", cr)):
        line = (f"pluto_offline: log(): key {given!r} has characters that cannot be shown "
                "(control characters, line breaks or non-ASCII spaces): journaled as "
                f"{became!r}, a name of its own (no two names share one)")
        assert r.stderr.count(line) == 1, r.stderr
    assert r.stderr.count(f"pluto_offline: log(): key '  ' is blank: journaled as {blank!r}") == 1
    name = clean_chars("tab\there")
    assert r.stderr.count("init(name=...): 'tab\\there' has characters that cannot be shown"
                          ) == 1
    # a project is sent in an HTTP header, which takes printable ASCII only
    project = clean_project("实验")
    assert project.startswith("--~")
    assert r.stderr.count(f"init(project=...): '实验' has characters outside printable ASCII, "
                          "which a project name cannot hold (it is sent in an HTTP header): "
                          f"journaled as {project!r}") == 1
    deliver(pluto_server, jdir)
    assert values(pluto_server, server_run(pluto_server, jdir, project, "p"), project, "x") \
        == [(1, 1.0)]
    run = server_run(pluto_server, jdir, "proj", "ctl")
    assert run["name"] == name == "tab-here~" + name.split("~")[1]
    assert [v for _, v in values(pluto_server, run, "proj", lf)] == [0.1, 0.2, 0.30000000000000004]
    assert [v for _, v in values(pluto_server, run, "proj", cr)] == [0.2, 0.4, 0.6000000000000001]
    assert [v for _, v in values(pluto_server, run, "proj", blank)] == [7.0, 7.0, 7.0]
