"""What the journals of a run have recorded on the server about their own delivery.

Journals of one run never talk to each other (docs/delivery.md): what one must know of another
is kept on the run itself, in its config under ``plutoOffline`` (the server deep-merges config
updates, so writers of different keys never overwrite each other)::

    {"plutoOffline": {
        "delivered": {"<journal id>:<run key>": 412},   # string series sent up to seq 412
        "sending": {"<journal id>:<run key>": 430},     # ... and a request up to 430 went out
        "configTimes": {"lr": 1732950000123, "opt": {"wd": 1732950000456}},
        "tagsTime": 1732950000789, "tagsCreate": false, "firstCreate": 1732950000000,
        "lifecycle": {"<journal id>:<run key>:<seq>": {"time": 1732950000999,
                                                        "status": "TERMINATED",
                                                        "metadata": {"signal": "SIGTERM"}}}}}

- ``delivered``: the highest journal seq of records the server does not deduplicate (string
  series; pluto-api.md: ``/ingest/data`` keeps every line) that reached the server from a
  journal, whichever copy of it (an export carries the journal id) sent them. A copy skips
  what is at or below it, so pushing an export and then the original sends each record once.
  ``sending`` is noted before each request: above ``delivered``, a request whose outcome its
  sender never learnt, so a copy sending those records again counts them as possibly twice.
- ``configTimes``: the config's shape, with the event time (ms) of the value on the server at
  each leaf; ``tagsTime``: the time of the tags on the server. A config or tags event older
  than what the server holds is not sent: the value last set **by event time** stays,
  whatever order the journals arrive in.
- ``firstCreate``: the time of the earliest create seen; ``tagsCreate``: the tags on the
  server came with a create. A create's tags count only if it is the run's first create by
  time (the server ignores the tags of a create that finds the run, pluto-api.md): tags that
  came with a create found not to be the first count for nothing.

- ``lifecycle``: every status change (an open: ``"RUNNING"``; an end, with its metadata) any
  journal delivered, noted before its status is written. The status marker (finalstate.py) is
  last-writer-wins: a status request held by a proxy and applied after a later one replaces
  it, and what another journal wrote there is lost with it. These entries are merged, never
  replaced, so the journal whose request got no answer can work out the run's latest change
  again (``finalstate.repair``).

Everything unmarked (a run's config from the stock SDK or the UI) counts as older than any
journaled event. Limits, as for the status marker (finalstate.py): a read and the write it
decides are two requests, so two processes delivering the same run at the same instant can
interleave (one process serializes them per run); a data request whose answer was lost is sent
again, which can store its lines twice — the journal counts such resends
(``journal.note_resent``) so that ``plutosync status`` can say so.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from syncd.client import PlutoClient

KEY = "plutoOffline"
_FIELD = f"config.{KEY}"
LIFECYCLE_FIELD = f"config.{KEY}.lifecycle"
# an end's metadata (a traceback) kept in the ledger up to this size; past it, the status only
MAX_CHANGE_METADATA = 16 * 1024


@dataclass
class Ledger:
    """The ``config.plutoOffline`` of one run, as read from the server."""

    delivered: dict[str, int] = field(default_factory=dict)
    sending: dict[str, int] = field(default_factory=dict)
    config_times: dict[str, Any] = field(default_factory=dict)
    tags_time: int | None = None
    tags_create: bool = False
    first_create: int | None = None

    @classmethod
    def read(cls, client: PlutoClient, server_id: int) -> Ledger:
        """Read it (streamed: the rest of the config is parsed past, never held)."""
        raw = client.run_fields(server_id, (_FIELD,)).get(_FIELD)
        if not isinstance(raw, dict):
            return cls()
        delivered = raw.get("delivered")
        sending = raw.get("sending")
        times = raw.get("configTimes")
        tags_time = raw.get("tagsTime")
        first = raw.get("firstCreate")
        return cls(
            _ints(delivered),
            _ints(sending),
            times if isinstance(times, dict) else {},
            tags_time if _is_int(tags_time) else None,
            raw.get("tagsCreate") is True,
            first if _is_int(first) else None,
        )

    def tags_in_force(self) -> int | None:
        """The time of the tags on the server, or None when none count: unmarked, or they came
        with a create that turned out not to be the run's first."""
        if self.tags_create and self.tags_time != self.first_create:
            return None
        return self.tags_time

    def delivered_up_to(self, copy: str) -> int:
        return self.delivered.get(copy, 0)


def copy_key(journal_id: str, run_key: int) -> str:
    """The ledger's name for one run of one journal (and of every copy of that journal)."""
    return f"{journal_id}:{run_key}"


def change_key(journal_id: str, run_key: int, seq: int) -> str:
    """The ledger's name for one status-changing event (the same in every copy of a journal)."""
    return f"{copy_key(journal_id, run_key)}:{seq}"


def change_entry(at: int, status: str, metadata: dict[str, Any] | None = None
                 ) -> dict[str, Any]:
    """A ``lifecycle`` entry: ``status`` at ``at`` ms (``"RUNNING"`` for an open), with the
    end's metadata up to ``MAX_CHANGE_METADATA``."""
    entry: dict[str, Any] = {"time": at, "status": status}
    if metadata and len(json.dumps(metadata)) <= MAX_CHANGE_METADATA:
        entry["metadata"] = metadata
    return entry


def record_change(client: PlutoClient, server_id: int, key: str, at: int, status: str,
                  metadata: dict[str, Any] | None = None) -> None:
    """Note a status change (:func:`change_entry`) in ``lifecycle``. Sent again, or applied
    late, it changes nothing: the key is the event's."""
    entry = change_entry(at, status, metadata)
    client.update_config(server_id, json.dumps({KEY: {"lifecycle": {key: entry}}}))


def changes(raw: Any) -> list[tuple[int, str, dict[str, Any] | None]]:
    """``(time, status, metadata)`` of each well-formed ``lifecycle`` entry, as read back.

    >>> changes({"a:1:2": {"time": 5, "status": "RUNNING"}, "bad": {"time": "x"}})
    [(5, 'RUNNING', None)]
    """
    out = []
    for entry in (raw.values() if isinstance(raw, dict) else ()):
        if not isinstance(entry, dict) or not _is_int(entry.get("time")):
            continue
        status, meta = entry.get("status"), entry.get("metadata")
        if isinstance(status, str):
            out.append((entry["time"], status, meta if isinstance(meta, dict) else None))
    return out


def record_delivered(client: PlutoClient, server_id: int, copy: str, seq: int) -> None:
    client.update_config(server_id, json.dumps({KEY: {"delivered": {copy: seq}}}))


def record_sending(client: PlutoClient, server_id: int, copy: str, seq: int) -> None:
    client.update_config(server_id, json.dumps({KEY: {"sending": {copy: seq}}}))


def _ints(value: Any) -> dict[str, int]:
    return {k: v for k, v in value.items() if _is_int(v)} if isinstance(value, dict) else {}


# ---------------------------------------------------------------------- config by time
def later_config(delta: dict[str, Any], times: Any, server_times: dict[str, Any]
                 ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The part of ``delta`` the server should take, and its times to record.

    ``times`` is one event time (ms) for every leaf of ``delta``, or a mirror of ``delta``
    with a time per leaf (a config folded from several events). A leaf is kept unless the
    server holds a later time at its path, above it (a parent set later as a whole) or below
    it (a key inside it set later). Equal times are kept: a copy of the same event.

    >>> later_config({"lr": 0.1, "opt": {"wd": 1}}, 5, {"lr": 9, "opt": {"wd": 2}})
    ({'opt': {'wd': 1}}, {'opt': {'wd': 5}})
    """
    kept: dict[str, Any] = {}
    marks: dict[str, Any] = {}
    for path, value in _leaves(delta):
        at = _at(times, path)
        if at is None or _later_on_server(server_times, path, at):
            continue
        _put(kept, path, value)
        _put(marks, path, at)
    return kept, marks


def config_update(kept: dict[str, Any], marks: dict[str, Any],
                  more: dict[str, Any] | None = None) -> dict[str, Any]:
    """One config/update body: the values and their times (and ``more`` ledger fields, e.g.
    ``tags_mark``'s), merged by the server at once."""
    mark: dict[str, Any] = dict(more or {})
    if marks:
        mark["configTimes"] = marks
    return {**kept, KEY: mark} if mark else dict(kept)


def tags_mark(at: int, *, create: bool) -> dict[str, Any]:
    """The ledger fields for tags set at ``at`` (ms), by a create or by a tags event."""
    return {"tagsTime": at, "tagsCreate": create}


def leaf_count(value: dict[str, Any]) -> int:
    return sum(1 for _ in _leaves(value))


def _leaves(value: dict[str, Any], path: tuple[str, ...] = ()
            ) -> Iterator[tuple[tuple[str, ...], Any]]:
    for k, v in value.items():
        if k == KEY and not path:
            continue  # never the ledger itself
        if isinstance(v, dict) and v:
            yield from _leaves(v, (*path, k))
        else:
            yield (*path, k), v


def _at(times: Any, path: tuple[str, ...]) -> int | None:
    for k in path:
        if _is_int(times):
            return times
        if not isinstance(times, dict) or k not in times:
            return None
        times = times[k]
    return times if _is_int(times) else None


def _later_on_server(server: Any, path: tuple[str, ...], at: int) -> bool:
    node = server
    for k in path:
        if _is_int(node):
            return node > at  # an ancestor set later as a whole
        if not isinstance(node, dict) or k not in node:
            return False
        node = node[k]
    return any(t > at for t in _times(node))


def _times(node: Any) -> Iterator[int]:
    if _is_int(node):
        yield node
    elif isinstance(node, dict):
        for v in node.values():
            yield from _times(v)


def _put(target: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for k in path[:-1]:
        if not isinstance(target.get(k), dict):
            target[k] = {}  # a value set whole before, now set key by key
        target = target[k]
    target[path[-1]] = value


def fold_times(history: Iterable[tuple[int, dict[str, Any]]]) -> dict[str, Any]:
    """The time of each leaf's last set, from ``(time_ms, delta)`` in journal order.

    >>> fold_times([(1, {"a": 1, "o": {"x": 1}}), (2, {"o": {"y": 2}}), (3, {"o": 5})])
    {'a': 1, 'o': 3}
    """
    mirror: dict[str, Any] = {}
    for at, delta in history:
        for path, _ in _leaves(delta):
            _put(mirror, path, at)
    return mirror


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)
