"""``pirsyncd plan NAME``: what a full sync would send and delete at each destination, before
the first start or at any time, changing nothing.

For each destination it runs the full sync the daemon would run (the same rsync options,
excludes and kept-out mount points, :func:`pirsyncd.replica.rsync.build_dry_run_command`) with
``--dry-run``, ``--out-format=%i %n`` and ``LC_ALL=C``, and reads the items
(:mod:`pirsyncd.replica.itemize`) and the ``--stats``. The answer is trouble (exit 65) when the
deletions exceed ``max_delete`` (the daemon would hold) or the destination looks wrong: the root
directory, a home directory, or one that holds entries of which the source has none (the whole
destination would be deleted and the source sent instead: a wrong path, as in lsyncd #668).

    www: /var/backups/www
      would create 1,204 entries, update 3, delete 2 (12.5 MiB to send)
      deletions (first 2 of 2):
        old/notes.txt
        old
"""

from __future__ import annotations

import dataclasses
import os
import pwd
from typing import Any

from pirsyncd.config import exitcodes
from pirsyncd.config.destination import DestinationKind
from pirsyncd.config.parse import Config
from pirsyncd.edges.runner import Child
from pirsyncd.replica import rsync
from pirsyncd.replica.itemize import KINDS, ItemizedChanges, ItemizeReader
from pirsyncd.replica.progress import format_bytes
from pirsyncd.replica.rsync import Outcome
from pirsyncd.source.mounts import MOUNTINFO, MountsBelow, parse_mountinfo

FIRST = 20  # paths shown of each kind, unless --first says otherwise
_VERBS = {"created": "create", "updated": "update", "deleted": "delete"}


@dataclasses.dataclass
class DestinationPlan:
    """What a full sync would do at one destination, and what is wrong with it."""

    name: str
    destination: str
    changes: ItemizedChanges | None = None
    bytes_to_send: int = 0
    source_entries: int = 0
    problems: list[str] = dataclasses.field(default_factory=list)
    error: str | None = None  # rsync could not say (the destination cannot be reached, ...)
    error_status: int = exitcodes.OK

    def as_json(self) -> dict[str, Any]:
        changes = self.changes
        return {
            "name": self.name, "destination": self.destination, "error": self.error, "problems": self.problems,
            "bytes": self.bytes_to_send, "source_entries": self.source_entries,
            **{kind: None if changes is None else {"count": getattr(changes, kind), "first": changes.first[kind]}
               for kind in KINDS},
        }


def home_directories() -> set[str]:
    """The home directories of root and of people (uid 1000 and up, not nobody), and /home; not a
    system user's (www-data's /var/www is a fine destination)."""
    homes = {"/root", "/home"}
    homes |= {entry.pw_dir.rstrip("/") for entry in pwd.getpwall()
              if 1000 <= entry.pw_uid < 65534 and entry.pw_dir not in ("", "/")}
    return homes


def suspicious_destination(config: Config, homes: set[str]) -> str | None:
    """Why this destination looks like the wrong one to mirror into (a full sync deletes what the
    source does not have), or None.

    >>> from pirsyncd.config.parse import parse
    >>> def check(destination): return suspicious_destination(
    ...     parse(f"[sync]\\nsource = /srv/www\\ndestination = {destination}\\n", "x"), set())
    >>> check("backup@mirror:/"), check("backup@mirror:~"), check("/home/alice/"), check("/var/www")
    ('it is the root directory', "it is the remote user's home directory", 'it is a home directory (/home/alice)', None)
    """
    destination = config.destination
    if destination.kind == DestinationKind.DAEMON:
        return None  # a module's own directory is the daemon's choice
    path = destination.path
    if destination.kind == DestinationKind.LOCAL:
        path = os.path.realpath(path)
    elif path in ("", ".", "~", "~/"):
        return "it is the remote user's home directory"
    path = path.rstrip("/") or "/"
    if path == "/":
        return "it is the root directory"
    if path in homes or (path.startswith("/home/") and path.count("/") == 2):
        return f"it is a home directory ({path})"
    return None


def kept_out_now(config: Config) -> list[str]:
    """The mount points below the source whose contents the daemon would keep out, from the mount
    table as it is now."""
    mounts = MountsBelow(config.source, config.one_file_system)
    try:
        with open(MOUNTINFO, encoding="latin-1") as stream:
            table = parse_mountinfo(stream.read())
        mounts.root_device = os.stat(config.source).st_dev
    except OSError:
        return []
    mounts.note(table)
    return mounts.kept_out()


def plan_destination(config: Config, first: int, homes: set[str], kept_out: list[str]) -> DestinationPlan:
    """Dry-run one destination's full sync (blocking: a command, not the daemon's loop)."""
    plan = DestinationPlan(config.destination_name or "-", config.destination.text)
    argv = rsync.build_dry_run_command(config, kept_out)
    reader = ItemizeReader(first)
    try:
        child = Child(argv, b"", "plan", env={**os.environ, "LC_ALL": "C"})
    except OSError as error:
        plan.error, plan.error_status = f"{argv[0]} cannot be run: {error.strerror}", exitcodes.CONFIG
        return plan
    child.stdout_sink = reader.feed  # read as it comes: a big tree's items are never all held
    result = child.wait(config.time_limit or 3600.0)
    changes, rest = reader.changes, result.stdout
    verdict = rsync.explain(rsync.classify_exit_status(result.status, result.stderr_tail), config)
    if result.stopped_for or verdict.outcome in (Outcome.RETRY, Outcome.FATAL):
        why = result.stopped_for or verdict.meaning
        tail = result.stderr_tail.splitlines()[-1:] if result.stderr_tail else []
        plan.error = f"rsync could not dry-run the full sync: {why}" + (f" ({tail[0]})" if tail else "") + (
            f"; {verdict.fix}" if verdict.fix else "")
        plan.error_status = verdict.exit_status if verdict.outcome == Outcome.FATAL else exitcodes.TEMPFAIL
        return plan
    figures = rsync.parse_stats(rest.decode(errors="replace"))
    plan.changes = changes
    plan.bytes_to_send = figures.get("transferred_size", 0)
    plan.source_entries = figures.get("files", 0)
    suspicious = suspicious_destination(config, homes)
    if suspicious and changes.deleted:
        plan.problems.append(f"the destination looks wrong: {suspicious}, and the full sync would delete "
                             f"{changes.deleted:,} entries there; check destination")
    elif changes.deleted and plan.source_entries > 1 and changes.created >= plan.source_entries - 1:
        plan.problems.append(f"the destination looks wrong: it holds {changes.deleted:,} entries and none of the "
                             f"source's {plan.source_entries - 1:,}; check destination (is it the right directory?)")
    if config.max_delete >= 0 and changes.deleted > config.max_delete:
        plan.problems.append(f"the full sync would delete {changes.deleted:,} entries, more than max_delete "
                             f"({config.max_delete}): the daemon would hold it; check the destination, or raise "
                             "max_delete if the deletions are intended")
    return plan


def plan_all(config: Config, first: int = FIRST) -> list[DestinationPlan]:
    homes = home_directories()
    kept_out = kept_out_now(config)
    return [plan_destination(each, first, homes, kept_out) for each in config.per_destination()]


def plan_exit_status(plans: list[DestinationPlan]) -> int:
    """65 when a full sync would delete too much or into the wrong place; else rsync's trouble
    (75: try again, 77/78: fix something); else 0."""
    if any(plan.problems for plan in plans):
        return exitcodes.REFUSED_WIPE
    return next((plan.error_status for plan in plans if plan.error), exitcodes.OK)


def format_plans(plans: list[DestinationPlan]) -> str:
    """The plan for a person: per destination a summary line and the first paths of each kind,
    deletions first."""
    lines: list[str] = []
    for plan in plans:
        lines.append(f"{plan.name}: {plan.destination}")
        changes = plan.changes
        if changes is None:
            lines.append(f"  {plan.error}")
            continue
        if not (changes.created or changes.updated or changes.deleted):
            lines.append("  nothing to send or delete: the destination is a mirror of the source")
        else:
            lines.append(f"  would create {changes.created:,} entries, update {changes.updated:,}, "
                         f"delete {changes.deleted:,} ({format_bytes(plan.bytes_to_send)} to send)")
        for kind in ("deleted", "created", "updated"):
            shown, count = changes.first[kind], getattr(changes, kind)
            if shown:
                label = {"deleted": "deletions", "created": "creations", "updated": "updates"}[kind]
                lines.append(f"  {label} (first {len(shown):,} of {count:,}):")
                lines.extend(f"    {_printable(path)}" for path in shown)
        lines.extend(f"  problem: {problem}" for problem in plan.problems)
    return "\n".join(lines)


def _printable(path: str) -> str:
    """A path on one line: control characters and undecodable bytes shown escaped."""
    return path if path.isprintable() else repr(path)[1:-1]
