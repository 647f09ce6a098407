"""Retry policies, declared once as tenacity strategies.

The replayer never sleeps inside a run's delivery (a run backing off must not hold up the
others), so it does not wrap calls in ``tenacity.retry``; it asks :func:`next_delay` how long a
run should wait after its n-th failed attempt and schedules that run's next try. The policies
are still plain tenacity ``retry``/``wait`` objects, so they read (and test) like any other.

- transient (network errors, timeouts, 5xx, 408, 429): exponential backoff with full jitter,
  capped at 60 s, forever; a ``Retry-After`` from the server wins over the backoff.
- auth (401/403): the key will not fix itself within seconds; retry slowly, forever, so that a
  key fixed on the server side (or a daemon restarted with a new one) picks up where it left.

:class:`Backoff` keeps a lane's place on the transient ladder: it climbs while one request
keeps failing, and starts again when the server answered since and another request failed
(a flapping server or proxy, not a refusal of one request); a 429 always climbs.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import tenacity
from tenacity import retry_if_exception_type, wait_fixed, wait_random, wait_random_exponential
from tenacity.wait import wait_base

from syncd.client import AuthError, ClientError, TransientError

BACKOFF_CAP_S = 60.0
RETRY_AFTER_CAP_S = 600.0  # a server asking for more is ignored beyond this


class wait_retry_after(wait_base):
    """The server's ``Retry-After`` (plus up to 10 % jitter), else the fallback strategy."""

    def __init__(self, fallback: wait_base) -> None:
        self.fallback = fallback

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        after = getattr(exc, "retry_after", None)
        if after is not None:
            after = min(after, RETRY_AFTER_CAP_S)
            return after + random.uniform(0, 0.1 * after)
        return self.fallback(retry_state)


@dataclass(frozen=True)
class Policy:
    name: str
    retry: tenacity.retry_base
    wait: wait_base


TRANSIENT = Policy(
    "transient",
    retry=retry_if_exception_type(TransientError),
    # full jitter: uniform in [0, min(cap, 0.5 * 2^n)]
    wait=wait_retry_after(wait_random_exponential(multiplier=0.5, max=BACKOFF_CAP_S)),
)
AUTH = Policy(
    "auth",
    retry=retry_if_exception_type(AuthError),
    wait=wait_fixed(60) + wait_random(0, 15),
)
POLICIES = (TRANSIENT, AUTH)

_RETRYING = tenacity.Retrying()  # only a carrier for RetryCallState


def policy_for(error: BaseException) -> Policy | None:
    """The policy that retries ``error``, or None when it is final (a rejection)."""
    state = _state(error, 1)
    for policy in POLICIES:
        if policy.retry(state):
            return policy
    return None


def next_delay(error: ClientError, attempt: int) -> float | None:
    """Seconds to wait after the ``attempt``-th consecutive failure (1-based); None = final."""
    policy = policy_for(error)
    if policy is None:
        return None
    return float(policy.wait(_state(error, attempt)))


@dataclass
class Backoff:
    """When a lane of requests (a run's events, a run's files) tries again.

    Failures in a row of one request climb the policy's ladder. The lane's steps send
    several requests and are retried whole, so when the server answered since the last
    failure and another request failed this time, the server is flapping rather than
    refusing that request: the ladder starts again, as each request's own would with
    per-request retries (a 25 % 5xx proxy otherwise pushed every multi-request step towards
    the 60 s cap). A 429 (slow down) always climbs. A success of the lane resets
    ``attempts``.

        >>> b = Backoff()
        >>> delay = b.failure(TransientError(503, "busy"), answers=client.answers)
    """

    attempts: int = 0
    due: float = 0.0  # monotonic time of the next try
    failed: str | None = None  # ClientError.request of the last failure
    answers: int = 0  # the client's answer count at that failure

    def failure(self, error: ClientError, answers: int, default: float = 0.0) -> float:
        """Schedule the next try after ``error``; ``answers``: the client's count of answered
        requests (``PlutoClient.answers``). Returns the delay in seconds (``default`` when the
        error is final)."""
        if error.code != 429 and answers != self.answers and error.request != self.failed:
            # flapping: each request is on its own first rung, as with per-request retries
            # (holding the rung instead took the 25 % 5xx test from 3-7 s to 3-60 s); a rate
            # limit always climbs
            self.attempts = 0
        self.failed, self.answers = error.request, answers
        self.attempts += 1
        delay = next_delay(error, self.attempts)
        delay = default if delay is None else delay
        self.due = time.monotonic() + delay
        return delay


@dataclass
class Quiet:
    """Says a kind of trouble once per ``every`` seconds, however often it recurs (a
    flapping server must not fill the log).

        >>> quiet = Quiet()
        >>> quiet.says(503), quiet.says(503), quiet.says("network")
        (True, False, True)
    """

    every: float = 60.0
    kind: object = None  # the kind last said
    at: float = float("-inf")  # monotonic time it was said

    def says(self, kind: object) -> bool:
        """Whether to log ``kind`` now (and, if so, remember it was)."""
        now = time.monotonic()
        if kind == self.kind and now - self.at <= self.every:
            return False
        self.kind, self.at = kind, now
        return True


def _state(error: BaseException, attempt: int) -> tenacity.RetryCallState:
    state = tenacity.RetryCallState(_RETRYING, None, (), {})
    state.attempt_number = attempt
    state.set_exception((type(error), error, error.__traceback__))
    return state
