"""What every command line shares: its parser (a usage mistake is one line and exit 78), the
flags of the option table, instance names, and the Config they make with NAME or --config."""

from __future__ import annotations

import argparse
import os
import re
import sys
from typing import Any

from pirsyncd.config import exitcodes
from pirsyncd.config.destination import DestinationError, parse_destination
from pirsyncd.config.options import OPTIONS, Kind, Option
from pirsyncd.config.parse import Config, ConfigError, parse
from pirsyncd.edges import log as logsetup

DEFAULT_CONFIG_DIR = "/etc/pirsyncd"
_INSTANCE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@:+-]*$")


class UsageError(Exception):
    """A mistake on the command line: one line, exit 78."""


class Parser(argparse.ArgumentParser):
    """argparse, whose errors are a UsageError (one clear line, exit 78, no traceback)."""

    def error(self, message: str) -> Any:  # one clear line, exit 78, no traceback
        raise UsageError(f"{message} (see pirsyncd --help)")


def config_dir(arguments: argparse.Namespace) -> str:
    """--config-dir, else $PIRSYNCD_CONFIG_DIR, else /etc/pirsyncd."""
    return arguments.config_dir or os.environ.get("PIRSYNCD_CONFIG_DIR") or DEFAULT_CONFIG_DIR


def check_instance_name(name: str) -> None:
    """A name that makes one file name in the config directory, or a UsageError."""
    if not _INSTANCE_NAME.match(name) or ".." in name:
        raise UsageError(f"instance name {name!r} is not allowed: use letters, digits and _ . @ : + - "
                         "(no '/', no '..', not starting with '.')")


def add_instance_arguments(parser: argparse.ArgumentParser) -> None:
    """NAME, --config and --config-dir: which instance's config a command line reads (the
    daemon's, plan's and audit's alike)."""
    parser.add_argument("name", nargs="?", metavar="NAME",
                        help="instance: read CONFIG_DIR/NAME.conf (default dir /etc/pirsyncd)")
    parser.add_argument("--config", metavar="FILE", help="read this config file instead of NAME's")
    parser.add_argument("--config-dir", metavar="DIR",
                        help="directory of NAME.conf files (default: $PIRSYNCD_CONFIG_DIR or /etc/pirsyncd)")


def add_option_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per option of the table (``--delay``, ``--exclude`` ...), by section: the daemon's,
    and those of ``plan`` and ``audit``, which read the same config."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    for option in OPTIONS:
        group = groups.setdefault(option.section, parser.add_argument_group(f"[{option.section}] options"))
        help_text = f"{option.help_with_bounds()} Example: {option.example.splitlines()[0]}"
        if option.kind is Kind.BOOL:
            group.add_argument(option.flag, dest=option.key, action=argparse.BooleanOptionalAction,
                               default=None, help=help_text)
        elif option.kind in (Kind.PATTERNS, Kind.DESTINATIONS):
            shown = "PATTERN" if option.kind is Kind.PATTERNS else "DEST"
            group.add_argument(option.flag, dest=option.key, action="append", metavar=shown,
                               default=None, help=help_text + " (repeat for more)")
        else:
            group.add_argument(option.flag, dest=option.key, metavar=metavar(option), default=None,
                               help=help_text + (" (give it as --x='...' when it starts with -)"
                                                 if option.kind in WORDS else ""))


WORDS = (Kind.FLAGS, Kind.RSYNC_FLAGS, Kind.COMMAND)


def metavar(option: Option) -> str:
    """What --help shows for the value: 'auto|full|none', 'WORDS', 'COMMAND', else the key in capitals."""
    if option.kind is Kind.CHOICE:
        return "|".join(option.choices)
    if option.kind in (Kind.FLAGS, Kind.RSYNC_FLAGS):
        return "'WORDS'"
    if option.kind is Kind.COMMAND:
        return "'COMMAND'"
    return option.key.upper()


def _overrides(arguments: argparse.Namespace) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for option in OPTIONS:
        value = getattr(arguments, option.key)
        if value is None:
            continue
        if option.kind is Kind.BOOL:
            value = "yes" if value else "no"
        elif option.kind is Kind.PATH and value not in option.choices:
            value = os.path.abspath(value)  # resolved once, at start
        elif option.kind is Kind.DESTINATIONS:
            value = [_absolute_unless_remote(text) for text in value]
        overrides[option.key] = value
    return overrides


def _absolute_unless_remote(text: str) -> str:
    try:
        parse_destination(text)
    except DestinationError:
        return os.path.abspath(text)
    return text


def _read_config_text(path: str) -> str:
    try:
        with open(path, "rb") as stream:
            data = stream.read()
    except FileNotFoundError:
        raise ConfigError([f"{path}: no such file; create it (see /etc/pirsyncd/example.conf or "
                           "pirsyncd --sample-config)"]) from None
    except OSError as error:
        raise ConfigError([f"{path}: cannot be read: {error.strerror}"]) from None
    if b"\0" in data:
        raise ConfigError([f"{path}: is a binary file, not an INI config"])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError([f"{path}: is not UTF-8 text (byte {error.start}); save it as UTF-8"]) from None
    if not text.strip():
        raise ConfigError([f"{path}: is empty; it needs at least [sync] source and destination"])
    return text


def load_config(arguments: argparse.Namespace) -> Config:
    """Return a validated Config from NAME, --config and the option flags."""
    overrides = _overrides(arguments)
    path = arguments.config
    instance = arguments.name or ""
    if instance:
        check_instance_name(instance)
    if path is None and instance:
        path = os.path.join(config_dir(arguments), f"{instance}.conf")
    text, origin = "", "command line"
    if path is not None:
        path = os.path.abspath(path)
        text, origin = _read_config_text(path), path
    return parse(text, origin, overrides, instance=instance)


def print_problems(problems: list[str]) -> None:
    """Each problem on its own line on stderr."""
    # Under systemd stderr is the journal: "<3>" marks each line as an error (priority err).
    prefix = "<3>" if logsetup.stderr_is_journal() else ""
    for problem in problems:
        print(f"{prefix}pirsyncd: {problem}", file=sys.stderr)


def config_or_status(arguments: argparse.Namespace) -> Config | int:
    """The Config NAME, --config and the option flags make, or, when it is not valid, exit
    status 78 after every problem is printed."""
    try:
        return load_config(arguments)
    except ConfigError as error:
        print_problems(error.problems)
        return exitcodes.CONFIG


def require_one_config(arguments: argparse.Namespace, doing: str) -> None:
    """NAME or --config, not both; and something to ``doing`` (a UsageError otherwise)."""
    if arguments.name and arguments.config:
        raise UsageError("give either NAME or --config FILE, not both")
    if not (arguments.name or arguments.config or arguments.source or arguments.destination):
        raise UsageError(f"nothing to {doing}: give NAME, --config FILE, or --source and --destination")
