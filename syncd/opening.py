"""Opening a run on the server: its create (or an attach, or a resume), with the checks
a run written by several journals needs (docs/delivery.md). Part of :class:`syncd.delivery.
Delivery`; a mixin so that the per-event dispatch stays in one small place.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from pluto_offline import journal
from pluto_offline.journal.shareable import shareable_settings
from syncd import finalstate, runstate, shared
from syncd.client import ClientError, PlutoClient, RejectedError, TransientError
from syncd.cursor import Hold, RunCtx

if TYPE_CHECKING:
    from syncd.replayer import Replayer

log = logging.getLogger("plutosync")

# How long after its init() a job that asked to resume a run, still running, waits for the
# run's own journal to create it (docs/delivery.md, "One run, many journals"): an eval job
# ends within it and only attaches; a first Slurm allocation with resume=True shows up late.
ATTACH_GRACE_S = 120.0
# What a refused create can be sent again without, by the part's name in `rejected`.
_OPTIONAL_PARTS = {"tags": ("tags",), "settings": ("loggerSettings",),
                   "fork": ("forkRunId", "forkStep", "inheritConfig", "inheritTags")}
ORIGIN_KEY = "plutoOffline"


class Opening:
    r: Replayer
    j: journal.Journal
    client: PlutoClient

    def _create(self, ctx: RunCtx, ev: journal.Event) -> None:
        row = ctx.row
        if ctx.server_id is not None:
            # opened already (an earlier try stopped in the status check that follows an
            # open, or a duplicate event): only that check is left to do. That try's RUNNING
            # mark may still be on its way (its process killed while the server held it) and
            # land after the run's end: the final status is sent again later (seed 1051).
            # Not for this process's own earlier try: it knows how that one ended.
            if row.key not in self.r.opened_here and row.reassert is None:
                self.r.ambiguous(row.key, "status", "create")
            self.r.opened_here.add(row.key)
            self._opened(ctx, ev, {"runId": ctx.server_id, "displayId": row.display_id,
                                   "number": row.number, "url": row.url}, "created")
            return
        replay = self._sent_before(row, ev, "create")
        p = ev.data() or {}
        attach = bool(p.get("resume"))  # init(resume=True) or PLUTO_RUN_ID: attaching intended
        if attach and journal.only_attached(self.j, row.key):
            self._attach(ctx, ev)
            return
        found = self._found_while_asked(row, ev, p)  # None: create it
        if found is None and attach and journal.only_attached(self.j, row.key):
            self._attach(ctx, ev)  # its job close()d between the two looks (seed 1194)
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
        if p.get("settings") or p.get("logger"):  # the effective settings, the job's on top
            logger = p.get("logger") if isinstance(p.get("logger"), dict) else {}
            settings = ({**logger, **p["settings"]} if isinstance(p.get("settings"), dict)
                        else p["settings"] or logger)
            # never the webhook URL nor a credential, whatever SDK wrote this journal
            body["loggerSettings"] = json.dumps(shareable_settings(
                settings, self.client.settings.api_key) if isinstance(settings, dict)
                else settings)
        # Who created the run: a later copy of this journal (an air-gap carry exported again)
        # recognises the run as its own instead of calling it a conflict, and a journal that
        # was only attaching (resume=True) leaves the run's own journal free to attach later.
        # Beside the host/process/git facts the SDK journaled with the create (issue 10).
        system = p.get("system") if isinstance(p.get("system"), dict) else {}
        body["systemMetadata"] = json.dumps({**system, ORIGIN_KEY: {**_origin(self.j, row),
                                                                    "attach": attach}})
        try:
            if p.get("fork"):
                body.update(self._fork_fields(ctx, ev, p["fork"]))
            answer = found or self._create_run(row, ev, body)
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
        more = shared.create_marks(self.j, row, tags, ev.time, ev.seq) if fresh else {}
        with self._noted_if_unanswered(row, "config"):
            try:
                if config and not isinstance(config, dict):  # the server says why not
                    self.client.update_config(sid, json.dumps(config))
                elif config or more:
                    shared.send_config(self.client, self.j, row, sid, config or {}, ev.time,
                                       fresh=fresh, more=more)
                    if more:  # the open's note went with it
                        self.r.changes_noted.add((row.key, ev.seq))
            except RejectedError as exc:
                self._part_refused(ctx, ev, "config", exc)
        if not fresh:
            with self._noted_if_unanswered(row, "tags"):
                shared.create_found_run(self.client, self.j, row, sid,
                                        list(p.get("tags") or []), ev.time)
        how = "re-attached" if answer.get("resumed") and (attach or not replay) else "created"
        self._opened(ctx, ev, answer, how, fresh=fresh)

    def _create_run(self, row: journal.RunRow, ev: journal.Event,
                    body: dict[str, Any]) -> dict[str, Any]:
        """Send the create; if the server refuses it, send it again without its optional
        parts (tags, settings, fork link), recording them as refused: the run and its data
        are worth more than the parts the server would not take."""
        try:
            return self._opening(row, ev, "create", self.client.create_run, body)
        except RejectedError as exc:
            parts = {part: keys for part, keys in _OPTIONAL_PARTS.items()
                     if any(k in body for k in keys)}
            if not parts or exc.code is None:
                raise
            dropped = {k for keys in parts.values() for k in keys}
            answer = self._opening(row, ev, "create", self.client.create_run,
                                   {k: v for k, v in body.items() if k not in dropped})
            what = ", ".join(parts)
            journal.reject_part(self.j, ev, ",".join(parts), code=exc.code, reason=(
                f"the server refused the create with its {what} ({exc.describe()}); the run "
                f"was created without them"))
            log.warning("run %s/%s: the server refused its %s at create (%s); created without "
                        "them, recorded as rejected", row.project, row.name or row.run_id, what,
                        exc.describe())
            return answer

    def _found_while_asked(self, row: journal.RunRow, ev: journal.Event,
                           p: dict[str, Any]) -> dict[str, Any] | None:
        """A job still running that asked to resume (``init(resume=True)``: an eval job, a
        later allocation) a run the server may not hold yet: until it ends, for at most
        ``ATTACH_GRACE_S`` after its ``init``, only resume it, so that the run's own journal
        names it. Returns the run found (as a create that resumed it); None: create it (no
        grace, or the grace is over); raises :class:`Hold` while waiting."""
        if not p.get("resume_asked") or journal.now_ms() - ev.time > ATTACH_GRACE_S * 1000:
            return None
        # alive: a process that ended its writer (close, finish) but still runs counts too,
        # until only_attached can decide (seed 1194: closed, not yet exited)
        alive = journal.live_writer_ids(self.j)
        if not any(w in alive for (w,) in self.j.conn.execute(
                "SELECT id FROM writers WHERE run = ?", (row.key,))):
            return None  # it ended: only_attached decided (it finished, or was killed)
        try:
            answer = self._opening(row, ev, "resume", self.client.resume_run,
                                   {"externalId": row.run_id, "projectName": row.project})
        except RejectedError as exc:
            if exc.code != 404:
                return None  # the create says why
            raise Hold(f"run {row.run_id!r} is not on the server yet: this job asked to resume "
                       "it (init(resume=True)) and is still running, so the journal that "
                       f"started the run gets up to {ATTACH_GRACE_S:.0f} s to create it; "
                       "then this journal does", creator=True) from None
        return {**answer, "resumed": True}

    def _attach(self, ctx: RunCtx, ev: journal.Event) -> None:
        """Open a run this journal only attached to (an eval job: resume=True, close()):
        resume it by externalId, never create it; until the journal that started it has
        created it, wait (the run's name and first config are that journal's to give)."""
        row = ctx.row
        body = {"externalId": row.run_id, "projectName": row.project}
        try:
            answer = self._opening(row, ev, "resume", self.client.resume_run, body)
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
                with self._noted_if_unanswered(row, "config"):
                    self._attach_config(row, answer, p, ev)
            except RejectedError as exc:
                self._part_refused(ctx, ev, "config", exc)
        self._opened(ctx, ev, answer, "attached to")

    def _attach_config(self, row: journal.RunRow, answer: dict[str, Any], p: dict[str, Any],
                       ev: journal.Event) -> None:
        if isinstance(p["config"], dict):
            shared.send_config(self.client, self.j, row, int(answer["runId"]), p["config"],
                               ev.time)
        else:  # the server says why not
            self.client.update_config(int(answer["runId"]), json.dumps(p["config"]))

    @contextlib.contextmanager
    def _noted_if_unanswered(self, row: journal.RunRow, kind: str) -> Iterator[None]:
        """A config, tags or status update sent with an open that gets no answer may land
        late, after the run's later updates: note it, so the final state is sent again."""
        try:
            yield
        except TransientError as exc:
            if exc.unanswered:
                self.r.ambiguous(row.key, kind)
            raise

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
        self._sent_before(row, ev, "resume")
        try:
            try:
                answer = self._opening(row, ev, "resume", self.client.resume_run, body)
            except RejectedError as exc:
                if exc.code != 409 or "displayId" not in body:
                    raise
                answer = self._opening(row, ev, "resume", self.client.resume_run,
                                       {**body, "projectName": row.project})
        except RejectedError as exc:
            if ctx.server_id is None:
                self._open_refused(ctx, ev, exc)
            else:
                self.r.rejected(ctx, ev, exc)
            return
        self._opened(ctx, ev, answer, "resumed")

    def _sent_before(self, row: journal.RunRow, ev: journal.Event, request: str) -> bool:
        """Whether an open (a create or resume: each sets RUNNING) of ``ev`` was sent before,
        by this process or an earlier one, with no answer saying it was not applied. One an
        earlier process sent may still be held by the server, that process killed before the
        answer came, and land after the run's end: the final status is then sent again later
        (seed 1112)."""
        earlier = journal.sent_seq(self.j, row.key) >= ev.seq
        if earlier and row.key not in self.r.opened_here:
            self.r.ambiguous(row.key, "status", request)
        self.r.opened_here.add(row.key)
        return earlier

    def _opening(self, row: journal.RunRow, ev: journal.Event, request: str, send: Any,
                 body: dict[str, Any]) -> dict[str, Any]:
        """Send a create or resume of ``ev``. Either sets the run RUNNING on the server; one
        left unanswered may land late, after the run's terminal status, and reopen it.

        Marked sent before it goes out (after a crash, a create answered ``resumed: true``
        is then our own, and an open whose outcome no process kept is known: see
        :meth:`_sent_before`); unmarked when it fails with an answer (a refusal, an error
        page, a reset after the server applied it: nothing of it is still on its way)."""
        try:
            with self._in_flight(row, ev.seq):
                return send(body)
        except TransientError as exc:  # no answer (a timeout): it may still land
            if exc.unanswered:
                self.r.ambiguous(row.key, "status", request)
            raise

    @contextlib.contextmanager
    def _in_flight(self, row: journal.RunRow, seq: int) -> Iterator[None]:
        """Mark the open or end of event ``seq`` sent (``sent_seq``) while its request goes;
        unmark it when the server answered that it failed: nothing of it can land later."""
        before = journal.sent_seq(self.j, row.key)
        journal.mark_sent(self.j, row.key, seq)
        try:
            yield
        except ClientError as exc:
            if not (isinstance(exc, TransientError) and exc.unanswered):
                journal.unmark_sent(self.j, row.key, seq, before)
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
        change = finalstate.change_of(self.j, ctx.row.key, ev)
        assert change is not None
        at = change.time
        first = ctx.server_id is None
        if first:  # kept before the status check: a retry of the check does not open again
            journal.ack(self.j, ctx.row.key, ctx.acked, **fields)
            ctx.server_id = fields["server_id"]
        if first:  # said once the run exists, whatever becomes of the check below
            log.info("run %s: %s on the server as %s %s", ctx.label, how,
                     fields["display_id"] or fields["server_id"], fields["url"] or "")
        # the RUNNING mark sets the status too: one held past the timeout may land after the
        # run's end, as an open may (seed 1158)
        sent = shared.record_change(self.client, self.j, ctx.row, fields["server_id"], ev.seq,
                                    change, self.r.changes_noted)
        with self._noted_if_unanswered(ctx.row, "status"):
            if fresh:  # a new run: nothing on the server to compare with
                finalstate.mark_open(self.client, fields["server_id"], at)
                outcome = "running"
            else:
                outcome = finalstate.opened(self.client, fields["server_id"], at)
        self.r.acked(ctx, ev.seq, 1, requests=2 + sent)
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
            if rej["kind"] in journal.OPENERS:
                ctx.open_error = f"its {rej['kind']} was refused: {rej['reason']}"
                return ctx.open_error
        return None

    def _fork_fields(self, ctx: RunCtx, ev: journal.Event, fork: dict) -> dict[str, Any]:
        parent = fork.get("parent") or {}
        if "key" in parent:
            prow = journal.get_run(self.j, int(parent["key"]))
            if prow is None:
                raise RejectedError(None, f"fork parent (journal run {parent['key']}) is not in the journal")
            name = f"{prow.project}/{prow.name or prow.run_id}"
            first = journal.pending_events(self.j, prow.key, after=prow.acked_seq, limit=1)
            if prow.server_id is None or (first and first[0].seq < ev.seq):
                if prow.server_id is None and any(
                    r["kind"] in journal.OPENERS for r in journal.rejected_events(self.j, prow.key)
                ):
                    raise RejectedError(None, f"fork parent {name} was refused by the server")
                held = prow.conflict is not None or self.r.held(prow.key)
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


def _origin(j: journal.Journal, row: journal.RunRow) -> dict[str, Any]:
    return {"journal": j.id, "run": row.key}
