"""Redaction end to end: a real job prints its API key and token shapes through every writer
(print, stderr, ``os.write``, a subprocess), ``plutosync push`` delivers the run to the local
server, and what the server holds is read back: through the stock client's ``get_logs``, and
as the raw bytes of every file of its data directory (the SQLite database, its write-ahead
log, the server's log), and the push's own log."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pluto.query as pq

from tests.console import jobs
from tests.console.test_capture import _raw_journal
from tests.fixtures.daemon import DaemonProcess
from tests.fixtures.server import LocalServer

R = "***REDACTED***"
# The token bodies the job prints: none may reach the server while redaction is on.
JWT, AWS = "eyJhbGciOiJIUzI1NiJ9.payl0adXYZ", "AKIAIOSFODNN7EXAMPL3"
HF, PASSWORD, URL_PASSWORD, GLUED = "hf_abcdefghijklmnop", "hunter22", "s3cretPw", "hf_gluedb0dy1"
GHP, SK, QUOTED = "ghp_" + "Gh1tHubB0dy" * 3 + "xyz", "sk-" + "0penAiB0dy" * 4, "qu0tedValue9"
BODIES = [JWT, AWS, HF, PASSWORD, URL_PASSWORD, GLUED, GHP, SK, QUOTED, "RSA PRIVATE KEY"]

# Every writer of the job: Python's stdout and stderr, raw fds 1 and 2, a child process.
PRINTS = f"""
key = os.environ["PLUTO_API_KEY"]
print("key:", key, flush=True)
print("Authorization: Bearer {JWT}", flush=True)
print("hf token {HF} and password={PASSWORD}", file=sys.stderr, flush=True)
os.write(1, b"postgres://bob:{URL_PASSWORD}@db:5432/x\\n")
os.write(2, ("glued " + key + "{GLUED}\\n").encode())
subprocess.run([sys.executable, "-c", "import os; print('child aws {AWS} and {GHP}', "
                "os.environ['PLUTO_API_KEY'])"])
print('api_key: "{QUOTED}"', flush=True)
print("openai {SK}", flush=True)
print("-----BEGIN RSA PRIVATE KEY-----", flush=True)
"""
REDACTED_LINES = {
    "INFO": [f"key: {R}", f"Authorization: Bearer {R}", f"postgres://bob:{R}@db:5432/x",
             f"child aws {R} and {R} {R}", R, f"openai {R}", R],
    "ERROR": [f"hf token {R} and {R}", f"glued {R}"],
}
# with the shapes off (sanitize_logs=False): the lines as printed, but never the key
AS_PRINTED = {
    "INFO": [f"key: {R}", f"Authorization: Bearer {JWT}", f"postgres://bob:{URL_PASSWORD}@db:5432/x",
             f"child aws {AWS} and {GHP} {R}", f'api_key: "{QUOTED}"', f"openai {SK}",
             "-----BEGIN RSA PRIVATE KEY-----"],
    "ERROR": [f"hf token {HF} and password={PASSWORD}", f"glued {R}{GLUED}"],
}


def _job(journal_dir: Path, run_id: str, server: LocalServer, settings: str = "None",
         **env: str) -> None:
    """A job with the server's key in its environment (the key a user's job holds) prints
    the lines of ``PRINTS``; its terminal gets them as printed, key and all."""
    code, out, err = jobs.run(
        journal_dir, f'run = pluto.init(name="{run_id}", run_id="{run_id}", settings={settings})'
        + PRINTS + "run.finish()\n", PLUTO_API_KEY=server.api_key, **env)
    assert code == 0, err
    assert server.api_key.encode() in out and PASSWORD.encode() in err  # the terminal's


def _push(server: LocalServer, journal_dir: Path) -> str:
    """``plutosync push DIR``; its log."""
    d = DaemonProcess(server, journal_dir, str(journal_dir), command="push")
    assert d.wait(60) == 0, d.log()
    return d.log()


def _logs(server: LocalServer, run_id: str) -> tuple[dict[str, list[str]], dict[str, Any]]:
    """The run's lines per type, in line order, and its details, read with the stock client."""
    (sid,) = [r["id"] for r in server.list_runs("proj") if r["externalId"] == run_id]
    client = pq.Client(api_token=server.api_key, host=server.url)
    try:
        logs = client.get_logs("proj", sid)
        details = client.get_run("proj", sid)
    finally:
        client.close()
    by_type: dict[str, list[str]] = {}
    for r in sorted(logs, key=lambda r: r["lineNumber"]):
        by_type.setdefault(r["logType"], []).append(r["message"])
    return by_type, details


def _leaks(files: dict[str, bytes], secrets: list[str]) -> list[tuple[str, str]]:
    return [(name, s) for name, raw in files.items() for s in secrets if s.encode() in raw]


def test_neither_the_key_nor_a_token_body_reaches_the_server(tmp_path, pluto_server):
    _job(tmp_path / "j", "s1", pluto_server)
    log = _push(pluto_server, tmp_path / "j")
    lines, _ = _logs(pluto_server, "s1")
    assert lines == REDACTED_LINES  # every line arrived, redacted where it held a secret
    secrets = [pluto_server.api_key, *BODIES]
    running = _raw_journal(pluto_server.data_dir)  # the server up: its lines in the WAL too
    assert "pluto-server.db-wal" in running and "server.log" in running, sorted(running)
    assert any(R.encode() in raw for raw in running.values())  # the files do hold the lines
    pluto_server.stop()  # a clean stop checkpoints the WAL into the database: read it again
    stopped = _raw_journal(pluto_server.data_dir)
    assert R.encode() in stopped["pluto-server.db"]
    assert _leaks(running, secrets) == [] and _leaks(stopped, secrets) == []
    assert _leaks({"push log": log.encode()}, secrets) == []
    assert _leaks(_raw_journal(tmp_path / "j"), secrets) == []  # (nor the journal)


def test_with_sanitize_logs_off_lines_arrive_as_printed_but_never_the_key(tmp_path,
                                                                         pluto_server):
    """``settings={"sanitize_logs": False}`` or ``PLUTO_SANITIZE_LOGS=0`` turn the shapes
    off, not the key's own redaction; the setting wins over the variable."""
    _job(tmp_path / "j", "off-setting", pluto_server, '{"sanitize_logs": False}')
    _job(tmp_path / "j", "off-env", pluto_server, PLUTO_SANITIZE_LOGS="0")
    _job(tmp_path / "j", "on-setting", pluto_server, '{"sanitize_logs": True}',
         PLUTO_SANITIZE_LOGS="0")
    log = _push(pluto_server, tmp_path / "j")
    for run_id, want, sanitize in (("off-setting", AS_PRINTED, False),
                                   ("off-env", AS_PRINTED, False),
                                   ("on-setting", REDACTED_LINES, True)):
        lines, details = _logs(pluto_server, run_id)
        assert lines == want, run_id
        assert details["loggerSettings"]["sanitize_logs"] is sanitize, run_id
    running = _raw_journal(pluto_server.data_dir)
    assert any(PASSWORD.encode() in raw for raw in running.values())  # the files hold them
    pluto_server.stop()
    for files in (running, _raw_journal(pluto_server.data_dir), {"push log": log.encode()}):
        assert _leaks(files, [pluto_server.api_key]) == []


def test_under_torchrun_each_line_carries_its_rank_on_the_server(tmp_path, pluto_server):
    """``RANK`` set (torchrun): lines are prefixed ``[rankN] ``, as the stock SDK does, and
    still redacted."""
    _job(tmp_path / "j", "r1", pluto_server, RANK="3")
    _push(pluto_server, tmp_path / "j")
    lines, _ = _logs(pluto_server, "r1")
    assert lines == {kind: [f"[rank3] {line}" for line in want]
                     for kind, want in REDACTED_LINES.items()}
