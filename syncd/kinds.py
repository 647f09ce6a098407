"""The journal's NDJSON record kinds and what each becomes on the wire: a table, not branches.

==========  ==================  ==========================================================
kind        endpoint            the server deduplicates (pluto-api.md)
==========  ==================  ==========================================================
metrics     ``/ingest/metrics`` yes: on (run, name, step), so a resend is harmless
data        ``/ingest/data``    no: sent once per journal *and its copies* through the
                                run's delivery ledger (``syncd/ledger.py``)
logs        ``/ingest/logs``    no: console lines, the same way as ``data``
==========  ==================  ==========================================================

A new record kind that is NDJSON on an ingest endpoint (console lines: ``/ingest/logs``) is
one more row: consecutive events of the kind are batched into one request up to the batch
size, a refused line is isolated and recorded, and a kind the server does not deduplicate
gets the exactly-once treatment of the ledger without code of its own.

>>> INGEST["data"].path, INGEST["data"].deduplicated
('/ingest/data', False)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class IngestKind:
    kind: str  # the journal's event kind
    path: str  # the ingest endpoint its NDJSON goes to
    deduplicated: bool  # whether the server keeps one row however often a line is sent
    noun: str  # what a user calls its records, in messages


INGEST: dict[str, IngestKind] = {k.kind: k for k in (
    IngestKind("metrics", "/ingest/metrics", True, "metric points"),
    IngestKind("data", "/ingest/data", False, "string-series records"),
    IngestKind("logs", "/ingest/logs", False, "console lines"),
)}
