"""``run.alert()``: as the stock SDK's, journaled instead of sent, so it never blocks on a
network; plutosync delivers it (``syncd/alerts.py``).

    run.alert("loss is NaN", title="divergence", level="ERROR")
    run.alert("loss is NaN", url="https://hooks.slack.com/services/...", remote=False)

The stock signature (``pluto/op.py``, pluto-ml 0.0.29): ``alert(message=None, title="pluto",
level="INFO", wait=0, url=None, remote=True, **kwargs)``, ``text=`` and ``wait_duration=``
being older names of ``message`` and ``wait``, ``email`` defaulting to True. The stock SDK
sleeps ``wait`` seconds first; here the alert is journaled at once (``wait`` is accepted and
ignored: a training loop is never held up). As the stock SDK, the alert is also logged locally
at its level. :class:`RunAlerts` is a part of :class:`~pluto_offline.run.Run`.

Where it goes, as in the stock SDK: with ``remote=False`` and a webhook URL (``url=``, else
``init(settings={"url_webhook": ...})`` of the run's create in this journal), plutosync POSTs
the stock Slack/Discord-compatible message to that URL; otherwise (the default) it goes to
the Pluto server's ``POST /api/runs/alert``, whose ``url`` field the stock SDK always sends
empty (a webhook URL is a secret: it never goes to the Pluto server).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from pluto_offline.journal import Journal, append_event

logger = logging.getLogger("pluto_offline")
_UNREAD = object()


class RunAlerts:
    _key: int
    _step: int
    _ignored: Callable[[str], bool]
    _fold: Callable[..., None]
    _clock_ms: Callable[[], int]
    _webhook_setting: str | None  # read once from the journal (see _url_webhook)

    def alert(self, message: str | None = None, title: str = "pluto", level: str = "INFO",
              wait: float = 0, url: str | None = None, remote: bool = True,
              **kwargs: Any) -> None:
        """Journal an alert durably (event ``alert``); the daemon sends it on."""
        if self._ignored("alert"):
            return
        message = kwargs.get("text", message)
        level = str(level).upper()
        t = time.time()
        alert: dict[str, Any] = {
            "timestamp": int(t * 1000), "level": level, "title": str(title),
            "body": None if message is None else str(message),
            "email": kwargs.get("email", True), "url": None}
        if logging.getLevelName(level) != f"Level {level}":
            logger.log(logging.getLevelName(level), "pluto_offline: %s: %s", title, message)
        step = self._step  # the run's step now, as the stock webhook message shows it

        def extra(j: Journal) -> None:
            hook = None if remote else (url or self._url_webhook(j))
            if hook:  # the facts of the stock webhook message; plutosync builds it
                alert.update(webhook=str(hook), step=step,
                             localtime=datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S"))
            append_event(j, self._key, "alert", payload=alert, time=self._clock_ms())

        self._fold(extra)

    def _url_webhook(self, j: Journal) -> str | None:
        """``settings["url_webhook"]`` given to the ``init()`` that created the run (its
        ``create`` event); None for a run this journal did not create."""
        found = getattr(self, "_webhook_setting", _UNREAD)
        if found is _UNREAD:
            row = j.conn.execute(
                "SELECT payload FROM events WHERE run = ? AND kind = 'create' ORDER BY seq "
                "LIMIT 1", (self._key,)).fetchone()
            try:
                settings = json.loads(row[0]).get("settings") if row and row[0] else None
            except (ValueError, AttributeError):
                settings = None
            found = settings.get("url_webhook") if isinstance(settings, dict) else None
            self._webhook_setting = found
        return found or None
