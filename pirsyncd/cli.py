"""Command line: ``pirsyncd [NAME | --config FILE] [options]``, ``--check``,
``pirsyncd status [NAME]``, ``pirsyncd wait NAME``, ``pirsyncd pause|resume NAME``, and the
dispatch to ``pirsyncd plan`` and ``pirsyncd audit`` (:mod:`pirsyncd.dryruns`); what they all
share is in :mod:`pirsyncd.arguments`."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import traceback

from pirsyncd import __version__
from pirsyncd.arguments import (
    WORDS,
    Parser,
    UsageError,
    add_instance_arguments,
    add_option_flags,
    check_instance_name,
    config_dir,
    config_or_status,
    load_config,
    print_problems,
    require_one_config,
)
from pirsyncd.config import exitcodes
from pirsyncd.config.options import OPTIONS, Kind
from pirsyncd.config.parse import render_sample_config
from pirsyncd.dryruns import audit_command, audit_parser, plan_command, plan_parser
from pirsyncd.edges import log as logsetup
from pirsyncd.edges import notify


def build_parser() -> argparse.ArgumentParser:
    """The daemon's own command line: NAME or --config, --check, --examples, --sample-config
    and a flag for every option of the table."""
    parser = Parser(
        prog="pirsyncd",
        description="Keep DESTINATION an exact, near-real-time mirror of SOURCE with inotify and rsync. "
                    "Runs in the foreground; stop it with SIGTERM or Ctrl-C.",
        epilog="Also: 'pirsyncd status [NAME]' (no NAME: every instance), 'pirsyncd wait NAME [--timeout S]', "
               "'pirsyncd pause NAME', 'pirsyncd resume NAME', 'pirsyncd plan NAME [--json]' (what a full sync "
               "would send and delete, changing nothing) and 'pirsyncd audit NAME [--content[=K/N]] [--repair]'. "
               + exitcodes.help_text())
    add_instance_arguments(parser)
    parser.add_argument("--check", action="store_true", help="validate the configuration and exit (0 valid, 78 not)")
    parser.add_argument("--examples", action="store_true", help="print a worked example for every option and exit")
    parser.add_argument("--sample-config", action="store_true",
                        help="print a sample config, every key commented out with its default, and exit")
    parser.add_argument("--version", action="version", version=f"pirsyncd {__version__}")
    add_option_flags(parser)
    return parser


def render_examples() -> str:
    """``--examples``: every option as a config line and as a flag, from the option table, and
    a whole instance."""
    lines = ["Every option, as a config file line and as a command-line flag:", ""]
    for option in OPTIONS:
        example = option.example.splitlines()
        file_value = example[0] if len(example) == 1 else "\n    " + "\n    ".join(example)
        if option.kind is Kind.BOOL:
            flag = option.flag if option.example in ("yes",) else option.flag.replace("--", "--no-", 1)
        elif option.kind is Kind.PATTERNS:
            flag = " ".join(f"{option.flag} '{line}'" for line in example)
        elif option.kind in WORDS:
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


SUBCOMMANDS = ("status", "wait", "pause", "resume", "plan", "audit")


def subcommand_parser(verb: str) -> argparse.ArgumentParser:
    """The arguments of ``pirsyncd VERB`` (one of :data:`SUBCOMMANDS`): NAME and --status-file for
    each, and what the verb adds."""
    if verb == "plan":
        return plan_parser()
    if verb == "audit":
        return audit_parser()
    parser = Parser(prog=f"pirsyncd {verb}")
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
    path = os.path.join(config_dir(arguments), f"{arguments.name}.conf")
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
    rows = collect_rows(status_dir, config_dir(arguments))
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


def run(argv: list[str]) -> int:
    """Run a command line (without the program name); return its exit status. A subcommand goes
    to its own parser; otherwise the daemon runs in the foreground (or --check only checks)."""
    if argv and argv[0] == "plan":
        return plan_command(argv)
    if argv and argv[0] == "audit":
        return audit_command(argv)
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
    require_one_config(arguments, "mirror")
    config = config_or_status(arguments)
    if isinstance(config, int):
        return config
    from pirsyncd.replica.preflight import preflight

    problems = preflight(config)
    if arguments.check:
        if problems:
            print_problems([message for _, message in problems])
            return exitcodes.CONFIG
        print(f"pirsyncd: {config.origin}: valid")
        return exitcodes.OK
    if problems:
        print_problems([message for _, message in problems])
        return problems[0][0]
    notify.check()  # before anything starts: under Type=notify a missing systemd-python is fatal
    logsetup.setup(config.instance, config.debug_events or config.debug_commands)
    from pirsyncd.service import Service

    return Service(config, reload_config=lambda: load_config(arguments)).run()


def main(argv: list[str] | None = None) -> int:
    """The entry point: :func:`run`, with a usage mistake as one line and exit 78, and a bug as
    exit 70 with its traceback in the log."""
    try:
        return run(sys.argv[1:] if argv is None else argv)
    except UsageError as error:
        print_problems([str(error)])
        return exitcodes.USAGE
    except notify.NotifyError as error:
        print_problems([str(error)])
        return exitcodes.NOTIFY
    except KeyboardInterrupt:
        return exitcodes.OK
    except Exception:  # a bug: say so with the traceback (the journal under systemd), exit 70
        logging.getLogger("pirsyncd").exception("internal error; please report it with this traceback")
        if not logging.getLogger("pirsyncd").handlers:
            traceback.print_exc()
        return exitcodes.SOFTWARE
