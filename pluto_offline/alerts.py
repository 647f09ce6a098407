"""``run.alert()``: as the stock SDK's, journaled instead of sent, so it never blocks on a
network; plutosync delivers it to ``POST {py}/api/runs/alert`` (``syncd/alerts.py``).

    run.alert("loss is NaN", title="divergence", level="ERROR")

The stock signature (``pluto/op.py``, pluto-ml 0.0.29): ``alert(message=None, title="pluto",
level="INFO", wait=0, url=None, remote=True, **kwargs)``, ``text=`` and ``wait_duration=``
being older names of ``message`` and ``wait``, ``email`` defaulting to True. The stock SDK
sleeps ``wait`` seconds first; here the alert is journaled at once (``wait`` is accepted and
ignored: a training loop is never held up). As the stock SDK, the alert is also logged locally
at its level. :class:`RunAlerts` is a part of :class:`~pluto_offline.run.Run`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from pluto_offline.journal import Journal, append_event

logger = logging.getLogger("pluto_offline")


class RunAlerts:
    _key: int
    _ignored: Callable[[str], bool]
    _fold: Callable[..., None]
    _clock_ms: Callable[[], int]

    def alert(self, message: str | None = None, title: str = "pluto", level: str = "INFO",
              wait: float = 0, url: str | None = None, remote: bool = True,
              **kwargs: Any) -> None:
        """Journal an alert durably (event ``alert``); the daemon sends it to the server."""
        if self._ignored("alert"):
            return
        message = kwargs.get("text", message)
        level = str(level).upper()
        alert = {"timestamp": int(time.time() * 1000), "level": level, "title": str(title),
                 "body": None if message is None else str(message),
                 "email": kwargs.get("email", True), "url": url}
        if logging.getLevelName(level) != f"Level {level}":
            logger.log(logging.getLevelName(level), "pluto_offline: %s: %s", title, message)

        def extra(j: Journal) -> None:
            append_event(j, self._key, "alert", payload=alert, time=self._clock_ms())

        self._fold(extra)
