"""Noticing that the journal file a run writes to was removed or replaced under it.

``rm -rf $PLUTO_DIR`` (or a ``/tmp`` cleaner) under a running job leaves its SQLite
connection writing into a deleted inode: every commit "succeeds" and nothing is kept. So each
fold checks, with one ``stat``, that the path still names the file that was opened::

    identity = JournalIdentity(journal.path)
    identity.check(run_id)         # JournalError once the file is gone or replaced

The first failed check says so loudly (an error, once per journal per process); from then on
``check`` raises the same ``JournalError``, so state changes raise and ``finish()`` reports it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from pluto_offline.errors import JournalError

logger = logging.getLogger("pluto_offline")
_told: set[str] = set()  # journals already reported gone in this process


class JournalIdentity:
    """The journal file as opened: its path and its (device, inode)."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self._id = _file_id(path)
        except OSError:
            self._id = None
        self.gone: str | None = None  # the error's text, once the file is gone

    def check(self, run_id: str) -> None:
        """Raise ``JournalError`` if ``path`` no longer names the file that was opened."""
        if self.gone is None:
            if self._id is None:  # could not be told at open: nothing to compare with
                return
            try:
                current = _file_id(self.path)
            except OSError:  # e.g. a directory we may no longer search: SQLite will say it
                return
            if current is not None and current == self._id:
                return
            how = "removed" if current is None else "replaced by another file"
            self.gone = (
                f"the journal {self.path} was {how} while run {run_id} was running: nothing "
                "this process logs from now on is saved, and what was journaled there before "
                "went with it; finish(), update_config(), add_tags(), remove_tags() and flush() "
                "cannot journal anything. Keep PLUTO_DIR out of reach of cleaners (e.g. not "
                "under /tmp) and start a new run")
            if str(self.path) not in _told:
                _told.add(str(self.path))
                logger.error("pluto_offline: %s", self.gone)
        raise JournalError(self.gone)


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino)
