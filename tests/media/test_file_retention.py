"""Retention of staged bytes (docs/media.md): delivered files' bytes are deleted once older than
the age — by ``plutosync prune`` and by the daemon's own pass — and never sooner."""

from __future__ import annotations

import json

from tests.badinput.helpers import clean_env, cli
from tests.fixtures.daemon import DaemonProcess, wait_for
from tests.media.helpers import drain
from tests.media.test_exactly_once import offline_job


def _blobs(jdir) -> set[str]:
    return {p.name for p in (jdir / "files").iterdir() if p.is_file()}


def test_prune_keeps_recent_delivered_bytes_and_deletes_them_past_the_age(tmp_path,
                                                                         pluto_server):
    jdir = tmp_path / "j"
    offline_job(jdir, "aged", {"a": b"first bytes", "b": b"second bytes"})
    drain(pluto_server, jdir)
    assert len(_blobs(jdir)) == 2
    recent = cli("prune", "--dir", str(jdir), "--older-than", "1h", "--json")
    assert recent.returncode == 0, recent.stderr
    assert json.loads(recent.stdout)["files"] == 0 and len(_blobs(jdir)) == 2
    dry = cli("prune", "--dir", str(jdir), "--older-than", "0", "--dry-run", "--json")
    assert json.loads(dry.stdout)["files"] == 2 and len(_blobs(jdir)) == 2
    now = cli("prune", "--dir", str(jdir), "--older-than", "0", "--json")
    assert now.returncode == 0, now.stderr
    assert json.loads(now.stdout)["files"] == 2 and _blobs(jdir) == set()


def test_the_daemons_retention_pass_deletes_delivered_bytes(tmp_path, pluto_server):
    jdir = tmp_path / "j"
    offline_job(jdir, "by-daemon", {"a": b"bytes the daemon delivers"})
    assert len(_blobs(jdir)) == 1
    with DaemonProcess(pluto_server, jdir, "--retention", "0s", "--prune-every", "0.2",
                       env=clean_env(**pluto_server.env())) as daemon:
        wait_for(lambda: not _blobs(jdir), timeout=60,
                 what="the delivered file's bytes pruned by the daemon")
        assert daemon.terminate() == 0
    assert "the staged bytes of 1 delivered files (25 bytes)" in daemon.log()
