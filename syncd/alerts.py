"""What a journaled ``alert`` event becomes on the wire: ``POST {py}/api/runs/alert``.

Body (pluto-api.md, the stock client's ``make_compat_alert_v1``): ``{"runId": n, "alert":
{"timestamp": ms, "level", "title", "body", "email", "url"}}``, the event's payload as the SDK
journaled it (``pluto_offline/alerts.py``). The server keeps every alert it is sent; a crash
between its answer and the ack sends the alert once more (at least once, like the stock SDK's
retries).
"""

from __future__ import annotations

from typing import Any

from syncd.client import PlutoClient


def send(client: PlutoClient, run_id: int, alert: dict[str, Any]) -> None:
    """Send one alert; errors are the client's (transient, auth, rejected)."""
    url = client.settings.py_url + "/api/runs/alert"
    resp = client._send("POST", url, "py", json_body={"runId": run_id, "alert": alert})
    client._json(resp, url)
