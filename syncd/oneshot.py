"""The replayer of one-shot deliveries (``push``, ``run --once``): a refused key ends them.

The service retries a refused key slowly and says so with its own advice ("restart
plutosync", "next try in 60 s"). A one-shot delivery stops at it (``drain(...,
give_up_on_auth=True)``) and its command says so once, at the end, with advice that fits it
(:meth:`AuthError.describe_once`): nothing is logged while delivering, and the reason kept in
the journal for ``plutosync status`` is that advice too.
"""

from __future__ import annotations

import time
from typing import Any

from pluto_offline import journal
from syncd.client import AuthError
from syncd.replayer import Replayer


class OneShotReplayer(Replayer):
    """A :class:`Replayer` whose refused key is recorded quietly, with ``command``'s advice."""

    command: str = "push"

    def _auth_refused(self, ctx: Any, exc: AuthError) -> None:
        self._auth.due = time.monotonic() + 60.0
        self.last_auth_error = exc
        self.server_state = "auth"
        journal.record_error(self.j, ctx.row.key, exc.describe_once(self.command))

    def refused_key_note(self, reason: str | None) -> str | None:
        """For a run left undelivered: the short word for the refused key when ``reason`` is
        its full advice (said once already), else None."""
        exc = self.last_auth_error
        if exc is not None and reason == exc.describe_once(self.command):
            return f"not sent: {exc.short()} (above)"
        return None
