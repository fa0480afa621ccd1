"""os-release(5), parsed: text in, fields out. Pure and bounded; the host reader supplies the (already bounded) text.

The file is shell-like: `KEY=value` lines, the value bare or in single or double quotes, `#` comments and blank lines.
Within double quotes a backslash escapes `$`, `"`, `\\`, and the backtick (and is kept before anything else); a
bare value ends at whitespace and a backslash escapes the next character; single quotes keep everything. Pieces
next to each other join, as in the shell (`"a"'b'c` is `abc`). Spaces around `=` are tolerated (falcoctl's tests
write them). A line the rules cannot read (an unterminated quote, no `=`) is skipped and reported; it never costs
the other lines. Keys are upper-cased; the last assignment of a key wins.
"""

from __future__ import annotations

import re
from typing import Dict, List, NamedTuple, Optional, Tuple

# Bounds for hostile content: at most this much text is looked at, this many fields kept, and a value longer than
# this (real ones are well under 256 characters) is dropped rather than cut, so a cut value can never pass for another.
MAX_TEXT = 64 * 1024
MAX_FIELDS = 256
MAX_VALUE = 1024
_MAX_PROBLEMS = 20

_ASSIGNMENT = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)[ \t]*=[ \t]*")
_DOUBLE_QUOTE_ESCAPES = frozenset('$"\\`')
_BLANK = " \t\r\f\v"


class OsRelease(NamedTuple):
    fields: Dict[str, str]
    problems: Tuple[str, ...] = ()  # the lines that were skipped, and why


def parse_os_release(text: str) -> OsRelease:
    """The fields of an os-release file, and what could not be read."""
    fields: Dict[str, str] = {}
    problems: List[str] = []
    if len(text) > MAX_TEXT:
        problems.append(f"only the first {MAX_TEXT} characters were read")
        text = text[:MAX_TEXT]
    for number, line in enumerate(text.split("\n"), start=1):
        stripped = line.strip(_BLANK)
        if not stripped or stripped.startswith("#"):
            continue
        try:
            assignments = _parse_line(stripped)
        except ValueError as exc:
            if len(problems) < _MAX_PROBLEMS:
                problems.append(f"line {number}: {exc}")
            continue
        for key, value in assignments:
            if len(value) > MAX_VALUE:
                if len(problems) < _MAX_PROBLEMS:
                    problems.append(f"line {number}: the value of {key} is longer than {MAX_VALUE} characters")
                continue
            if key not in fields and len(fields) >= MAX_FIELDS:
                if len(problems) < _MAX_PROBLEMS:
                    problems.append(f"line {number}: more than {MAX_FIELDS} fields; the rest are ignored")
                return OsRelease(fields, tuple(problems))
            fields[key] = value
    return OsRelease(fields, tuple(problems))


def _parse_line(line: str) -> List[Tuple[str, str]]:
    """The assignments on one line (normally one). Words that are not assignments are ignored, as a shell would
    treat them as a command; a `#` at the start of a word ends the line."""
    assignments = []
    position = 0
    while position < len(line):
        if line[position] in _BLANK:
            position += 1
            continue
        if line[position] == "#":
            break
        match = _ASSIGNMENT.match(line, position)
        if match is None:
            _, position = _word(line, position)  # not an assignment (`export`, a stray word): skipped
            continue
        value, position = _word(line, match.end())
        assignments.append((match.group(1).upper(), value))
    if not assignments:
        raise ValueError("no KEY=value assignment")
    return assignments


def _word(line: str, position: int) -> Tuple[str, int]:
    """One shell word starting at `position`: its value, and where it ends."""
    out: List[str] = []
    quote: Optional[str] = None
    while position < len(line):
        char = line[position]
        if quote is None:
            if char in _BLANK:
                break
            if char in ("'", '"'):
                quote = char
            elif char == "\\":
                position += 1
                if position < len(line):
                    out.append(line[position])
            else:
                out.append(char)
        elif char == quote:
            quote = None
        elif quote == '"' and char == "\\" and position + 1 < len(line) and line[position + 1] in _DOUBLE_QUOTE_ESCAPES:
            position += 1
            out.append(line[position])
        else:
            out.append(char)
        position += 1
    if quote is not None:
        raise ValueError(f"unterminated {quote} quote")
    return "".join(out), position
