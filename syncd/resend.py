"""Sending again the events the server refused earlier (``plutosync push --retry-rejected``).

A refusal is recorded for good because the request, as it was, would never succeed. Some
refusals come from something fixed since: a proxy that answered in the server's place, a limit
raised on the server, a run restored. On request they are sent again:

- a run the server never opened (its create or resume was refused) is delivered again from that
  event on, in order, as if new: nothing of it from there reached the server;
- a run that is open gets each refused event again on its own, in seq order. Metrics keep the
  point with the latest time per step, so a later ``log()`` of a step still wins; a refused
  config or tags event sends the run's *final* config / tags (the old change alone would undo
  later ones); a status goes through the final-state rule like any other.
  What can only be given with a run's create (its logger settings, its fork link) stays refused.

Each refusal is then forgotten (the server took it) or kept with the server's new reason.
Usage::

    tried = resend.retry_rejected(replayer)   # the open runs' events are sent now
    drain(replayer)                            # the reopened runs go with the pending events
    tally = resend.tally(replayer.j, tried)    # delivered / refused again / left
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from pluto_offline import journal
from syncd.client import AuthError, RejectedError, TransientError
from syncd.cursor import Cursor, Hold, RunCtx
from syncd.replayer import Replayer

ONLY_AT_CREATE = ("settings", "fork")  # parts of a create that no later request can carry
_NO_MORE = 1 << 62  # a cursor that reads nothing past the event it is given


@dataclass
class Tried:
    """What :func:`retry_rejected` did: the seqs it sent again (or put back in the queue),
    the refusals it could not send again and why, and what stopped it early."""

    seqs: dict[int, int] = field(default_factory=dict)  # seq -> run
    kept: list[str] = field(default_factory=list)
    stopped: str | None = None


@dataclass(frozen=True)
class Tally:
    delivered: int
    refused: int
    left: int


def retry_rejected(replayer: Replayer) -> Tried:
    """Send again every refused event of the replayer's journal (see the module docstring).

    Never raises a client error: the server unreachable or the key refused stops the retry
    (``Tried.stopped``), leaving what was not tried refused as it was.
    """
    j = replayer.j
    tried = Tried()
    by_run: dict[int, list[dict]] = {}
    for rej in journal.rejected_events(j):
        by_run.setdefault(rej["run"], []).append(rej)
    for run, rejections in by_run.items():
        row = journal.get_run(j, run)
        if row is None:
            continue
        if row.server_id is None:  # never opened: deliver it again from its first refusal
            journal.redeliver_run(j, run, rejections[0]["seq"])
            tried.seqs.update((r["seq"], run) for r in rejections)
            continue
        for rej in rejections:
            try:
                _one(replayer, row, rej, tried)
            except (TransientError, AuthError) as exc:
                tried.stopped = exc.describe()
                return tried
            except Hold as hold:
                tried.kept.append(f"{_label(row)}: event {rej['seq']} ({rej['kind']}): "
                                  f"{hold.reason}")
            row = journal.get_run(j, run) or row
    return tried


def tally(j: journal.Journal, tried: Tried) -> Tally:
    """Of the seqs tried: how many the server took, refused again, or are still pending."""
    refused = {r["seq"] for r in journal.rejected_events(j)} & set(tried.seqs)
    acked = {r.key: r.acked_seq for r in journal.all_runs(j)}
    left = {s for s, run in tried.seqs.items() if s > acked.get(run, 0)} - refused
    return Tally(len(tried.seqs) - len(refused) - len(left), len(refused), len(left))


def _one(replayer: Replayer, row: journal.RunRow, rej: dict, tried: Tried) -> None:
    """Send one refused event (or the refused parts of one) of an open run again."""
    j, seq = replayer.j, rej["seq"]
    events = journal.pending_events(j, row.key, after=seq - 1, limit=1)
    ev = events[0] if events and events[0].seq == seq else None
    if ev is None:
        tried.kept.append(f"{_label(row)}: event {seq} is no longer in the journal")
        return
    tried.seqs[seq] = row.key
    parts = rej["kind"].split(",")
    if ev.kind == "create" and rej["kind"] != "create":
        _parts(replayer, row, ev, parts, tried)
    elif ev.kind in ("config", "tags"):
        _final(replayer, row, ev, [ev.kind])
    else:
        before = replayer.totals.rejected
        cursor = Cursor(j, row.key, _NO_MORE)
        cursor.buf.append(ev)
        replayer.delivery.step(RunCtx(row, row.server_id, row.acked_seq), cursor)
        if replayer.totals.rejected == before:  # refused again: recorded anew by the step
            journal.unreject(j, [seq])


def _parts(replayer: Replayer, row: journal.RunRow, ev: journal.Event, parts: list[str],
           tried: Tried) -> None:
    """A create's refused parts: config and tags go as the run's final ones; the others
    cannot be given to a run that exists."""
    stuck = [p for p in parts if p in ONLY_AT_CREATE or p not in ("config", "tags")]
    sendable = [p for p in parts if p in ("config", "tags")]
    if sendable and not _final(replayer, row, ev, sendable, forget=not stuck):
        return
    if stuck:
        what = ", ".join(stuck)
        reason = (f"the run's {what} can only be given when the run is created, and it exists "
                  "on the server now: cannot be sent again")
        journal.rereject(replayer.j, ev.seq, code=None, reason=reason)
        tried.kept.append(f"{_label(row)}: event {ev.seq} ({what}): {reason}")


def _final(replayer: Replayer, row: journal.RunRow, ev: journal.Event, parts: list[str],
           forget: bool = True) -> bool:
    """Send the run's final config and/or tags; True when the server took them."""
    client, sid = replayer.client, row.server_id
    assert sid is not None
    try:
        if "config" in parts and isinstance(row.config, dict) and row.config:
            client.update_config(sid, json.dumps(row.config))
        if "tags" in parts:
            client.update_tags(sid, list(row.tags))
    except RejectedError as exc:
        journal.rereject(replayer.j, ev.seq, code=exc.code,
                         reason=f"the server refused the run's {', '.join(parts)} again: "
                                f"{exc.describe()}")
        return False
    if forget:
        journal.unreject(replayer.j, [ev.seq])
    replayer._count(1, len(parts))  # one event delivered, on the progress bar too
    return True


def _label(row: journal.RunRow) -> str:
    return f"{row.project}/{row.name or row.run_id}"
