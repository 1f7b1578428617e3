"""Where things are in a TOML file: line and column of every key and value.

``tomllib`` parses but gives no positions, and errors must point at the
character. ``scan`` walks a file that ``tomllib`` has already accepted and
records, for every key path (``("rule", 2, "when")``, ``("rule", 0, "on", 1)``),
where its key and value start, and for a string value where each decoded
character came from, so that a column inside an expression maps back to the
file through escapes and multi-line strings.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

PathKey = tuple[str | int, ...]
Pos = tuple[int, int]  # 1-based line, column


@dataclass(frozen=True, slots=True)
class Span:
    key: Pos  # where the key (or table header) starts
    value: Pos  # where the value starts
    # For strings: position of each decoded character, then one past the end.
    chars: tuple[Pos, ...] | None = None

    def char(self, index: int) -> Pos:
        """Where the decoded character ``index`` sits (clamped to the string)."""
        if not self.chars:
            return self.value
        return self.chars[min(max(index, 0), len(self.chars) - 1)]


_BARE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_ESCAPES = {"b": "\b", "t": "\t", "n": "\n", "f": "\f", "r": "\r", '"': '"', "\\": "\\"}


class _Scanner:
    def __init__(self, text: str) -> None:
        self.text = text
        self.i = 0
        self.starts = [0]
        for k, c in enumerate(text):
            if c == "\n":
                self.starts.append(k + 1)
        self.spans: dict[PathKey, Span] = {}
        self.aot_count: dict[PathKey, int] = {}

    def pos(self, index: int) -> Pos:
        line = bisect.bisect_right(self.starts, index) - 1
        return line + 1, index - self.starts[line] + 1

    def peek(self, n: int = 1) -> str:
        return self.text[self.i : self.i + n]

    def skip_ws(self, newlines: bool = False) -> None:
        t = self.text
        while self.i < len(t):
            c = t[self.i]
            if c in " \t" or (newlines and c in "\r\n"):
                self.i += 1
            elif c == "#" and newlines:
                while self.i < len(t) and t[self.i] != "\n":
                    self.i += 1
            else:
                return

    def skip_line(self) -> None:
        self.skip_ws()
        if self.peek() == "#":
            while self.i < len(self.text) and self.text[self.i] != "\n":
                self.i += 1

    # -- document --------------------------------------------------------------

    def document(self) -> dict[PathKey, Span]:
        table: PathKey = ()
        while True:
            self.skip_ws(newlines=True)
            if self.i >= len(self.text):
                return self.spans
            start = self.i
            if self.peek(2) == "[[":
                self.i += 2
                keys = self.keys()
                self.i += 2  # "]]"
                table = self.resolve(keys, aot=True)
                self.spans[table] = Span(self.pos(start), self.pos(start))
            elif self.peek() == "[":
                self.i += 1
                keys = self.keys()
                self.i += 1  # "]"
                table = self.resolve(keys, aot=False)
                self.spans.setdefault(table, Span(self.pos(start), self.pos(start)))
            else:
                self.key_value(table)
            self.skip_line()

    def resolve(self, keys: list[str], aot: bool) -> PathKey:
        path: list[str | int] = []
        for n, key in enumerate(keys):
            path.append(key)
            here = tuple(path)
            if aot and n == len(keys) - 1:
                count = self.aot_count.get(here, 0)
                self.aot_count[here] = count + 1
                path.append(count)
            elif here in self.aot_count:
                path.append(self.aot_count[here] - 1)
        return tuple(path)

    def keys(self) -> list[str]:
        keys: list[str] = []
        while True:
            self.skip_ws()
            c = self.peek()
            if c == '"':
                keys.append("".join(ch for ch, _ in self.basic_string()))
            elif c == "'":
                keys.append("".join(ch for ch, _ in self.literal_string()))
            else:
                start = self.i
                while self.i < len(self.text) and self.text[self.i] in _BARE:
                    self.i += 1
                keys.append(self.text[start : self.i])
            self.skip_ws()
            if self.peek() != ".":
                return keys
            self.i += 1

    def key_value(self, table: PathKey) -> None:
        key_start = self.i
        path = table + tuple(self.keys())
        self.skip_ws()
        self.i += 1  # "="
        self.skip_ws()
        self.value(path, self.pos(key_start))

    # -- values ----------------------------------------------------------------

    def value(self, path: PathKey, key: Pos) -> None:
        start = self.i
        c = self.peek()
        if c in "\"'":
            if self.peek(3) == '"""':
                chars = self.multiline(basic=True)
            elif self.peek(3) == "'''":
                chars = self.multiline(basic=False)
            elif c == '"':
                chars = self.basic_string()
            else:
                chars = self.literal_string()
            ends = (*(p for _, p in chars), self.pos(self.i - 1))
            self.spans[path] = Span(key, self.pos(start), ends)
        elif c == "[":
            self.spans[path] = Span(key, self.pos(start))
            self.i += 1
            n = 0
            while True:
                self.skip_ws(newlines=True)
                if self.peek() in ("]", ""):
                    self.i += 1
                    return
                self.value((*path, n), self.pos(self.i))
                n += 1
                self.skip_ws(newlines=True)
                if self.peek() == ",":
                    self.i += 1
        elif c == "{":
            self.spans[path] = Span(key, self.pos(start))
            self.i += 1
            while True:
                self.skip_ws()
                if self.peek() in ("}", ""):
                    self.i += 1
                    return
                self.key_value(path)
                self.skip_ws()
                if self.peek() == ",":
                    self.i += 1
        else:
            t = self.text
            while self.i < len(t) and t[self.i] not in ",]}#\r\n":
                self.i += 1
            self.spans[path] = Span(key, self.pos(start))

    def basic_string(self) -> list[tuple[str, Pos]]:
        self.i += 1
        out: list[tuple[str, Pos]] = []
        t = self.text
        while self.i < len(t) and t[self.i] != '"':
            out.append(self.escaped())
        self.i += 1
        return out

    def literal_string(self) -> list[tuple[str, Pos]]:
        self.i += 1
        out: list[tuple[str, Pos]] = []
        t = self.text
        while self.i < len(t) and t[self.i] != "'":
            out.append((t[self.i], self.pos(self.i)))
            self.i += 1
        self.i += 1
        return out

    def escaped(self) -> tuple[str, Pos]:
        t, at = self.text, self.i
        if t[at] != "\\":
            self.i += 1
            return t[at], self.pos(at)
        kind = t[at + 1 : at + 2]
        if kind in ("u", "U"):
            width = 4 if kind == "u" else 8
            self.i = at + 2 + width
            return chr(int(t[at + 2 : self.i], 16)), self.pos(at)
        self.i = at + 2
        return _ESCAPES.get(kind, kind), self.pos(at)

    def multiline(self, basic: bool) -> list[tuple[str, Pos]]:
        quote = '"' if basic else "'"
        t = self.text
        self.i += 3
        if t.startswith("\r\n", self.i):
            self.i += 2
        elif t.startswith("\n", self.i):
            self.i += 1
        out: list[tuple[str, Pos]] = []
        while self.i < len(t):
            if t.startswith(quote * 3, self.i):
                run = 3
                while t.startswith(quote, self.i + run):
                    run += 1
                for k in range(min(run - 3, 2)):  # up to two quotes may end the content
                    out.append((quote, self.pos(self.i + k)))
                self.i += run
                return out
            c = t[self.i]
            if basic and c == "\\":
                rest = self.i + 1
                while rest < len(t) and t[rest] in " \t":
                    rest += 1
                if rest < len(t) and t[rest] in "\r\n":  # line-ending backslash
                    self.i = rest
                    while self.i < len(t) and t[self.i] in " \t\r\n":
                        self.i += 1
                    continue
                out.append(self.escaped())
            elif t.startswith("\r\n", self.i):
                out.append(("\n", self.pos(self.i)))
                self.i += 2
            else:
                out.append((c, self.pos(self.i)))
                self.i += 1
        return out


def scan(text: str) -> dict[PathKey, Span]:
    """Positions in ``text``, a TOML document ``tomllib`` accepted.

    Best effort: on anything it does not follow it returns what it found so
    far, and callers fall back to the enclosing table's position.
    """
    scanner = _Scanner(text)
    try:
        return scanner.document()
    except (IndexError, ValueError):
        return scanner.spans
