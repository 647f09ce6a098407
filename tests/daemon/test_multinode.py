"""Several nodes, one run: each node journals locally and its own daemon delivers.

Ranks of a multi-node job share ``PLUTO_RUN_ID`` but not a journal; every node after the first
finds the run already on the server, which is intended, not a conflict.
"""

from __future__ import annotations

from tests.daemon.test_sdk_jobs import drain, finished, job, server_run, steps

NODE = """
    rank = int(os.environ["RANK"])
    run = pluto.init(name="ddp", config={f"rank{rank}": True})
    gate = pathlib.Path(os.environ["GATE"])
    (gate / f"init{rank}").write_text("")
    for i in range(50):
        run.log({f"rank{rank}/loss": float(i)}, step=i)
    while len(list(gate.glob("init*"))) < 3:  # every node attached while the run was live
        time.sleep(0.02)
    if rank == 0 or os.environ.get("ALL_FINISH"):
        run.finish()
    else:
        run.close()
"""


def deliver_nodes(tmp_path, pluto_server, **env: str) -> dict:
    dirs = [tmp_path / f"node{r}" for r in range(3)]
    gate = tmp_path / "gate"
    gate.mkdir()
    procs = [job(d, NODE, PLUTO_RUN_ID="ddp-job-7", RANK=str(r), GATE=str(gate), **env)
             for r, d in enumerate(dirs)]
    for p in procs:
        assert finished(p) == 0
    for d in dirs:  # node 0 first, so the others find the run on the server
        drain(pluto_server, d)
    runs = pluto_server.list_runs("proj")
    assert len(runs) == 1, runs
    run = server_run(pluto_server, dirs[2], "ddp-job-7")
    assert run["id"] == runs[0]["id"]
    assert {f"rank{r}" for r in range(3)} <= set(run["config"])
    for r in range(3):
        assert steps(pluto_server, run, f"rank{r}/loss") == list(range(50))
    return run


def test_nodes_sharing_pluto_run_id_deliver_into_one_run(tmp_path, pluto_server):
    assert deliver_nodes(tmp_path, pluto_server, ALL_FINISH="1")["status"] == "COMPLETED"


# once the known limit of an earlier version: the closing nodes only attach (docs/delivery.md)
def test_a_closing_node_delivered_after_the_finishing_node_leaves_the_run_completed(
        tmp_path, pluto_server):
    assert deliver_nodes(tmp_path, pluto_server)["status"] == "COMPLETED"


def test_an_unrelated_run_with_the_same_id_is_still_a_conflict(tmp_path, pluto_server):
    other = pluto_server.create_run("proj", "someone-else", externalId="taken")
    finished(job(tmp_path / "j", """
        run = pluto.init(name="mine", run_id="taken")
        run.log({"x": 1.0})
        run.finish()
    """))
    drain(pluto_server, tmp_path / "j")
    assert pluto_server.get_run(other["runId"])["status"] == "RUNNING"  # left alone
    assert pluto_server.metric_counts(other["runId"])["stored"] == 0
    from pluto_offline import journal

    with journal.Journal.open(tmp_path / "j") as j:
        row = journal.find_run(j, project="proj", run_id="taken")
        assert "already exists" in (row.conflict or "")
