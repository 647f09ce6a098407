"""A plain ``pip install pluto-offline`` gives the SDK and a working ``plutosync`` (issue 12
items 1-2), and ``import pluto_offline`` stays free of the daemon's imports.

The first two tests read what the installed distribution declares; the slow one installs the
project from a copy of this tree into a fresh virtualenv with ``pip`` (the package registry is
the only network it needs), then runs a job and ``plutosync push`` from that venv against the
local server, as the README's from-source line does."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
import textwrap
import venv

import pytest

from tests.badinput.helpers import ROOT, child, clean_env

# what plutosync imports at its first request; a plain install must bring each of them
DAEMON_DEPS = ("requests", "rich", "tenacity", "watchdog", "ijson")


def _requirement_names(dist: str = "pluto-offline") -> dict[str, str]:
    """``{name: marker}`` of the distribution's requirements (marker '' when unconditional)."""
    out = {}
    for req in importlib.metadata.requires(dist) or []:
        name = re.split(r"[ ;<>=!~\[]", req, maxsplit=1)[0].lower()
        marker = req.split(";", 1)[1].strip() if ";" in req else ""
        out.setdefault(name, marker)
        if not marker:
            out[name] = ""
    return out


def test_a_plain_install_requires_what_the_daemon_imports():
    reqs = _requirement_names()
    for name in (*DAEMON_DEPS, "sqlite-utils", "psutil"):
        assert reqs.get(name) == "", f"{name} must be a plain dependency, not {reqs.get(name)!r}"
    # heavy or hardware-specific parts stay optional
    for name in ("numpy", "pillow", "nvidia-ml-py"):
        assert "extra ==" in reqs.get(name, "extra =="), f"{name} must stay an extra"
    scripts = {e.name: e.value for e in importlib.metadata.entry_points(group="console_scripts")}
    assert scripts.get("plutosync", "").startswith("syncd")


def test_import_pluto_offline_loads_none_of_the_daemons_modules(tmp_path):
    res = child(f"""
        import sys
        before = set(sys.modules)  # the stock SDK's .pth hook loads rich at start-up
        import pluto_offline
        run = pluto_offline.init(project="p", name="quiet", dir=sys.argv[1],
                                 settings={{"autostart": False}})
        run.log({{"x": 1.0}})
        run.finish()
        print(sorted({{m.split(".")[0] for m in set(sys.modules) - before
                      if m.split(".")[0] in {set(DAEMON_DEPS) | {"syncd"}}}}))
    """, str(tmp_path / "j"))
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.slow
def test_a_plain_pip_install_gives_a_working_plutosync(tmp_path, pluto_server):
    src = tmp_path / "src"
    archive = subprocess.run(["git", "archive", "--format=tar", "HEAD"], cwd=ROOT,
                             capture_output=True, check=True).stdout
    src.mkdir()
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    inst = subprocess.run([str(py), "-m", "pip", "install", "-q", str(src)],
                          capture_output=True, text=True, timeout=600)
    assert inst.returncode == 0, inst.stdout + inst.stderr
    env = clean_env(**pluto_server.env())
    env.pop("PYTHONPATH")  # the installed copy only, not this tree
    jdir = tmp_path / "journal"
    job = subprocess.run([str(py), "-c", textwrap.dedent(f"""
        import pluto_offline as pluto
        run = pluto.init(project="installed", name="fresh", dir={str(jdir)!r},
                         settings={{"autostart": False}})
        for i in range(5):
            run.log({{"loss": 1.0 / (i + 1)}}, step=i)
        run.finish()
    """)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert job.returncode == 0, job.stderr
    push = subprocess.run([str(env_dir / "bin" / "plutosync"), "push", str(jdir)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert push.returncode == 0, push.stdout + push.stderr
    assert "everything delivered" in push.stdout + push.stderr
    [run] = pluto_server.list_runs("installed")
    assert run["status"] == "COMPLETED"
    points = pluto_server.metrics(run["id"], "installed", "loss")
    assert sorted(p["step"] for p in points) == [0, 1, 2, 3, 4]
    assert sys.executable != str(py)  # the run above used the fresh venv, not this one
