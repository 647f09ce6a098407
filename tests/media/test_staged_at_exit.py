"""A job that ends normally has staged every file it logged before its process is gone.

Audit of issue 9: with console capture on, a job that logged an artifact by path and an image,
called ``finish()`` and exited 0 left about 2 runs in 10 unstaged. The writer thread (a daemon
thread) had folded the files and started the stager, which inherited ``daemon=True``; the
interpreter does not wait for daemon threads, so the exit cut the staging short. Capture's
flush before the run's end gave the writer thread the time to fold first. Here the race is
made certain: the stager is slowed down, and the job waits until the writer thread folded the
files before it ends. No plutosync or recovery runs before the checks.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import textwrap
from pathlib import Path

import pytest

from tests.media.helpers import job

SLOW_STAGER = """
from pluto_offline.journal import staged
_stage = staged.stage
def _slow(*a, **k):  # staging that takes longer than the job's exit
    time.sleep(0.4)
    return _stage(*a, **k)
staged.stage = _slow
"""

ENDS = {
    "finish": "run.finish()",
    "exit": "pass  # no finish(): the run ends at the interpreter's exit",
    "raise": "raise RuntimeError('the job fails')  # FAILED, by the excepthook",
}
# the writer thread folds the files before the end (the audit's case), or never: then the
# end's own fold, in atexit after threading's shutdown join, is the first to journal them
WRITER_FOLDS = """
deadline = time.monotonic() + 10
while run._media.pending and time.monotonic() < deadline:
    time.sleep(0.01)
assert not run._media.pending, "the writer thread never folded the files"
"""


@pytest.mark.parametrize("capture,end,folded", [
    (True, "finish", True), (True, "exit", True), (False, "finish", True),
    (True, "raise", True), (True, "exit", False)])
def test_every_logged_file_is_staged_when_the_job_has_exited(tmp_path: Path, capture: bool,
                                                              end: str, folded: bool) -> None:
    src = tmp_path / "model.pt"
    src.write_bytes(os.urandom(2_000_000))
    conf = tmp_path / "conf.yaml"
    conf.write_text("lr: 0.1\n")
    jdir = tmp_path / "j"
    proc = job(jdir, SLOW_STAGER + textwrap.dedent(f"""
        import numpy as np
        run = pluto.init(name="exit", run_id="staged-at-exit",
                         settings={{"flush_interval": {0.05 if folded else 3600}}})
        run.log({{"ckpt": pluto.Artifact({str(src)!r}, caption="best"),
                 "conf": pluto.File({str(conf)!r}, name="conf"),
                 "img": pluto.Image(np.zeros((8, 8, 3), dtype=np.uint8))}})
    """) + (WRITER_FOLDS if folded else "") + ENDS[end] + "\n", **({} if capture else {"PLUTO_DISABLE_CONSOLE": "1"}))
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == (1 if end == "raise" else 0), out.decode(errors="replace")
    want = {"ckpt": src.read_bytes(), "conf": conf.read_bytes()}
    src.unlink()  # nothing may depend on the job's files any more
    conf.unlink()
    db = sqlite3.connect(f"file:{jdir / 'journal.db'}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT log_name, blob, lost FROM files ORDER BY id").fetchall()
    finally:
        db.close()
    assert [r[0] for r in rows] == ["ckpt", "conf", "img"]
    assert all(blob and not lost for _, blob, lost in rows), (rows, out.decode(errors="replace"))
    assert os.listdir(jdir / "files" / "incoming") == []
    for log_name, blob, _ in rows:
        staged = (jdir / "files" / blob).read_bytes()
        assert hashlib.sha256(staged).hexdigest() == blob
        if log_name in want:
            assert staged == want[log_name]
