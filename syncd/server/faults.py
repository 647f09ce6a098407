"""Fault injection: rules that make chosen requests fail in chosen ways.

A rule matches requests whose path starts with ``path`` (``/_admin`` is never faulted). Modes:

- ``refuse``: reset the connection (RST) before any byte of an answer; nothing is applied.
- ``close``: close the connection cleanly without answering; nothing is applied.
- ``reset``: apply the request, send the first half of its answer, then reset the connection.
- ``stall``: sleep ``seconds`` (default 5), then apply and answer normally.
- an HTTP status (``500``, ``502``, ``503``, ``429``, ``400``, ...): answer it without applying
  (``apply=true`` applies first); ``retry_after`` adds ``Retry-After`` (429 defaults to 1 s).

``count`` limits a rule to that many hits ("fail the next N"), after letting ``skip`` matching
requests through; ``p`` with ``seed`` fires with that probability, reproducibly.

>>> rule = parse_spec("503,path=/ingest/metrics,count=2")
>>> rule.mode, rule.path, rule.count
('503', '/ingest/metrics', 2)
"""

from __future__ import annotations

import random
import threading
from dataclasses import asdict, dataclass, field
from typing import Any

CONNECTION_MODES = ("refuse", "close", "reset", "stall")
ADMIN_PREFIX = "/_admin"


@dataclass
class FaultRule:
    mode: str
    path: str = "/"
    method: str | None = None
    count: int | None = None
    skip: int = 0
    p: float = 1.0
    seed: int | None = None
    seconds: float = 5.0
    retry_after: int | None = None
    apply: bool = False
    fired: int = 0
    _rng: random.Random = field(default_factory=random.Random, repr=False)
    _seen: int = field(default=0, repr=False)  # matching requests so far (for skip)

    def __post_init__(self) -> None:
        self.mode = str(self.mode).lower()
        if self.mode not in CONNECTION_MODES:
            if not self.mode.isdigit() or not 400 <= int(self.mode) <= 599:
                raise ValueError(
                    f"unknown fault mode {self.mode!r}: use one of {', '.join(CONNECTION_MODES)}"
                    " or an HTTP status 400-599"
                )
        if not self.path.startswith("/"):
            raise ValueError("fault path must start with '/'")
        if not 0.0 <= self.p <= 1.0:
            raise ValueError("fault probability p must be within 0..1")
        if self.mode == "429" and self.retry_after is None:
            self.retry_after = 1
        self._rng = random.Random(self.seed)

    @property
    def status(self) -> int | None:
        return int(self.mode) if self.mode.isdigit() else None

    def exhausted(self) -> bool:
        return self.count is not None and self.fired >= self.count

    def public(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("_rng")
        data.pop("_seen")
        data["remaining"] = None if self.count is None else self.count - self.fired
        return data


_FIELDS = {
    "path": str, "method": str, "count": int, "skip": int, "p": float, "seed": int,
    "seconds": float, "retry_after": int,
}


def rule_from_dict(data: dict[str, Any]) -> FaultRule:
    """A rule from JSON (the admin endpoint); raises ValueError on bad input."""
    if "mode" not in data:
        raise ValueError("a fault needs a 'mode'")
    unknown = set(data) - set(_FIELDS) - {"mode", "apply"}
    if unknown:
        raise ValueError(f"unknown fault field(s): {', '.join(sorted(unknown))}")
    kwargs: dict[str, Any] = {"mode": str(data["mode"])}
    for name, kind in _FIELDS.items():
        if data.get(name) is not None:
            kwargs[name] = kind(data[name])
    if "apply" in data:
        kwargs["apply"] = bool(data["apply"])
    return FaultRule(**kwargs)


def parse_spec(spec: str) -> FaultRule:
    """A rule from the ``--fault`` syntax: ``MODE[,key=value...]``."""
    mode, *pairs = [part.strip() for part in spec.split(",") if part.strip()]
    data: dict[str, Any] = {"mode": mode}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"bad fault option {pair!r}: expected key=value")
        data[key] = value.lower() in ("1", "true", "yes") if key == "apply" else value
    return rule_from_dict(data)


class FaultTable:
    """The active rules; :meth:`pick` decides the fault (or none) of one request."""

    def __init__(self, rules: list[FaultRule] | None = None) -> None:
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = list(rules or [])

    def add(self, rule: FaultRule) -> None:
        with self._lock:
            self._rules.append(rule)

    def clear(self) -> int:
        with self._lock:
            dropped = len(self._rules)
            self._rules.clear()
            return dropped

    def list(self) -> list[dict[str, Any]]:
        with self._lock:
            return [rule.public() for rule in self._rules]

    def pick(self, method: str, path: str) -> FaultRule | None:
        if path.startswith(ADMIN_PREFIX):
            return None
        with self._lock:
            for rule in self._rules:
                if rule.exhausted() or not path.startswith(rule.path):
                    continue
                if rule.method and rule.method.upper() != method:
                    continue
                rule._seen += 1
                if rule._seen <= rule.skip or rule._rng.random() >= rule.p:
                    continue
                rule.fired += 1
                return rule
        return None
