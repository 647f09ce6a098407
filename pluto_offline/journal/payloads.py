"""Encoding of ``metrics`` event payloads."""

from __future__ import annotations

import json
import marshal
import struct
from collections.abc import Iterable, Iterator

# A ``metrics`` event's payload is either TEXT, NDJSON lines exactly as /ingest/metrics takes
# them, or a BLOB of packed entries. The SDK writes BLOBs: turning floats into decimal text is
# the costliest step of the write path, so it is left to plutosync, off the training process.
# An entry is a u32 little-endian length, then that many bytes, one of (by the first byte):
# - a record: Python's ``marshal`` (format 4) of ``(step, time_ms, {name: int | float})``;
# - ``S`` + ``marshal`` of ``(schema_id, (name, ...))``: names for the values entries after it;
# - ``V`` + ``u32 schema_id, i64 step, i64 time_ms`` + one f64 per name of that schema: the
#   record ``(step, time_ms, dict(zip(names, values)))`` as ``log()``'s fast path wrote it.
_u32 = struct.Struct("<I")
VALUES_HEAD = struct.Struct("<Iqq")  # a values entry after its ``V`` (and a spill VALUES record)
SCHEMA_ENTRY, VALUES_ENTRY = b"S", b"V"
_S, _V = SCHEMA_ENTRY[0], VALUES_ENTRY[0]
_compact_json = json.JSONEncoder(separators=(",", ":")).encode


def pack_metrics(entries: Iterable[bytes]) -> bytes:
    """Packed payload from entries: ``marshal`` bytes of ``(step, time_ms, data)`` tuples, or
    schema / values entries (see above)."""
    return b"".join(_u32.pack(len(r)) + r for r in entries)


def entry_schema(entry: bytes) -> int:
    """The schema id of a values entry."""
    return VALUES_HEAD.unpack_from(entry, 1)[0]


def entry_step_time(entry: bytes) -> tuple[int, int]:
    """``(step, time_ms)`` of a record or values entry."""
    if entry[0] == _V:
        return VALUES_HEAD.unpack_from(entry, 1)[1:]
    step, t = marshal.loads(entry)[:2]
    return step, t


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
    out = []
    schemas: dict[int, tuple[tuple[str, ...], struct.Struct]] = {}
    for kind, off, n in _entries(payload):
        if kind == _V:
            schema, step, t = VALUES_HEAD.unpack_from(payload, off + 1)
            names, values = schemas[schema]
            data = dict(zip(names, values.unpack_from(payload, off + 1 + VALUES_HEAD.size),
                            strict=True))
            out.append((step, t, data))
        elif kind == _S:
            schema, names = _schema(payload, off, n)
            schemas[schema] = (names, struct.Struct(f"<{len(names)}d"))
        else:
            out.append(marshal.loads(memoryview(payload)[off:off + n]))
    return out


def _entries(payload: bytes) -> Iterator[tuple[int, int, int]]:
    """``(first byte, offset, length)`` of each entry of a packed payload."""
    off, end = 0, len(payload)
    while off < end:
        (n,) = _u32.unpack_from(payload, off)
        yield payload[off + 4], off + 4, n
        off += 4 + n


def _schema(payload: bytes, off: int, n: int) -> tuple[int, tuple[str, ...]]:
    schema, names = marshal.loads(memoryview(payload)[off + 1:off + n])
    return schema, tuple(names)


def metrics_ndjson(payload: bytes | str | None) -> str:
    """A metrics payload as NDJSON text for /ingest/metrics (TEXT payloads pass through)."""
    if not payload:
        return ""
    if isinstance(payload, str):
        return payload
    lines: list[str] = []
    records: list[dict] = []  # marshal records, encoded together when a values entry comes
    schemas: dict[int, _Schema] = {}
    for kind, off, n in _entries(payload):
        if kind == _V:
            if records:
                lines.append(_encode_lines(records))
                records = []
            schema, step, t = VALUES_HEAD.unpack_from(payload, off + 1)
            lines.append(schemas[schema].line(step, t, payload, off + 1 + VALUES_HEAD.size))
        elif kind == _S:
            schema, names = _schema(payload, off, n)
            schemas[schema] = _Schema(names)
        else:
            step, t, data = marshal.loads(memoryview(payload)[off:off + n])
            if data:  # a log({}) call advances the step but has nothing to send
                records.append({"time": t, "step": step, "data": data})
    if records:
        lines.append(_encode_lines(records))
    return "\n".join(lines)


def _encode_lines(records: list[dict]) -> str:
    # One C-level encode for the batch; an unescaped '"' cannot occur inside a JSON string
    # and metric values are numbers, so '},{"time":' only occurs between two lines.
    return _compact_json(records)[1:-1].replace('},{"time":', '}\n{"time":')


class _Schema:
    """Renders values entries of one schema with a %-template: about 3x faster than building
    a dict per line for the JSON encoder. ``%r`` of a float is what the encoder writes, except
    for NaN and ±inf, which take the encoder's path (``NaN``, ``Infinity``)."""

    def __init__(self, names: tuple[str, ...]):
        self.names = names
        self.values = struct.Struct(f"<{len(names)}d")
        keys = ",".join(_compact_json(n).replace("%", "%%") + ":%r" for n in names)
        self.template = '{"time":%d,"step":%d,"data":{' + keys + "}}"

    def line(self, step: int, t: int, buf: bytes, off: int) -> str:
        values = self.values.unpack_from(buf, off)
        total = sum(values)
        if total - total == 0.0:  # all finite (a NaN or an inf makes the sum NaN or inf)
            return self.template % (t, step, *values)
        return _compact_json({"time": t, "step": step,
                              "data": dict(zip(self.names, values, strict=True))})
