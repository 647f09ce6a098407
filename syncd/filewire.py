"""The stock file protocol on the wire (pluto-api.md ``POST /files``): presign, PUT, and what the
server already holds (the run's ledger, the read side), each turned into the client's typed
errors. :mod:`syncd.files` decides what to send.

The PUT goes to a presigned storage URL: it carries no API key (S3 refuses a request with both
a signature and an ``Authorization`` header, and the key must never leave for storage), and its
body is streamed from the staged file in pieces, so a 1 GiB artifact never sits in memory.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, BinaryIO

import requests
from requests.utils import super_len

from pluto_offline.journal.filerows import FileRow
from syncd import ledger
from syncd.client import PlutoClient, RejectedError, TransientError

FILES_DELIVERED = "filesDelivered"  # config.plutoOffline: per copy, every file id ≤ is done
FILES_SENDING = "filesSending"  # ... and a presign for ids up to this one went out
PUT_TIMEOUT = (10.0, 300.0)


class ExpiredUrl(Exception):
    """The storage refused the presigned URL (403): it expired or was never valid."""


def presign_entry(f: FileRow) -> dict[str, Any]:
    """One file of a presign body, as the stock SDK's sync process writes it."""
    entry: dict[str, Any] = {"fileName": f.file_name, "fileSize": f.size or 0,
                             "fileType": f.file_type, "time": f.time, "logName": f.log_name,
                             "step": f.step, "sampleIndex": f.sample_index}
    if f.caption is not None:
        entry["caption"] = f.caption
    return entry


def presign(client: PlutoClient, run_id: int, project: str,
            files: list[FileRow]) -> dict[tuple[str, str], str]:
    """``POST /files``: every file gets a row on the server and a PUT URL, returned by
    ``(logName, fileName)``. An answer that names no URL for a file is a protocol error."""
    url = client.settings.ingest_url + "/files"
    resp = client._send("POST", url, "ingest",
                        json_body={"files": [presign_entry(f) for f in files]},
                        headers={"X-Run-Id": str(run_id), "X-Project-Name": project})
    answer = client._json(resp, url)
    urls: dict[tuple[str, str], str] = {}
    for log_name, entries in answer.items():
        for mapping in entries if isinstance(entries, list) else ():
            if isinstance(mapping, dict):
                for name, target in mapping.items():
                    if isinstance(target, str):
                        urls[(log_name, name)] = target
    missing = [f.file_name for f in files if (f.log_name, f.file_name) not in urls]
    if missing:
        raise TransientError(200, f"protocol error: {url} answered without a URL for "
                                  f"{len(missing)} file(s) (e.g. {missing[0]})")
    return urls


class _Counted:
    """A body that tells ``on_sent`` how many of its bytes were read so far (each piece is
    read just before it is written to the connection); its length is the body's own."""

    def __init__(self, body: BinaryIO, on_sent: Callable[[int], None]) -> None:
        self.body, self.on_sent, self.sent = body, on_sent, 0

    def __len__(self) -> int:  # the Content-Length requests would send for the body itself
        return super_len(self.body)

    def read(self, size: int = -1) -> bytes:
        piece = self.body.read(size)
        self.sent += len(piece)
        self.on_sent(self.sent)
        return piece


def put(storage: requests.Session, url: str, body: BinaryIO, size: int,
        content_type: str, on_sent: Callable[[int], None] | None = None) -> None:
    """PUT ``size`` bytes read from ``body`` to a presigned URL. Raises :class:`ExpiredUrl`
    (403), ``TransientError`` or ``RejectedError`` (another 4xx: the storage refuses it).
    ``on_sent(n)``: n bytes of the body are on their way (push's progress in bytes)."""
    where = url.split("?", 1)[0]
    data = body if on_sent is None else _Counted(body, on_sent)
    try:
        # a file object: requests sends its length and streams it (never read whole)
        resp = storage.put(url, data=data, timeout=PUT_TIMEOUT, allow_redirects=False,
                           headers={"Content-Type": content_type})
    except requests.Timeout:
        raise TransientError(None, f"upload to {where} timed out") from None
    except requests.RequestException as exc:
        raise TransientError(None, f"upload to {where} failed ({type(exc).__name__})") from None
    with resp:
        if resp.status_code in (200, 201, 204):
            return
        if resp.status_code == 403:
            raise ExpiredUrl(f"{where} refused the presigned URL (HTTP 403)")
        if resp.status_code >= 500 or resp.status_code in (408, 429):
            raise TransientError(resp.status_code, f"upload to {where}: HTTP {resp.status_code}")
        raise RejectedError(resp.status_code, f"the storage refused the upload: HTTP "
                                              f"{resp.status_code} {resp.text[:200]}")


def ledger_marks(client: PlutoClient, server_id: int, copy: str) -> tuple[int, int]:
    """``(delivered, sending)`` file ids of this journal's copy noted on the run (0: none)."""
    raw = client.run_fields(server_id, (f"config.{ledger.KEY}",)).get(f"config.{ledger.KEY}")
    if not isinstance(raw, dict):
        return 0, 0

    def mark(name: str) -> int:
        value = raw.get(name)
        got = value.get(copy) if isinstance(value, dict) else None
        return got if isinstance(got, int) and not isinstance(got, bool) else 0

    return mark(FILES_DELIVERED), mark(FILES_SENDING)


def note(client: PlutoClient, server_id: int, field: str, copy: str, file_id: int) -> None:
    client.update_config(server_id, json.dumps({ledger.KEY: {field: {copy: file_id}}}))


def on_server(client: PlutoClient, server_id: int, project: str,
              log_names: set[str]) -> dict[tuple[str, str], dict[str, Any]]:
    """The run's file rows the server holds for ``log_names``, by ``(logName, fileName)``."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for log_name in sorted(log_names):
        answer = client._api("GET", "/api/runs/files", params={
            "runId": str(server_id), "projectName": project, "logName": log_name})
        for row in answer.get("files") or []:
            if isinstance(row, dict):
                out[(str(row.get("logName")), str(row.get("fileName")))] = row
    return out


def stored(storage: requests.Session, row: dict[str, Any], size: int) -> bool:
    """Whether the object behind a read-side row holds ``size`` bytes (its download URL is
    opened and closed at once: only the length is read)."""
    url = row.get("url") or row.get("downloadUrl")
    if not isinstance(url, str):
        return False
    try:
        with storage.get(url, stream=True, timeout=PUT_TIMEOUT, allow_redirects=True) as resp:
            return resp.status_code == 200 and resp.headers.get("Content-Length") == str(size)
    except requests.RequestException as exc:
        raise TransientError(None, f"cannot check an upload ({type(exc).__name__})") from None
