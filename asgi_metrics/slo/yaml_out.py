"""A small YAML writer for the generated files: block style, comments, literal (``|``)
and folded (``>-``) scalars, and plain scalars only where no YAML 1.1 reader (Prometheus,
promtool, PyYAML) could take them for anything but the same string.

A writer of our own rather than a dependency: the package needs only prometheus_client,
and the shipped rules file keeps its comments.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

INDENT = "  "


@dataclass(frozen=True)
class Literal:
    """A ``|`` block: the text as it is, line by line (a final newline is kept)."""

    text: str


@dataclass(frozen=True)
class Folded:
    """A ``>-`` block: the lines joined by single spaces, no final newline."""

    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return " ".join(self.lines)


@dataclass(frozen=True)
class Commented:
    """A list item or a mapping value with comment lines above it (``""``: a blank line)."""

    comment: tuple[str, ...]
    value: object


class Spaced(list[object]):
    """A list whose items are separated by a blank line."""


# Strings a YAML 1.1 resolver reads as something else (booleans, null, numbers, dates,
# merge and value keys) start like this, or are one of these words.
_SPECIAL_START = re.compile(r"[-+.0-9]|[\-?:,\[\]{}#&*!|>'\"%@`~=<]")
_SPECIAL_WORDS = {"y", "n", "yes", "no", "true", "false", "on", "off", "null"}
_DURATION = re.compile(r"[0-9]+(ms|[smhdwy])")
_PRINTABLE = re.compile(r"[\x20-\x7e]+")


def _plain_ok(text: str) -> bool:
    if not text or text != text.strip() or not _PRINTABLE.fullmatch(text):
        return False
    if _DURATION.fullmatch(text):
        return True  # "5m": no YAML type matches it
    if _SPECIAL_START.match(text) or text.lower() in _SPECIAL_WORDS:
        return False
    return ": " not in text and " #" not in text and not text.endswith(":")


def quoted(text: str) -> str:
    """``text`` as a YAML double-quoted scalar."""
    out = []
    for char in text:
        code = ord(char)
        if char in '"\\':
            out.append("\\" + char)
        elif 0x20 <= code <= 0x7E:
            out.append(char)
        elif code <= 0xFF:
            out.append(f"\\x{code:02x}")
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return '"' + "".join(out) + '"'


def scalar(value: object) -> str:
    """One scalar, on one line."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, Decimal)):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        # Templates ("{{ $labels.job }}") are quoted by convention, though plain would do.
        return value if _plain_ok(value) and "{{" not in value else quoted(value)
    raise TypeError(f"cannot write {value!r} as a YAML scalar")


def _block(indicator: str, text: str, indent: str) -> list[str]:
    lines = text.splitlines()
    # A block whose first line starts with a space needs an explicit indentation
    # indicator; our texts never do, so refuse instead of writing something subtle.
    assert lines and not lines[0].startswith(" "), text
    return [indicator] + [f"{indent}{line}" if line else "" for line in lines]


def _comment(lines: Sequence[str], indent: str) -> list[str]:
    return [f"{indent}# {line}".rstrip() if line else "" for line in lines]


def _value(value: object, indent: str) -> tuple[str, list[str]]:
    """What follows ``key:`` on its line, and the lines below it."""
    if isinstance(value, Literal):
        head, *rest = _block("|", value.text, indent + INDENT)
        return " " + head, rest
    if isinstance(value, Folded):
        head, *rest = _block(">-", "\n".join(value.lines), indent + INDENT)
        return " " + head, rest
    if isinstance(value, Mapping):
        if not value:
            return " {}", []
        return "", _mapping(value, indent + INDENT)
    if isinstance(value, (list, tuple)):
        if not value:
            return " []", []
        return "", _sequence(value, indent + INDENT)
    return " " + scalar(value), []


def _mapping(mapping: Mapping[str, object], indent: str) -> list[str]:
    lines: list[str] = []
    for key, value in mapping.items():
        assert _plain_ok(key), key
        if isinstance(value, Commented):
            lines.extend(_comment(value.comment, indent))
            value = value.value
        head, rest = _value(value, indent)
        lines.append(f"{indent}{key}:{head}")
        lines.extend(rest)
    return lines


def _sequence(items: Sequence[object], indent: str) -> list[str]:
    lines: list[str] = []
    for number, item in enumerate(items):
        if number and isinstance(items, Spaced):
            lines.append("")
        if isinstance(item, Commented):
            lines.extend(_comment(item.comment, indent))
            item = item.value
        if isinstance(item, Mapping) and item:
            # "- " then the mapping's first line; the other keys line up under it.
            body = _mapping(item, indent + INDENT)
            lines.append(f"{indent}- {body[0][len(indent) + len(INDENT):]}")
            lines.extend(body[1:])
        elif isinstance(item, (Mapping, list, tuple, Literal, Folded)):
            head, rest = _value(item, indent)
            lines.append(f"{indent}-{head}")
            lines.extend(rest)
        else:
            lines.append(f"{indent}- {scalar(item)}")
    return lines


def dump(document: Mapping[str, object], *, header: Sequence[str] = ()) -> str:
    """The document as YAML text, after the ``header`` comment lines (``""``: a bare
    ``#`` line)."""
    top = [f"# {line}" if line else "#" for line in header]
    return "\n".join([*top, *_mapping(document, "")]) + "\n"
