"""Fold spill records into journal events: the one place the event payloads are made.

A record, as ``spill`` reads it back, is one of:

- ``b"V"`` + a values payload: ``log()``'s fast path (``spill.VALUES``), kept packed;
- the ``marshal`` of ``(step, time_ms, metrics)``: every name already registered;
- the ``marshal`` of ``(step, time_ms, metrics, strings, new_metric_names, new_data_names)``,
  with a 7th item when structured values were logged (``datatypes.py``): a list of
  ``(name, dataType, JSON text, logType if the name is new else None)``: anything else.

A batch of records becomes, in this order: ``lognames`` events for the new names, ``metrics``
events (packed records, ≤ ``LINES_PER_EVENT`` each) and ``data`` events (string series,
NDJSON)::

    with j.transaction():
        write(j, run_key, writer_id, payloads, last_number, spill.schemas)
"""

from __future__ import annotations

import json
import marshal
from typing import TYPE_CHECKING, Any

from pluto_offline.journal import append_events, pack_metrics
from pluto_offline.journal.payloads import (
    SCHEMA_ENTRY,
    VALUES_ENTRY,
    entry_schema,
    entry_step_time,
)

if TYPE_CHECKING:
    from pluto_offline.journal import Journal

LINES_PER_EVENT = 2000
_V = VALUES_ENTRY[0]
_compact = json.JSONEncoder(separators=(",", ":")).encode


def _is_plain(payload: bytes) -> bool:
    """Whether a record is the fast path's ``(step, time_ms, metrics)``: a 3-item small tuple
    (marshal type ``)``, possibly with its ref flag), told apart without decoding it."""
    return payload[0] & 0x7F == 0x29 and payload[1] == 3


def ndjson(lines: list[dict[str, Any]]) -> str:
    """NDJSON of dicts that each start with a ``"time"`` key, in one C-level encode.

    Safe because an unescaped ``"`` cannot occur inside a JSON string, and a ``}`` followed by
    ``,{"time":`` only occurs between two lines (string-series data are strings).
    """
    return _compact(lines)[1:-1].replace('},{"time":', '}\n{"time":')


def rows(run_key: int, payloads: list[bytes],
         schemas: list[tuple[str, ...]] | None = None) -> list[tuple]:
    """``(run, kind, time, step, payload)`` event rows for a batch of spill records.

    Plain metric records and the fast path's values records go into the ``metrics`` payload as
    they are (packed, see ``journal.pack_metrics``), each event led by the schemas its values
    records use: no float is formatted, no dict is built in the training process.
    """
    out: list[tuple] = []
    new_metric: list[str] = []
    new_data: list[str] = []
    metric_records: list[bytes] = []
    data_lines: list[dict] = []
    new_typed: dict[str, list[str]] = {}  # HISTOGRAM / TABLE / DATA names of structured values
    t0 = None
    for p in payloads:
        if p[0] == _V or _is_plain(p):
            metric_records.append(p)
            continue
        step, t, metrics, strings, names_m, names_d, *more = marshal.loads(p)
        t0 = t if t0 is None else t0
        if metrics:
            metric_records.append(marshal.dumps((step, t, metrics)))
        new_metric.extend(names_m)
        new_data.extend(names_d)
        for name, text in strings.items():
            data_lines.append({"time": t, "data": text, "dataType": "string-series",
                               "logName": name, "step": step})
        for name, data_type, text, log_type in (more[0] if more else ()):
            data_lines.append({"time": t, "data": text, "dataType": data_type,
                               "logName": name, "step": step})
            if log_type:
                new_typed.setdefault(log_type, []).append(name)
    if t0 is None and metric_records:
        t0 = entry_step_time(metric_records[0])[1]
    if new_metric:
        out.append((run_key, "lognames", t0, None,
                    json.dumps({"type": "METRIC", "names": list(dict.fromkeys(new_metric))})))
    if new_data:
        out.append((run_key, "lognames", t0, None,
                    json.dumps({"type": "DATA", "names": list(dict.fromkeys(new_data))})))
    for log_type, names in new_typed.items():
        out.append((run_key, "lognames", t0, None,
                    json.dumps({"type": log_type, "names": list(dict.fromkeys(names))})))
    for i in range(0, len(metric_records), LINES_PER_EVENT):
        chunk = metric_records[i:i + LINES_PER_EVENT]
        used = sorted({entry_schema(r) for r in chunk if r[0] == _V})
        lead = [SCHEMA_ENTRY + marshal.dumps((k, schemas[k])) for k in used] if used else []
        first, last = entry_step_time(chunk[0]), entry_step_time(chunk[-1])
        out.append((run_key, "metrics", first[1], last[0], pack_metrics(lead + chunk)))
    for i in range(0, len(data_lines), LINES_PER_EVENT):
        chunk = data_lines[i:i + LINES_PER_EVENT]
        out.append((run_key, "data", chunk[0]["time"], chunk[-1]["step"], ndjson(chunk)))
    return out


def write(j: Journal, run_key: int, writer_id: str, payloads: list[bytes],
          last_number: int, schemas: list[tuple[str, ...]] | None = None) -> None:
    """Append the batch's events and record ``last_number`` as folded (inside a transaction).

    ``schemas`` (the spill's) name the values of the fast path's records."""
    append_events(j, rows(run_key, payloads, schemas))
    j.conn.execute("UPDATE writers SET folded = ? WHERE id = ?", (last_number, writer_id))
