"""Run identity: classify ``run_id`` / ``fork_run_id`` as the stock SDK does, and make new ids.

    >>> classify_run_id(42), classify_run_id("42"), classify_run_id("MMP-7"), classify_run_id("exp")
    (RunRef(kind='id', text='42'), RunRef(kind='id', text='42'), RunRef(kind='display', text='MMP-7'), RunRef(kind='external', text='exp'))
"""

from __future__ import annotations

import re
import secrets
import string
from typing import NamedTuple

_DISPLAY_ID = re.compile(r"^[A-Z0-9]{1,4}-\d+$")
_PRINTABLE = re.compile(r"^[ -~]+$")
_NOT_PRINTABLE = re.compile(r"[^ -~]")
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
    """Replace characters outside printable ASCII with ``-`` (project, name and metric keys)."""
    if _PRINTABLE.match(value):
        return value
    return _NOT_PRINTABLE.sub("-", value)
