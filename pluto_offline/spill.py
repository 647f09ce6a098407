"""Per-writer spill files: where ``log()`` puts each record before it reaches SQLite.

One file per writer (one process × one run): ``<journal dir>/spill/<writer_id>.spill``, mapped
``MAP_SHARED``. ``log()`` copies one record into the map, with no syscall: once the copy ends
the bytes are in the page cache, so they survive SIGKILL of the process. The writer holds an
exclusive ``flock`` on the file for its whole life; that lock is its liveness. The file is
made under a temporary name (``<writer_id>.spill.new``), locked, then renamed: a file under its
final name is always locked by its writer, so no probe or recoverer ever sees one half-made.

Layout (little-endian; ``docs/journal.md`` has the reader's view)::

    header  64 bytes: b"PLSPILL1", u32 version (2), u32 header size (64),
            u64 records dropped per reason (``DROP_REASONS``, 3 of them), zero padding
    record  u32 length, u32 tag, u64 number, payload (length bytes), zero pad to 8 bytes

``number`` counts records from 1 and has no gaps; it is written last, so a record cut short by
SIGKILL still shows the number that was there before (0, or a smaller one from before a wrap)
and ends the scan. ``tag`` says what the payload is:

- ``RECORD`` (0): ``marshal`` of a tuple, as ``fold.py`` reads it;
- ``SCHEMA`` (1): ``marshal`` of ``(schema_id, (name, ...))``: the metric names of a key set;
- ``VALUES`` (2): ``u32 schema_id, i64 step, i64 time_ms`` and one f64 per name of the schema:
  the fast path's record, written with one ``struct.pack_into`` and no ``marshal``;
- ``END`` (3): ``marshal`` of ``(status | None, metadata, time_ms)``: the writer's end (a
  status, or ``None`` for a ``close()``) that the journal could not take (a full disk). The
  last ``END_RESERVE`` bytes of the file are kept for it, so it always fits; recovery
  journals it in place of FAILED killed (issue 12 item 14).

Records ``log()`` could not keep (the spill full and the journal unwritable) are counted in
the header, per reason, so the count outlives the process: recovery journals it.

When the file is full it grows (``posix_fallocate``, so a full disk cannot SIGBUS us) up to
``MAX_SIZE``; past that, once every record is folded, writing starts again after the header,
the schemas first. A reader therefore takes records from the header on while the numbers run
consecutively; the last folded number per writer is in ``writers.folded``, so nothing is
folded twice. Version 1 files (a crc in place of the tag, marshal records only) are still read.
"""

from __future__ import annotations

import fcntl
import marshal
import mmap
import os
import struct
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

from pluto_offline.journal.payloads import VALUES_ENTRY, VALUES_HEAD
from pluto_offline.journal.store import SPILL_SUFFIX

MAGIC = b"PLSPILL1"
VERSION = 2
HEADER_SIZE = 64
RECORD_HEADER = 16
INITIAL_SIZE = 1 << 20
MAX_SIZE = 64 << 20
MAX_SCHEMAS = 1024  # key sets given the fast path; others are logged the slow way
END_RESERVE = 64 << 10  # kept at the file's end for the END record: a run's end always fits
GROW_RETRY_S = 1.0  # after a failed grow (disk full), log() tries again at most this often
# Why log() dropped records, in the header's order (journal.drops keeps the same words).
DROP_REASONS = ("disk full", "journal not writable", "record too large")
_DROPPED_AT = 16  # header offset of the drop counters
_dropped = struct.Struct("<3Q")
SUFFIX = SPILL_SUFFIX  # the journal's name for it: spill/<writer id>.spill
NEW_SUFFIX = ".spill.new"
STALE_NEW_S = 60.0  # a .spill.new this old lost its creator between create and rename
RECORD, SCHEMA, VALUES, END = 0, 1, 2, 3
_MASK = 0xFFFFFFFF
_rec_head = struct.Struct("<II")
_rec_num = struct.Struct("<Q")
_rec_full = struct.Struct("<IIQ")


def _limit(size: int) -> int:
    """Where records stop in a file of ``size`` bytes: the rest is the END record's."""
    return size - min(END_RESERVE, size // 4)


class SpillFull(Exception):
    """No room in the spill and the journal cannot take its records right now.

    ``reason`` is one of ``DROP_REASONS``: why the record is dropped."""

    def __init__(self, message: str, reason: str = DROP_REASONS[1]):
        super().__init__(message)
        self.reason = reason


class Format:
    """How one key set is packed: ``pack_into(mm, off, length, VALUES, schema, step, t,
    *values)`` writes the record header (number zeroed) and the payload in one call."""

    __slots__ = ("schema", "names", "length", "size", "struct")

    def __init__(self, schema: int, names: tuple[str, ...]):
        self.schema = schema
        self.names = names
        self.length = VALUES_HEAD.size + 8 * len(names)
        self.size = (RECORD_HEADER + self.length + 7) & ~7
        self.struct = struct.Struct(f"<II8xIqq{len(names)}d")


class Spill:
    """The writing side of one spill file (one writer). ``append`` is the hot path.

    ``drain`` is the owner's callback, called when the file is full and cannot grow: it must
    fold every published record into the journal and then call :meth:`wrap`, or raise
    (:class:`SpillFull` when it does not even try: the journal is known unwritable).
    Records stop at ``limit``: the last ``END_RESERVE`` bytes are the END record's.
    ``formats`` maps a logged dict's key tuple to its :class:`Format` (see :meth:`add_schema`).
    """

    def __init__(self, path: Path, fd: int, size: int):
        self.path = path
        self.fd = fd
        self.size = size
        self.limit = _limit(size)  # records end here; the END record may go beyond
        self.mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self._grow_after = 0.0  # monotonic time before which growing is not tried again
        self.wpos = HEADER_SIZE
        self.number = 0
        # (position, number) after the last complete record: read by the fold, set at once
        self.published = (HEADER_SIZE, 0)
        self.rpos = HEADER_SIZE  # where the fold goes on from
        self.drain: Callable[[], None] | None = None
        self.formats: dict[tuple, Format] = {}
        self.schemas: list[tuple[str, ...]] = []

    @classmethod
    def create(cls, spill_dir: Path, writer_id: str) -> Spill:
        """Create and lock ``spill_dir/<writer_id>.spill`` (0600, directory 0700)."""
        spill_dir.mkdir(mode=0o700, exist_ok=True)
        path = spill_dir / f"{writer_id}{SUFFIX}"
        new = spill_dir / f"{writer_id}{NEW_SUFFIX}"
        fd = os.open(new, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            # nobody else knows this name yet, so the lock cannot be contended
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.posix_fallocate(fd, 0, INITIAL_SIZE)
            os.pwrite(fd, MAGIC + struct.pack("<II", VERSION, HEADER_SIZE), 0)
            os.rename(new, path)  # flock belongs to the open file, so it survives the rename
            return cls(path, fd, INITIAL_SIZE)
        except BaseException:
            os.close(fd)
            new.unlink(missing_ok=True)
            raise

    def append(self, payload: bytes, tag: int = RECORD) -> None:
        """Add one record. Raises :class:`SpillFull` only when the journal is unwritable too."""
        n = len(payload)
        off = self.wpos
        size = (n + RECORD_HEADER + 7) & ~7
        if off + size > self.limit:
            off = self._make_room(size)
        mm = self.mm
        _rec_full.pack_into(mm, off, n, tag, 0)
        mm[off + RECORD_HEADER:off + RECORD_HEADER + n] = payload
        self._publish(off, size)

    def append_values(self, fmt: Format, step: int, t: int, values: Mapping) -> None:
        """The fast path's record: ``values`` are the logged dict's, in ``fmt``'s key order.

        Raises ``TypeError``/``OverflowError`` (nothing written) for a value no f64 holds.
        """
        off = self.wpos
        if off + fmt.size > self.limit:
            off = self._make_room(fmt.size)
        fmt.struct.pack_into(self.mm, off, fmt.length, VALUES, fmt.schema, step, t,
                             *values.values())
        self._publish(off, fmt.size)

    def _publish(self, off: int, size: int) -> None:
        number = self.number + 1
        _rec_num.pack_into(self.mm, off + 8, number)  # last: the record now exists
        self.number = number
        self.wpos = off + size
        self.published = (off + size, number)

    def add_schema(self, keys: tuple, names: tuple[str, ...]) -> Format | None:
        """Give the key set ``keys`` (as logged; ``names`` as journaled) the fast path."""
        if len(self.schemas) >= MAX_SCHEMAS:
            return None
        fmt = Format(len(self.schemas), names)
        self.append(marshal.dumps((fmt.schema, names)), SCHEMA)
        self.schemas.append(names)
        self.formats[keys] = fmt
        return fmt

    def adopt(self, formats: dict[tuple, Format], schemas: list[tuple[str, ...]]) -> None:
        """Take over another writer's fast-path key sets, under the same schema ids (a forked
        child's writer keeps its parent's ``formats``); call on a new, empty spill."""
        self.formats = formats
        self.schemas = list(schemas)
        self.wrap()  # writes the schemas first, as a reader needs them

    def _make_room(self, size: int) -> int:
        new = self.size
        while new < MAX_SIZE and self.wpos + size > _limit(new):
            new *= 2
        now = time.monotonic()
        if self.wpos + size <= _limit(new) and now >= self._grow_after:
            try:
                os.posix_fallocate(self.fd, 0, new)
                self.mm.resize(new)
                self.size, self.limit = new, _limit(new)
                return self.wpos
            except OSError:
                # disk full: fold and start over instead; and while it stays full, do not
                # make every log() pay for a failing syscall (issue 12 item 14)
                self._grow_after = now + GROW_RETRY_S
        if HEADER_SIZE + size > self.limit and self.size >= MAX_SIZE:
            raise SpillFull(f"a {size}-byte log record does not fit in the spill file",
                            DROP_REASONS[2])
        if self.drain is None:
            raise SpillFull("spill file full")
        self.drain()  # folds everything and calls wrap(), or raises
        if self.wpos + size > self.limit:
            raise SpillFull(f"a {size}-byte log record does not fit in the spill file now",
                            DROP_REASONS[0])
        return self.wpos

    def append_end(self, status: str | None, metadata: dict | None, time_ms: int) -> None:
        """Keep the writer's end (``status``, ``None`` for a close) in the reserved tail, for
        recovery to journal when the journal cannot take it now. A traceback too long for the
        reserve keeps its end (where the error is). Raises ``ValueError`` on a closed file."""
        payload = marshal.dumps((status, metadata, time_ms))
        room = self.size - self.wpos - RECORD_HEADER - 8
        if len(payload) > room and metadata and "traceback" in metadata:
            tb = str(metadata["traceback"])
            cut = len(payload) - room + 100
            metadata = {**metadata, "traceback": "...(cut)\n" + tb[cut:]}
            payload = marshal.dumps((status, metadata, time_ms))
        if len(payload) > room:
            payload = marshal.dumps((status, None, time_ms))
        if len(payload) > room:  # cannot happen with the reserve: a 4 KiB file has 1 KiB
            raise SpillFull("no room left for the run's end in the spill file")
        n = len(payload)
        off = self.wpos
        _rec_full.pack_into(self.mm, off, n, END, 0)
        self.mm[off + RECORD_HEADER:off + RECORD_HEADER + n] = payload
        self._publish(off, (n + RECORD_HEADER + 7) & ~7)

    def set_dropped(self, counts: Sequence[int]) -> None:
        """Record how many records were dropped, per ``DROP_REASONS`` (the header's counters)."""
        _dropped.pack_into(self.mm, _DROPPED_AT, *counts)

    def wrap(self) -> None:
        """Start writing after the header again (call only once every record is folded).

        The schemas are written again first: a recoverer reads this cycle's records only.
        """
        self.wpos = self.rpos = HEADER_SIZE
        self.published = (HEADER_SIZE, self.number)
        for schema, names in enumerate(self.schemas):
            self.append(marshal.dumps((schema, names)), SCHEMA)

    def read(self, start: int, end: int) -> list[bytes]:
        """The records in ``[start, end)`` (this process's own), as ``fold`` takes them."""
        return _records(self.mm, start, end, self.schemas, learn=False)[0]

    def close(self, *, unlink: bool) -> None:
        """Release the lock (and delete the file once everything is folded)."""
        if unlink:
            self.path.unlink(missing_ok=True)
        try:
            self.mm.close()
        except (BufferError, ValueError):
            pass
        os.close(self.fd)


def _records(buf: bytes | mmap.mmap, start: int, end: int, schemas: list[tuple[str, ...]],
             after: int = 0, version: int = VERSION, *, learn: bool = True,
             ends: list[tuple] | None = None) -> tuple[list[bytes], int]:
    """Records from ``start`` while they are whole and consecutive, up to ``end``.

    Returns those numbered ``> after`` and the last good number. A record is its ``marshal``
    payload, or ``b"V"`` + a values payload (``journal.pack_metrics``'s entries; the floats
    stay packed). With ``learn``, schema records (of any number) are put into ``schemas``;
    without, it already holds them (the writer's own list). An END record numbered
    ``> after`` is put into ``ends`` (without ``ends``, the scan stops there).
    """
    out: list[bytes] = []
    off = start
    expected: int | None = None
    last = after
    while off + RECORD_HEADER <= end:
        n, tag, number = _rec_full.unpack_from(buf, off)
        if n == 0 or number == 0 or off + RECORD_HEADER + n > end:
            break
        if expected is not None and number != expected:
            break
        body = off + RECORD_HEADER
        if version == 1:
            if zlib.crc32(buf[body:body + n], number & _MASK) != tag:
                break
            tag = RECORD
        if tag == SCHEMA:
            if learn:
                schema, names = marshal.loads(buf[body:body + n])
                del schemas[schema:]  # after a wrap they come again, from 0
                schemas.append(tuple(names))
        elif tag == RECORD:
            if number > after:
                out.append(bytes(buf[body:body + n]))
        elif tag == VALUES:
            if VALUES_HEAD.unpack_from(buf, body)[0] >= len(schemas):
                break  # cannot happen in a file written by Spill: its schema comes first
            if number > after:
                out.append(VALUES_ENTRY + buf[body:body + n])
        elif tag == END and ends is not None:
            if number > after:
                ends.append(marshal.loads(buf[body:body + n]))
        else:
            break  # a newer writer's record kind: stop rather than guess
        if number > after:
            last = number
        expected = number + 1
        off += (n + RECORD_HEADER + 7) & ~7
    return out, last


class Scan(NamedTuple):
    """What a spill written by another process holds after a given record number."""

    records: list[bytes]  # as ``fold.write`` takes them
    last: int  # the last good record number (``writers.folded`` once they are folded)
    schemas: list[tuple[str, ...]]  # the names its values records refer to
    end: tuple | None = None  # ``(status | None, metadata, time_ms)``: the writer's kept end
    dropped: dict[str, int] | None = None  # reason -> records log() dropped (None: none)


def scan(buf: bytes | mmap.mmap, after: int) -> Scan:
    """Read a spill written by another process: its records numbered ``> after``, its kept
    end and its drop counters. Stops at the first record that is torn, zero or out of
    sequence."""
    schemas: list[tuple[str, ...]] = []
    size = len(buf)
    if size < HEADER_SIZE or buf[:8] != MAGIC:
        return Scan([], after, schemas)
    version = struct.unpack_from("<I", buf, 8)[0]
    if version not in (1, VERSION):
        return Scan([], after, schemas)
    ends: list[tuple] = []
    out, last = _records(buf, HEADER_SIZE, size, schemas, after, version, ends=ends)
    counts = _dropped.unpack_from(buf, _DROPPED_AT) if version == VERSION else (0, 0, 0)
    return Scan(out, last, schemas, ends[-1] if ends else None,
                {r: n for r, n in zip(DROP_REASONS, counts, strict=True) if n} or None)
