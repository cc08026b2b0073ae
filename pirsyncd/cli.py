"""Command line: ``pirsyncd [NAME | --config FILE] [options]``, ``--check``,
``pirsyncd status [NAME]``, ``pirsyncd wait NAME``, ``pirsyncd pause|resume NAME`` and
``pirsyncd audit NAME``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import traceback
from typing import Any

from pirsyncd import __version__
from pirsyncd.config import exitcodes
from pirsyncd.config.destination import DestinationError, parse_destination
from pirsyncd.config.options import OPTIONS, Kind, Option
from pirsyncd.config.parse import ConfigError, parse, render_sample_config
from pirsyncd.edges import log as logsetup
from pirsyncd.edges import notify

DEFAULT_CONFIG_DIR = "/etc/pirsyncd"
_INSTANCE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@:+-]*$")


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one clear line, exit 78, no traceback
        raise UsageError(f"{message} (see pirsyncd --help)")


def _config_dir(arguments: argparse.Namespace) -> str:
    return arguments.config_dir or os.environ.get("PIRSYNCD_CONFIG_DIR") or DEFAULT_CONFIG_DIR


def check_instance_name(name: str) -> None:
    if not _INSTANCE_NAME.match(name) or ".." in name:
        raise UsageError(f"instance name {name!r} is not allowed: use letters, digits and _ . @ : + - "
                         "(no '/', no '..', not starting with '.')")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="pirsyncd",
        description="Keep DESTINATION an exact, near-real-time mirror of SOURCE with inotify and rsync. "
                    "Runs in the foreground; stop it with SIGTERM or Ctrl-C.",
        epilog="Also: 'pirsyncd status [NAME]' (no NAME: every instance), 'pirsyncd wait NAME [--timeout S]', "
               "'pirsyncd pause NAME', 'pirsyncd resume NAME', 'pirsyncd plan NAME [--json]' (what a full sync "
               "would send and delete, changing nothing) and 'pirsyncd audit NAME [--content[=K/N]] [--repair]'. "
               + exitcodes.help_text())
    parser.add_argument("name", nargs="?", metavar="NAME",
                        help="instance: read CONFIG_DIR/NAME.conf (default dir /etc/pirsyncd)")
    parser.add_argument("--config", metavar="FILE", help="read this config file instead of NAME's")
    parser.add_argument("--config-dir", metavar="DIR",
                        help="directory of NAME.conf files (default: $PIRSYNCD_CONFIG_DIR or /etc/pirsyncd)")
    parser.add_argument("--check", action="store_true", help="validate the configuration and exit (0 valid, 78 not)")
    parser.add_argument("--examples", action="store_true", help="print a worked example for every option and exit")
    parser.add_argument("--sample-config", action="store_true",
                        help="print a sample config, every key commented out with its default, and exit")
    parser.add_argument("--version", action="version", version=f"pirsyncd {__version__}")
    add_option_flags(parser)
    return parser


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
            metavar = "PATTERN" if option.kind is Kind.PATTERNS else "DEST"
            group.add_argument(option.flag, dest=option.key, action="append", metavar=metavar,
                               default=None, help=help_text + " (repeat for more)")
        else:
            group.add_argument(option.flag, dest=option.key, metavar=_metavar(option), default=None,
                               help=help_text + (" (give it as --x='...' when it starts with -)"
                                                 if option.kind in _WORDS else ""))


_WORDS = (Kind.FLAGS, Kind.RSYNC_FLAGS, Kind.COMMAND)


def _metavar(option: Option) -> str:
    """What --help shows for the value: 'auto|full|none', 'WORDS', 'COMMAND', else the key in capitals."""
    if option.kind is Kind.CHOICE:
        return "|".join(option.choices)
    if option.kind in (Kind.FLAGS, Kind.RSYNC_FLAGS):
        return "'WORDS'"
    if option.kind is Kind.COMMAND:
        return "'COMMAND'"
    return option.key.upper()


def render_examples() -> str:
    lines = ["Every option, as a config file line and as a command-line flag:", ""]
    for option in OPTIONS:
        example = option.example.splitlines()
        file_value = example[0] if len(example) == 1 else "\n    " + "\n    ".join(example)
        if option.kind is Kind.BOOL:
            flag = option.flag if option.example in ("yes",) else option.flag.replace("--", "--no-", 1)
        elif option.kind is Kind.PATTERNS:
            flag = " ".join(f"{option.flag} '{line}'" for line in example)
        elif option.kind in _WORDS:
            flag = f"{option.flag}='{option.example}'"
        else:
            flag = f"{option.flag} {option.example}"
        lines += [f"[{option.section}] {option.key} = {file_value}", f"    {flag}", f"    {option.help_with_bounds()}",
                  ""]
    lines += ["A whole instance, /etc/pirsyncd/www.conf:", "", "    [sync]", "    source = /srv/www",
              "    destination = backup@mirror.example:/srv/www", "    delay = 0.5", "    exclude = *.tmp",
              "", "    [remote]", "    ssh_identity_file = /etc/pirsyncd/id_ed25519", "",
              "started with: systemctl enable --now pirsyncd@www"]
    return "\n".join(lines)


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


def load_config(arguments: argparse.Namespace) -> Any:
    """Return a validated Config from NAME, --config and the option flags."""
    overrides = _overrides(arguments)
    path = arguments.config
    instance = arguments.name or ""
    if instance:
        check_instance_name(instance)
    if path is None and instance:
        path = os.path.join(_config_dir(arguments), f"{instance}.conf")
    text, origin = "", "command line"
    if path is not None:
        path = os.path.abspath(path)
        text, origin = _read_config_text(path), path
    return parse(text, origin, overrides, instance=instance)


def _print_problems(problems: list[str]) -> None:
    # Under systemd stderr is the journal: "<3>" marks each line as an error (priority err).
    prefix = "<3>" if logsetup.stderr_is_journal() else ""
    for problem in problems:
        print(f"{prefix}pirsyncd: {problem}", file=sys.stderr)


SUBCOMMANDS = ("status", "wait", "pause", "resume", "plan", "audit")


def plan_parser() -> argparse.ArgumentParser:
    """``pirsyncd plan [NAME | --config FILE] [options] [--json] [--first N]``: the instance's config
    as the daemon reads it (every option flag overrides it alike)."""
    parser = _Parser(prog="pirsyncd plan",
                     description="Show what a full sync would create, update and DELETE at each destination "
                                 "(an rsync dry run with the live sync's options and filters); changes nothing. "
                                 "Exit 0, or 65 when the deletions would exceed max_delete or a destination looks "
                                 "wrong (the root, a home directory, nothing in common with the source).")
    parser.add_argument("name", nargs="?", metavar="NAME",
                        help="instance: read CONFIG_DIR/NAME.conf (default dir /etc/pirsyncd)")
    parser.add_argument("--config", metavar="FILE", help="read this config file instead of NAME's")
    parser.add_argument("--config-dir", metavar="DIR",
                        help="directory of NAME.conf files (default: $PIRSYNCD_CONFIG_DIR or /etc/pirsyncd)")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON, one object per destination")
    parser.add_argument("--first", type=int, default=20, metavar="N",
                        help="paths shown of each kind: deletions, creations, updates (default 20)")
    add_option_flags(parser)
    return parser


def subcommand_parser(verb: str) -> argparse.ArgumentParser:
    """The arguments of ``pirsyncd VERB`` (one of :data:`SUBCOMMANDS`): NAME and --status-file for
    each, and what the verb adds."""
    if verb == "plan":
        return plan_parser()
    if verb == "audit":
        return audit_parser()
    parser = _Parser(prog=f"pirsyncd {verb}")
    parser.add_argument("name", nargs="?", metavar="NAME")
    parser.add_argument("--status-file", metavar="FILE",
                        help="the daemon's status file (default /run/pirsyncd/NAME.json)")
    if verb in ("status", "wait"):
        parser.add_argument("--config-dir", metavar="DIR",
                            help="directory of NAME.conf files (default: $PIRSYNCD_CONFIG_DIR or /etc/pirsyncd)")
    if verb == "wait":
        parser.add_argument("--timeout", type=float, default=600.0,
                            help="give up after this many seconds (a daemon that is starting is waited for)")
        parser.add_argument("--destination", metavar="NAME", help="wait for this destination only (default: all)")
    elif verb == "status":
        parser.add_argument("--json", action="store_true",
                            help="print the raw JSON (with no NAME: a list, one entry per instance and destination)")
        parser.add_argument("--status-dir", metavar="DIR",
                            help="with no NAME: where the running instances' NAME.json are (default /run/pirsyncd)")
    else:
        parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the daemon to confirm")
    return parser


def _status_path(arguments: argparse.Namespace) -> str:
    from pirsyncd.ops.status import default_status_path

    if arguments.name:
        check_instance_name(arguments.name)
    path = arguments.status_file or default_status_path(arguments.name or "")
    if path is None:
        raise UsageError("name an instance or give --status-file")
    return path


def _not_configured(verb: str, arguments: argparse.Namespace) -> str | None:
    """Why the instance named on the command line is none: its config file is missing; None when it
    is configured (or none is named)."""
    if not arguments.name:
        return None
    path = os.path.join(_config_dir(arguments), f"{arguments.name}.conf")
    if os.path.exists(path):
        return None
    return (f"pirsyncd {verb}: no instance {arguments.name!r} is configured: {path} does not exist; "
            "name a configured instance, or create it (pirsyncd --sample-config)")


def _status_command(argv: list[str]) -> int:
    from pirsyncd.ops.status import format_status, read_status, running_status, wait_until_synced

    waiting = argv[0] == "wait"
    arguments = subcommand_parser(argv[0]).parse_args(argv[1:])
    if not waiting and not arguments.name and not arguments.status_file:
        return _overview(arguments)
    if not waiting and arguments.status_dir:
        raise UsageError("--status-dir is for 'pirsyncd status' with no NAME; give --status-file FILE for one")
    path = _status_path(arguments)
    if waiting:
        problem = _not_configured("wait", arguments) if running_status(path) is None else None
        if problem is not None:  # nothing will come up: say so now rather than after the timeout
            print(problem, file=sys.stderr)
            return exitcodes.USAGE
        return wait_until_synced(path, arguments.timeout, destination=arguments.destination,
                                 print_error=lambda text: print(text, file=sys.stderr))
    status = read_status(path)
    if status is None:
        print(f"pirsyncd status: no status at {path}; is pirsyncd@{arguments.name or 'NAME'} running?",
              file=sys.stderr)
        return exitcodes.UNAVAILABLE
    print(json.dumps(status, indent=1, sort_keys=True) if arguments.json else format_status(status))
    return exitcodes.OK


def _overview(arguments: argparse.Namespace) -> int:
    """``pirsyncd status`` with no NAME: every instance, running or configured (pirsyncd.ops.overview)."""
    from pirsyncd.ops.overview import collect_rows, format_rows, overview_exit_status, rows_as_json
    from pirsyncd.ops.status import default_status_path

    status_dir = arguments.status_dir or os.path.dirname(default_status_path("NAME") or "/run/pirsyncd/NAME.json")
    rows = collect_rows(status_dir, _config_dir(arguments))
    print(json.dumps(rows_as_json(rows), indent=1) if arguments.json else format_rows(rows))
    return overview_exit_status(rows)


def _pause_command(argv: list[str]) -> int:
    """``pirsyncd pause|resume NAME``: create or remove the pause file, then SIGUSR2 and wait
    until the daemon's status says it took it (docs/CONTRACT.md)."""
    from pirsyncd.ops.pause import STATE_DIRECTORY, default_pause_path, write_pause_file
    from pirsyncd.ops.status import read_status, wait_for_pause

    pausing = argv[0] == "pause"
    arguments = subcommand_parser(argv[0]).parse_args(argv[1:])
    status_path = _status_path(arguments)

    status = read_status(status_path) or {}
    pause_path = str(status.get("pause_file") or default_pause_path(arguments.name or "", status_path,
                                                                    STATE_DIRECTORY))
    try:
        if pausing:
            write_pause_file(pause_path, f"pirsyncd pause (uid {os.getuid()})")
        elif os.path.lexists(pause_path):
            os.unlink(pause_path)
    except OSError as error:
        print(f"pirsyncd {argv[0]}: cannot {'create' if pausing else 'remove'} {pause_path}: {error.strerror}",
              file=sys.stderr)
        return exitcodes.CANNOT_CREATE
    return wait_for_pause(status_path, pausing, arguments.timeout,
                          print_error=lambda text: print(text, file=sys.stderr))


def _plan_command(argv: list[str]) -> int:
    """``pirsyncd plan NAME``: dry-run each destination's full sync (pirsyncd.ops.dryrun)."""
    arguments = plan_parser().parse_args(argv[1:])
    if arguments.name and arguments.config:
        raise UsageError("give either NAME or --config FILE, not both")
    if not arguments.name and not arguments.config and not arguments.source and not arguments.destination:
        raise UsageError("nothing to plan: give NAME, --config FILE, or --source and --destination")
    if arguments.first < 0:
        raise UsageError("--first must be 0 or more")
    try:
        config = load_config(arguments)
    except ConfigError as error:
        _print_problems(error.problems)
        return exitcodes.CONFIG
    from pirsyncd.ops.dryrun import format_plans, plan_all, plan_exit_status
    from pirsyncd.replica.preflight import preflight

    problems = preflight(config)
    if problems:
        _print_problems([message for _, message in problems])
        return problems[0][0]
    plans = plan_all(config, arguments.first)
    if arguments.json:
        print(json.dumps({"instance": config.instance, "source": config.source,
                          "destinations": [plan.as_json() for plan in plans]}, indent=1))
    else:
        print(format_plans(plans))
    for plan in plans:
        for problem in [*plan.problems, *([plan.error] if plan.error else [])]:
            print(f"pirsyncd plan: {plan.name}: {problem}", file=sys.stderr)
    return plan_exit_status(plans)


def audit_parser() -> argparse.ArgumentParser:
    """``pirsyncd audit``: NAME, --config FILE or --status-file FILE of a running daemon, or the option flags
    alone (--source, --destination ...), and what an audit adds."""
    parser = _Parser(
        prog="pirsyncd audit",
        description="Compare the source with each destination as the live sync would (rsync --dry-run with its "
                    "filters and options) and name every difference: missing, extra, modified, attributes. "
                    "Exit 0 identical, 1 drift found.",
        epilog="--status-file FILE: the running daemon's (default: the instance's); alone, its config file is read. "
               "With NAME, --config or --status-file, --destination DNAME audits that destination only; with "
               "--source, --destination names where to compare (as for the daemon). While the daemon runs, "
               "changes on their way are not reported: drift is rechecked after a sync barrier. "
               + exitcodes.help_text())
    parser.add_argument("name", nargs="?", metavar="NAME", help="instance: read CONFIG_DIR/NAME.conf")
    parser.add_argument("--config", metavar="FILE", help="read this config file instead of NAME's")
    parser.add_argument("--config-dir", metavar="DIR",
                        help="directory of NAME.conf files (default: $PIRSYNCD_CONFIG_DIR or /etc/pirsyncd)")
    parser.add_argument("--content", nargs="?", const="all", default="", metavar="K/N",
                        help="also compare contents by checksum (reads both trees' bytes); K/N: only slice K of N "
                             "of the files, by a hash of each path, so N runs cover the tree")
    parser.add_argument("--repair", action="store_true",
                        help="send the drifted paths again and delete the extra ones (within max_delete), then "
                             "audit them again")
    parser.add_argument("--json", action="store_true", help="print the result as JSON, every path listed")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="seconds to wait for a running daemon's sync barrier (default 600)")
    add_option_flags(parser)
    return parser


def _audit_command(argv: list[str]) -> int:
    """``pirsyncd audit``: load the instance's config, audit (pirsyncd.ops.audit), print, exit 0/1/error."""
    from pirsyncd.ops.audit import AuditError, AuditRequest, run_audit
    from pirsyncd.ops.drift import format_result, parse_slice
    from pirsyncd.ops.status import default_status_path, read_status
    from pirsyncd.replica.preflight import preflight

    arguments = audit_parser().parse_args(argv[1:])
    if arguments.name and arguments.config:
        raise UsageError("give either NAME or --config FILE, not both")
    if arguments.content not in ("", "all"):
        try:
            parse_slice(arguments.content)
        except ValueError as error:
            raise UsageError(str(error)) from None
    only = None
    if arguments.name or arguments.config or arguments.status_file:
        if len(arguments.destination or ()) > 1:
            raise UsageError("--destination names one destination of the instance to audit")
        only = (arguments.destination or [None])[0]
        arguments.destination = None
    if arguments.status_file and not arguments.name and not arguments.config and not arguments.source:
        status = read_status(arguments.status_file) or {}
        if not status.get("config_file"):
            raise UsageError(f"{arguments.status_file}: names no config file (no daemon wrote it, or it was "
                             "started without one); give NAME, --config FILE, or its --source and --destination")
        arguments.config = status["config_file"]
    if not (arguments.name or arguments.config or arguments.source or arguments.destination):
        raise UsageError("nothing to audit: give NAME, --config FILE, --status-file FILE, or --source and "
                         "--destination")
    try:
        config = load_config(arguments)
    except ConfigError as error:
        _print_problems(error.problems)
        return exitcodes.CONFIG
    problems = [problem for problem in preflight(config, look_at_destination=False)
                if problem[0] != exitcodes.REFUSED_WIPE]
    if problems:
        _print_problems([message for _, message in problems])
        return problems[0][0]
    status_path = arguments.status_file or config.status_file or default_status_path(config.instance)
    request = AuditRequest(arguments.content, arguments.repair, status_path, arguments.timeout)
    try:
        results, exit_status = run_audit(config, request, only, print_error=lambda text: print(text, file=sys.stderr))
    except AuditError as error:
        _print_problems([f"audit: {error}"])
        return error.exit_status
    if arguments.json:
        print(json.dumps({"instance": config.instance or None, "identical": exit_status == exitcodes.OK,
                          "destinations": [result.as_json() for result in results]}, indent=1))
    else:
        shown = [format_result(result) for result in results if not result.error]
        if shown:
            print("\n".join(shown))
    for result in results:
        if result.error:
            _print_problems([f"audit: {result.destination}: {result.error}"])
    return exit_status


def run(argv: list[str]) -> int:
    if argv and argv[0] == "plan":
        return _plan_command(argv)
    if argv and argv[0] == "audit":
        return _audit_command(argv)
    if argv and argv[0] in ("status", "wait"):
        return _status_command(argv)
    if argv and argv[0] in ("pause", "resume"):
        return _pause_command(argv)
    arguments = build_parser().parse_args(argv)
    if arguments.examples:
        print(render_examples())
        return exitcodes.OK
    if arguments.sample_config:
        print(render_sample_config(), end="")
        return exitcodes.OK
    if arguments.name and arguments.config:
        raise UsageError("give either NAME or --config FILE, not both")
    if not arguments.name and not arguments.config and not arguments.source and not arguments.destination:
        raise UsageError("nothing to mirror: give NAME, --config FILE, or --source and --destination")
    try:
        config = load_config(arguments)
    except ConfigError as error:
        _print_problems(error.problems)
        return exitcodes.CONFIG
    from pirsyncd.replica.preflight import preflight

    problems = preflight(config)
    if arguments.check:
        if problems:
            _print_problems([message for _, message in problems])
            return exitcodes.CONFIG
        print(f"pirsyncd: {config.origin}: valid")
        return exitcodes.OK
    if problems:
        _print_problems([message for _, message in problems])
        return problems[0][0]
    notify.check()  # before anything starts: under Type=notify a missing systemd-python is fatal
    logsetup.setup(config.instance, config.debug_events or config.debug_commands)
    from pirsyncd.service import Service

    return Service(config, reload_config=lambda: load_config(arguments)).run()


def main(argv: list[str] | None = None) -> int:
    try:
        return run(sys.argv[1:] if argv is None else argv)
    except UsageError as error:
        _print_problems([str(error)])
        return exitcodes.USAGE
    except notify.NotifyError as error:
        _print_problems([str(error)])
        return exitcodes.NOTIFY
    except KeyboardInterrupt:
        return exitcodes.OK
    except Exception:  # a bug: say so with the traceback (the journal under systemd), exit 70
        logging.getLogger("pirsyncd").exception("internal error; please report it with this traceback")
        if not logging.getLogger("pirsyncd").handlers:
            traceback.print_exc()
        return exitcodes.SOFTWARE
