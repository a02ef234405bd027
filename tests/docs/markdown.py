"""The repository's Markdown read the way GitHub renders it: headings and their anchors, links,
inline code, and fenced code blocks with the marker comment that precedes each shell block.

A marker says what the docs tests do with a shell block:

- ``<!-- run -->``: run it here and require exit 0;
- ``<!-- run: stack -->``: the same, against the session's live stack;
- ``<!-- covered-by: tests/x.py::test_a, tests/y.py::test_b -->``: the named tests run it;
- ``<!-- not-run: REASON -->``: it cannot run here, for REASON.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

#: Info strings of the blocks that must carry a marker.
SHELL_LANGUAGES = frozenset({"bash", "sh", "shell", "console"})

_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
_HEADING = re.compile(r"^ {0,3}(?P<level>#{1,6})[ \t]+(?P<text>.*?)(?:[ \t]+#+)?[ \t]*$")
_COMMENT = re.compile(r"^\s*<!--(?P<body>.*?)-->\s*$")
_MARKER = re.compile(
    r"^\s*(?:(?P<run>run)(?:\s*:\s*(?P<where>\S+))?"
    r"|covered-by\s*:\s*(?P<tests>.*?)"
    r"|not-run\s*:\s*(?P<reason>.*?))\s*$",
    re.DOTALL,
)
_MARKER_WORD = re.compile(r"^\s*(run|covered-by|not-run)\b")
_INLINE_CODE = re.compile(r"(?P<ticks>`+)(?P<code>.+?)(?P=ticks)")
_LINK = re.compile(r"!?\[(?P<text>[^\]]*)\]\((?P<target>[^)\s]+)(?:\s+\"[^\"]*\")?\)")
_MARKUP_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text lowercased, punctuation but - and _ dropped,
    each space a -."""
    text = _MARKUP_LINK.sub(r"\1", heading)
    text = re.sub(r"<[^>]+>", "", text)
    text = "".join(ch for ch in text.lower() if ch.isalnum() or ch in "-_ ")
    return text.replace(" ", "-")


@dataclass(frozen=True)
class Marker:
    kind: str  # "run", "covered-by" or "not-run"
    line: int
    where: str = ""  # "stack" for <!-- run: stack -->
    tests: tuple[str, ...] = ()  # covered-by: path::name, ...
    reason: str = ""  # not-run


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # of the opening fence, 1-based
    language: str
    code: str
    markers: tuple[Marker, ...] = ()
    stray_comments: tuple[int, ...] = ()  # lines of comments before it that are no marker

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def is_shell(self) -> bool:
        return self.language in SHELL_LANGUAGES

    @property
    def marker(self) -> Marker | None:
        return self.markers[0] if len(self.markers) == 1 else None

    def script(self) -> str:
        """What a reader would type: for ``console``, the lines after a ``$`` prompt."""
        if self.language != "console":
            return self.code
        return "\n".join(line[2:] for line in self.code.splitlines() if line.startswith("$ "))


def parse_marker(body: str, line: int) -> Marker | None:
    found = _MARKER.match(body)
    if not found:
        return None
    if found["run"]:
        return Marker("run", line, where=found["where"] or "")
    if found["tests"] is not None:
        tests = tuple(name.strip() for name in found["tests"].split(",") if name.strip())
        return Marker("covered-by", line, tests=tests)
    return Marker("not-run", line, reason=found["reason"].strip())


@dataclass(frozen=True)
class _Fence:
    char: str  # ` or ~
    length: int
    line: int
    language: str
    indent: int


@dataclass
class Page:
    path: Path  # absolute
    root: Path  # the repository, for names relative to it

    lines: list[str] = field(init=False)
    blocks: list[Block] = field(init=False, default_factory=list)
    #: (line number, text) of every line outside fenced blocks.
    prose: list[tuple[int, str]] = field(init=False, default_factory=list)
    #: Marker-like comments not followed by a shell block: (line, text).
    dangling: list[tuple[int, str]] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        self.lines = self.path.read_text(encoding="utf-8").splitlines()
        self._parse()

    @property
    def name(self) -> str:
        return self.path.relative_to(self.root).as_posix()

    def _parse(self) -> None:
        opened: _Fence | None = None
        code: list[str] = []
        for number, line in enumerate(self.lines, start=1):
            if opened is None:
                opening = _FENCE.match(line)
                if opening:
                    info = opening["info"].split()
                    opened = _Fence(
                        opening["fence"][0],
                        len(opening["fence"]),
                        number,
                        info[0].lower() if info else "",
                        len(opening["indent"]),
                    )
                    code = []
                else:
                    self.prose.append((number, line))
                continue
            stripped = line.strip()
            if stripped and set(stripped) == {opened.char} and len(stripped) >= opened.length:
                self.blocks.append(self._block(opened, code))
                opened = None
            else:
                indent = len(line) - len(line.lstrip(" "))
                code.append(line[min(indent, opened.indent) :])
        if opened is not None:  # an unclosed fence runs to the end of the page
            self.blocks.append(self._block(opened, code))
        self._find_dangling()

    def _block(self, opened: _Fence, code: list[str]) -> Block:
        markers: list[Marker] = []
        stray: list[int] = []
        number = opened.line - 1
        while number >= 1:
            text = self.lines[number - 1]
            if not text.strip():
                number -= 1
                continue
            comment = _COMMENT.match(text)
            if not comment:
                break
            marker = parse_marker(comment["body"], number)
            if marker is None:
                stray.append(number)
            else:
                markers.append(marker)
            number -= 1
        return Block(
            self.path.relative_to(self.root),
            opened.line,
            opened.language,
            "\n".join(code) + "\n",
            tuple(reversed(markers)),
            tuple(reversed(stray)),
        )

    def _find_dangling(self) -> None:
        claimed = {
            marker.line for block in self.blocks if block.is_shell for marker in block.markers
        }
        for number, text in self.prose:
            comment = _COMMENT.match(text)
            if comment and _MARKER_WORD.match(comment["body"]) and number not in claimed:
                self.dangling.append((number, text.strip()))

    @cached_property
    def headings(self) -> list[tuple[int, int, str]]:
        """(line, level, text) of every ATX heading outside fenced blocks."""
        found = []
        for number, line in self.prose:
            heading = _HEADING.match(line)
            if heading:
                found.append((number, len(heading["level"]), heading["text"]))
        return found

    @cached_property
    def anchors(self) -> set[str]:
        """GitHub's anchors of the headings: a repeated slug gets -1, -2, ..."""
        seen: Counter[str] = Counter()
        anchors = set()
        for _, _, text in self.headings:
            base = slug(_INLINE_CODE.sub(lambda m: m["code"], text))
            anchors.add(f"{base}-{seen[base]}" if seen[base] else base)
            seen[base] += 1
        return anchors

    def inline_code(self) -> list[tuple[int, str]]:
        """(line, code) of every inline code span outside fenced blocks."""
        return [
            (number, span["code"].strip())
            for number, line in self.prose
            for span in _INLINE_CODE.finditer(line)
        ]

    def links(self) -> list[tuple[int, str]]:
        """(line, target) of every Markdown link and image outside code."""
        found = []
        for number, line in self.prose:
            visible = _INLINE_CODE.sub(lambda m: "x" * len(m[0]), line)
            found.extend((number, link["target"]) for link in _LINK.finditer(visible))
        return found

    def section(self, title: str) -> tuple[int, int]:
        """Lines (first, last) of the section under the heading ``title``, up to the next
        heading of the same or a higher level."""
        for index, (number, level, text) in enumerate(self.headings):
            if text == title:
                later = [n for n, lvl, _ in self.headings[index + 1 :] if lvl <= level]
                return number, (later[0] - 1 if later else len(self.lines))
        raise LookupError(f"{self.name} has no heading {title!r}")
