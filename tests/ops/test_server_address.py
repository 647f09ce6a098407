"""A wrong server address or prune age is a usage error said at once (exit 2, one line), never
retried as if the network were down: real ``plutosync`` processes against a real local server."""

from __future__ import annotations

import time

import pytest

from syncd.settings import CLOUD_API, CLOUD_INGEST, CLOUD_PY, Settings
from tests.badinput.helpers import clean_env, cli, status_rows
from tests.fixtures.daemon import JournalBuilder

URL_VARS = ("PLUTO_URL_API", "PLUTO_URL_INGEST", "PLUTO_URL_PY")


def _journal(path, project: str = "proj") -> None:
    jb = JournalBuilder(path)
    key = jb.run("addr", project)
    jb.metrics(key, range(20), per_event=10)
    jb.status(key, "COMPLETED")
    jb.close()


def _hostport(server) -> str:
    return server.url.split("://", 1)[1]


# --------------------------------------------------------------------------- 1: not a URL

@pytest.mark.parametrize("given,said", [
    ("{hp}", "--server {hp} is not a URL: give its scheme, e.g. --server http://{hp}"),
    ("ftp://{hp}", "--server ftp://{hp}: only http:// and https:// addresses are accepted, "
                   "not ftp://"),
    ("http://127.0.0.1:PORT", "--server http://127.0.0.1:PORT has a bad port: give a number "
                              "up to 65535, e.g. --server http://127.0.0.1:3001"),
])
def test_push_to_a_server_that_is_not_a_url_fails_at_once(tmp_path, pluto_server, given, said):
    hp = _hostport(pluto_server)
    given, said = given.format(hp=hp), said.format(hp=hp)
    _journal(tmp_path / "j")
    started = time.monotonic()
    res = cli("push", "--server", given, "--timeout", "20", str(tmp_path / "j"),
              env=clean_env(PLUTO_API_KEY=pluto_server.api_key))
    assert (res.returncode, res.stderr) == (2, f"plutosync push: {said}\n")
    assert time.monotonic() - started < 15  # not retried until --timeout
    assert pluto_server.list_runs("proj") == []
    assert [r["synced"] for r in status_rows(tmp_path / "j")] == [False]


@pytest.mark.parametrize("var", URL_VARS)
def test_a_url_variable_without_scheme_is_named_by_run_and_push(tmp_path, pluto_server, var):
    hp = _hostport(pluto_server)
    _journal(tmp_path / "j")
    env = clean_env(**pluto_server.env())
    env[var] = hp
    said = f"{var}={hp} is not a URL: give its scheme, e.g. {var}=http://{hp}\n"
    once = cli("run", "--once", "--timeout", "20", "--dir", str(tmp_path / "j"), env=env)
    push = cli("push", "--timeout", "20", str(tmp_path / "j"), env=env)
    assert (once.returncode, once.stderr) == (2, f"plutosync run: {said}")
    assert (push.returncode, push.stderr) == (2, f"plutosync push: {said}")
    assert pluto_server.list_runs("proj") == []


# --------------------------------------------------------------------------- 2: half a server

def test_only_the_api_url_set_is_refused_before_anything_is_sent(tmp_path, pluto_server):
    """The run would be created here and its metrics and the key sent to the cloud's ingest."""
    _journal(tmp_path / "j")
    env = clean_env(PLUTO_API_KEY=pluto_server.api_key, PLUTO_URL_API=pluto_server.url)
    said = ("PLUTO_URL_API is set but PLUTO_URL_INGEST and PLUTO_URL_PY are not, so they would "
            "default to the Pluto cloud, which would get your runs' data and API key: set all "
            "of PLUTO_URL_API, PLUTO_URL_INGEST and PLUTO_URL_PY (the same URL for one server "
            "such as plutosync serve), or give --server URL instead\n")
    once = cli("run", "--once", "--timeout", "10", "--dir", str(tmp_path / "j"), env=env)
    push = cli("push", "--timeout", "10", str(tmp_path / "j"), env=env)
    assert (once.returncode, once.stderr) == (2, f"plutosync run: {said}")
    assert (push.returncode, push.stderr) == (2, f"plutosync push: {said}")
    assert pluto_server.list_runs("proj") == []
    # --server names one server for all three: the variables are then not used
    res = cli("push", "--server", pluto_server.url, str(tmp_path / "j"), env=env)
    assert res.returncode == 0, res.stderr
    assert [r["status"] for r in pluto_server.list_runs("proj")] == ["COMPLETED"]


def test_two_set_one_left_names_the_one_left(tmp_path, pluto_server):
    _journal(tmp_path / "j")
    env = clean_env(PLUTO_API_KEY=pluto_server.api_key, PLUTO_URL_API=pluto_server.url,
                    PLUTO_URL_INGEST=pluto_server.url)
    res = cli("push", "--timeout", "10", str(tmp_path / "j"), env=env)
    assert (res.returncode, res.stderr) == (2, (
        "plutosync push: PLUTO_URL_API and PLUTO_URL_INGEST are set but PLUTO_URL_PY is not, "
        "so it would default to the Pluto cloud, which would get your runs' data and API key: "
        "set all of PLUTO_URL_API, PLUTO_URL_INGEST and PLUTO_URL_PY (the same URL for one "
        "server such as plutosync serve), or give --server URL instead\n"))
    assert pluto_server.list_runs("proj") == []
    # all three given on purpose, even a mix: taken as they are (py serves only alerts)
    env["PLUTO_URL_PY"] = CLOUD_PY
    res = cli("push", str(tmp_path / "j"), env=env)
    assert res.returncode == 0, res.stderr
    assert [r["status"] for r in pluto_server.list_runs("proj")] == ["COMPLETED"]


@pytest.mark.parametrize("env,want", [
    ({}, (CLOUD_API, CLOUD_INGEST, CLOUD_PY)),  # nothing set: the cloud
    ({"PLUTO_URL_API": CLOUD_API + "/"}, (CLOUD_API, CLOUD_INGEST, CLOUD_PY)),  # all the cloud
    ({"MLOP_URL_API": "http://a:1", "PLUTO_URL_INGEST": "http://b:2", "PLUTO_URL_PY": "https://c"},
     ("http://a:1", "http://b:2", "https://c")),
])
def test_what_the_command_line_accepts(env, want):
    s = Settings.from_env(env={"PLUTO_API_KEY": "k", **env}, one_destination=True)
    assert (s.api_url, s.ingest_url, s.py_url) == want


# --------------------------------------------------------------------------- 3: prune ages

@pytest.mark.parametrize("args", [("--older-than", "-5d"), ("--older-than=-5d",)])
def test_prune_with_a_negative_age_says_which_ages_it_reads(tmp_path, args):
    _journal(tmp_path / "j")
    before = status_rows(tmp_path / "j")
    res = cli("prune", "--dir", str(tmp_path / "j"), *args)
    assert (res.returncode, res.stdout, res.stderr) == (2, "", (
        "plutosync prune: --older-than -5d: an age cannot be negative: write a number and a "
        "unit, s (seconds), m (minutes), h (hours), d (days) or w (weeks), e.g. 7d or 12h; 0 "
        "prunes every acknowledged event of finished runs\n"))
    assert status_rows(tmp_path / "j") == before

