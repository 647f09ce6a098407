"""The ``files`` and ``file_delivery`` tables: staging a logged file, then delivering it.

A row of ``files`` is written by the SDK's fold (or by recovery, for a killed job's incoming
files), gets its ``blob`` from a stager (:func:`stage_rows`) or a ``lost`` reason, and is then
delivered by plutosync, which keeps its progress in ``file_delivery`` (``presigning`` →
``presigned`` → ``done``, or ``rejected``; docs/media.md)::

    recover(j)                                   # killed jobs' files: journaled and staged
    for f in pending(j, run_key, limit=32):      # plutosync: in id order, staged or not
        ...
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pluto_offline.journal import encoders, staged
from pluto_offline.journal.store import Journal
from pluto_offline.journal.writes import append_event

log = logging.getLogger("pluto_offline")
STALE_TMP_S = 3600.0  # a half-written blob this old lost its stager
TERMINAL = ("done", "rejected")
_OPEN = "coalesce(d.state, '') NOT IN ('done', 'rejected') AND f.lost IS NULL"


@dataclass(frozen=True)
class FileRow:
    """One logged file and its delivery state (``state`` None: nothing sent yet)."""

    id: int
    run: int
    after_seq: int
    log_name: str
    file_name: str
    file_type: str
    kind: str
    content_type: str
    step: int
    time: int
    sample_index: int
    caption: str | None
    blob: str | None
    size: int | None
    lost: str | None
    state: str | None = None
    url: str | None = None
    presigned_at: int | None = None

    @property
    def staged(self) -> bool:
        return self.blob is not None


_COLS = ("f.id, f.run, f.after_seq, f.log_name, f.file_name, f.file_type, f.kind, "
         "f.content_type, f.step, f.time, f.sample_index, f.caption, f.blob, f.size, f.lost, "
         "d.state, d.url, d.presigned_at")
_FROM = "FROM files f LEFT JOIN file_delivery d ON d.id = f.id"


def has_files(j: Journal) -> bool:
    """Whether the journal can hold files (schema 4; a read-only open of an older one cannot)."""
    return j.schema >= 4


# ---------------------------------------------------------------------- staging
def stage_rows(j: Journal, *, writers: Iterable[str] | None = None,
               dead: set[str] | None = None) -> int:
    """Stage the rows not staged yet of ``writers`` and/or ``dead`` (writer ids known dead;
    None: any); returns how many were staged or found lost."""
    if not has_files(j):
        return 0
    rows = j.conn.execute("SELECT id, writer, source FROM files "
                          "WHERE blob IS NULL AND lost IS NULL ORDER BY id").fetchall()
    wanted = set(writers) if writers is not None else None
    done = 0
    for file_id, writer, source in rows:
        if wanted is not None and writer not in wanted:
            continue
        if dead is not None and writer not in dead:
            continue
        stage_one(j, file_id, json.loads(source))
        done += 1
    return done


def stage_one(j: Journal, file_id: int, source: dict) -> None:
    """Stage one row (outside any transaction: copying may take seconds), then record it."""
    try:
        sha, size = staged.stage(j.dir, source)
    except (staged.SourceChanged, encoders.EncoderMissing, ValueError, KeyError) as exc:
        with j.transaction():
            j.conn.execute("UPDATE files SET lost = ? WHERE id = ? AND blob IS NULL AND "
                           "lost IS NULL", (str(exc), file_id))
        log.warning("pluto_offline: a logged file is lost: %s", exc)
    else:
        with j.transaction():
            j.conn.execute("UPDATE files SET blob = ?, size = ? WHERE id = ? AND blob IS NULL "
                           "AND lost IS NULL", (sha, size, file_id))
    (staged.incoming_dir(j.dir) / source["incoming"]).unlink(missing_ok=True)


def ingest_orphans(j: Journal, live: set[str]) -> int:
    """Journal the incoming files of dead writers that their fold never journaled (SIGKILL
    between ``log()`` and the next fold); torn ones (killed inside ``log()``) are deleted, and
    so are ones already staged whose stager died before it could delete them (a process ended
    by a signal does not wait for its stager; a normal end does, MediaLog.drain)."""
    inc = staged.incoming_dir(j.dir)
    try:
        names = sorted(os.listdir(inc))
    except FileNotFoundError:
        return 0
    orphans = [n for n in names if n.endswith(".in") and n.split(".", 1)[0] not in live]
    if not orphans:
        return 0
    writers = sorted({n.split(".", 1)[0] for n in orphans})
    marks = ",".join("?" * len(writers))
    known = {name: bool(done) for name, done in j.conn.execute(
        f"SELECT json_extract(source, '$.incoming'), blob IS NOT NULL OR lost IS NOT NULL "
        f"FROM files WHERE writer IN ({marks})", writers)}
    rows = []
    for name in orphans:
        if name in known:
            if known[name]:  # staged (or lost) by a stager the writer's exit cut short
                (inc / name).unlink(missing_ok=True)
            continue
        got = staged.read_incoming(inc / name)
        if got is None:
            (inc / name).unlink(missing_ok=True)
            continue
        rows.append(staged.row_values(got[0], name))
    if rows:
        with j.transaction():
            _register_names(j, rows)
            staged.insert_rows(j, rows)
    return len(rows)


def _register_names(j: Journal, rows: list[dict]) -> None:
    """Journal a ``lognames`` event for each orphan's log name its run has not registered
    with that type: the writer's fold would have (MediaLog.fold), and the server lists a file
    under a log name only once the name is registered with its type (IMAGE, ARTIFACT...)."""
    new: dict[tuple[int, str], dict[str, int]] = {}  # (run, type) -> name -> first time
    for r in rows:
        new.setdefault((r["run"], r["kind"]), {}).setdefault(r["log_name"], r["time"])
    for (run, kind), names in sorted(new.items()):
        known: set[str] = set()
        for (payload,) in j.conn.execute(
                "SELECT payload FROM events WHERE run = ? AND kind = 'lognames'", (run,)):
            p = json.loads(payload)
            if p.get("type") == kind:
                known.update(p.get("names") or ())
        missing = [n for n in names if n not in known]
        if missing:
            append_event(j, run, "lognames", payload={"type": kind, "names": missing},
                         time=min(names[n] for n in missing))


def recover(j: Journal, live: set[str]) -> int:
    """The files of writers not in ``live``: journaled if need be, then staged. Returns how
    many rows were staged or found lost. Called by ``journal.recover`` (plutosync's passes,
    ``init()``, export) before the spill recovery, so a killed run's status comes after them."""
    if not has_files(j):
        return 0
    ingest_orphans(j, live)
    dead = {r[0] for r in j.conn.execute(
        "SELECT DISTINCT writer FROM files WHERE blob IS NULL AND lost IS NULL")} - live
    n = stage_rows(j, dead=dead) if dead else 0
    _remove_stale_tmp(staged.files_dir(j.dir))
    return n


def _remove_stale_tmp(d: Path) -> None:
    now = time.time()
    try:
        with os.scandir(d) as it:
            for e in it:
                if e.name.startswith(".tmp-") and now - e.stat().st_mtime > STALE_TMP_S:
                    Path(e.path).unlink(missing_ok=True)
    except FileNotFoundError:
        pass


# ---------------------------------------------------------------------- delivery (plutosync)
def pending(j: Journal, run: int, *, limit: int = 64) -> list[FileRow]:
    """A run's files not delivered yet, in id order (staged or not; lost ones excluded)."""
    rows = j.conn.execute(f"SELECT {_COLS} {_FROM} WHERE f.run = ? AND {_OPEN} "
                          "ORDER BY f.id LIMIT ?", (run, limit)).fetchall()
    return [FileRow(*r) for r in rows]


def runs_with_pending(j: Journal) -> list[int]:
    """Keys of runs with files still to deliver."""
    if not has_files(j):
        return []
    return [r[0] for r in j.conn.execute(
        f"SELECT DISTINCT f.run {_FROM} WHERE {_OPEN} ORDER BY f.run")]


def blocking(j: Journal, run: int, seq: int) -> int:
    """Files of the run journaled before event ``seq`` and not delivered yet: a status event
    waits for them (a run's final status only after its files)."""
    if not has_files(j):
        return 0
    return j.conn.execute(f"SELECT count(*) {_FROM} WHERE f.run = ? AND f.after_seq < ? "
                          f"AND {_OPEN}", (run, seq)).fetchone()[0]


def delivered_through(j: Journal, run: int) -> int:
    """The highest file id of the run such that it and every id below it are done or refused
    (0 for none): what the run's ledger may call delivered (``filesDelivered``). A file not
    done here stops it, a lost one included: another copy of the journal may deliver it.

    One statement, so one snapshot: a writer folding new files in meanwhile can never make
    them count as delivered (read as two queries, "none open" then "the highest id", a fold
    landing between the two did: chaos seed 1117)."""
    first_open, last = j.conn.execute(
        "SELECT min(CASE WHEN coalesce(d.state, '') NOT IN ('done', 'rejected') THEN f.id END), "
        f"coalesce(max(f.id), 0) {_FROM} WHERE f.run = ?", (run,)).fetchone()
    return first_open - 1 if first_open is not None else last


def set_state(j: Journal, ids: Iterable[int], state: str, *, url: dict[int, str] | None = None,
              reason: str | None = None, resent: bool = False) -> None:
    """Record the delivery state of files (one transaction)."""
    now = int(time.time() * 1000)
    with j.transaction():
        for file_id in ids:
            u = (url or {}).get(file_id)
            j.conn.execute(
                "INSERT INTO file_delivery (id, state, url, presigned_at, resent, reason) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET state = excluded.state, "
                "url = CASE WHEN excluded.state IN ('done', 'rejected') THEN NULL "
                "ELSE coalesce(excluded.url, url) END, "
                "presigned_at = coalesce(excluded.presigned_at, presigned_at), "
                "resent = resent + excluded.resent, reason = coalesce(excluded.reason, reason)",
                (file_id, state, u, now if u else None, int(resent), reason))


def forget_url(j: Journal, file_id: int) -> None:
    """The presigned URL no longer works (expired): the next try checks the server first."""
    with j.transaction():
        j.conn.execute("UPDATE file_delivery SET url = NULL, state = 'presigning' WHERE id = ?",
                       (file_id,))


@dataclass
class FileCounts:
    pending: int = 0  # not delivered yet (staged or not)
    pending_bytes: int = 0  # of those staged
    unstaged: int = 0  # waiting for their bytes to be staged
    done: int = 0
    lost: int = 0  # never deliverable: a changed or deleted source, the quota
    rejected: int = 0  # refused by the server
    resent: int = 0  # presigned again after a presign without an answer (a possible 2nd row)


def counts(j: Journal) -> dict[int, FileCounts]:
    """Per run key: the state of its files (``plutosync status``)."""
    out: dict[int, FileCounts] = {}
    if not has_files(j):
        return out
    for run, state, lost, blob, size, resent in j.conn.execute(
            f"SELECT f.run, d.state, f.lost IS NOT NULL, f.blob IS NOT NULL, "
            f"coalesce(f.size, 0), coalesce(d.resent, 0) {_FROM}"):
        c = out.setdefault(run, FileCounts())
        c.resent += resent
        if lost:
            c.lost += 1
        elif state == "done":
            c.done += 1
        elif state == "rejected":
            c.rejected += 1
        else:
            c.pending += 1
            c.pending_bytes += size
            c.unstaged += not blob
    return out


def lost_files(j: Journal, run: int | None = None) -> list[dict]:
    """Files that can never be delivered, with the reason (``plutosync status``)."""
    if not has_files(j):
        return []
    sql = ("SELECT f.id, f.run, f.log_name, f.file_name, f.lost FROM files f "
           "WHERE f.lost IS NOT NULL" + (" AND f.run = ?" if run is not None else "")
           + " ORDER BY f.id")
    return [dict(zip(("id", "run", "log_name", "file_name", "reason"), r, strict=True))
            for r in j.conn.execute(sql, (run,) if run is not None else ())]


# ---------------------------------------------------------------------- retention
def prunable_blobs(j: Journal, *, older_than_ms: int) -> list[tuple[str, int]]:
    """``(sha, size)`` of staged bytes every file of which was delivered (or refused by the
    server) and logged before ``older_than_ms`` ago. A blob any other file still needs (the
    same content logged twice) is kept: bytes not acknowledged are never deleted."""
    if not has_files(j):
        return []
    cutoff = int(time.time() * 1000) - older_than_ms
    return [(sha, size or 0) for sha, size in j.conn.execute(
        f"SELECT f.blob, max(f.size) {_FROM} WHERE f.blob IS NOT NULL GROUP BY f.blob "
        "HAVING sum(coalesce(d.state, '') NOT IN ('done', 'rejected')) = 0 "
        "AND max(f.time) < ?", (cutoff,))]


def prune_blobs(j: Journal, *, older_than_ms: int) -> tuple[int, int]:
    """Delete the bytes :func:`prunable_blobs` names; returns ``(files, bytes)`` deleted."""
    n = total = 0
    for sha, size in prunable_blobs(j, older_than_ms=older_than_ms):
        try:
            staged.blob_path(j.dir, sha).unlink()
        except FileNotFoundError:
            continue
        n, total = n + 1, total + size
    return n, total
