"""Run identity: classify ``run_id`` / ``fork_run_id`` as the stock SDK does, and make new ids.

    >>> classify_run_id(42), classify_run_id("42"), classify_run_id("MMP-7"), classify_run_id("exp")
    (RunRef(kind='id', text='42'), RunRef(kind='id', text='42'), RunRef(kind='display', text='MMP-7'), RunRef(kind='external', text='exp'))
"""

from __future__ import annotations

import functools
import hashlib
import re
import secrets
import string
from collections.abc import Callable
from typing import NamedTuple

_DISPLAY_ID = re.compile(r"^[A-Z0-9]{1,4}-\d+$")
_NAME_CHARS = string.ascii_letters + string.digits


class RunRef(NamedTuple):
    """How a run is named: ``external`` (client-chosen), ``id`` (server number) or ``display``."""

    kind: str
    text: str


def is_display_id(value: str) -> bool:
    """``MMP-42``-style ids (note: ``'2024-1'`` matches too, as in the stock SDK)."""
    return bool(_DISPLAY_ID.match(value))


def classify_run_id(run_id: int | str) -> RunRef:
    """int or digit string → numeric id; display pattern → display id; other str → external."""
    if isinstance(run_id, bool):
        raise TypeError(f"run_id must be a str or an int, got {run_id!r}")
    if isinstance(run_id, int) or (isinstance(run_id, str) and run_id.isdigit()):
        try:
            number = int(run_id)
        except ValueError:  # '²' is a digit to isdigit() but not to int(); or 5000 digits
            raise ValueError(f"run_id {run_id[:40]!r} looks numeric but is not a run number")\
                from None
        if not 0 <= number < 2**63:  # no server run has it, and SQLite could not look it up
            raise ValueError(f"run_id {str(run_id)[:40]!r} is not a run number (0 to 2**63-1)")
        return RunRef("id", str(number))
    if not isinstance(run_id, str):
        raise TypeError(f"run_id must be a str or an int, got {type(run_id).__name__}")
    if run_id == "":
        raise ValueError("run_id must not be empty")
    if is_display_id(run_id):
        return RunRef("display", run_id)
    return RunRef("external", run_id)


def new_run_id() -> str:
    """An unguessable client-chosen id (22 url-safe chars, 128 bits), sent as ``externalId``."""
    return secrets.token_urlsafe(16)


def new_name() -> str:
    """A random 8-character run name, as the stock SDK picks when ``name`` is not given."""
    return "".join(secrets.choice(_NAME_CHARS) for _ in range(8))


def clean_chars(value: str) -> str:
    """A run name or metric key as journaled (issue 12 item 15).

    Kept as given when every character is printable, in any script (``loss_α``, ``训练-基线``):
    they travel in JSON bodies, which the Pluto server stores as UTF-8 (its ingest takes any
    non-empty metric name), and its UI shows them. The stock SDK turns every non-ASCII
    character into ``-``, so ``loss_α`` and ``loss_β`` both became ``loss_-``: one series
    mixing two. A name with unprintable characters (control characters, line breaks, unpaired
    surrogates, non-ASCII spaces), or none but spaces (the server refuses a blank metric
    name), has each of them replaced by ``-`` and, so that two names never merge, ``~`` and 6
    hex digits of its SHA-256: ``"loss\n"`` → ``"loss-~9ff58a"``, the same in every process.
    The caller warns, once per name (:func:`rename_note`).
    """
    if value.isprintable() and value.strip():
        return value
    return _rewritten(value, str.isprintable)


def clean_project(value: str) -> str:
    """A project name as journaled: printable ASCII kept, anything else rewritten as by
    :func:`clean_chars` (``-`` per character, ``~`` and a hash: ``训练`` → ``--~…``).

    Stricter than run names because the project travels in an HTTP header (``X-Project-Name``
    on every ingest request), which the server reads as visible ASCII only (a non-ASCII value
    is a missing header there, and Python's ``http.client`` cannot even send it); it also makes
    the display-id prefix, which must be ``[A-Za-z0-9]``.
    """
    if value.isascii() and value.isprintable() and value.strip():
        return value
    return _rewritten(value, _ascii_printable)


def _ascii_printable(c: str) -> bool:
    return " " <= c <= "~"


@functools.lru_cache(maxsize=4096)
def _rewritten(value: str, keep: Callable[[str], bool]) -> str:
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:6]
    return "".join(c if keep(c) else "-" for c in value) + "~" + digest


def rename_note(what: str, given: str, journaled: str, ascii_only: bool = False) -> str:
    """The warning for a name :func:`clean_chars` / :func:`clean_project` rewrote."""
    if not given.strip():
        why = "is blank"
    elif ascii_only:
        why = ("has characters outside printable ASCII, which a project name cannot hold (it "
               "is sent in an HTTP header)")
    else:
        why = ("has characters that cannot be shown (control characters, line breaks or "
               "non-ASCII spaces)")
    return (f"pluto_offline: {what} {given!r} {why}: journaled as {journaled!r}, a name of its "
            "own (no two names share one)")
