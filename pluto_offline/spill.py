"""Per-writer spill files: where ``log()`` puts each record before it reaches SQLite.

One file per writer (one process × one run): ``<journal dir>/spill/<writer_id>.spill``, mapped
``MAP_SHARED``. ``log()`` copies one record into the map, with no syscall: once the copy ends
the bytes are in the page cache, so they survive SIGKILL of the process. The writer holds an
exclusive ``flock`` on the file for its whole life; that lock is its liveness. The file is
made under a temporary name (``<writer_id>.spill.new``), locked, then renamed: a file under its
final name is always locked by its writer, so no probe or recoverer ever sees one half-made.

Layout (little-endian; ``docs/journal.md`` has the reader's view)::

    header  64 bytes: b"PLSPILL1", u32 version (1), u32 header size (64), zero padding
    record  u32 length, u32 crc, u64 number, payload (length bytes), zero pad to 8 bytes

``payload`` is ``marshal`` of a tuple (see ``fold.py``); ``number`` counts records from 1 and
has no gaps; ``crc`` is ``zlib.crc32(payload, number & 0xffffffff)``. The payload is written
first, then the number, then length and crc, so a record torn by SIGKILL fails its check.
When the file is full it grows (``posix_fallocate``, so a full disk cannot SIGBUS us) up to
``MAX_SIZE``; past that, once every record is folded, writing starts again after the header.
A reader therefore takes records from the header on while the numbers run consecutively;
the last folded number per writer is in ``writers.folded``, so nothing is folded twice.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import struct
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pluto_offline.journal import Journal

MAGIC = b"PLSPILL1"
VERSION = 1
HEADER_SIZE = 64
RECORD_HEADER = 16
INITIAL_SIZE = 1 << 20
MAX_SIZE = 64 << 20
SUFFIX = ".spill"
NEW_SUFFIX = ".spill.new"
STALE_NEW_S = 60.0  # a .spill.new this old lost its creator between create and rename
_MASK = 0xFFFFFFFF
_rec_head = struct.Struct("<II")
_rec_num = struct.Struct("<Q")
_rec_full = struct.Struct("<IIQ")


class SpillFull(Exception):
    """No room in the spill and the journal cannot take its records right now."""


class Spill:
    """The writing side of one spill file (one writer). ``append`` is the hot path.

    ``drain`` is the owner's callback, called when the file is full and cannot grow: it must
    fold every published record into the journal and then call :meth:`wrap`, or raise.
    """

    def __init__(self, path: Path, fd: int, size: int):
        self.path = path
        self.fd = fd
        self.size = size
        self.mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self.wpos = HEADER_SIZE
        self.number = 0
        # (position, number) after the last complete record: read by the fold, set at once
        self.published = (HEADER_SIZE, 0)
        self.rpos = HEADER_SIZE  # where the fold goes on from
        self.drain: Callable[[], None] | None = None

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

    def append(self, payload: bytes) -> None:
        """Add one record. Raises :class:`SpillFull` only when the journal is unwritable too."""
        n = len(payload)
        off = self.wpos
        size = (n + RECORD_HEADER + 7) & ~7
        if off + size > self.size:
            off = self._make_room(size)
        mm = self.mm
        mm[off + RECORD_HEADER:off + RECORD_HEADER + n] = payload
        number = self.number + 1
        _rec_num.pack_into(mm, off + 8, number)
        _rec_head.pack_into(mm, off, n, zlib.crc32(payload, number & _MASK))
        self.number = number
        self.wpos = off + size
        self.published = (off + size, number)

    def _make_room(self, size: int) -> int:
        new = self.size
        while new < MAX_SIZE and self.wpos + size > new:
            new *= 2
        if self.wpos + size <= new:
            try:
                os.posix_fallocate(self.fd, 0, new)
                self.mm.resize(new)
                self.size = new
                return self.wpos
            except OSError:
                pass  # disk full: fall back to folding and starting over
        if HEADER_SIZE + size > self.size:
            raise SpillFull(f"a {size}-byte log record does not fit in the spill file")
        if self.drain is None:
            raise SpillFull("spill file full")
        self.drain()  # folds everything and calls wrap(), or raises
        return self.wpos

    def wrap(self) -> None:
        """Start writing after the header again (call only once every record is folded)."""
        self.wpos = self.rpos = HEADER_SIZE
        self.published = (HEADER_SIZE, self.number)

    def read(self, start: int, end: int) -> list[bytes]:
        """The payloads of the complete records in ``[start, end)`` (this process's own)."""
        mm = self.mm
        out = []
        off = start
        while off < end:
            n = _rec_head.unpack_from(mm, off)[0]
            out.append(mm[off + RECORD_HEADER:off + RECORD_HEADER + n])
            off += (n + RECORD_HEADER + 7) & ~7
        return out

    def close(self, *, unlink: bool) -> None:
        """Release the lock (and delete the file once everything is folded)."""
        if unlink:
            self.path.unlink(missing_ok=True)
        try:
            self.mm.close()
        except (BufferError, ValueError):
            pass
        os.close(self.fd)


def scan(buf: bytes | mmap.mmap, after: int) -> tuple[list[bytes], int]:
    """Records of a spill written by another process: payloads numbered ``> after``, and the
    last good number. Stops at the first record that is torn, zero or out of sequence."""
    size = len(buf)
    if size < HEADER_SIZE or buf[:8] != MAGIC:
        return [], after
    off = HEADER_SIZE
    expected: int | None = None
    last = after
    out = []
    while off + RECORD_HEADER <= size:
        n, crc, number = _rec_full.unpack_from(buf, off)
        if n == 0 or number == 0 or off + RECORD_HEADER + n > size:
            break
        if expected is not None and number != expected:
            break
        payload = bytes(buf[off + RECORD_HEADER:off + RECORD_HEADER + n])
        if zlib.crc32(payload, number & _MASK) != crc:
            break
        if number > after:
            out.append(payload)
            last = number
        expected = number + 1
        off += (n + RECORD_HEADER + 7) & ~7
    return out, last


def live_writer_ids(spill_dir: Path) -> set[str]:
    """Writers whose spill file is locked: their process is alive (or being recovered)."""
    alive = set()
    try:
        names = os.listdir(spill_dir)
    except FileNotFoundError:
        return alive
    for name in names:
        if not name.endswith(SUFFIX):
            continue
        try:
            fd = os.open(spill_dir / name, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            # a shared probe: two probers do not see each other as alive
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            alive.add(name[: -len(SUFFIX)])
        finally:
            os.close(fd)
    return alive


def recover_orphans(j: Journal) -> int:
    """Fold the spill files of dead writers into events, mark those writers ``killed``.

    Safe if two processes recover at once (each file is folded under its lock, and the fold
    position is committed with the events) and if the recoverer dies midway (the transaction
    rolls back; the file is deleted only after the commit). Returns the records folded.
    """
    spill_dir = j.spill_dir
    total = 0
    try:
        names = sorted(os.listdir(spill_dir))
    except FileNotFoundError:
        names = []
    for name in names:
        if name.endswith(SUFFIX):
            total += _recover_one(j, spill_dir / name, name[: -len(SUFFIX)])
        elif name.endswith(NEW_SUFFIX):
            _remove_stale_new(spill_dir / name)
    _end_vanished_writers(j)
    return total


def _recover_one(j: Journal, path: Path, writer_id: str) -> int:
    from pluto_offline import fold
    from pluto_offline.journal import end_writer

    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return 0
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return 0  # alive, or another process is recovering it
        try:
            if os.stat(path).st_ino != os.fstat(fd).st_ino:
                return 0  # recovered and deleted while we waited
        except FileNotFoundError:
            return 0
        size = os.fstat(fd).st_size
        buf = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ) if size else b""
        try:
            folded = 0
            with j.transaction():
                row = j.conn.execute(
                    "SELECT run, folded FROM writers WHERE id = ?", (writer_id,)
                ).fetchone()
                if row is not None:
                    run_key, after = row
                    payloads, last = scan(buf, after)
                    if payloads:
                        fold.write(j, run_key, writer_id, payloads, last)
                        folded = len(payloads)
                    end_writer(j, writer_id, "killed")
        finally:
            if isinstance(buf, mmap.mmap):
                buf.close()
        path.unlink(missing_ok=True)
        return folded
    finally:
        os.close(fd)


def _remove_stale_new(path: Path) -> None:
    """Delete a ``.spill.new`` whose creator died before renaming it (it holds no records).

    Only old files are even opened: locking a young one could fail its creator's lock.
    """
    try:
        if time.time() - os.stat(path).st_mtime <= STALE_NEW_S:
            return
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        path.unlink(missing_ok=True)
    except BlockingIOError:
        pass
    finally:
        os.close(fd)


def _end_vanished_writers(j: Journal) -> None:
    """Writers never ended whose spill file is gone died without a trace: mark them killed.

    A writer creates its spill file before its row and deletes it after ending, so a row
    without a file is a dead writer.
    """
    from pluto_offline.journal import end_writer

    open_ids = [r[0] for r in j.conn.execute("SELECT id FROM writers WHERE ended_at IS NULL")]
    gone = [w for w in open_ids if not (j.spill_dir / f"{w}{SUFFIX}").exists()]
    if gone:
        with j.transaction():
            for w in gone:
                end_writer(j, w, "killed")
