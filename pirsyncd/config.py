"""Parse and validate one instance's configuration.

``parse(text, source_name, overrides)`` reads the INI text, applies command-line
overrides (strings, as typed) and returns a frozen :class:`Config`, or raises
:class:`ConfigError` listing every problem at once, each naming file, section and key::

    www.conf: [sync] delay: not a number of seconds: 'ten'
"""

from __future__ import annotations

import configparser
import dataclasses
import math
import os
import re
import shlex
from collections.abc import Mapping
from typing import Any

from pirsyncd.destination import Destination, DestinationError, DestinationKind, parse_destination
from pirsyncd.filters import PatternError, compile_pattern
from pirsyncd.options import OPTIONS, OPTIONS_BY_KEY, SECTIONS, Option


class ConfigError(Exception):
    """Every problem found in a configuration, one line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclasses.dataclass(frozen=True)
class Config:
    source: str
    destination: Destination
    exclude: tuple[str, ...]
    delay: float
    trigger_paths: int
    full_sync_threshold: int
    initial_sync: bool
    full_resync_interval: float
    max_delete: int
    allow_empty_source: bool
    stop_timeout: float
    retry_max_interval: float
    status_file: str | None
    pause_file: str | None
    rsync_binary: str
    rsync_flags: tuple[str, ...]
    partial: bool
    append_verify: bool
    max_size: str | None
    min_size: str | None
    full_sync_checksum: bool
    deletion_mode: str
    io_timeout: float
    time_limit: float
    ssh_port: int | None
    ssh_identity_file: str | None
    ssh_options: tuple[str, ...]
    ssh_accept_new_host_key: bool
    password_file: str | None
    debug_events: bool
    debug_commands: bool
    rsync_log: str
    metrics_file: str | None
    on_sync: tuple[str, ...]
    on_failure: tuple[str, ...]
    hook_timeout: float
    instance: str = ""
    origin: str = ""


DELETION_MODES = ("auto", "missing-args", "parents")

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
            for letter in flag[1:]:
                if letter in _FORBIDDEN_SHORT:
                    long_name = _FORBIDDEN_SHORT[letter]
                    problems.append(f"-{letter} ({long_name}) is not allowed: {_FORBIDDEN_FLAGS[long_name]}")
                    break
        else:
            problems.append(f"{flag!r} is not an option; paths are given by source and destination")
    return problems


def _convert(option: Option, raw: str) -> Any:
    """Turn the text of one setting into its value, or raise ValueError with the reason."""
    kind = option.kind
    text = raw.strip()
    if kind == "bool":
        if text.lower() not in _BOOLEANS:
            raise ValueError(f"not yes or no: {raw!r}")
        return _BOOLEANS[text.lower()]
    if kind == "int":
        try:
            number = int(text)
        except ValueError:
            raise ValueError(f"not a whole number: {raw!r}") from None
        if option.key == "max_delete" and number < -1:
            raise ValueError(f"must be -1 (no limit) or more: {raw!r}")
        if option.key != "max_delete" and number < 1:
            raise ValueError(f"must be 1 or more: {raw!r}")
        if option.key == "ssh_port" and number > 65535:
            raise ValueError(f"not a port number: {raw!r}")
        return number
    if kind == "duration":
        try:
            value = parse_duration(text)
        except ValueError:
            raise ValueError(f"not a number of seconds (like 1.5, 500ms, 30s, 5m, 6h): {raw!r}") from None
        if option.key in ("io_timeout", "time_limit", "retry_max_interval", "hook_timeout") and value <= 0:
            raise ValueError(f"must be more than 0: {raw!r}")
        return value
    if kind == "size":
        if not _SIZE.match(text):
            raise ValueError(f"not a size (like 500K, 100M, 2G): {raw!r}")
        return text
    if kind == "path":
        if not text:
            raise ValueError("is empty")
        if not os.path.isabs(text):
            raise ValueError(f"is a relative path; give an absolute path: {raw!r}")
        return os.path.normpath(text)
    if kind == "destination":
        try:
            return parse_destination(text)
        except DestinationError as error:
            raise ValueError(f"{error}: {raw!r}") from None
    if kind == "patterns":
        patterns = tuple(line.strip() for line in raw.splitlines() if line.strip())
        for pattern in patterns:
            try:
                compile_pattern(pattern)
            except PatternError as error:
                raise ValueError(f"pattern {pattern!r} {error}") from None
        return patterns
    if kind == "flags":
        try:
            words = shlex.split(raw)
        except ValueError as error:
            raise ValueError(f"cannot be split into words ({error}): {raw!r}") from None
        if option.key == "rsync_flags":
            flag_problems = _check_rsync_flags(words)
            if flag_problems:
                raise ValueError("; ".join(flag_problems))
        return tuple(words)
    if kind == "command":
        try:
            return tuple(shlex.split(raw))
        except ValueError as error:
            raise ValueError(f"cannot be split into words ({error}): {raw!r}") from None
    if kind == "deletion_mode":
        if text in DELETION_MODES:
            return text
        raise ValueError(f"not one of {', '.join(DELETION_MODES)}: {raw!r}")
    if kind == "rsync_log":
        if text in ("journal", "none") or os.path.isabs(text):
            return text
        raise ValueError(f"not journal, none or an absolute file path: {raw!r}")
    if not text:
        raise ValueError("is empty")
    return text


def _is_within(inner: str, outer: str) -> bool:
    inner, outer = os.path.normpath(inner), os.path.normpath(outer)
    return inner == outer or inner.startswith(outer.rstrip("/") + "/")


def parse(text: str, source_name: str = "command line", overrides: Mapping[str, Any] | None = None,
          instance: str = "") -> Config:
    """Return the validated Config, or raise ConfigError with every problem found.

    ``overrides`` maps option keys to command-line values (strings, or lists of
    strings for ``exclude``); they replace what the file says.
    """
    problems: list[str] = []
    parser = configparser.ConfigParser(interpolation=None, default_section="\x00none", strict=True,
                                       empty_lines_in_values=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    try:
        parser.read_string(text, source=source_name)
    except configparser.Error as error:
        message = str(error).splitlines()[0]
        raise ConfigError([f"{source_name}: not a valid INI file: {message}"]) from None

    raw_values: dict[str, tuple[str, str]] = {}  # key -> (raw text, where it came from)
    for section in parser.sections():
        if section not in SECTIONS:
            problems.append(f"{source_name}: [{section}]: unknown section (known: {', '.join(SECTIONS)})")
            continue
        for key, value in parser.items(section):
            option = OPTIONS_BY_KEY.get(key)
            if option is None or option.section != section:
                hint = f"; it belongs in [{option.section}]" if option else ""
                problems.append(f"{source_name}: [{section}] {key}: unknown key{hint}")
                continue
            raw_values[key] = (value, f"{source_name}: [{section}] {key}")
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        option = OPTIONS_BY_KEY[key]
        if isinstance(value, (list, tuple)):
            value = "\n".join(value)
        raw_values[key] = (str(value), f"command line: {option.flag}")

    values: dict[str, Any] = {}
    where: dict[str, str] = {}
    for option in OPTIONS:
        if option.key not in raw_values:
            if option.required:
                problems.append(f"{source_name}: [{option.section}] {option.key}: missing; "
                                f"add e.g. '{option.key} = {option.example}' or {option.flag}")
            values[option.key] = option.default
            continue
        raw, place = raw_values[option.key]
        where[option.key] = place
        try:
            values[option.key] = _convert(option, raw)
        except ValueError as error:
            problems.append(f"{place}: {error}")
            values[option.key] = option.default

    source, destination = values["source"], values["destination"]
    if isinstance(source, str) and isinstance(destination, Destination) and destination.kind == DestinationKind.LOCAL:
        if _is_within(destination.path, source):
            problems.append(f"{where['destination']}: {destination.path!r} is inside the source {source!r}; "
                            "a mirror inside its source would copy itself forever")
        elif _is_within(source, destination.path):
            problems.append(f"{where['source']}: {source!r} is inside the destination {destination.path!r}; "
                            "mirroring would delete the source")
    if values["password_file"] and isinstance(destination, Destination) and destination.kind != DestinationKind.DAEMON:
        problems.append(f"{where['password_file']}: only used with an rsync daemon destination "
                        "(rsync://host/module or host::module)")
    if problems:
        raise ConfigError(problems)
    return Config(**values, instance=instance, origin=source_name)


def render_sample_config() -> str:
    """A commented example config covering every option, generated from the option table."""
    lines = ["# pirsyncd instance configuration: copy to /etc/pirsyncd/NAME.conf and",
             "# start it with: systemctl enable --now pirsyncd@NAME",
             "# Every key can also be given on the command line as --key-name.", ""]
    for section in SECTIONS:
        lines.append(f"[{section}]")
        for option in OPTIONS:
            if option.section != section:
                continue
            lines.append(f"# {option.help}")
            example = option.example.replace("\n", "\n#     ")
            if option.required:
                lines.append(f"{option.key} = {example}")
            else:
                lines.append(f"#{option.key} = {example}")
            lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"
