"""The journal's errors: each message says what is wrong and what to do."""

from __future__ import annotations


class JournalError(Exception):
    """A journal cannot be opened, read or written; the message says why and what to do."""


class JournalVersionError(JournalError):
    """The journal was written by a newer pluto-offline."""
