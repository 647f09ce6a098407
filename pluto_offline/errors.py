"""The errors the SDK raises (the journal's own errors are re-exported here)."""

from __future__ import annotations

from pluto_offline.journal import JournalError, JournalVersionError

__all__ = ["JournalError", "JournalVersionError", "RunExistsError"]


class RunExistsError(RuntimeError):
    """``init(run_id=...)`` named a run the journal already holds, without ``resume=True``.

    The same type and message as the stock SDK's, so code that catches it keeps working::

        try:
            run = pluto_offline.init(project="p", run_id="exp-1")
        except RunExistsError:
            run = pluto_offline.init(project="p", run_id="exp-1", resume=True)
    """
