"""Redaction removes at least what the stock SDK's ``sanitize_logs`` removes, on any line.

The reference is the installed stock SDK itself (``pluto.sanitize.SecretSanitizer``, what its
console capture calls on each line). Lines are built from its shapes with random bodies,
glued to each other or spaced with random text; for each secret put in a line, no part of it
that the stock SDK removes may survive in ours. A part is compared as text: what is in
neither the line's stock output nor ours was removed by both. That is sound because both only
ever replace characters with ``***REDACTED***`` and the lines hold no ``*``: a piece of a
secret in our output, but nowhere in the stock one, is characters the stock SDK removed and
we kept.
"""

from __future__ import annotations

import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pluto.sanitize import SecretSanitizer

from pluto_offline.console.redact import REDACTED, Redactor

STOCK = SecretSanitizer()
PROPERTY = settings(max_examples=600, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])

ALNUM = string.ascii_letters + string.digits
BLANKS = [" ", "\t", "  ", "\r", "\xa0", "\x0b", " \t"]
NAMES = ["password", "passwd", "secret", "secret_key", "api_key", "apikey", "access_token",
         "auth_token", "token", "db_password", "client_secret"]
PREFIXES = ["sk-", "sk_live_", "sk_test_", "hf_", "ghp_", "gho_", "glpat-", "xoxb-", "xoxp-",
            "mlpi_", "pypi-", "npm_"]
TEXT = ALNUM + " \t\r\xa0=:'\",}{@/_-.+#?é→"  # no "*" (see the module's docstring), no "\n"
SEPARATORS = ["", "", "", " ", "\t", "=", ":", ",", "'", "@", "_", "-", "/", "\n"]


def stock(text: str) -> str:
    """What the stock SDK journals of ``text``: it sanitizes one line at a time."""
    return "\n".join(STOCK.sanitize(line) for line in text.split("\n"))


def kept_of_what_stock_removes(text: str, secrets: list[str], ours: str) -> list[str]:
    """The pieces of ``secrets`` that ``ours`` (our redaction of ``text``) still holds though
    the stock SDK's redaction of ``text`` holds them nowhere."""
    theirs = stock(text)
    return [piece for secret in secrets
            for size in range(1, len(secret) + 1)
            for start in range(len(secret) - size + 1)
            if (piece := secret[start:start + size]) not in REDACTED
            and piece not in theirs and piece in ours]


def _text(alphabet: str, low: int, high: int) -> st.SearchStrategy[str]:
    return st.text(alphabet=alphabet, min_size=low, max_size=high)


def _any_case(name: str, flips: list[bool]) -> str:
    return "".join(c.upper() if flip else c for c, flip in zip(name, flips, strict=False))


# each a (text put in the line, the secret in it)
_AKIA = _text(string.ascii_uppercase + string.digits, 14, 18).map(lambda b: ("AKIA" + b,) * 2)
_AWS = _text(ALNUM + "/+=", 38, 42).map(lambda b: (b, b))
_PEM = st.builds(lambda blank, kind: (f"-----BEGIN{blank}{kind}PRIVATE KEY-----",) * 2,
                 st.sampled_from(BLANKS), _text(ALNUM + " ", 0, 8))
_URL = st.builds(lambda scheme, user, pw, rest: (f"{scheme}://{user}:{pw}@{rest}", pw),
                 st.sampled_from(["postgres", "redis", "https", "s3"]), _text(ALNUM, 1, 6),
                 _text(ALNUM + "@:/#%!._-", 1, 14), _text(ALNUM + "@:/._-", 0, 10))
_AUTH = st.builds(lambda word, blank, cred: (f"{word}{blank}{cred}", cred),
                  st.sampled_from(["Bearer", "Basic"]), st.sampled_from(BLANKS),
                  _text(ALNUM + "._-=+/@:", 1, 24))
_TOKEN = st.builds(lambda prefix, body: (prefix + body,) * 2,
                   st.sampled_from(PREFIXES), _text(ALNUM + "_-", 6, 36))
_ASSIGNMENT = st.builds(
    lambda quote, name, flips, ess, before, op, after, value, vquote: (
        f"{quote}{_any_case(name, flips).replace('s', ess)}{quote}{before}{op}{after}"
        f"{vquote}{value}{vquote}", value),
    st.sampled_from(["", "'", '"']), st.sampled_from(NAMES),
    st.lists(st.booleans(), min_size=13, max_size=13), st.sampled_from(["s", "s", "s", "ſ"]),
    st.sampled_from(["", "", " ", "\t", "\xa0"]), st.sampled_from(["=", ":"]),
    st.sampled_from(["", "", " ", "\r", "\xa0"]), _text(ALNUM + " .:=@/-_", 1, 14),
    st.sampled_from(["", "", "'", '"']))
SECRET = st.one_of(_AKIA, _AWS, _PEM, _URL, _AUTH, _TOKEN, _ASSIGNMENT)
PIECE = st.one_of(SECRET, SECRET, _text(TEXT, 0, 12).map(lambda t: (t, None)))


@st.composite
def lines(draw: st.DrawFn) -> tuple[str, list[str]]:
    """A line (or a few: separators include the newline) and the secrets put in it."""
    pieces = draw(st.lists(PIECE, min_size=1, max_size=8))
    text = ""
    for i, (piece, _) in enumerate(pieces):
        text += (draw(st.sampled_from(SEPARATORS)) if i else "") + piece
    return text, [secret for _, secret in pieces if secret]


def test_a_url_password_holding_an_at_sign_is_redacted_to_its_last_at():
    line = "x=postgres://u:p@ss@h/db"
    assert Redactor().text(line) == stock(line) == f"x=postgres://u:{REDACTED}@h/db"
    assert Redactor().text("redis://bob:a@b@c@cache:6379 ok") == f"redis://bob:{REDACTED}@cache:6379 ok"


def test_a_token_glued_onto_another_is_redacted_with_it():
    ghp = "ghp_" + "d" * 32
    line = "mlpi_abcdefghijkl" + ghp  # the stock SDK's ghp_ pattern runs before its mlpi_ one
    assert Redactor().text(line) == stock(line) == REDACTED * 2
    assert Redactor().text("token hf_abcdefghijkl,sk-" + "a" * 24) == f"token {REDACTED},{REDACTED}"
    # the other way round the stock SDK leaves the second token's body: hf_ takes "ghp"
    for line in ["hf_abcdefghijkl" + ghp, "mlpi_abcdefghijklnpm_" + "n" * 24]:
        assert "ddd" in stock(line) or "nnn" in stock(line)
        assert Redactor().text(line) == REDACTED, line


def test_blanks_and_letters_the_stock_patterns_accept_are_accepted():
    """The stock ``\\s`` is any whitespace (``\\r``, ``\\xa0``...) and its ``(?i)`` takes ``ſ`` for
    ``s``; a block's newline still ends each line's matches."""
    for line, want in [("Bearer\xa0tok3n", f"Bearer\xa0{REDACTED}"), ("paſſword=hunter2", REDACTED),
                       ("token:\rabc", REDACTED), ("id\x1c" + "Q" * 40, f"id\x1c{REDACTED}"),
                       ("-----BEGIN\xa0EC PRIVATE KEY-----", REDACTED)]:
        assert Redactor().text(line) == stock(line) == want, line
    assert Redactor().text("Bearer\nabc\npassword=\nx") == "Bearer\nabc\npassword=\nx"


@PROPERTY
@given(lines())
def test_no_secret_the_stock_sdk_removes_survives(line):
    text, secrets = line
    ours = Redactor().text(text)
    assert kept_of_what_stock_removes(text, secrets, ours) == [], (text, stock(text), ours)


@PROPERTY
@given(lines(), _text(ALNUM + "_-", 8, 20), st.integers(min_value=0, max_value=200),
       st.sampled_from(["", " ", "=", "_"]))
def test_with_the_key_in_the_line_nothing_stock_removes_survives_either(line, key, at, glue):
    """The key's own redaction must not shield what the stock SDK would remove around it
    (``hf_`` glued to the key, a 40-character run the key is part of...)."""
    text, secrets = line
    at = min(at, len(text))
    text = text[:at] + glue + key + glue + text[at:]
    ours = Redactor(api_key=key).text(text)
    assert key not in ours
    assert kept_of_what_stock_removes(text, secrets, ours) == [], (text, stock(text), ours)


def test_with_the_key_glued_into_a_secret_the_secret_goes_whole():
    key = "abcdefgh1234"
    for line in ["hf_" + key + "tail5678", "k=" + key + "Z" * 28, "Bearer " + key + "@x"]:
        ours = Redactor(api_key=key).text(line)
        assert key not in ours and "tail" not in ours and "ZZ" not in ours and "@x" not in ours
    assert Redactor(api_key=key).text(f"id {key} and hf_{key}x") == f"id {REDACTED} and {REDACTED}"
