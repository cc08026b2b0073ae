"""The subcommands that dry-run rsync against each destination with the live sync's options
and filters, changing nothing (unless asked to repair): ``pirsyncd plan`` (what a full sync
would create, update and delete) and ``pirsyncd audit`` (what differs now)."""

from __future__ import annotations

import argparse
import json
import sys

from pirsyncd.arguments import (
    Parser,
    UsageError,
    add_instance_arguments,
    add_option_flags,
    config_or_status,
    print_problems,
    require_one_config,
)
from pirsyncd.config import exitcodes


def plan_parser() -> argparse.ArgumentParser:
    """``pirsyncd plan [NAME | --config FILE] [options] [--json] [--first N]``: the instance's config
    as the daemon reads it (every option flag overrides it alike)."""
    parser = Parser(prog="pirsyncd plan",
                     description="Show what a full sync would create, update and DELETE at each destination "
                                 "(an rsync dry run with the live sync's options and filters); changes nothing. "
                                 "Exit 0, or 65 when the deletions would exceed max_delete or a destination looks "
                                 "wrong (the root, a home directory, nothing in common with the source).")
    add_instance_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the plan as JSON, one object per destination")
    parser.add_argument("--first", type=int, default=20, metavar="N",
                        help="paths shown of each kind: deletions, creations, updates (default 20)")
    add_option_flags(parser)
    return parser


def plan_command(argv: list[str]) -> int:
    """``pirsyncd plan NAME``: dry-run each destination's full sync (pirsyncd.ops.dryrun)."""
    arguments = plan_parser().parse_args(argv[1:])
    require_one_config(arguments, "plan")
    if arguments.first < 0:
        raise UsageError("--first must be 0 or more")
    config = config_or_status(arguments)
    if isinstance(config, int):
        return config
    from pirsyncd.ops.dryrun import format_plans, plan_all, plan_exit_status
    from pirsyncd.replica.preflight import preflight

    problems = preflight(config)
    if problems:
        print_problems([message for _, message in problems])
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
    parser = Parser(
        prog="pirsyncd audit",
        description="Compare the source with each destination as the live sync would (rsync --dry-run with its "
                    "filters and options) and name every difference: missing, extra, modified, attributes. "
                    "Exit 0 identical, 1 drift found.",
        epilog="--status-file FILE: the running daemon's (default: the instance's); alone, its config file is read. "
               "With NAME, --config or --status-file, --destination DNAME audits that destination only; with "
               "--source, --destination names where to compare (as for the daemon). While the daemon runs, "
               "changes on their way are not reported: drift is rechecked after a sync barrier. "
               + exitcodes.help_text())
    add_instance_arguments(parser)
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


def audit_command(argv: list[str]) -> int:
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
    config = config_or_status(arguments)
    if isinstance(config, int):
        return config
    problems = [problem for problem in preflight(config, look_at_destination=False)
                if problem[0] != exitcodes.REFUSED_WIPE]
    if problems:
        print_problems([message for _, message in problems])
        return problems[0][0]
    status_path = arguments.status_file or config.status_file or default_status_path(config.instance)
    request = AuditRequest(arguments.content, arguments.repair, status_path, arguments.timeout)
    try:
        results, exit_status = run_audit(config, request, only, print_error=lambda text: print(text, file=sys.stderr))
    except AuditError as error:
        print_problems([f"audit: {error}"])
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
            print_problems([f"audit: {result.destination}: {result.error}"])
    return exit_status
