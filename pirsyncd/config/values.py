"""How the text of one setting becomes its value (pure): durations, sizes, booleans,
paths, destinations, patterns, rsync flags (with the ones pirsyncd manages refused).

>>> parse_duration("500ms"), parse_duration("6h")
(0.5, 21600.0)
"""

from __future__ import annotations

import math
import os
import re
import shlex
from typing import Any

from pirsyncd.config.destination import DestinationError, parse_destination
from pirsyncd.config.filters import PatternError, compile_pattern
from pirsyncd.config.options import Kind, Option

_DURATION = re.compile(r"^(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>ms|s|m|h|d)?$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_SIZE = re.compile(r"^\d+(?:\.\d+)?(?:[KMGTPkmgtp](?:[iI]?[bB])?|[bB])?$")
_BOOLEANS = {"yes": True, "true": True, "on": True, "1": True, "no": False, "false": False, "off": False, "0": False}

# rsync options that would break mirroring or that pirsyncd manages itself, with the fix.
_FORBIDDEN_FLAGS: dict[str, str] = {
    "--remove-source-files": "it deletes the source",
    "--files-from": "pirsyncd passes the changed paths itself",
    "--from0": "pirsyncd passes the changed paths itself",
    "--dry-run": "nothing would be mirrored",
    "--list-only": "nothing would be mirrored",
    "--existing": "new files would never be mirrored",
    "--ignore-existing": "changed files would never be mirrored",
    "--update": "newer files at the destination would never be replaced",
    "--recursive": "pirsyncd decides what to recurse into",
    "--delete": "pirsyncd manages deletion; see max_delete",
    "--delete-before": "pirsyncd manages deletion",
    "--delete-during": "pirsyncd manages deletion",
    "--delete-delay": "pirsyncd manages deletion",
    "--delete-after": "pirsyncd manages deletion",
    "--delete-excluded": "pirsyncd manages deletion",
    "--delete-missing-args": "pirsyncd manages deletion",
    "--ignore-missing-args": "pirsyncd manages deletion",
    "--max-delete": "use the max_delete option",
    "--exclude": "use the exclude option (one pattern language for events and rsync)",
    "--include": "use the exclude option",
    "--filter": "use the exclude option",
    "--exclude-from": "use the exclude option",
    "--include-from": "use the exclude option",
    "--timeout": "use the io_timeout option",
    "--partial": "use the partial option",
    "--append": "use the append_verify option",
    "--append-verify": "use the append_verify option",
    "--max-size": "use the max_size option",
    "--min-size": "use the min_size option",
    "--rsh": "use the ssh_port, ssh_identity_file and ssh_options options",
    "--password-file": "use the password_file option",
    "--write-batch": "nothing would be mirrored",
    "--only-write-batch": "nothing would be mirrored",
    "--read-batch": "it replays a batch instead of mirroring",
    "--daemon": "it starts a server",
    "--server": "it is rsync's internal option",
    "--sender": "it is rsync's internal option",
    "--relative": "pirsyncd sets it",
    "--no-relative": "pirsyncd relies on relative paths",
}
_FORBIDDEN_SHORT: dict[str, str] = {
    "n": "--dry-run", "u": "--update", "r": "--recursive", "e": "--rsh", "R": "--relative",
}
_SHORT_WITH_VALUE = "BefMT"  # short options whose value follows in the same word
# Options that set rsync's report of each entry: allowed, unless on_sync needs pirsyncd's own.
_REPORT_FLAGS = ("--out-format", "--log-format", "--itemize-changes")


def _short_letters(flag: str) -> str:
    """The options of a cluster of short ones (``-avz``), up to the first that takes a value
    (``-T/tmp/dir`` is -T alone: /tmp/dir is its value).

    >>> _short_letters("-avzT/tmp/dir"), _short_letters("--inplace")
    ('avzT', '')
    """
    if not flag.startswith("-") or flag.startswith("--"):
        return ""
    letters = ""
    for letter in flag[1:]:
        if not letter.isalnum():
            break
        letters += letter
        if letter in _SHORT_WITH_VALUE:
            break
    return letters


def report_flag_problems(flags: tuple[str, ...]) -> list[str]:
    """With on_sync set, pirsyncd reads rsync's report of each entry itself (its own
    --out-format): flags that change that report cannot be used.

    >>> report_flag_problems(("-avi", "--compress", "-T/tmp/index"))
    ["-i (--itemize-changes) is not allowed with on_sync: pirsyncd reads rsync's report of each entry itself"]
    """
    problems = []
    for flag in flags:
        name = flag.split("=", 1)[0]
        if flag.startswith("--") and name in _REPORT_FLAGS:
            problems.append(f"{name} is not allowed with on_sync: pirsyncd reads rsync's report of each entry itself")
        elif not flag.startswith("--") and "i" in _short_letters(flag):
            problems.append("-i (--itemize-changes) is not allowed with on_sync: "
                            "pirsyncd reads rsync's report of each entry itself")
    return problems


def parse_duration(text: str) -> float:
    """'1.5' -> 1.5, '500ms' -> 0.5, '6h' -> 21600.0; ValueError otherwise."""
    match = _DURATION.match(text.strip().lower())
    if not match:
        raise ValueError
    value = float(match["number"]) * _DURATION_UNITS[match["unit"]]
    if not math.isfinite(value):
        raise ValueError
    return value


def _check_rsync_flags(flags: list[str]) -> list[str]:
    problems = []
    for flag in flags:
        if flag.startswith("--"):
            name = flag.split("=", 1)[0]
            if name in _FORBIDDEN_FLAGS:
                problems.append(f"{name} is not allowed: {_FORBIDDEN_FLAGS[name]}")
        elif flag.startswith("-") and len(flag) > 1:
            for letter in _short_letters(flag):
                if letter in _FORBIDDEN_SHORT:
                    long_name = _FORBIDDEN_SHORT[letter]
                    problems.append(f"-{letter} ({long_name}) is not allowed: {_FORBIDDEN_FLAGS[long_name]}")
                    break
        else:
            problems.append(f"{flag!r} is not an option; paths are given by source and destination")
    return problems


def convert(option: Option, raw: str) -> Any:
    """Turn the text of one setting into its value, or raise ValueError with the reason; what the
    value may be (its kind, choices and bounds) comes from the option table.

    >>> from pirsyncd.config.options import OPTIONS_BY_KEY
    >>> convert(OPTIONS_BY_KEY["ssh_port"], "70000")
    Traceback (most recent call last):
    ValueError: must be 1 to 65535: '70000'
    """
    kind = option.kind
    text = raw.strip()
    if not text and option.default is None and not option.required:
        return None  # 'state_file =' leaves a setting that has no default unset
    if kind is Kind.BOOL:
        if text.lower() not in _BOOLEANS:
            raise ValueError(f"not yes or no: {raw!r}")
        return _BOOLEANS[text.lower()]
    if kind is Kind.INT:
        try:
            number = int(text)
        except ValueError:
            raise ValueError(f"not a whole number: {raw!r}") from None
        return _within_bounds(option, number, raw)
    if kind is Kind.DURATION:
        try:
            value = parse_duration(text)
        except ValueError:
            raise ValueError(f"not a number of seconds (like 1.5, 500ms, 30s, 5m, 6h): {raw!r}") from None
        return _within_bounds(option, value, raw)
    if kind is Kind.SIZE:
        if not _SIZE.match(text):
            raise ValueError(f"not a size (like 500K, 100M, 2G): {raw!r}")
        return text
    if kind is Kind.PATH:
        if text in option.choices:
            return text
        if not text:
            raise ValueError("is empty")
        if not os.path.isabs(text):
            if option.choices:
                raise ValueError(f"not {option.allowed()}: {raw!r}")
            raise ValueError(f"is a relative path; give an absolute path: {raw!r}")
        return os.path.normpath(text)
    if kind is Kind.DESTINATIONS:
        lines = [line.strip() for line in raw.splitlines() if line.strip()]
        if not lines:
            raise ValueError("is empty")
        destinations = []
        for line in lines:
            try:
                destinations.append(parse_destination(line))
            except DestinationError as error:
                raise ValueError(f"{error}: {line!r}") from None
        return tuple(destinations)
    if kind is Kind.PATTERNS:
        patterns = tuple(line.strip() for line in raw.splitlines() if line.strip())
        for pattern in patterns:
            try:
                compile_pattern(pattern)
            except PatternError as error:
                raise ValueError(f"pattern {pattern!r} {error}") from None
        return patterns
    if kind in (Kind.FLAGS, Kind.RSYNC_FLAGS, Kind.COMMAND):
        try:
            words = shlex.split(raw)
        except ValueError as error:
            raise ValueError(f"cannot be split into words ({error}): {raw!r}") from None
        flag_problems = _check_rsync_flags(words) if kind is Kind.RSYNC_FLAGS else []
        if flag_problems:
            raise ValueError("; ".join(flag_problems))
        return tuple(words)
    if kind is Kind.CHOICE:
        if text in option.choices:
            return text
        raise ValueError(f"not one of {', '.join(option.choices)}: {raw!r}")
    if not text:
        raise ValueError("is empty")
    return text


def _within_bounds(option: Option, value: int | float, raw: str) -> int | float:
    problem = option.bounds.problem(value) if option.bounds is not None else None
    if problem is not None:
        raise ValueError(f"{problem}: {raw!r}")
    return value
