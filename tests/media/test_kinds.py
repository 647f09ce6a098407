"""Audio, Video, Text and the stock SDK's own objects, offline to the stock client; the
optional encoders and what happens without them."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import wave

import httpx
import numpy as np
from PIL import Image as PILImage

import pluto_offline as pluto
from tests.media.helpers import PROJECT, drain, pixels, run_job, server_id, stock_client


def test_audio_video_text_and_stock_objects_round_trip(tmp_path, pluto_server):
    wav = io.BytesIO()
    with wave.open(wav, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(np.arange(800, dtype="<i2").tobytes())
    (tmp_path / "clip.wav").write_bytes(wav.getvalue())
    (tmp_path / "movie.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(200)))
    (tmp_path / "notes.md").write_text("# notes\n")
    jdir = tmp_path / "j"
    run_job(jdir, f"""
        import numpy as np, pluto as stock
        d = pathlib.Path({str(tmp_path)!r})
        wave_ = np.sin(np.linspace(0, 20, 1600)).astype(np.float32)
        frames = np.stack([np.full((3, 8, 10), 40 * t, dtype=np.uint8) for t in range(4)])
        run = pluto.init(name="kinds", run_id="kinds")
        run.log({{"audio": [pluto.Audio(wave_, rate=16000, caption="sine"),
                           pluto.Audio(str(d / "clip.wav"))],
                 "video": [pluto.Video(frames, rate=5, format="gif"),
                           pluto.Video(str(d / "movie.mp4"))],
                 "text": [pluto.Text("hello, offline"), pluto.Text(str(d / "notes.md"))],
                 "stock_img": stock.Image(np.full((4, 4, 3), 7, dtype=np.uint8), caption="s"),
                 "stock_txt": stock.Text("from the stock SDK"),
                 "stock_file": stock.File(str(d / "notes.md"))}})
        run.finish()
    """)
    drain(pluto_server, jdir)
    sid = server_id(jdir, "kinds")
    client = stock_client(pluto_server)
    try:
        def get(log_name: str) -> list[tuple[dict, bytes]]:
            files = client.get_files(PROJECT, sid, file_name=log_name)
            return [(f, httpx.get(f["url"], timeout=30).content) for f in files]

        (sine, sine_bytes), (clip, clip_bytes) = get("audio")
        assert (sine["fileType"], sine["caption"], clip["fileType"]) == ("wav", "sine", "wav")
        with wave.open(io.BytesIO(sine_bytes)) as w:
            assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2)
            got = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        expected = np.rint(np.sin(np.linspace(0, 20, 1600)).astype(np.float32)
                           .astype(np.float64) * 32767).astype("<i2")
        assert (got == expected).all()
        assert clip_bytes == wav.getvalue()
        (gif, gif_bytes), (mp4, mp4_bytes) = get("video")
        assert (gif["fileType"], mp4["fileType"]) == ("gif", "mp4")
        movie = PILImage.open(io.BytesIO(gif_bytes))
        assert movie.n_frames == 4 and movie.size == (10, 8)
        movie.seek(2)
        assert (np.asarray(movie.convert("RGB")) == 80).all()
        assert mp4_bytes == (tmp_path / "movie.mp4").read_bytes()
        (t1, t1_bytes), (t2, t2_bytes) = get("text")
        assert (t1["fileType"], t1_bytes) == ("txt", b"hello, offline")
        assert (t2["fileType"], t2_bytes) == ("md", b"# notes\n")
        [(img, img_bytes)] = get("stock_img")
        assert img["caption"] == "s" and (pixels(img_bytes) == 7).all()
        assert get("stock_txt")[0][1] == b"from the stock SDK"
        assert get("stock_file")[0][1] == b"# notes\n"
    finally:
        client.close()
    kinds = {n["logName"]: n["logType"] for n in pluto_server.get_run(sid)["logNames"]}
    assert kinds == {"audio": "AUDIO", "video": "VIDEO", "text": "TEXT", "stock_img": "IMAGE",
                     "stock_txt": "TEXT", "stock_file": "FILE"}


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)


def test_import_needs_no_encoder_and_a_missing_one_names_the_extra():
    # (the stock pluto-ml installs a startup hook that imports them all: compare with that)
    p = _python("import sys\nbefore = set(sys.modules)\nimport pluto_offline\n"
                "print(sorted(m for m in set(sys.modules) - before "
                "if m.split('.')[0] in ('numpy', 'PIL', 'soundfile')))")
    assert p.stdout.strip() == "[]", p.stderr
    p = _python("import sys\nsys.modules['PIL'] = None\nimport numpy as np, pluto_offline\n"
                "pluto_offline.Video(np.zeros((2, 3, 4, 4), np.uint8), format='gif')")
    # commands that work without PyPI: the packages themselves, or the extra from a clone
    assert "pip install numpy Pillow (or, in a pluto-offline clone: pip install '.[media]')" \
        in p.stderr
    assert "EncoderMissing" in p.stderr


def test_bad_media_values_say_what_is_wrong(tmp_path, monkeypatch):
    monkeypatch.setenv("PLUTO_OFFLINE_AUTOSTART", "0")
    import pluto_offline as pluto

    try:
        pluto.File(str(tmp_path / "nope.txt"))
    except FileNotFoundError as exc:
        assert "no such file" in str(exc)
    else:
        raise AssertionError("File of a missing path")
    for bad, words in ((lambda: pluto.Artifact(12), "neither an existing file nor bytes"),
                       (lambda: pluto.Video(np.zeros((2, 3, 4, 4), np.uint8), format="mp4"),
                        "ffmpeg")):
        try:
            bad()
        except ValueError as exc:
            assert words in str(exc)
        else:
            raise AssertionError(words)
    run = pluto.init(dir=str(tmp_path / "j"), project="p", name="bad")
    try:
        run.log({"img": pluto.Image(np.zeros((2, 3, 4, 5)))})  # not an image shape
        run.flush()
    finally:
        run.finish()
    from pluto_offline import journal
    from pluto_offline.journal import filerows

    with journal.Journal.open(tmp_path / "j", readonly=True) as j:
        [lost] = filerows.lost_files(j)
    assert "an Image array must be" in lost["reason"]


def test_a_name_logged_while_a_fold_commits_is_registered_later(tmp_path):
    """The writer thread's fold journals the new log names it saw; a name the training thread
    logs before that fold's commit was cleared with them and never registered (the server's
    run then lacked it in logNames: flaky round-trip tests under load)."""
    from pluto_offline import journal
    from pluto_offline.media.recorder import MediaLog

    j = journal.Journal.open(tmp_path / "j")
    with j.transaction():
        key = journal.add_run(j, project="p", run_id="r", name="r")
    media = MediaLog(j.path, key)
    media.add("first", [pluto.Text("one")], step=0, t=1, writer="w")
    with j.transaction():
        n = media.fold(j, 1)
    media.add("second", [pluto.Text("two")], step=1, t=2, writer="w")  # meanwhile
    media.folded(n)
    with j.transaction():
        media.folded(media.fold(j, 2))
    media.wait_staged(30)
    names = [json.loads(p) for (p,) in j.conn.execute(
        "SELECT payload FROM events WHERE kind = 'lognames' ORDER BY seq")]
    assert names == [{"type": "TEXT", "names": ["first"]}, {"type": "TEXT", "names": ["second"]}]
    assert j.conn.execute("SELECT count(*) FROM files").fetchone()[0] == 2
    j.close()
