"""The run's state changes: ``update_config``, ``add_tags``, ``remove_tags``.

Each folds the spill first, then commits its own event in the same fsync'd transaction
(``Run._fold``), so journal order is call order; the run's row keeps the current config / tags
for a later local resume. :class:`StateChanges` is a part of :class:`~pluto_offline.run.Run`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pluto_offline.journal import Journal, append_event, set_run_state
from pluto_offline.values import (
    GROUP_TAG_PREFIX,
    check_tags,
    deep_merge,
    native_config,
    normalize_tags,
)


class StateChanges:
    """Config and tag changes of a run (the fields and helpers are :class:`Run`'s)."""

    _key: int
    _config: Any
    _tags: list[str]
    _ignored: Callable[[str], bool]
    _fold: Callable[..., None]
    _clock_ms: Callable[[], int]

    def update_config(self, config: Mapping[str, Any]) -> None:
        """Deep-merge ``config`` into the run's config; the delta is journaled durably."""
        if self._ignored("update_config"):
            return
        delta = native_config(config)
        if not isinstance(delta, dict):
            raise TypeError(f"config must be a dict, got {type(config).__name__}")
        if not delta:
            return
        base = self._config if isinstance(self._config, dict) else {}
        merged = deep_merge(base, delta)

        def extra(j: Journal) -> None:
            append_event(j, self._key, "config", payload=delta, time=self._clock_ms())
            set_run_state(j, self._key, config=merged)

        self._fold(extra)
        self._config = merged

    def add_tags(self, tags: str | Iterable[str]) -> None:
        """Add tags (a str or a list); the full tag list is journaled durably.

        ``ValueError`` (nothing journaled) if the result breaks the server's limits: at most
        50 tags, at most one ``group:`` tag.
        """
        if not self._ignored("add_tags"):
            new = list(self._tags)
            new += [t for t in normalize_tags(tags) if t not in new]
            groups = [t for t in self._tags if t.startswith(GROUP_TAG_PREFIX)]
            check_tags(new, "add_tags()",
                       f"the run has {len(self._tags)} already: remove_tags() some first, or "
                       "add fewer",
                       f"remove_tags({groups[0]!r}) first to change the run's group" if groups
                       else "add only one group: tag")
            self._set_tags(new)

    def remove_tags(self, tags: str | Iterable[str]) -> None:
        """Remove tags (a str or a list); the full tag list is journaled durably."""
        if not self._ignored("remove_tags"):
            gone = set(normalize_tags(tags))
            self._set_tags([t for t in self._tags if t not in gone])

    def _set_tags(self, new: list[str]) -> None:
        def extra(j: Journal) -> None:
            append_event(j, self._key, "tags", payload=new, time=self._clock_ms())
            set_run_state(j, self._key, tags=new)

        self._fold(extra)
        self._tags = new
