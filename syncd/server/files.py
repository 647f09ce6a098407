"""Files on the local server: presign (``POST /files``), the storage PUT/GET target, and the
read side (``GET /api/runs/files``) that ``pluto.query.Client.get_files``/``download_file`` use.

As the real server (pluto-api.md): every presign inserts a row (no deduplication: that is the
client's job), the object's key is ``<project>/<runId>/<logName>/<fileName>`` (a second upload
under one key replaces the first), and the URLs are presigned: signed with a secret kept in
the data directory (``url-secret``, 0600) and expiring after ``URL_TTL_S``, so the storage
requests carry no API key. Objects live in ``<data>/objects/`` under the sha256 of their key;
an upload is written to a temporary file and renamed, so a GET sees a whole object or none.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
import uuid
from collections.abc import Callable
from typing import Any, BinaryIO
from urllib.parse import quote, unquote

from syncd.server import validate as v
from syncd.server.db import Database, now_ms
from syncd.server.errors import HttpError, api_error, ingest_error
from syncd.server.reads import iso
from syncd.server.series import log_group

PREFIX = "/_storage/"
URL_TTL_S = 3600  # the real server's presigned URLs expire after one hour
CHUNK = 1 << 20

SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY,
    project TEXT NOT NULL,
    run_id INTEGER NOT NULL,
    log_name TEXT NOT NULL,
    file_name TEXT NOT NULL,
    file_type TEXT NOT NULL,
    file_size INTEGER NOT NULL,
    step INTEGER,
    time INTEGER NOT NULL,
    sample_index INTEGER,
    caption TEXT,
    created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS files_by_run ON files (project, run_id, log_name);
"""


class Files:
    def __init__(self, db: Database, data_dir: str, base_url: Callable[[], str]) -> None:
        self.db = db
        self.base_url = base_url  # a callable: the address is known once listening
        self.objects = os.path.join(data_dir, "objects")
        os.makedirs(self.objects, mode=0o700, exist_ok=True)
        with db.lock:
            db.conn.executescript(SCHEMA)
        self.secret = _secret(os.path.join(data_dir, "url-secret"))

    # ------------------------------------------------------------------ presign
    def presign(self, project: str, run_id: int, body: Any) -> dict[str, list[dict[str, str]]]:
        """Insert one row per file and answer presigned PUT URLs grouped by logName."""
        files = body.get("files") if isinstance(body, dict) else None
        if not isinstance(files, list) or not files:
            raise ingest_error("files: expected a non-empty array")
        rows = [_checked(f, i) for i, f in enumerate(files)]
        answer: dict[str, list[dict[str, str]]] = {}
        with self.db.transaction() as conn:
            for r in rows:
                conn.execute(
                    "INSERT INTO files (project, run_id, log_name, file_name, file_type, "
                    "file_size, step, time, sample_index, caption, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (project, run_id, r["logName"], r["fileName"], r["fileType"],
                     r["fileSize"], r["step"], r["time"], r["sampleIndex"], r.get("caption"),
                     now_ms()))
        for r in rows:
            key = _key(project, run_id, r["logName"], r["fileName"])
            answer.setdefault(r["logName"], []).append({r["fileName"]: self.url(key, "put")})
        return answer

    def url(self, key: str, op: str) -> str:
        exp = int(time.time()) + URL_TTL_S
        return (f"{self.base_url()}{PREFIX}{quote(key, safe='/')}?op={op}&exp={exp}"
                f"&sig={self._sign(op, key, exp)}")

    def _sign(self, op: str, key: str, exp: int) -> str:
        return hmac.new(self.secret, f"{op}\n{key}\n{exp}".encode(), hashlib.sha256).hexdigest()

    # ------------------------------------------------------------------ storage
    def authorize(self, path: str, query: dict[str, str], op: str) -> str:
        """The object key a storage request may act on; raises 403 as S3 does otherwise."""
        key = unquote(path[len(PREFIX):])
        try:
            exp = int(query.get("exp", ""))
        except ValueError:
            raise api_error(403, "SignatureDoesNotMatch") from None
        if query.get("op") != op or not hmac.compare_digest(
                self._sign(op, key, exp), query.get("sig", "")):
            raise api_error(403, "SignatureDoesNotMatch")
        if exp < time.time():
            raise api_error(403, "Request has expired")
        return key

    def object_path(self, key: str) -> str:
        return os.path.join(self.objects, hashlib.sha256(key.encode()).hexdigest())

    def put(self, key: str, body: BinaryIO, length: int) -> int:
        """Store ``length`` bytes read from ``body`` under ``key``; returns bytes stored.
        Raises ``ConnectionError`` when the client goes away first (nothing is stored)."""
        final = self.object_path(key)
        tmp = f"{final}.{uuid.uuid4().hex}.part"
        got = 0
        try:
            with open(tmp, "wb") as out:
                while got < length:
                    piece = body.read(min(CHUNK, length - got))
                    if not piece:
                        raise ConnectionError(f"upload cut short at {got} of {length} bytes")
                    out.write(piece)
                    got += len(piece)
            os.replace(tmp, final)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return got

    def open(self, key: str) -> BinaryIO:
        try:
            return open(self.object_path(key), "rb")
        except FileNotFoundError:
            raise HttpError(404, {"error": "NoSuchKey"}) from None

    # ------------------------------------------------------------------ read side
    def list(self, project: str, run_id: int, log_name: str | None) -> dict[str, Any]:
        where, params = "project = ? AND run_id = ?", [project, run_id]
        if log_name:
            where += " AND log_name = ?"
            params.append(log_name)
        rows = self.db.query(
            "SELECT file_name, file_type, file_size, log_name, time, step, caption, "
            f"sample_index FROM files WHERE {where} ORDER BY step, log_name, sample_index, id",
            params)
        return {"files": [{
            "fileName": name, "fileType": ftype, "fileSize": size, "logName": log,
            "logGroup": log_group(log) or None, "time": iso(at), "step": step,
            "caption": caption, "sampleIndex": index,
            "url": self.url(_key(project, run_id, log, name), "get"),
        } for name, ftype, size, log, at, step, caption, index in rows]}

    def count(self, run_id: int) -> int:
        """Rows presigned for a run (``/_admin/stats``): a duplicate presign shows here."""
        return self.db.query("SELECT count(*) FROM files WHERE run_id = ?", (run_id,))[0][0]


def _key(project: str, run_id: int, log_name: str, file_name: str) -> str:
    return f"{project}/{run_id}/{log_name}/{file_name}"


def _checked(entry: Any, i: int) -> dict[str, Any]:
    """One presign entry, checked like the real ingest service (its fields, exact names)."""
    if not isinstance(entry, dict):
        raise ingest_error(f"files[{i}]: expected an object")
    for name in ("fileName", "logName", "fileType"):
        if not isinstance(entry.get(name), str) or (name != "fileType" and not entry[name]):
            raise ingest_error(f"files[{i}].{name}: expected a non-empty string")
    if "/" in entry["fileName"] or entry["fileName"] in (".", ".."):
        raise ingest_error(f"files[{i}].fileName: a name, not a path")
    out = dict(entry)
    for name, required in (("fileSize", True), ("time", True), ("step", False),
                           ("sampleIndex", False)):
        value = v.as_int(entry.get(name))
        if value is None and entry.get(name) is None and not required:
            out[name] = None
            continue
        if value is None or value < 0:
            raise ingest_error(f"files[{i}].{name}: expected a non-negative integer")
        out[name] = value
    if entry.get("caption") is not None and not isinstance(entry["caption"], str):
        raise ingest_error(f"files[{i}].caption: expected a string")
    return out


def _secret(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        pass
    secret = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(secret)
    return secret
