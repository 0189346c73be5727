"""containerd's filter syntax (``filters`` package), as List receives it.

    labels."containerd.io/snapshot.ref"==sha256:ab,parent=="default/3/sha256:cd"

A filter is selectors joined by ',' (all must match); a request's filters
are alternatives (any may match; none means everything). A selector is a
field path (fields joined by '.', each a name or a "quoted" string), then
optionally an operator and a value: ``==``, ``!=``, or ``~=`` (a regular
expression, which may also be quoted /like this/). A path alone asks that
the field be present. Values match as containerd's do: ``==`` needs the
field present and equal, ``!=`` only unequal.
"""

from __future__ import annotations

import codecs
import dataclasses
import re
from collections.abc import Callable, Sequence

from ..errors import InvalidArgument

Fields = Callable[[list[str]], tuple[str, bool]]  # field path -> (value, present)
_NAME = re.compile(r"[A-Za-z0-9_-]+")


@dataclasses.dataclass(frozen=True)
class Selector:
    path: tuple[str, ...]
    operator: str | None = None  # None: present; "==", "!=", "~="
    value: str = ""

    def match(self, fields: Fields) -> bool:
        value, present = fields(list(self.path))
        if self.operator is None:
            return present
        if self.operator == "==":
            return present and value == self.value
        if self.operator == "!=":
            return value != self.value
        return re.search(self.value, value) is not None


class _Reader:
    def __init__(self, text: str) -> None:
        self.text, self.pos = text, 0

    def fail(self, what: str) -> InvalidArgument:
        return InvalidArgument(f"filter {self.text!r}: {what} at {self.pos}")

    def peek(self, n: int = 1) -> str:
        return self.text[self.pos:self.pos + n]

    def quoted(self, quote: str) -> str:
        start = self.pos
        self.pos += 1
        while self.pos < len(self.text) and self.text[self.pos] != quote:
            self.pos += 2 if self.text[self.pos] == "\\" else 1
        if self.pos >= len(self.text):
            raise self.fail("an unterminated quote")
        inner = self.text[start + 1:self.pos]
        self.pos += 1
        try:
            return codecs.decode(inner, "unicode_escape") if "\\" in inner else inner
        except UnicodeDecodeError:
            raise self.fail("a bad escape") from None

    def field(self) -> str:
        if self.peek() == '"':
            return self.quoted('"')
        match = _NAME.match(self.text, self.pos)
        if not match:
            raise self.fail("a field name or a quoted string expected")
        self.pos = match.end()
        return match.group()

    def value(self, regex: bool) -> str:
        if self.peek() == '"' or (regex and self.peek() == "/"):
            return self.quoted(self.peek())
        end = self.text.find(",", self.pos)
        end = len(self.text) if end < 0 else end
        value, self.pos = self.text[self.pos:end], end
        return value


def parse(text: str) -> list[Selector]:
    """One filter: its selectors, all of which must match."""
    reader = _Reader(text.strip())
    selectors = []
    while True:
        path = [reader.field()]
        while reader.peek() == ".":
            reader.pos += 1
            path.append(reader.field())
        operator = reader.peek(2)
        if operator in ("==", "!=", "~="):
            reader.pos += 2
            value = reader.value(operator == "~=")
            if operator == "~=":
                try:
                    re.compile(value)
                except re.error as e:
                    raise reader.fail(f"a bad regular expression ({e})") from None
            selectors.append(Selector(tuple(path), operator, value))
        else:
            selectors.append(Selector(tuple(path)))
        if reader.pos == len(reader.text):
            return selectors
        if reader.peek() != ",":
            raise reader.fail("',' or the end expected")
        reader.pos += 1


def matcher(filters: Sequence[str]) -> Callable[[Fields], bool]:
    """Any of the filters (each all of its selectors); no filter matches everything."""
    parsed = [parse(f) for f in filters if f.strip()]

    def match(fields: Fields) -> bool:
        return not parsed or any(all(s.match(fields) for s in selectors)
                                 for selectors in parsed)
    return match
