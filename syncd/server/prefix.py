"""Display-id prefixes: ``my-ml-project`` -> ``MMP``, so run 42 shows as ``MMP-42``.

>>> project_prefix("image-classification")
'ICL'
>>> parse_display_id("mmp-42")
('MMP', 42)
"""

from __future__ import annotations

import re

_WORD_SPLIT = re.compile(r"[-_\s.]+")
_DISPLAY_ID = re.compile(r"^([A-Za-z0-9]+)-(\d+)$")
MAX_PREFIX = 4
MIN_PREFIX = 3


def project_prefix(project: str) -> str:
    """The prefix a new project gets; it is stored with the project and never recomputed."""
    words = [w for w in _WORD_SPLIT.split(project) if w]
    if not words:
        return "RUN"
    if len(words) == 1:
        prefix = words[0][:MIN_PREFIX]
    else:
        prefix = "".join(w[0] for w in words)
        if len(prefix) < MIN_PREFIX:
            # Too few words: swap the last initial for the start of the last word.
            needed = MIN_PREFIX - len(prefix)
            prefix = prefix[:-1] + words[-1][: needed + 1]
    return prefix[:MAX_PREFIX].upper()


def parse_display_id(display_id: str) -> tuple[str, int] | None:
    """``(PREFIX, number)`` for a well-formed display id, else ``None``."""
    match = _DISPLAY_ID.match(display_id)
    if not match:
        return None
    return match.group(1).upper(), int(match.group(2))


def format_display_id(prefix: str, number: int | None) -> str | None:
    return None if number is None else f"{prefix}-{number}"
