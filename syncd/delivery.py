"""What each journal event becomes on the wire (pluto-api.md), one run at a time.

:class:`Delivery` is the replayer's per-event half: it reads the next event(s) from a run's
cursor, sends the request, and reports the outcome through the replayer's ``acked`` /
``rejected``. Transient and auth errors propagate to the replayer, which schedules the retry;
nothing it raises loses an event, because the acked seq only moves after an answer.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pluto_offline import journal
from pluto_offline.journal import filerows, history
from syncd import finalstate, kinds, ledger, runstate, shared
from syncd.client import ClientError, RejectedError, TransientError
from syncd.render import Renderer

if TYPE_CHECKING:
    from syncd.replayer import Cursor, Replayer, RunCtx

log = logging.getLogger("plutosync")

ISOLATE_BUDGET = 128  # requests spent finding the bad lines of one refused NDJSON event
_OPENERS = ("create", "resume")
# What a refused create can be sent again without, by the part's name in `rejected`.
_OPTIONAL_PARTS = {"tags": ("tags",), "settings": ("loggerSettings",),
                   "fork": ("forkRunId", "forkStep", "inheritConfig", "inheritTags")}


class Delivery:
    def __init__(self, replayer: Replayer) -> None:
        self.r = replayer
        self.j = replayer.j
        self.client = replayer.client
        self.render = Renderer()
        # run key -> (server id, seq): string series acked whose ledger write failed
        self._ledger_due: dict[int, tuple[int, int]] = {}

    def step(self, ctx: RunCtx, cursor: Cursor) -> None:
        """Deliver the next event (or batch) of the run."""
        from syncd.replayer import Hold

        if ctx.row.key in self._ledger_due:
            sid, seq = self._ledger_due[ctx.row.key]
            shared.record_data(self.client, self.j, ctx.row, sid, seq)
            del self._ledger_due[ctx.row.key]
        ev = cursor.peek()
        assert ev is not None
        if ctx.server_id is None and ev.kind not in _OPENERS:
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
        if ev.kind in _OPENERS or ev.kind == "status":
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

    # ------------------------------------------------------------------ opening a run
    def _create(self, ctx: RunCtx, ev: journal.Event) -> None:
        from syncd.replayer import Hold

        row = ctx.row
        if ctx.server_id is not None:
            # opened already (an earlier try stopped in the status check that follows an
            # open, or a duplicate event): only that check is left to do
            self._opened(ctx, ev, {"runId": ctx.server_id, "displayId": row.display_id,
                                   "number": row.number, "url": row.url}, "created")
            return
        p = ev.data() or {}
        attach = bool(p.get("resume"))  # init(resume=True) or PLUTO_RUN_ID: attaching intended
        if attach and journal.only_attached(self.j, row.key):
            self._attach(ctx, ev)
            return
        body: dict[str, Any] = {
            "runName": p.get("name") or row.name or row.run_id,
            "projectName": row.project,
            "externalId": row.run_id,
            "createdAt": ev.time,
        }
        if p.get("tags"):
            body["tags"] = p["tags"]
        # No config in the create: an existing run with this externalId would get it merged
        # before we could tell a conflict. It follows in a config update once the run is ours.
        if p.get("settings"):
            body["loggerSettings"] = json.dumps(p["settings"])
        # Who created the run: a later copy of this journal (an air-gap carry exported again)
        # recognises the run as its own instead of calling it a conflict, and a journal that
        # was only attaching (resume=True) leaves the run's own journal free to attach later.
        body["systemMetadata"] = json.dumps({ORIGIN_KEY: {**_origin(self.j, row),
                                                          "attach": attach}})
        try:
            if p.get("fork"):
                body.update(self._fork_fields(ctx, ev, p["fork"]))
            # Marked before sending: after a crash, resumed=true is then our own create.
            replay = journal.sent_seq(self.j, row.key) >= ev.seq
            journal.mark_sent(self.j, row.key, ev.seq)
            answer = self._create_run(row, ev, body)
        except RejectedError as exc:
            self._open_refused(ctx, ev, exc)
            return
        if (answer.get("resumed") and not replay and not attach
                and not self._ours_to_join(row, answer)):
            conflict = (
                f"externalId {row.run_id!r} already exists in project {row.project!r} on the "
                f"server (run {answer.get('displayId') or answer.get('runId')}) and this journal "
                "did not ask to resume it; nothing was merged. Resume it explicitly "
                "(init(run_id=..., resume=True)) or use another run_id."
            )
            journal.record_error(self.j, row.key, "conflict", conflict=conflict)
            log.error("run %s: %s", ctx.label, conflict)
            raise Hold(conflict, stuck=True)
        fresh = not answer.get("resumed")
        sid = int(answer["runId"])
        config = p.get("config")
        tags = list(p.get("tags") or []) if "tags" in body else []
        # Acked only with the create: after a crash in between, all is sent again.
        more = shared.create_marks(self.j, row, tags, ev.time) if fresh else {}
        try:
            if config and not isinstance(config, dict):  # the server says why not
                self.client.update_config(sid, json.dumps(config))
            elif config or more:
                shared.send_config(self.client, self.j, row, sid, config or {}, ev.time,
                                   fresh=fresh, more=more)
        except RejectedError as exc:
            self._part_refused(ctx, ev, "config", exc)
        if not fresh:
            shared.create_found_run(self.client, self.j, row, sid, list(p.get("tags") or []),
                                    ev.time)
        how = "re-attached" if answer.get("resumed") and not replay else "created"
        self._opened(ctx, ev, answer, how, fresh=fresh)

    def _create_run(self, row: journal.RunRow, ev: journal.Event,
                    body: dict[str, Any]) -> dict[str, Any]:
        """Send the create; if the server refuses it, send it again without its optional
        parts (tags, settings, fork link), recording them as refused: the run and its data
        are worth more than the parts the server would not take."""
        try:
            return self._opening(row, "create", self.client.create_run, body)
        except RejectedError as exc:
            parts = {part: keys for part, keys in _OPTIONAL_PARTS.items()
                     if any(k in body for k in keys)}
            if not parts or exc.code is None:
                raise
            dropped = {k for keys in parts.values() for k in keys}
            answer = self._opening(row, "create", self.client.create_run,
                                   {k: v for k, v in body.items() if k not in dropped})
            what = ", ".join(parts)
            journal.reject_part(self.j, ev, ",".join(parts), code=exc.code, reason=(
                f"the server refused the create with its {what} ({exc.describe()}); the run "
                f"was created without them"))
            log.warning("run %s/%s: the server refused its %s at create (%s); created without "
                        "them, recorded as rejected", row.project, row.name or row.run_id, what,
                        exc.describe())
            return answer

    def _attach(self, ctx: RunCtx, ev: journal.Event) -> None:
        """Open a run this journal only attached to (an eval job: resume=True, close()):
        resume it by externalId, never create it; until the journal that started it has
        created it, wait (the run's name and first config are that journal's to give)."""
        from syncd.replayer import Hold

        row = ctx.row
        body = {"externalId": row.run_id, "projectName": row.project}
        try:
            answer = self._opening(row, "resume", self.client.resume_run, body)
        except RejectedError as exc:
            if exc.code != 404:
                self._open_refused(ctx, ev, exc)
                return
            raise Hold(f"waiting for run {row.run_id!r} to be created on the server by the "
                       "journal that started it: this journal only attached to it "
                       "(init(resume=True), then close()); deliver that journal too",
                       creator=True) from None
        p = ev.data() or {}
        if p.get("config"):
            try:
                if isinstance(p["config"], dict):
                    shared.send_config(self.client, self.j, row, int(answer["runId"]),
                                       p["config"], ev.time)
                else:  # the server says why not
                    self.client.update_config(int(answer["runId"]), json.dumps(p["config"]))
            except RejectedError as exc:
                self._part_refused(ctx, ev, "config", exc)
        self._opened(ctx, ev, answer, "attached to")

    def _ours_to_join(self, row: journal.RunRow, answer: dict[str, Any]) -> bool:
        """Whether the existing server run is this journal's to join although it did not ask
        to resume: created from this journal (or a copy of it), or by a journal that was only
        attaching to it (a rank or an eval job delivered before the run's own journal)."""
        try:
            fields = self.client.run_fields(int(answer["runId"]), ("systemMetadata",))
        except RejectedError:
            return False  # cannot tell: the cautious answer is a conflict
        meta = fields.get("systemMetadata")
        if isinstance(meta, str):
            try:
                meta = json.loads(meta)
            except ValueError:
                return False
        origin = meta.get(ORIGIN_KEY) if isinstance(meta, dict) else None
        if not isinstance(origin, dict):
            return False
        mine = _origin(self.j, row)
        return origin.get("attach") is True or all(origin.get(k) == v for k, v in mine.items())

    def _resume(self, ctx: RunCtx, ev: journal.Event) -> None:
        row = ctx.row
        by = (ev.data() or {}).get("by") or row.ref_kind
        if ctx.server_id is not None:
            body: dict[str, Any] = {"runId": ctx.server_id}
        elif by == "id":
            body = {"runId": int(row.run_id)}
        elif by == "display":
            body = {"displayId": row.run_id}  # as the stock client: the server finds it
        else:
            body = {"externalId": row.run_id, "projectName": row.project}
        try:
            try:
                answer = self._opening(row, "resume", self.client.resume_run, body)
            except RejectedError as exc:
                if exc.code != 409 or "displayId" not in body:
                    raise
                answer = self._opening(row, "resume", self.client.resume_run,
                                       {**body, "projectName": row.project})
        except RejectedError as exc:
            if ctx.server_id is None:
                self._open_refused(ctx, ev, exc)
            else:
                self.r.rejected(ctx, ev, exc)
            return
        self._opened(ctx, ev, answer, "resumed")

    def _opening(self, row: journal.RunRow, request: str, send: Any,
                 body: dict[str, Any]) -> dict[str, Any]:
        """Send a create or resume. Either sets the run RUNNING on the server; one left
        unanswered may land late, after the run's terminal status, and reopen it."""
        try:
            return send(body)
        except TransientError as exc:
            if exc.unanswered:
                self.r.ambiguous(row.key, "status", request)
            raise

    def _opened(self, ctx: RunCtx, ev: journal.Event, answer: dict, how: str,
                fresh: bool = False) -> None:
        """The run is open on the server: apply the final-state rule, then acknowledge."""
        fields = {
            "server_id": int(answer["runId"]),
            "display_id": answer.get("displayId"),
            "number": answer.get("number"),
            "url": answer.get("url"),
        }
        at = journal.lifecycle_time(self.j, ctx.row.key, ev.seq)
        first = ctx.server_id is None
        if first:  # kept before the status check: a retry of the check does not open again
            journal.ack(self.j, ctx.row.key, ctx.acked, **fields)
            ctx.server_id = fields["server_id"]
        if fresh:  # a new run: nothing on the server to compare with
            finalstate.mark_open(self.client, fields["server_id"], at)
            outcome = "running"
        else:
            outcome = finalstate.opened(self.client, fields["server_id"], at)
        self.r.acked(ctx, ev.seq, 1, requests=2)
        if first:
            log.info("run %s: %s on the server as %s %s", ctx.label, how,
                     fields["display_id"] or fields["server_id"], fields["url"] or "")
        if outcome == "restored":
            log.info("run %s: its %s at %s is older than the end the server holds; that end "
                     "was put back", ctx.label, ev.kind, runstate.clock(at / 1000))

    def _part_refused(self, ctx: RunCtx, ev: journal.Event, part: str,
                      exc: RejectedError) -> None:
        journal.reject_part(self.j, ev, part, code=exc.code,
                            reason=f"the server refused the run's {part}: {exc.describe()}")
        log.warning("run %s: the server refused its %s (%s); recorded, moving on", ctx.label,
                    part, exc.describe())

    def _open_refused(self, ctx: RunCtx, ev: journal.Event, exc: RejectedError) -> None:
        ctx.open_error = f"its {ev.kind} was refused: {exc.describe()}"
        self.r.rejected(ctx, ev, exc)

    def _open_error(self, ctx: RunCtx) -> str | None:
        """Why the run was never opened on the server (its refused create/resume), if so."""
        for rej in journal.rejected_events(self.j, ctx.row.key):
            if rej["kind"] in _OPENERS:
                ctx.open_error = f"its {rej['kind']} was refused: {rej['reason']}"
                return ctx.open_error
        return None

    def _fork_fields(self, ctx: RunCtx, ev: journal.Event, fork: dict) -> dict[str, Any]:
        from syncd.replayer import Hold

        parent = fork.get("parent") or {}
        if "key" in parent:
            prow = journal.get_run(self.j, int(parent["key"]))
            if prow is None:
                raise RejectedError(None, f"fork parent (journal run {parent['key']}) is not in the journal")
            name = f"{prow.project}/{prow.name or prow.run_id}"
            first = journal.pending_events(self.j, prow.key, after=prow.acked_seq, limit=1)
            if prow.server_id is None or (first and first[0].seq < ev.seq):
                if prow.server_id is None and any(
                    r["kind"] in _OPENERS for r in journal.rejected_events(self.j, prow.key)
                ):
                    raise RejectedError(None, f"fork parent {name} was refused by the server")
                held = prow.conflict is not None or self.r._sched.get(prow.key) is not None \
                    and self.r._sched[prow.key].stuck
                raise Hold(f"waiting for fork parent {name} to be delivered", stuck=held)
            parent_id = prow.server_id
        elif "id" in parent:
            parent_id = int(parent["id"])
        elif "display_id" in parent:
            parent_id = int(self.client.run_by_display_id(parent["display_id"], ctx.row.project)["id"])
        else:
            raise RejectedError(None, f"fork parent {parent!r} names no run")
        return {
            "forkRunId": parent_id,
            "forkStep": fork.get("step"),
            # A local parent's config and tags were merged into the child's at init (the
            # create's): the server's copy would be the parent's as of when this create lands,
            # with changes the parent made after the fork.
            "inheritConfig": fork.get("inherit_config", True) and "key" not in parent,
            "inheritTags": fork.get("inherit_tags", False) and "key" not in parent,
        }

    # ------------------------------------------------------------------ updates
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
        if "status" in kinds:
            # the run's latest status change in this journal, under the final-state rule
            ev = journal.last_event(self.j, row.key, journal.LIFECYCLE_KINDS,
                                    before=row.acked_seq + 1)
            if ev is not None:
                at = journal.lifecycle_time(self.j, row.key, ev.seq)
                status = (ev.data() or {}).get("status") if ev.kind == "status" else None
                if status in journal.TERMINAL_STATUSES:
                    finalstate.end(self.client, sid, status, (ev.data() or {}).get("metadata"),
                                   at)
                elif ev.kind in _OPENERS:
                    finalstate.opened(self.client, sid, at)
        log.info("run %s: final state re-asserted after an unanswered request", ctx.label)

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
        at = journal.lifecycle_time(self.j, ctx.row.key, ev.seq)
        outcome = finalstate.end(self.client, sid, status,
                                 metadata if isinstance(metadata, dict) else None, at)
        if outcome == "superseded":
            log.info("run %s: its %s at %s is older than a status change the server already "
                     "holds from another journal; left as is", ctx.label, status,
                     runstate.clock(at / 1000))
        else:
            log.info("run %s: delivered, status %s", ctx.label, status)
        return 2

    # ------------------------------------------------------------------ NDJSON ingest
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
        history.note_resent(self.j, ctx.row.key, sum(ev.seq <= sent_before for ev in fresh))
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


ORIGIN_KEY = "plutoOffline"


def _origin(j: journal.Journal, row: journal.RunRow) -> dict[str, Any]:
    return {"journal": j.id, "run": row.key}


def _join(parts: Any) -> bytes:
    return "\n".join(p.strip("\n") for p in parts if p).encode()
