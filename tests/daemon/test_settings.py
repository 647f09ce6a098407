"""Where the daemon delivers and with which key: environment only, never the command line."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest

from syncd.settings import CLOUD_INGEST, Settings, SettingsError


def test_the_key_comes_from_the_environment_and_never_shows_in_a_repr():
    s = Settings.from_env(env={"PLUTO_API_KEY": "plt_secret", "PLUTO_URL_API": "http://h:3001/"})
    assert (s.api_url, s.ingest_url) == ("http://h:3001", CLOUD_INGEST)
    assert "plt_secret" not in repr(s)


def test_server_points_every_service_at_one_origin_and_insecure_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="plutosync"):
        s = Settings.from_env(server="http://127.0.0.1:9/", insecure=True,
                              env={"PLUTO_API_KEY": "k"})
    assert {s.api_url, s.ingest_url, s.py_url} == {"http://127.0.0.1:9"}
    assert not s.verify_tls and "TLS certificate checks are off" in caplog.text


def test_without_a_key_the_daemon_does_not_start_and_says_what_to_set(tmp_path):
    with pytest.raises(SettingsError, match="PLUTO_API_KEY is not set"):
        Settings.from_env(env={})
    env = {"PATH": "/usr/bin:/bin", "PLUTO_OFFLINE_AUTOSTART": "0"}
    proc = subprocess.run([sys.executable, "-m", "syncd", "run", "--dir", str(tmp_path), "--once"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "PLUTO_API_KEY is not set" in proc.stderr
