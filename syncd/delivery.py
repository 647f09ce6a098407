"""What each journal event becomes on the wire (pluto-api.md), one run at a time.

:class:`Delivery` is the replayer's per-event half: it reads the next event(s) from a run's
cursor, sends the request, and reports the outcome through the replayer's ``acked`` /
``rejected``. Opening a run is in :mod:`syncd.opening`, NDJSON records in :mod:`syncd.ingest`;
updates, statuses and re-asserts are here. Transient and auth errors propagate to the replayer, which schedules the retry;
nothing it raises loses an event, because the acked seq only moves after an answer.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

from pluto_offline import journal
from pluto_offline.journal import filerows, history
from syncd import alerts, finalstate, kinds, ledger, runstate, shared
from syncd.client import RejectedError, TransientError
from syncd.cursor import Cursor, Hold, RunCtx
from syncd.ingest import Ingest
from syncd.opening import Opening
from syncd.render import Renderer

if TYPE_CHECKING:
    from syncd.replayer import Replayer

log = logging.getLogger("plutosync")


class Delivery(Opening, Ingest):
    def __init__(self, replayer: Replayer) -> None:
        self.r = replayer
        self.j = replayer.j
        self.client = replayer.client
        self.render = Renderer()
        # run key -> (server id, seq): string series acked whose ledger write failed
        self._ledger_due: dict[int, tuple[int, int]] = {}

    def step(self, ctx: RunCtx, cursor: Cursor) -> None:
        """Deliver the next event (or batch) of the run."""
        if ctx.row.key in self._ledger_due:
            sid, seq = self._ledger_due[ctx.row.key]
            shared.record_data(self.client, self.j, ctx.row, sid, seq)
            del self._ledger_due[ctx.row.key]
        ev = cursor.peek()
        assert ev is not None
        if ctx.server_id is None and ev.kind not in journal.OPENERS:
            # Only reachable when the run's create/resume was refused: nothing can follow it.
            reason = ctx.open_error or self._open_error(ctx)
            if reason is None:
                raise Hold("waiting for the run's create/resume event")
            self.r.rejected(ctx, cursor.take(), None,
                            f"the run does not exist on the server ({reason})")
            return
        if ev.kind == "status" and (n := filerows.blocking(self.j, ctx.row.key, ev.seq)):
            self.r.files.start()  # a run's final status only after its files (docs/media.md)
            raise Hold(f"its status waits for {n} file(s) logged before it to be uploaded")
        if ev.kind in journal.OPENERS or ev.kind == "status":
            # an open or an end, with the status check it implies, one thread at a time
            with finalstate.run_lock(ctx.row.project, ctx.row.run_id):
                if ev.kind == "create":
                    self._create(ctx, cursor.take())
                elif ev.kind == "resume":
                    self._resume(ctx, cursor.take())
                else:
                    self._update(ctx, cursor.take())
        elif ev.kind in kinds.INGEST:
            batch = cursor.take_batch(ev.kind, self.r.batch_bytes)
            if ev.kind == "metrics":
                self.render.prefetch(cursor.ahead(self.r.batch_bytes))
            self._ingest(ctx, batch, kinds.INGEST[ev.kind])
        elif ev.kind == "close":
            self.r.acked(ctx, cursor.take().seq, 1, requests=0)  # close sends nothing
        else:
            self._update(ctx, cursor.take())

    def _update(self, ctx: RunCtx, ev: journal.Event) -> None:
        sid = ctx.server_id
        assert sid is not None
        payload = ev.data()
        sent = 1
        try:
            if ev.kind == "config":
                # never an empty delta: the server refuses it
                if isinstance(payload, dict):
                    sent = shared.send_config(self.client, self.j, ctx.row, sid, payload,
                                              ev.time)
                elif payload:  # the server says why not
                    self.client.update_config(sid, json.dumps(payload))
                else:
                    sent = 0
            elif ev.kind == "tags":
                sent = shared.send_tags(self.client, self.j, ctx.row, sid, list(payload or []),
                                        ev.time)
            elif ev.kind == "lognames":
                names = (payload or {}).get("names") or []
                if names:
                    self.client.add_log_names(sid, names, payload.get("type") or "METRIC")
                else:
                    sent = 0
            elif ev.kind == "status":
                sent = self._status(ctx, ev, payload or {})
            elif ev.kind == "alert":  # run.alert() (issue 10): the py service's endpoint,
                if (payload or {}).get("webhook"):  # or remote=False: the user's webhook
                    fields = journal.server_fields(self.j, ctx.row.key)  # the view URL now
                    alerts.post_webhook(payload, fields[2] if fields else ctx.row.url,
                                        (str(self.j.path), ev.seq))
                else:
                    alerts.send(self.client, sid, payload or {})
            else:
                self.r.rejected(ctx, ev, None, f"unknown event kind {ev.kind!r} (newer SDK?)")
                return
        except RejectedError as exc:
            self.r.rejected(ctx, ev, exc)
            return
        except TransientError as exc:
            if exc.unanswered and ev.kind in ("config", "tags", "status"):
                self.r.ambiguous(ctx.row.key, ev.kind)
            raise
        self.r.acked(ctx, ev.seq, 1, requests=sent)

    @contextlib.contextmanager
    def _marked_sent(self, row: journal.RunRow, ev: journal.Event) -> Iterator[None]:
        """Mark an end sent before it goes, as an open is (opening.py): one an earlier
        process sent and never heard back about may still be held by the server and land
        after a later end of another journal (or of this one, after a resume), so its final
        state is sent again later. Unmarked when the server answered (nothing left to land)."""
        key = row.key
        if journal.sent_seq(self.j, key) >= ev.seq and (key, ev.seq) not in self.r.ended_here:
            self.r.ambiguous(key, "status", "status")
        self.r.ended_here.add((key, ev.seq))
        with self._in_flight(row, ev.seq):
            yield

    def reassert(self, ctx: RunCtx, kinds: set[str]) -> None:
        """Send the run's final config / tags / terminal status again (see Replayer.ambiguous)."""
        row = ctx.row
        sid = ctx.server_id
        assert sid is not None
        if "config" in kinds and isinstance(row.config, dict) and row.config:
            times = ledger.fold_times(history.config_history(self.j, row.key))
            shared.send_config(self.client, self.j, row, sid, row.config, times)
        if "tags" in kinds:
            at = history.tags_time(self.j, row.key)
            shared.send_tags(self.client, self.j, row, sid, list(row.tags),
                             at if at is not None else row.created_at)
        put = None
        if "status" in kinds:
            # the latest status change of the run: this journal's, or, when a late request
            # replaced the marker, another journal's from the ledger
            own = self._own_change(row)
            put = finalstate.repair(self.client, sid, own,
                                    ledgered=history.shared_run(self.j, row.key))
            if put is not None and own is not None and put != own:
                log.info("run %s: a late request had replaced its status; put back %s at %s, "
                         "the run's latest status change (from another journal)", ctx.label,
                         put.status, runstate.clock(put.time / 1000))
        log.info("run %s: final state re-asserted after an unanswered request", ctx.label)

    def _own_change(self, row: journal.RunRow) -> finalstate.Change | None:
        """This journal's latest delivered status change of the run (an open or an end)."""
        ev = journal.last_event(self.j, row.key, journal.LIFECYCLE_KINDS,
                                before=row.acked_seq + 1)
        return None if ev is None else finalstate.change_of(self.j, row.key, ev)

    def _status(self, ctx: RunCtx, ev: journal.Event, payload: dict) -> int:
        sid = ctx.server_id
        assert sid is not None
        status = payload.get("status")
        metadata = payload.get("metadata")
        if status not in journal.TERMINAL_STATUSES:  # not journaled by our SDK; sent as is
            self.client.update_status(
                sid, str(status), metadata=None if metadata is None else json.dumps(metadata),
                at_ms=ev.time)
            return 1
        change = finalstate.change_of(self.j, ctx.row.key, ev)
        assert change is not None
        at = change.time
        sent = shared.record_change(self.client, self.j, ctx.row, sid, ev.seq, change,
                                    self.r.changes_noted)
        with self._marked_sent(ctx.row, ev):
            outcome = finalstate.end(self.client, sid, status, change.metadata, at)
        if outcome == "superseded":
            log.info("run %s: its %s at %s is older than a status change the server already "
                     "holds from another journal; left as is", ctx.label, status,
                     runstate.clock(at / 1000))
        else:
            log.info("run %s: delivered, status %s", ctx.label, status)
        return sent + 2
