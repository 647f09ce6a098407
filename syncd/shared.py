"""Sending what several journals of one run write alike: config, tags, string series.

The rules (docs/delivery.md) are kept in :mod:`syncd.ledger`; this module applies them to one
request each, under the run's lock (``finalstate.run_lock``), so that a push delivering several
journals of one run in parallel reads and writes the server's ledger one journal at a time.
Each function returns the number of requests it sent.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from pluto_offline import journal
from pluto_offline.journal import history
from syncd import finalstate, ledger
from syncd.client import PlutoClient, RejectedError

log = logging.getLogger("plutosync")


def send_config(client: PlutoClient, j: journal.Journal, row: journal.RunRow, server_id: int,
                delta: dict[str, Any], times: Any, *, fresh: bool = False,
                more: dict[str, Any] | None = None) -> int:
    """Merge ``delta`` (set at ``times``: one ms value, or a mirror per leaf) into the run's
    config, leaving out what another journal set later. ``fresh``: the run was just created
    by this request's journal (nothing to read back). ``more``: other ledger fields to record
    in the same request (a fresh create's tags and time)."""
    if not history.shared_run(j, row.key):
        if not delta:
            return 0
        client.update_config(server_id, json.dumps(delta))
        return 1
    with finalstate.run_lock(row.project, row.run_id):
        server = {} if fresh else ledger.Ledger.read(client, server_id).config_times
        kept, marks = ledger.later_config(delta, times, server)
        if ledger.leaf_count(kept) < ledger.leaf_count(delta):
            log.info("run %s/%s: config keys set later by another journal were left as they "
                     "are", row.project, row.name or row.run_id)
        body = ledger.config_update(kept, marks, more)
        if not body:
            return 0 if fresh else 1
        client.update_config(server_id, json.dumps(body))
        return 1 if fresh else 2


def send_tags(client: PlutoClient, j: journal.Journal, row: journal.RunRow, server_id: int,
              tags: list[str], at: int) -> int:
    """Replace the run's tags, unless another journal set them later than ``at`` (ms)."""
    if not history.shared_run(j, row.key):
        client.update_tags(server_id, tags)
        return 1
    with finalstate.run_lock(row.project, row.run_id):
        held = ledger.Ledger.read(client, server_id).tags_in_force()
        if held is not None and held > at:
            log.info("run %s/%s: its tags were set later by another journal; left as they "
                     "are", row.project, row.name or row.run_id)
            return 1
        _set_tags(client, server_id, tags, ledger.tags_mark(at, create=False))
        return 3


def create_marks(j: journal.Journal, row: journal.RunRow, tags: list[str],
                 at: int, seq: int) -> dict[str, Any]:
    """The ledger fields a create (event ``seq``) that made the run records with its config,
    in one request: its time, its tags' and the note of the open (``lifecycle``)."""
    if not history.shared_run(j, row.key):
        return {}
    opened = ledger.change_entry(journal.lifecycle_time(j, row.key, seq), "RUNNING")
    return {"firstCreate": at, **(ledger.tags_mark(at, create=True) if tags else {}),
            "lifecycle": {ledger.change_key(j.id, row.key, seq): opened}}


def create_found_run(client: PlutoClient, j: journal.Journal, row: journal.RunRow,
                     server_id: int, tags: list[str], at: int) -> int:
    """A create delivered at ``at`` (ms) found the run made by another journal's create. If it
    is the earlier create by time, it is the run's first: record that, and give the run its
    tags unless tags were set later (the server ignored the tags it carried)."""
    if not history.shared_run(j, row.key):
        return 0
    with finalstate.run_lock(row.project, row.run_id):
        led = ledger.Ledger.read(client, server_id)
        if led.first_create is None or led.first_create <= at:
            return 1  # a later create (or the run predates plutosync's marks): tags ignored
        first = {"firstCreate": at}
        # tags that came with the other create count for nothing now: it was not the first
        held = None if led.tags_create else led.tags_time
        if tags and (held is None or held < at):
            _set_tags(client, server_id, tags, {**first, **ledger.tags_mark(at, create=True)})
            return 3
        client.update_config(server_id, json.dumps(ledger.config_update({}, {}, first)))
        return 2


def _set_tags(client: PlutoClient, server_id: int, tags: list[str],
              mark: dict[str, Any]) -> None:
    # the mark first: a crash between the two leaves a mark newer than the tags, which this
    # journal's own retry (its event is not acked) then makes true
    client.update_config(server_id, json.dumps(ledger.config_update({}, {}, mark)))
    client.update_tags(server_id, tags)


def data_delivered(client: PlutoClient, j: journal.Journal, row: journal.RunRow,
                   server_id: int) -> tuple[int, int]:
    """``(delivered, sending)``: the highest seq of this journal's string series (of this run)
    that any copy of the journal delivered, and that any copy sent a request for (0: none)."""
    copy = ledger.copy_key(j.id, row.key)
    led = ledger.Ledger.read(client, server_id)
    return led.delivered_up_to(copy), led.sending.get(copy, 0)


def record_sending(client: PlutoClient, j: journal.Journal, row: journal.RunRow,
                   server_id: int, seq: int) -> None:
    """Note on the server, before the request goes, that string series up to ``seq`` are
    being sent."""
    ledger.record_sending(client, server_id, ledger.copy_key(j.id, row.key), seq)


def record_data(client: PlutoClient, j: journal.Journal, row: journal.RunRow, server_id: int,
                seq: int) -> None:
    """Note on the server that string series up to ``seq`` were delivered."""
    ledger.record_delivered(client, server_id, ledger.copy_key(j.id, row.key), seq)


def record_change(client: PlutoClient, j: journal.Journal, row: journal.RunRow,
                  server_id: int, seq: int, change: finalstate.Change,
                  noted: set[tuple[int, int]]) -> int:
    """Note a status change of a run other journals may write in its ledger, before its
    status is written (``finalstate.repair`` reads it back). ``noted``: the ``(run, seq)``
    this process noted already (a retry of the event does not send it again), updated. A
    refusal is logged and the status still sent: without the note, only a late request can
    leave an older status. Returns the number of requests sent."""
    if (row.key, seq) in noted or not history.shared_run(j, row.key):
        return 0
    try:
        ledger.record_change(client, server_id, ledger.change_key(j.id, row.key, seq),
                             change.time, change.status, change.metadata)
    except RejectedError as exc:
        log.warning("run %s/%s: the server refused the note of its %s in plutoOffline.lifecycle "
                    "(%s); the status is sent without it", row.project, row.name or row.run_id,
                    change.status, exc.describe())
    noted.add((row.key, seq))
    return 1
