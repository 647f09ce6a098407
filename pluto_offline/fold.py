"""Fold spill records into journal events: the one place the event payloads are made.

A record is the ``marshal`` of a tuple, written by ``Run.log``:

- ``(step, time_ms, metrics)``: the fast path, every name already registered;
- ``(step, time_ms, metrics, strings, new_metric_names, new_data_names)``: anything else.

A batch of records becomes, in this order: ``lognames`` events for the new names, ``metrics``
events (NDJSON, ≤ ``LINES_PER_EVENT`` lines each) and ``data`` events (string series)::

    with j.transaction():
        write(j, run_key, writer_id, decode(payloads), last_number)
"""

from __future__ import annotations

import json
import marshal
from typing import TYPE_CHECKING, Any

from pluto_offline.journal import append_events

if TYPE_CHECKING:
    from pluto_offline.journal import Journal

LINES_PER_EVENT = 2000
_compact = json.JSONEncoder(separators=(",", ":")).encode


def decode(payloads: list[bytes]) -> list[tuple]:
    return [marshal.loads(p) for p in payloads]


def ndjson(lines: list[dict[str, Any]]) -> str:
    """NDJSON of dicts that each start with a ``"time"`` key, in one C-level encode.

    Safe because an unescaped ``"`` cannot occur inside a JSON string, and a ``}`` followed by
    ``,{"time":`` only occurs between two lines (metric values are numbers).
    """
    return _compact(lines)[1:-1].replace('},{"time":', '}\n{"time":')


def rows(run_key: int, records: list[tuple]) -> list[tuple]:
    """``(run, kind, time, step, payload)`` event rows for a batch of records."""
    out: list[tuple] = []
    if not records:
        return out
    new_metric: list[str] = []
    new_data: list[str] = []
    metric_lines: list[dict] = []
    data_lines: list[dict] = []
    for rec in records:
        if len(rec) == 3:
            if rec[2]:
                metric_lines.append({"time": rec[1], "step": rec[0], "data": rec[2]})
            continue
        step, t, metrics, strings, names_m, names_d = rec
        if metrics:
            metric_lines.append({"time": t, "step": step, "data": metrics})
        if names_m:
            new_metric.extend(names_m)
        if names_d:
            new_data.extend(names_d)
        for name, text in strings.items():
            data_lines.append({"time": t, "data": text, "dataType": "string-series",
                               "logName": name, "step": step})
    t0 = records[0][1]
    if new_metric:
        out.append((run_key, "lognames", t0, None,
                    json.dumps({"type": "METRIC", "names": list(dict.fromkeys(new_metric))})))
    if new_data:
        out.append((run_key, "lognames", t0, None,
                    json.dumps({"type": "DATA", "names": list(dict.fromkeys(new_data))})))
    for kind, lines in (("metrics", metric_lines), ("data", data_lines)):
        for i in range(0, len(lines), LINES_PER_EVENT):
            chunk = lines[i:i + LINES_PER_EVENT]
            out.append((run_key, kind, chunk[0]["time"], chunk[-1]["step"], ndjson(chunk)))
    return out


def write(j: Journal, run_key: int, writer_id: str, records: list[tuple], last_number: int) -> None:
    """Append the batch's events and record ``last_number`` as folded (inside a transaction)."""
    append_events(j, rows(run_key, records))
    j.conn.execute("UPDATE writers SET folded = ? WHERE id = ?", (last_number, writer_id))
