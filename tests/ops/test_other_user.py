"""``plutosync`` as another Unix user than the journal's (issue 11 item 8), with a real second user.

A journal is private to the user whose jobs write it: a daemon (or push) started as anyone else
stops at once with one line saying which user to run as, exit 2 for ``run``, and leaves nothing
beside the journal; a job whose journal directory it cannot write is told to choose another.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from pluto_offline import journal
from tests.badinput.helpers import ROOT
from tests.fixtures.daemon import JournalBuilder

USER = "plutoother"
DEPLOY = 'docs/deploy.md, "Users and permissions"'


def _ensure_user() -> str | None:
    """Create the second user if needed; returns why it cannot be had, or None."""
    if os.geteuid() != 0:
        return "needs root to create and switch to a second user"
    if not shutil.which("setpriv"):
        return "setpriv (util-linux) is not installed"
    if subprocess.run(["id", USER], capture_output=True).returncode == 0:
        return None
    if not shutil.which("useradd"):
        return "useradd is not installed"
    made = subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                           "/usr/sbin/nologin", USER], capture_output=True, text=True)
    return None if made.returncode == 0 else f"useradd failed: {made.stderr.strip()}"


def _interpreter(env: dict[str, str]) -> str | None:
    """A Python the second user may run with this checkout importable: the test's own, or the
    system's of the same version (the test's may live under a home only root may enter)."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for exe in (sys.executable, shutil.which(version, path="/usr/bin:/usr/local/bin")):
        if exe and _as_other([exe, "-c", "import syncd, pluto_offline, rich, requests"],
                             env).returncode == 0:
            return exe
    return None


def _as_other(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["setpriv", f"--reuid={USER}", f"--regid={USER}", "--clear-groups",
                           *argv], capture_output=True, text=True, env=env, cwd="/",
                          timeout=60)


@pytest.fixture(scope="module")
def other():
    """``run(*argv)``: a command as the second user, with the checkout importable."""
    why = _ensure_user()
    if why:
        pytest.skip(f"no second Unix user: {why}")
    packages = [p for p in site.getsitepackages() if Path(p).is_dir()]
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": os.pathsep.join([str(ROOT), *packages]),
           "PLUTO_API_KEY": "plt_other_user_key", "COLUMNS": "400", "LANG": "C.UTF-8"}
    exe = _interpreter(env)
    if exe is None:
        pytest.skip(f"no Python the user {USER} may run with this checkout importable "
                    f"({sys.executable} is not readable by it, and no system {sys.version[:4]})")

    def run(*argv: str) -> subprocess.CompletedProcess:
        return _as_other([exe, *argv], env)

    return run


@pytest.fixture
def shared():
    """A directory every user may enter (pytest's own tmp is root's only), owned by root."""
    d = Path(tempfile.mkdtemp(prefix="pluto-other-", dir="/tmp"))
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _journal(d: Path) -> Path:
    jb = JournalBuilder(d)
    key = jb.run("mine", tags=["t"])
    jb.metrics(key, range(10))
    jb.close()
    return d


def test_run_as_another_user_says_which_user_in_one_line_exit_2(other, shared):
    j = _journal(shared / "j")
    os.chmod(j, 0o755)  # the journal's file is in sight (still 0600): the owner check says it
    res = other("-m", "syncd", "run", "--dir", str(j), "--once")
    assert res.returncode == 2
    assert res.stderr == (
        f"plutosync run: journal {j / 'journal.db'} belongs to root (uid 0) and this plutosync "
        f"runs as {USER} (uid {_uid()}): a journal is private to the user whose jobs write "
        "it, and the files plutosync adds beside it (its lock, SQLite's -wal/-shm) would lock "
        f"those jobs out; run plutosync as root (User=root in the service unit; {DEPLOY})\n")
    assert sorted(p.name for p in j.iterdir()) == ["journal.db"]  # no lock, no -wal left


def test_run_where_a_directory_on_the_way_is_closed_names_it(other, shared):
    j = _journal(shared / "j")  # 0700, as the SDK makes it
    for target in (j, j / "journal.db"):
        res = other("-m", "syncd", "run", "--dir", str(target))
        assert res.returncode == 2, res.stderr
        assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr
        assert res.stderr.startswith(f"plutosync run: cannot reach journal {target}")
        assert f": {j} (owner root (uid 0)) does not let {USER} (uid {_uid()}) in; run " \
               "plutosync as the user whose jobs write the journal" in res.stderr


def test_run_in_a_directory_it_may_not_write(other, shared):
    res = other("-m", "syncd", "run", "--dir", str(shared), "--once")
    assert res.returncode == 2
    assert res.stderr == (
        f"plutosync run: cannot write in journal directory {shared} as {USER} (uid {_uid()}) "
        "(it belongs to root (uid 0), mode 0755); run plutosync as the user whose jobs write "
        f"the journal (User= in the service unit; {DEPLOY})\n")
    assert not (shared / "journal.db").exists()


def test_push_as_another_user_names_that_journal(other, shared):
    j = _journal(shared / "j")
    os.chmod(j, 0o755)
    res = other("-m", "syncd", "push", str(j), "--server", "http://127.0.0.1:9")
    assert res.returncode == 2  # a usage error, as docs/deploy.md says: run as that user
    assert f"not delivered from {j}: journal {j / 'journal.db'} belongs to root" in res.stderr
    assert "; or push a copy of it that you own" in res.stderr and "Traceback" not in res.stderr


def test_push_of_a_directory_it_cannot_enter_says_so(other, shared):
    j = _journal(shared / "j")  # 0700, as the SDK makes it
    res = other("-m", "syncd", "push", str(j), "--server", "http://127.0.0.1:9")
    assert res.returncode == 2
    assert res.stderr == (
        f"plutosync push: cannot read {j} as {USER} (uid {_uid()}) (Permission denied: it "
        "belongs to root (uid 0), mode 0700); push as root, or push a copy of the journal "
        "that you own\n")


@pytest.mark.parametrize("closed", ["directory", "file"])
def test_status_export_prune_on_a_journal_it_cannot_read_one_line_exit_2(other, shared, closed):
    j = _journal(shared / "j")
    if closed == "file":
        os.chmod(j, 0o755)  # journal.db stays 0600
        why = "it belongs to root (uid 0) with mode 0600"
    else:
        why = f"{j} (owner root (uid 0), mode 0700) does not let {USER} (uid {_uid()}) in"
    for cmd in (["status"], ["export", "--out", str(shared / "x.db")], ["prune"]):
        res = other("-m", "syncd", *cmd, "--dir", str(j))
        assert res.returncode == 2, res.stderr
        assert res.stderr == (
            f"plutosync {cmd[0]}: cannot read journal {j / 'journal.db'} as {USER} (uid "
            f"{_uid()}): {why}; run plutosync {cmd[0]} as root (the user whose jobs write the "
            "journal)\n")
    assert not (shared / "x.db").exists()


def test_status_and_export_read_a_journal_open_to_them_without_writing(other, shared):
    """Read access is enough for the read-only commands: nothing is created beside it."""
    j = _journal(shared / "j")
    os.chmod(j, 0o755)
    os.chmod(j / "journal.db", 0o644)
    res = other("-m", "syncd", "status", "--dir", str(j), "--json")
    assert res.returncode == 0, res.stderr
    assert [r["name"] for r in json.loads(res.stdout)] == ["mine"]
    out = shared / "out"
    out.mkdir(mode=0o777)
    os.chmod(out, 0o777)
    res = other("-m", "syncd", "export", "--dir", str(j), "--out", str(out / "x.db"))
    assert res.returncode == 0, res.stderr
    assert "note: the journal is read-only here" in res.stdout
    assert (out / "x.db").stat().st_uid == _uid()
    res = other("-m", "syncd", "prune", "--dir", str(j))  # prune writes: the owner's job
    assert res.returncode == 2
    assert res.stderr.startswith(f"plutosync prune: journal {j / 'journal.db'} belongs to root")
    assert sorted(p.name for p in j.iterdir()) == ["journal.db"]


def test_root_does_not_deliver_another_users_journal(other, shared):
    """Root could, but would leave root-owned files that shut the user's jobs out."""
    mine = shared / "theirs"
    mine.mkdir(mode=0o755)
    os.chown(mine, _uid(), -1)
    made = other("-c", "import sys; from pluto_offline import journal; "
                 "journal.Journal.open(sys.argv[1]).close()", str(mine / "j"))
    assert made.returncode == 0, made.stderr
    res = subprocess.run([sys.executable, "-m", "syncd", "run", "--dir", str(mine / "j"),
                          "--once"], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PLUTO_API_KEY": "plt_x", "COLUMNS": "400"})
    assert res.returncode == 2
    assert res.stderr.startswith(f"plutosync run: journal {mine / 'j' / 'journal.db'} belongs "
                                 f"to {USER} (uid {_uid()}) and this plutosync runs as root")
    assert f"run plutosync as {USER} (User={USER} in the service unit" in res.stderr
    assert sorted(p.name for p in (mine / "j").iterdir()) == ["journal.db"]


def test_a_job_that_cannot_write_its_journal_directory_is_told_to_choose_another(
        other, shared):
    code = ("import sys, pluto_offline\n"
            "try:\n"
            "    pluto_offline.init(project='p', dir=sys.argv[1], settings={'autostart': False})\n"
            "except pluto_offline.JournalError as exc:\n"
            "    print(exc)\n")
    for where, what in ((shared, f"cannot create journal {shared / 'journal.db'}"),
                        (shared / "sub", f"cannot create journal directory {shared / 'sub'}")):
        res = other("-c", code, str(where))
        assert res.returncode == 0, res.stderr
        assert res.stdout.startswith(what), res.stdout
        assert res.stdout.rstrip().endswith(
            "choose a writable directory with dir= or PLUTO_DIR"), res.stdout
    j = _journal(shared / "j")
    os.chmod(j, 0o755)
    res = other("-c", code, str(j))
    assert "choose another with dir= / PLUTO_DIR" in res.stdout, res.stdout + res.stderr
    assert journal.resolve_path(j).stat().st_uid == 0


def _uid() -> int:
    import pwd

    return pwd.getpwnam(USER).pw_uid
