"""sbrrepro.errors: a UserError reads `file: field 'f': message` on one line whatever its parts hold
(control characters and line separators escaped as Python writes them), and keeps its parts as given."""

from __future__ import annotations

import pytest

from sbrrepro.errors import UserError


def test_message_names_file_and_field() -> None:
    e = UserError("plans/t.yaml", "rows[0].model", "unknown model 'x'")
    assert str(e) == "plans/t.yaml: field 'rows[0].model': unknown model 'x'"
    assert e.args == (str(e),)  # what a traceback or a logger prints is the same line
    assert isinstance(e, Exception)


@pytest.mark.parametrize("field", [None, ""])
def test_no_field_no_field_part(field: str | None) -> None:
    assert str(UserError("command line", field, "--steps must be at least 1")) == \
        "command line: --steps must be at least 1"


@pytest.mark.parametrize("char, shown", [
    ("\n", r"\n"), ("\r", r"\r"), ("\t", r"\t"), ("\x00", r"\x00"), ("\x0b", r"\x0b"), ("\x0c", r"\x0c"),
    ("\x1b", r"\x1b"), ("\x1c", r"\x1c"), ("\x1e", r"\x1e"), ("\x7f", r"\x7f"), ("\x85", r"\x85"),
    ("\x9f", r"\x9f"), ("\u2028", r"\u2028"), ("\u2029", r"\u2029"),
])
def test_control_characters_escaped_in_every_part(char: str, shown: str) -> None:
    """A name or value with a line break, a terminal escape or a NUL prints as its escape, in the file's
    name, the field and the message alike; the error keeps the raw parts."""
    e = UserError(f"a{char}.yaml", f"f{char}", f"bad {char}value")
    assert str(e) == f"a{shown}.yaml: field 'f{shown}': bad {shown}value"
    assert (e.where, e.field, e.message) == (f"a{char}.yaml", f"f{char}", f"bad {char}value")


def test_printable_text_kept() -> None:
    """Non-ASCII text that prints (accents, the verdict symbols, CJK) and backslashes are left as they are."""
    text = "résumé ✓ ≈ 数据 C:\\data \\n"
    assert str(UserError(text, None, text)) == f"{text}: {text}"


def test_no_code_point_breaks_the_line() -> None:
    """Every code point of the BMP at once (where every control character and line break is; surrogates
    aside): the message is one line, with no control character."""
    every = "".join(chr(c) for c in range(0x10000) if not 0xD800 <= c <= 0xDFFF)
    line = str(UserError("f", "g", every))
    assert len(line.splitlines()) == 1
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in line)
