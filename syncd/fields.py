"""Reading chosen fields out of a large JSON answer without holding it (run details carry
the run's whole config and system metadata: "can be many MB", pluto-api.md)."""

from __future__ import annotations

import json
from typing import Any

import ijson
import requests

MAX_STREAMED_BYTES = 1 << 30  # a details answer streamed field by field: bounded by time only


def pick_fields(resp: requests.Response, fields: tuple[str, ...]) -> dict[str, Any]:
    """The ``fields`` of the JSON object ``resp`` streams (``stream=True``), parsed as it
    arrives: top-level names, or dotted paths into an object (``"config.plutoOffline"``),
    also when the server sends that object as JSON text. Everything else is parsed past and
    never built; reading stops once every field was seen. Fields the answer lacks are absent.

        >>> pick_fields(resp, ("status", "config.plutoOffline"))
        {"status": "RUNNING", "config.plutoOffline": {...}}

    Raises ``ValueError`` (or ``ijson.JSONError``) for an answer that is not a JSON object
    or runs past ``MAX_STREAMED_BYTES``."""
    resp.raw.decode_content = True
    want = set(fields)
    parents: dict[str, list[str]] = {}  # "config" -> ["config.plutoOffline"]
    for path in want:
        if "." in path:
            parents.setdefault(path.split(".", 1)[0], []).append(path)
    out: dict[str, Any] = {}
    builder: ijson.ObjectBuilder | None = None
    building = ""
    for prefix, event, value in ijson.parse(_Counted(resp.raw), use_float=True):
        if builder is not None:
            builder.event(event, value)
            if prefix == building and event in ("end_map", "end_array"):
                out[building] = builder.value
                builder = None
        elif prefix in want and event != "map_key":
            if event in ("start_map", "start_array"):
                builder, building = ijson.ObjectBuilder(), prefix
                builder.event(event, value)
            else:
                out[prefix] = value
        elif event == "string" and prefix in parents:
            # a server that returns the object as JSON text (as systemMetadata may be)
            for path in parents[prefix]:
                found = _dig(value, path[len(prefix) + 1:])
                if found is not _MISSING:
                    out[path] = found
        elif prefix == "" and event == "start_array":
            raise ValueError("a JSON array, not an object")
        if builder is None and len(out) == len(want):
            break  # everything asked for: the rest (config, metadata) is never read
    return out


_MISSING = object()


def _dig(text: str, path: str) -> Any:
    """``path`` (dotted) inside the JSON object ``text``; ``_MISSING`` when absent."""
    try:
        value: Any = json.loads(text)
    except ValueError:
        return _MISSING
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            return _MISSING
        value = value[key]
    return value


class _Counted:
    """A file-like view of a raw response that refuses to read past ``MAX_STREAMED_BYTES``."""

    def __init__(self, raw: Any) -> None:
        self.raw, self.n = raw, 0

    def read(self, size: int = -1) -> bytes:
        chunk = self.raw.read(64 * 1024 if size is None or size < 0 else size)
        self.n += len(chunk)
        if self.n > MAX_STREAMED_BYTES:
            raise ValueError(f"more than {MAX_STREAMED_BYTES >> 20} MiB")
        return chunk
