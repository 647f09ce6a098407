"""The typed errors of :class:`syncd.client.PlutoClient`, one per thing a caller does about them.

- :class:`TransientError`: try again later (network, timeouts, 5xx, 408, 429, an answer that is
  not the Pluto server's);
- :class:`AuthError`: fix the key (or, :class:`ProxyAuthError`, the proxy's login) and keep
  everything;
- :class:`RejectedError`: the server refused this request for good.

The messages never carry the key: the client scrubs the reasons it puts in them.
"""

from __future__ import annotations

from pluto_offline.journal.delivery import WAITS_FOR_RESTART


class ClientError(Exception):
    """A request failed; ``code`` is the HTTP status or None for a network failure.

    ``request`` names the request an answer came back to (``"POST /api/runs/create"``; None
    when there was no answer): a caller retrying several requests in a row tells a request
    that keeps failing from a server failing now one, now another."""

    request: str | None = None

    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"{code}: {reason}" if code else reason)
        self.code = code
        self.reason = reason

    def describe(self) -> str:
        return f"HTTP {self.code}: {self.reason}" if self.code else self.reason


class TransientError(ClientError):
    """Worth retrying: the server is unreachable, overloaded or rate limiting."""

    def __init__(self, code: int | None, reason: str, retry_after: float | None = None,
                 *, unanswered: bool = False, never_sent: bool = False) -> None:
        super().__init__(code, reason)
        self.retry_after = retry_after
        # sent, then no answer in time: the server may still apply the request, late
        self.unanswered = unanswered
        # no connection was made (refused, no route, connect timeout): nothing was applied
        self.never_sent = never_sent


class AuthError(ClientError):
    """The server refused the API key: wrong, revoked, or for another server.

    :meth:`describe` gives the advice for the service (restart it with the fix);
    :meth:`describe_once` for a one-shot command (fix, then run it again)."""

    def problem(self) -> str:
        return f"the server refused the API key (HTTP {self.code}: {self.reason})"

    def short(self) -> str:
        return "the API key was refused"

    def fix(self) -> str:
        return "set a valid PLUTO_API_KEY for this server"

    def describe(self) -> str:
        return f"{self.problem()}: {self.fix()}, {WAITS_FOR_RESTART}"

    def describe_once(self, command: str) -> str:
        return (f"{self.problem()}: {self.fix()}, then run `plutosync {command}` again; "
                "nothing was dropped")


class ProxyAuthError(AuthError):
    """A proxy between plutosync and the server asks for credentials (HTTP 407).

    ``proxy`` is the proxy's address as the environment names it, credentials removed."""

    def __init__(self, code: int | None, reason: str, proxy: str | None = None) -> None:
        super().__init__(code, reason)
        self.proxy = proxy

    def problem(self) -> str:
        which = f" {self.proxy}" if self.proxy else ""
        return (f"the proxy{which} between plutosync and the server refused the request "
                f"(HTTP {self.code}: Proxy Authentication Required)")

    def short(self) -> str:
        return "the proxy asked for its credentials (HTTP 407)"

    def fix(self) -> str:
        return ("put the proxy's credentials in HTTPS_PROXY / HTTP_PROXY "
                "(http://USER:PASSWORD@PROXY:PORT), or list the server in NO_PROXY if it needs "
                "no proxy")


class WrongUrlError(AuthError):
    """The address has no Pluto API: ``POST /api/runs/create``, which a Pluto server never
    answers "not found" (pluto-api.md: a missing project is created, a missing fork parent is
    a 400), answered 404. Handled like a refused key: fix the address, everything is kept."""

    def __init__(self, code: int | None, reason: str, url: str = "") -> None:
        super().__init__(code, reason)
        self.url = url

    def problem(self) -> str:
        return (f"{self.url or 'the server'} has no Pluto API: creating a run there answered "
                f"HTTP {self.code} ({self.reason})")

    def short(self) -> str:
        return "the server address is wrong (HTTP 404 on create)"

    def fix(self) -> str:
        return ("set --server / PLUTO_URL_API to the server's base address, without a path "
                "such as /api (e.g. http://HOST:3001)")


class RejectedError(ClientError):
    """The server refused this request for good (a 4xx other than auth)."""


class OversizedAnswer(TransientError):
    """The answer is larger than any Pluto answer to that request: a proxy or a broken server."""
