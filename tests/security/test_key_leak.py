"""The API key never leaves the environment: not into the journal, a log line, an error message,
an exported snapshot, the process title or the command line of any process.

One full flow with a distinctive key: a job with the key in its environment (autostart on)
spawns a daemon; ingest faults; a bad-key push; a good-key ``run --once``; ``status``;
``export``. Then every artefact is grepped for the key (and for the wrong key).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import requests

from tests.badinput.helpers import clean_env, cli
from tests.fixtures.daemon import wait_for

KEY = "plt_SECRET_c0ffee_5a1t_9d8e7f6a5b4c3d2e1f"
WRONG = "plt_WRONG_deadbeef_0000_1111_2222_3333"


def _serve(data: Path, log: Path) -> tuple[subprocess.Popen, str]:
    """``plutosync serve`` with the key from its environment (never on its command line)."""
    env = clean_env(PLUTOSYNC_SERVER_API_KEY=KEY)
    out = open(log, "wb")
    proc = subprocess.Popen([sys.executable, "-m", "syncd", "serve", "--port", "0", "--data",
                             str(data)], stdout=out, stderr=subprocess.STDOUT, env=env)
    url = wait_for(lambda: _listening(log), timeout=20, what="the server")
    return proc, url


def _listening(log: Path) -> str | None:
    text = log.read_text(errors="replace")
    return text.split("listening on ", 1)[1].split()[0] if "listening on " in text else None


def _proc_titles() -> dict[int, bytes]:
    """cmdline and comm of every process whose command line mentions syncd or pluto."""
    out = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            comm = Path(f"/proc/{pid}/comm").read_bytes()
        except OSError:
            continue
        if b"syncd" in cmd or b"pluto" in cmd:
            out[int(pid)] = cmd + b"\n" + comm
    return out


JOB = """
import sys, time, pluto_offline as pluto
run = pluto.init(dir=sys.argv[1], project="leak", run_id="leak-1", config={"lr": 0.1},
                 tags=["secret-test"], settings={"flush_interval": 0.01})
for s in range(300):
    run.log({"loss": 1 / (s + 1)}, step=s)
run.flush()
print("logged", flush=True)
sys.stdin.readline()           # the test snapshots /proc meanwhile
try:
    raise RuntimeError("boom")  # a traceback into the status metadata
except RuntimeError:
    pass
run.finish()
"""


MORE = """
import sys, pluto_offline as pluto
run = pluto.init(dir=sys.argv[1], project="leak", run_id="leak-1", resume=True)
run.log({"loss": 0.001})
run.finish(code=3)
"""


def test_the_key_appears_in_no_artefact_of_a_full_run(tmp_path):
    jdir = tmp_path / "journal"
    captured: list[bytes] = []
    server, url = _serve(tmp_path / "srv", tmp_path / "server.log")
    try:
        admin = {"Authorization": f"Bearer {KEY}"}
        requests.post(url + "/_admin/faults", json={"mode": "503", "path": "/ingest/metrics",
                                                    "count": 3}, headers=admin, timeout=5)
        env = clean_env(PLUTO_API_KEY=KEY, PLUTO_URL_API=url, PLUTO_URL_INGEST=url,
                        PLUTO_URL_PY=url)
        job = subprocess.Popen([sys.executable, "-c", textwrap.dedent(JOB), str(jdir)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env=env)
        assert job.stdout.readline().strip() == b"logged"
        # the autostarted daemon and the job, while alive: title and command line
        titles = wait_for(lambda: {p: t for p, t in _proc_titles().items()
                                   if str(jdir).encode() in t}, timeout=15,
                          what="the autostarted plutosync")
        titles.update(_proc_titles())
        assert any(b"syncd" in t and b"run" in t for t in titles.values()), titles
        out, err = job.communicate(b"\n", timeout=60)
        captured += [out, err]
        assert job.returncode == 0, err

        wait_for(lambda: not any(str(jdir).encode() in t for t in _proc_titles().values()),
                 timeout=60, what="the autostarted plutosync to deliver and exit")
        more = subprocess.run([sys.executable, "-c", MORE, str(jdir)], capture_output=True,
                              env={**env, "PLUTO_OFFLINE_AUTOSTART": "0"}, timeout=60)
        captured += [more.stdout, more.stderr]
        assert more.returncode == 0, more.stderr

        # a wrong key: refused, said so, never echoed
        bad = cli("push", "--server", url, "--timeout", "5", str(jdir),
                  env=clean_env(PLUTO_API_KEY=WRONG))
        captured += [bad.stdout.encode(), bad.stderr.encode()]
        assert bad.returncode != 0
        assert "refused the API key" in bad.stdout + bad.stderr

        good = cli("run", "--dir", str(jdir), "--server", url, "--once", "--timeout", "60",
                   env=clean_env(PLUTO_API_KEY=KEY))
        captured += [good.stdout.encode(), good.stderr.encode()]
        assert good.returncode == 0, good.stderr
        for args in (["status", "--dir", str(jdir)], ["status", "--dir", str(jdir), "--json"],
                     ["export", "--dir", str(jdir), "--out", str(tmp_path / "snap.db")]):
            res = cli(*args, env=clean_env(PLUTO_API_KEY=KEY))
            assert res.returncode == 0, res.stderr
            captured += [res.stdout.encode(), res.stderr.encode()]
        run = requests.get(url + "/api/runs/list", params={"projectName": "leak"},
                           headers=admin, timeout=5).json()["runs"][0]
        assert run["status"] == "FAILED"  # the flow really went through, to the end
    finally:
        server.terminate()
        server.wait(10)
        for pid, title in _proc_titles().items():  # a daemon left behind by a failed step
            if str(jdir).encode() in title:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    files = [p for p in tmp_path.rglob("*") if p.is_file() and p.name != "server.db"]
    assert any(p.name == "plutosync.log" for p in files)  # the autostarted daemon's log
    assert (tmp_path / "snap.db").exists()
    for secret in (KEY, WRONG):
        needle = secret.encode()
        leaks = [str(p) for p in files if needle in p.read_bytes()]
        leaks += [f"pid {pid}" for pid, t in titles.items() if needle in t]
        leaks += [f"output #{i}" for i, text in enumerate(captured) if needle in text]
        assert not leaks, f"{secret[:12]}... found in {leaks}"
