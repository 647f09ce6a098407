"""What other users and the network can see: file modes under a permissive umask, the local
server's bind address and key check, and TLS verification in the daemon."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import ssl
import stat
import subprocess
import sys
import textwrap
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from tests.badinput.helpers import clean_env, cli, replayer_at
from tests.fixtures.daemon import JournalBuilder, wait_for


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_journal_files_are_private_whatever_the_umask(tmp_path, pluto_server):
    jdir = tmp_path / "deep" / "journal"
    code = """
    import os, sys, pluto_offline as pluto
    os.umask(0)
    run = pluto.init(dir=sys.argv[1], project="modes", settings={"autostart": False})
    run.log({"x": 1.0})
    run.flush()
    print("ready", flush=True)
    sys.stdin.readline()
    run.finish()
    """
    job = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), str(jdir)],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                           env=clean_env())
    try:
        assert job.stdout.readline().strip() == "ready"
        live = {p.name: _mode(p) for p in [jdir, *jdir.rglob("*")]}
    finally:
        job.communicate("\n", timeout=30)
    assert live["journal"] == 0o700 and live["spill"] == 0o700, live
    for name in ("journal.db", "journal.db-wal", "journal.db-shm"):
        assert live[name] == 0o600, (name, oct(live[name]))
    spills = [n for n in live if n.endswith(".spill")]
    assert spills and all(live[n] == 0o600 for n in spills)

    def umask0() -> None:
        os.umask(0)

    env = clean_env(PLUTO_API_KEY=pluto_server.api_key)
    for args in (["run", "--dir", str(jdir), "--server", pluto_server.url, "--once"],
                 ["export", "--dir", str(jdir), "--out", str(tmp_path / "snap.db")]):
        res = subprocess.run([sys.executable, "-m", "syncd", *args], capture_output=True,
                             text=True, env=env, preexec_fn=umask0, timeout=60)
        assert res.returncode == 0, res.stderr
    assert _mode(tmp_path / "snap.db") == 0o600
    for p in [jdir, *jdir.rglob("*")]:
        assert _mode(p) & 0o077 == 0, f"{p} is {oct(_mode(p))}"


def test_the_local_server_listens_on_loopback_and_wants_a_valid_key(tmp_path):
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "syncd", "serve", "--port", "0",
                                 "--data", str(tmp_path / "d")], stdout=out,
                                stderr=subprocess.STDOUT, env=clean_env())
    try:
        url = wait_for(lambda: "listening on " in log.read_text() and log.read_text()
                       .split("listening on ", 1)[1].split()[0], timeout=20, what="serve")
        port = int(url.rsplit(":", 1)[1])
        listening = _listeners(proc.pid, port)
        assert listening and all(ipaddress.ip_address(a).is_loopback for a in listening), listening
        key = log.read_text().split("new API key (shown once): ", 1)[1].split()[0]
        for path, method, expect in (("/api/runs/create", "POST", 401),
                                     ("/api/runs/list?projectName=p", "GET", 401),
                                     ("/_admin/faults", "POST", 401),
                                     ("/ingest/metrics", "POST", 422)):
            for auth in ({}, {"Authorization": "Bearer plt_wrong"},
                         {"Authorization": f"Basic {key}"}, {"Authorization": "Bearer "}):
                r = requests.request(method, url + path, headers=auth, json={}, timeout=5)
                assert r.status_code == expect, (path, auth, r.status_code, r.text)
        ok = requests.post(url + "/api/slug", headers={"Authorization": f"Bearer {key}"},
                           timeout=5)
        assert ok.status_code == 200
    finally:
        proc.terminate()
        proc.wait(10)


def _listeners(pid: int, port: int) -> list[str]:
    """Local addresses of the LISTEN sockets on ``port`` in the process's network namespace."""
    found = []
    for table, width in (("tcp", 8), ("tcp6", 32)):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, hexport = local.split(":")
            if state == "0A" and int(hexport, 16) == port:
                raw = bytes.fromhex(addr)
                # /proc stores each 32-bit word in host (little-endian) order
                raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
                found.append(str(ipaddress.ip_address(raw if width == 32 else raw[:4])))
    return found


class _Pluto(BaseHTTPRequestHandler):
    """Just enough of the contract for one run, over TLS."""

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path in ("/api/runs/create", "/api/runs/resume"):
            body = {"runId": 1, "number": 1, "displayId": "TLS-1", "url": "https://x/1",
                    "resumed": False}
        else:
            body = {"success": True}
        self._json(body)

    def do_GET(self) -> None:
        self._json({"id": 1, "status": "RUNNING"})

    def _json(self, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def tls_server(tmp_path):
    """An https://127.0.0.1 server with a self-signed certificate."""
    pytest.importorskip("cryptography")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(key, hashes.SHA256()))
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Pluto)
    srv.daemon_threads = True
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"https://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_tls_is_verified_by_default_and_insecure_is_explicit_and_warned(tmp_path, tls_server):
    jb = JournalBuilder(tmp_path / "j")
    key = jb.run("tls-1")
    jb.metrics(key, range(10))
    jb.status(key, "COMPLETED")
    rep = replayer_at(jb.path, tls_server, "plt_k")
    rep.run_pass()
    row = jb.delivery(key)
    assert row.acked_seq == 0 and row.server_id is None
    assert "CERTIFICATE_VERIFY_FAILED" in row.last_error or "SSLError" in row.last_error

    env = clean_env(PLUTO_API_KEY="plt_k")
    strict = cli("push", "--server", tls_server, "--timeout", "3", str(jb.path), env=env)
    assert strict.returncode != 0 and jb.delivery(key).acked_seq == 0
    loose = cli("push", "--server", tls_server, "--insecure", "--timeout", "30", str(jb.path),
                env=env)
    assert loose.returncode == 0, loose.stdout + loose.stderr
    assert "TLS certificate checks are off" in loose.stdout + loose.stderr
    assert jb.delivery(key).server_id == 1 and not jb.rejected(key)
