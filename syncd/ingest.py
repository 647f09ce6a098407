"""NDJSON records on the ingest endpoints (syncd/kinds.py): batched, a refused line isolated and
recorded, and kinds the server keeps every copy of sent once through the run's ledger. Part of
:class:`syncd.delivery.Delivery`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pluto_offline import journal
from pluto_offline.journal import history
from syncd import finalstate, kinds, shared
from syncd.client import ClientError, PlutoClient, RejectedError, TransientError
from syncd.cursor import RunCtx
from syncd.render import Renderer

if TYPE_CHECKING:
    from syncd.replayer import Replayer

log = logging.getLogger("plutosync")

ISOLATE_BUDGET = 128  # requests spent finding the bad lines of one refused NDJSON event


class Ingest:
    r: Replayer
    j: journal.Journal
    client: PlutoClient
    render: Renderer
    _ledger_due: dict[int, tuple[int, int]]

    def _ingest(self, ctx: RunCtx, events: list[journal.Event], spec: kinds.IngestKind) -> None:
        def send(run_id: int, project: str, ndjson: bytes) -> None:
            self.client.ingest(spec.path, run_id, project, ndjson)

        if spec.deduplicated:  # a resend is harmless
            self._send_isolating(ctx, events, send)
            return
        with finalstate.run_lock(ctx.row.project, ctx.row.run_id):
            self._once(ctx, events, spec, send)

    def _once(self, ctx: RunCtx, events: list[journal.Event], spec: kinds.IngestKind,
              send: Callable[[int, str, bytes], None]) -> None:
        """Records the server keeps every copy of: skip what any copy of this journal
        delivered (the run's ledger), send the rest, then note it there. The ledger counts
        seqs, which grow through all of a run's events: one watermark serves every kind."""
        sid = ctx.server_id
        assert sid is not None
        done, sending = shared.data_delivered(self.client, self.j, ctx.row, sid)
        fresh = [ev for ev in events if ev.seq > done]
        if len(fresh) < len(events):
            skipped = len(events) - len(fresh)
            self.r.acked(ctx, events[skipped - 1].seq, skipped, requests=1 if not fresh else 0)
            log.info("run %s: %d events of %s were delivered by another copy of this "
                     "journal; not sent again", ctx.label, skipped, spec.noun)
            if not fresh:
                return
        # sent before without an answer (by this copy, or by another: the server's note):
        # the server may hold them already and offers no way to tell; counted, for status
        sent_before = max(journal.sent_seq(self.j, ctx.row.key), sending)
        again = [ev for ev in fresh if ev.seq <= sent_before]
        if again:  # counted in records (lines): an event may carry several
            history.note_resent(self.j, ctx.row.key, sum(
                self.render.text(ev).count("\n") + 1 for ev in again))
        if fresh[-1].seq > sending:
            shared.record_sending(self.client, self.j, ctx.row, sid, fresh[-1].seq)
        journal.mark_sent(self.j, ctx.row.key, fresh[-1].seq)
        self._send_isolating(ctx, fresh, send)
        try:
            shared.record_data(self.client, self.j, ctx.row, sid, fresh[-1].seq)
        except TransientError:
            self._ledger_due[ctx.row.key] = (sid, fresh[-1].seq)
            raise
        except ClientError as exc:  # only a later copy of this journal could resend them
            log.warning("run %s: the server refused the note of delivered %s (%s)",
                        ctx.label, spec.noun, exc.describe())

    def _send_isolating(self, ctx: RunCtx, events: list[journal.Event],
                        send: Callable[[int, str, bytes], None]) -> None:
        """Send a batch; on a refusal split it in halves until the bad events are found."""
        try:
            send(ctx.server_id, ctx.row.project, _join(self.render.text(ev) for ev in events))
        except RejectedError as exc:
            if len(events) > 1:
                mid = len(events) // 2
                self._send_isolating(ctx, events[:mid], send)
                self._send_isolating(ctx, events[mid:], send)
            else:
                self._isolate_lines(ctx, events[0], send, exc)
            return
        self.r.acked(ctx, events[-1].seq, len(events))

    def _isolate_lines(self, ctx: RunCtx, ev: journal.Event,
                       send: Callable[[int, str, bytes], None], first: RejectedError) -> None:
        """Deliver the good lines of a refused event and record the bad ones."""
        lines = [line for line in self.render.text(ev).split("\n") if line.strip()]
        bad: list[tuple[int, int, RejectedError]] = []
        budget = [ISOLATE_BUDGET]

        def go(lo: int, hi: int, err: RejectedError | None) -> None:
            if err is None:
                if budget[0] <= 0:
                    bad.append((lo, hi, first))  # gave up isolating: count the range as bad
                    return
                budget[0] -= 1
                try:
                    send(ctx.server_id, ctx.row.project, _join(lines[lo:hi]))
                    return
                except RejectedError as exc:
                    err = exc
            if hi - lo <= 1:
                bad.append((lo, hi, err))
                return
            mid = (lo + hi) // 2
            go(lo, mid, None)
            go(mid, hi, None)

        go(0, len(lines), first)
        if not bad:  # every part went through on its own (the refusal was the batch's size)
            self.r.acked(ctx, ev.seq, 1)
            return
        n_bad = sum(hi - lo for lo, hi, _ in bad)
        lo, _, err = bad[0]
        example = lines[lo][:120] if lines else ""
        reason = (f"HTTP {err.code}: {n_bad} of {len(lines)} lines refused; first: "
                  f"{example} -> {err.reason}")
        self.r.rejected(ctx, ev, err, reason)


def _join(parts: Any) -> bytes:
    return "\n".join(p.strip("\n") for p in parts if p).encode()
