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
from syncd.client import PlutoClient

log = logging.getLogger("plutosync")


def send_config(client: PlutoClient, j: journal.Journal, row: journal.RunRow, server_id: int,
                delta: dict[str, Any], times: Any, *, fresh: bool = False,
                tags_time: int | None = None) -> int:
    """Merge ``delta`` (set at ``times``: one ms value, or a mirror per leaf) into the run's
    config, leaving out what another journal set later. ``fresh``: the run was just created
    by this request's journal (nothing to read back). ``tags_time``: the create's tags were
    set then (recorded in the same request)."""
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
        body = ledger.config_update(kept, marks, tags_time)
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
        held = ledger.Ledger.read(client, server_id).tags_time
        if held is not None and held > at:
            log.info("run %s/%s: its tags were set later by another journal; left as they "
                     "are", row.project, row.name or row.run_id)
            return 1
        # the time first: a crash between the two leaves a time newer than the tags, which
        # this journal's own retry (its event is not acked) then makes true
        client.update_config(server_id, json.dumps(ledger.config_update({}, {}, at)))
        client.update_tags(server_id, tags)
        return 3


def data_delivered(client: PlutoClient, j: journal.Journal, row: journal.RunRow,
                   server_id: int) -> int:
    """The highest seq of this journal's string series (of this run) that any copy of the
    journal delivered (0: none)."""
    copy = ledger.copy_key(j.id, row.key)
    return ledger.Ledger.read(client, server_id).delivered_up_to(copy)


def record_data(client: PlutoClient, j: journal.Journal, row: journal.RunRow, server_id: int,
                seq: int) -> None:
    """Note on the server that string series up to ``seq`` were delivered."""
    ledger.record_delivered(client, server_id, ledger.copy_key(j.id, row.key), seq)
