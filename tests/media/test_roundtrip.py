"""Files logged offline reach the server and read back unchanged with the stock client.

A real job (its own process) logs images, files and an artifact with no server configured;
a real ``plutosync`` delivers them to the local server; ``pluto.query.Client.get_files`` and
``download_file`` — the stock client, unchanged — read them back.
"""

from __future__ import annotations

import numpy as np
from PIL import Image as PILImage

from tests.media.helpers import (
    PROJECT,
    counts,
    downloaded,
    drain,
    file_rows,
    pixels,
    run_job,
    server_id,
    stock_client,
)


def test_images_files_and_an_artifact_round_trip_exactly(tmp_path, pluto_server):
    rng = np.random.default_rng(7)
    hwc = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    chw = rng.integers(0, 256, (3, 16, 20), dtype=np.uint8)
    grey = rng.random((10, 12))  # floats in [0, 1): scaled by 255 as the stock SDK does
    np.save(tmp_path / "hwc.npy", hwc)
    np.save(tmp_path / "chw.npy", chw)
    np.save(tmp_path / "grey.npy", grey)
    PILImage.fromarray(hwc).save(tmp_path / "given.png")
    (tmp_path / "conf.yaml").write_text("lr: 0.1\nlayers: [1, 2]\n")
    (tmp_path / "model.pt").write_bytes(rng.bytes(300_000))
    jdir = tmp_path / "j"
    run_job(jdir, f"""
        import numpy as np
        from PIL import Image as PILImage
        d = pathlib.Path({str(tmp_path)!r})
        run = pluto.init(name="media", run_id="media-1")
        run.log({{"samples": [pluto.Image(np.load(d / "hwc.npy"), caption="hwc"),
                             pluto.Image(np.load(d / "chw.npy")),
                             pluto.Image(np.load(d / "grey.npy"))],
                 "pil": pluto.Image(PILImage.open(d / "given.png")),
                 "given": pluto.Image(str(d / "given.png")), "loss": 0.5}})
        run.log({{"config": pluto.File(str(d / "conf.yaml"), name="conf"),
                 "ckpt": pluto.Artifact(str(d / "model.pt"), caption="best")}})
        run.finish()
    """)
    pluto_server.stop()
    pluto_server.start()
    drain(pluto_server, jdir)
    sid = server_id(jdir, "media-1")
    client = stock_client(pluto_server)
    try:
        samples = client.get_files(PROJECT, sid, file_name="samples")
        assert [f["sampleIndex"] for f in samples] == [0, 1, 2]
        assert samples[0]["caption"] == "hwc" and samples[0]["fileName"].startswith("hwc.")
        assert {f["fileType"] for f in samples} == {"png"}
        got = downloaded(client, sid, "samples", tmp_path / "out")
        assert (pixels(got[0]) == hwc).all()
        assert (pixels(got[1]) == chw.transpose(1, 2, 0)).all()
        assert (pixels(got[2]) == (grey * 255).astype(np.int32).astype(np.uint8)).all()
        assert (pixels(downloaded(client, sid, "pil", tmp_path / "out")[0]) == hwc).all()
        assert downloaded(client, sid, "given", tmp_path / "out")[0] == \
            (tmp_path / "given.png").read_bytes()
        conf = client.get_files(PROJECT, sid, file_name="config")
        assert [f["fileName"][:5] for f in conf] == ["conf."]  # conf.<uuid4>.yaml: unique
        assert conf[0]["fileName"].endswith(".yaml")
        assert downloaded(client, sid, "config", tmp_path / "out")[0] == \
            (tmp_path / "conf.yaml").read_bytes()
        ckpt = client.get_files(PROJECT, sid, file_name="ckpt")
        assert ckpt[0]["fileName"].startswith("best.") and ckpt[0]["fileType"] == "pt"
        assert ckpt[0]["fileSize"] == 300_000
        assert downloaded(client, sid, "ckpt", tmp_path / "out")[0] == \
            (tmp_path / "model.pt").read_bytes()
        run = client.get_run(PROJECT, sid)
        assert run["status"] == "COMPLETED"
        kinds = {n["logName"]: n["logType"] for n in pluto_server.get_run(sid)["logNames"]}
        assert kinds == {"samples": "IMAGE", "pil": "IMAGE", "given": "IMAGE",
                         "config": "FILE", "ckpt": "ARTIFACT", "loss": "METRIC"}
    finally:
        client.close()
    assert file_rows(pluto_server, sid) == 7  # one row per file: nothing presigned twice
    c = counts(jdir)[1]
    assert (c.done, c.pending, c.lost, c.resent) == (7, 0, 0, 0)
