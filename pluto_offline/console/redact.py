"""Secrets taken out of console lines before they are journaled.

The shapes are the stock SDK's ``sanitize_logs`` (``pluto/sanitize.py`` in pluto-ml 0.0.29):
AWS keys, private key headers, passwords in URLs, ``Bearer``/``Basic`` credentials, known
token prefixes (OpenAI ``sk-``, Hugging Face ``hf_``, GitHub ``ghp_``, Pluto ``mlpi_``, ...) and
``password=`` / ``api_key: "..."`` assignments. On top of them, and always (even with
``sanitize_logs`` off), the value of ``PLUTO_API_KEY`` (or its deprecated twin
``MLOP_API_TOKEN``) wherever it appears: the key must never reach the journal or the server.

Patterns run over a block of whole lines at once (one C-level pass each), so none of them may
match across a newline: whitespace in them is ``[ \\t]``, never ``\\s``.

>>> Redactor(api_key="k3y-abcdefgh").text("key=k3y-abcdefgh, Bearer eyJhbGc")
'key=***REDACTED***, Bearer ***REDACTED***'
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import NamedTuple

REDACTED = "***REDACTED***"
KEY_ENV = ("PLUTO_API_KEY", "MLOP_API_TOKEN")
MIN_KEY_LEN = 8  # a shorter "key" would redact ordinary words

_NAMES = ("password|passwd|secret|secret_key|api_key|apikey|access_token|auth_token|token|"
          "db_password|client_secret")
_PREFIXES = (
    r"sk-[A-Za-z0-9_-]{20,}", r"sk_live_[A-Za-z0-9]{20,}", r"sk_test_[A-Za-z0-9]{20,}",
    r"hf_[A-Za-z0-9]{10,}", r"ghp_[A-Za-z0-9]{30,}", r"gho_[A-Za-z0-9]{30,}",
    r"glpat-[A-Za-z0-9_-]{20,}", r"xoxb-[A-Za-z0-9-]{20,}", r"xoxp-[A-Za-z0-9-]{20,}",
    r"mlpi_[A-Za-z0-9]{10,}", r"pypi-[A-Za-z0-9]{10,}", r"npm_[A-Za-z0-9]{20,}",
)
_AWS_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789/+="
# bytes of the AWS alphabet -> "a", every other byte (so every non-ASCII character) -> " "
_ALPHABET = bytes(0x61 if c in _AWS_ALPHABET else 0x20 for c in range(256))
_A40 = b"a" * 40


def _has_run(text: str) -> bool:
    """Whether ``text`` holds 40 characters in a row of the AWS alphabet: two C-level passes,
    ~15x cheaper than the pattern's own search over text that holds none."""
    return _A40 in text.encode("utf-8", "surrogatepass").translate(_ALPHABET)


class Shape(NamedTuple):
    """A secret's shape. Its pattern runs only over text that passes ``test`` or holds one
    of ``triggers`` (plain substrings; in the lower-cased text when ``nocase``), so the common
    line that holds no secret costs a few C-level scans, not every pattern. ``gate``: characters
    one of which every trigger holds, looked for first (a ``memchr`` each)."""

    pattern: re.Pattern[str]
    replacement: str
    triggers: tuple[str, ...] = ()
    nocase: bool = False
    gate: tuple[str, ...] = ()
    test: Callable[[str], bool] | None = None


_SHAPES: tuple[Shape, ...] = (
    Shape(re.compile(r"AKIA[0-9A-Z]{16}"), REDACTED, ("AKIA",)),
    # a 40-character AWS secret after an assignment or a blank
    Shape(re.compile(r"(?<=[=: \t])[A-Za-z0-9/+=]{40}(?=[ \t'\",}]|$)", re.M), REDACTED,
          test=_has_run),
    Shape(re.compile(r"-----BEGIN[ \t][\w \t]*PRIVATE KEY-----"), REDACTED, ("-----BEGIN",)),
    Shape(re.compile(r"(://[^:/?#\s]+:)[^\s@]+(@)"), rf"\1{REDACTED}\2", ("://",)),
    Shape(re.compile(r"((?:Bearer|Basic)[ \t]+)[^\s]+"), rf"\1{REDACTED}", ("Bearer", "Basic")),
    Shape(re.compile("|".join(_PREFIXES)), REDACTED,
          ("sk-", "sk_", "hf_", "ghp_", "gho_", "glpat-", "xox", "mlpi_", "pypi-", "npm_"),
          gate=("-", "_")),  # (xox: its patterns are xoxb- and xoxp-)
    Shape(re.compile(rf"""(?i)['"]?(?:{_NAMES})['"]?[ \t]*[=:][ \t]*(['"])[^\n]*?\1"""),
          REDACTED, ("passw", "secret", "key", "token"), nocase=True),
    Shape(re.compile(rf"""(?i)['"]?(?:{_NAMES})['"]?[ \t]*[=:][ \t]*[^\s'",}}]+"""), REDACTED,
          ("passw", "secret", "key", "token"), nocase=True),
)


def api_key_from_env() -> str | None:
    """The Pluto API key this process's environment holds, if any."""
    for name in KEY_ENV:
        value = os.environ.get(name)
        if value:
            return value
    return None


class Redactor:
    """Replaces secrets in text with ``***REDACTED***``.

    ``shapes``: the stock SDK's token shapes (its ``sanitize_logs``, on by default); the API
    key's own value is redacted whatever ``shapes`` says.
    """

    def __init__(self, api_key: str | None = None, shapes: bool = True) -> None:
        self._key = api_key if api_key and len(api_key) >= MIN_KEY_LEN else None
        self._shapes = _SHAPES if shapes else ()

    def text(self, text: str) -> str:
        """``text`` (one line or a block of whole lines) with every secret replaced."""
        if self._key is not None and self._key in text:
            text = text.replace(self._key, REDACTED)
        lower = None
        for shape in self._shapes:
            if shape.test is not None:
                if not shape.test(text):
                    continue
            elif shape.gate and not any(c in text for c in shape.gate):
                continue
            else:
                if shape.nocase and lower is None:
                    lower = text.lower()
                haystack = lower if shape.nocase else text
                if not any(t in haystack for t in shape.triggers):
                    continue
            text = shape.pattern.sub(shape.replacement, text)
            lower = None  # the text changed
        return text
