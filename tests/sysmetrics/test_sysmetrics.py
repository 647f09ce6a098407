"""System metrics and metadata: real jobs delivered by a real daemon to the local server."""

from __future__ import annotations

import json
import subprocess

import pluto.query as pq

from pluto_offline import journal
from tests.console import jobs
from tests.fixtures.daemon import DaemonProcess


def deliver(server, journal_dir) -> None:
    d = DaemonProcess(server, journal_dir, "--exit-when-idle")
    assert d.wait(60) == 0, d.log()


def server_id(journal_dir, run_id: str) -> int:
    with journal.Journal.open(journal_dir, readonly=True) as j:
        row = journal.find_run(j, project="proj", run_id=run_id)
        assert row is not None and row.server_id
        return row.server_id


def test_sys_series_under_the_stock_names_beside_the_jobs_own_steps(tmp_path, pluto_server):
    repo = tmp_path / "repo"
    repo.mkdir()
    for cmd in (["init", "-q", "-b", "main"], ["-c", "user.email=a@b", "-c", "user.name=a",
                                               "commit", "-q", "--allow-empty", "-m", "x"]):
        subprocess.run(["git", *cmd], cwd=repo, check=True)
    code, _, err = jobs.run(tmp_path / "j", f"""
        os.chdir({str(repo)!r})
        import pluto_offline.sysinfo as si
        si.INFINIBAND_ROOT = {str(tmp_path / "no-infiniband")!r}  # a host without InfiniBand
        run = pluto.init(name="m", run_id="m1", settings={{"x_sys_sampling_interval": 0.25,
                                                           "mine": 1}})
        for step in range(5):
            run.log({{"loss": 1.0 / (step + 1)}}, step=step)
            time.sleep(0.25)
        run.finish()
    """)
    assert code == 0, err
    deliver(pluto_server, tmp_path / "j")
    sid = server_id(tmp_path / "j", "m1")
    client = pq.Client(api_token=pluto_server.api_key, host=pluto_server.url)
    try:
        names = set(client.get_metric_names("proj", run_ids=[sid]))
        run = client.get_run("proj", sid)
    finally:
        client.close()
    for name in ("sys/cpu.percentage.0", "sys/memory.used", "sys/memory.active",
                 "sys/disk.used", "sys/network.bytes_sent", "sys/network.bytes_recv",
                 "sys/network.bytes_sent.rate", "loss"):
        assert name in names, sorted(names)
    assert not [n for n in names if n.startswith("sys/ib.")], sorted(names)
    assert [p["step"] for p in pluto_server.metrics(sid, "proj", "loss")] == [0, 1, 2, 3, 4]
    samples = [p["step"] for p in pluto_server.metrics(sid, "proj", "sys/memory.used")]
    assert samples[:3] == [1, 2, 3]  # its own count, as the stock SDK's
    assert all(0 <= p["value"] <= 100
               for p in pluto_server.metrics(sid, "proj", "sys/cpu.percentage.0"))

    details = pluto_server.get_run(sid)
    meta = details["systemMetadata"]
    meta = json.loads(meta) if isinstance(meta, str) else meta
    assert meta["os_info"]["hostname"] and meta["os_info"]["python"]["version"]
    assert meta["cpu"]["virtual"] >= 1 and meta["memory"]["virt"] > 0
    assert any(r.startswith("psutil==") for r in meta["requirements"])
    assert "infiniband" not in meta
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True,
                          text=True).stdout.strip()
    assert meta["git"] == {"root": str(repo), "commit": head, "branch": "main", "dirty": False}
    assert set(meta["plutoOffline"]) >= {"journal", "run"}  # plutosync's own keys kept
    settings = details["loggerSettings"]
    settings = json.loads(settings) if isinstance(settings, str) else settings
    assert settings["mine"] == 1 and settings["x_sys_sampling_interval"] == 0.25
    assert settings["disable_console"] is False and settings["mode"] == "offline"
    assert run["id"] == sid


def test_off_no_sys_series_and_no_host_facts(tmp_path, pluto_server):
    code, _, err = jobs.run(tmp_path / "j", """
        run = pluto.init(name="o", run_id="o1", settings={"x_sys_sampling_interval": 0.1})
        run.log({"loss": 1.0})
        time.sleep(0.5)
        run.finish()
    """, PLUTO_DISABLE_SYSTEM_METRICS="1")
    assert code == 0, err
    deliver(pluto_server, tmp_path / "j")
    sid = server_id(tmp_path / "j", "o1")
    assert pluto_server.metric_names("proj", sid) == ["loss"]
    meta = pluto_server.get_run(sid)["systemMetadata"]
    meta = json.loads(meta) if isinstance(meta, str) else meta
    assert set(meta) == {"plutoOffline"}


def test_the_default_interval_is_the_installed_stock_sdks():
    """Without ``x_sys_sampling_interval`` the sampler waits what the stock SDK's default
    settings say (read from the installed pluto-ml, not copied), and the setting wins."""
    from pluto.sets import Settings

    from pluto_offline import sysmetrics

    assert sysmetrics.interval(None) == Settings().x_sys_sampling_interval
    assert sysmetrics.interval({"disable_console": True}) == Settings().x_sys_sampling_interval
    assert sysmetrics.interval({"x_sys_sampling_interval": 0.5}) == 0.5
