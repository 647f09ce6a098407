"""What a console line is, and what is redacted from it (pure functions over real text)."""

from __future__ import annotations

from pluto_offline.console import enabled
from pluto_offline.console.lines import MAX_LINE, LineSplitter
from pluto_offline.console.redact import REDACTED, Redactor
from pluto_offline.console.sink import LogSink


def test_lines_split_across_reads_and_multibyte_characters_stay_whole():
    s = LineSplitter()
    data = "naïve → ok\nsecond\n".encode()
    got = [line for i in range(len(data)) for line in s.feed(data[i:i + 1])]
    assert got == ["naïve → ok", "second"]
    assert s.feed(b"\xff bad byte\n") == ["\ufffd bad byte"]


def test_progress_bars_colours_and_empty_lines_are_journaled_as_shown():
    s = LineSplitter()
    assert s.feed(b"\x1b[1;31mred\x1b[0m\n\n  \r10%\r100%\r\nend") == ["red", "100%"]
    assert s.end() == ["end"]


def test_a_long_line_is_cut_at_blanks_and_a_secret_in_it_is_still_redacted():
    key = "k" * 40 + "SECRET"
    s = LineSplitter(Redactor(api_key=key).text)
    words = ("word " * (MAX_LINE // 5)).encode()
    out = s.feed(words + key.encode() + b" " + words) + s.feed(b"\n")
    assert all(len(line) <= MAX_LINE for line in out)
    assert key not in "".join(out) and REDACTED in "".join(out)


def test_the_key_is_redacted_even_with_the_token_shapes_off():
    r = Redactor(api_key="abcdefgh12345678", shapes=False)
    assert r.text("k=abcdefgh12345678 hf_abcdefghijklmnop") == f"k={REDACTED} hf_abcdefghijklmnop"
    assert Redactor(api_key="short").text("short words") == "short words"


def test_the_stock_shapes_are_redacted_line_by_line_in_a_block():
    text = ("aws AKIAABCDEFGHIJKLMNOP\n-----BEGIN RSA PRIVATE KEY-----\n"
            "token: abc123\nBasic dXNlcjpwYXNz\nnpm_abcdefghijklmnopqrstu\nfine line\n")
    assert Redactor().text(text).split("\n") == [
        f"aws {REDACTED}", REDACTED, REDACTED, f"Basic {REDACTED}", REDACTED, "fine line", ""]


def test_the_setting_wins_over_the_env_var(monkeypatch):
    monkeypatch.setenv("PLUTO_DISABLE_CONSOLE", "1")
    assert not enabled(None) and enabled({"disable_console": False})
    monkeypatch.setenv("PLUTO_DISABLE_CONSOLE", "0")
    assert enabled({}) and not enabled({"disable_console": True})


def test_a_journal_the_helper_cannot_open_is_said_once_and_lines_are_not_kept(tmp_path, capfd):
    sink = LogSink(str(tmp_path / "nowhere"), 1)
    sink.add(["a line"], "INFO")
    sink.add(["another"], "INFO")
    assert sink.pending == [] and sink.commit()
    sink.close()
    err = capfd.readouterr().err
    assert err.count("pluto_offline console: cannot open the journal") == 1
