"""What a journaled ``alert`` event becomes on the wire.

A Pluto alert (the default, ``remote=True``): ``POST {py}/api/runs/alert``, body (pluto-api.md,
the stock client's ``make_compat_alert_v1``) ``{"runId": n, "alert": {"timestamp": ms,
"level", "title", "body", "email", "url"}}``, the event's payload as the SDK journaled it
(``pluto_offline/alerts.py``). The server keeps every alert it is sent; a crash between its
answer and the ack sends the alert once more (at least once, like the stock SDK's retries).

A webhook alert (``run.alert(..., url=..., remote=False)``: the payload has ``webhook``, the
URL, and the ``step`` and ``localtime`` of the call): ``POST`` to that URL of the stock SDK's
Slack/Discord-compatible message (``make_compat_webhook_v1``: ``username``, ``content``,
``embeds``, ``text``, ``blocks``), with the run's view URL as the server gave it at the run's
create. The request goes out on a session of its own: never the Pluto key, nor any
credentials of the environment's ``.netrc``; no redirect is followed. A webhook URL is a
secret (Slack's carry their token in the path): messages name its scheme and host only.

Its outcomes, as the replayer treats other events: a 2xx delivers it; any other 4xx (or a
redirect, or a URL that cannot be used) is a refusal, recorded with its reason; a 5xx, 408,
429 or no answer is a :class:`~syncd.client.TransientError` that this run (not every run: the
webhook is not the Pluto server) retries with the usual backoff. Events are delivered in order,
so a webhook that stays down would hold up the rest of the run: after ``WEBHOOK_TRIES``
failed tries in a row the alert is recorded as refused (``plutosync push --retry-rejected``
sends it again) and the run's delivery goes on.
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from datetime import datetime
from typing import Any

import requests

from syncd.client import USER_AGENT, PlutoClient, RejectedError, TransientError

WEBHOOK_TRIES = 5  # failed tries in a row before a webhook alert is recorded as refused
WEBHOOK_TIMEOUT = (5.0, 10.0)  # (connect, read): the run's delivery waits for it
ANSWER_BYTES = 4096  # of a webhook's answer, read for the reason of a refusal
RETRY_AFTER_CAP_S = 60.0  # a rate-limited webhook's Retry-After, within the backoff's cap
# No HTTP answer from the webhook. Not None, which the replayer reads as the Pluto server
# unreachable and pauses every run for; the webhook's trouble is this run's alone.
NO_ANSWER = 0

_tries: dict[tuple[str, int], int] = {}  # (journal, event seq) -> failed tries in a row
_tries_lock = threading.Lock()


def send(client: PlutoClient, run_id: int, alert: dict[str, Any]) -> None:
    """Send one alert; errors are the client's (transient, auth, rejected)."""
    url = client.settings.py_url + "/api/runs/alert"
    resp = client._send("POST", url, "py", json_body={"runId": run_id, "alert": alert})
    client._json(resp, url)


def where(url: str) -> str:
    """What a message may say of a webhook URL: its scheme and host (and port)."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(an unusable URL)"
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}{port}" if parts.scheme and host else "(an unusable URL)"


def webhook_body(alert: dict[str, Any], view_url: str | None) -> bytes:
    """The stock SDK's webhook message (``make_compat_webhook_v1``) built from the facts the
    SDK journaled, byte for byte what the stock SDK would POST."""
    level, title, message = alert.get("level"), alert.get("title"), alert.get("body")
    step = alert.get("step")
    timestamp = (alert.get("timestamp") or 0) / 1000
    local = alert.get("localtime") or datetime.fromtimestamp(timestamp).strftime(
        "%Y-%m-%d %H:%M:%S")
    return json.dumps({
        "username": "pluto",
        "content": f"{level}: {title}",
        "embeds": [{"description": message, "footer": {"text": f"Step: {step} at {local}"}}],
        "text": f"{level}: {title}",
        "blocks": [{
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": (f"`{level}` *{title}:* {message}\n\n"
                         f"_<{view_url}|Check out live updates for this run>_\n"
                         f"*Local Time:* <!date^{int(timestamp)}^"
                         "{date_short_pretty} {time_secs}|Time>\n"
                         f"*Step:* {step}\n"),
            },
        }],
    }).encode()


def post_webhook(alert: dict[str, Any], view_url: str | None, key: tuple[str, int]) -> None:
    """POST one webhook alert; ``key`` (journal, event seq) counts its failed tries.

    Raises :class:`RejectedError` (refused for good, or given up) or :class:`TransientError`
    (try again later); neither names more of the URL than :func:`where` does."""
    url = str(alert.get("webhook") or "")
    at = where(url)
    if urllib.parse.urlsplit(url).scheme not in ("http", "https") or at.startswith("("):
        raise RejectedError(None, f"the webhook URL {at} is not an http(s) URL")
    try:
        resp = requests.post(
            url, data=webhook_body(alert, view_url), timeout=WEBHOOK_TIMEOUT,
            headers={"Content-Type": "application/json", "User-Agent": USER_AGENT},
            # a no-op auth: requests would otherwise add credentials from ~/.netrc
            auth=_no_auth, allow_redirects=False, stream=True)
        try:
            said = next(resp.iter_content(ANSWER_BYTES), b"")  # a webhook's answer is short
        finally:
            resp.close()
    except (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema,
            requests.exceptions.MissingSchema, requests.exceptions.InvalidHeader,
            UnicodeError) as exc:
        raise RejectedError(None, f"the webhook URL {at} cannot be used "
                                  f"({type(exc).__name__})") from None
    except (requests.RequestException, ValueError, OSError) as exc:
        # its message would carry the URL's path: the error's type only
        raise _failed(key, NO_ANSWER,
                      f"the webhook at {at} did not answer ({type(exc).__name__})") from None
    code = resp.status_code
    if code < 300:
        with _tries_lock:
            _tries.pop(key, None)
        return
    if code < 400:
        raise RejectedError(code, f"the webhook at {at} answered with a redirect; plutosync "
                                  "does not follow redirects")
    text = _scrub(" ".join(said.decode("utf-8", "replace").split()), url)[:80] or "empty"
    if code >= 500 or code in (408, 429):
        raise _failed(key, code, f"the webhook at {at} failed ({text})", _retry_after(resp))
    with _tries_lock:
        _tries.pop(key, None)
    raise RejectedError(code, f"the webhook at {at} refused the alert ({text})")


def _failed(key: tuple[str, int], code: int, reason: str,
            retry_after: float | None = None) -> RejectedError | TransientError:
    """A failed try: to be retried, or (the ``WEBHOOK_TRIES``-th in a row) given up."""
    with _tries_lock:
        tries = _tries[key] = _tries.get(key, 0) + 1
        if tries >= WEBHOOK_TRIES:
            del _tries[key]
    if tries >= WEBHOOK_TRIES:
        return RejectedError(code or None, f"{reason}; given up after {tries} tries, so the "
                                           "rest of the run goes on")
    return TransientError(code, reason, retry_after=retry_after)


def _no_auth(request: requests.PreparedRequest) -> requests.PreparedRequest:
    return request


def _scrub(text: str, url: str) -> str:
    """``text`` without the URL or its path (a webhook's answer could echo them)."""
    parts = urllib.parse.urlsplit(url)
    for secret in (url, parts.path if len(parts.path) > 1 else "", parts.query):
        if secret:
            text = text.replace(secret, "***")
    return text


def _retry_after(resp: requests.Response) -> float | None:
    try:
        return min(float(resp.headers.get("Retry-After", "")), RETRY_AFTER_CAP_S)
    except ValueError:
        return None
