"""``PlutoClient``: one method per server endpoint the daemon uses (see pluto-api.md).

It owns a keep-alive ``requests.Session``, the auth header, timeouts and content types, and turns
every failure into one of four typed errors, so callers decide what to do by type:

- :class:`TransientError`: connection errors, timeouts, 5xx, 408, 429 (try again later);
- :class:`AuthError`: 401/403, or an ingest 422 about the key (fix the key; keep everything);
  :class:`ProxyAuthError`, one of them: a proxy in the way asks for its credentials (407);
  :class:`WrongUrlError`, another: a create answered 404, so the address has no Pluto API;
- :class:`RejectedError`: any other 4xx that carries the Pluto server's error shape (a JSON
  object with ``error`` or ``message``): this request will never succeed as is.

An answer that is not what the Pluto contract promises (a 2xx that is not the expected JSON,
an HTML page from a proxy, a redirect, a body over ``MAX_ANSWER_BYTES``) is a
:class:`TransientError` too: nothing is acknowledged on the strength of it, and nothing is
refused for good because of what is not the Pluto server talking: a 4xx without the server's
error shape (a proxy's or load balancer's HTML page, a bare text) is a :class:`TransientError`. Run details, the one answer
that is legitimately large (it carries the whole config), are never read whole:
:meth:`run_fields` streams them and keeps only the fields asked for, so a 9 MB config never
turns a status check into an endless retry.

The client itself never retries or sleeps: the replayer schedules retries per run with the
policies in :mod:`syncd.retry`. The key never appears in an error message or a log line.
"""

from __future__ import annotations

import email.utils
import json
import re
import time
import urllib.parse
from typing import Any, TypeVar

import ijson
import requests
import urllib3

from syncd import __version__
from syncd.client_errors import (  # noqa: F401 (the errors are part of the client's API)
    AuthError,
    ClientError,
    OversizedAnswer,
    ProxyAuthError,
    RejectedError,
    TransientError,
    WrongUrlError,
)
from syncd.fields import pick_fields
from syncd.settings import Settings

USER_AGENT = f"plutosync/{__version__}"
# An ingest 422 names a bad line; one whose reason is about the credentials is an auth error.
_KEY_REASON = re.compile(r"api[ _-]?key|unauthori[sz]ed|authenticat|bearer|token|credential", re.I)
# Pluto's answers are small; a bigger one is a proxy or a broken server, never read whole.
MAX_ANSWER_BYTES = 8 * 1024 * 1024


# The fields a status check reads from run details (never the config).
STATE_FIELDS = ("status", "statusMetadata", "statusUpdated")


class PlutoClient:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.session = requests.Session()
        self.session.verify = settings.verify_tls
        self.session.headers.update({
            "Authorization": f"Bearer {settings.api_key}",
            "User-Agent": USER_AGENT,
        })
        # (connect, read): a big NDJSON batch may take the server a while to store.
        self.timeout = (min(10.0, settings.timeout), settings.timeout)
        # 2xx answers so far: the replayer's backoff asks whether the server answered
        # anything since a request failed
        self.answers = 0

    def close(self) -> None:
        self.session.close()

    # ------------------------------------------------------------------ api service
    def create_run(self, body: dict[str, Any]) -> dict[str, Any]:
        """Raises :class:`WrongUrlError` for a 404: a Pluto server never answers a create so."""
        try:
            answer = self._api("POST", "/api/runs/create", body)
        except RejectedError as exc:
            if exc.code == 404:
                raise WrongUrlError(exc.code, exc.reason, self.settings.api_url) from None
            raise
        return _with_run_id(answer, "/api/runs/create")

    def resume_run(self, body: dict[str, Any]) -> dict[str, Any]:
        return _with_run_id(self._api("POST", "/api/runs/resume", body), "/api/runs/resume")

    def update_status(
        self, run_id: int, status: str, *, metadata: str | None = None,
        at_ms: int | None = None,
    ) -> None:
        body: dict[str, Any] = {"runId": run_id, "status": status}
        if metadata is not None:
            body["statusMetadata"] = metadata
        if at_ms is not None:
            body["statusUpdated"] = at_ms
        self._api("POST", "/api/runs/status/update", body)

    def update_config(self, run_id: int, config_text: str) -> None:
        self._api("POST", "/api/runs/config/update", {"runId": run_id, "config": config_text})

    def update_tags(self, run_id: int, tags: list[str]) -> None:
        self._api("POST", "/api/runs/tags/update", {"runId": run_id, "tags": tags})

    def add_log_names(self, run_id: int, names: list[str], log_type: str) -> None:
        self._api("POST", "/api/runs/logName/add",
                  {"runId": run_id, "logName": names, "logType": log_type})

    def run_details(self, run_id: int) -> dict[str, Any]:
        return self._api("GET", f"/api/runs/details/{run_id}")

    def run_fields(self, run_id: int, fields: tuple[str, ...] = STATE_FIELDS) -> dict[str, Any]:
        """The ``fields`` of ``/api/runs/details/{run_id}``, read as a stream: top-level
        names, or dotted paths into an object (``"config.plutoOffline"``).

        The answer carries the run's whole config and systemMetadata (pluto-api.md: "can be
        many MB"); they are parsed past, never held, and the connection is dropped as soon as
        every field asked for was seen. Fields the answer lacks are absent from the result.
        Raises the usual typed errors; a body that is not a JSON object is a protocol error.
        """
        url = self.settings.api_url + f"/api/runs/details/{run_id}"
        resp = self._send("GET", url, "api", stream_ok=True)
        try:
            return pick_fields(resp, fields)
        except (ijson.JSONError, ValueError) as exc:
            raise _of(resp, TransientError(resp.status_code, self._scrub(
                f"protocol error: {_where(url)} answered HTTP {resp.status_code} with a body "
                f"that is not a JSON object ({str(exc)[:80]}); is a proxy in the way?"))) \
                from None
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
            # the body is read from the raw stream: a reset mid-answer surfaces as urllib3's
            # ProtocolError (or a bare ConnectionResetError), not as a requests error
            raise TransientError(None, f"cannot read {_where(url)} ({_short(exc)})") from None
        finally:
            resp.close()

    def run_by_display_id(self, display_id: str, project: str) -> dict[str, Any]:
        return self._api("GET", f"/api/runs/details/by-display-id/{display_id}",
                         params={"projectName": project})

    # ------------------------------------------------------------------ ingest service
    # ------------------------------------------------------------------ py service
    def heartbeat(self, run_id: int) -> dict[str, Any]:
        """The liveness ping; the answer may say ``{"status": "CANCELLED"}``."""
        resp = self._send("POST", self.settings.py_url + "/api/runs/trigger", "py",
                          json_body={"runId": run_id})
        return self._json(resp, self.settings.py_url + "/api/runs/trigger")

    # ------------------------------------------------------------------ plumbing
    def _api(self, method: str, path: str, body: dict[str, Any] | None = None,
             params: dict[str, str] | None = None) -> dict[str, Any]:
        resp = self._send(method, self.settings.api_url + path, "api",
                          json_body=body, params=params)
        return self._json(resp, self.settings.api_url + path)

    def ingest(self, path: str, run_id: int, project: str, ndjson: bytes) -> None:
        """POST NDJSON lines to an ingest endpoint (``path``: ``/ingest/metrics``, ...)."""
        headers = {
            "Content-Type": "application/x-ndjson",
            "X-Run-Id": str(run_id),
            "X-Project-Name": project,
        }
        url = self.settings.ingest_url + path
        resp = self._send("POST", url, "ingest", data=ndjson, headers=headers)
        if "html" in resp.headers.get("Content-Type", "").lower():
            # the ingest service answers plain text: an HTML 200 is a proxy's page
            raise self._protocol(resp, url, "an HTML page instead of the ingest service's answer")

    def _send(self, method: str, url: str, service: str, *, json_body: Any = None,
              data: bytes | None = None, headers: dict[str, str] | None = None,
              params: dict[str, str] | None = None, stream_ok: bool = False) -> requests.Response:
        """Send one request; a 2xx answer is returned read (``stream_ok``: unread, for the
        caller to stream and close), anything else raised as a typed error."""
        if json_body is not None:
            # The api service reads a body only with this content type (pluto-api.md).
            data = json.dumps(json_body).encode()
            headers = {"Content-Type": "application/json", **(headers or {})}
        try:
            # No redirects (as the stock client): a POST redirected is not delivered, and the
            # key must not follow a Location; stream, so a huge answer is never read whole.
            # verify per request: a session's verify=False loses to REQUESTS_CA_BUNDLE
            resp = self.session.request(method, url, data=data, headers=headers, params=params,
                                        timeout=self.timeout, allow_redirects=False,
                                        stream=True, verify=self.settings.verify_tls)
            if not (stream_ok and 200 <= resp.status_code < 300):
                _read_bounded(resp, url)
        except requests.ReadTimeout:
            raise TransientError(None, f"{_where(url)} timed out", unanswered=True) from None
        except requests.ConnectTimeout:
            raise TransientError(None, f"{_where(url)} timed out", never_sent=True) from None
        except requests.Timeout:
            raise TransientError(None, f"{_where(url)} timed out") from None
        except requests.RequestException as exc:
            raise TransientError(None, f"cannot reach {_where(url)} ({_short(exc)})",
                                 never_sent=_never_connected(exc)) from None
        if 300 <= resp.status_code < 400:
            where = self._scrub(resp.headers.get("Location") or "nowhere")[:200]
            raise _of(resp, TransientError(resp.status_code, (
                f"{_where(url)} redirected to {where}; plutosync does not follow redirects: "
                "set PLUTO_URL_API / PLUTO_URL_INGEST / PLUTO_URL_PY (or --server) to the "
                "final address")))
        if resp.status_code < 300:
            self.answers += 1
            return resp
        raise _of(resp, self._error(resp, service))

    def _error(self, resp: requests.Response, service: str) -> ClientError:
        code = resp.status_code
        reason = self._scrub(_reason(resp))
        if code == 407:
            return ProxyAuthError(code, self._scrub(_snippet(resp)), _proxy_for(resp.url))
        if code >= 500 or code in (408, 429):
            return TransientError(code, reason, retry_after=_retry_after(resp))
        if not _error_shaped(resp):
            # not the Pluto server's refusal: a proxy, a load balancer, a wrong URL. Neither a
            # refused key (a 401/403 page of a proxy says nothing of the key) nor a refusal
            # for good: retried as a transient error, the key kept
            return self._protocol(resp, resp.url or "", "an answer that is not the Pluto "
                                  "server's error (no JSON error object)")
        if code in (401, 403) or (service == "ingest" and code == 422 and _KEY_REASON.search(reason)):
            return AuthError(code, reason)
        return RejectedError(code, reason)

    def _json(self, resp: requests.Response, url: str) -> dict[str, Any]:
        """The JSON object a 2xx of the api/py services carries; anything else: protocol error."""
        try:
            value = resp.json()
        except ValueError:
            html = "html" in resp.headers.get("Content-Type", "").lower()
            raise self._protocol(resp, url, "an HTML page" if html else "a body that is not JSON") \
                from None
        if not isinstance(value, dict):
            raise self._protocol(resp, url, f"a JSON {type(value).__name__}, not an object")
        return value

    def _protocol(self, resp: requests.Response, url: str, what: str) -> TransientError:
        return _of(resp, TransientError(resp.status_code, self._scrub(
            f"protocol error: {_where(url)} answered HTTP {resp.status_code} with {what} "
            f"({_snippet(resp)}); is a proxy in the way, or the URL wrong?")))

    def _scrub(self, text: str) -> str:
        return text.replace(self.settings.api_key, "***") if self.settings.api_key else text


_E = TypeVar("_E", bound=ClientError)


def _of(resp: requests.Response, exc: _E) -> _E:
    """``exc``, naming the request ``resp`` answers (``ClientError.request``)."""
    if resp.request is not None:
        exc.request = f"{resp.request.method} {urllib.parse.urlsplit(resp.request.url).path}"
    return exc


def _read_bounded(resp: requests.Response, url: str) -> None:
    """Read the body into ``resp`` (``stream=True``), at most ``MAX_ANSWER_BYTES`` of it."""
    body = bytearray()
    try:
        for chunk in resp.iter_content(64 * 1024):
            body += chunk
            if len(body) > MAX_ANSWER_BYTES:
                raise _of(resp, OversizedAnswer(resp.status_code, (
                    f"{_where(url)} answered HTTP {resp.status_code} with more than "
                    f"{MAX_ANSWER_BYTES >> 20} MiB; not read (a Pluto server's answers to this "
                    "request are small)")))
    finally:
        resp.close()  # a body not read to its end drops the connection, never drains it
    resp._content = bytes(body)


def _with_run_id(answer: dict[str, Any], path: str) -> dict[str, Any]:
    run_id = answer.get("runId")
    if isinstance(run_id, bool) or not isinstance(run_id, int):
        raise TransientError(200, (
            f"protocol error: {path} answered without a numeric runId "
            f"(keys: {', '.join(sorted(answer))[:120] or 'none'}); is this a Pluto server?"))
    return answer


def _snippet(resp: requests.Response) -> str:
    return " ".join((resp.text or "").split())[:80] or "empty"


def _proxy_for(url: str | None) -> str | None:
    """The proxy the environment sets for ``url`` (HTTPS_PROXY, ...), without credentials."""
    if not url:
        return None
    proxy = requests.utils.get_environ_proxies(url).get(url.split(":", 1)[0].lower())
    if not proxy:
        return None
    try:
        parts = urllib.parse.urlsplit(proxy if "://" in proxy else "http://" + proxy)
        return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    except ValueError:  # a malformed port: requests will say so itself
        return None


def _error_shaped(resp: requests.Response) -> bool:
    """Whether an error answer is the Pluto server's own: a JSON object (not an HTML page)
    carrying ``error`` (a string or a validator's object) or ``message``."""
    if "html" in resp.headers.get("Content-Type", "").lower():
        return False
    try:
        body = resp.json()
    except ValueError:
        return False
    return isinstance(body, dict) and bool(body.get("error") or body.get("message"))


def _reason(resp: requests.Response) -> str:
    """The server's reason: ``{"error": str}``, a validator's error object, or the text."""
    try:
        body = resp.json()
    except ValueError:
        return (resp.text or resp.reason or "").strip()[:300]
    if isinstance(body, dict):
        err = body.get("error", body.get("message"))
        if isinstance(err, dict):
            err = err.get("message") or json.dumps(err)[:300]
        if err:
            return str(err)[:300]
    return json.dumps(body)[:300]


def _retry_after(resp: requests.Response) -> float | None:
    value = resp.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return max(0.0, when - time.time())


def _where(url: str) -> str:
    return url.split("?", 1)[0]


def _short(exc: BaseException) -> str:
    """The innermost cause of a requests error, without the urllib3 noise."""
    text = str(exc)
    for marker in ("Connection refused", "Connection reset", "Connection aborted",
                   "Name or service not known", "Temporary failure in name resolution",
                   "Remote end closed connection", "RemoteDisconnected", "SSLError",
                   "CERTIFICATE_VERIFY_FAILED", "Network is unreachable", "IncompleteRead"):
        if marker in text:
            return marker
    return type(exc).__name__


def _never_connected(exc: BaseException) -> bool:
    """Whether a request failed before a connection existed (so nothing reached the server):
    urllib3 says so with NewConnectionError (refused, no route, DNS)."""
    import urllib3.exceptions

    seen: set[int] = set()
    stack: list[object] = [exc]
    while stack:
        e = stack.pop()
        if not isinstance(e, BaseException) or id(e) in seen:
            continue  # (a reason may be a plain string)
        seen.add(id(e))
        if isinstance(e, urllib3.exceptions.NewConnectionError):
            return True
        stack += [*getattr(e, "args", ()), getattr(e, "reason", None), e.__cause__,
                  e.__context__]
    return False
