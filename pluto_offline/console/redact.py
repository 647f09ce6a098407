"""Secrets taken out of console lines before they are journaled.

The shapes are the stock SDK's ``sanitize_logs`` (``pluto/sanitize.py`` in pluto-ml 0.0.29),
applied as it applies them: one after another, in its order, each over what the previous left
(in ``mlpi_…ghp_…`` the ``ghp_`` pattern runs first: the ``mlpi_`` one cannot swallow ``ghp``),
and with its reach (a URL password runs to the last ``@`` of its word, as ``p@ss`` in
``postgres://u:p@ss@h``). They are: AWS keys, private key headers, passwords in URLs,
``Bearer``/``Basic`` credentials, known token prefixes (OpenAI ``sk-``, Hugging Face ``hf_``,
GitHub ``ghp_``, Pluto ``mlpi_``, ...) and ``password=`` / ``api_key: "..."`` assignments. On
top of them, and always (even with ``sanitize_logs`` off), the value of ``PLUTO_API_KEY`` (or
its deprecated twin ``MLOP_API_TOKEN``) wherever it appears: the key must never reach the
journal or the server. Beyond the stock pass, every match of any one shape in the text as
printed is removed too (see ``Redactor``), and so is what the shapes remove from the text as
printed where the key is in it (the key's own redaction never shields a secret).

Patterns run over a block of whole lines at once (one C-level pass each), so none of them may
match across a newline: where the stock pattern has ``\\s``, a blank is ``[^\\S\\n]`` (any
whitespace but the newline: ``\\r``, ``\\xa0``... count, as they do for the stock SDK, which
sees one line at a time). Over a block, each line comes out as it would alone.

>>> Redactor(api_key="k3y-abcdefgh").text("key=k3y-abcdefgh, Bearer eyJhbGc")
'key=***REDACTED***, Bearer ***REDACTED***'
>>> Redactor().text("postgres://u:p@ss@h/db mlpi_abcdefghijklghp_" + "d" * 32)
'postgres://u:***REDACTED***@h/db ***REDACTED******REDACTED***'
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import NamedTuple

from pluto_offline.journal.shareable import MIN_KEY_LEN

REDACTED = "***REDACTED***"
KEY_ENV = ("PLUTO_API_KEY", "MLOP_API_TOKEN")

_NAMES = ("password|passwd|secret|secret_key|api_key|apikey|access_token|auth_token|token|"
          "db_password|client_secret")
# in the stock SDK's order, which matters: each runs over what the ones before it left
_PREFIXES = (
    ("sk-", r"[A-Za-z0-9_-]{20,}"), ("sk_live_", r"[A-Za-z0-9]{20,}"),
    ("sk_test_", r"[A-Za-z0-9]{20,}"), ("hf_", r"[A-Za-z0-9]{10,}"),
    ("ghp_", r"[A-Za-z0-9]{30,}"), ("gho_", r"[A-Za-z0-9]{30,}"),
    ("glpat-", r"[A-Za-z0-9_-]{20,}"), ("xoxb-", r"[A-Za-z0-9-]{20,}"),
    ("xoxp-", r"[A-Za-z0-9-]{20,}"), ("mlpi_", r"[A-Za-z0-9]{10,}"),
    ("pypi-", r"[A-Za-z0-9]{10,}"), ("npm_", r"[A-Za-z0-9]{20,}"),
)
_AWS_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789/+="
# bytes of the AWS alphabet -> "a", every other byte (so every non-ASCII character) -> " "
_ALPHABET = bytes(0x61 if c in _AWS_ALPHABET else 0x20 for c in range(256))
_A40 = b"a" * 40
_B = r"[^\S\n]"  # a blank: the stock pattern's \s, short of the newline


def _has_run(text: str) -> bool:
    """Whether ``text`` holds 40 characters in a row of the AWS alphabet: two C-level passes,
    ~15x cheaper than the pattern's own search over text that holds none."""
    return _A40 in text.encode("utf-8", "surrogatepass").translate(_ALPHABET)


class Shape(NamedTuple):
    """A secret's shape: a match of ``pattern`` becomes ``***REDACTED***``, but for its groups
    ``lead`` (one that begins the match) and ``tail`` (one that ends it), kept (0: none).

    The pattern runs only over text that passes ``test`` or holds one of ``triggers`` (plain
    substrings; in the case-folded text when ``nocase``, as ``(?i)`` also matches ``ſ`` for
    ``s``), so the common line that holds no secret costs a few C-level scans, not every
    pattern. ``gate``: characters one of which every trigger holds, looked for first (a
    ``memchr`` each, once for all the shapes that share the gate)."""

    pattern: re.Pattern[str]
    lead: int = 0
    tail: int = 0
    triggers: tuple[str, ...] = ()
    nocase: bool = False
    gate: tuple[str, ...] = ()
    test: Callable[[str], bool] | None = None

    @property
    def replacement(self) -> str:
        return ((rf"\g<{self.lead}>" if self.lead else "") + REDACTED
                + (rf"\g<{self.tail}>" if self.tail else ""))


_KV = rf"""(?i)['"]?(?:{_NAMES})['"]?{_B}*[=:]{_B}*"""
_KV_TRIGGERS = ("passw", "secret", "key", "token")

_SHAPES: tuple[Shape, ...] = (
    Shape(re.compile(r"AKIA[0-9A-Z]{16}"), triggers=("AKIA",)),
    # a 40-character AWS secret after an assignment or a blank
    Shape(re.compile(r"(?<=[=:\s])(?<!\n)[A-Za-z0-9/+=]{40}(?=\s|$|['\",}])", re.M),
          test=_has_run),
    Shape(re.compile(rf"-----BEGIN{_B}(?:(?!\n)[\w\s])*PRIVATE KEY-----"),
          triggers=("-----BEGIN",)),
    Shape(re.compile(r"(://[^:/?#\s]+:)\S+(@)"), lead=1, tail=2, triggers=("://",)),
    Shape(re.compile(rf"(Bearer{_B}+)\S+"), lead=1, triggers=("Bearer",)),
    Shape(re.compile(rf"(Basic{_B}+)\S+"), lead=1, triggers=("Basic",)),
    *(Shape(re.compile(re.escape(prefix) + body), triggers=(prefix,), gate=("-", "_"))
      for prefix, body in _PREFIXES),
    Shape(re.compile(_KV + r"""[^\s'",}]+"""), triggers=_KV_TRIGGERS, nocase=True),
    Shape(re.compile(_KV + r"""(['"]).+?\1"""), triggers=_KV_TRIGGERS, nocase=True),
)


def api_key_from_env() -> str | None:
    """The Pluto API key this process's environment holds, if any."""
    for name in KEY_ENV:
        value = os.environ.get(name)
        if value:
            return value
    return None


def _sub_tracked(shape: Shape, text: str, origin: list[int], gone: bytearray) -> tuple[str, int]:
    """``shape.pattern.subn`` over ``text`` that also carries ``origin`` (each character's
    index in the text as printed; -1 for what a replacement wrote) through the change, and
    marks in ``gone`` the printed characters it removes."""
    parts: list[str] = []
    carried: list[int] = []
    last = n = 0
    for m in shape.pattern.finditer(text):
        n += 1
        cut = m.end(shape.lead) if shape.lead else m.start()
        stop = m.start(shape.tail) if shape.tail else m.end()
        for i in origin[cut:stop]:
            if i >= 0:
                gone[i] = 1
        parts += (text[last:cut], REDACTED)
        carried += origin[last:cut]
        carried += [-1] * len(REDACTED)
        last = stop
    if not n:
        return text, 0
    parts.append(text[last:])
    carried += origin[last:]
    origin[:] = carried
    return "".join(parts), n


class Redactor:
    """Replaces secrets in text with ``***REDACTED***``.

    ``shapes``: the stock SDK's token shapes (its ``sanitize_logs``, on by default); the API
    key's own value is redacted whatever ``shapes`` says.

    What is removed: the key; what the stock SDK's pass removes (its shapes in turn, each over
    what the previous left); and every match of any one shape in the text as printed, which
    that pass can miss where an earlier shape cut a later one's match short: in
    ``hf_abcdefghijklghp_<32 chars>`` the ``hf_`` token takes ``ghp``, and the stock SDK
    leaves the GitHub token's body. Where that adds nothing and the key is absent (all but
    such rare text), the result is the stock SDK's, character for character.
    """

    def __init__(self, api_key: str | None = None, shapes: bool = True) -> None:
        self._key = api_key if api_key and len(api_key) >= MIN_KEY_LEN else None
        self._shapes = _SHAPES if shapes else ()

    def text(self, text: str) -> str:
        """``text`` (one line or a block of whole lines) with every secret replaced."""
        key = self._key
        if key is not None and key in text:
            if "\n" in key:
                return self._masked(text, None, self._may_match(text))
            return "\n".join(self._masked(line, None, self._may_match(line)) if key in line
                             else self.text(line) for line in text.split("\n"))
        out, first = self._apply(text)
        if first is None:
            return out
        # No shape before ``first`` matched, and a replacement writes no trigger, no gate
        # character and no 40-character run (its "*"s stop them): a shape that matched in the
        # stock pass, or matches a line as printed, is ``first`` or may match ``text``.
        shapes = [self._shapes[first], *self._may_match(text, first + 1)]
        if len(shapes) == 1:  # the stock pass is that shape's own matches: nothing more
            return out
        # No pattern matches across a newline and none writes one: out's lines are text's.
        return "\n".join(self._masked(line, done, shapes) if done != line else line
                         for line, done in zip(text.split("\n"), out.split("\n"), strict=True))

    def _may_match(self, text: str, start: int = 0) -> list[Shape]:
        seen = _Scans(text)
        return [shape for shape in self._shapes[start:] if seen.may_match(shape)]

    def _apply(self, text: str) -> tuple[str, int | None]:
        """The shapes, in turn, over ``text``: the stock SDK's pass; and the index of the
        first shape that matched (None: none did)."""
        seen = _Scans(text)
        first = None
        for i, shape in enumerate(self._shapes):
            if not seen.may_match(shape):
                continue
            text, n = shape.pattern.subn(shape.replacement, text)
            if n:
                if first is None:
                    first = i
                seen = _Scans(text)
        return text, first

    def _masked(self, text: str, plain: str | None, shapes: list[Shape]) -> str:
        """``text`` where shapes matched (``plain``: the stock SDK's pass over it) or where the
        key is (``plain`` None): what the stock pass removes, every shape's own matches in
        ``text`` and the key, each run of removed characters one ``***REDACTED***``; ``plain``
        when that removes nothing more than it. ``shapes``: all that may match, in their
        order. Rare (a line holding secrets of two shapes, or the key): not fast."""
        size = len(text)
        gone = bytearray(size)
        origin = list(range(size))
        done = text
        for shape in shapes:
            done, _ = _sub_tracked(shape, done, origin, gone)
        more = False
        for shape in shapes:
            for m in shape.pattern.finditer(text):
                cut = m.end(shape.lead) if shape.lead else m.start()
                stop = m.start(shape.tail) if shape.tail else m.end()
                if gone.find(b"\0", cut, stop) >= 0:
                    gone[cut:stop] = b"\1" * (stop - cut)
                    more = True
        if plain is None:
            key = self._key
            assert key is not None
            at = text.find(key)
            while at >= 0:
                gone[at:at + len(key)] = b"\1" * len(key)
                at = text.find(key, at + 1)
        elif not more:
            return plain
        out: list[str] = []
        at = 0
        while at < size:
            removed = gone[at]
            end = gone.find(b"\0" if removed else b"\1", at)
            end = size if end < 0 else end
            out.append(REDACTED if removed else text[at:end])
            at = end
        return "".join(out)


class _Scans:
    """Which shapes may match one text: their tests and trigger scans, each gate's scan and
    the case-folded text made once for all the shapes that need them."""

    __slots__ = ("text", "folded", "gates")

    def __init__(self, text: str) -> None:
        self.text = text
        self.folded: str | None = None
        self.gates: dict[tuple[str, ...], bool] = {}

    def may_match(self, shape: Shape) -> bool:
        text = self.text
        if shape.test is not None:
            return shape.test(text)
        if shape.gate:
            open_ = self.gates.get(shape.gate)
            if open_ is None:
                open_ = self.gates[shape.gate] = any(c in text for c in shape.gate)
            if not open_:
                return False
        if shape.nocase:
            if self.folded is None:
                self.folded = text.casefold()
            text = self.folded
        return any(t in text for t in shape.triggers)
