"""A run's place in its journal while it is delivered: shared by the replayer, which owns the
turns, and the senders (:mod:`syncd.delivery`), which read events and stop a turn.

- :class:`Cursor`: the run's pending events, read in chunks, batched by kind;
- :class:`RunCtx`: what one turn knows of the run (its row, its server id, how far it is acked);
- :class:`Hold`: the run cannot go on now, through no error (its fork parent, its creator).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from pluto_offline import journal

READ_CHUNK = 16  # events read per query (an SDK event holds up to 2,000 calls): bounded memory


class Hold(Exception):
    """The run cannot go on now, through no error: waiting for its fork parent, or a conflict.

    ``stuck`` means it will not go on without a person (a conflict, or a parent in conflict);
    ``creator`` that it waits for another journal (the one that started the run) to create
    the run on the server: tried again with backoff, and given up by one-shot deliveries
    once nothing else they deliver could be that journal (:attr:`Replayer.wait_for_creators`).
    """

    def __init__(self, reason: str, *, stuck: bool = False, creator: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.stuck = stuck
        self.creator = creator


@dataclass
class RunCtx:
    """One run's state during its turn in a pass."""

    row: journal.RunRow
    server_id: int | None
    acked: int
    open_error: str | None = None  # the run's create/resume was refused: why

    @property
    def label(self) -> str:
        return f"{self.row.project}/{self.row.name or self.row.run_id}"


class Cursor:
    """A run's pending events, read in chunks; :meth:`take_batch` joins consecutive ones."""

    def __init__(self, j: journal.Journal, run: int, after: int) -> None:
        self.j, self.run, self.after = j, run, after
        self.buf: deque[journal.Event] = deque()

    def peek(self) -> journal.Event | None:
        if not self.buf:
            events = journal.pending_events(self.j, self.run, after=self.after, limit=READ_CHUNK)
            if events:
                self.buf.extend(events)
                self.after = events[-1].seq
        return self.buf[0] if self.buf else None

    def take(self) -> journal.Event:
        self.peek()
        return self.buf.popleft()

    def ahead(self, limit_bytes: int) -> list[journal.Event]:
        """The buffered events, reading more until about ``limit_bytes`` of payload are held:
        what the next request will carry, to render while this one is in flight."""
        size = sum(len(e.payload or "") for e in self.buf)
        while size < limit_bytes:
            events = journal.pending_events(self.j, self.run, after=self.after, limit=READ_CHUNK)
            if not events:
                break
            self.buf.extend(events)
            self.after = events[-1].seq
            size += sum(len(e.payload or "") for e in events)
        return list(self.buf)

    def take_batch(self, kind: str, limit_bytes: int) -> list[journal.Event]:
        out: list[journal.Event] = []
        size = 0
        while (ev := self.peek()) is not None and ev.kind == kind:
            # a packed metrics payload about doubles when rendered as NDJSON (the fast path's
            # f64 values; marshal records grow by half)
            n = len(ev.payload or "") * (2 if isinstance(ev.payload, bytes) else 1) + 1
            if out and size + n > limit_bytes:
                break
            out.append(self.take())
            size += n
        return out
