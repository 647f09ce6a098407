"""The staging quota: past it, files are refused with one warning and recorded, never silently."""

from __future__ import annotations

import logging

import pluto_offline as pluto
from pluto_offline import journal
from pluto_offline.journal import filerows


def test_files_past_the_quota_are_refused_once_loudly_and_recorded(tmp_path, monkeypatch,
                                                                     caplog):
    monkeypatch.setenv("PLUTO_OFFLINE_AUTOSTART", "0")
    monkeypatch.setenv("PLUTO_OFFLINE_MAX_STAGED", "3K")
    run = pluto.init(dir=str(tmp_path / "j"), project="p", name="quota")
    with caplog.at_level(logging.WARNING, logger="pluto_offline"):
        run.log({"a": pluto.Artifact(b"x" * 2000)})  # fits
        run.log({"b": pluto.Artifact(b"y" * 2000)})  # 4000 > 3072: refused
        run.log({"c": pluto.Artifact(b"z" * 2000)})  # refused too, without a second warning
    run.finish()
    run._media.wait_staged()
    warnings = [r.getMessage() for r in caplog.records if "staging quota" in r.getMessage()
                or "PLUTO_OFFLINE_MAX_STAGED" in r.getMessage()]
    assert len(warnings) == 1 and "PLUTO_OFFLINE_MAX_STAGED=3072" in warnings[0]
    with journal.Journal.open(tmp_path / "j", readonly=True) as j:
        lost = filerows.lost_files(j)
        c = filerows.counts(j)[1]
    assert [f["log_name"] for f in lost] == ["b", "c"]
    assert all("over the staging quota" in f["reason"] for f in lost)
    assert (c.pending, c.lost) == (1, 2)


def test_an_unreadable_quota_warns_and_keeps_the_default(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("PLUTO_OFFLINE_AUTOSTART", "0")
    monkeypatch.setenv("PLUTO_OFFLINE_MAX_STAGED", "lots")
    run = pluto.init(dir=str(tmp_path / "j"), project="p", name="quota")
    with caplog.at_level(logging.WARNING, logger="pluto_offline"):
        run.log({"a": pluto.Text("kept")})
    run.finish()
    assert any("PLUTO_OFFLINE_MAX_STAGED='lots'" in r.getMessage() for r in caplog.records)
    with journal.Journal.open(tmp_path / "j", readonly=True) as j:
        assert filerows.counts(j)[1].pending == 1
