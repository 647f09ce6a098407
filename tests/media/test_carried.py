"""The journal — or one export file — is all there is to carry (issue 9): every file kind logged
by an offline job reaches the server byte-exact (images pixel-exact) from an export pushed on
another machine, after the job's journal directory and every source file are gone."""

from __future__ import annotations

import io
import shutil
import wave

import httpx
import numpy as np

from tests.badinput.helpers import clean_env, cli
from tests.media.helpers import PROJECT, pixels, run_job, stock_client


def _wav() -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(np.arange(400, dtype="<i2").tobytes())
    return out.getvalue()


def test_every_kind_arrives_exact_from_an_export_pushed_elsewhere(tmp_path, pluto_server):
    site = tmp_path / "site"  # the air-gapped machine
    site.mkdir()
    rng = np.random.default_rng(11)
    hwc = rng.integers(0, 256, (12, 9, 3), dtype=np.uint8)
    np.save(site / "hwc.npy", hwc)
    sources = {"clip.wav": _wav(), "movie.mp4": b"\x00\x00\x00\x18ftypmp42" + rng.bytes(500),
               "notes.md": b"# notes\n", "conf.yaml": b"lr: 0.1\n",
               "model.pt": rng.bytes(2_000_000)}
    for name, data in sources.items():
        (site / name).write_bytes(data)
    jdir = site / "journal"
    run_job(jdir, f"""
        import numpy as np
        d = pathlib.Path({str(site)!r})
        run = pluto.init(name="carried", run_id="carried-1")
        run.log({{"image": pluto.Image(np.load(d / "hwc.npy"), caption="hwc"),
                 "audio": pluto.Audio(str(d / "clip.wav")),
                 "video": pluto.Video(str(d / "movie.mp4")),
                 "text": [pluto.Text("inline text"), pluto.Text(str(d / "notes.md"))],
                 "config": pluto.File(str(d / "conf.yaml")),
                 "ckpt": pluto.Artifact(str(d / "model.pt"))}}, step=3)
        run.finish()
    """)
    export = tmp_path / "carried.db"
    res = cli("export", "--dir", str(jdir), "--out", str(export))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "7 staged files" in res.stdout + res.stderr, res.stdout + res.stderr
    shutil.rmtree(site)  # the journal, its staged bytes and every source stay behind

    elsewhere = tmp_path / "office" / "carried.db"
    elsewhere.parent.mkdir()
    export.rename(elsewhere)
    push = cli("push", str(elsewhere), env=clean_env(**pluto_server.env()))
    assert push.returncode == 0, push.stdout + push.stderr
    again = cli("push", str(elsewhere), env=clean_env(**pluto_server.env()))
    assert again.returncode == 0, again.stdout + again.stderr

    [run] = pluto_server.list_runs(PROJECT)
    assert run["status"] == "COMPLETED"
    client = stock_client(pluto_server)
    try:
        def got(log_name: str) -> list[tuple[dict, bytes]]:
            files = client.get_files(PROJECT, run["id"], file_name=log_name)
            return [(f, httpx.get(f["url"], timeout=30).content) for f in files]

        [(img, png)] = got("image")
        assert img["caption"] == "hwc" and img["step"] == 3 and (pixels(png) == hwc).all()
        assert [b for _, b in got("audio")] == [sources["clip.wav"]]
        assert [b for _, b in got("video")] == [sources["movie.mp4"]]
        assert [b for _, b in got("text")] == [b"inline text", b"# notes\n"]
        assert [b for _, b in got("config")] == [sources["conf.yaml"]]
        [(ckpt, ckpt_bytes)] = got("ckpt")
        assert ckpt["fileSize"] == 2_000_000 and ckpt_bytes == sources["model.pt"]
    finally:
        client.close()
    # each file once, the second push included
    rows = pluto_server.request("GET", "/_admin/stats", params={"runId": run["id"]}).json()
    assert rows["files"] == 7
    kinds = {n["logName"]: n["logType"] for n in pluto_server.get_run(run["id"])["logNames"]}
    assert {k: kinds.get(k) for k in ("image", "audio", "video", "text", "config", "ckpt")} == {
        "image": "IMAGE", "audio": "AUDIO", "video": "VIDEO", "text": "TEXT",
        "config": "FILE", "ckpt": "ARTIFACT"}
