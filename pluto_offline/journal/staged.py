"""Staged files: the bytes of logged files, kept inside the journal directory until delivered.

Layout (``<journal dir>/files/``, 0700; every file 0600)::

    files/incoming/<writer>.<n>.in   one per logged file, written by log() before it returns
    files/<sha256>                   the staged bytes, content-addressed (one copy per content)
    files/.tmp-<uuid>                a blob being written (deleted when found stale)

An incoming file is ``MAGIC``, a u32 length, that many bytes of JSON (the file's row, see
:func:`row_values`, and how to make its bytes) and the payload (raw pixels, PCM, the bytes as
given; nothing for a file given by path, whose size and times are in the JSON instead). The
training thread only writes it; the writer's fold journals the row (``files`` table); a
*stager* — a thread of the job, or recovery in ``plutosync`` / the next ``init()`` once the job
is gone — encodes it, hashes it into ``files/<sha256>`` (fsync'd) and records the blob on the
row, then deletes the incoming file. A file given by path is copied from its source only if
the source still has the size, mtime and inode it had at ``log()``; otherwise the row is
marked lost with the reason. Nothing refers to the job's working directory once staged.

Quota: ``PLUTO_OFFLINE_MAX_STAGED`` (bytes; ``K``/``M``/``G``/``T`` suffixes), default
``DEFAULT_MAX_STAGED`` (20 GiB): past it, new files are refused with one warning and recorded
as lost ("over the staging quota"), never silently.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import uuid
from pathlib import Path
from typing import Any, BinaryIO

from pluto_offline.journal import encoders
from pluto_offline.journal.store import Journal

FILES_DIR = "files"
INCOMING = "incoming"
MAGIC = b"PLFILE1\n"
_LEN = struct.Struct("<I")
DEFAULT_MAX_STAGED = 20 << 30
QUOTA_ENV = "PLUTO_OFFLINE_MAX_STAGED"
CHUNK = 1 << 20  # copy / hash / upload in pieces of this size: memory stays flat
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
ROW_FIELDS = ("run", "writer", "log_name", "file_name", "file_type", "kind", "content_type",
              "step", "time", "sample_index", "caption")


def files_dir(j_dir: Path) -> Path:
    return Path(j_dir) / FILES_DIR


def incoming_dir(j_dir: Path) -> Path:
    return files_dir(j_dir) / INCOMING


def ensure_dirs(j_dir: Path) -> Path:
    """Create ``files/incoming`` (0700) and return it."""
    inc = incoming_dir(j_dir)
    if not inc.is_dir():
        for d in (files_dir(j_dir), inc):
            d.mkdir(mode=0o700, exist_ok=True)
            os.chmod(d, 0o700)
    return inc


def max_staged(env: dict[str, str] | None = None) -> int:
    """The staging quota in bytes (``PLUTO_OFFLINE_MAX_STAGED``). Raises ``ValueError`` naming
    the variable when it cannot be read."""
    text = (env if env is not None else os.environ).get(QUOTA_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_STAGED
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?", text, re.I)
    if not m:
        raise ValueError(f"{QUOTA_ENV}={text!r}: write a size in bytes, e.g. 500M or 20G")
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def usage(j_dir: Path) -> int:
    """Bytes held under ``files/`` now (staged blobs and incoming files)."""
    total = 0
    for d in (files_dir(j_dir), incoming_dir(j_dir)):
        try:
            with os.scandir(d) as it:
                for e in it:
                    if e.is_file(follow_symlinks=False):
                        total += e.stat(follow_symlinks=False).st_size
        except FileNotFoundError:
            pass
    return total


# ---------------------------------------------------------------------- incoming files
def write_incoming(path: Path, meta: dict[str, Any], payload: Any = b"") -> None:
    """Write one incoming file (the training thread's only work for a logged file): created
    exclusively, owner-only, header and payload in two writes. ``payload`` is any buffer.
    Once this returns the bytes are in the kernel's page cache: they survive SIGKILL."""
    head = json.dumps(meta, separators=(",", ":")).encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, MAGIC + _LEN.pack(len(head)) + head)
        view = memoryview(payload).cast("B")
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def read_incoming(path: Path) -> tuple[dict[str, Any], memoryview] | None:
    """``(meta, payload)`` of an incoming file, or None when it is torn (its writer was killed
    inside ``log()``, which then never returned: nothing was promised) or not ours."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    if len(data) < len(MAGIC) + 4 or not data.startswith(MAGIC):
        return None
    (n,) = _LEN.unpack_from(data, len(MAGIC))
    start = len(MAGIC) + 4
    try:
        meta = json.loads(data[start:start + n])
    except ValueError:
        return None
    payload = memoryview(data)[start + n:]
    if not isinstance(meta, dict) or len(payload) != meta.get("payload", 0):
        return None
    return meta, payload


def row_values(meta: dict[str, Any], name: str) -> dict[str, Any]:
    """The ``files`` row an incoming file's meta describes (``name``: the incoming file)."""
    values = {k: meta.get(k) for k in ROW_FIELDS}
    source = {"incoming": name, "how": meta.get("how", "raw")}
    if "path" in meta:
        source.update(path=meta["path"], stat=meta.get("stat"))
    values["source"] = json.dumps(source)
    values["lost"] = meta.get("lost")
    return values


def insert_rows(j: Journal, rows: list[dict[str, Any]]) -> None:
    """Journal logged files (inside the writer's fold transaction, after its events): each row
    is after every event committed so far, so a status journaled later waits for it."""
    after = j.conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0]
    j.conn.executemany(
        "INSERT INTO files (run, writer, after_seq, log_name, file_name, file_type, kind, "
        "content_type, step, time, sample_index, caption, source, lost) "
        "VALUES (:run, :writer, :after, :log_name, :file_name, :file_type, :kind, "
        ":content_type, :step, :time, :sample_index, :caption, :source, :lost)",
        [{**r, "after": after} for r in rows])


# ---------------------------------------------------------------------- blobs
def blob_path(j_dir: Path, sha: str) -> Path:
    return files_dir(j_dir) / sha


def open_blob(j: Journal, sha: str) -> BinaryIO:
    """The staged bytes of ``sha`` for reading: the blob file beside the journal, else the
    copy inside an exported journal file (``export_blobs``). Raises FileNotFoundError."""
    path = blob_path(j.dir, sha)
    try:
        return open(path, "rb")
    except FileNotFoundError:
        from pluto_offline.journal import carried

        if carried.has_blob(j, sha):
            return carried.BlobReader(j, sha)
        raise


def store_blob(j_dir: Path, chunks: Any) -> tuple[str, int]:
    """Write ``chunks`` (bytes pieces) as a content-addressed blob, fsync'd; ``(sha, size)``."""
    ensure_dirs(j_dir)
    d = files_dir(j_dir)
    tmp = d / f".tmp-{uuid.uuid4().hex}"
    digest = hashlib.sha256()
    size = 0
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        for piece in chunks:
            digest.update(piece)
            size += len(piece)
            view = memoryview(piece)
            while view:
                view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    sha = digest.hexdigest()
    os.replace(tmp, d / sha)  # the same content twice: the same bytes under the same name
    dfd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return sha, size


class SourceChanged(Exception):
    """A file given by path changed or went away before it was staged: never uploaded."""


def _source_chunks(path: str, stat: list[int]) -> Any:
    """The bytes of a file given by path, checked against its ``[size, mtime_ns, ino, dev]``
    at ``log()`` before and after reading; raises :class:`SourceChanged` with the reason."""
    size, mtime, ino, dev = stat
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise SourceChanged(f"{path} was deleted before it was staged") from None
    except OSError as exc:
        raise SourceChanged(f"{path} could not be read before it was staged: "
                            f"{exc.strerror}") from None
    with f:
        st = os.fstat(f.fileno())
        if (st.st_ino, st.st_dev) != (ino, dev):
            raise SourceChanged(f"{path} was replaced by another file before it was staged")
        if (st.st_size, st.st_mtime_ns) != (size, mtime):
            raise SourceChanged(f"{path} was changed before it was staged (size {size} → "
                                f"{st.st_size} bytes or a new mtime)")
        while piece := f.read(CHUNK):
            yield piece
        st = os.fstat(f.fileno())
        if (st.st_size, st.st_mtime_ns) != (size, mtime):
            raise SourceChanged(f"{path} was changed while it was being staged")


# The start of a lost file's reason when its bytes were never in this journal directory: a
# copy exported before staging (the original journal delivers the file), or a job killed
# inside log() (which had not returned: nothing was promised). Not a loss of this journal's.
NOT_IN_THIS_COPY = "its data is not in this journal directory"


def lost_here(reason: str | None) -> bool:
    """Whether a lost file's ``reason`` is a loss of this journal's own (a source changed or
    deleted before staging, the quota), not bytes only another copy holds."""
    return bool(reason) and not reason.startswith(NOT_IN_THIS_COPY)


def stage(j_dir: Path, source: dict[str, Any]) -> tuple[str, int]:
    """Stage one file from its ``source`` (a row's): ``(sha, size)``. Raises
    :class:`SourceChanged` (lost: a changed or deleted source, a torn incoming file) or
    :class:`~pluto_offline.journal.encoders.EncoderMissing` (lost: no encoder here)."""
    inc = incoming_dir(j_dir) / source["incoming"]
    if source.get("how") == "path":
        return store_blob(j_dir, _source_chunks(source["path"], source["stat"]))
    got = read_incoming(inc)
    if got is None:
        raise SourceChanged(NOT_IN_THIS_COPY + ": the job was killed while logging it, or this "
                            "is a copy of the journal made before it was staged (the original "
                            "delivers it)")
    meta, payload = got
    data = encoders.encode(meta.get("how", "raw"), payload, meta.get("params") or {})
    return store_blob(j_dir, (data[i:i + CHUNK] for i in range(0, len(data), CHUNK)))
