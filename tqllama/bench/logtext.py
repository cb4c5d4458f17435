"""What every log parser shares: the typed parse error and the complete-lines rule."""

from __future__ import annotations

import re

from tqllama.errors import TqError

# A decimal as llama.cpp prints it with %f / %lf (also nan / inf after a numeric blow-up).
NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+|nan|inf)"

# llama.cpp prints uncertainties with "±"; logs that went through a non-UTF-8 pipe or a
# user's copy carry "+/-" or the mojibake of ± instead.
PLUS_MINUS = r"(?:±|\+/-|Â±)"


class ParseError(TqError):
    """A log or report that is truncated, from a crashed run, or not what the parser reads."""


def complete_text(text: str) -> str:
    """`text` up to its last newline.

    A run cut off mid-write leaves a half line ("Mean    KLD:   0.04" of "0.045822");
    reading it would yield a wrong number, so parsers only see finished lines.
    """
    end = text.rfind("\n")
    return text[: end + 1] if end >= 0 else ""


def search_line(pattern: str, text: str, what: str) -> re.Match[str]:
    """The first match of `pattern` inside one finished line of `text`; ParseError if none."""
    match = re.search(pattern + r"[ \t]*\r?$", text, re.MULTILINE)
    if match is None:
        raise ParseError(f"no {what} in the log: the run was cut short or crashed; rerun it")
    return match
