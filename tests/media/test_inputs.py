"""Inputs the round-trip tests do not cover (issue 9): an Image from raw PNG or JPEG bytes and
from a matplotlib figure, and the stock SDK's own Audio, Video and Artifact objects passed to
``pluto_offline``'s ``log()``. A real job logs them offline, a real ``plutosync`` delivers
them, and the stock client (``get_files`` / ``download_file``) reads them back."""

from __future__ import annotations

import io
import textwrap
from pathlib import Path

import httpx
import numpy as np
import pluto.query as pq
from PIL import Image as PILImage

from tests.fixtures.server import LocalServer
from tests.media.helpers import PROJECT, downloaded, drain, pixels, run_job, server_id, stock_client

# One figure, drawn the same way by the job and by the test (Agg renders it identically):
# 3 x 2 inches at 40 dpi, so 120 x 80 pixels.
FIGURE = textwrap.dedent("""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig = plt.figure(figsize=(3, 2), dpi=40)
    ax = fig.add_subplot()
    ax.plot([0, 1, 2, 3], [3, 1, 2, 0], color="tab:red")
    ax.set_title("loss")
""")


def _get(client: pq.Client, sid: int, log_name: str) -> list[tuple[dict, bytes]]:
    """Each file under ``log_name``: its row and its bytes, by the stock client's URLs."""
    return [(f, httpx.get(f["url"], timeout=30).content)
            for f in client.get_files(PROJECT, sid, file_name=log_name)]


def test_images_from_png_and_jpeg_bytes_and_a_figure_arrive_exact(
        tmp_path: Path, pluto_server: LocalServer) -> None:
    rng = np.random.default_rng(5)
    rgb = rng.integers(0, 256, (9, 13, 3), dtype=np.uint8)
    rgba = rng.integers(0, 256, (5, 4, 4), dtype=np.uint8)
    for name, array, fmt in (("rgb.png", rgb, "PNG"), ("rgba.png", rgba, "PNG"),
                             ("photo.jpg", rgb, "JPEG")):
        out = io.BytesIO()
        PILImage.fromarray(array).save(out, format=fmt)
        (tmp_path / name).write_bytes(out.getvalue())
    jdir = tmp_path / "j"
    run_job(jdir, FIGURE + textwrap.dedent(f"""
        d = pathlib.Path({str(tmp_path)!r})
        run = pluto.init(name="inputs", run_id="inputs")
        run.log({{"png": [pluto.Image((d / "rgb.png").read_bytes(), caption="rgb"),
                         pluto.Image(bytearray((d / "rgba.png").read_bytes()))],
                 "jpeg": pluto.Image((d / "photo.jpg").read_bytes()),
                 "figure": pluto.Image(fig, caption="curve")}})
        fig.clf()  # the image is the figure as logged, not as it is later
        run.finish()
    """), MPLBACKEND="Agg")
    drain(pluto_server, jdir)
    sid = server_id(jdir, "inputs")
    client = stock_client(pluto_server)
    try:
        (rgb_row, rgb_png), (_, rgba_png) = _get(client, sid, "png")
        assert rgb_row["caption"] == "rgb" and rgb_row["fileType"] == "png"
        # raw PNG bytes are sent as given: the same bytes, so the same pixels
        assert rgb_png == (tmp_path / "rgb.png").read_bytes()
        assert rgba_png == (tmp_path / "rgba.png").read_bytes()
        assert (pixels(rgb_png) == rgb).all() and (pixels(rgba_png) == rgba).all()
        [(_, jpeg)] = _get(client, sid, "jpeg")
        assert jpeg == (tmp_path / "photo.jpg").read_bytes()  # not re-encoded: no new loss
        figure = downloaded(client, sid, "figure", tmp_path / "dl")[0]
        [row] = client.get_files(PROJECT, sid, file_name="figure")
    finally:
        client.close()
    assert (row["fileType"], row["caption"]) == ("png", "curve")
    got = PILImage.open(io.BytesIO(figure))
    assert (got.format, got.size) == ("PNG", (120, 80))
    # the test renders the same figure at the same dpi: the pixels must be the same
    scope: dict = {}
    exec(FIGURE, scope)  # noqa: S102 (the test's own constant)
    expected = io.BytesIO()
    scope["fig"].savefig(expected, format="png")
    scope["plt"].close(scope["fig"])
    assert (pixels(figure) == pixels(expected.getvalue())).all()
    assert len(np.unique(pixels(figure).reshape(-1, 4), axis=0)) > 2  # a drawing, not a blank


def test_stock_audio_video_and_artifact_objects_arrive_byte_exact(
        tmp_path: Path, pluto_server: LocalServer) -> None:
    import soundfile as sf

    rng = np.random.default_rng(9)
    clip = (rng.integers(-20000, 20000, 600)).astype(np.int16)
    wav = io.BytesIO()
    sf.write(wav, clip, 8000, format="WAV")  # what the stock SDK writes for an int16 array
    sources = {"clip.wav": wav.getvalue(), "movie.mp4": b"\x00\x00\x00\x18ftypmp42" +
               rng.bytes(700), "clip.webm": b"\x1aE\xdf\xa3" + rng.bytes(300),
               "model.pt": rng.bytes(400_000)}
    for name, data in sources.items():
        (tmp_path / name).write_bytes(data)
    np.save(tmp_path / "clip.npy", clip)
    jdir = tmp_path / "j"
    run_job(jdir, f"""
        import numpy as np, pluto as stock
        d = pathlib.Path({str(tmp_path)!r})
        run = pluto.init(name="stock-objects", run_id="stock-objects")
        run.log({{"audio": [stock.Audio(str(d / "clip.wav"), caption="path"),
                           stock.Audio((d / "clip.wav").read_bytes(), caption="bytes"),
                           stock.Audio(np.load(d / "clip.npy"), rate=8000, caption="array")],
                 "video": [stock.Video(str(d / "movie.mp4")),
                           stock.Video((d / "clip.webm").read_bytes(), format="webm")],
                 "ckpt": [stock.Artifact(str(d / "model.pt"), caption="best"),
                          stock.Artifact(b"raw artifact bytes")]}})
        run.finish()
    """)
    drain(pluto_server, jdir)
    sid = server_id(jdir, "stock-objects")
    client = stock_client(pluto_server)
    try:
        audio, video, ckpt = (_get(client, sid, n) for n in ("audio", "video", "ckpt"))
    finally:
        client.close()
    assert [(f["caption"], f["fileType"]) for f, _ in audio] == [
        ("path", "wav"), ("bytes", "wav"), ("array", "wav")]
    # the array is encoded by pluto-offline: the same WAV as the stock SDK's soundfile.write
    assert [data for _, data in audio] == [wav.getvalue()] * 3
    assert [(f["fileType"], data) for f, data in video] == [
        ("mp4", sources["movie.mp4"]), ("webm", sources["clip.webm"])]
    assert [(f["caption"], f["fileType"], f["fileSize"]) for f, _ in ckpt] == [
        ("best", "pt", 400_000), (None, "", 18)]
    assert [data for _, data in ckpt] == [sources["model.pt"], b"raw artifact bytes"]
    kinds = {n["logName"]: n["logType"] for n in pluto_server.get_run(sid)["logNames"]}
    assert kinds == {"audio": "AUDIO", "video": "VIDEO", "ckpt": "ARTIFACT"}
