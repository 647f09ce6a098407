"""Restarts, first-start keys, the reaper, and outages."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest
import requests

from tests.fixtures.server import LocalServer


def test_data_survives_a_restart_and_a_kill(pluto_server):
    run = pluto_server.create_run("persist", externalId="e1", tags=["t"])
    pluto_server.ingest("metrics", run["runId"], "persist",
                        [{"time": 1, "step": s, "data": {"m": float(s)}} for s in range(50)])
    pluto_server.kill()
    with pytest.raises(requests.ConnectionError):
        pluto_server.request("POST", "/api/slug", timeout=2)
    pluto_server.start()
    assert pluto_server.get_run(run["runId"])["tags"] == ["t"]
    assert len(pluto_server.metrics(run["runId"], "persist", "m")) == 50
    again = pluto_server.create_run("persist", externalId="e1")
    assert again["runId"] == run["runId"] and again["resumed"] is True
    assert pluto_server.create_run("persist")["displayId"] == "PER-2"
    pluto_server.restart()
    assert pluto_server.metric_counts(run["runId"])["stored"] == 50


def test_first_start_prints_a_new_key_once_and_stores_no_plain_key(tmp_path):
    def serve_once() -> str:
        proc = subprocess.Popen(
            [sys.executable, "-m", "syncd", "serve", "--port", "0", "--data", str(tmp_path)],
            stdout=subprocess.PIPE, text=True)
        lines = [proc.stdout.readline()]
        while "PLUTO_URL_API" not in lines[-1]:
            lines.append(proc.stdout.readline())
        proc.terminate()
        lines.append(proc.stdout.read())
        proc.wait(10)
        return "".join(lines)

    first = serve_once()
    key = re.search(r"new API key \(shown once\): (\S+)", first).group(1)
    assert key.startswith("plt_")
    second = serve_once()
    assert "new API key" not in second and key not in second  # where the keys are, not them
    assert key.encode() not in (tmp_path / "pluto-server.db").read_bytes()


def test_reaper_fails_silent_runs_and_spares_live_ones(tmp_path):
    server = LocalServer(tmp_path, reaper=(1.0, 2.0)).start()
    try:
        silent = server.create_run("reap")["runId"]
        beating = server.create_run("reap")["runId"]
        stopped = server.create_run("reap")["runId"]
        server.request("POST", "/api/runs/status/update",
                       json={"runId": stopped, "status": "COMPLETED"})
        server.request("POST", "/api/runs/trigger", json={"runId": beating})
        time.sleep(1.5)
        # beating went quiet for > 1 s after its heartbeat; silent has had < 2 s.
        assert server.get_run(beating)["status"] == "FAILED"
        assert server.get_run(silent)["status"] == "RUNNING"
        time.sleep(1.5)
        assert server.get_run(silent)["status"] == "FAILED"
        assert server.get_run(stopped)["status"] == "COMPLETED"
        # A late COMPLETED is ignored; RUNNING then COMPLETED lands.
        server.request("POST", "/api/runs/status/update",
                       json={"runId": silent, "status": "COMPLETED"})
        assert server.get_run(silent)["status"] == "FAILED"
        for status in ("RUNNING", "COMPLETED"):
            server.request("POST", "/api/runs/status/update",
                           json={"runId": silent, "status": status, "statusUpdated": 1000})
        assert server.get_run(silent)["status"] == "COMPLETED"
    finally:
        server.stop()


def test_admin_reap_uses_the_configured_timeouts(pluto_server):
    run_id = pluto_server.create_run("reap-now")["runId"]
    assert run_id not in pluto_server.reap()  # defaults: 150 s / 1800 s
    assert pluto_server.get_run(run_id)["status"] == "RUNNING"


def test_port_in_use_is_a_clear_error(pluto_server, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "syncd", "serve", "--port", str(pluto_server.port),
         "--data", str(tmp_path)], capture_output=True, text=True, timeout=20)
    assert proc.returncode == 2 and "cannot listen" in proc.stderr  # could not start: 2


def test_bad_fault_flag_exits_2(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "syncd", "serve", "--port", "0", "--data", str(tmp_path),
         "--fault", "explode"], capture_output=True, text=True, timeout=20)
    assert proc.returncode == 2 and "bad --fault" in proc.stderr


def test_request_counts(pluto_server: LocalServer):
    pluto_server.request("POST", "/api/slug")
    assert pluto_server.request_counts()["/api/slug"] == 1
