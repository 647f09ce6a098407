"""Encoding of ``metrics`` event payloads."""

from __future__ import annotations

import json
import marshal
import struct
from collections.abc import Iterable

# A ``metrics`` event's payload is either TEXT, NDJSON lines exactly as /ingest/metrics takes
# them, or a BLOB of packed records. The SDK writes BLOBs: turning floats into decimal text is
# the costliest step of the write path, so it is left to plutosync, off the training process.
# A packed record is a u32 little-endian length, then that many bytes: Python's ``marshal``
# (format version 4) of the tuple ``(step: int, time_ms: int, data: dict[str, int | float])``.
_u32 = struct.Struct("<I")
_compact_json = json.JSONEncoder(separators=(",", ":")).encode


def pack_metrics(records: Iterable[bytes]) -> bytes:
    """Packed-record payload from ``marshal`` bytes of ``(step, time_ms, data)`` tuples."""
    return b"".join(_u32.pack(len(r)) + r for r in records)


def unpack_metrics(payload: bytes | str | None) -> list[tuple[int, int, dict]]:
    """The ``(step, time_ms, data)`` tuples of a metrics payload, in order."""
    if not payload:
        return []
    if isinstance(payload, str):
        out = []
        for line in payload.split("\n"):
            if line.strip():
                d = json.loads(line)
                out.append((d["step"], d["time"], d["data"]))
        return out
    out, off, end = [], 0, len(payload)
    view = memoryview(payload)
    while off < end:
        (n,) = _u32.unpack_from(payload, off)
        out.append(marshal.loads(view[off + 4:off + 4 + n]))
        off += 4 + n
    return out


def metrics_ndjson(payload: bytes | str | None) -> str:
    """A metrics payload as NDJSON text for /ingest/metrics (TEXT payloads pass through)."""
    if not payload:
        return ""
    if isinstance(payload, str):
        return payload
    # a log({}) call advances the step but has nothing to send
    lines = [{"time": t, "step": s, "data": d} for s, t, d in unpack_metrics(payload) if d]
    # One C-level encode for the batch; an unescaped '"' cannot occur inside a JSON string
    # and metric values are numbers, so '},{"time":' only occurs between two lines.
    return _compact_json(lines)[1:-1].replace('},{"time":', '}\n{"time":')
