"""File names are unique per (run, logName): the server stores a file under
project/run/logName/fileName, so a repeated name would overwrite the earlier file's bytes
(audit of issue 9: ``File(path, name="conf")`` at two steps gave two ``conf.yaml``)."""

from __future__ import annotations

import re

from pluto_offline.media import kinds, stock
from tests.media.helpers import (
    PROJECT,
    drain,
    finished,
    job,
    run_job,
    server_id,
    stock_client,
)

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def test_one_name_logged_at_two_steps_and_from_another_journal_keeps_every_file(
        tmp_path, pluto_server):
    sources = []
    for i in range(3):
        p = tmp_path / f"conf{i}" / "conf.yaml"  # the same file name, different bytes
        p.parent.mkdir()
        p.write_text(f"lr: 0.{i + 1}\n")
        sources.append(p)
    jdir = tmp_path / "j"
    run_job(jdir, f"""
        run = pluto.init(name="names", run_id="names-1")
        run.log({{"conf": pluto.File({str(sources[0])!r}, name="conf")}}, step=1)
        run.log({{"conf": pluto.File({str(sources[1])!r}, name="conf")}}, step=2)
        run.finish()
    """)
    drain(pluto_server, jdir)
    sid = server_id(jdir, "names-1")
    display = pluto_server.get_run(sid)["displayId"]
    # another journal (another machine) attaches to the run and logs the same name again,
    # with a stock File object
    other = tmp_path / "other"
    evaluation = job(other, f"""
        import pluto as stock
        run = pluto.init(run_id={display!r})
        run.log({{"conf": stock.File({str(sources[2])!r}, name="conf")}}, step=3)
        run.close()
    """)
    assert finished(evaluation) == 0
    drain(pluto_server, other)
    client = stock_client(pluto_server)
    try:
        files = client.get_files(PROJECT, sid, file_name="conf")
        names = [f["fileName"] for f in files]
        assert len(names) == 3 and len(set(names)) == 3, names
        assert all(re.fullmatch(rf"conf\.{UUID}\.yaml", n) for n in names), names
        import httpx

        got = {f["step"]: httpx.get(f["url"], timeout=30).content for f in files}
        assert got == {i + 1: p.read_bytes() for i, p in enumerate(sources)}
    finally:
        client.close()


def test_a_name_is_drawn_at_each_log_not_at_construction(tmp_path):
    p = tmp_path / "conf.yaml"
    p.write_text("x: 1\n")
    f = kinds.File(str(p), name="my conf")
    assert f._name == "my-conf"  # sanitised as the stock SDK does
    a, b = kinds.file_name(f._name, f._ext), kinds.file_name(f._name, f._ext)
    assert a != b and re.fullmatch(rf"my-conf\.{UUID}\.yaml", a)
    assert re.fullmatch(rf"{UUID}\.png", kinds.file_name(kinds.Image(b"png")._name, ".png"))


def test_a_stock_object_keeps_its_caption_or_name_not_its_uuid_or_hash(tmp_path):
    import pluto

    p = tmp_path / "m.pt"
    p.write_bytes(b"weights")
    assert stock.convert(pluto.Artifact(str(p), caption="best"))._name == "best"
    assert stock.convert(pluto.File(str(p), name="conf"))._name == "conf"
    assert stock.convert(pluto.File(str(p)))._name is None  # the stock name is its hash
    assert stock.convert(pluto.Text("hello"))._name is None
