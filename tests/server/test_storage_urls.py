"""The local server's storage URLs are presigned as the real server's are (pluto-api.md): the
PUT and GET requests carry no API key, so the signature alone decides — a changed key or
signature, an expired URL, or a download URL used for an upload is refused with 403 and
stores nothing."""

from __future__ import annotations

import hashlib
import hmac
import time
from urllib.parse import parse_qs, quote, unquote, urlsplit

import requests

PROJECT = "storage"


def _presign(server, run_id: int, name: str = "w.bin") -> str:
    resp = server.request("POST", "/files", json={"files": [{
        "fileName": name, "logName": "ckpt", "fileSize": 5, "fileType": "bin", "step": 1,
        "time": 1, "sampleIndex": 0}]},
        headers={"X-Run-Id": str(run_id), "X-Project-Name": PROJECT})
    assert resp.status_code == 200, resp.text
    [entry] = resp.json()["ckpt"]
    return entry[name]


def _files(server, run_id: int) -> list[dict]:
    return server.request("GET", "/api/runs/files",
                          params={"projectName": PROJECT, "runId": run_id}).json()["files"]


def _signed(server, url: str, *, exp: int) -> str:
    """``url`` signed again with another expiry, with the server's own secret (what an hour's
    wait would give)."""
    parts = urlsplit(url)
    key = parts.path[len("/_storage/"):]
    secret = (server.data_dir / "url-secret").read_bytes()
    sig = hmac.new(secret, f"put\n{unquote(key)}\n{exp}".encode(), hashlib.sha256).hexdigest()
    return f"{server.url}/_storage/{quote(unquote(key), safe='/')}?op=put&exp={exp}&sig={sig}"


def test_a_presigned_put_needs_no_key_and_a_wrong_signature_or_expiry_is_refused(pluto_server):
    run = pluto_server.create_run(PROJECT, "urls")["runId"]
    url = _presign(pluto_server, run)
    assert "sig=" in url and "exp=" in url
    q = parse_qs(urlsplit(url).query)
    assert int(q["exp"][0]) - time.time() > 3500  # an hour, as the real server's

    tampered = url[:-4] + ("0000" if not url.endswith("0000") else "1111")
    other_key = url.replace("/ckpt/", "/other/")
    expired = _signed(pluto_server, url, exp=int(time.time()) - 1)
    for bad, why in ((tampered, "SignatureDoesNotMatch"), (other_key, "SignatureDoesNotMatch"),
                     (expired, "expired")):
        resp = requests.put(bad, data=b"evil!", timeout=30)
        assert resp.status_code == 403 and why in resp.text, (bad, resp.text)

    ok = requests.put(url, data=b"hello", headers={"Content-Type": "application/octet-stream"},
                      timeout=30)
    assert ok.status_code == 200, ok.text
    [row] = _files(pluto_server, run)
    download = row["url"]
    assert requests.get(download, timeout=30).content == b"hello"  # the tampered PUTs stored nothing
    # the GET URL does not allow a PUT, nor the PUT URL a GET
    assert requests.put(download, data=b"evil!", timeout=30).status_code == 403
    assert requests.get(url, timeout=30).status_code == 403
    assert requests.get(download, timeout=30).content == b"hello"
    # a fresh signature for the same key, still valid, works: the check is the signature's
    again = _signed(pluto_server, url, exp=int(time.time()) + 60)
    assert requests.put(again, data=b"world", timeout=30).status_code == 200
    assert requests.get(download, timeout=30).content == b"world"
