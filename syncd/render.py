"""Rendering packed metrics as NDJSON ahead of need, beside the request in flight.

Formatting floats is the daemon's costliest step. While one request waits on the server (its
socket wait releases the GIL), a worker thread renders the events the next request will carry,
so the two overlap instead of adding up::

    r = Renderer()
    r.prefetch(next_events)          # starts rendering in the background
    text = r.text(event)             # the rendered NDJSON (waits for it, or renders now)
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor

from pluto_offline import journal

AHEAD = 32  # events rendered ahead at most (about one request): bounds the memory held


class Renderer:
    def __init__(self, ahead: int = AHEAD) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="plutosync-render")
        self._futures: OrderedDict[int, Future[str]] = OrderedDict()
        self._ahead = ahead

    def prefetch(self, events: Iterable[journal.Event]) -> None:
        for ev in events:
            if (ev.kind != "metrics" or not isinstance(ev.payload, bytes)
                    or ev.seq in self._futures):
                continue
            if len(self._futures) >= self._ahead:
                break
            self._futures[ev.seq] = self._pool.submit(journal.metrics_ndjson, ev.payload)

    def text(self, ev: journal.Event) -> str:
        """An ingest event's NDJSON (the SDK packs metrics; formatting them is our job)."""
        while self._futures and next(iter(self._futures)) < ev.seq:
            self._futures.popitem(last=False)[1].cancel()  # behind us: never asked for
        fut = self._futures.pop(ev.seq, None)
        if fut is not None:
            return fut.result()
        if ev.kind == "metrics":
            return journal.metrics_ndjson(ev.payload)
        return ev.payload or ""

    def close(self) -> None:
        self._futures.clear()
        self._pool.shutdown(wait=False, cancel_futures=True)
