"""Exclude patterns: one pattern language for inotify events and for rsync.

The language is the common subset of rsync's exclude patterns, so the same text is
handed to rsync as ``--exclude=PATTERN`` and decides here which events to drop:

- ``*`` matches within one path component, ``**`` across components, ``?`` one
  character, ``[...]`` a character class;
- a leading ``/`` anchors the pattern at the source root;
- a trailing ``/`` matches directories only;
- a pattern with a ``/`` elsewhere is matched against the end of the relative path,
  one without against the last component only.

Everything below an excluded directory is excluded too (it is neither watched nor sent).
"""

from __future__ import annotations

import dataclasses
import re


class PatternError(ValueError):
    """An exclude pattern that cannot be used; the message says why."""


@dataclasses.dataclass(frozen=True)
class Pattern:
    text: str
    regex: re.Pattern[str]
    directories_only: bool


def _translate_glob(glob: str) -> str:
    """Return the regex source for an rsync-style glob (no anchoring)."""
    parts: list[str] = []
    index = 0
    while index < len(glob):
        char = glob[index]
        if char == "*":
            if glob.startswith("**", index):
                parts.append(".*")
                index += 2
                continue
            parts.append("[^/]*")
        elif char == "?":
            parts.append("[^/]")
        elif char == "[":
            end = index + 1
            if end < len(glob) and glob[end] in "!^":
                end += 1
            if end < len(glob) and glob[end] == "]":
                end += 1
            while end < len(glob) and glob[end] != "]":
                end += 1
            if end >= len(glob):
                raise PatternError("has an unclosed '['")
            body = glob[index + 1:end]
            negate = body[:1] in ("!", "^")
            if negate:
                body = body[1:]
            body = body.replace("\\", "\\\\")
            parts.append("[" + ("^/" if negate else "") + body + "]")
            index = end
        else:
            parts.append(re.escape(char))
        index += 1
    return "".join(parts)


def compile_pattern(text: str) -> Pattern:
    """Compile one exclude pattern or raise PatternError naming the problem.

    >>> compile_pattern("*.tmp").regex.pattern
    '(?:^|.*/)[^/]*\\\\.tmp$'
    """
    if not text or not text.strip():
        raise PatternError("is empty")
    if "\\" in text:
        raise PatternError("contains a backslash; escapes are not supported, use '?' or '[\\\\]' instead")
    if text[:2] in ("+ ", "- ") or text == "!":
        raise PatternError("looks like an rsync filter rule; give the bare pattern")
    if "***" in text:
        raise PatternError("uses '***'; exclude the directory with a trailing '/' instead")
    body = text
    directories_only = body.endswith("/")
    body = body.rstrip("/")
    anchored = body.startswith("/")
    body = body.lstrip("/")
    if not body:
        raise PatternError("would exclude the whole source")
    regex_body = _translate_glob(body)
    # Unanchored patterns match the end of the path at a component boundary, as in rsync.
    source = ("^" if anchored else "(?:^|.*/)") + regex_body + "$"
    try:
        regex = re.compile(source, re.DOTALL)
    except re.error as error:
        raise PatternError(f"cannot be used ({error})") from None
    return Pattern(text=text, regex=regex, directories_only=directories_only)


class Excluder:
    """Decides whether a relative path is excluded. ``Excluder(())`` excludes nothing."""

    def __init__(self, patterns: tuple[str, ...] | list[str]) -> None:
        self.patterns = tuple(compile_pattern(text) for text in patterns)

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def matches(self, relative_path: str, is_dir: bool) -> bool:
        """True when the path itself matches a pattern (its ancestors are not checked)."""
        for pattern in self.patterns:
            if pattern.directories_only and not is_dir:
                continue
            if pattern.regex.match(relative_path):
                return True
        return False

    def excludes(self, relative_path: str, is_dir: bool) -> bool:
        """True when the path or any directory above it matches a pattern."""
        if not self.patterns:
            return False
        components = relative_path.split("/")
        for depth in range(1, len(components)):
            if self.matches("/".join(components[:depth]), True):
                return True
        return self.matches(relative_path, is_dir)
