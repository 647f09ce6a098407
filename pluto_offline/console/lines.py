"""A console stream's bytes cut into the lines a person reads: what is journaled of them.

Bytes arrive in chunks of any size (a read of a pipe); a line is complete at ``\\n``. What a
terminal shows of a line is what is journaled:

- ``\\r`` returns to the start of the line, so a progress bar (tqdm) redrawn a thousand times
  is journaled once, as last drawn: the text after the last ``\\r`` (the stock SDK journals
  every redraw as one huge line);
- ANSI escape sequences (colours, cursor moves) are dropped;
- empty lines are skipped (as the stock SDK's capture does);
- UTF-8 is decoded incrementally (a character split between two reads stays whole); bytes
  that are not UTF-8 become U+FFFD;
- a line longer than ``MAX_LINE`` characters is cut, preferably at a blank (a secret has
  none, so redaction still sees it whole), into lines of at most that length.

Redaction (``redact.Redactor``) runs over each block of whole lines before it is cut apart.

>>> s = LineSplitter()
>>> s.feed(b"epoch 1\\n\\x1b[32mok\\x1b[0m\\n 10%\\r 50%\\r100%\\nhalf a li"), s.feed(b"ne\\n")
(['epoch 1', 'ok', '100%'], ['half a line'])
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Callable

MAX_LINE = 16384  # characters journaled per line at most; longer lines are cut
_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")


class LineSplitter:
    """Whole lines out of a byte stream; ``redact`` is applied to each block of them."""

    def __init__(self, redact: Callable[[str], str] | None = None, prefix: str = "") -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._partial = ""
        self._redact = redact
        self._prefix = prefix  # e.g. "[rank3] " under torchrun, as the stock SDK does

    def feed(self, data: bytes) -> list[str]:
        """The lines ``data`` completes (a trailing partial line waits for its end)."""
        text = self._decoder.decode(data)
        if "\n" not in text:
            self._partial += text
            if len(self._partial) > 2 * MAX_LINE:
                return self._cut_long()
            return []
        head, _, tail = (self._partial + text).rpartition("\n")
        self._partial = tail
        return self._lines(head)

    def end(self) -> list[str]:
        """At the stream's end: the partial line, if any."""
        text = self._partial + self._decoder.decode(b"", final=True)
        self._partial = ""
        return self._lines(text) if text else []

    def _cut_long(self) -> list[str]:
        """A partial line beyond ``2 * MAX_LINE``: journal all but its last ``MAX_LINE`` chars
        now (memory stays bounded), cut at a blank when there is one."""
        text = self._partial
        cut = text.rfind(" ", 0, len(text) - MAX_LINE)
        cut = cut + 1 if cut > 0 else len(text) - MAX_LINE
        if "\r" in text[:cut]:  # only what follows the last \r is shown
            self._partial = text[text.rfind("\r", 0, cut) + 1:]
            return []
        self._partial = text[cut:]
        return self._lines(text[:cut])

    def _lines(self, block: str) -> list[str]:
        if "\x1b" in block:
            block = _ANSI.sub("", block)
        if self._redact is not None:
            block = self._redact(block)
        out = block.split("\n")
        if "\r" in block:
            out = [_shown(line) for line in out]
        if any(len(line) > MAX_LINE for line in out):
            out = [piece for line in out for piece in _pieces(line)]
        prefix = self._prefix
        if prefix:
            return [prefix + line for line in out if line]
        return [line for line in out if line]


def _shown(line: str) -> str:
    """What a terminal shows of a line redrawn with ``\\r``: its last non-empty drawing."""
    for part in reversed(line.split("\r")):
        if part:
            return part
    return ""


def _pieces(line: str) -> list[str]:
    return [line[i:i + MAX_LINE] for i in range(0, len(line), MAX_LINE)] or [""]
